//! Restore points: libvirt-style snapshots of whole servers, as a tree per
//! server, on the file pool (below) and on the rbd pool ([`rbd`]: RBD
//! snapshots, memory states as RBD images, revert by O(1) clone).
//!
//! A server's disk is a qcow2 top over immutable layers. A point *freezes*
//! the top: the server goes on in a new overlay and the old top is the
//! point's layer (QMP `transaction` on a live VM, `qemu-img create -b` on a
//! stopped one); a point with memory also writes the RAM and device state at
//! that instant to `<state_dir>/restore-points/<id>.state` (the guest pauses
//! for milliseconds: see the hypervisor's `qemu/restore.rs`). Nothing is
//! copied. Reverting creates **new** overlays over the point's layers —
//! never writing into a layer that another point, an image or the server
//! still uses — and starts the VM from the state file (memory point) or
//! leaves it powered off (disk-only point). Deleting a point removes its
//! state file and its record; its layer is a garbage-collection root only
//! while the point exists, so the layer goes exactly when nothing (another
//! point, an image, the server's chain) stands on it any more — a reference
//! count kept by the pool's backing chains (see `Cloud::collect_garbage`).
//!
//! Attached volumes (file pool) are cut with the root disk, at the same
//! instant, and reverted onto new tops over their layers ([`volumes`]).
//!
//! Each operation is a saga of the engine in [`crate::saga`] ([`create`],
//! [`revert`], [`delete`]): the engine records every step and, at start-up,
//! finishes or undoes what a previous run left half-way, before the servers'
//! tasks are settled. One task per server: each operation claims the
//! server's `task_state` by compare-and-swap (a concurrent request gets 409).

pub(crate) mod create;
pub(crate) mod delete;
mod internal;
pub(crate) mod merge;
pub mod quota;
mod rbd;
pub(crate) mod revert;
mod volumes;

use std::path::PathBuf;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::restore_point::{RestorePoint, RestorePointId, RestorePointStatus};
use domain::server::{Server, TaskState, VmState};
use domain::{Error, Result, ServerId};
use serde::{Deserialize, Serialize};

use crate::Cloud;

/// The id of the one disk Snapstack servers have today (as in compute).
const ROOT_DISK_ID: &str = "root";

/// A server's restore points as a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePointTree {
    pub points: Vec<PointView>,
    /// The point the server's current state descends from.
    pub current: Option<RestorePointId>,
}

/// One point with what the tree says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointView {
    pub point: RestorePoint,
    pub children: Vec<RestorePointId>,
    pub is_current: bool,
    /// Its files are missing: shown, never silently dropped.
    pub broken: bool,
}

/// The state the three restore-point sagas share (each kind wraps it).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PointState {
    server: Option<ServerId>,
    point: Option<RestorePointId>,
    memory: bool,
    internal: bool,
    /// Asked to freeze the guest's filesystems; and whether they were.
    quiesce: bool,
    quiesced: bool,
    new_top: Option<String>,
    old_top: Option<String>,
    state_file: Option<String>,
    /// The attached volumes the saga moves (file pool).
    volumes: Vec<volumes::SagaVolume>,
    /// A revert on a native pool: the name of the clone `new_top` locates.
    #[serde(default)]
    clone_name: Option<String>,
    /// The first step claimed the server's task (undo clears it only then).
    #[serde(default)]
    claimed: bool,
    /// The guest's pause for the cut, in µs, when a QEMU took it.
    #[serde(default)]
    pause_us: Option<u64>,
    /// The server's disks were switched (revert): a later failure leaves
    /// them on the point's disks.
    #[serde(default)]
    switched: bool,
    /// From a cut until the volumes' new locations are recorded: no volume
    /// snapshot moves them meanwhile (in this process).
    #[serde(skip)]
    cut_guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl PointState {
    fn new(server: ServerId, point: RestorePointId) -> PointState {
        PointState {
            server: Some(server),
            point: Some(point),
            ..PointState::default()
        }
    }

    fn server(&self) -> Result<ServerId> {
        self.server
            .ok_or_else(|| Error::internal("A restore-point saga lost its server."))
    }

    fn point(&self) -> Result<RestorePointId> {
        self.point
            .ok_or_else(|| Error::internal("A restore-point saga lost its point."))
    }

    fn describe(&self) -> String {
        format!(
            "of point {} on server {}",
            self.point.map(|p| p.to_string()).unwrap_or_default(),
            self.server.map(|s| s.to_string()).unwrap_or_default()
        )
    }

    /// The pool data the state names: garbage-collection roots while the
    /// saga is open.
    fn pool_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .new_top
            .iter()
            .chain(self.old_top.iter())
            .cloned()
            .collect();
        if let Some(state) = self.state_file.as_ref().filter(|s| s.starts_with("rbd://")) {
            names.push(state.clone());
        }
        for v in &self.volumes {
            names.extend(v.pool_names());
        }
        names
    }
}

