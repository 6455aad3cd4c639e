//! The background half of every server operation.
//!
//! ```text
//!  spawn:   volumes made (see block_devices) ─▶ create_disk (O(1) overlay/clone of the
//!           image, if it boots from one) ─▶ record root_disk ─▶ start QEMU ─▶ active
//!  action:  [task claimed by the request] ─▶ hypervisor call ─▶ final CAS clears the task
//!  delete while building: the request only marks task `deleting`; the build
//!           notices it (before QEMU starts, or at its end) and runs the delete
//!  delete:  destroy QEMU ─▶ undefine ─▶ memory state removed ─▶ volumes released
//!           (available, or deleted with delete_on_termination) ─▶ deleted ─▶ disk released
//!           ─▶ release the image's data if the image was deleted meanwhile
//! ```
//! A failure leaves the server in the state the hypervisor shows, with a
//! `fault` saying what went wrong; the task is always cleared.

use std::path::PathBuf;

use chrono::Utc;
use domain::image::ImageStatus;
use domain::server::{Fault, PowerState, Server, ServerAction, TaskState, VmState};
use domain::{Error, Result};
use hypervisor::VmSpec;

use super::hypervisor_error;
use crate::Cloud;

const ROOT_DISK_ID: &str = "root";

impl Cloud {
    pub(crate) fn state_file(&self, server: &Server) -> PathBuf {
        self.config.state_dir.join(format!("{}.state", server.id))
    }

    /// What QEMU is started with for `server`: its image-backed root disk
    /// (node `root`), if it has one, then its attached volumes (root volume
    /// first), each at the volume's current location.
    pub(crate) async fn vm_spec(&self, server: &Server) -> Result<VmSpec> {
        let mut disks = Vec::new();
        if let Some(location) = server.root_disk.as_deref() {
            disks.push(super::attachments::disk_spec(
                ROOT_DISK_ID,
                self.pool.disk_source(location)?,
            ));
        }
        for (attachment, volume) in self.server_volumes(server).await? {
            disks.push(self.volume_disk_spec(&attachment, &volume)?);
        }
        if disks.is_empty() {
            return Err(Error::internal(format!(
                "Server {} has no root disk.",
                server.id
            )));
        }
        Ok(VmSpec {
            name: server.id.to_string(),
            memory_mib: u32::try_from(server.flavor.ram).unwrap_or(u32::MAX),
            vcpus: server.flavor.vcpus,
            disks,
            nics: self
                .server_nics(server)
                .await?
                .into_iter()
                .map(|n| hypervisor::NicSpec {
                    id: n.id,
                    mac: n.mac,
                    tap: n.tap,
                })
                .collect(),
            kernel: None,
            initrd: None,
            cmdline: None,
        })
    }

    /// Builds a new server: its disk, then QEMU.
    pub(crate) async fn spawn_server(&self, server: Server) {
        let result = self.build(server.clone()).await;
        self.settle_boot_volumes(&server).await;
        let mut done = match self.store.server(server.id).await {
            Ok(s) => s,
            Err(e) => {
                return tracing::error!(server = %server.id, error = %e, "server vanished while building")
            }
        };
        if done.task_state == Some(TaskState::Deleting) {
            // Deleted while building (see `Cloud::delete_server`): the
            // delete runs now, over whatever the build made.
            tracing::info!(server = %server.id, "server deleted while building");
            return self.finish_delete(done).await;
        }
        // Guarded by the states the build claimed, and by what is read here.
        let prev = Server {
            vm_state: server.vm_state,
            task_state: server.task_state,
            ..done.clone()
        };
        match result {
            Ok(()) => {
                done.vm_state = VmState::Active;
                done.power_state = PowerState::Running;
                done.launched_at = Some(Utc::now());
                done.progress = 100;
                tracing::info!(server = %server.id, "server active");
            }
            Err(e) => {
                tracing::warn!(server = %server.id, error = %e, "server build failed");
                done.vm_state = VmState::Error;
                done.fault = Some(fault(&e));
            }
        }
        done.task_state = None;
        done.updated_at = Utc::now();
        if let Err(e) = self.store.update_server(&prev, &done).await {
            tracing::error!(server = %server.id, error = %e, "could not record the end of the build");
        }
    }

