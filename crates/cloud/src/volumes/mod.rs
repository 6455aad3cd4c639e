//! Volumes and volume snapshots (Cinder semantics) on the pool's
//! [`storage::volumes::VolumePool`].
//!
//! Requests check and claim, the work runs in the background:
//! - create: the volume is recorded `creating` with a saga ([`create`]),
//!   made in O(1) (blank, overlay/clone of an image, of a snapshot, or of a
//!   frozen copy of another volume), flattened past the pool's clone depth,
//!   then `available` (`error` if it failed);
//! - snapshot: recorded `creating` with a saga ([`snapshots`]), the volume's
//!   data frozen in O(1), then `available`;
//! - extend: `available` → `extending` (with the new size) → `available`;
//! - delete: `available`/`error` → `deleting` → `deleted`, then garbage
//!   collection releases whatever data nothing needs any more.
//!
//! A volume with snapshots cannot be deleted (400, as Cinder). A snapshot
//! with volumes made from it can: its record goes, its data stays while
//! those volumes stand on it and is released by garbage collection once they
//! no longer do (deleted, or flattened) — never a dangling parent.
//!
//! Project isolation: another project's volume or snapshot is 404.

pub(crate) mod actions;
pub(crate) mod create;
pub(crate) mod messages;
pub(crate) mod qos;
pub(crate) mod snapshots;
pub(crate) mod transfers;
pub(crate) mod types;

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::volume::{SnapshotStatus, Volume, VolumeSnapshot, VolumeStatus, GIB};
use domain::{Error, ProjectId, Result, VolumeId, VolumeSnapshotId};
use storage::volumes::VolumePool;

pub use create::NewVolume;
pub use snapshots::NewSnapshot;
pub use transfers::NewTransfer;
pub use types::{EncryptionSpecs, NewVolumeType, VolumeTypeChanges, VENDOR_NAME};

use crate::Cloud;

/// What a user may change on a volume or snapshot.
#[derive(Debug, Clone, Default)]
pub struct VolumeChanges {
    pub name: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub metadata: Option<BTreeMap<String, String>>,
}

impl Cloud {
    /// The pool's volume operations, or 503 if the pool has none.
    pub(crate) fn volume_pool(&self) -> Result<&dyn VolumePool> {
        self.pool.volumes().ok_or_else(|| {
            Error::unavailable(format!(
                "The {} storage pool has no volume support.",
                self.pool.kind()
            ))
        })
    }

    /// A volume the caller can see (not deleted), or 404.
    pub async fn volume(&self, caller: &Caller, id: &str) -> Result<Volume> {
        caller.require(Role::Reader, "read volumes")?;
        let vid: VolumeId = id.parse()?;
        let volume = self.store.volume(vid).await?;
        if volume.status == VolumeStatus::Deleted || !caller.can_see_project(volume.project_id) {
            return Err(Error::not_found("volume", id));
        }
        Ok(volume)
    }

    /// The attachment of a volume already read, if it has one.
    pub async fn attachment_of_volume(
        &self,
        volume: &Volume,
    ) -> Result<Option<domain::volume::VolumeAttachment>> {
        self.store.attachment_of_volume(volume.id).await
    }

    /// Volumes of the caller's project (of all projects for an admin asking).
    pub async fn volumes(&self, caller: &Caller, all_projects: bool) -> Result<Vec<Volume>> {
        caller.require(Role::Reader, "list volumes")?;
        self.store
            .volumes(self.listed_project(caller, all_projects)?)
            .await
    }

    /// A snapshot the caller can see (not deleted), or 404.
    pub async fn volume_snapshot(&self, caller: &Caller, id: &str) -> Result<VolumeSnapshot> {
        caller.require(Role::Reader, "read snapshots")?;
        let sid: VolumeSnapshotId = id.parse()?;
        let snap = self.store.volume_snapshot(sid).await?;
        if snap.status == SnapshotStatus::Deleted || !caller.can_see_project(snap.project_id) {
            return Err(Error::not_found("snapshot", id));
        }
        Ok(snap)
    }

