//! Creating a restore point: a saga, each step recorded before it runs.
//!
//! ```text
//!  begun ─────────▶ cut ───────────────────────▶ switched ───────▶ done
//!  (point row       (new tops + state file        (server.root_disk and
//!   `creating`,      chosen and recorded, then     each volume's location
//!   task claimed)    QEMU cuts every disk — root   = new tops (CAS), point
//!                    and volumes — and saves       `available` with the
//!                    memory at one instant;        old tops as its layers,
//!                    qemu-img when no QEMU runs)   current = point)
//!
//!  crash at begun:    undo — point removed, task cleared
//!  crash at cut:      the new top in use (or a complete overlay of a
//!                     stopped disk)? forward; with memory and no complete
//!                     state file, the server keeps the new top but the
//!                     point is removed. Otherwise undo (the half-made
//!                     overlay is garbage). A VM left paused is resumed.
//!  crash at switched: forward — clear the task
//! ```

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::restore_point::{
    NewRestorePoint, RestoreMethod, RestorePoint, RestorePointId, RestorePointStatus,
};
use domain::server::{TaskState, VmState};
use domain::{Error, Result};
use hypervisor::DiskOverlay;

use super::volumes::point_disks;
use super::{fault_point, overlay_name, Saga, ROOT_DISK_ID};
use crate::compute::hypervisor_error;
use crate::Cloud;

