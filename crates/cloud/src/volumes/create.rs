//! Volume creation: a short saga, recorded before it runs, so a crash at any
//! point ends in an `available` or an `error` volume and no stray data.
//!
//! ```text
//!  begun ────────────────────────────────▶ made ──────────────▶ done
//!  (volume `creating`,     (blank / from image / from snapshot:
//!   saga recorded)          one O(1) pool call, idempotent)
//!    │
//!    └─ from a volume: freezing ──▶ frozen ──▶ made
//!       (source's data frozen      (the frozen data and the source's
//!        as `clone-<id>`: a        new top recorded; the source moved
//!        layer or an RBD snap)     to it by compare-and-swap)
//!
//!  then: flattened if deeper than the pool's clone depth; `available`.
//!  crash anywhere: forward from the recorded step (every pool call can be
//!  repeated); a failure going forward: volume `error`, saga undone, the
//!  data nothing records is garbage.
//! ```

use std::collections::BTreeMap;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::image::ImageStatus;
use domain::volume::{SnapshotStatus, Volume, VolumeSource, VolumeStatus, GIB};
use domain::{Error, ErrorKind, Result, VolumeId};
use serde_json::{json, Value};
use store::SagaRecord;

use super::fault_point;
use crate::Cloud;

const KIND: &str = "volume-create";

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
}

/// The saga's memory: the volume, and for a clone of a volume, where the
/// source's data was frozen.
#[derive(Debug, Clone)]
struct Saga {
    id: String,
    volume: VolumeId,
    /// The source volume's location when it was frozen.
    source_old: Option<String>,
    /// The frozen data of the source and its new top.
    frozen: Option<(String, String)>,
}

impl Saga {
    fn data(&self) -> Value {
        json!({"volume": self.volume.to_string(), "source_old": self.source_old,
               "frozen": self.frozen.as_ref().map(|(s, v)| json!({"snapshot": s, "volume": v}))})
    }

