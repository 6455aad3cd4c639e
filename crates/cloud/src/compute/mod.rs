//! Compute (Nova semantics): flavors and servers on the hypervisor.
//!
//! Requests only check and claim: a server is created `building/spawning`,
//! an action claims its `task_state` by compare-and-swap (so a second one gets
//! 409), and the work runs in a background task ([`lifecycle`]) that ends in
//! a final compare-and-swap clearing the task. A restart in between is
//! settled by [`reconcile`] from what the hypervisor observes; QEMU dying on
//! its own is noticed by [`Cloud::sync_power_states`].

mod attachments;
mod block_devices;
mod chain_depth;
mod flavors;
mod image_bdm;
mod keypairs;
mod lifecycle;
mod quiesce;
pub(crate) mod snapshot;
mod snapshot_common;
mod snapshot_data;
mod sync;
pub(crate) mod volume_cut;
pub(crate) mod volume_image;

use std::collections::BTreeMap;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::image::ImageStatus;
use domain::server::{PowerState, Server, ServerAction, TaskState, VmState};
use domain::{Error, ErrorKind, Result, ServerId};

pub use attachments::AttachVolume;
pub use block_devices::BlockDevice;
pub use keypairs::NewKeypair;
pub(crate) use sync::reconcile;

use crate::Cloud;

const GIB: u64 = 1 << 30;

/// What `POST /servers` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewServer {
    pub name: String,
    pub image_ref: String,
    pub flavor_ref: String,
    pub metadata: BTreeMap<String, String>,
    /// A keypair of the caller's, by name.
    pub key_name: Option<String>,
    /// `accessIPv4`/`accessIPv6`, already checked.
    pub access_ipv4: Option<String>,
    pub access_ipv6: Option<String>,
    /// `block_device_mapping_v2`: volumes to boot from or attach (see
    /// `block_devices`); the image root OSC always sends may be here.
    pub block_devices: Vec<BlockDevice>,
    /// Its NICs (Nova's `networks`).
    pub networks: crate::network::ServerNetworks,
    /// Security groups (names or ids) of the ports made for it; none: `default`.
    pub security_groups: Vec<String>,
}

impl Cloud {
    /// A live server the caller can see, or 404.
    pub async fn server(&self, caller: &Caller, id: &str) -> Result<Server> {
        let sid: ServerId = id.parse()?;
        let server = self.store.server(sid).await?;
        if server.vm_state == VmState::Deleted || !caller.can_see_project(server.project_id) {
            return Err(Error::not_found("server", id));
        }
        Ok(server)
    }

    /// Servers of the caller's project (all projects for an admin asking so).
    pub async fn servers(&self, caller: &Caller, all_projects: bool) -> Result<Vec<Server>> {
        caller.require(Role::Reader, "list servers")?;
        let project = if all_projects && caller.is_admin() {
            None
        } else {
            Some(caller.project()?)
        };
        self.store.servers(project).await
    }

