//! Restore points on pools that snapshot disks natively (rbd): what the
//! cloud's restore-point sagas need beyond [`Pool`](crate::Pool).
//!
//! A point of a disk is a snapshot of it (taken by the hypervisor on a live
//! disk, by [`PointPool::snapshot_disk`] on one no VM has open); a point's
//! memory state is an image in the disks' pool, so that any host of the
//! cluster could load it; reverting makes an O(1) clone of the snapshot the
//! server's new disk. Nothing here deletes a point's snapshot: the pool's
//! garbage collection releases a point snapshot that no root names once no
//! clone depends on it, and keeps a disk while a root names one of its
//! snapshots. Calls that create are idempotent (repeated after a crash with
//! the same names, they finish what the first began).

use async_trait::async_trait;
use domain::Result;

use crate::DiskSource;

/// A point's snapshot of one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointSnapshot {
    /// The snapshot's name on the disk (what the hypervisor is asked to take).
    pub name: String,
    /// Its location (a garbage-collection root while the point exists).
    pub location: String,
}

/// The restore-point operations of a native-snapshot pool.
#[async_trait]
pub trait PointPool: Send + Sync + std::fmt::Debug {
    /// The snapshot point `point` (an id) takes of the disk at `disk`.
    fn point_snapshot(&self, disk: &str, point: &str) -> Result<PointSnapshot>;

    /// The location of point `point`'s memory state.
    fn point_state(&self, point: &str) -> Result<String>;

    /// How a hypervisor reads and writes the memory state at `state`.
    fn state_source(&self, state: &str) -> Result<DiskSource>;

    /// Whether the snapshot at `snapshot` exists (for crash recovery).
    async fn snapshot_exists(&self, snapshot: &str) -> Result<bool>;

    /// Whether the memory state at `state` is complete (stored under its
    /// final name only when whole).
    async fn state_exists(&self, state: &str) -> Result<bool>;

    /// Takes the snapshot at `snapshot` of a disk no VM has open.
    async fn snapshot_disk(&self, snapshot: &str) -> Result<()>;

    /// The location a disk named `name` made by [`clone_snapshot`](Self::clone_snapshot) gets.
    fn clone_location(&self, name: &str) -> Result<String>;

    /// Makes the disk `name` an O(1) copy-on-write clone of the snapshot at
    /// `snapshot` (protected first); returns its location.
    async fn clone_snapshot(&self, snapshot: &str, name: &str) -> Result<String>;

    /// Removes the memory state at `state`; gone already is fine.
    async fn delete_state(&self, state: &str) -> Result<()>;

    /// How many clone generations the disk at `disk` stands on.
    async fn clone_depth(&self, disk: &str) -> Result<usize>;

    /// Copies into the disk at `disk` all it reads from its parents (O(size);
    /// works on a disk a VM has open); its parent snapshot may be released
    /// afterwards.
    async fn flatten(&self, disk: &str) -> Result<()>;

    /// Clone generations a disk may stand on before it is flattened.
    fn max_clone_depth(&self) -> usize {
        5
    }
}