    fn from_record(r: &SagaRecord) -> Result<Saga> {
        let corrupt = || Error::internal(format!("Saga {} has corrupt data.", r.id));
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let frozen = match r.data.get("frozen") {
            Some(f @ Value::Object(_)) => Some((
                text(f, "snapshot").ok_or_else(corrupt)?,
                text(f, "volume").ok_or_else(corrupt)?,
            )),
            _ => None,
        };
        Ok(Saga {
            id: r.id.clone(),
            volume: text(&r.data, "volume").ok_or_else(corrupt)?.parse()?,
            source_old: text(&r.data, "source_old"),
            frozen,
        })
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
        let quota = self.claim_volume_quota(project, size).await?;
        let now = Utc::now();
        let mut volume = Volume::new_creating(project, caller.user_id, size, source, now);
        volume.name = new.name;
        volume.description = new.description;
        volume.metadata = new.metadata;
        volume.bootable = bootable;
        volume.image_metadata = image_metadata;
        volume.validate()?;

        let saga = Saga {
            id: uuid::Uuid::new_v4().to_string(),
            volume: volume.id,
            source_old: None,
            frozen: None,
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
        if let Err(e) = self.store.insert_volume(&volume).await {
            let _ = self.store.finish_saga(&saga.id, "undone").await;
            return Err(e);
        }
        quota.release().await;
        fault_point("volume-create:begun");
        let cloud = self.clone();
        tokio::spawn(async move {
            let mut saga = saga;
            cloud.run_volume_create(&mut saga, "begun").await;
        });
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

    /// Runs the saga forward from `step`; a failure leaves the volume in
    /// `error` and the saga undone.
    async fn run_volume_create(&self, saga: &mut Saga, step: &str) {
        if let Err(e) = self.volume_create_forward(saga, step).await {
            tracing::warn!(volume = %saga.volume, error = %e, "volume creation failed");
            self.fail_volume_create(saga).await;
        }
    }

    async fn volume_create_forward(&self, saga: &mut Saga, step: &str) -> Result<()> {
        let volume = self.store.volume(saga.volume).await?;
        if volume.status != VolumeStatus::Creating {
            return self.store.finish_saga(&saga.id, "done").await;
        }
        let pool = self.volume_pool()?;
        let name = format!("volume-{}", volume.id);
        let size = volume.size * GIB;
        let gc = self.gc_lock.read().await;
        let location = match volume.source {
            VolumeSource::Blank => pool.create_volume(&name, size).await?,
            VolumeSource::Image(id) => {
                let img = self.store.image(id).await?;
                let location = img
                    .location
                    .clone()
                    .ok_or_else(|| Error::invalid(format!("Image {id} has no data.")))?;
                let format = crate::images::qemu_format_of(&img);
                pool.volume_from_image(&name, &location, format, size)
                    .await?
            }
            VolumeSource::Snapshot(id) => {
                let snap = self.store.volume_snapshot(id).await?;
                let location = snap
                    .location
                    .clone()
                    .ok_or_else(|| Error::invalid(format!("Snapshot {id} has no data.")))?;
                pool.volume_from_snapshot(&name, &location, size).await?
            }
            VolumeSource::Volume(source) => {
                let frozen = self.freeze_source_volume(saga, step, source).await?;
                pool.volume_from_snapshot(&name, &frozen, size).await?
            }
        };
        fault_point("volume-create:made");
        if pool.clone_depth(&location).await? > pool.max_clone_depth() {
            tracing::info!(volume = %volume.id, "volume deeper than the clone depth bound; flattening");
            pool.flatten_volume(&location).await?;
        }
        drop(gc);
        // Before the clone is available, so that clones made one after the
        // other each find their frozen layer right under the source's top.
        if let (VolumeSource::Volume(source), Some((frozen, _))) = (volume.source, &saga.frozen) {
            self.keep_source_shallow(source, frozen).await;
        }
        self.store
            .set_volume_status(
                saga.volume,
                VolumeStatus::Creating,
                VolumeStatus::Available,
                Some(&location),
            )
            .await?;
        self.store.finish_saga(&saga.id, "done").await?;
        tracing::info!(volume = %saga.volume, "volume created");
        Ok(())
    }

    /// Each clone of a volume freezes the source's data under a new top
    /// (file pool), one layer deeper each time; past the pool's clone depth
    /// the source stops standing on the layer just frozen (its data is
    /// copied into the source's top; the clone keeps the layer). Best
    /// effort: a failure only leaves the source one layer deeper.
    async fn keep_source_shallow(&self, source: VolumeId, frozen: &str) {
        let Ok(pool) = self.volume_pool() else {
            return;
        };
        let _exclusive = self.gc_lock.write().await;
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

    /// Freezes the source volume's data for a clone (once: a recorded
    /// freeze is reused) and returns the frozen data's location.
    async fn freeze_source_volume(
        &self,
        saga: &mut Saga,
        step: &str,
        source: VolumeId,
    ) -> Result<String> {
        let pool = self.volume_pool()?;
        if step != "frozen" || saga.frozen.is_none() {
            let old = match (&saga.source_old, step) {
                (Some(old), "freezing") => old.clone(),
                _ => {
                    let src = self.store.volume(source).await?;
                    src.location.ok_or_else(|| {
                        Error::invalid(format!("Source volume {source} has no data."))
                    })?
                }
            };
            saga.source_old = Some(old.clone());
            self.store
                .saga_step(&saga.id, "freezing", &saga.data())
                .await?;
            let frozen = pool
                .snapshot_volume(&old, &format!("clone-{}", saga.volume))
                .await?;
            saga.frozen = Some((frozen.snapshot, frozen.volume));
            self.store
                .saga_step(&saga.id, "frozen", &saga.data())
                .await?;
            fault_point("volume-create:frozen");
        }
        let (Some(old), Some((snapshot, new_top))) = (&saga.source_old, &saga.frozen) else {
            return Err(Error::internal(
                "The volume creation saga lost its frozen source.",
            ));
        };
        if old != new_top {
            let now = self.store.volume(source).await?;
            if now.location.as_deref() == Some(old.as_str()) {
                self.store
                    .move_volume_location(source, old, new_top)
                    .await?;
            }
        }
        Ok(snapshot.clone())
    }

    async fn fail_volume_create(&self, saga: &Saga) {
        if let Ok(volume) = self.store.volume(saga.volume).await {
            if volume.status == VolumeStatus::Creating {
                let _ = self
                    .store
                    .set_volume_status(volume.id, VolumeStatus::Creating, VolumeStatus::Error, None)
                    .await;
            }
        }
        let _ = self.store.finish_saga(&saga.id, "undone").await;
        self.collect_garbage_quietly().await;
    }
}

/// Takes every creation saga a previous run left open forward.
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
        cloud.run_volume_create(&mut saga, &record.step).await;
        let outcome = match cloud.store.volume(saga.volume).await {
            Ok(v) => v.status.to_string(),
            Err(e) if e.kind() == ErrorKind::NotFound => "never recorded".to_string(),
            Err(e) => return Err(e),
        };
        repaired.push(format!(
            "creation of volume {} (at {}): {outcome}",
            saga.volume, record.step
        ));
    }
    Ok(repaired)
}