    /// Checks the request (its image, or its block device mapping: see
    /// `block_devices`), records the server `building` with its volumes
    /// and starts it in the background.
    pub async fn create_server(&self, caller: &Caller, new: NewServer) -> Result<Server> {
        caller.require(Role::Member, "create servers")?;
        let project = caller.project()?;
        domain::identity::validate_name("server", &new.name)?;
        if new.name.trim().is_empty() {
            return Err(Error::invalid("A server needs a name."));
        }
        let (image_ref, devices) = self
            .expand_image_mapping(caller, &new.image_ref, new.block_devices)
            .await?;
        let plan = block_devices::plan(&image_ref, &devices)?;
        let flavor = self
            .store
            .flavor(&new.flavor_ref)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => {
                    Error::invalid(format!("Flavor {} could not be found.", new.flavor_ref))
                }
                _ => e,
            })?;
        if !self.may_use_flavor(caller, &flavor).await? {
            return Err(Error::invalid(format!(
                "Flavor {} could not be found.",
                new.flavor_ref
            )));
        }
        let image_id = match plan.image_root() {
            Some(image_ref) => Some(self.check_boot_image(caller, image_ref, &flavor).await?),
            None => None,
        };
        let key_name = match new.key_name {
            Some(name) => Some(self.server_key_name(caller, name).await?),
            None => None,
        };
        let nics = self.check_server_networks(caller, &new.networks).await?;
        for group in &new.security_groups {
            self.security_group(caller, group)
                .await
                .map_err(|e| match e.kind() {
                    ErrorKind::NotFound => {
                        Error::invalid(format!("Security group {group} not found."))
                    }
                    _ => e,
                })?;
        }
        let quota = self
            .claim_server_quota(project, &flavor, new.metadata.len())
            .await?;
        let claimed = self.claim_block_devices(caller, &plan).await?;
        let server_id = ServerId::new();
        if let Err(e) = self
            .allocate_server_ports(caller, server_id, nics, &new.security_groups)
            .await
        {
            quota.release().await;
            self.unreserve(&claimed.reserved()).await;
            return Err(e);
        }
        let now = Utc::now();
        let server = Server {
            id: server_id,
            name: new.name,
            project_id: project,
            user_id: caller.user_id,
            image_id,
            flavor,
            vm_state: VmState::Building,
            task_state: Some(TaskState::Spawning),
            power_state: PowerState::NoState,
            progress: 0,
            fault: None,
            metadata: new.metadata,
            key_name,
            access_ipv4: new.access_ipv4,
            access_ipv6: new.access_ipv6,
            locked: false,
            root_disk: None,
            created_at: now,
            updated_at: now,
            launched_at: None,
        };
        let inserted = self.store.insert_server(&server).await;
        quota.release().await;
        if let Err(e) = inserted {
            self.unreserve(&claimed.reserved()).await;
            let _ = self.release_server_ports(server.id).await;
            return Err(e);
        }
        if let Err(e) = self.record_block_devices(caller, &server, claimed).await {
            let mut failed = server.clone();
            failed.vm_state = VmState::Error;
            failed.task_state = None;
            failed.fault = Some(lifecycle::fault(&e));
            failed.updated_at = Utc::now();
            let _ = self.store.update_server(&server, &failed).await;
            return Err(e);
        }
        let cloud = self.clone();
        let spawned = server.clone();
        tokio::spawn(async move { cloud.spawn_server(spawned).await });
        Ok(server)
    }

    /// The image a server boots from: visible, active, fitting the flavor.
    async fn check_boot_image(
        &self,
        caller: &Caller,
        image_ref: &str,
        flavor: &domain::server::Flavor,
    ) -> Result<domain::ImageId> {
        let image = self
            .image(caller, image_ref)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => {
                    Error::invalid(format!("Image {image_ref} could not be found."))
                }
                _ => e,
            })?;
        if image.status != ImageStatus::Active {
            return Err(Error::invalid(format!(
                "Image {} is not active (it is {}).",
                image.id, image.status
            )));
        }
        if flavor.disk == 0 && !caller.is_admin() {
            return Err(Error::forbidden(
                "Only volume-backed servers are allowed for flavors with zero disk.",
            ));
        }
        let image_size = image.virtual_size.unwrap_or(0);
        let flavor_bytes = flavor.disk.checked_mul(GIB).ok_or_else(|| {
            Error::invalid(format!(
                "The flavor's disk of {} GiB is too large.",
                flavor.disk
            ))
        })?;
        if flavor.disk > 0 && flavor_bytes < image_size {
            return Err(Error::invalid(format!(
                "Flavor's disk is too small for requested image: the flavor has {} GiB, the image needs {image_size} bytes.",
                flavor.disk
            )));
        }
        if flavor.disk > 0 && image.min_disk > flavor.disk {
            return Err(Error::invalid(format!(
                "Flavor's disk is smaller than the image's min_disk of {} GiB.",
                image.min_disk
            )));
        }
        if image.min_ram > flavor.ram {
            return Err(Error::invalid(format!(
                "Flavor's memory is smaller than the image's min_ram of {} MiB.",
                image.min_ram
            )));
        }
        Ok(image.id)
    }

    /// Claims `action`'s task on a server and runs it in the background.
    pub async fn server_action(
        &self,
        caller: &Caller,
        id: &str,
        action: ServerAction,
    ) -> Result<Server> {
        if action == ServerAction::Delete {
            return self.delete_server(caller, id).await;
        }
        let server = self.server(caller, id).await?;
        caller.require(Role::Member, &format!("{} servers", action.name()))?;
        check_unlocked(caller, &server)?;
        server.check_action(action)?;
        let claimed = self.claim_task(&server, action.task()).await?;
        let cloud = self.clone();
        let running = claimed.clone();
        tokio::spawn(async move { cloud.run_action(running, action).await });
        Ok(claimed)
    }

    /// Deletes a server, as Nova accepts it in any state: one being built
    /// is only marked (task `deleting`) and its build runs the delete when
    /// it notices; one already being deleted is accepted again. A server
    /// busy with another task answers 409.
    async fn delete_server(&self, caller: &Caller, id: &str) -> Result<Server> {
        let mut last = None;
        // A build or action that ends between the read and the claim makes
        // the claim fail: read again and decide anew.
        for _ in 0..3 {
            let server = self.server(caller, id).await?;
            caller.require(Role::Member, "delete servers")?;
            check_unlocked(caller, &server)?;
            let claimed = match server.task_state {
                Some(TaskState::Deleting) => return Ok(server),
                Some(TaskState::Spawning) if server.vm_state == VmState::Building => {
                    let mut marked = server.clone();
                    marked.task_state = Some(TaskState::Deleting);
                    marked.updated_at = Utc::now();
                    self.store
                        .update_server(&server, &marked)
                        .await
                        .map(|()| (marked, false))
                }
                _ => {
                    server.check_action(ServerAction::Delete)?;
                    self.claim_task(&server, TaskState::Deleting)
                        .await
                        .map(|c| (c, true))
                }
            };
            match claimed {
                Ok((claimed, run)) => {
                    if run {
                        let cloud = self.clone();
                        let running = claimed.clone();
                        tokio::spawn(async move {
                            cloud.run_action(running, ServerAction::Delete).await
                        });
                    }
                    return Ok(claimed);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::internal("The delete could not be claimed.")))
    }

    /// Nova's `rebuild`: the server's root disk is made anew from `image_ref`
    /// (an O(1) overlay or clone), keeping the server's id — with one of the
    /// server's own snapshot images, this is a rollback.
    pub async fn rebuild_server(
        &self,
        caller: &Caller,
        id: &str,
        image_ref: &str,
    ) -> Result<Server> {
        let server = self.server(caller, id).await?;
        caller.require(Role::Member, "rebuild servers")?;
        check_unlocked(caller, &server)?;
        server.check_action(ServerAction::Rebuild)?;
        if server.image_id.is_none() {
            return Err(Error::invalid(
                "Rebuilding a volume-backed server with a new image is not supported.",
            ));
        }
        let image = self
            .image(caller, image_ref)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => {
                    Error::invalid(format!("Image {image_ref} could not be found."))
                }
                _ => e,
            })?;
        if image.status != ImageStatus::Active {
            return Err(Error::invalid(format!(
                "Image {} is not active (it is {}).",
                image.id, image.status
            )));
        }
        let claimed = self.claim_task(&server, TaskState::Rebuilding).await?;
        let cloud = self.clone();
        let running = claimed.clone();
        let image_id = image.id;
        tokio::spawn(async move { cloud.finish_rebuild(running, image_id).await });
        // Nova answers with the new image already (the rebuild goes on).
        let mut answered = claimed;
        answered.image_id = Some(image_id);
        Ok(answered)
    }

    /// Claims `task` on an idle server by compare-and-swap: a concurrent
    /// request that claimed first makes this one fail with 409.
    pub(crate) async fn claim_task(&self, server: &Server, task: TaskState) -> Result<Server> {
        if let Some(busy) = server.task_state {
            return Err(Error::conflict(format!(
                "Server {} is busy (task_state {busy}).",
                server.id
            )));
        }
        let mut claimed = server.clone();
        claimed.task_state = Some(task);
        claimed.updated_at = Utc::now();
        self.store.update_server(server, &claimed).await?;
        Ok(claimed)
    }

    /// The last `lines` lines of the server's serial console.
    pub async fn console_output(
        &self,
        caller: &Caller,
        id: &str,
        lines: Option<usize>,
    ) -> Result<String> {
        let server = self.server(caller, id).await?;
        caller.require(Role::Reader, "read server consoles")?;
        match self
            .hypervisor
            .console_log(&server.id.to_string(), lines)
            .await
        {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == hypervisor::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(hypervisor_error(e)),
        }
    }

    /// Replaces (or merges into) a server's metadata, or renames it.
    pub async fn update_server(
        &self,
        caller: &Caller,
        id: &str,
        changes: ServerChanges,
    ) -> Result<Server> {
        let server = self.server(caller, id).await?;
        caller.require(Role::Member, "update servers")?;
        let mut changed = server.clone();
        if let Some(name) = changes.name {
            domain::identity::validate_name("server", &name)?;
            changed.name = name;
        }
        if let Some(ip) = changes.access_ipv4 {
            changed.access_ipv4 = ip;
        }
        if let Some(ip) = changes.access_ipv6 {
            changed.access_ipv6 = ip;
        }
        if let Some(metadata) = changes.metadata {
            changed.metadata = metadata;
        }
        changed.updated_at = Utc::now();
        self.store.update_server(&server, &changed).await?;
        Ok(changed)
    }
}

