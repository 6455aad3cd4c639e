//! Creating a restore point: a saga (`restore-point-create`, on the engine
//! in [`crate::saga`]); `record` runs in the request, the rest in the
//! background.
//!
//! ```text
//!  record ──────▶ plan ─────────────────▶ cut ──────────────────────────▶ switch ───────────▶ release
//!  (point row     (new tops, the memory   (QEMU cuts every disk — root   (server.root_disk    (task
//!   `creating`,    state's name, the       and volumes — and saves        and each volume's    cleared)
//!   task           native snapshot's       memory at one instant;         location = new
//!   claimed)       name: recorded before   qemu-img / librbd when no      tops (CAS); point
//!                  anything is made)       QEMU runs; internal: the       `available`, its
//!                                          snapshot-save job)             layers, current)
//!
//!  crash in …  recovery
//!  record      probe: the point exists and the task is claimed → on; else undone
//!  cut         probe: every new top in use (or a complete overlay of a
//!              stopped disk) and the memory state whole → on; else undone:
//!              a new top QEMU already writes stays the server's disk, the
//!              point goes (internal: the tag is deleted). A VM left paused
//!              is resumed first.
//!  other       run again (idempotent)
//! ```

use async_trait::async_trait;
use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::restore_point::{
    NewRestorePoint, RestoreMethod, RestorePoint, RestorePointId, RestorePointStatus,
};
use domain::server::{TaskState, VmState};
use domain::{Error, Result};
use hypervisor::DiskOverlay;
use serde::{Deserialize, Serialize};

use super::volumes::point_disks;
use super::{overlay_name, PointState, ROOT_DISK_ID};
use crate::compute::hypervisor_error;
use crate::saga::{Probe, Saga, SagaStep};
use crate::Cloud;
/// How long the guest agent may take to freeze the guest's filesystems.
const FREEZE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The `restore-point-create` saga.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PointCreate {
    #[serde(flatten)]
    state: PointState,
    /// The point's row, inserted by `record` (in the request: recovery
    /// probes that step, never runs it again).
    #[serde(skip)]
    record: Option<RestorePoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Record,
    Plan,
    Cut,
    Switch,
    Release,
}

impl SagaStep for Step {
    const ALL: &'static [Step] = &[
        Step::Record,
        Step::Plan,
        Step::Cut,
        Step::Switch,
        Step::Release,
    ];

    fn name(self) -> &'static str {
        match self {
            Step::Record => "record",
            Step::Plan => "plan",
            Step::Cut => "cut",
            Step::Switch => "switch",
            Step::Release => "release",
        }
    }
}

#[async_trait]
impl Saga for PointCreate {
    const KIND: &'static str = "restore-point-create";
    type Step = Step;

    fn describe(&self) -> String {
        self.state.describe()
    }

    fn pool_names(&self) -> Vec<String> {
        self.state.pool_names()
    }

    async fn run(&mut self, cloud: &Cloud, step: Step) -> Result<()> {
        let saga = &mut self.state;
        match step {
            Step::Record => {
                let point = self.record.as_ref().ok_or_else(|| {
                    Error::internal("The restore-point saga lost the point's record.")
                })?;
                cloud.store.insert_restore_point(point).await?;
                let server = cloud.store.server(saga.server()?).await?;
                cloud
                    .claim_task(&server, TaskState::RestorePointCreating)
                    .await?;
                saga.claimed = true;
            }
            Step::Plan => cloud.plan_point_create(saga).await?,
            Step::Cut => {
                if saga.internal {
                    cloud.internal_point_cut(saga).await?;
                } else if cloud.native_points().is_some() {
                    saga.pause_us = cloud.native_point_cut(saga).await?;
                } else {
                    cloud.point_cut(saga).await?;
                }
            }
            Step::Switch => {
                cloud.record_point_switch(saga).await?;
                saga.cut_guard = None;
            }
            Step::Release => cloud.clear_point_task(saga.server()?, None, None).await?,
        }
        Ok(())
    }

