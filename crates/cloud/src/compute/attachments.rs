//! Volumes attached to servers: what a server's disks are, and the attach
//! and detach of a volume (Nova's `os-volume_attachments`).
//!
//! A server's disks, in the order QEMU gets them: its image-backed root disk
//! (node `root`) if it has one, then every attachment's volume — the root
//! volume (boot_index 0) first, then by boot index, then by device — read
//! from the volume's current location each time the server starts.
//!
//! ```text
//!  attach (request):  server task attaching_volume (CAS) ─▶ volume available → reserved (CAS)
//!                     ─▶ attachment row ─▶ 200
//!         (background) reserved → attaching ─▶ hot-plug if the VM is live ─▶ in-use ─▶ task cleared
//!  detach (request):  server task detaching_volume (CAS) ─▶ volume in-use → detaching (CAS) ─▶ 202
//!         (background) unplug if the VM is live (guest releases it) ─▶ row removed ─▶ available
//!                      ─▶ task cleared; an unplug that fails puts the volume back in-use
//! ```
//! A stopped server only records the change: its next start gets the disks
//! of its rows. Start-up recovery ([`recover`]) settles a volume left
//! reserved, attaching or detaching from its row and what the hypervisor
//! shows (an attach goes forward, or is undone if the hot-plug fails; a
//! detach goes forward).

use std::time::Duration;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::server::{Server, TaskState, VmState};
use domain::volume::{self, Volume, VolumeAttachment, VolumeStatus};
use domain::{AttachmentId, Error, ErrorKind, Result, VolumeId};
use hypervisor::{DiskFormat, DiskSpec};

use super::hypervisor_error;
use crate::fault::fault_point;
use crate::Cloud;

/// How long a guest gets to release an unplugged disk.
const UNPLUG_TIMEOUT: Duration = Duration::from_secs(60);

/// What `POST /servers/{id}/os-volume_attachments` asks for.
#[derive(Debug, Clone, Default)]
pub struct AttachVolume {
    pub volume_id: String,
    /// `/dev/vdX`; the next free one when not given.
    pub device: Option<String>,
    pub delete_on_termination: bool,
}

impl Cloud {
    /// A server's attachments with their volumes, root volume first.
    pub(crate) async fn server_volumes(
        &self,
        server: &Server,
    ) -> Result<Vec<(VolumeAttachment, Volume)>> {
        let mut out = Vec::new();
        for attachment in self.store.attachments_of_server(server.id).await? {
            let volume = self.store.volume(attachment.volume_id).await?;
            out.push((attachment, volume));
        }
        Ok(out)
    }

    /// The disk QEMU gets for an attached volume (node name: the
    /// attachment's `disk_id`).
    pub(crate) fn volume_disk_spec(
        &self,
        attachment: &VolumeAttachment,
        volume: &Volume,
    ) -> Result<DiskSpec> {
        let location = volume.location.as_deref().ok_or_else(|| {
            Error::conflict(format!(
                "Volume {} has no data yet (it is {}).",
                volume.id, volume.status
            ))
        })?;
        let source = self.volume_pool()?.volume_source(location)?;
        Ok(disk_spec(&attachment.disk_id, source))
    }

    /// The attachments of a server the caller can see (Nova's
    /// `GET /servers/{id}/os-volume_attachments`).
    pub async fn server_attachments(
        &self,
        caller: &Caller,
        server_id: &str,
    ) -> Result<Vec<VolumeAttachment>> {
        let server = self.server(caller, server_id).await?;
        caller.require(Role::Reader, "list volume attachments")?;
        self.store.attachments_of_server(server.id).await
    }

    /// The attachments of a server already read (for its view).
    pub async fn attachments_of(&self, server: &Server) -> Result<Vec<VolumeAttachment>> {
        self.store.attachments_of_server(server.id).await
    }

    /// One attachment of a server, by volume id; 404 when that volume is
    /// not attached to it.
    pub async fn server_attachment(
        &self,
        caller: &Caller,
        server_id: &str,
        volume_id: &str,
    ) -> Result<VolumeAttachment> {
        let server = self.server(caller, server_id).await?;
        caller.require(Role::Reader, "read volume attachments")?;
        self.attachment_on(&server, volume_id).await
    }

