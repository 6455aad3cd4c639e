//! Restore points of servers on pools that snapshot natively (rbd; see
//! `storage::points`): the same sagas as the file pool's, with other cuts.
//!
//! ```text
//! create   cut: the point's snapshot (and memory image) named and recorded,
//!          then QEMU takes `vms/<disk>@rp-<point>` in one transaction (no
//!          pause) — with memory: stop, snapshot, background-snapshot
//!          migration streamed into `vms/rp-<point>-mem`, resumed — or librbd
//!          takes it when no QEMU runs. The server stays on its disk.
//! revert   overlay: a new disk name recorded, then an O(1) clone of the
//!          point's snapshot made; QEMU destroyed; switched: the clone is the
//!          server's disk; QEMU loads the memory image (`rbd export`) or the
//!          server stays off. Past the pool's clone depth bound, the new
//!          disk is flattened in the background.
//! delete   the memory image goes; the snapshot stops being a root and the
//!          pool's garbage collection releases it once no clone depends on
//!          it (the old disk goes with its last needed snapshot).
//! internal impossible (raw RBD images): 409.
//! ```
//! Crash recovery: a cut whose snapshot exists (and whose memory image is
//! whole) goes forward; otherwise the point goes and its snapshot, clone or
//! partial image is garbage.

use std::time::Duration;

use domain::{Error, Result};
use hypervisor::{MemoryState, NativeSnapshot, RbdState};
use storage::points::PointPool;

use super::{PointState, ROOT_DISK_ID};
use crate::compute::hypervisor_error;
use crate::Cloud;

/// How long a memory image may take to appear after QEMU sent the stream.
const STATE_STORED_TIMEOUT: Duration = Duration::from_secs(120);

impl Cloud {
    /// The pool's restore-point operations, if it snapshots natively.
    pub(super) fn native_points(&self) -> Option<&dyn PointPool> {
        self.pool.points()
    }

    /// The cut of a point on a native pool (saga step `cut`, its names
    /// recorded by `plan`); returns the guest pause in µs when a QEMU took it.
    pub(super) async fn native_point_cut(&self, saga: &mut PointState) -> Result<Option<u64>> {
        let points = self.native_points().ok_or_else(not_native)?;
        let server = self.store.server(saga.server()?).await?;
        let disk = server
            .root_disk
            .clone()
            .ok_or_else(|| Error::conflict("The server has no disk."))?;
        let snapshot = points.point_snapshot(&disk, &saga.point()?.to_string())?;
        let state = saga.state_file.clone();
        if self.point_qemu_is_up(&server).await {
            let target = match &state {
                Some(state) => Some(self.memory_state_of(state)?),
                None => None,
            };
            let disks = [NativeSnapshot {
                disk_id: ROOT_DISK_ID.into(),
                name: snapshot.name.clone(),
            }];
            saga.quiesced = saga.quiesce && self.freeze_for_point(&server).await?;
            let taken = self
                .hypervisor
                .create_native_point(&server.id.to_string(), &disks, target.as_ref())
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
            if let Some(state) = &state {
                self.wait_state_stored(points, state).await?;
            }
            tracing::info!(server = %server.id, pause = ?taken.guest_pause, total = ?taken.total, memory = saga.memory, "restore point cut (rbd)");
            Ok(Some(taken.guest_pause.as_micros() as u64))
        } else if saga.memory {
            Err(Error::conflict(
                "The server stopped before its memory could be saved.",
            ))
        } else {
            points.snapshot_disk(&snapshot.location).await?;
            Ok(None)
        }
    }

    /// Waits until the memory image at `state` is stored whole.
    async fn wait_state_stored(&self, points: &dyn PointPool, state: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + STATE_STORED_TIMEOUT;
        while !points.state_exists(state).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::unavailable(format!(
                    "The memory state {state} was never stored."
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// How the hypervisor reaches the memory state at `state` (a location
    /// of the native pool, or a file path).
    pub(super) fn memory_state_of(&self, state: &str) -> Result<MemoryState> {
        match self.native_points() {
            Some(points) if state.starts_with("rbd://") => match points.state_source(state)? {
                storage::DiskSource::Rbd {
                    pool,
                    image,
                    conf,
                    user,
                } => Ok(MemoryState::Rbd(RbdState {
                    pool,
                    image,
                    conf,
                    user,
                })),
                storage::DiskSource::File { path, .. } => Ok(MemoryState::File(path)),
            },
            _ => Ok(MemoryState::File(state.into())),
        }
    }

    /// Whether the memory state at `state` is there, whole.
    pub(super) async fn point_state_present(&self, state: &str) -> bool {
        match self.native_points() {
            Some(points) if state.starts_with("rbd://") => {
                points.state_exists(state).await.unwrap_or(false)
            }
            _ => tokio::fs::try_exists(state).await.unwrap_or(false),
        }
    }

    /// Removes a point's memory state, wherever it is; gone is fine.
    pub(super) async fn remove_point_state(&self, state: Option<&str>) {
        let Some(state) = state else { return };
        match self.native_points() {
            Some(points) if state.starts_with("rbd://") => {
                if let Err(e) = points.delete_state(state).await {
                    tracing::warn!(%state, error = %e, "could not remove a memory state; garbage collection will");
                }
            }
            _ => super::remove_state_files(state).await,
        }
    }

    /// Revert on a native pool, step `overlay`: the new disk (named by
    /// `plan`) cloned from the point's snapshot (O(1)).
    pub(super) async fn native_revert_clone(&self, saga: &PointState, layer: &str) -> Result<()> {
        let points = self.native_points().ok_or_else(not_native)?;
        let name = saga
            .clone_name
            .as_deref()
            .ok_or_else(|| Error::internal("A revert lost its new disk's name."))?;
        points.clone_snapshot(layer, name).await?;
        Ok(())
    }

    /// After a revert: past the pool's bound, the new disk is flattened in
    /// the background (the clone chain grows with every revert).
    pub(super) fn keep_native_disk_shallow(&self, disk: Option<String>) {
        let (Some(disk), Some(points)) = (disk, self.native_points()) else {
            return;
        };
        let max = points.max_clone_depth();
        let cloud = self.clone();
        tokio::spawn(async move {
            let Some(points) = cloud.native_points() else {
                return;
            };
            let depth = match points.clone_depth(&disk).await {
                Ok(depth) => depth,
                Err(e) => {
                    tracing::warn!(%disk, error = %e, "clone depth unknown");
                    return;
                }
            };
            if depth <= max {
                return;
            }
            let flattened = {
                let _gc = cloud.gc_lock.read().await;
                points.flatten(&disk).await
            };
            match flattened {
                Ok(()) => {
                    tracing::info!(%disk, depth, max, "reverted disk flattened (clone depth bound)");
                    cloud.collect_garbage_quietly().await;
                }
                Err(e) => tracing::warn!(%disk, error = %e, "reverted disk not flattened"),
            }
        });
    }
}

fn not_native() -> Error {
    Error::internal("The pool does not snapshot disks natively.")
}
