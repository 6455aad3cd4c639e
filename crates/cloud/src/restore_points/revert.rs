//! Reverting a server to one of its restore points: a saga
//! (`restore-point-revert`, on the engine in [`crate::saga`]); `claim` runs
//! in the request, the rest in the background.
//!
//! ```text
//!  claim ──▶ plan ────────────▶ overlay ──────────▶ stop ────────▶ switch ─────────────▶ start ──────────────▶ release
//!  (task     (new tops / the    (new tops made      (QEMU          (volumes' locations   (QEMU started paused   (task
//!   claimed)  RBD clone named    over the point's    destroyed,     and root_disk = new   from the state file    cleared,
//!             and recorded)      layers: overlays    a suspended    tops (CAS), current   and `cont` — or left   states as
//!                                or an O(1) clone)   state gone)    = point)              off for a disk-only    settled)
//!                                                                                         point; internal: the
//!                                                                                         snapshot-load)
//!
//!  crash in claim: probed (the task is the saga's → on; else undone);
//!  anywhere else: run again (every step is idempotent).
//!  undo: before the switch ends, the volumes and the root disk go back to
//!  their old tops (the new ones are garbage); after it the server stays on
//!  the point's disks. The task is cleared, the server shows what the
//!  hypervisor shows, with a fault.
//! ```
//! The point's layers are never written: the server writes into new tops.
//! Points on other branches keep their layers and stay revertable. A server
//! whose attachments differ from the point's (a volume attached or detached
//! since) is refused (409).

use async_trait::async_trait;
use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::restore_point::{RestoreMethod, RestorePoint, RestorePointStatus};
use domain::server::{PowerState, Server, TaskState, VmState};
use domain::{Error, Result};
use serde::{Deserialize, Serialize};

use super::{overlay_name, point_of, PointState};
use crate::compute::hypervisor_error;
use crate::saga::{Probe, Saga, SagaStep};
use crate::Cloud;

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
        let mut state = PointState::new(server.id, point.id);
        state.memory = point.memory;
        state.internal = point.method == RestoreMethod::Internal;
        state.state_file = point.state_file.clone();
        let mut saga = self.begin_saga(PointRevert(state)).await?;
        saga.run_through(Step::Claim).await?;
        saga.spawn();
        self.store.server(server.id).await
    }

    /// Names the new tops (or the RBD clone) before anything is made.
    async fn plan_point_revert(&self, saga: &mut PointState, point: &RestorePoint) -> Result<()> {
        saga.old_top = self.store.server(point.server_id).await?.root_disk;
        if let Some(points) = self.native_points() {
            let name = overlay_name(point.server_id);
            saga.new_top = Some(points.clone_location(&name)?);
            saga.clone_name = Some(name);
            return Ok(());
        }
        saga.new_top = match root_layer(point) {
            Some(layer) => Some(
                self.pool
                    .new_overlay(&layer, &overlay_name(point.server_id))?
                    .ok_or_else(|| Error::conflict("This pool cannot layer disks."))?
                    .0,
            ),
            None => None,
        };
        saga.volumes = self.plan_point_volume_revert(point).await?;
        Ok(())
    }

    /// Makes the new tops over the point's layers (or the RBD clone).
    async fn make_revert_tops(&self, saga: &PointState, point: &RestorePoint) -> Result<()> {
        if self.native_points().is_some() {
            return self.native_revert_clone(saga, &point_layer(point)?).await;
        }
        if let (Some(layer), Some(new_top)) = (root_layer(point), &saga.new_top) {
            self.pool.create_overlay(&layer, new_top).await?;
        }
        self.make_point_volume_tops(&saga.volumes).await?;
        self.keep_point_volume_sizes(&saga.volumes).await
    }

    /// QEMU goes (its disks are about to change under it).
    async fn stop_for_revert(&self, server: domain::ServerId) -> Result<()> {
        let server = self.store.server(server).await?;
        self.hypervisor
            .destroy(&server.id.to_string())
            .await
            .or_else(|e| match e.kind() {
                hypervisor::ErrorKind::NotFound => Ok(()),
                _ => Err(hypervisor_error(e)),
            })?;
        remove_if_present(&self.state_file(&server)).await;
        Ok(())
    }

    /// Starts the server from the point's memory, or leaves it off.
    async fn start_reverted(&self, point: &RestorePoint) -> Result<()> {
        if let (Some(state), true) = (&point.state_file, point.memory) {
            let server = self.store.server(point.server_id).await?;
            let spec = self.vm_spec(&server).await?;
            self.hypervisor
                .start_incoming_from(&spec, &self.memory_state_of(state)?)
                .await
                .map_err(hypervisor_error)?;
        }
        Ok(())
    }

    /// The new tops are made and QEMU is gone: the server's disks are the
    /// new tops.
    async fn record_point_revert_switch(&self, saga: &PointState) -> Result<()> {
        self.move_point_volumes_forward(&saga.volumes).await?;
        let server = self.store.server(saga.server()?).await?;
        let mut next = server.clone();
        next.root_disk = saga.new_top.clone();
        next.fault = None;
        next.updated_at = Utc::now();
        self.store.update_server(&server, &next).await?;
        self.store
            .set_current_restore_point(server.id, Some(saga.point()?))
            .await
    }

    /// A switch cut short: the volumes and the root disk go back to where
    /// they were (their new tops are garbage).
    async fn undo_point_revert_switch(&self, saga: &PointState) -> Result<()> {
        self.move_point_volumes_back(&saga.volumes).await?;
        let server = self.store.server(saga.server()?).await?;
        if saga.new_top.is_some() && server.root_disk == saga.new_top && saga.old_top.is_some() {
            let mut next = server.clone();
            next.root_disk = saga.old_top.clone();
            next.updated_at = Utc::now();
            self.store.update_server(&server, &next).await?;
        }
        Ok(())
    }
}