    async fn build(&self, server: Server) -> Result<()> {
        self.prepare_boot_volumes(&server).await?;
        let server = match server.image_id {
            Some(image_id) => self.make_root_disk(server, image_id).await?,
            None => server,
        };
        if self.store.server(server.id).await?.task_state == Some(TaskState::Deleting) {
            return Err(Error::conflict(format!(
                "Server {} was deleted while it was building.",
                server.id
            )));
        }
        let spec = self.vm_spec(&server).await?;
        if !spec.nics.is_empty() {
            // QEMU opens its taps by name: they must exist first.
            self.apply_network_plan().await?;
        }
        self.hypervisor.start(&spec).await.map_err(hypervisor_error)
    }

    /// The root disk of a server booting from an image: an O(1) overlay or
    /// clone of the image, recorded.
    async fn make_root_disk(
        &self,
        mut server: Server,
        image_id: domain::ImageId,
    ) -> Result<Server> {
        let image = self.store.image(image_id).await?;
        let location = image
            .location
            .clone()
            .filter(|_| image.status == ImageStatus::Active)
            .ok_or_else(|| Error::conflict(format!("Image {image_id} is no longer active.")))?;
        let format = crate::images::qemu_format_of(&image);
        let size = server.flavor.disk * super::GIB;
        let _gc = self.gc_lock.read().await;
        let disk = self
            .pool
            .create_disk(&server.id.to_string(), &location, format, size)
            .await?;
        // Progress stays 0 until active, as Nova's libvirt driver reports it:
        // `openstack server create --wait` prints any non-zero progress to
        // stdout, which would corrupt its `-f json` output.
        server.root_disk = Some(disk.clone());
        let recorded = self.record_root_disk(server.id, disk).await?;
        if recorded.task_state == Some(TaskState::Deleting) {
            return Err(Error::conflict(format!(
                "Server {} was deleted while it was building.",
                server.id
            )));
        }
        Ok(server)
    }

    /// Records a just-made root disk on the server, whatever task it has
    /// now (a delete may have been asked meanwhile): the disk must be
    /// known to the row, so the delete releases it. Returns the row.
    async fn record_root_disk(&self, id: domain::ServerId, disk: String) -> Result<Server> {
        let mut last = None;
        for _ in 0..5 {
            let prev = self.store.server(id).await?;
            let mut next = prev.clone();
            next.root_disk = Some(disk.clone());
            next.updated_at = Utc::now();
            match self.store.update_server(&prev, &next).await {
                Ok(()) => return Ok(next),
                Err(e) if e.kind() == domain::ErrorKind::Conflict => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::internal("The root disk could not be recorded.")))
    }

    /// Runs a claimed action and clears its task.
    pub(crate) async fn run_action(&self, server: Server, action: ServerAction) {
        if action == ServerAction::Delete {
            return self.finish_delete(server).await;
        }
        let result = self.perform(&server, action).await;
        let mut done = server.clone();
        match result {
            Ok((vm_state, power_state)) => {
                done.vm_state = vm_state;
                done.power_state = power_state;
                tracing::info!(server = %server.id, action = action.name(), "server action done");
            }
            Err(e) => {
                tracing::warn!(server = %server.id, action = action.name(), error = %e, "server action failed");
                let (vm_state, power_state) = self.observed_state(&server).await;
                done.vm_state = vm_state;
                done.power_state = power_state;
                done.fault = Some(fault(&e));
            }
        }
        done.task_state = None;
        done.updated_at = Utc::now();
        if let Err(e) = self.store.update_server(&server, &done).await {
            tracing::error!(server = %server.id, error = %e, "could not record the end of an action");
        }
    }