    /// Snapshots of the caller's project (of all projects for an admin asking).
    pub async fn volume_snapshots(
        &self,
        caller: &Caller,
        all_projects: bool,
    ) -> Result<Vec<VolumeSnapshot>> {
        caller.require(Role::Reader, "list snapshots")?;
        self.store
            .volume_snapshots(self.listed_project(caller, all_projects)?)
            .await
    }

    fn listed_project(&self, caller: &Caller, all_projects: bool) -> Result<Option<ProjectId>> {
        Ok(if all_projects && caller.is_admin() {
            None
        } else {
            Some(caller.project()?)
        })
    }

    /// Renames a volume, changes its description, or replaces its metadata.
    pub async fn update_volume(
        &self,
        caller: &Caller,
        id: &str,
        changes: VolumeChanges,
    ) -> Result<Volume> {
        let volume = self.volume(caller, id).await?;
        caller.require(Role::Member, "update volumes")?;
        let mut next = volume.clone();
        if let Some(name) = changes.name {
            next.name = name;
        }
        if let Some(description) = changes.description {
            next.description = description;
        }
        if let Some(metadata) = changes.metadata {
            next.metadata = metadata;
        }
        next.validate()?;
        next.updated_at = Utc::now();
        self.store.set_volume_details(&next).await?;
        self.store.volume(next.id).await
    }

    /// Starts growing a volume to `new_size` GiB (Cinder's `os-extend`).
    pub async fn extend_volume(&self, caller: &Caller, id: &str, new_size: u64) -> Result<Volume> {
        let volume = self.volume(caller, id).await?;
        caller.require(Role::Member, "extend volumes")?;
        volume.check_extend(new_size)?;
        let quota = self
            .claim_volume_growth_quota(volume.project_id, new_size, new_size - volume.size)
            .await?;
        self.volume_pool()?;
        let snapshots = self.store.snapshots_of_volume(volume.id).await?;
        if snapshots
            .iter()
            .any(|s| s.status == SnapshotStatus::Creating)
        {
            return Err(Error::invalid(format!(
                "Invalid volume: a snapshot of volume {} is being taken; extend it afterwards.",
                volume.id
            )));
        }
        let mut extending = volume.clone();
        extending.status = volume.status.transition(VolumeStatus::Extending)?;
        extending.size = new_size;
        extending.updated_at = Utc::now();
        self.store.update_volume(&volume, &extending).await?;
        quota.release().await;
        let cloud = self.clone();
        let running = extending.clone();
        tokio::spawn(async move { cloud.finish_volume_extend(running).await });
        Ok(extending)
    }

    /// Grows the data of a volume recorded `extending` to its recorded size.
    async fn finish_volume_extend(&self, volume: Volume) {
        // Exclusive (a resize is quick): no snapshot freezes the volume's
        // data, no release rewrites it, no collection runs meanwhile.
        let gc = self.gc_lock.write().await;
        let grown = match (&volume.location, self.volume_pool()) {
            (Some(location), Ok(pool)) => pool.extend_volume(location, volume.size * GIB).await,
            (None, _) => Err(Error::internal("The volume has no data to extend.")),
            (_, Err(e)) => Err(e),
        };
        drop(gc);
        let next = match &grown {
            Ok(()) => VolumeStatus::Available,
            Err(e) => {
                tracing::warn!(volume = %volume.id, error = %e, "extending a volume failed");
                VolumeStatus::ErrorExtending
            }
        };
        if let Err(e) = self
            .store
            .set_volume_status(volume.id, VolumeStatus::Extending, next, None)
            .await
        {
            tracing::warn!(volume = %volume.id, error = %e, "cannot record the end of an extend");
        }
    }