impl Cloud {
    /// The restore points of a server the caller can see, as a tree.
    pub async fn restore_points(
        &self,
        caller: &Caller,
        server_id: &str,
    ) -> Result<RestorePointTree> {
        let server = self.server(caller, server_id).await?;
        caller.require(Role::Reader, "list restore points")?;
        self.point_tree(server.id).await
    }

    /// One restore point of a server the caller can see.
    pub async fn restore_point(
        &self,
        caller: &Caller,
        server_id: &str,
        point_id: &str,
    ) -> Result<PointView> {
        let server = self.server(caller, server_id).await?;
        caller.require(Role::Reader, "show restore points")?;
        let id = point_of(&server, point_id, self).await?.id;
        self.point_tree(server.id)
            .await?
            .points
            .into_iter()
            .find(|v| v.point.id == id)
            .ok_or_else(|| Error::not_found("restore point", point_id))
    }

    async fn point_tree(&self, server: ServerId) -> Result<RestorePointTree> {
        let points = self.store.restore_points(Some(server)).await?;
        let current = self.store.current_restore_point(server).await?;
        let mut views = Vec::with_capacity(points.len());
        for point in &points {
            views.push(PointView {
                children: points
                    .iter()
                    .filter(|c| c.parent_id == Some(point.id))
                    .map(|c| c.id)
                    .collect(),
                is_current: current == Some(point.id),
                broken: !self.point_files_present(point).await,
                point: point.clone(),
            });
        }
        Ok(RestorePointTree {
            points: views,
            current,
        })
    }

    /// Whether every file an available point needs is there.
    async fn point_files_present(&self, point: &RestorePoint) -> bool {
        if point.status != RestorePointStatus::Available {
            return true;
        }
        for disk in &point.disks {
            if let Some(points) = self.native_points() {
                if !points.snapshot_exists(&disk.layer).await.unwrap_or(false) {
                    return false;
                }
                continue;
            }
            if !self.pool.data_exists(&disk.layer).await.unwrap_or(false) {
                return false;
            }
        }
        match &point.state_file {
            Some(state) if point.memory => self.point_state_present(state).await,
            _ => true,
        }
    }

    /// Where the memory state of point `id` is written.
    fn point_state_file(&self, id: RestorePointId) -> PathBuf {
        self.config
            .state_dir
            .join("restore-points")
            .join(format!("{id}.state"))
    }