    /// The hypervisor half of an action; returns the new (vm, power) states.
    async fn perform(
        &self,
        server: &Server,
        action: ServerAction,
    ) -> Result<(VmState, PowerState)> {
        let name = server.id.to_string();
        let hv = &self.hypervisor;
        let timeout = self.config.shutdown_timeout;
        match action {
            ServerAction::Stop => {
                hv.shutdown(&name, timeout)
                    .await
                    .map_err(hypervisor_error)?;
                Ok((VmState::Stopped, PowerState::Shutdown))
            }
            ServerAction::Start => {
                hv.start(&self.vm_spec(server).await?)
                    .await
                    .map_err(hypervisor_error)?;
                Ok((VmState::Active, PowerState::Running))
            }
            ServerAction::Pause => {
                hv.pause(&name).await.map_err(hypervisor_error)?;
                Ok((VmState::Paused, PowerState::Paused))
            }
            ServerAction::Unpause => {
                hv.resume(&name).await.map_err(hypervisor_error)?;
                Ok((VmState::Active, PowerState::Running))
            }
            ServerAction::Suspend => {
                hv.save_memory(&name, &self.state_file(server))
                    .await
                    .map_err(hypervisor_error)?;
                Ok((VmState::Suspended, PowerState::Suspended))
            }
            ServerAction::Resume => {
                let state = self.state_file(server);
                hv.start_incoming(&self.vm_spec(server).await?, &state)
                    .await
                    .map_err(hypervisor_error)?;
                remove_file_if_present(&state).await;
                Ok((VmState::Active, PowerState::Running))
            }
            ServerAction::RebootSoft => {
                hv.reboot(&name, timeout).await.map_err(hypervisor_error)?;
                Ok((VmState::Active, PowerState::Running))
            }
            ServerAction::RebootHard => {
                hv.destroy(&name).await.map_err(hypervisor_error)?;
                remove_file_if_present(&self.state_file(server)).await;
                hv.start(&self.vm_spec(server).await?)
                    .await
                    .map_err(hypervisor_error)?;
                Ok((VmState::Active, PowerState::Running))
            }
            other => Err(Error::internal(format!(
                "Action {} is not run by perform().",
                other.name()
            ))),
        }
    }