    async fn attachment_on(&self, server: &Server, volume_id: &str) -> Result<VolumeAttachment> {
        let not_attached = || {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "Volume {volume_id} is not attached to server {}.",
                    server.id
                ),
            )
        };
        let vid: VolumeId = volume_id.parse().map_err(|_| not_attached())?;
        match self.store.attachment_of_volume(vid).await? {
            Some(a) if a.server_id == server.id => Ok(a),
            _ => Err(not_attached()),
        }
    }

    /// Attaches a volume to an active, paused or stopped server: checks and
    /// claims here, hot-plugs in the background. 404 for a volume the
    /// caller cannot see, 400 for one not `available`, 409 for a server
    /// busy or in another state.
    pub async fn attach_volume(
        &self,
        caller: &Caller,
        server_id: &str,
        request: AttachVolume,
    ) -> Result<VolumeAttachment> {
        let server = self.server(caller, server_id).await?;
        caller.require(Role::Member, "attach volumes")?;
        let volume = self
            .volume(caller, &request.volume_id)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => Error::new(
                    ErrorKind::NotFound,
                    format!("Volume {} could not be found.", request.volume_id),
                ),
                _ => e,
            })?;
        check_server_for(
            &server,
            "attach_volume",
            &[VmState::Active, VmState::Paused, VmState::Stopped],
        )?;
        if volume.status != VolumeStatus::Available {
            return Err(Error::invalid(format!(
                "Invalid volume: volume {} status must be 'available'. Currently in '{}'",
                volume.id, volume.status
            )));
        }
        self.volume_pool()?;
        let existing = self.store.attachments_of_server(server.id).await?;
        let device = self.pick_device(&server, &existing, request.device.as_deref())?;
        let attachment = VolumeAttachment {
            id: AttachmentId::new(),
            volume_id: volume.id,
            server_id: server.id,
            device,
            disk_id: volume::disk_id_of(volume.id),
            boot_index: None,
            delete_on_termination: request.delete_on_termination,
            created_at: Utc::now(),
        };

        let claimed = self.claim_task(&server, TaskState::AttachingVolume).await?;
        if let Err(e) = self
            .store
            .set_volume_status(
                volume.id,
                VolumeStatus::Available,
                VolumeStatus::Reserved,
                None,
            )
            .await
        {
            self.clear_task(&claimed).await;
            return Err(volume_moved(e, volume.id));
        }
        if let Err(e) = self.store.insert_attachment(&attachment).await {
            let _ = self
                .store
                .set_volume_status(
                    volume.id,
                    VolumeStatus::Reserved,
                    VolumeStatus::Available,
                    None,
                )
                .await;
            self.clear_task(&claimed).await;
            return Err(e);
        }
        fault_point("attach-reserved");
        let cloud = self.clone();
        let running = attachment.clone();
        tokio::spawn(async move { cloud.finish_attach(claimed, running).await });
        Ok(attachment)
    }

    /// The device an attachment takes: the one asked for (normalized, 400
    /// if taken), else the next free `/dev/vdX`.
    fn pick_device(
        &self,
        server: &Server,
        existing: &[VolumeAttachment],
        asked: Option<&str>,
    ) -> Result<String> {
        let mut used: Vec<&str> = existing.iter().map(|a| a.device.as_str()).collect();
        if server.root_disk.is_some() || server.image_id.is_some() {
            used.push("/dev/vda");
        }
        match asked.filter(|d| !d.is_empty()) {
            Some(device) => {
                let device = volume::normalize_device(device)?;
                if used.contains(&device.as_str()) {
                    return Err(Error::invalid(format!(
                        "The supplied device path ({device}) is in use."
                    )));
                }
                Ok(device)
            }
            None => volume::next_device(used.iter().copied(), 1),
        }
    }

    /// The background half of an attach.
    async fn finish_attach(&self, server: Server, attachment: VolumeAttachment) {
        let result = self.plug(&server, &attachment).await;
        if let Err(e) = &result {
            tracing::warn!(server = %server.id, volume = %attachment.volume_id, error = %e, "volume attach failed");
            self.undo_attach(&attachment).await;
        } else {
            tracing::info!(server = %server.id, volume = %attachment.volume_id, device = %attachment.device, "volume attached");
        }
        self.clear_task(&server).await;
    }

    /// reserved → attaching → (hot-plug) → in-use.
    async fn plug(&self, server: &Server, attachment: &VolumeAttachment) -> Result<()> {
        let id = attachment.volume_id;
        self.store
            .set_volume_status(id, VolumeStatus::Reserved, VolumeStatus::Attaching, None)
            .await?;
        fault_point("attach-attaching");
        self.hot_plug(server, attachment).await?;
        fault_point("attach-plugged");
        self.store
            .set_volume_status(id, VolumeStatus::Attaching, VolumeStatus::InUse, None)
            .await
    }

    /// Hot-plugs an attachment's volume if the server's VM is live; a VM
    /// that is not (stopped, or QEMU gone) gets it at its next start.
    async fn hot_plug(&self, server: &Server, attachment: &VolumeAttachment) -> Result<()> {
        if !matches!(server.vm_state, VmState::Active | VmState::Paused) {
            return Ok(());
        }
        let volume = self.store.volume(attachment.volume_id).await?;
        let disk = self.volume_disk_spec(attachment, &volume)?;
        match self
            .hypervisor
            .attach_disk(&server.id.to_string(), &disk)
            .await
        {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    hypervisor::ErrorKind::NotRunning | hypervisor::ErrorKind::NotFound
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(hypervisor_error(e)),
        }
    }

    /// An attach that failed: row gone, volume `available` again.
    async fn undo_attach(&self, attachment: &VolumeAttachment) {
        if let Err(e) = self.store.delete_attachment(attachment.id).await {
            tracing::error!(volume = %attachment.volume_id, error = %e, "cannot remove a failed attachment");
            return;
        }
        for from in [VolumeStatus::Attaching, VolumeStatus::Reserved] {
            if self
                .store
                .set_volume_status(attachment.volume_id, from, VolumeStatus::Available, None)
                .await
                .is_ok()
            {
                return;
            }
        }
    }

    /// Detaches a volume from an active or stopped server (202; the unplug
    /// runs in the background). 404 if the volume is not attached to it,
    /// 400 for its root volume or a volume not `in-use`, 409 for a server
    /// busy or in another state.
    pub async fn detach_volume(
        &self,
        caller: &Caller,
        server_id: &str,
        volume_id: &str,
    ) -> Result<()> {
        let server = self.server(caller, server_id).await?;
        caller.require(Role::Member, "detach volumes")?;
        let attachment = self.attachment_on(&server, volume_id).await?;
        if attachment.is_root() {
            return Err(Error::invalid("Cannot detach a root device volume"));
        }
        check_server_for(
            &server,
            "detach_volume",
            &[VmState::Active, VmState::Stopped],
        )?;
        let volume = self.store.volume(attachment.volume_id).await?;
        if volume.status != VolumeStatus::InUse {
            return Err(Error::invalid(format!(
                "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status must be 'attached' to detach. Currently: status: '{}'",
                volume.status
            )));
        }
        let claimed = self.claim_task(&server, TaskState::DetachingVolume).await?;
        if let Err(e) = self
            .store
            .set_volume_status(
                volume.id,
                VolumeStatus::InUse,
                VolumeStatus::Detaching,
                None,
            )
            .await
        {
            self.clear_task(&claimed).await;
            return Err(volume_moved(e, volume.id));
        }
        fault_point("detach-detaching");
        let cloud = self.clone();
        tokio::spawn(async move { cloud.finish_detach(claimed, attachment).await });
        Ok(())
    }

    /// The background half of a detach.
    async fn finish_detach(&self, server: Server, attachment: VolumeAttachment) {
        let live = matches!(server.vm_state, VmState::Active | VmState::Paused);
        match self.unplug(&server, &attachment, live).await {
            Ok(()) => {
                tracing::info!(server = %server.id, volume = %attachment.volume_id, "volume detached")
            }
            Err(e) => {
                tracing::warn!(server = %server.id, volume = %attachment.volume_id, error = %e, "volume detach failed; it stays attached");
                let _ = self
                    .store
                    .set_volume_status(
                        attachment.volume_id,
                        VolumeStatus::Detaching,
                        VolumeStatus::InUse,
                        None,
                    )
                    .await;
            }
        }
        self.clear_task(&server).await;
    }

    /// (unplug if `live`) → row removed → available.
    async fn unplug(
        &self,
        server: &Server,
        attachment: &VolumeAttachment,
        live: bool,
    ) -> Result<()> {
        if live {
            match self
                .hypervisor
                .detach_disk(&server.id.to_string(), &attachment.disk_id, UNPLUG_TIMEOUT)
                .await
            {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        hypervisor::ErrorKind::NotRunning | hypervisor::ErrorKind::NotFound
                    ) => {}
                Err(e) => return Err(hypervisor_error(e)),
            }
        }
        fault_point("detach-unplugged");
        self.store.delete_attachment(attachment.id).await?;
        fault_point("detach-row-removed");
        self.store
            .set_volume_status(
                attachment.volume_id,
                VolumeStatus::Detaching,
                VolumeStatus::Available,
                None,
            )
            .await
    }

    /// Clears the task `server` holds (as claimed), keeping what else
    /// changed meanwhile.
    pub(crate) async fn clear_task(&self, server: &Server) {
        let Ok(mut now) = self.store.server(server.id).await else {
            return;
        };
        if now.task_state != server.task_state {
            return;
        }
        let prev = now.clone();
        now.task_state = None;
        now.updated_at = Utc::now();
        if let Err(e) = self.store.update_server(&prev, &now).await {
            tracing::error!(server = %server.id, error = %e, "cannot clear the task");
        }
    }

    /// Start-up recovery: settles every volume an attach, detach or server
    /// delete left half-way (see the module header). Returns a line per
    /// repair.
    pub(crate) async fn recover_attachments(&self) -> Result<Vec<String>> {
        let mut repaired = Vec::new();
        for attachment in self.store.attachments().await? {
            let server = self.store.server(attachment.server_id).await?;
            let volume = self.store.volume(attachment.volume_id).await?;
            let what = format!("volume {} on server {}", volume.id, server.id);
            if server.vm_state == VmState::Deleted {
                self.release_volume(&attachment).await?;
                repaired.push(format!("{what}: released (server deleted)"));
                continue;
            }
            let (observed, _) = self.observed_state(&server).await;
            let mut seen = server.clone();
            seen.vm_state = observed;
            let live = matches!(observed, VmState::Active | VmState::Paused);
            match volume.status {
                VolumeStatus::InUse => {}
                VolumeStatus::Available | VolumeStatus::Reserved | VolumeStatus::Attaching => {
                    let mut status = volume.status;
                    for next in [VolumeStatus::Reserved, VolumeStatus::Attaching] {
                        if status.can_become(next) {
                            self.store
                                .set_volume_status(volume.id, status, next, None)
                                .await?;
                            status = next;
                        }
                    }
                    match self.hot_plug(&seen, &attachment).await {
                        Ok(()) => {
                            self.store
                                .set_volume_status(
                                    volume.id,
                                    VolumeStatus::Attaching,
                                    VolumeStatus::InUse,
                                    None,
                                )
                                .await?;
                            repaired.push(format!("{what}: attach finished"));
                        }
                        Err(e) => {
                            self.undo_attach(&attachment).await;
                            repaired.push(format!("{what}: attach undone ({e})"));
                        }
                    }
                }
                VolumeStatus::Detaching => match self.unplug(&seen, &attachment, live).await {
                    Ok(()) => repaired.push(format!("{what}: detach finished")),
                    Err(e) => {
                        self.store
                            .set_volume_status(
                                volume.id,
                                VolumeStatus::Detaching,
                                VolumeStatus::InUse,
                                None,
                            )
                            .await?;
                        repaired.push(format!("{what}: detach undone ({e})"));
                    }
                },
                VolumeStatus::Error | VolumeStatus::Deleting | VolumeStatus::Deleted => {
                    self.store.delete_attachment(attachment.id).await?;
                    repaired.push(format!(
                        "{what}: attachment of a {} volume removed",
                        volume.status
                    ));
                }
                _ => {}
            }
        }
        for volume in self.store.volumes(None).await? {
            let attached = matches!(
                volume.status,
                VolumeStatus::Reserved
                    | VolumeStatus::Attaching
                    | VolumeStatus::InUse
                    | VolumeStatus::Detaching
            );
            if attached && self.store.attachment_of_volume(volume.id).await?.is_none() {
                let mut status = volume.status;
                for next in [VolumeStatus::Detaching, VolumeStatus::Available] {
                    if status.can_become(next) {
                        self.store
                            .set_volume_status(volume.id, status, next, None)
                            .await?;
                        status = next;
                    }
                }
                repaired.push(format!(
                    "volume {}: {} without an attachment, now available",
                    volume.id, volume.status
                ));
            }
        }
        Ok(repaired)
    }

    /// Releases every volume of a server being deleted (its VM is gone):
    /// each becomes `available`, or is deleted with `delete_on_termination`.
    /// Each row goes last, so a crash in between is finished by running
    /// this again.
    pub(crate) async fn release_server_volumes(&self, server: &Server) -> Result<()> {
        for attachment in self.store.attachments_of_server(server.id).await? {
            self.release_volume(&attachment).await?;
        }
        Ok(())
    }

    async fn release_volume(&self, attachment: &VolumeAttachment) -> Result<()> {
        let id = attachment.volume_id;
        let mut volume = self.store.volume(id).await?;
        let steps: &[VolumeStatus] = match volume.status {
            VolumeStatus::InUse => &[VolumeStatus::Detaching, VolumeStatus::Available],
            VolumeStatus::Reserved | VolumeStatus::Attaching | VolumeStatus::Detaching => {
                &[VolumeStatus::Available]
            }
            _ => &[],
        };
        for next in steps {
            self.store
                .set_volume_status(id, volume.status, *next, None)
                .await?;
            volume.status = *next;
        }
        let delete = attachment.delete_on_termination
            && matches!(volume.status, VolumeStatus::Available | VolumeStatus::Error)
            && self.store.snapshots_of_volume(id).await?.is_empty();
        if delete {
            self.store
                .set_volume_status(id, volume.status, VolumeStatus::Deleting, None)
                .await?;
            volume.status = VolumeStatus::Deleting;
        }
        fault_point("release-volume");
        self.store.delete_attachment(attachment.id).await?;
        if delete {
            // Marked deleted after the collection that releases its data
            // (the server's own delete runs one too).
            let cloud = self.clone();
            tokio::spawn(async move { cloud.finish_volume_delete(volume).await });
        }
        Ok(())
    }
}

