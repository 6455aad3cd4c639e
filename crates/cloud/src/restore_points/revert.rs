//! Reverting a server to one of its restore points: a saga.
//!
//! ```text
//!  begun ──────▶ overlay ─────────────────▶ switched ──────────────▶ done
//!  (task         (new tops chosen and        (volumes' locations and
//!   claimed)      recorded, then created      server.root_disk = new
//!                 over the point's layers;    tops (CAS), current =
//!                 QEMU destroyed)             point; then QEMU started
//!                                             paused from the state file
//!                                             with every disk and `cont`
//!                                             — or left off for a
//!                                             disk-only point)
//!
//!  crash at begun/overlay: undo — task cleared, volumes and root disk
//!                          back on their old tops, the server is what the
//!                          hypervisor shows; the new tops are garbage
//!  crash at switched:      forward — start from the state file (memory)
//! ```
//! The point's layers are never written: the server writes into new tops.
//! Points on other branches keep their layers and stay revertable. A server
//! whose attachments differ from the point's (a volume attached or detached
//! since) is refused (409).

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::restore_point::{RestoreMethod, RestorePoint, RestorePointStatus};
use domain::server::{PowerState, Server, TaskState, VmState};
use domain::{Error, Result};

use super::{fault_point, overlay_name, point_of, Saga};
use crate::compute::hypervisor_error;
use crate::Cloud;

pub(super) const KIND: &str = "restore-point-revert";

/// Server states a revert may start from.
const REVERTABLE_FROM: &[VmState] = &[
    VmState::Active,
    VmState::Stopped,
    VmState::Paused,
    VmState::Suspended,
    VmState::Error,
];

impl Cloud {
    /// Starts reverting a server to one of its points; returns the server
    /// with its task claimed, the rest runs in the background.
    pub async fn revert_to_restore_point(
        &self,
        caller: &Caller,
        server_id: &str,
        point_id: &str,
    ) -> Result<Server> {
        let server = self.server(caller, server_id).await?;
        caller.require(Role::Member, "revert servers to restore points")?;
        let point = point_of(&server, point_id, self).await?;
        if point.status != RestorePointStatus::Available {
            return Err(Error::conflict(format!(
                "Restore point {} is {}; only an available point can be reverted to.",
                point.id, point.status
            )));
        }
        if !self.point_files_present(&point).await {
            return Err(Error::conflict(format!(
                "Restore point {} is broken: its files are missing.",
                point.id
            )));
        }
        if let Some(task) = server.task_state {
            return Err(Error::conflict(format!(
                "Server {} is busy (task_state {task}).",
                server.id
            )));
        }
        self.check_point_attachments(&server, &point).await?;
        if !REVERTABLE_FROM.contains(&server.vm_state) {
            return Err(Error::conflict(format!(
                "Server {} cannot be reverted in vm_state {}.",
                server.id, server.vm_state
            )));
        }
        let mut saga = Saga::new(server.id, point.id);
        saga.memory = point.memory;
        saga.state_file = point.state_file.clone();
        self.store.insert_saga(&saga.record(KIND)).await?;
        let claimed = match self
            .claim_task(&server, TaskState::RestorePointReverting)
            .await
        {
            Ok(claimed) => claimed,
            Err(e) => {
                let _ = self.store.finish_saga(&saga.id, "undone").await;
                return Err(e);
            }
        };
        fault_point("restore-point-revert:begun");
        let cloud = self.clone();
        tokio::spawn(async move {
            let mut saga = saga;
            if let Err(e) = cloud.point_revert_forward(&mut saga, "begun").await {
                tracing::warn!(point = ?saga.point, error = %e, "revert failed");
                cloud.undo_point_revert(&saga, Some(&e)).await;
            }
        });
        Ok(claimed)
    }