    /// Deletes a volume: 400 while it has snapshots (unless `cascade`: then
    /// they are deleted with it) or is not in a state that allows it
    /// (attached, being made, …), as Cinder.
    pub async fn delete_volume(&self, caller: &Caller, id: &str, cascade: bool) -> Result<()> {
        let volume = self.volume(caller, id).await?;
        caller.require(Role::Member, "delete volumes")?;
        volume.check_deletable()?;
        if let Some(a) = self.store.attachment_of_volume(volume.id).await? {
            return Err(Error::invalid(format!(
                "Invalid volume: Volume {} is attached to server {}; detach it first.",
                volume.id, a.server_id
            )));
        }
        let snapshots = self.store.snapshots_of_volume(volume.id).await?;
        if cascade {
            if let Some(busy) = snapshots.iter().find(|s| {
                s.status != SnapshotStatus::Deleting
                    && !s.status.can_become(SnapshotStatus::Deleting)
            }) {
                return Err(Error::invalid(format!(
                    "Invalid volume: Snapshot {} of volume {} is {}; it cannot be deleted now.",
                    busy.id, volume.id, busy.status
                )));
            }
            for snap in snapshots
                .into_iter()
                .filter(|s| s.status != SnapshotStatus::Deleting)
            {
                self.delete_snapshot_record(snap).await?;
            }
        } else if !snapshots.is_empty() {
            return Err(Error::invalid(format!(
                "Invalid volume: Volume {} still has {} dependent snapshot(s); delete them first.",
                volume.id,
                snapshots.len()
            )));
        }
        let mut deleting = volume.clone();
        deleting.status = volume.status.transition(VolumeStatus::Deleting)?;
        deleting.updated_at = Utc::now();
        self.store.update_volume(&volume, &deleting).await?;
        let cloud = self.clone();
        tokio::spawn(async move { cloud.finish_volume_delete(deleting).await });
        Ok(())
    }

    /// A volume recorded `deleting`: its data is released (unless other
    /// volumes still stand on it; then it goes with them), then it is
    /// `deleted` — so once `GET` answers 404 the data is gone, as Cinder.
    pub(crate) async fn finish_volume_delete(&self, volume: Volume) {
        self.collect_garbage_quietly().await;
        if let Err(e) = self
            .store
            .set_volume_status(
                volume.id,
                VolumeStatus::Deleting,
                VolumeStatus::Deleted,
                None,
            )
            .await
        {
            tracing::warn!(volume = %volume.id, error = %e, "cannot record a volume deleted");
        }
    }
}

/// The pool data live volumes and snapshots stand on: garbage collection
/// keeps these and what they need. Those being deleted are not roots: their
/// data goes with the collection their deletion runs before it ends.
pub(crate) async fn garbage_roots(cloud: &Cloud) -> Result<BTreeSet<String>> {
    let mut roots = BTreeSet::new();
    for volume in cloud.store.volumes(None).await? {
        if volume.status != VolumeStatus::Deleting {
            roots.extend(volume.location);
        }
    }
    for snap in cloud.store.volume_snapshots(None).await? {
        if snap.status != SnapshotStatus::Deleting {
            roots.extend(snap.location);
        }
    }
    Ok(roots)
}

/// Settles what a previous run left half-way: create and snapshot sagas go
/// forward (or end in `error`), attaches and detaches are settled from
/// what the hypervisor shows, extends are redone, deletes finished.
pub(crate) async fn reconcile(cloud: &Cloud) -> Result<Vec<String>> {
    let mut repaired = cloud.recover_attachments().await?;
    for volume in cloud.store.volumes(None).await? {
        match volume.status {
            VolumeStatus::Extending => {
                cloud.finish_volume_extend(volume.clone()).await;
                repaired.push(format!("extend of volume {} finished", volume.id));
            }
            VolumeStatus::Deleting => {
                cloud
                    .store
                    .set_volume_status(
                        volume.id,
                        VolumeStatus::Deleting,
                        VolumeStatus::Deleted,
                        None,
                    )
                    .await?;
                repaired.push(format!("delete of volume {} finished", volume.id));
            }
            _ => {}
        }
    }
    for snap in cloud.store.volume_snapshots(None).await? {
        if snap.status == SnapshotStatus::Deleting {
            cloud
                .store
                .set_volume_snapshot_status(
                    snap.id,
                    SnapshotStatus::Deleting,
                    SnapshotStatus::Deleted,
                    None,
                )
                .await?;
            repaired.push(format!("delete of snapshot {} finished", snap.id));
        }
    }
    Ok(repaired)
}
