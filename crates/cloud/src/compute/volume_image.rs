//! `createImage` of a volume-backed server: every attached volume
//! snapshotted at one instant, and an empty image that says how to rebuild
//! the server from those snapshots — what Nova's `snapshot_volume_backed`
//! does, without its weaknesses (Nova asks Cinder for one snapshot after the
//! other, and deleting the image leaks them).
//!
//! The image has no data (size 0); its properties carry Nova's
//! `block_device_mapping` (a JSON list of `source_type=snapshot`,
//! `destination_type=volume` mappings, one per volume, with
//! `snapshot_id`, `volume_size`, `device_name`, `boot_index`,
//! `delete_on_termination`, …), `bdm_v2=True` and `root_device_name`.
//! Booting from it makes a volume of every snapshot and attaches it where it
//! was. The image owns its snapshots: deleting it deletes them (their data
//! stays while volumes made from them still stand on it).
//!
//! The saga (`server-volume-image`, on the engine in [`crate::saga`]); the
//! first two steps run in the request, the rest in the background:
//!
//! ```text
//!  claim ──────▶ quiesce ──▶ cut ──────────────▶ switch ──────────▶ thaw ──▶ publish ──▶ seal ──▶ release
//!  (image queued, (guest      (every volume at     (volumes on their           (image      (file:     (task
//!   snapshots      frozen if   one instant, as     new tops; snapshots         active,     read-only; cleared)
//!   creating and   the image   planned in the      available)                  size 0,     rbd:
//!   owned by it,   asks)       saga's state: see                               BDM props)  protected)
//!   task claimed)              volume_cut)
//!
//!  crash in …   recovery
//!  claim        probe: the server is in a snapshot task → on; else undone
//!  cut          probe: the whole cut exists → on; else undone (a partial
//!               cut is never finished at a later instant)
//!  any other    run again (idempotent)
//!  undo         snapshots and image deleted, the task cleared with a fault,
//!               the guest thawed; volumes QEMU already writes in new tops
//!               are moved to them (their data is there from the cut on)
//! ```

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::image::{Image, Visibility};
use domain::server::{Server, TaskState};
use domain::volume::{SnapshotStatus, Volume, VolumeAttachment, VolumeSnapshot};
use domain::{Error, ImageId, Result, ServerId, VolumeSnapshotId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::quiesce::{self, Quiesce};
use super::volume_cut::{CutMade, CutVolume};
use crate::saga::{Probe, Saga, SagaStep};
use crate::Cloud;

/// Image properties of the server's image that a snapshot does not copy.
const NOT_INHERITED: &[&str] = &[
    "image_type",
    "instance_uuid",
    "base_image_ref",
    "user_id",
    "owner_id",
    "block_device_mapping",
    "bdm_v2",
    "root_device_name",
    "size",
    "checksum",
    "image_id",
    "image_name",
];

/// How one volume was attached, for the image's mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Mapping {
    snapshot: VolumeSnapshotId,
    /// GiB.
    volume_size: u64,
    device: String,
    boot_index: Option<u32>,
    delete_on_termination: bool,
}

/// The `server-volume-image` saga's state.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct VolumeImage {
    server: ServerId,
    image: ImageId,
    /// The image record and the snapshots it owns, inserted by `claim`
    /// (which runs in the request: recovery probes it, never runs it again).
    #[serde(skip)]
    records: Option<(Image, Vec<VolumeSnapshot>)>,
    cut: Vec<CutVolume>,
    mappings: Vec<Mapping>,
    quiesce: Quiesce,
    /// The guest may be frozen: thaw it, whatever happens.
    quiesced: bool,
    claimed: bool,
    /// From the cut until the volumes' new locations are recorded: no
    /// other cut moves these volumes meanwhile (in this process).
    #[serde(skip)]
    cut_made: Option<CutMade>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Claim,
    Quiesce,
    Cut,
    Switch,
    Thaw,
    Publish,
    Seal,
    Release,
}

impl SagaStep for Step {
    const ALL: &'static [Step] = &[
        Step::Claim,
        Step::Quiesce,
        Step::Cut,
        Step::Switch,
        Step::Thaw,
        Step::Publish,
        Step::Seal,
        Step::Release,
    ];

    fn name(self) -> &'static str {
        match self {
            Step::Claim => "claim",
            Step::Quiesce => "quiesce",
            Step::Cut => "cut",
            Step::Switch => "switch",
            Step::Thaw => "thaw",
            Step::Publish => "publish",
            Step::Seal => "seal",
            Step::Release => "release",
        }
    }
}

