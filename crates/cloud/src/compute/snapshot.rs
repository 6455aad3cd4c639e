//! `createImage`: a server's disk becomes an image in O(1), live, without
//! pausing the guest — and a crash at any point leaves nothing half-made.
//!
//! On the file pool a server's disk is a qcow2 *top* over a chain of
//! immutable layers ending at the image it booted from. A snapshot freezes
//! the top: QEMU's `blockdev-snapshot-sync` (or `qemu-img create -b` when no
//! QEMU runs) puts a new, empty top over it and the guest writes there from
//! then on; the frozen file *is* the new image's data, shared with the
//! server's chain. No byte is copied. Deleting the server or the image later
//! releases a layer only when nothing stands on it any more (the pool's
//! garbage collection follows the backing chains).
//!
//! The saga, each step recorded before it runs:
//!
//! ```text
//!  begun ──▶ overlay ──────────────▶ switched ───────────▶ published ──▶ done
//!  (image     (new top chosen,        (server.root_disk =    (image active,
//!   queued,    then created by QEMU    new top recorded)      location = frozen
//!   task       or qemu-img)                                   layer)
//!   claimed)
//!
//!  crash at begun:     undo  — image deleted, task cleared
//!  crash at overlay:   forward if the new top is in use / a valid overlay,
//!                      else undo (the half-made file is garbage)
//!  crash at switched:  forward — publish the image
//!  crash at published: forward — clear the task
//! ```
//! Server `task_state`: image_snapshot_pending → image_pending_upload →
//! image_uploading → None, as Nova.

use std::collections::BTreeMap;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::image::{Image, ImageStatus, Visibility};
use domain::server::{Server, ServerAction, TaskState};
use domain::{Error, ImageId, Result, ServerId};
use serde_json::{json, Value};
use store::SagaRecord;

use super::hypervisor_error;
use crate::fault::fault_point;
use crate::Cloud;

const KIND: &str = "server-image";
const ROOT_DISK_ID: &str = "root";

/// Properties of the server's image a snapshot does not inherit.
const NOT_INHERITED: &[&str] = &[
    "image_type",
    "instance_uuid",
    "base_image_ref",
    "user_id",
    "owner_id",
    "snapstack_uploaded_format",
    "snapstack_uploaded_checksum",
    "snapstack_uploaded_os_hash_value",
    "snapstack_uploaded_size",
];

#[derive(Debug, Clone)]
struct Saga {
    id: String,
    server: ServerId,
    image: ImageId,
    new_top: Option<String>,
    old_top: Option<String>,
    /// The guest may be frozen: thaw it, whatever happens.
    quiesced: bool,
}

impl Saga {
    fn data(&self) -> Value {
        json!({"server": self.server.to_string(), "image": self.image.to_string(),
               "new_top": self.new_top, "old_top": self.old_top, "quiesced": self.quiesced})
    }