/// The `restore-point-revert` saga.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct PointRevert(PointState);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Claim,
    Plan,
    Overlay,
    Stop,
    Switch,
    Start,
    Release,
}

impl SagaStep for Step {
    const ALL: &'static [Step] = &[
        Step::Claim,
        Step::Plan,
        Step::Overlay,
        Step::Stop,
        Step::Switch,
        Step::Start,
        Step::Release,
    ];

    fn name(self) -> &'static str {
        match self {
            Step::Claim => "claim",
            Step::Plan => "plan",
            Step::Overlay => "overlay",
            Step::Stop => "stop",
            Step::Switch => "switch",
            Step::Start => "start",
            Step::Release => "release",
        }
    }
}

#[async_trait]
impl Saga for PointRevert {
    const KIND: &'static str = "restore-point-revert";
    type Step = Step;

    fn describe(&self) -> String {
        self.0.describe()
    }

    fn pool_names(&self) -> Vec<String> {
        self.0.pool_names()
    }

    async fn run(&mut self, cloud: &Cloud, step: Step) -> Result<()> {
        let saga = &mut self.0;
        let point = cloud.store.restore_point(saga.point()?).await?;
        let external = !saga.internal;
        match step {
            Step::Claim => {
                let server = cloud.store.server(saga.server()?).await?;
                cloud
                    .claim_task(&server, TaskState::RestorePointReverting)
                    .await?;
                saga.claimed = true;
            }
            Step::Plan if external => cloud.plan_point_revert(saga, &point).await?,
            Step::Overlay if external => cloud.make_revert_tops(saga, &point).await?,
            Step::Stop if external => cloud.stop_for_revert(point.server_id).await?,
            Step::Switch if external => {
                cloud.record_point_revert_switch(saga).await?;
                saga.switched = true;
            }
            Step::Start if external => cloud.start_reverted(&point).await?,
            Step::Start => {
                cloud.revert_internal(saga, &point).await?;
                saga.switched = true;
            }
            Step::Release => {
                let settled = if saga.internal {
                    let now = cloud.store.server(point.server_id).await?;
                    cloud.observed_state(&now).await
                } else if point.memory && point.state_file.is_some() {
                    (VmState::Active, PowerState::Running)
                } else {
                    (VmState::Stopped, PowerState::Shutdown)
                };
                cloud
                    .clear_point_task(point.server_id, Some(settled), None)
                    .await?;
            }
            Step::Plan | Step::Overlay | Step::Stop | Step::Switch => {}
        }
        Ok(())
    }

    async fn undo(&mut self, cloud: &Cloud, step: Step) -> Result<()> {
        let saga = &mut self.0;
        match step {
            // After the switch the server stays on the point's disks.
            Step::Switch if !saga.switched && !saga.internal => {
                cloud.undo_point_revert_switch(saga).await?;
            }
            Step::Claim if saga.claimed => {
                let now = cloud.store.server(saga.server()?).await?;
                let observed = cloud.observed_state(&now).await;
                cloud.clear_point_task(now.id, Some(observed), None).await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn probe(&mut self, cloud: &Cloud, step: Step) -> Result<Probe> {
        let saga = &mut self.0;
        Ok(match step {
            Step::Claim => {
                let task = cloud.store.server(saga.server()?).await?.task_state;
                if task == Some(TaskState::RestorePointReverting) {
                    saga.claimed = true;
                    Probe::Took
                } else {
                    Probe::NotTaken
                }
            }
            _ => Probe::Rerun,
        })
    }

    async fn finished(&mut self, cloud: &Cloud) {
        tracing::info!(server = ?self.0.server, point = ?self.0.point, "server reverted");
        cloud.collect_garbage_quietly().await;
        if !self.0.internal {
            cloud.keep_native_disk_shallow(self.0.new_top.clone());
        }
    }

    async fn undone(&mut self, cloud: &Cloud, cause: Option<&Error>) {
        if let (Some(cause), Some(server)) = (cause, self.0.server) {
            cloud.record_point_fault(server, cause).await;
        }
    }
}

/// The layer of the point's root disk, if it has one.
fn root_layer(point: &RestorePoint) -> Option<String> {
    point
        .disks
        .iter()
        .find(|d| d.volume_id.is_none())
        .map(|d| d.layer.clone())
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