#[async_trait]
impl Saga for VolumeImage {
    const KIND: &'static str = "server-volume-image";
    type Step = Step;

    fn describe(&self) -> String {
        format!(
            "of volume-backed server {} into image {}",
            self.server, self.image
        )
    }

    fn pool_names(&self) -> Vec<String> {
        self.cut
            .iter()
            .flat_map(|c| [c.old.clone(), c.frozen.clone(), c.new.clone()])
            .collect()
    }

    async fn run(&mut self, cloud: &Cloud, step: Step) -> Result<()> {
        match step {
            Step::Claim => {
                let (image, snapshots) = self
                    .records
                    .as_ref()
                    .ok_or_else(super::snapshot::lost_record)?;
                cloud.record_snapshot_image(image).await?;
                for snap in snapshots {
                    cloud.store.insert_volume_snapshot(snap).await?;
                    cloud.store.own_volume_snapshot(self.image, snap.id).await?;
                }
                cloud.claim_snapshot_task(self.server).await?;
                self.claimed = true;
            }
            Step::Quiesce => {
                let server = cloud.store.server(self.server).await?;
                self.quiesced = cloud.freeze_for_snapshot(&server, self.quiesce).await?;
            }
            Step::Cut => {
                cloud
                    .set_snapshot_task(self.server, TaskState::ImagePendingUpload, 30)
                    .await?;
                let server = cloud.store.server(self.server).await?;
                let made = cloud.cut_volumes(&server, &self.cut).await?;
                tracing::info!(server = %self.server, image = %self.image, volumes = self.cut.len(),
                    paused_ms = made.guest_pause.as_secs_f64() * 1000.0, "guest pause during the snapshot");
                self.cut_made = Some(made);
            }
            Step::Switch => {
                cloud.switch_cut_volumes(&self.cut).await?;
                for c in &self.cut {
                    cloud.make_snapshot_available(c).await?;
                }
                self.cut_made = None;
                cloud
                    .set_snapshot_task(self.server, TaskState::ImageUploading, 60)
                    .await?;
            }
            Step::Thaw => {
                cloud.thaw_if_frozen(self.server, &mut self.quiesced).await;
            }
            Step::Publish => {
                let mappings = &self.mappings;
                cloud
                    .activate_snapshot_image(self.image, |active| {
                        active.size = Some(0);
                        active.properties.insert(
                            "block_device_mapping".into(),
                            block_device_mapping(mappings),
                        );
                        active.properties.insert("bdm_v2".into(), "True".into());
                        active
                            .properties
                            .insert("root_device_name".into(), root_device_name(mappings));
                    })
                    .await?;
            }
            Step::Seal => {
                // After the image is active, off the request's path (rbd:
                // protection is a round trip to the lock owner per volume).
                let pool = cloud.volume_pool()?;
                let seals = self.cut.iter().map(|c| pool.seal_snapshot(&c.frozen));
                for sealed in futures_util::future::join_all(seals).await {
                    sealed?;
                }
            }
            Step::Release => cloud.clear_snapshot_task(self.server).await?,
        }
        Ok(())
    }

    async fn undo(&mut self, cloud: &Cloud, step: Step) -> Result<()> {
        match step {
            Step::Claim => {
                for c in &self.cut {
                    cloud.drop_snapshot_record(c.snapshot).await;
                }
                cloud.drop_snapshot_image(self.image).await?;
                if self.claimed {
                    cloud.clear_snapshot_task(self.server).await?;
                }
            }
            Step::Quiesce | Step::Thaw => {
                cloud.thaw_if_frozen(self.server, &mut self.quiesced).await;
            }
            Step::Cut => {
                // A cut that took has the volumes' data in their new tops
                // from then on: they move there, the snapshots still go.
                let server = cloud.store.server(self.server).await?;
                if cloud.volume_cut_happened(&server, &self.cut).await? {
                    cloud.switch_cut_volumes(&self.cut).await?;
                }
                self.cut_made = None;
            }
            Step::Switch | Step::Publish | Step::Seal | Step::Release => {}
        }
        Ok(())
    }

    async fn probe(&mut self, cloud: &Cloud, step: Step) -> Result<Probe> {
        Ok(match step {
            Step::Claim => {
                cloud
                    .probe_snapshot_claim(self.server, &mut self.claimed)
                    .await?
            }
            Step::Cut => {
                let server = cloud.store.server(self.server).await?;
                if cloud.volume_cut_happened(&server, &self.cut).await? {
                    Probe::Took
                } else {
                    Probe::NotTaken
                }
            }
            _ => Probe::Rerun,
        })
    }