    fn from_record(r: &SagaRecord) -> Result<Saga> {
        let field = |k: &str| r.data.get(k).and_then(Value::as_str).map(str::to_owned);
        let corrupt = || Error::internal(format!("Saga {} has corrupt data.", r.id));
        Ok(Saga {
            id: r.id.clone(),
            server: field("server").ok_or_else(corrupt)?.parse()?,
            image: field("image").ok_or_else(corrupt)?.parse()?,
            new_top: field("new_top"),
            old_top: field("old_top"),
            quiesced: r
                .data
                .get("quiesced")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

impl Cloud {
    /// Starts a snapshot of `server` into a new image; returns the image
    /// (queued) at once, the rest runs in the background.
    pub async fn create_server_image(
        &self,
        caller: &Caller,
        server_id: &str,
        name: String,
        metadata: BTreeMap<String, String>,
    ) -> Result<Image> {
        let server = self.server(caller, server_id).await?;
        caller.require(Role::Member, "snapshot servers")?;
        server.check_action(ServerAction::CreateImage)?;
        domain::identity::validate_name("image", &name)?;
        if self.is_volume_backed(&server).await? {
            return self
                .create_volume_backed_image(caller, server, name, metadata)
                .await;
        }
        let base = match server.image_id {
            Some(id) => self.store.image(id).await.ok(),
            None => None,
        };
        let quiesce = super::quiesce::policy(base.as_ref().map(|i| &i.properties))?;
        let img = snapshot_image(
            &server,
            base.as_ref(),
            name,
            metadata,
            self.pool.stored_format("qcow2"),
        );
        img.validate()?;

        let saga = Saga {
            id: uuid::Uuid::new_v4().to_string(),
            server: server.id,
            image: img.id,
            new_top: None,
            old_top: None,
            quiesced: quiesce != super::quiesce::Quiesce::No,
        };
        let record = SagaRecord {
            id: saga.id.clone(),
            kind: KIND.into(),
            step: "begun".into(),
            data: saga.data(),
            created_at: Utc::now(),
        };
        self.store.insert_saga(&record).await?;
        self.store.insert_image(&img).await?;
        let mut claimed = server.clone();
        claimed.task_state = Some(TaskState::ImageSnapshotPending);
        claimed.progress = 0;
        claimed.updated_at = Utc::now();
        if let Err(e) = self
            .store
            .update_server(&claimed, (server.vm_state, None))
            .await
        {
            self.undo_snapshot(&saga, None).await;
            return Err(e);
        }
        let mut saga = saga;
        match self.freeze_for_snapshot(&server, quiesce).await {
            Ok(frozen) => saga.quiesced = frozen,
            Err(e) => {
                self.undo_snapshot(&saga, None).await;
                return Err(e);
            }
        }
        fault_point("snapshot:begun");
        let cloud = self.clone();
        tokio::spawn(async move {
            let mut saga = saga;
            if let Err(e) = cloud.snapshot_forward(&mut saga, "begun").await {
                tracing::warn!(server = %saga.server, image = %saga.image, error = %e, "server snapshot failed; undoing");
                cloud.undo_snapshot(&saga, Some(&e)).await;
            }
        });
        Ok(img)
    }

    /// Runs the saga forward from `step`.
    async fn snapshot_forward(&self, saga: &mut Saga, step: &str) -> Result<()> {
        let started = std::time::SystemTime::now();
        match step {
            "begun" => {
                let server = self.store.server(saga.server).await?;
                let old_top = server
                    .root_disk
                    .clone()
                    .ok_or_else(|| Error::conflict("The server has no disk to snapshot."))?;
                let name = format!(
                    "{}-{}",
                    server.id,
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                saga.old_top = Some(old_top.clone());
                match self.pool.new_overlay(&old_top, &name)? {
                    Some((new_top, path)) => {
                        saga.new_top = Some(new_top);
                        self.freeze_top(saga, &server, &path).await?;
                        self.publish_layer(saga).await?;
                    }
                    None => {
                        self.store
                            .saga_step(&saga.id, "cloning", &saga.data())
                            .await?;
                        self.clone_into_image(saga).await?;
                    }
                }
            }
            "cloning" => self.clone_into_image(saga).await?,
            "switched" => self.publish_layer(saga).await?,
            _ => {}
        }
        if saga.quiesced {
            self.thaw_after_snapshot(saga.server).await;
        }
        if step == "begun" {
            self.log_guest_pause(saga, started).await;
        }
        if saga.new_top.is_some() {
            // The image is active already: a failure here only leaves the
            // chain long (it is tried again after the next snapshot).
            match self.shorten_chain(saga.server).await {
                Ok(true) => self.collect_garbage_quietly().await,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(server = %saga.server, error = %e, "could not shorten the disk chain")
                }
            }
        }
        self.finish_snapshot(saga).await
    }

    /// Logs how long the guest's vCPUs were stopped while the snapshot ran
    /// (QMP STOP → RESUME): none, for a running guest.
    async fn log_guest_pause(&self, saga: &Saga, from: std::time::SystemTime) {
        if let Ok(spans) = self.hypervisor.pause_log(&saga.server.to_string()).await {
            let paused = hypervisor::paused_within(&spans, from, std::time::SystemTime::now());
            tracing::info!(server = %saga.server, image = %saga.image,
                paused_ms = paused.as_secs_f64() * 1000.0, "guest pause during the snapshot");
        }
    }

    /// File pool: a new top goes over the disk (QEMU's
    /// `blockdev-snapshot-sync`, or `qemu-img` when no QEMU runs); the old
    /// top is frozen from then on.
    async fn freeze_top(&self, saga: &Saga, server: &Server, path: &std::path::Path) -> Result<()> {
        let (Some(old_top), Some(new_top)) = (&saga.old_top, &saga.new_top) else {
            return Err(Error::internal("The snapshot saga lost its layers."));
        };
        self.store
            .saga_step(&saga.id, "overlay", &saga.data())
            .await?;
        self.set_snapshot_task(saga.server, TaskState::ImagePendingUpload, 30)
            .await?;
        let _gc = self.gc_lock.read().await;
        if self.vm_is_live(server).await {
            self.hypervisor
                .snapshot_disk(&server.id.to_string(), ROOT_DISK_ID, path)
                .await
                .map_err(hypervisor_error)?;
        } else {
            self.pool.create_overlay(old_top, new_top).await?;
        }
        fault_point("snapshot:overlay");
        self.record_switch(saga).await
    }

    /// File pool: the frozen layer becomes the image's data.
    async fn publish_layer(&self, saga: &Saga) -> Result<()> {
        let layer = saga
            .old_top
            .clone()
            .ok_or_else(|| Error::internal("The snapshot saga lost its layer."))?;
        let virtual_size = match self.pool.disk_source(&layer) {
            Ok(storage::DiskSource::File { path, format }) => {
                storage::qemu_img::info_of_own(&path, &format)
                    .await
                    .ok()
                    .map(|i| i.virtual_size)
            }
            _ => None,
        };
        self.publish_snapshot(saga, layer, virtual_size).await?;
        let cloud = self.clone();
        let image = saga.image;
        tokio::spawn(async move { cloud.hash_snapshot_image(image).await });
        Ok(())
    }

    /// Pools that snapshot natively (rbd): a snapshot of the disk, cloned
    /// into the image, O(1); the clone is flattened later, in the background.
    async fn clone_into_image(&self, saga: &Saga) -> Result<()> {
        let disk = saga
            .old_top
            .clone()
            .ok_or_else(|| Error::internal("The snapshot saga lost its disk."))?;
        self.set_snapshot_task(saga.server, TaskState::ImageUploading, 50)
            .await?;
        // Held until the image record points at the clone, so that garbage
        // collection never sees the clone unreferenced.
        let _gc = self.gc_lock.read().await;
        let (location, size) = self.pool.image_from_disk(&disk, saga.image).await?;
        fault_point("snapshot:cloning");
        self.publish_snapshot(saga, location, Some(size)).await?;
        let cloud = self.clone();
        let image = saga.image;
        tokio::spawn(async move {
            cloud.flatten_snapshot_image(image).await;
            cloud.hash_snapshot_image(image).await;
        });
        Ok(())
    }

    pub(super) async fn vm_is_live(&self, server: &Server) -> bool {
        matches!(
            self.hypervisor.status(&server.id.to_string()).await,
            Ok(hypervisor::VmStatus::Running | hypervisor::VmStatus::Paused { .. })
        )
    }

    pub(super) async fn set_snapshot_task(
        &self,
        id: ServerId,
        task: TaskState,
        progress: u8,
    ) -> Result<Server> {
        let server = self.store.server(id).await?;
        let mut next = server.clone();
        next.task_state = Some(task);
        next.progress = progress;
        next.updated_at = Utc::now();
        self.store
            .update_server(&next, (server.vm_state, server.task_state))
            .await?;
        Ok(next)
    }

    /// The new top is in place: the server's disk is now the new top.
    async fn record_switch(&self, saga: &Saga) -> Result<()> {
        let server = self.store.server(saga.server).await?;
        let mut next = server.clone();
        next.root_disk = saga.new_top.clone();
        next.task_state = Some(TaskState::ImageUploading);
        next.progress = 60;
        next.updated_at = Utc::now();
        self.store
            .update_server(&next, (server.vm_state, server.task_state))
            .await?;
        self.store
            .saga_step(&saga.id, "switched", &saga.data())
            .await?;
        fault_point("snapshot:switched");
        Ok(())
    }

    /// The image's data is pinned at `location`: `active`.
    async fn publish_snapshot(
        &self,
        saga: &Saga,
        location: String,
        virtual_size: Option<u64>,
    ) -> Result<()> {
        self.activate_snapshot_image(saga.image, |active| {
            active.location = Some(location);
            active.virtual_size = virtual_size;
            if active.disk_format.as_deref() == Some("raw") {
                // Streamed as stored: the download is the raw disk, byte for byte.
                active.size = virtual_size;
            }
        })
        .await?;
        self.store
            .saga_step(&saga.id, "published", &saga.data())
            .await?;
        fault_point("snapshot:published");
        Ok(())
    }

    async fn finish_snapshot(&self, saga: &Saga) -> Result<()> {
        self.end_snapshot_saga(&saga.id, saga.server, saga.image)
            .await
    }

    /// A snapshot saga is done: the server's snapshot task cleared
    /// (progress 100), the saga closed.
    pub(super) async fn end_snapshot_saga(
        &self,
        saga_id: &str,
        server: ServerId,
        image: ImageId,
    ) -> Result<()> {
        let id = server;
        let server = self.store.server(id).await?;
        if server.task_state.is_some_and(is_snapshot_task) {
            let mut next = server.clone();
            next.task_state = None;
            next.progress = 100;
            next.updated_at = Utc::now();
            self.store
                .update_server(&next, (server.vm_state, server.task_state))
                .await?;
        }
        self.store.finish_saga(saga_id, "done").await?;
        tracing::info!(server = %id, %image, "server snapshot done");
        Ok(())
    }

    /// Undo: the guest thawed, the image gone, the task cleared, a half-made
    /// top left to the garbage collection.
    async fn undo_snapshot(&self, saga: &Saga, cause: Option<&Error>) {
        if saga.quiesced {
            self.thaw_after_snapshot(saga.server).await;
        }
        self.drop_snapshot_image(saga.image).await;
        self.clear_snapshot_task(saga.server, saga.image, cause)
            .await;
        let _ = self.store.finish_saga(&saga.id, "undone").await;
        self.collect_garbage_quietly().await;
    }

    /// A snapshot's image goes queued → saving → `active`, with `fill`
    /// setting what the snapshot made; an image active already is left.
    pub(super) async fn activate_snapshot_image(
        &self,
        image: ImageId,
        fill: impl FnOnce(&mut Image),
    ) -> Result<()> {
        let img = self.store.image(image).await?;
        if img.status == ImageStatus::Active {
            return Ok(());
        }
        let mut saving = img.clone();
        saving.status = img.status.transition(ImageStatus::Saving)?;
        saving.updated_at = Utc::now();
        self.store.update_image(&saving, img.status).await?;
        let mut active = saving;
        active.status = ImageStatus::Active;
        fill(&mut active);
        active.updated_at = Utc::now();
        self.store.update_image(&active, ImageStatus::Saving).await
    }

    /// An undone snapshot's image is `deleted` (best effort: start-up
    /// recovery tries again).
    pub(super) async fn drop_snapshot_image(&self, image: ImageId) {
        if let Ok(img) = self.store.image(image).await {
            if img.status != ImageStatus::Deleted {
                let mut gone = img.clone();
                gone.status = ImageStatus::Deleted;
                gone.updated_at = Utc::now();
                let _ = self.store.update_image(&gone, img.status).await;
            }
        }
    }

    /// Clears a failed snapshot's task, with a fault saying why.
    pub(super) async fn clear_snapshot_task(
        &self,
        server: ServerId,
        image: ImageId,
        cause: Option<&Error>,
    ) {
        let Ok(server) = self.store.server(server).await else {
            return;
        };
        if !server.task_state.is_some_and(is_snapshot_task) {
            return;
        }
        let mut next = server.clone();
        next.task_state = None;
        if let Some(e) = cause {
            let mut fault = super::lifecycle::fault(e);
            fault.message = format!("Snapshot into image {image} failed: {}", fault.message);
            next.fault = Some(fault);
        }
        next.updated_at = Utc::now();
        let _ = self
            .store
            .update_server(&next, (server.vm_state, server.task_state))
            .await;
    }

    /// Finishes or undoes every snapshot saga a previous run left open.
    pub(crate) async fn recover_snapshots(&self) -> Result<Vec<String>> {
        let mut repaired = Vec::new();
        for record in self
            .store
            .open_sagas()
            .await?
            .into_iter()
            .filter(|r| r.kind == KIND)
        {
            let mut saga = Saga::from_record(&record)?;
            let outcome = self.resume_snapshot(&mut saga, &record.step).await;
            let outcome = match outcome {
                Ok(o) => o.to_string(),
                Err(e) => {
                    self.undo_snapshot(&saga, None).await;
                    format!("undone after {e}")
                }
            };
            repaired.push(format!(
                "snapshot of server {} into image {} (at {}): {outcome}",
                saga.server, saga.image, record.step
            ));
        }
        for img in self.store.images_in_status(ImageStatus::Active).await? {
            if img
                .properties
                .get("image_type")
                .is_some_and(|t| t == "snapshot")
            {
                let cloud = self.clone();
                tokio::spawn(async move {
                    cloud.flatten_snapshot_image(img.id).await;
                    cloud.hash_snapshot_image(img.id).await;
                });
            }
        }
        Ok(repaired)
    }

    /// Takes an interrupted saga forward or back, by the step it reached.
    async fn resume_snapshot(&self, saga: &mut Saga, step: &str) -> Result<&'static str> {
        if saga.quiesced {
            // The service died while the guest may have been frozen.
            self.thaw_after_snapshot(saga.server).await;
        }
        match step {
            "overlay" if self.overlay_took(saga).await => {
                self.record_switch(saga).await?;
                self.snapshot_forward(saga, "switched").await?;
                Ok("finished")
            }
            "cloning" | "switched" | "published" => {
                self.snapshot_forward(saga, step).await?;
                Ok("finished")
            }
            _ => {
                self.undo_snapshot(saga, None).await;
                Ok("undone")
            }
        }
    }

    /// Whether the new top of an interrupted snapshot is in use or complete.
    async fn overlay_took(&self, saga: &Saga) -> bool {
        let Some(new_top) = &saga.new_top else {
            return false;
        };
        let Ok(server) = self.store.server(saga.server).await else {
            return false;
        };
        if let Ok(storage::DiskSource::File { path, .. }) = self.pool.disk_source(new_top) {
            if let Ok(active) = self
                .hypervisor
                .active_disk_file(&server.id.to_string(), ROOT_DISK_ID)
                .await
            {
                return active == path;
            }
        }
        // No live QEMU: a complete overlay of the old top has the same
        // content, so going forward is safe whether or not it was switched.
        self.pool.overlay_is_valid(new_top).await.unwrap_or(false)
    }
}

pub(super) fn is_snapshot_task(t: TaskState) -> bool {
    matches!(
        t,
        TaskState::ImageSnapshotPending | TaskState::ImagePendingUpload | TaskState::ImageUploading
    )
}

/// The image record a snapshot of `server` gets (Nova's snapshot metadata).
fn snapshot_image(
    server: &Server,
    base: Option<&Image>,
    name: String,
    metadata: BTreeMap<String, String>,
    format: &str,
) -> Image {
    let mut img = Image::new_queued(ImageId::new(), server.project_id, Utc::now());
    img.name = Some(name);
    img.visibility = Visibility::Private;
    img.disk_format = Some(format.to_string());
    img.container_format = Some("bare".into());
    img.min_ram = base.map_or(0, |b| b.min_ram);
    img.min_disk = server.flavor.disk.max(base.map_or(0, |b| b.min_disk));
    if let Some(base) = base {
        for (k, v) in &base.properties {
            if !NOT_INHERITED.contains(&k.as_str()) {
                img.properties.insert(k.clone(), v.clone());
            }
        }
    }
    img.properties.extend(metadata);
    img.properties
        .insert("image_type".into(), "snapshot".into());
    img.properties
        .insert("instance_uuid".into(), server.id.to_string());
    img.properties
        .insert("user_id".into(), server.user_id.to_string());
    img.properties
        .insert("owner_id".into(), server.project_id.to_string());
    img.properties.insert(
        "base_image_ref".into(),
        server.image_id.map(|i| i.to_string()).unwrap_or_default(),
    );
    img
}