    async fn undo(&mut self, cloud: &Cloud, step: Step) -> Result<()> {
        let saga = &mut self.state;
        match step {
            Step::Record => {
                if let Some(id) = saga.point {
                    if cloud.store.restore_point(id).await.is_ok() {
                        cloud.remove_point_state(saga.state_file.as_deref()).await;
                        cloud.store.delete_restore_point(id).await?;
                    }
                }
                if saga.claimed {
                    // QEMU may have died meanwhile: the server is what it shows.
                    let now = cloud.store.server(saga.server()?).await?;
                    let observed = cloud.observed_state(&now).await;
                    cloud.clear_point_task(now.id, Some(observed), None).await?;
                }
            }
            Step::Cut => {
                if saga.internal {
                    cloud.forget_internal_tag(saga).await;
                }
                let layered = saga.new_top.is_some() || !saga.volumes.is_empty();
                if layered && cloud.point_cut_took(saga).await {
                    // QEMU writes into the new top already: it stays the disk.
                    cloud.keep_point_new_top(saga).await?;
                }
                saga.cut_guard = None;
            }
            Step::Plan | Step::Switch | Step::Release => {}
        }
        Ok(())
    }

    async fn probe(&mut self, cloud: &Cloud, step: Step) -> Result<Probe> {
        let saga = &mut self.state;
        Ok(match step {
            Step::Record => {
                let point = cloud.store.restore_point(saga.point()?).await.is_ok();
                let task = cloud.store.server(saga.server()?).await?.task_state;
                if point && task == Some(TaskState::RestorePointCreating) {
                    saga.claimed = true;
                    Probe::Took
                } else {
                    Probe::NotTaken
                }
            }
            // An interrupted snapshot-save is undone (its tag deleted).
            Step::Cut if saga.internal => Probe::NotTaken,
            Step::Cut => {
                if cloud.point_cut_took(saga).await && cloud.point_state_saved(saga).await {
                    Probe::Took
                } else {
                    Probe::NotTaken
                }
            }
            _ => Probe::Rerun,
        })
    }

    async fn before_recovery(&mut self, cloud: &Cloud) {
        cloud.resume_point_vm_if_paused(&self.state).await;
    }

    async fn finished(&mut self, _cloud: &Cloud) {
        tracing::info!(server = ?self.state.server, point = ?self.state.point, "restore point created");
    }

    async fn undone(&mut self, cloud: &Cloud, cause: Option<&Error>) {
        if let (Some(cause), Some(server)) = (cause, self.state.server) {
            cloud.record_point_fault(server, cause).await;
        }
    }
}

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
        let quota = self.check_point_quota(&server, point.memory).await?;
        let mut state = PointState::new(server.id, point.id);
        state.memory = point.memory;
        state.internal = internal;
        state.quiesce = new.quiesce;
        let mut saga = self
            .begin_saga(PointCreate {
                state,
                record: Some(point.clone()),
            })
            .await?;
        saga.run_through(Step::Record).await?;
        if let Err(e) = self.count_point_memory(point.id, quota.memory_bytes).await {
            tracing::warn!(point = %point.id, error = %e, "could not count a memory state");
        }
        drop(quota);
        saga.spawn();
        Ok(point)
    }
}