    /// Runs the saga forward from `step`.
    pub(super) async fn point_revert_forward(&self, saga: &mut Saga, step: &str) -> Result<()> {
        let point = self.store.restore_point(saga.point()?).await?;
        if point.method == RestoreMethod::Internal {
            self.store
                .saga_step(&saga.id, "loading", &saga.data())
                .await?;
            let settled = self.revert_internal(saga, &point).await?;
            self.clear_point_task(point.server_id, Some(settled), None)
                .await?;
            self.store.finish_saga(&saga.id, "done").await?;
            tracing::info!(server = %point.server_id, point = %point.id, "server reverted to an internal point");
            self.collect_garbage_quietly().await;
            return Ok(());
        }
        if step == "begun" {
            saga.old_top = self.store.server(point.server_id).await?.root_disk;
            // New tops are no garbage-collection roots until the switch.
            let _gc = if self.native_points().is_some() {
                self.native_revert_clone(saga, &point_layer(&point)?)
                    .await?;
                None
            } else {
                let root_layer = point
                    .disks
                    .iter()
                    .find(|d| d.volume_id.is_none())
                    .map(|d| d.layer.clone());
                saga.new_top = match &root_layer {
                    Some(layer) => Some(
                        self.pool
                            .new_overlay(layer, &overlay_name(point.server_id))?
                            .ok_or_else(|| Error::conflict("This pool cannot layer disks."))?
                            .0,
                    ),
                    None => None,
                };
                saga.volumes = self.plan_point_volume_revert(&point).await?;
                self.store
                    .saga_step(&saga.id, "overlay", &saga.data())
                    .await?;
                let gc = self.gc_lock.read().await;
                if let (Some(layer), Some(new_top)) = (&root_layer, &saga.new_top) {
                    self.pool.create_overlay(layer, new_top).await?;
                }
                self.make_point_volume_tops(&saga.volumes).await?;
                self.keep_point_volume_sizes(&saga.volumes).await?;
                fault_point("restore-point-revert:overlay");
                Some(gc)
            };
            let server = self.store.server(point.server_id).await?;
            self.hypervisor
                .destroy(&server.id.to_string())
                .await
                .or_else(|e| match e.kind() {
                    hypervisor::ErrorKind::NotFound => Ok(()),
                    _ => Err(hypervisor_error(e)),
                })?;
            remove_if_present(&self.state_file(&server)).await;
            self.record_point_revert_switch(saga).await?;
            drop(_gc);
        }
        let server = self.store.server(point.server_id).await?;
        let settled = match (&point.state_file, point.memory) {
            (Some(state), true) => {
                let spec = self.vm_spec(&server).await?;
                self.hypervisor
                    .start_incoming_from(&spec, &self.memory_state_of(state)?)
                    .await
                    .map_err(hypervisor_error)?;
                (VmState::Active, PowerState::Running)
            }
            _ => (VmState::Stopped, PowerState::Shutdown),
        };
        fault_point("restore-point-revert:started");
        self.clear_point_task(point.server_id, Some(settled), None)
            .await?;
        self.store.finish_saga(&saga.id, "done").await?;
        tracing::info!(server = %point.server_id, point = %point.id, "server reverted");
        self.collect_garbage_quietly().await;
        self.keep_native_disk_shallow(server.root_disk.clone());
        Ok(())
    }

    /// The new top is made and QEMU is gone: the server's disk is the new top.
    async fn record_point_revert_switch(&self, saga: &Saga) -> Result<()> {
        self.move_point_volumes_forward(&saga.volumes).await?;
        let server = self.store.server(saga.server()?).await?;
        let mut next = server.clone();
        next.root_disk = saga.new_top.clone();
        next.fault = None;
        next.updated_at = Utc::now();
        self.store
            .update_server(&next, (server.vm_state, server.task_state))
            .await?;
        self.store
            .set_current_restore_point(server.id, Some(saga.point()?))
            .await?;
        self.store
            .saga_step(&saga.id, "switched", &saga.data())
            .await?;
        fault_point("restore-point-revert:switched");
        Ok(())
    }

    /// Undo before the switch: the server stays on its disk, in the state
    /// the hypervisor shows; a failure after the switch leaves the server on
    /// the point's disk, stopped, with a fault.
    pub(super) async fn undo_point_revert(&self, saga: &Saga, cause: Option<&Error>) {
        if let Err(e) = self.undo_point_revert_switch(saga).await {
            tracing::error!(error = %e, "could not put a server's disks back after a failed revert");
        }
        if let Some(server) = saga.server {
            if let Ok(now) = self.store.server(server).await {
                let observed = self.observed_state(&now).await;
                let _ = self.clear_point_task(server, Some(observed), cause).await;
            }
        }
        let _ = self.store.finish_saga(&saga.id, "undone").await;
        self.collect_garbage_quietly().await;
    }
}

impl Cloud {
    /// Before `switched`: the volumes and the root disk go back to where
    /// they were, if the switch had begun (their new tops are garbage).
    /// After it, the server stays on the point's disks.
    async fn undo_point_revert_switch(&self, saga: &Saga) -> Result<()> {
        let step = self
            .store
            .open_sagas()
            .await?
            .into_iter()
            .find(|r| r.id == saga.id)
            .map(|r| r.step);
        if step.as_deref() != Some("overlay") {
            return Ok(());
        }
        self.move_point_volumes_back(&saga.volumes).await?;
        let server = self.store.server(saga.server()?).await?;
        if saga.new_top.is_some() && server.root_disk == saga.new_top && saga.old_top.is_some() {
            let mut next = server.clone();
            next.root_disk = saga.old_top.clone();
            next.updated_at = Utc::now();
            self.store
                .update_server(&next, (server.vm_state, server.task_state))
                .await?;
        }
        Ok(())
    }
}

/// The layer of the point's (only) disk.
fn point_layer(point: &RestorePoint) -> Result<String> {
    point
        .disks
        .first()
        .map(|d| d.layer.clone())
        .ok_or_else(|| Error::conflict(format!("Restore point {} has no disk.", point.id)))
}

async fn remove_if_present(path: &std::path::Path) {
    if let Err(e) = tokio::fs::remove_file(path).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a file");
        }
    }
}