    async fn before_recovery(&mut self, cloud: &Cloud) {
        if self.quiesced || self.quiesce != Quiesce::No {
            cloud.thaw_after_snapshot(self.server).await;
            self.quiesced = false;
        }
    }

    async fn finished(&mut self, _cloud: &Cloud) {
        tracing::info!(server = %self.server, image = %self.image, "server snapshot done");
    }

    async fn undone(&mut self, cloud: &Cloud, cause: Option<&Error>) {
        if let Some(cause) = cause {
            cloud
                .record_snapshot_fault(self.server, self.image, cause)
                .await;
        }
    }
}

impl Cloud {
    /// Whether `server` boots from a volume.
    pub(crate) async fn is_volume_backed(&self, server: &Server) -> Result<bool> {
        Ok(server.root_disk.is_none()
            && self
                .store
                .attachments_of_server(server.id)
                .await?
                .iter()
                .any(VolumeAttachment::is_root))
    }

    /// Starts the snapshot of a volume-backed server; returns the image
    /// (queued) once the server is claimed and its guest quiesced, the
    /// rest runs in the background.
    pub(super) async fn create_volume_backed_image(
        &self,
        caller: &Caller,
        server: Server,
        name: String,
        metadata: BTreeMap<String, String>,
    ) -> Result<Image> {
        caller.require(Role::Member, "snapshot servers")?;
        let volumes = self.server_volumes(&server).await?;
        let root = volumes
            .iter()
            .find(|(a, _)| a.is_root())
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::conflict("The server has no root volume."))?;
        let policy = quiesce::policy(Some(&root.image_metadata))?;
        let img = bdm_image(&server, &root, name, metadata);
        img.validate()?;
        let now = Utc::now();
        let mut snapshots = Vec::with_capacity(volumes.len());
        let mut planned = Vec::with_capacity(volumes.len());
        let mut mappings = Vec::with_capacity(volumes.len());
        for (attachment, volume) in &volumes {
            let location = volume.location.clone().ok_or_else(|| {
                Error::conflict(format!("Volume {} has no data to snapshot.", volume.id))
            })?;
            let snap = VolumeSnapshot {
                id: VolumeSnapshotId::new(),
                volume_id: volume.id,
                project_id: volume.project_id,
                user_id: caller.user_id,
                name: Some(format!(
                    "snapshot for {}",
                    img.name.as_deref().unwrap_or("")
                )),
                description: None,
                size: volume.size,
                status: SnapshotStatus::Creating,
                location: None,
                metadata: BTreeMap::new(),
                progress: None,
                created_at: now,
                updated_at: now,
            };
            planned.push((volume.id, snap.id, attachment.disk_id.clone(), location));
            mappings.push(Mapping {
                snapshot: snap.id,
                volume_size: volume.size,
                device: attachment.device.clone(),
                boot_index: attachment.boot_index,
                delete_on_termination: attachment.delete_on_termination,
            });
            snapshots.push(snap);
        }
        let mut saga = self
            .begin_saga(VolumeImage {
                server: server.id,
                image: img.id,
                records: Some((img.clone(), snapshots)),
                cut: self.plan_volume_cut(planned)?,
                mappings,
                quiesce: policy,
                quiesced: false,
                claimed: false,
                cut_made: None,
            })
            .await?;
        saga.run_through(Step::Quiesce).await?;
        saga.spawn();
        Ok(img)
    }

    /// The volumes of a cut go on from their new tops (compare and swap;
    /// moved already is fine).
    pub(crate) async fn switch_cut_volumes(&self, cut: &[CutVolume]) -> Result<()> {
        for c in cut {
            let volume = self.store.volume(c.volume).await?;
            if c.new != c.old && volume.location.as_deref() == Some(c.old.as_str()) {
                self.store
                    .move_volume_location(c.volume, &c.old, &c.new)
                    .await?;
            }
        }
        Ok(())
    }

    /// A cut's snapshot has its data: `available`.
    async fn make_snapshot_available(&self, c: &CutVolume) -> Result<()> {
        let snap = self.store.volume_snapshot(c.snapshot).await?;
        if snap.status == SnapshotStatus::Creating {
            self.store
                .set_volume_snapshot_status(
                    c.snapshot,
                    SnapshotStatus::Creating,
                    SnapshotStatus::Available,
                    Some(&c.frozen),
                )
                .await?;
        }
        Ok(())
    }

    /// A snapshot record that never became usable goes to `deleted`.
    async fn drop_snapshot_record(&self, id: VolumeSnapshotId) {
        let Ok(snap) = self.store.volume_snapshot(id).await else {
            return;
        };
        let mut status = snap.status;
        for next in [
            SnapshotStatus::Error,
            SnapshotStatus::Deleting,
            SnapshotStatus::Deleted,
        ] {
            if status.can_become(next)
                && self
                    .store
                    .set_volume_snapshot_status(id, status, next, None)
                    .await
                    .is_ok()
            {
                status = next;
            }
        }
    }
}