/// What `PUT /servers/{id}` (and the metadata calls) change; `None`: kept.
#[derive(Debug, Clone, Default)]
pub struct ServerChanges {
    pub name: Option<String>,
    pub access_ipv4: Option<Option<String>>,
    pub access_ipv6: Option<Option<String>>,
    pub metadata: Option<BTreeMap<String, String>>,
}

impl Cloud {
    /// Nova's `lock`/`unlock`: a locked server refuses actions from
    /// non-admins.
    pub async fn lock_server(&self, caller: &Caller, id: &str, locked: bool) -> Result<Server> {
        let server = self.server(caller, id).await?;
        caller.require(Role::Member, "lock servers")?;
        let mut changed = server.clone();
        changed.locked = locked;
        changed.updated_at = Utc::now();
        self.store.update_server(&server, &changed).await?;
        Ok(changed)
    }
}

/// 409 for a non-admin acting on a locked server, as Nova.
fn check_unlocked(caller: &Caller, server: &Server) -> Result<()> {
    if server.locked && !caller.is_admin() {
        return Err(Error::conflict(format!("Instance {} is locked", server.id)));
    }
    Ok(())
}

/// Hypervisor failures, as the cloud reports them.
/// The hypervisor error is kept as the source (with its own cause: QMP, I/O).
pub(crate) fn hypervisor_error(e: hypervisor::Error) -> Error {
    let kind = match e.kind() {
        hypervisor::ErrorKind::NotFound => ErrorKind::NotFound,
        hypervisor::ErrorKind::InvalidArgument => ErrorKind::InvalidInput,
        hypervisor::ErrorKind::NotRunning => ErrorKind::Conflict,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, e.to_string()).with_source(e)
}
