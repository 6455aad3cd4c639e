//! Volume operations of a pool (Cinder's driver interface, in Snapstack's
//! terms): blank volumes, O(1) volumes from images and from snapshots,
//! snapshots, extend, flatten, and the garbage collection of volume data.
//!
//! | operation | `file` pool (qcow2 layers under `disks/`) | `rbd` pool (`volumes` pool) |
//! |---|---|---|
//! | blank | `qemu-img create -f qcow2` | `rbd create` |
//! | from image | qcow2 overlay over the image layer: O(1) | clone of `images/<id>@snap`: O(1) |
//! | snapshot | the top becomes an immutable layer, a new empty top goes over it: O(1) | `rbd snap create` + protect: O(1) |
//! | from snapshot | qcow2 overlay over the frozen layer: O(1) | clone of `volumes/<v>@<snap>`: O(1) |
//! | extend | `qemu-img resize` | `rbd resize` |
//! | flatten | `qemu-img convert` of the chain into one file | `rbd flatten` |
//!
//! Locations are opaque strings as for images and disks. A snapshot's
//! location names its frozen data; on the file pool a snapshot also moves
//! the volume to a new top, so [`VolumePool::snapshot_volume`] returns both.
//!
//! Nothing here deletes a single volume or snapshot: the cloud marks records
//! deleted and runs garbage collection with the live records as roots, and
//! each pool releases only what no root needs any more (a layer something
//! still stands on, an RBD snapshot that still has clones, stays until they
//! are gone). So a snapshot with volumes made from it is released once those
//! no longer depend on it, and a crash never leaves a dangling parent.

#[path = "volumes_fake.rs"]
pub mod fake;

use std::collections::BTreeSet;

use async_trait::async_trait;
use domain::Result;

use crate::{DiskSource, Garbage, GarbageKind};

/// Where a snapshot put things.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FrozenVolume {
    /// The snapshot's data (immutable from now on).
    pub snapshot: String,
    /// The volume's location afterwards (a new top on the file pool, the
    /// same location on RBD).
    pub volume: String,
}

/// The volume operations of a pool; see the module header. Creating calls
/// are idempotent: repeated after an interruption with the same names, they
/// finish what the first call began (crash recovery goes forward).
#[async_trait]
pub trait VolumePool: Send + Sync + std::fmt::Debug {
    /// How many layers (file) or clone generations (rbd) a volume may stand
    /// on before it is flattened (Cinder's `rbd_max_clone_depth`, 5).
    fn max_clone_depth(&self) -> usize {
        5
    }

    /// Creates the empty volume `name` of `size` bytes.
    async fn create_volume(&self, name: &str, size: u64) -> Result<String>;

    /// Creates the volume `name` as an O(1) copy-on-write child of the
    /// image at `image_location` (data in `image_format`), at least `size`
    /// bytes big.
    async fn volume_from_image(
        &self,
        name: &str,
        image_location: &str,
        image_format: &str,
        size: u64,
    ) -> Result<String>;

    /// Freezes the content of the volume at `volume` as snapshot `snap` (a
    /// name unique in the pool). The volume must not be open for writing.
    /// Returns the snapshot's location and the volume's new location.
    async fn snapshot_volume(&self, volume: &str, snap: &str) -> Result<FrozenVolume>;

    /// Where [`snapshot_volume`](Self::snapshot_volume)`(volume, snap)`
    /// puts things, without doing it, so that a saga can record a cut of
    /// several volumes before it runs. With the path of the new top a
    /// hypervisor must create itself when a running VM has the volume open
    /// (file pool: one `blockdev-snapshot-sync` per volume, all in one QMP
    /// transaction, and the guest never writes the frozen file again);
    /// `None` when `snapshot_volume` works on an open volume (rbd: the
    /// exclusive-lock owner takes the snapshot).
    fn planned_snapshot(
        &self,
        volume: &str,
        snap: &str,
    ) -> Result<(FrozenVolume, Option<std::path::PathBuf>)>;

    /// Makes snapshot data a hypervisor froze (see
    /// [`planned_snapshot`](Self::planned_snapshot)) what
    /// [`snapshot_volume`](Self::snapshot_volume) leaves: file pool
    /// read-only, rbd protected (so that it can be cloned). Repeating it is
    /// harmless.
    async fn seal_snapshot(&self, _snapshot: &str) -> Result<()> {
        Ok(())
    }

    /// Whether `snapshot` (a location from [`snapshot_volume`](Self::snapshot_volume))
    /// is complete, for crash recovery.
    async fn snapshot_exists(&self, snapshot: &str) -> Result<bool>;

    /// Creates the volume `name` as an O(1) child of the snapshot at
    /// `snapshot`, at least `size` bytes big.
    async fn volume_from_snapshot(&self, name: &str, snapshot: &str, size: u64) -> Result<String>;

    /// Grows the volume at `volume` to `size` bytes.
    async fn extend_volume(&self, volume: &str, size: u64) -> Result<()>;

    /// How many layers or clone generations the volume stands on.
    async fn clone_depth(&self, volume: &str) -> Result<usize>;

    /// Copies into the volume the data it shares with its parents, so that
    /// it stands on nothing (O(size)). The volume keeps its location.
    async fn flatten_volume(&self, volume: &str) -> Result<()>;

    /// The volume's size in bytes.
    async fn volume_size(&self, volume: &str) -> Result<u64>;

    /// How a hypervisor or `qemu-img` opens the volume or snapshot data.
    fn volume_source(&self, location: &str) -> Result<DiskSource>;

    /// Makes the volume at `volume` stop standing on the snapshot data at
    /// `snapshot` (being deleted), when the pool can do it cheaply and
    /// safely, so that garbage collection can release it: the file pool
    /// copies the layer's data into the volume's top when the layer is
    /// directly under it. True when the volume no longer needs the snapshot.
    /// The volume must not be open (not attached). Interrupted, it leaves
    /// the volume's content as it was; repeating it is harmless.
    async fn release_snapshot(&self, _volume: &str, _snapshot: &str) -> Result<bool> {
        Ok(false)
    }

    /// Decides which volume data (volumes and snapshots) `roots` do not
    /// need, under the caller's exclusive garbage-collection lock, as
    /// [`Pool::plan_garbage`](crate::Pool::plan_garbage) does for images
    /// and disks; what something still stands on stays. Pools whose
    /// volumes live among their disks (the file pool) do this in
    /// [`Pool::plan_garbage`](crate::Pool::plan_garbage) already.
    async fn plan_volume_garbage(&self, _roots: &BTreeSet<String>) -> Result<Vec<Garbage>> {
        Ok(Vec::new())
    }

    /// Deletes what [`plan_volume_garbage`](Self::plan_volume_garbage)
    /// listed, after the lock is released; returns what went.
    async fn delete_volume_garbage(&self, garbage: &[Garbage]) -> Result<Vec<String>> {
        Ok(garbage
            .iter()
            .filter(|g| g.what == GarbageKind::Released)
            .map(|g| g.location.clone())
            .collect())
    }

    /// Plan then delete in one go (tests, tools).
    async fn collect_volume_garbage(&self, roots: &BTreeSet<String>) -> Result<Vec<String>> {
        let garbage = self.plan_volume_garbage(roots).await?;
        self.delete_volume_garbage(&garbage).await
    }
}