pub(super) const KIND: &str = "restore-point-create";
/// How long the guest agent may take to freeze the guest's filesystems.
const FREEZE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Cloud {
    /// Starts a restore point of a server; returns it (`creating`) at once,
    /// the rest runs in the background.
    pub async fn create_restore_point(
        &self,
        caller: &Caller,
        server_id: &str,
        new: NewRestorePoint,
    ) -> Result<RestorePoint> {
        let server = self.server(caller, server_id).await?;
        caller.require(Role::Member, "create restore points")?;
        new.validate(server.vm_state)?;
        if let Some(task) = server.task_state {
            return Err(Error::conflict(format!(
                "Server {} is busy (task_state {task}).",
                server.id
            )));
        }
        let internal = new.method == RestoreMethod::Internal;
        if internal && !matches!(server.vm_state, VmState::Active | VmState::Paused) {
            return Err(Error::conflict(format!(
                "An internal restore point needs a running or paused server; this one is {}.",
                server.vm_state
            )));
        }
        self.check_point_volumes(&server, internal).await?;
        let native = self.native_points().is_some();
        let has_volumes = !self
            .store
            .attachments_of_server(server.id)
            .await?
            .is_empty();
        let root = match (server.root_disk.clone(), has_volumes) {
            (Some(root), _) => Some(root),
            (None, true) => None,
            (None, false) => return Err(Error::conflict("The server has no disk yet.")),
        };
        if native && internal {
            return Err(Error::conflict(format!(
                "Internal restore points need qcow2 disks; this server's disk is a raw RBD image on the {} pool. Use method external (RBD snapshots, with or without memory).",
                self.pool.kind()
            )));
        }
        if let Some(root) = root.as_deref().filter(|_| !native) {
            if self.pool.new_overlay(root, "probe")?.is_none() {
                return Err(Error::conflict(format!(
                    "Restore points of servers on the {} pool are not available yet.",
                    self.pool.kind()
                )));
            }
        }
        let now = Utc::now();
        let point = RestorePoint {
            id: RestorePointId::new(),
            server_id: server.id,
            project_id: server.project_id,
            name: new.name,
            parent_id: self.store.current_restore_point(server.id).await?,
            method: new.method,
            memory: new.memory || internal,
            quiesced: false,
            status: RestorePointStatus::Creating,
            disks: Vec::new(),
            state_file: None,
            vm_state: server.vm_state,
            guest_pause_us: None,
            created_at: now,
            updated_at: now,
        };
        let mut saga = Saga::new(server.id, point.id);
        saga.memory = point.memory;
        saga.internal = internal;
        saga.quiesce = new.quiesce;
        self.store.insert_saga(&saga.record(KIND)).await?;
        self.store.insert_restore_point(&point).await?;
        if let Err(e) = self
            .claim_task(&server, TaskState::RestorePointCreating)
            .await
        {
            // Another request claimed the server first: only this point goes
            // (the task is the winner's).
            let _ = self.store.delete_restore_point(point.id).await;
            let _ = self.store.finish_saga(&saga.id, "undone").await;
            return Err(e);
        }
        fault_point("restore-point-create:begun");
        let cloud = self.clone();
        tokio::spawn(async move {
            let mut saga = saga;
            let forward = if saga.internal {
                cloud.internal_point_forward(&mut saga).await
            } else if cloud.native_points().is_some() {
                cloud.native_point_create_forward(&mut saga).await
            } else {
                cloud.point_create_forward(&mut saga).await
            };
            if let Err(e) = forward {
                tracing::warn!(point = ?saga.point, error = %e, "restore point failed; undoing");
                cloud.undo_point_create(&saga, Some(&e)).await;
            }
        });
        Ok(point)
    }

    /// Runs the saga from `begun`.
    async fn point_create_forward(&self, saga: &mut Saga) -> Result<()> {
        let server = self.store.server(saga.server()?).await?;
        let point_id = saga.point()?;
        let root = match server.root_disk.clone() {
            Some(old_top) => {
                let (new_top, path) = self
                    .pool
                    .new_overlay(&old_top, &overlay_name(server.id))?
                    .ok_or_else(|| Error::conflict("This pool cannot layer disks."))?;
                Some((old_top, new_top, path))
            }
            None => None,
        };
        let volumes = self
            .plan_point_volume_cut(&server, &format!("point-{}", point_id.uuid().simple()))
            .await?;
        if root.is_none() && volumes.is_empty() {
            return Err(Error::conflict("The server has no disk."));
        }
        let state_file = saga.memory.then(|| self.point_state_file(point_id));
        if let Some(file) = &state_file {
            if let Some(dir) = file.parent() {
                tokio::fs::create_dir_all(dir).await.map_err(|e| {
                    Error::unavailable(format!("Cannot create {}: {e}", dir.display()))
                })?;
            }
        }
        saga.old_top = root.as_ref().map(|(old, _, _)| old.clone());
        saga.new_top = root.as_ref().map(|(_, new, _)| new.clone());
        saga.volumes = volumes;
        saga.state_file = state_file.as_ref().map(|f| f.display().to_string());
        self.store.saga_step(&saga.id, "cut", &saga.data()).await?;
        // New tops are no garbage-collection roots until recorded; no
        // volume snapshot may move a volume meanwhile.
        let _gc = self.gc_lock.read().await;
        let _cut = self.cut_lock.clone().lock_owned().await;
        for v in &saga.volumes {
            let now = self.store.volume(v.volume).await?;
            if now.location.as_deref() != Some(v.old.as_str()) {
                return Err(Error::conflict(format!(
                    "Volume {} changed while the restore point was being taken; try again.",
                    v.volume
                )));
            }
        }
        let pause = if self.point_qemu_is_up(&server).await {
            let disks: Vec<DiskOverlay> = root
                .iter()
                .map(|(_, _, path)| DiskOverlay {
                    disk_id: ROOT_DISK_ID.into(),
                    overlay: path.clone(),
                })
                .chain(saga.volumes.iter().map(|v| DiskOverlay {
                    disk_id: v.disk_id.clone(),
                    overlay: v.overlay.clone(),
                }))
                .collect();
            saga.quiesced = saga.quiesce && self.freeze_for_point(&server).await?;
            let taken = self
                .hypervisor
                .create_restore_point(&server.id.to_string(), &disks, state_file.as_deref())
                .await;
            if saga.quiesced {
                if let Err(e) = self
                    .hypervisor
                    .thaw_filesystems(&server.id.to_string())
                    .await
                {
                    tracing::error!(server = %server.id, error = %e, "could not thaw the guest after a restore point");
                }
            }
            let taken = taken.map_err(hypervisor_error)?;
            tracing::info!(server = %server.id, pause = ?taken.guest_pause, total = ?taken.total, memory = saga.memory, volumes = saga.volumes.len(), "restore point cut");
            Some(taken.guest_pause)
        } else if saga.memory {
            return Err(Error::conflict(
                "The server stopped before its memory could be saved.",
            ));
        } else {
            if let Some((old_top, new_top, _)) = &root {
                self.pool.create_overlay(old_top, new_top).await?;
            }
            self.make_point_volume_tops(&saga.volumes).await?;
            None
        };
        fault_point("restore-point-create:cut");
        self.record_point_switch(saga, pause.map(|p| p.as_micros() as u64))
            .await?;
        drop(_cut);
        drop(_gc);
        self.finish_point_create(saga).await
    }

    /// Runs the saga from `begun` on a pool that snapshots natively.
    async fn native_point_create_forward(&self, saga: &mut Saga) -> Result<()> {
        let _gc = self.gc_lock.read().await;
        let pause = self.native_point_cut(saga).await?;
        fault_point("restore-point-create:cut");
        self.record_point_switch(saga, pause).await?;
        drop(_gc);
        self.finish_point_create(saga).await
    }

    /// Freezes the guest's filesystems through its agent: true when frozen,
    /// false when the guest has no agent (the point is crash-consistent).
    pub(super) async fn freeze_for_point(&self, server: &domain::server::Server) -> Result<bool> {
        let name = server.id.to_string();
        match self
            .hypervisor
            .freeze_filesystems(&name, FREEZE_TIMEOUT)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == hypervisor::ErrorKind::GuestAgentUnavailable => {
                tracing::info!(server = %server.id, "no guest agent: restore point not quiesced");
                Ok(false)
            }
            Err(e) => {
                let _ = self.hypervisor.thaw_filesystems(&name).await;
                Err(hypervisor_error(e))
            }
        }
    }

    /// The cut took: the server is on the new top, the point holds the old one.
    pub(super) async fn record_point_switch(
        &self,
        saga: &Saga,
        pause_us: Option<u64>,
    ) -> Result<()> {
        let server = self.store.server(saga.server()?).await?;
        // A native point leaves the server on its disk (no new top).
        if saga.new_top.is_some() && server.root_disk != saga.new_top {
            let mut next = server.clone();
            next.root_disk = saga.new_top.clone();
            next.updated_at = Utc::now();
            self.store
                .update_server(&next, (server.vm_state, server.task_state))
                .await?;
        }
        self.seal_point_volume_layers(&saga.volumes).await?;
        self.move_point_volumes_forward(&saga.volumes).await?;
        let point = self.store.restore_point(saga.point()?).await?;
        if point.status == RestorePointStatus::Creating {
            let disks = point_disks(saga.old_top.as_deref(), &saga.volumes);
            if disks.is_empty() {
                return Err(Error::internal("A restore-point saga lost its layer."));
            }
            let mut done = point.clone();
            done.status = RestorePointStatus::Available;
            done.disks = disks;
            done.state_file = saga.state_file.clone();
            done.guest_pause_us = pause_us;
            done.quiesced = saga.quiesced;
            done.updated_at = Utc::now();
            self.store
                .update_restore_point(&done, RestorePointStatus::Creating)
                .await?;
        }
        self.store
            .set_current_restore_point(point.server_id, Some(point.id))
            .await?;
        self.store
            .saga_step(&saga.id, "switched", &saga.data())
            .await?;
        fault_point("restore-point-create:switched");
        Ok(())
    }

    pub(super) async fn finish_point_create(&self, saga: &Saga) -> Result<()> {
        self.clear_point_task(saga.server()?, None, None).await?;
        self.store.finish_saga(&saga.id, "done").await?;
        tracing::info!(server = ?saga.server, point = ?saga.point, "restore point created");
        Ok(())
    }

    /// Undo: the point goes, the task is cleared; a half-made top and a
    /// partial state file are garbage.
    pub(super) async fn undo_point_create(&self, saga: &Saga, cause: Option<&Error>) {
        if saga.internal {
            self.forget_internal_tag(saga).await;
        }
        let layered = saga.new_top.is_some() || !saga.volumes.is_empty();
        if layered && self.point_cut_took(saga).await {
            // QEMU writes into the new top already: it must stay the disk.
            if let Err(e) = self.keep_point_new_top(saga).await {
                tracing::error!(error = %e, "could not record a restore point's new top");
                return;
            }
        }
        if let Some(id) = saga.point {
            if self.store.restore_point(id).await.is_ok() {
                self.remove_point_state(saga.state_file.as_deref()).await;
                let _ = self.store.delete_restore_point(id).await;
            }
        }
        if let Some(server) = saga.server {
            // QEMU may have died meanwhile: the server is what it shows.
            let observed = match self.store.server(server).await {
                Ok(now) => Some(self.observed_state(&now).await),
                Err(_) => None,
            };
            let _ = self.clear_point_task(server, observed, cause).await;
        }
        let _ = self.store.finish_saga(&saga.id, "undone").await;
        self.collect_garbage_quietly().await;
    }

    /// Whether the new top of an interrupted cut is in use or complete.
    pub(super) async fn point_cut_took(&self, saga: &Saga) -> bool {
        if let (Some(points), None, Some(snapshot)) =
            (self.native_points(), &saga.new_top, &saga.old_top)
        {
            return points.snapshot_exists(snapshot).await.unwrap_or(false);
        }
        let Some(server) = saga.server else {
            return false;
        };
        if !self.point_volumes_took(server, &saga.volumes).await {
            return false;
        }
        let Some(new_top) = &saga.new_top else {
            // A server booted from a volume: its volumes are all its disks.
            return !saga.volumes.is_empty();
        };
        if let Ok(storage::DiskSource::File { path, .. }) = self.pool.disk_source(new_top) {
            if let Ok(active) = self
                .hypervisor
                .active_disk_file(&server.to_string(), ROOT_DISK_ID)
                .await
            {
                return active == path;
            }
        }
        self.pool.overlay_is_valid(new_top).await.unwrap_or(false)
    }

    /// Whether an interrupted cut's memory state is complete (written
    /// through a `.part` file renamed at the end).
    pub(super) async fn point_state_saved(&self, saga: &Saga) -> bool {
        match &saga.state_file {
            Some(state) => self.point_state_present(state).await,
            None => !saga.memory,
        }
    }
}