/// Nova's `block_device_mapping` image property: a JSON list of BDM v2
/// entries, root first.
fn block_device_mapping(mappings: &[Mapping]) -> String {
    let entries: Vec<Value> = mappings
        .iter()
        .map(|m| {
            json!({
                "source_type": "snapshot",
                "destination_type": "volume",
                "snapshot_id": m.snapshot.to_string(),
                "volume_id": null,
                "image_id": null,
                "volume_size": m.volume_size,
                "device_name": m.device,
                "boot_index": m.boot_index,
                "delete_on_termination": m.delete_on_termination,
                "disk_bus": "virtio",
                "device_type": "disk",
                "guest_format": null,
                "volume_type": null,
                "no_device": null,
                "tag": null,
            })
        })
        .collect();
    Value::Array(entries).to_string()
}

fn root_device_name(mappings: &[Mapping]) -> String {
    mappings
        .iter()
        .find(|m| m.boot_index == Some(0))
        .map_or_else(|| "/dev/vda".to_string(), |m| m.device.clone())
}

/// The empty image a snapshot of a volume-backed server gets: Nova's
/// snapshot properties, and those of the image the root volume was made
/// from (Cinder's `volume_image_metadata`).
fn bdm_image(
    server: &Server,
    root: &Volume,
    name: String,
    metadata: BTreeMap<String, String>,
) -> Image {
    let mut img = Image::new_queued(ImageId::new(), server.project_id, Utc::now());
    img.name = Some(name);
    img.visibility = Visibility::Private;
    let inherited = |k: &str| root.image_metadata.get(k).cloned();
    img.disk_format = inherited("disk_format").or_else(|| Some("raw".into()));
    img.container_format = inherited("container_format").or_else(|| Some("bare".into()));
    img.min_ram = inherited("min_ram")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    img.min_disk = root.size;
    for (k, v) in &root.image_metadata {
        let own_field = matches!(
            k.as_str(),
            "disk_format" | "container_format" | "min_ram" | "min_disk"
        );
        if !own_field && !NOT_INHERITED.contains(&k.as_str()) {
            img.properties.insert(k.clone(), v.clone());
        }
    }
    img.properties.extend(metadata);
    for (k, v) in [
        ("image_type", "snapshot".to_string()),
        ("instance_uuid", server.id.to_string()),
        ("user_id", server.user_id.to_string()),
        ("owner_id", server.project_id.to_string()),
        (
            "base_image_ref",
            server.image_id.map(|i| i.to_string()).unwrap_or_default(),
        ),
    ] {
        img.properties.insert(k.into(), v);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(device: &str, boot_index: Option<u32>) -> Mapping {
        Mapping {
            snapshot: VolumeSnapshotId::new(),
            volume_size: 2,
            device: device.into(),
            boot_index,
            delete_on_termination: boot_index.is_some(),
        }
    }

    #[test]
    fn block_device_mapping_when_two_volumes_then_nova_keys_root_first() {
        let mappings = [mapping("/dev/vda", Some(0)), mapping("/dev/vdb", None)];

        let parsed: Vec<Value> = serde_json::from_str(&block_device_mapping(&mappings)).unwrap();

        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0]["source_type"], "snapshot");
        assert_eq!(parsed[0]["destination_type"], "volume");
        assert_eq!(parsed[0]["snapshot_id"], mappings[0].snapshot.to_string());
        assert_eq!(parsed[0]["boot_index"], 0);
        assert_eq!(parsed[0]["volume_size"], 2);
        assert_eq!(parsed[1]["device_name"], "/dev/vdb");
        assert!(parsed[1]["boot_index"].is_null());
        assert_eq!(parsed[1]["delete_on_termination"], false);
    }

    #[test]
    fn root_device_name_when_root_is_vdc_then_vdc() {
        let mappings = [mapping("/dev/vdb", None), mapping("/dev/vdc", Some(0))];

        assert_eq!(root_device_name(&mappings), "/dev/vdc");
    }
}
