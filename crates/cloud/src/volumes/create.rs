//! Volume creation: a saga (`volume-create`, on the engine in
//! [`crate::saga`]), so a crash at any point ends in an `available` or an
//! `error` volume and no stray data.
//!
//! ```text
//!  record ──▶ freeze ──────────────▶ move-source ──▶ make ────────────▶ flatten ──────────▶ shallow ─────────▶ publish
//!  (volume     (from a volume: its    (the source     (blank / from      (past the pool's    (a source past    (volume
//!   `creating`) data frozen as        goes on from    image / snapshot   clone depth: the    the clone depth:  `available`
//!              `clone-<id>`: a layer  its new top,    / the frozen       data copied in,     the frozen layer  at its
//!              or an RBD snap;        by compare-     source: one O(1)   while `creating`)   copied into its   location)
//!              others: nothing)       and-swap)       pool call)                             top; exclusive)
//!
//!  crash anywhere: forward from the recorded step (every pool call can be
//!  repeated; `record` is probed: the row exists → on, else undone); a
//!  failure going forward: volume `error`, the data nothing records is
//!  garbage once the saga is over.
//! ```

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::image::ImageStatus;
use domain::volume::{SnapshotStatus, Volume, VolumeSource, VolumeStatus, GIB};
use domain::{Error, ErrorKind, Result, VolumeId};
use serde::{Deserialize, Serialize};
use storage::volumes::FrozenVolume;

use crate::saga::{Probe, Saga, SagaStep};
use crate::Cloud;

/// What `POST /volumes` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewVolume {
    pub name: Option<String>,
    pub description: Option<String>,
    /// GiB; defaults to the source snapshot's or volume's size.
    pub size: Option<u64>,
    pub image_ref: Option<String>,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// A volume type's id or name (default: the source's type, else the
    /// default type).
    pub volume_type: Option<String>,
}

/// The `volume-create` saga's state.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct VolumeCreate {
    volume: VolumeId,
    /// The record `record` inserts (in the request: recovery probes that
    /// step, never runs it again).
    #[serde(skip)]
    record: Option<Volume>,
    /// A source volume's location when it was frozen, and where its frozen
    /// data and its new top are.
    source_old: Option<String>,
    frozen: Option<FrozenVolume>,
    /// The new volume's data.
    location: Option<String>,
    /// The source's new top this clone made went unused (another clone
    /// moved the source first): garbage once the saga is over.
    #[serde(default)]
    unused_top: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Record,
    Freeze,
    MoveSource,
    Make,
    Flatten,
    Shallow,
    Publish,
}

impl SagaStep for Step {
    const ALL: &'static [Step] = &[
        Step::Record,
        Step::Freeze,
        Step::MoveSource,
        Step::Make,
        Step::Flatten,
        Step::Shallow,
        Step::Publish,
    ];

    fn name(self) -> &'static str {
        match self {
            Step::Record => "record",
            Step::Freeze => "freeze",
            Step::MoveSource => "move-source",
            Step::Make => "make",
            Step::Flatten => "flatten",
            Step::Shallow => "shallow",
            Step::Publish => "publish",
        }
    }
}

#[async_trait]
impl Saga for VolumeCreate {
    const KIND: &'static str = "volume-create";
    type Step = Step;

    fn describe(&self) -> String {
        format!("of volume {}", self.volume)
    }