    /// The layers restore points need, for garbage collection. Points of
    /// deleted servers are released here (state file and record), so that
    /// deleting a server leaves nothing of its points behind.
    pub(crate) async fn restore_point_roots(&self) -> Result<Vec<String>> {
        let mut roots = Vec::new();
        let mut kept_states = std::collections::BTreeSet::new();
        for point in self.store.restore_points(None).await? {
            let server_gone = match self.store.server(point.server_id).await {
                Ok(server) => server.vm_state == VmState::Deleted,
                Err(e) if e.kind() == domain::ErrorKind::NotFound => true,
                Err(e) => return Err(e),
            };
            if server_gone {
                self.remove_point_state(point.state_file.as_deref()).await;
                self.store.delete_restore_point(point.id).await?;
                self.store
                    .set_current_restore_point(point.server_id, None)
                    .await?;
                tracing::info!(point = %point.id, server = %point.server_id, "restore point of a deleted server released");
                continue;
            }
            match &point.state_file {
                // A memory image in the pool: a root like the disks.
                Some(state) if state.starts_with("rbd://") => roots.push(state.clone()),
                Some(file) => {
                    kept_states.insert(PathBuf::from(file));
                }
                None => {}
            }
            roots.extend(point.disks.into_iter().map(|d| d.layer));
        }
        self.remove_unreferenced_point_states(&kept_states).await;
        Ok(roots)
    }

    /// Removes memory states no point refers to (left by a crash mid-save).
    async fn remove_unreferenced_point_states(&self, kept: &std::collections::BTreeSet<PathBuf>) {
        let dir = self.config.state_dir.join("restore-points");
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            return;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let path = entry.path();
            if !kept.contains(&path) {
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "memory state no point needs removed")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove a memory state")
                    }
                }
            }
        }
    }

    /// Whether the server's QEMU is up (running or paused).
    async fn point_qemu_is_up(&self, server: &Server) -> bool {
        matches!(
            self.hypervisor.status(&server.id.to_string()).await,
            Ok(hypervisor::VmStatus::Running | hypervisor::VmStatus::Paused { .. })
        )
    }

    /// Clears a restore-point task of the server, leaving its states as
    /// they are (or as `vm_state`/`power_state` say).
    async fn clear_point_task(
        &self,
        server: ServerId,
        settled: Option<(VmState, domain::server::PowerState)>,
        fault: Option<&Error>,
    ) -> Result<()> {
        let now = self.store.server(server).await?;
        if !now.task_state.is_some_and(is_point_task) {
            return Ok(());
        }
        let mut next = now.clone();
        next.task_state = None;
        if let Some((vm_state, power_state)) = settled {
            next.vm_state = vm_state;
            next.power_state = power_state;
        }
        if let Some(e) = fault {
            next.fault = Some(fault_of(e));
        }
        next.updated_at = Utc::now();
        self.store.update_server(&now, &next).await
    }
}

/// The point `point_id` of `server`, or 404 (also for another server's point).
async fn point_of(server: &Server, point_id: &str, cloud: &Cloud) -> Result<RestorePoint> {
    let id: RestorePointId = point_id.parse()?;
    match cloud.store.restore_point(id).await {
        Ok(p) if p.server_id == server.id => Ok(p),
        Ok(_) => Err(Error::not_found("restore point", point_id)),
        Err(e) => Err(e),
    }
}

/// A server fault for a failed restore-point operation (Nova's shape).
pub(super) fn fault_of(e: &Error) -> domain::server::Fault {
    domain::server::Fault {
        code: e.kind().http_status(),
        message: format!("Restore point operation failed: {}", e.message()),
        created: Utc::now(),
    }
}

fn is_point_task(t: TaskState) -> bool {
    matches!(
        t,
        TaskState::RestorePointCreating
            | TaskState::RestorePointReverting
            | TaskState::RestorePointDeleting
    )
}

/// Removes a memory state file and its partial file; gone is fine.
async fn remove_state_files(file: &str) {
    for path in [file.to_string(), format!("{file}.part")] {
        if let Err(e) = tokio::fs::remove_file(&path).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%path, error = %e, "could not remove a memory state");
            }
        }
    }
}

/// A new file name for a server's overlay: `<server id>-<12 random hex>`.
fn overlay_name(server: ServerId) -> String {
    format!(
        "{server}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}