impl Cloud {
    /// Names what the cut will make (new tops, the memory state, the
    /// native snapshot), before anything is made.
    async fn plan_point_create(&self, saga: &mut PointState) -> Result<()> {
        let server = self.store.server(saga.server()?).await?;
        let point_id = saga.point()?;
        if saga.internal {
            saga.old_top = Some(
                server
                    .root_disk
                    .clone()
                    .ok_or_else(|| Error::conflict("The server has no disk."))?,
            );
            return Ok(());
        }
        if let Some(points) = self.native_points() {
            let disk = server
                .root_disk
                .clone()
                .ok_or_else(|| Error::conflict("The server has no disk."))?;
            let snapshot = points.point_snapshot(&disk, &point_id.to_string())?;
            saga.old_top = Some(snapshot.location);
            saga.state_file = match saga.memory {
                true => Some(points.point_state(&point_id.to_string())?),
                false => None,
            };
            return Ok(());
        }
        let root = match server.root_disk.clone() {
            Some(old_top) => {
                let (new_top, _) = self
                    .pool
                    .new_overlay(&old_top, &overlay_name(server.id))?
                    .ok_or_else(|| Error::conflict("This pool cannot layer disks."))?;
                Some((old_top, new_top))
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
        saga.old_top = root.as_ref().map(|(old, _)| old.clone());
        saga.new_top = root.map(|(_, new)| new);
        saga.volumes = volumes;
        saga.state_file = state_file.map(|f| f.display().to_string());
        Ok(())
    }

    /// The cut on the file pool: every disk (and the memory) at one
    /// instant by QEMU, or overlays made by qemu-img when no QEMU runs.
    async fn point_cut(&self, saga: &mut PointState) -> Result<()> {
        let server = self.store.server(saga.server()?).await?;
        // No volume snapshot may move a volume until the switch is recorded.
        saga.cut_guard = Some(self.cut_lock.clone().lock_owned().await);
        for v in &saga.volumes {
            let now = self.store.volume(v.volume).await?;
            if now.location.as_deref() != Some(v.old.as_str()) {
                return Err(Error::conflict(format!(
                    "Volume {} changed while the restore point was being taken; try again.",
                    v.volume
                )));
            }
        }
        let root_overlay = match &saga.new_top {
            Some(new_top) => match self.pool.disk_source(new_top)? {
                storage::DiskSource::File { path, .. } => Some(path),
                _ => return Err(Error::conflict("This pool cannot layer disks.")),
            },
            None => None,
        };
        if self.point_qemu_is_up(&server).await {
            let disks: Vec<DiskOverlay> = root_overlay
                .iter()
                .map(|path| DiskOverlay {
                    disk_id: ROOT_DISK_ID.into(),
                    overlay: path.clone(),
                })
                .chain(saga.volumes.iter().map(|v| DiskOverlay {
                    disk_id: v.disk_id.clone(),
                    overlay: v.overlay.clone(),
                }))
                .collect();
            saga.quiesced = saga.quiesce && self.freeze_for_point(&server).await?;
            let state_file = saga.state_file.as_ref().map(std::path::PathBuf::from);
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
            saga.pause_us = Some(taken.guest_pause.as_micros() as u64);
        } else if saga.memory {
            return Err(Error::conflict(
                "The server stopped before its memory could be saved.",
            ));
        } else {
            if let (Some(old_top), Some(new_top)) = (&saga.old_top, &saga.new_top) {
                self.pool.create_overlay(old_top, new_top).await?;
            }
            self.make_point_volume_tops(&saga.volumes).await?;
        }
        Ok(())
    }

    /// Records on the server why a restore-point operation failed, best effort.
    pub(super) async fn record_point_fault(&self, server: domain::ServerId, cause: &Error) {
        let Ok(now) = self.store.server(server).await else {
            return;
        };
        let mut next = now.clone();
        next.fault = Some(super::fault_of(cause));
        next.updated_at = Utc::now();
        if let Err(e) = self.store.update_server(&now, &next).await {
            tracing::warn!(%server, error = %e, "could not record a restore point's fault");
        }
    }

    /// A crash between `stop` and the end of a memory point leaves the
    /// guest paused on QEMU ≥ 9 (7.2 resumes it itself): resume an active
    /// server's VM.
    async fn resume_point_vm_if_paused(&self, saga: &PointState) {
        let Some(id) = saga.server else { return };
        let Ok(server) = self.store.server(id).await else {
            return;
        };
        let paused = matches!(
            self.hypervisor.status(&id.to_string()).await,
            Ok(hypervisor::VmStatus::Paused { .. })
        );
        if server.vm_state == VmState::Active && paused {
            let _ = self.hypervisor.resume(&id.to_string()).await;
        }
    }

    /// The new tops QEMU writes are the server's and the volumes' disks.
    async fn keep_point_new_top(&self, saga: &PointState) -> Result<()> {
        self.move_point_volumes_forward(&saga.volumes).await?;
        let server = self.store.server(saga.server()?).await?;
        if saga.new_top.is_some() && server.root_disk != saga.new_top {
            let mut next = server.clone();
            next.root_disk = saga.new_top.clone();
            next.updated_at = Utc::now();
            self.store.update_server(&server, &next).await?;
        }
        Ok(())
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
    pub(super) async fn record_point_switch(&self, saga: &PointState) -> Result<()> {
        let server = self.store.server(saga.server()?).await?;
        // A native point leaves the server on its disk (no new top).
        if saga.new_top.is_some() && server.root_disk != saga.new_top {
            let mut next = server.clone();
            next.root_disk = saga.new_top.clone();
            next.updated_at = Utc::now();
            self.store.update_server(&server, &next).await?;
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
            done.guest_pause_us = saga.pause_us;
            done.quiesced = saga.quiesced;
            done.updated_at = Utc::now();
            self.store.update_restore_point(&point, &done).await?;
            if let Some(state) = &done.state_file {
                self.count_written_point_memory(point.id, state).await;
            }
        }
        self.store
            .set_current_restore_point(point.server_id, Some(point.id))
            .await?;
        Ok(())
    }

    /// Whether the new top of an interrupted cut is in use or complete.
    pub(super) async fn point_cut_took(&self, saga: &PointState) -> bool {
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
    pub(super) async fn point_state_saved(&self, saga: &PointState) -> bool {
        match &saga.state_file {
            Some(state) => self.point_state_present(state).await,
            None => !saga.memory,
        }
    }
}
