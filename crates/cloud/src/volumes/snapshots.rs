//! Volume snapshots: O(1), as a saga (`volume-snapshot`, on the engine in
//! [`crate::saga`]).
//!
//! ```text
//!  record ──────▶ plan ──────────────▶ freeze ───────────────────▶ switch
//!  (snapshot       (the volume's        (file: the top becomes a     (volume on its new top by
//!   `creating`)     location and the     layer under a new top —     compare-and-swap; snapshot
//!                   names the freeze     by QEMU when a running      `available` with the
//!                   will use recorded)   server has the volume       frozen data)
//!                                        open; rbd: snap + protect)
//!
//!  crash in record: probed (the row exists → on); anywhere else: forward
//!  (freezing the recorded location again finds what the first attempt
//!  made; a cut QEMU made is found, not made twice); a failure going
//!  forward: snapshot `error`, and a volume QEMU already writes in its new
//!  top is moved there.
//! ```
//! Deleting a snapshot: first its own volume stops standing on its data
//! where the pool can do it cheaply (file pool: the layer right under the
//! volume's top is copied into the top, `qemu-img rebase` in safe mode),
//! then garbage collection releases the data unless volumes made from it (or
//! the volume's later layers) still stand on it — those keep it until they
//! go — and then the snapshot is `deleted`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::volume::{SnapshotStatus, VolumeSnapshot, VolumeStatus};
use domain::{Error, ErrorKind, Result, VolumeId, VolumeSnapshotId};
use serde::{Deserialize, Serialize};
use storage::volumes::FrozenVolume;

use super::VolumeChanges;
use crate::compute::volume_cut::{snapshot_name, AttachedCut};
use crate::saga::{Probe, Saga, SagaStep};
use crate::Cloud;

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

/// The `volume-snapshot` saga's state.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct VolumeSnapshotCreate {
    snapshot: VolumeSnapshotId,
    volume: VolumeId,
    /// The record `record` inserts (in the request: recovery probes that
    /// step, never runs it again).
    #[serde(skip)]
    record: Option<VolumeSnapshot>,
    /// The volume's location when it is frozen, and where the freeze puts
    /// the snapshot's data and the volume's new top.
    old: Option<String>,
    frozen: Option<FrozenVolume>,
    /// A crash interrupted `freeze`: a cut QEMU already made is not made again.
    #[serde(default)]
    resumed: bool,
    /// From a cut QEMU made until the volume's new location is recorded.
    #[serde(skip)]
    cut: Option<AttachedCut>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Record,
    Plan,
    Freeze,
    Switch,
}

impl SagaStep for Step {
    const ALL: &'static [Step] = &[Step::Record, Step::Plan, Step::Freeze, Step::Switch];

    fn name(self) -> &'static str {
        match self {
            Step::Record => "record",
            Step::Plan => "plan",
            Step::Freeze => "freeze",
            Step::Switch => "switch",
        }
    }
}

#[async_trait]
impl Saga for VolumeSnapshotCreate {
    const KIND: &'static str = "volume-snapshot";
    type Step = Step;

    fn describe(&self) -> String {
        format!("{} of volume {}", self.snapshot, self.volume)
    }