/// 409 unless the server is idle and in one of `states` (Nova's
/// `check_instance_state`).
fn check_server_for(server: &Server, action: &str, states: &[VmState]) -> Result<()> {
    if let Some(task) = server.task_state {
        return Err(Error::conflict(format!(
            "Cannot '{action}' instance {} while it is in task_state {task}",
            server.id
        )));
    }
    if !states.contains(&server.vm_state) {
        return Err(Error::conflict(format!(
            "Cannot '{action}' instance {} while it is in vm_state {}",
            server.id, server.vm_state
        )));
    }
    Ok(())
}

/// A volume that moved between the check and the claim: 400 as Nova's
/// "Invalid volume".
fn volume_moved(e: Error, id: VolumeId) -> Error {
    match e.kind() {
        ErrorKind::Conflict => Error::invalid(format!(
            "Invalid volume: volume {id} is no longer available ({}).",
            e.message()
        )),
        _ => e,
    }
}

/// A pool's disk source as the hypervisor's disk `id`.
pub(crate) fn disk_spec(id: &str, source: storage::DiskSource) -> DiskSpec {
    let (source, format) = match source {
        storage::DiskSource::File { path, format } => (
            hypervisor::DiskSource::File(path),
            if format == "raw" {
                DiskFormat::Raw
            } else {
                DiskFormat::Qcow2
            },
        ),
        storage::DiskSource::Rbd {
            pool,
            image,
            conf,
            user,
        } => (
            hypervisor::DiskSource::Rbd {
                pool,
                image,
                snapshot: None,
                conf: Some(conf),
                user: Some(user),
            },
            DiskFormat::Raw,
        ),
    };
    DiskSpec {
        id: id.to_string(),
        source,
        format,
        read_only: false,
    }
}