    fn pool_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.source_old.iter().cloned().collect();
        if let Some(f) = &self.frozen {
            names.extend([f.snapshot.clone(), f.volume.clone()]);
        }
        names.extend(self.location.clone());
        names
    }

    async fn run(&mut self, cloud: &Cloud, step: Step) -> Result<()> {
        let pool = cloud.volume_pool()?;
        match step {
            Step::Record => {
                let record = self
                    .record
                    .as_ref()
                    .ok_or_else(|| Error::internal("The volume creation saga lost its record."))?;
                cloud.store.insert_volume(record).await?;
            }
            Step::Freeze => {
                let volume = cloud.creating_volume(self.volume).await?;
                if let VolumeSource::Volume(source) = volume.source {
                    let src = cloud.store.volume(source).await?;
                    let old = src.location.ok_or_else(|| {
                        Error::invalid(format!("Source volume {source} has no data."))
                    })?;
                    let frozen = pool
                        .snapshot_volume(&old, &format!("clone-{}", self.volume))
                        .await?;
                    self.source_old = Some(old);
                    self.frozen = Some(frozen);
                }
            }
            Step::MoveSource => {
                let volume = cloud.creating_volume(self.volume).await?;
                if let (VolumeSource::Volume(source), Some(old), Some(frozen)) =
                    (volume.source, &self.source_old, &self.frozen)
                {
                    let now = cloud.store.volume(source).await?;
                    let moved_on = now.location.as_deref() != Some(old.as_str())
                        && now.location.as_deref() != Some(frozen.volume.as_str());
                    if frozen.volume != *old && moved_on {
                        // Another clone moved the source on first (see below).
                        self.unused_top = true;
                    } else if frozen.volume != *old && now.location.as_deref() == Some(old.as_str())
                    {
                        match cloud
                            .store
                            .move_volume_location(source, old, &frozen.volume)
                            .await
                        {
                            Ok(()) => {}
                            // Another clone froze the source at the same
                            // moment and moved it on first: the data this
                            // clone froze is immutable and stays its data;
                            // its new top for the source is garbage.
                            Err(e) if e.kind() == ErrorKind::Conflict => {
                                tracing::info!(volume = %self.volume, %source,
                                    "the source moved on under a concurrent clone; this clone keeps its frozen data");
                                self.unused_top = true;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            Step::Make => {
                let volume = cloud.creating_volume(self.volume).await?;
                self.location = Some(
                    cloud
                        .make_volume_data(&volume, self.frozen.as_ref())
                        .await?,
                );
            }
            Step::Flatten => {
                let location = self.location()?;
                if pool.clone_depth(location).await? > pool.max_clone_depth() {
                    tracing::info!(volume = %self.volume, "volume deeper than the clone depth bound; flattening");
                    pool.flatten_volume(location).await?;
                }
            }
            // Before the clone is available, so that clones made one after
            // the other each find their frozen layer right under the
            // source's top.
            Step::Shallow => {
                if let Some(frozen) = &self.frozen {
                    let volume = cloud.store.volume(self.volume).await?;
                    if let VolumeSource::Volume(source) = volume.source {
                        cloud.keep_source_shallow(source, &frozen.snapshot).await;
                    }
                }
            }
            Step::Publish => {
                let location = self.location()?.to_string();
                let volume = cloud.store.volume(self.volume).await?;
                if volume.status == VolumeStatus::Creating {
                    cloud
                        .store
                        .set_volume_status(
                            self.volume,
                            VolumeStatus::Creating,
                            VolumeStatus::Available,
                            Some(&location),
                        )
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn undo(&mut self, cloud: &Cloud, step: Step) -> Result<()> {
        if step == Step::Record {
            cloud.fail_volume_create(self.volume).await?;
        }
        Ok(())
    }

    async fn probe(&mut self, cloud: &Cloud, step: Step) -> Result<Probe> {
        Ok(match step {
            Step::Record => match cloud.store.volume(self.volume).await {
                Ok(_) => Probe::Took,
                Err(e) if e.kind() == ErrorKind::NotFound => Probe::NotTaken,
                Err(e) => return Err(e),
            },
            _ => Probe::Rerun,
        })
    }

    /// `shallow` moves the source's top: no other step may move it meanwhile.
    fn exclusive(step: Step) -> bool {
        step == Step::Shallow
    }

    async fn finished(&mut self, cloud: &Cloud) {
        tracing::info!(volume = %self.volume, "volume created");
        if self.unused_top {
            cloud.collect_garbage_quietly().await;
        }
    }
}

impl VolumeCreate {
    fn location(&self) -> Result<&str> {
        self.location
            .as_deref()
            .ok_or_else(|| Error::internal("The volume creation saga lost its data."))
    }
}

/// Errors about a source the request names are 400s, except a missing or
/// invisible one (404, as Cinder's `ImageNotFound`/`SnapshotNotFound`).
fn too_small(size: u64, what: &str, needed: u64) -> Error {
    Error::invalid(format!(
        "Invalid input received: Volume size '{size}'GB cannot be smaller than the {what} size {needed}GB. They must be >= original {what} size."
    ))
}

impl Cloud {
    /// Checks the request, records the volume `creating` and makes its
    /// data in the background.
    pub async fn create_volume(&self, caller: &Caller, new: NewVolume) -> Result<Volume> {
        caller.require(Role::Member, "create volumes")?;
        let project = caller.project()?;
        self.volume_pool()?;
        let sources = [&new.image_ref, &new.snapshot_id, &new.source_volid]
            .iter()
            .filter(|s| s.is_some())
            .count();
        if sources > 1 {
            return Err(Error::invalid(
                "Invalid input received: only one of imageRef, snapshot_id and source_volid may be given.",
            ));
        }
        let (source, size, bootable, image_metadata) =
            self.resolve_volume_source(caller, &new).await?;
        let inherited = match source {
            VolumeSource::Snapshot(sid) => {
                let snap = self.store.volume_snapshot(sid).await?;
                Some(self.store.volume(snap.volume_id).await?.volume_type_id)
            }
            VolumeSource::Volume(vid) => Some(self.store.volume(vid).await?.volume_type_id),
            _ => None,
        };
        let (volume_type, placement_problem) = self
            .type_for_new_volume(caller, new.volume_type.as_deref(), inherited)
            .await?;
        let quota = self.claim_volume_quota(project, size).await?;
        let now = Utc::now();
        let mut volume = Volume::new_creating(project, caller.user_id, size, source, now);
        volume.name = new.name;
        volume.description = new.description;
        volume.metadata = new.metadata;
        volume.bootable = bootable;
        volume.image_metadata = image_metadata;
        volume.volume_type_id = volume_type;
        volume.validate()?;
        if let Some(problem) = placement_problem {
            // As Cinder's scheduler: the volume is recorded in `error`,
            // with a user message saying why; no data is made.
            volume.status = VolumeStatus::Error;
            self.store.insert_volume(&volume).await?;
            quota.release().await;
            self.record_volume_message(&volume, "VOLUME_VOLUME_001_003", &problem)
                .await;
            return Ok(volume);
        }

        self.start_saga_with_claim(
            VolumeCreate {
                volume: volume.id,
                record: Some(volume.clone()),
                source_old: None,
                frozen: None,
                location: None,
                unused_top: false,
            },
            Step::Record,
            quota,
        )
        .await?;
        Ok(volume)
    }

    /// The source's kind, the volume's size (GiB), whether it is bootable,
    /// and the image metadata it inherits.
    pub(crate) async fn resolve_volume_source(
        &self,
        caller: &Caller,
        new: &NewVolume,
    ) -> Result<(VolumeSource, u64, bool, BTreeMap<String, String>)> {
        if let Some(image_ref) = &new.image_ref {
            let img = self.image(caller, image_ref).await?;
            if img.status != ImageStatus::Active || img.location.is_none() {
                return Err(Error::invalid(format!(
                    "Invalid image: image {} is not active (it is {}).",
                    img.id, img.status
                )));
            }
            let size = new.size.ok_or_else(|| {
                Error::invalid(
                    "Invalid input received: a size is needed to create a volume from an image.",
                )
            })?;
            let needed = img.virtual_size.or(img.size).unwrap_or(0).div_ceil(GIB);
            if size < needed {
                return Err(Error::invalid(format!(
                    "Invalid input received: Size of specified image {needed} GB is larger than volume size {size} GB."
                )));
            }
            if size < img.min_disk {
                return Err(Error::invalid(format!(
                    "Invalid input received: Volume size {size} GB cannot be smaller than the image minDisk size {} GB.",
                    img.min_disk
                )));
            }
            let mut meta = BTreeMap::new();
            meta.insert("image_id".into(), img.id.to_string());
            meta.insert("image_name".into(), img.name.clone().unwrap_or_default());
            for (k, v) in [
                ("checksum", img.checksum.clone()),
                ("container_format", img.container_format.clone()),
                ("disk_format", img.disk_format.clone()),
                ("size", img.size.map(|s| s.to_string())),
            ] {
                if let Some(v) = v {
                    meta.insert(k.into(), v);
                }
            }
            meta.insert("min_disk".into(), img.min_disk.to_string());
            meta.insert("min_ram".into(), img.min_ram.to_string());
            for (k, v) in &img.properties {
                if !k.starts_with("snapstack_") {
                    meta.insert(k.clone(), v.clone());
                }
            }
            return Ok((VolumeSource::Image(img.id), size, true, meta));
        }
        if let Some(snap_id) = &new.snapshot_id {
            let snap = self.volume_snapshot(caller, snap_id).await?;
            if snap.status != SnapshotStatus::Available {
                return Err(Error::invalid(format!(
                    "Invalid snapshot: Originating snapshot status must be one of 'available' values (snapshot {} is {}).",
                    snap.id, snap.status
                )));
            }
            let size = new.size.unwrap_or(snap.size);
            if size < snap.size {
                return Err(too_small(size, "snapshot", snap.size));
            }
            let parent = self.store.volume(snap.volume_id).await?;
            return Ok((
                VolumeSource::Snapshot(snap.id),
                size,
                parent.bootable,
                parent.image_metadata,
            ));
        }
        if let Some(source_id) = &new.source_volid {
            let source = self.volume(caller, source_id).await?;
            if source.status != VolumeStatus::Available {
                return Err(Error::invalid(format!(
                    "Invalid volume: Unable to clone volumes that are in {} state (volume {}).",
                    source.status, source.id
                )));
            }
            let size = new.size.unwrap_or(source.size);
            if size < source.size {
                return Err(too_small(size, "source volume", source.size));
            }
            return Ok((
                VolumeSource::Volume(source.id),
                size,
                source.bootable,
                source.image_metadata,
            ));
        }
        let size = new.size.ok_or_else(|| {
            Error::invalid("Invalid input received: a size is needed to create a blank volume.")
        })?;
        Ok((VolumeSource::Blank, size, false, BTreeMap::new()))
    }

    /// A volume the saga still makes (`creating`): anything else means
    /// another actor settled it, and the saga stops (undone).
    async fn creating_volume(&self, id: VolumeId) -> Result<Volume> {
        let volume = self.store.volume(id).await?;
        if volume.status != VolumeStatus::Creating {
            return Err(Error::conflict(format!(
                "Volume {id} is {} and no longer being created.",
                volume.status
            )));
        }
        Ok(volume)
    }

    /// Makes a new volume's data from its source (one O(1) pool call that
    /// can be repeated) and returns its location.
    async fn make_volume_data(
        &self,
        volume: &Volume,
        frozen: Option<&FrozenVolume>,
    ) -> Result<String> {
        let pool = self.volume_pool()?;
        let name = format!("volume-{}", volume.id);
        let size = volume.size * GIB;
        match volume.source {
            VolumeSource::Blank => pool.create_volume(&name, size).await,
            VolumeSource::Image(id) => {
                let img = self.store.image(id).await?;
                let location = img
                    .location
                    .clone()
                    .ok_or_else(|| Error::invalid(format!("Image {id} has no data.")))?;
                let format = crate::images::qemu_format_of(&img);
                pool.volume_from_image(&name, &location, format, size).await
            }
            VolumeSource::Snapshot(id) => {
                let snap = self.store.volume_snapshot(id).await?;
                let location = snap
                    .location
                    .clone()
                    .ok_or_else(|| Error::invalid(format!("Snapshot {id} has no data.")))?;
                pool.volume_from_snapshot(&name, &location, size).await
            }
            VolumeSource::Volume(source) => {
                let frozen = frozen.ok_or_else(|| {
                    Error::internal(format!(
                        "The clone of volume {source} lost its frozen source."
                    ))
                })?;
                pool.volume_from_snapshot(&name, &frozen.snapshot, size)
                    .await
            }
        }
    }

    /// Each clone of a volume freezes the source's data under a new top
    /// (file pool), one layer deeper each time; past the pool's clone depth
    /// the source stops standing on the layer just frozen (its data is
    /// copied into the source's top; the clone keeps the layer). Best
    /// effort: a failure only leaves the source one layer deeper. Runs in
    /// a step that holds the collector's lock exclusively.
    async fn keep_source_shallow(&self, source: VolumeId, frozen: &str) {
        let Ok(pool) = self.volume_pool() else {
            return;
        };
        let Ok(src) = self.store.volume(source).await else {
            return;
        };
        let (VolumeStatus::Available, Some(top)) = (src.status, src.location.as_deref()) else {
            return;
        };
        match pool.clone_depth(top).await {
            Ok(depth) if depth > pool.max_clone_depth() => {
                if let Err(e) = pool.release_snapshot(top, frozen).await {
                    tracing::warn!(volume = %source, error = %e, "source volume left one layer deeper");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(volume = %source, error = %e, "cannot measure a source volume")
            }
        }
    }

    /// A volume whose creation failed: `error` (Cinder's way; the user
    /// deletes it).
    async fn fail_volume_create(&self, id: VolumeId) -> Result<()> {
        match self.store.volume(id).await {
            Ok(volume) if volume.status == VolumeStatus::Creating => {
                self.store
                    .set_volume_status(id, VolumeStatus::Creating, VolumeStatus::Error, None)
                    .await
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}