    /// Rebuild: a new root disk from `image_id`, then the server runs again
    /// on it (if it was running); the old disk is garbage unless images
    /// stand on it.
    pub(crate) async fn finish_rebuild(&self, server: Server, image_id: domain::ImageId) {
        let was_running = server.vm_state == VmState::Active;
        let result = async {
            self.hypervisor
                .destroy(&server.id.to_string())
                .await
                .or_else(|e| match e.kind() {
                    hypervisor::ErrorKind::NotFound => Ok(()),
                    _ => Err(hypervisor_error(e)),
                })?;
            remove_file_if_present(&self.state_file(&server)).await;
            let image = self.store.image(image_id).await?;
            let location = image
                .location
                .clone()
                .ok_or_else(|| Error::conflict("The image has no data."))?;
            let format = crate::images::qemu_format_of(&image);
            let name = format!(
                "{}-{}",
                server.id,
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            let mut rebuilt = server.clone();
            {
                let _gc = self.gc_lock.read().await;
                let disk = self
                    .pool
                    .create_disk(&name, &location, format, server.flavor.disk * super::GIB)
                    .await?;
                rebuilt.root_disk = Some(disk);
                rebuilt.image_id = Some(image_id);
                rebuilt.updated_at = Utc::now();
                self.store.update_server(&server, &rebuilt).await?;
            }
            if was_running {
                self.hypervisor
                    .start(&self.vm_spec(&rebuilt).await?)
                    .await
                    .map_err(hypervisor_error)?;
            }
            Ok::<Server, Error>(rebuilt)
        }
        .await;
        let mut done = match self.store.server(server.id).await {
            Ok(s) => s,
            Err(e) => {
                return tracing::error!(server = %server.id, error = %e, "server vanished while rebuilding")
            }
        };
        let prev = done.clone();
        match result {
            Ok(_) => {
                done.vm_state = if was_running {
                    VmState::Active
                } else {
                    VmState::Stopped
                };
                done.power_state = if was_running {
                    PowerState::Running
                } else {
                    PowerState::Shutdown
                };
                done.fault = None;
                tracing::info!(server = %server.id, image = %image_id, "server rebuilt");
            }
            Err(e) => {
                tracing::warn!(server = %server.id, error = %e, "server rebuild failed");
                let (vm_state, power_state) = self.observed_state(&done).await;
                done.vm_state = if vm_state == VmState::Active {
                    vm_state
                } else {
                    VmState::Error
                };
                done.power_state = power_state;
                done.fault = Some(fault(&e));
            }
        }
        done.task_state = None;
        done.updated_at = Utc::now();
        if let Err(e) = self.store.update_server(&prev, &done).await {
            tracing::error!(server = %server.id, error = %e, "could not record the end of a rebuild");
        }
        self.collect_garbage_quietly().await;
    }

    /// Removes everything a server has, then its record.
    pub(crate) async fn finish_delete(&self, server: Server) {
        match self.tear_down(&server).await {
            Ok(()) => {
                // Deleted (no longer a garbage-collection root, 404 to users)
                // while the task stays until its disk is released: whoever
                // waits for the task sees the delete complete, and a restart
                // in between finishes it.
                let mut gone = server.clone();
                gone.vm_state = VmState::Deleted;
                gone.task_state = Some(TaskState::Deleting);
                gone.power_state = PowerState::NoState;
                gone.updated_at = Utc::now();
                if let Err(e) = self.store.update_server(&server, &gone).await {
                    tracing::error!(server = %server.id, error = %e, "could not record the delete");
                    return;
                }
                self.collect_garbage_quietly().await;
                let prev = gone.clone();
                gone.task_state = None;
                if let Err(e) = self.store.update_server(&prev, &gone).await {
                    tracing::error!(server = %server.id, error = %e, "could not record the delete");
                    return;
                }
                tracing::info!(server = %server.id, "server deleted");
            }
            Err(e) => {
                tracing::warn!(server = %server.id, error = %e, "server delete failed");
                let mut failed = server.clone();
                failed.vm_state = VmState::Error;
                failed.task_state = None;
                failed.fault = Some(fault(&e));
                failed.updated_at = Utc::now();
                let _ = self.store.update_server(&server, &failed).await;
            }
        }
    }

    async fn tear_down(&self, server: &Server) -> Result<()> {
        let name = server.id.to_string();
        match self.hypervisor.undefine(&name).await {
            Ok(()) => {}
            Err(e) if e.kind() == hypervisor::ErrorKind::NotFound => {}
            Err(e) => return Err(hypervisor_error(e)),
        }
        remove_file_if_present(&self.state_file(server)).await;
        self.release_server_ports(server.id).await?;
        self.release_server_volumes(server).await
    }

    /// What the hypervisor shows, as (vm_state, power_state).
    pub(crate) async fn observed_state(&self, server: &Server) -> (VmState, PowerState) {
        use hypervisor::{ShutoffReason, VmStatus};
        let state_saved = tokio::fs::try_exists(self.state_file(server))
            .await
            .unwrap_or(false);
        match self.hypervisor.status(&server.id.to_string()).await {
            Ok(VmStatus::Running) => (VmState::Active, PowerState::Running),
            Ok(VmStatus::Paused { .. }) => (VmState::Paused, PowerState::Paused),
            Ok(VmStatus::Shutoff {
                reason: ShutoffReason::Saved { .. },
            }) => (VmState::Suspended, PowerState::Suspended),
            Ok(_) if state_saved => (VmState::Suspended, PowerState::Suspended),
            Ok(VmStatus::Shutoff {
                reason: ShutoffReason::Crashed { .. },
            }) => (VmState::Stopped, PowerState::Crashed),
            Ok(_) => (VmState::Stopped, PowerState::Shutdown),
            Err(_) => (server.vm_state, server.power_state),
        }
    }
}

pub(crate) fn fault(e: &Error) -> Fault {
    Fault {
        code: e.kind().http_status(),
        message: e.message().to_string(),
        created: Utc::now(),
    }
}

async fn remove_file_if_present(path: &std::path::Path) {
    if let Err(e) = tokio::fs::remove_file(path).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a file");
        }
    }
}
