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
//! The saga, each step recorded before it runs:
//!
//! ```text
//!  begun ──────────▶ cut ─────────────────────▶ switched ───────▶ published ──▶ done
//!  (image queued,    (the cut of every volume    (volumes on their   (image active,
//!   snapshots         planned and recorded,       new tops; snapshots  size 0, BDM
//!   creating, task    then made at one instant:   available; guest     properties)
//!   claimed, guest    see volume_cut)             thawed)
//!   maybe frozen)
//!
//!  crash at begun:     undo — snapshots and image deleted, task cleared
//!  crash at cut:       the whole cut exists? forward : undo (a partial cut
//!                      is never finished at a later instant)
//!  crash at switched, published: forward
//!  guest thawed at every end, and at start-up when it may be frozen
//! ```

use std::collections::BTreeMap;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::image::{Image, Visibility};
use domain::server::{Server, TaskState};
use domain::volume::{SnapshotStatus, Volume, VolumeAttachment, VolumeSnapshot};
use domain::{Error, ImageId, Result, ServerId, VolumeSnapshotId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::SagaRecord;

use super::quiesce::{self, Quiesce};
use super::volume_cut::CutVolume;
use crate::fault::fault_point;
use crate::Cloud;

pub(super) const KIND: &str = "server-volume-image";

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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saga {
    #[serde(skip)]
    id: String,
    server: ServerId,
    image: ImageId,
    cut: Vec<CutVolume>,
    mappings: Vec<Mapping>,
    /// The guest may be frozen: thaw it, whatever happens.
    quiesced: bool,
}

impl Saga {
    fn data(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn from_record(r: &SagaRecord) -> Result<Saga> {
        let mut saga: Saga = serde_json::from_value(r.data.clone())
            .map_err(|e| Error::internal(format!("Saga {} has corrupt data: {e}", r.id)))?;
        saga.id = r.id.clone();
        Ok(saga)
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
    /// (queued) at once, the rest runs in the background.
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
        let mut saga = Saga {
            id: uuid::Uuid::new_v4().to_string(),
            server: server.id,
            image: img.id,
            cut: self.plan_volume_cut(planned)?,
            mappings,
            quiesced: policy != Quiesce::No,
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
        if let Err(e) = self.record_volume_image(&server, &img, &snapshots).await {
            self.undo_volume_image(&saga, None).await;
            return Err(e);
        }
        match self.freeze_for_snapshot(&server, policy).await {
            Ok(frozen) => saga.quiesced = frozen,
            Err(e) => {
                self.undo_volume_image(&saga, None).await;
                return Err(e);
            }
        }
        fault_point("volume-image:begun");
        let cloud = self.clone();
        tokio::spawn(async move {
            if let Err(e) = cloud.volume_image_forward(&saga, "begun").await {
                tracing::warn!(server = %saga.server, image = %saga.image, error = %e, "volume-backed snapshot failed; undoing");
                cloud.undo_volume_image(&saga, Some(&e)).await;
            }
        });
        Ok(img)
    }

    /// The image, its snapshots (owned by it) and the server's task.
    async fn record_volume_image(
        &self,
        server: &Server,
        img: &Image,
        snapshots: &[VolumeSnapshot],
    ) -> Result<()> {
        self.store.insert_image(img).await?;
        for snap in snapshots {
            self.store.insert_volume_snapshot(snap).await?;
            self.store.own_volume_snapshot(img.id, snap.id).await?;
        }
        let mut claimed = server.clone();
        claimed.task_state = Some(TaskState::ImageSnapshotPending);
        claimed.progress = 0;
        claimed.updated_at = Utc::now();
        self.store
            .update_server(&claimed, (server.vm_state, None))
            .await
    }

    /// Runs the saga forward from `step`.
    async fn volume_image_forward(&self, saga: &Saga, step: &str) -> Result<()> {
        let result = self.volume_image_steps(saga, step).await;
        if saga.quiesced {
            self.thaw_after_snapshot(saga.server).await;
        }
        result?;
        self.finish_volume_image(saga).await
    }

    async fn volume_image_steps(&self, saga: &Saga, step: &str) -> Result<()> {
        match step {
            "begun" => {
                self.store.saga_step(&saga.id, "cut", &saga.data()).await?;
                self.set_snapshot_task(saga.server, TaskState::ImagePendingUpload, 30)
                    .await?;
                let server = self.store.server(saga.server).await?;
                // Held until the volumes' new tops are recorded: until then
                // nothing makes them garbage-collection roots.
                let _gc = self.gc_lock.read().await;
                let made = self.cut_volumes(&server, &saga.cut).await?;
                tracing::info!(server = %saga.server, image = %saga.image, volumes = saga.cut.len(),
                    paused_ms = made.guest_pause.as_secs_f64() * 1000.0, "guest pause during the snapshot");
                fault_point("volume-image:cut");
                self.switch_volumes(saga).await?;
                drop(made);
                drop(_gc);
                self.publish_volume_image(saga).await
            }
            "switched" => self.publish_volume_image(saga).await,
            _ => Ok(()),
        }
    }

    /// The cut exists: the volumes go on from their new tops, the
    /// snapshots are available.
    async fn switch_volumes(&self, saga: &Saga) -> Result<()> {
        for c in &saga.cut {
            let volume = self.store.volume(c.volume).await?;
            if c.new != c.old && volume.location.as_deref() == Some(c.old.as_str()) {
                self.store
                    .move_volume_location(c.volume, &c.old, &c.new)
                    .await?;
            }
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
        }
        self.set_snapshot_task(saga.server, TaskState::ImageUploading, 60)
            .await?;
        self.store
            .saga_step(&saga.id, "switched", &saga.data())
            .await?;
        fault_point("volume-image:switched");
        Ok(())
    }

    /// The image goes `active`: size 0, the mapping in its properties.
    async fn publish_volume_image(&self, saga: &Saga) -> Result<()> {
        self.activate_snapshot_image(saga.image, |active| {
            active.size = Some(0);
            active.properties.insert(
                "block_device_mapping".into(),
                block_device_mapping(&saga.mappings),
            );
            active.properties.insert("bdm_v2".into(), "True".into());
            active
                .properties
                .insert("root_device_name".into(), root_device_name(&saga.mappings));
        })
        .await?;
        self.store
            .saga_step(&saga.id, "published", &saga.data())
            .await?;
        fault_point("volume-image:published");
        Ok(())
    }

    /// The snapshots sealed (file: read-only; rbd: protected — after the
    /// image is active, off the request's path), then the task cleared.
    async fn finish_volume_image(&self, saga: &Saga) -> Result<()> {
        let pool = self.volume_pool()?;
        let seals = saga.cut.iter().map(|c| pool.seal_snapshot(&c.frozen));
        for sealed in futures_util::future::join_all(seals).await {
            sealed?;
        }
        self.end_snapshot_saga(&saga.id, saga.server, saga.image)
            .await
    }

    /// Undo: the guest thawed; the snapshots and the image deleted (a
    /// partial cut's data is released by garbage collection); the task
    /// cleared with a fault when something failed.
    async fn undo_volume_image(&self, saga: &Saga, cause: Option<&Error>) {
        if saga.quiesced {
            self.thaw_after_snapshot(saga.server).await;
        }
        for c in &saga.cut {
            self.drop_snapshot_record(c.snapshot).await;
        }
        self.drop_snapshot_image(saga.image).await;
        self.clear_snapshot_task(saga.server, saga.image, cause)
            .await;
        let _ = self.store.finish_saga(&saga.id, "undone").await;
        self.collect_garbage_quietly().await;
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

    /// Finishes or undoes every volume-backed snapshot saga a previous run
    /// left open.
    pub(crate) async fn recover_volume_images(&self) -> Result<Vec<String>> {
        let mut repaired = Vec::new();
        for record in self
            .store
            .open_sagas()
            .await?
            .into_iter()
            .filter(|r| r.kind == KIND)
        {
            let saga = Saga::from_record(&record)?;
            let outcome = match self.resume_volume_image(&saga, &record.step).await {
                Ok(o) => o.to_string(),
                Err(e) => {
                    self.undo_volume_image(&saga, None).await;
                    format!("undone after {e}")
                }
            };
            repaired.push(format!(
                "snapshot of volume-backed server {} into image {} (at {}): {outcome}",
                saga.server, saga.image, record.step
            ));
        }
        Ok(repaired)
    }

    async fn resume_volume_image(&self, saga: &Saga, step: &str) -> Result<&'static str> {
        if saga.quiesced {
            self.thaw_after_snapshot(saga.server).await;
        }
        match step {
            "cut" => {
                let server = self.store.server(saga.server).await?;
                let _gc = self.gc_lock.read().await;
                if !self.volume_cut_happened(&server, &saga.cut).await? {
                    drop(_gc);
                    self.undo_volume_image(saga, None).await;
                    return Ok("undone");
                }
                self.switch_volumes(saga).await?;
                drop(_gc);
                self.volume_image_forward(saga, "switched").await?;
                Ok("finished")
            }
            "switched" | "published" => {
                self.volume_image_forward(saga, step).await?;
                Ok("finished")
            }
            _ => {
                self.undo_volume_image(saga, None).await;
                Ok("undone")
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