    fn pool_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.old.iter().cloned().collect();
        if let Some(f) = &self.frozen {
            names.extend([f.snapshot.clone(), f.volume.clone()]);
        }
        names
    }

    async fn run(&mut self, cloud: &Cloud, step: Step) -> Result<()> {
        let pool = cloud.volume_pool()?;
        match step {
            Step::Record => {
                let record = self
                    .record
                    .as_ref()
                    .ok_or_else(|| Error::internal("The volume snapshot saga lost its record."))?;
                cloud.store.insert_volume_snapshot(record).await?;
            }
            Step::Plan => {
                let volume = cloud.store.volume(self.volume).await?;
                let old = volume.location.ok_or_else(|| {
                    Error::invalid(format!("Volume {} has no data.", self.volume))
                })?;
                let (frozen, _) = pool.planned_snapshot(&old, &snapshot_name(self.snapshot))?;
                self.old = Some(old);
                self.frozen = Some(frozen);
            }
            Step::Freeze => {
                let old = self.old()?.to_string();
                // An in-use volume a running QEMU has open is cut by QEMU.
                let cut = cloud
                    .cut_attached_volume(self.volume, self.snapshot, &old, self.resumed)
                    .await?;
                let frozen = match &cut {
                    Some(cut) => cut.frozen.clone(),
                    None => {
                        pool.snapshot_volume(&old, &snapshot_name(self.snapshot))
                            .await?
                    }
                };
                self.frozen = Some(frozen);
                self.cut = cut;
            }
            Step::Switch => {
                let frozen = self.frozen()?.clone();
                cloud
                    .move_frozen_volume(self.volume, self.old()?, &frozen)
                    .await?;
                let snap = cloud.store.volume_snapshot(self.snapshot).await?;
                if snap.status == SnapshotStatus::Creating {
                    cloud
                        .store
                        .set_volume_snapshot_status(
                            self.snapshot,
                            SnapshotStatus::Creating,
                            SnapshotStatus::Available,
                            Some(&frozen.snapshot),
                        )
                        .await?;
                }
                self.cut = None;
            }
        }
        Ok(())
    }

    async fn undo(&mut self, cloud: &Cloud, step: Step) -> Result<()> {
        match step {
            Step::Record => cloud.fail_volume_snapshot(self.snapshot).await?,
            Step::Freeze => {
                // A volume QEMU already writes in its new top stays there.
                if let (Some(old), Some(frozen)) = (self.old.clone(), self.frozen.clone()) {
                    if cloud
                        .attached_cut_took(self.volume, self.snapshot, &old)
                        .await?
                    {
                        cloud.move_frozen_volume(self.volume, &old, &frozen).await?;
                    }
                }
                self.cut = None;
            }
            Step::Plan | Step::Switch => {}
        }
        Ok(())
    }

    async fn probe(&mut self, cloud: &Cloud, step: Step) -> Result<Probe> {
        Ok(match step {
            Step::Record => match cloud.store.volume_snapshot(self.snapshot).await {
                Ok(_) => Probe::Took,
                Err(e) if e.kind() == ErrorKind::NotFound => Probe::NotTaken,
                Err(e) => return Err(e),
            },
            Step::Freeze => {
                self.resumed = true;
                Probe::Rerun
            }
            _ => Probe::Rerun,
        })
    }

    async fn finished(&mut self, cloud: &Cloud) {
        tracing::info!(snapshot = %self.snapshot, volume = %self.volume, "volume snapshot taken");
        // The new layer may leave the volume's chain past the cap.
        cloud.shorten_chains_quietly().await;
    }
}

impl VolumeSnapshotCreate {
    fn old(&self) -> Result<&str> {
        self.old
            .as_deref()
            .ok_or_else(|| Error::internal("The volume snapshot saga lost the volume's location."))
    }

    fn frozen(&self) -> Result<&FrozenVolume> {
        self.frozen
            .as_ref()
            .ok_or_else(|| Error::internal("The volume snapshot saga lost its frozen data."))
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
            progress: None,
            created_at: now,
            updated_at: now,
        };
        snap.validate()?;
        self.start_saga_with_claim(
            VolumeSnapshotCreate {
                snapshot: snap.id,
                volume: volume.id,
                record: Some(snap.clone()),
                old: None,
                frozen: None,
                resumed: false,
                cut: None,
            },
            Step::Record,
            quota,
        )
        .await?;
        Ok(snap)
    }

    /// A snapshot whose creation failed: `error` (Cinder's way).
    async fn fail_volume_snapshot(&self, id: VolumeSnapshotId) -> Result<()> {
        match self.store.volume_snapshot(id).await {
            Ok(snap) if snap.status == SnapshotStatus::Creating => {
                self.store
                    .set_volume_snapshot_status(
                        id,
                        SnapshotStatus::Creating,
                        SnapshotStatus::Error,
                        None,
                    )
                    .await
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The volume goes on from the new top a freeze gave it (compare and
    /// swap; moved already is fine).
    async fn move_frozen_volume(
        &self,
        volume: VolumeId,
        old: &str,
        frozen: &FrozenVolume,
    ) -> Result<()> {
        let now = self.store.volume(volume).await?;
        if frozen.volume != old && now.location.as_deref() == Some(old) {
            self.store
                .move_volume_location(volume, old, &frozen.volume)
                .await?;
        }
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
        self.store.update_volume_snapshot(&snap, &deleting).await?;
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
