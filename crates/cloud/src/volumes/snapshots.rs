//! Volume snapshots: O(1), as a short saga recorded before it runs.
//!
//! ```text
//!  begun ──────────▶ freezing ───────────────────▶ done
//!  (snapshot          (the volume's location        (volume moved to its new
//!   `creating`)        recorded, then its data       top by compare-and-swap;
//!                      frozen: file = the top        snapshot `available` with
//!                      becomes a layer under a       the frozen data)
//!                      new top; rbd = snap+protect)
//!
//!  crash anywhere: forward (freezing the recorded location again finds
//!  what the first attempt made); a failure going forward: snapshot `error`.
//! ```
//! Deleting a snapshot: first its own volume stops standing on its data
//! where the pool can do it cheaply (file pool: the layer right under the
//! volume's top is copied into the top, `qemu-img rebase` in safe mode),
//! then garbage collection releases the data unless volumes made from it (or
//! the volume's later layers) still stand on it — those keep it until they
//! go — and then the snapshot is `deleted`.

use std::collections::BTreeMap;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::volume::{SnapshotStatus, VolumeSnapshot, VolumeStatus};
use domain::{Error, Result, VolumeSnapshotId};
use serde_json::{json, Value};
use store::SagaRecord;

use super::{fault_point, VolumeChanges};
use crate::Cloud;

const KIND: &str = "volume-snapshot";

/// What `POST /snapshots` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewSnapshot {
    pub volume_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Snapshot an `in-use` volume (needed before microversion 3.66).
    pub force: bool,
}

#[derive(Debug, Clone)]
struct Saga {
    id: String,
    snapshot: VolumeSnapshotId,
    /// The volume's location when it was frozen.
    old: Option<String>,
}

impl Saga {
    fn data(&self) -> Value {
        json!({"snapshot": self.snapshot.to_string(), "old": self.old})
    }

    fn from_record(r: &SagaRecord) -> Result<Saga> {
        let text = |k: &str| r.data.get(k).and_then(Value::as_str).map(str::to_owned);
        Ok(Saga {
            id: r.id.clone(),
            snapshot: text("snapshot")
                .ok_or_else(|| Error::internal(format!("Saga {} has corrupt data.", r.id)))?
                .parse()?,
            old: text("old"),
        })
    }
}

impl Cloud {
    /// Records a snapshot `creating` and takes it in the background.
    pub async fn create_volume_snapshot(
        &self,
        caller: &Caller,
        new: NewSnapshot,
    ) -> Result<VolumeSnapshot> {
        let volume = self.volume(caller, &new.volume_id).await?;
        caller.require(Role::Member, "create snapshots")?;
        volume.check_snapshot(new.force)?;
        let quota = self
            .claim_snapshot_quota(volume.project_id, volume.size)
            .await?;
        self.volume_pool()?;
        let now = Utc::now();
        let snap = VolumeSnapshot {
            id: VolumeSnapshotId::new(),
            volume_id: volume.id,
            project_id: volume.project_id,
            user_id: caller.user_id,
            name: new.name,
            description: new.description,
            size: volume.size,
            status: SnapshotStatus::Creating,
            location: None,
            metadata: new.metadata,
            created_at: now,
            updated_at: now,
        };
        snap.validate()?;
        let saga = Saga {
            id: uuid::Uuid::new_v4().to_string(),
            snapshot: snap.id,
            old: None,
        };
        self.store
            .insert_saga(&SagaRecord {
                id: saga.id.clone(),
                kind: KIND.into(),
                step: "begun".into(),
                data: saga.data(),
                created_at: now,
            })
            .await?;
        if let Err(e) = self.store.insert_volume_snapshot(&snap).await {
            let _ = self.store.finish_saga(&saga.id, "undone").await;
            return Err(e);
        }
        quota.release().await;
        fault_point("volume-snapshot:begun");
        let cloud = self.clone();
        tokio::spawn(async move {
            let mut saga = saga;
            cloud.run_volume_snapshot(&mut saga, "begun").await;
        });
        Ok(snap)
    }

    async fn run_volume_snapshot(&self, saga: &mut Saga, step: &str) {
        if let Err(e) = self.volume_snapshot_forward(saga, step).await {
            tracing::warn!(snapshot = %saga.snapshot, error = %e, "volume snapshot failed");
            if let Ok(snap) = self.store.volume_snapshot(saga.snapshot).await {
                if snap.status == SnapshotStatus::Creating {
                    let _ = self
                        .store
                        .set_volume_snapshot_status(
                            snap.id,
                            SnapshotStatus::Creating,
                            SnapshotStatus::Error,
                            None,
                        )
                        .await;
                }
            }
            let _ = self.store.finish_saga(&saga.id, "undone").await;
            self.collect_garbage_quietly().await;
        }
    }

    async fn volume_snapshot_forward(&self, saga: &mut Saga, step: &str) -> Result<()> {
        let snap = self.store.volume_snapshot(saga.snapshot).await?;
        if snap.status != SnapshotStatus::Creating {
            return self.store.finish_saga(&saga.id, "done").await;
        }
        let pool = self.volume_pool()?;
        let volume = self.store.volume(snap.volume_id).await?;
        let old = match (&saga.old, step) {
            (Some(old), "freezing") => old.clone(),
            _ => volume
                .location
                .clone()
                .ok_or_else(|| Error::invalid(format!("Volume {} has no data.", volume.id)))?,
        };
        saga.old = Some(old.clone());
        self.store
            .saga_step(&saga.id, "freezing", &saga.data())
            .await?;
        let gc = self.gc_lock.read().await;
        // An in-use volume a running QEMU has open is cut by QEMU.
        let attached = self
            .cut_attached_volume(volume.id, snap.id, &old, step == "freezing")
            .await?;
        let frozen = match &attached {
            Some(cut) => cut.frozen.clone(),
            None => {
                pool.snapshot_volume(&old, &format!("snapshot-{}", snap.id))
                    .await?
            }
        };
        fault_point("volume-snapshot:frozen");
        if frozen.volume != old && volume.location.as_deref() == Some(old.as_str()) {
            self.store
                .move_volume_location(volume.id, &old, &frozen.volume)
                .await?;
        }
        self.store
            .set_volume_snapshot_status(
                snap.id,
                SnapshotStatus::Creating,
                SnapshotStatus::Available,
                Some(&frozen.snapshot),
            )
            .await?;
        drop(attached);
        drop(gc);
        self.store.finish_saga(&saga.id, "done").await?;
        tracing::info!(snapshot = %saga.snapshot, volume = %volume.id, "volume snapshot taken");
        Ok(())
    }

    /// Renames a snapshot, changes its description, or replaces its metadata.
    pub async fn update_volume_snapshot(
        &self,
        caller: &Caller,
        id: &str,
        changes: VolumeChanges,
    ) -> Result<VolumeSnapshot> {
        let snap = self.volume_snapshot(caller, id).await?;
        caller.require(Role::Member, "update snapshots")?;
        let mut next = snap.clone();
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
        self.store.set_volume_snapshot_details(&next).await?;
        self.store.volume_snapshot(next.id).await
    }

    /// Deletes a snapshot (400 while it is being made); its data is
    /// released once nothing stands on it.
    pub async fn delete_volume_snapshot(&self, caller: &Caller, id: &str) -> Result<()> {
        let snap = self.volume_snapshot(caller, id).await?;
        caller.require(Role::Member, "delete snapshots")?;
        self.delete_snapshot_record(snap).await
    }

    /// Moves `snap` to `deleting` and releases it in the background (also
    /// for the snapshots an image owns, when the image is deleted).
    pub(crate) async fn delete_snapshot_record(&self, snap: VolumeSnapshot) -> Result<()> {
        let mut deleting = snap.clone();
        deleting.status = snap.status.transition(SnapshotStatus::Deleting)?;
        deleting.updated_at = Utc::now();
        self.store
            .update_volume_snapshot(&deleting, snap.status)
            .await?;
        let cloud = self.clone();
        tokio::spawn(async move {
            cloud.release_snapshot_data(&deleting).await;
            // Not a root any more: released now unless volumes stand on it.
            cloud.collect_garbage_quietly().await;
            if let Err(e) = cloud
                .store
                .set_volume_snapshot_status(
                    deleting.id,
                    SnapshotStatus::Deleting,
                    SnapshotStatus::Deleted,
                    None,
                )
                .await
            {
                tracing::warn!(snapshot = %deleting.id, error = %e, "cannot record a snapshot deleted");
            }
        });
        Ok(())
    }
}

impl Cloud {
    /// Lets the snapshot's own volume stop standing on its data where the
    /// pool can (file pool: the layer right under the volume's top is
    /// copied into the top), so that garbage collection can release it.
    /// Runs with garbage collection's lock held exclusively, so no snapshot
    /// of the same volume moves its top meanwhile; only for an `available`
    /// volume (no QEMU has it open).
    async fn release_snapshot_data(&self, snap: &VolumeSnapshot) {
        let (Ok(pool), Some(snapshot)) = (self.volume_pool(), snap.location.as_deref()) else {
            return;
        };
        let _exclusive = self.gc_lock.write().await;
        let Ok(volume) = self.store.volume(snap.volume_id).await else {
            return;
        };
        let (VolumeStatus::Available, Some(top)) = (volume.status, volume.location.as_deref())
        else {
            return;
        };
        match pool.release_snapshot(top, snapshot).await {
            Ok(released) => {
                tracing::debug!(snapshot = %snap.id, released, "volume snapshot data released from its volume")
            }
            Err(e) => {
                tracing::warn!(snapshot = %snap.id, error = %e, "snapshot data kept under its volume")
            }
        }
    }
}

/// Takes every snapshot saga a previous run left open forward.
pub(super) async fn recover(cloud: &Cloud) -> Result<Vec<String>> {
    let mut repaired = Vec::new();
    for record in cloud
        .store
        .open_sagas()
        .await?
        .into_iter()
        .filter(|r| r.kind == KIND)
    {
        let mut saga = Saga::from_record(&record)?;
        cloud.run_volume_snapshot(&mut saga, &record.step).await;
        let outcome = cloud
            .store
            .volume_snapshot(saga.snapshot)
            .await
            .map_or_else(|_| "never recorded".to_string(), |s| s.status.to_string());
        repaired.push(format!(
            "snapshot {} (at {}): {outcome}",
            saga.snapshot, record.step
        ));
    }
    Ok(repaired)
}
