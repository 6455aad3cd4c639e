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
//! On the rbd pool the disk is snapshotted natively and the snapshot cloned
//! into the image (`Pool::image_from_disk`, O(1)); the clone is flattened
//! later, in the background.
//!
//! The saga (`server-image`, on the engine in [`crate::saga`]); the first
//! two steps run in the request, the rest in the background:
//!
//! ```text
//!  claim ──▶ quiesce ──▶ cut ──────────────▶ switch ─────────▶ thaw ──▶ publish ──▶ shorten ──▶ release
//!  (image     (guest      (file: new top       (server's          (guest    (image      (file: a     (task
//!   queued,    frozen if   over the disk, by    root_disk = the    thawed)   active at   chain past   cleared)
//!   task       the image   QEMU or qemu-img;    new top; rbd:                the frozen  the depth
//!   claimed)   asks)       rbd: snap + clone)   nothing)                     layer/clone) streamed)
//!
//!  crash in …   recovery
//!  claim        probe: the server is in a snapshot task → on; else undone
//!  quiesce      run again (the guest is thawed first, always)
//!  cut          file: probe — QEMU writes the new top, or it is a complete
//!               overlay → on; else undone (the half-made file is garbage);
//!               rbd: run again (image_from_disk finishes what it began)
//!  switch …     run again: every later step is idempotent
//!  undo         the image deleted, the task cleared with a fault, the guest
//!               thawed; a new top QEMU already writes stays the server's disk
//! ```
//! Server `task_state`: image_snapshot_pending → image_pending_upload →
//! image_uploading → None, as Nova.

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;
use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::image::{Image, Visibility};
use domain::server::{Server, ServerAction, TaskState};
use domain::{Error, ImageId, Result, ServerId};
use serde::{Deserialize, Serialize};

use super::hypervisor_error;
use super::quiesce::Quiesce;
use crate::saga::{Probe, Saga, SagaStep};
use crate::Cloud;

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

/// The `server-image` saga's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServerImage {
    server: ServerId,
    image: ImageId,
    /// The image record, inserted `queued` by `claim` (which runs in the
    /// request: recovery probes it, never runs it again).
    #[serde(skip)]
    record: Option<Image>,
    quiesce: Quiesce,
    /// The guest may be frozen: thaw it, whatever happens.
    quiesced: bool,
    claimed: bool,
    /// The server's disk when the saga began (file pool: the layer frozen
    /// into the image; rbd: the disk snapshotted).
    old_top: String,
    /// File pool: the new top's location and path, chosen before it exists.
    new_top: Option<(String, std::path::PathBuf)>,
    /// The image's data once made, and its virtual size.
    location: Option<String>,
    virtual_size: Option<u64>,
    started: SystemTime,
    /// The server's chain was streamed into its top: layers may be free.
    #[serde(default)]
    shortened: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Claim,
    Quiesce,
    Cut,
    Switch,
    Thaw,
    Publish,
    Shorten,
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
        Step::Shorten,
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
            Step::Shorten => "shorten",
            Step::Release => "release",
        }
    }
}

#[async_trait]
impl Saga for ServerImage {
    const KIND: &'static str = "server-image";
    type Step = Step;

    fn describe(&self) -> String {
        format!("of server {} into image {}", self.server, self.image)
    }

    fn pool_names(&self) -> Vec<String> {
        let mut names = vec![self.old_top.clone()];
        names.extend(self.new_top.iter().map(|(l, _)| l.clone()));
        names.extend(self.location.clone());
        names
    }

    /// `shorten` rewrites chains: no other step may move a layer meanwhile.
    fn exclusive(step: Step) -> bool {
        step == Step::Shorten
    }

    async fn run(&mut self, cloud: &Cloud, step: Step) -> Result<()> {
        match step {
            Step::Claim => {
                let record = self.record.as_ref().ok_or_else(lost_record)?;
                cloud.record_snapshot_image(record).await?;
                cloud.claim_snapshot_task(self.server).await?;
                self.claimed = true;
            }
            Step::Quiesce => {
                let server = cloud.store.server(self.server).await?;
                self.quiesced = cloud.freeze_for_snapshot(&server, self.quiesce).await?;
            }
            Step::Cut => self.cut(cloud).await?,
            Step::Switch => {
                if let Some((new_top, _)) = &self.new_top {
                    cloud
                        .switch_root_disk(self.server, &self.old_top, new_top)
                        .await?;
                }
            }
            Step::Thaw => {
                cloud.thaw_if_frozen(self.server, &mut self.quiesced).await;
            }
            Step::Publish => {
                let location = self
                    .location
                    .clone()
                    .ok_or_else(|| Error::internal("The snapshot saga lost its image's data."))?;
                let virtual_size = self.virtual_size;
                cloud
                    .activate_snapshot_image(self.image, |active| {
                        active.location = Some(location);
                        active.virtual_size = virtual_size;
                        if active.disk_format.as_deref() == Some("raw") {
                            // Streamed as stored: the download is the raw disk.
                            active.size = virtual_size;
                        }
                    })
                    .await?;
            }
            Step::Shorten => {
                // The image is active already: a failure here only leaves
                // the chain long (tried again after the next snapshot).
                if self.new_top.is_some() {
                    match cloud.shorten_chain(self.server).await {
                        Ok(shortened) => self.shortened = shortened,
                        Err(e) => {
                            tracing::warn!(server = %self.server, error = %e, "could not shorten the disk chain")
                        }
                    }
                }
            }
            Step::Release => cloud.clear_snapshot_task(self.server).await?,
        }
        Ok(())
    }

    async fn undo(&mut self, cloud: &Cloud, step: Step) -> Result<()> {
        match step {
            Step::Claim => {
                cloud.drop_snapshot_image(self.image).await?;
                if self.claimed {
                    cloud.clear_snapshot_task(self.server).await?;
                }
            }
            Step::Quiesce | Step::Thaw => {
                cloud.thaw_if_frozen(self.server, &mut self.quiesced).await;
            }
            // A new top QEMU already writes is the server's disk from now
            // on: recorded, even though the image is undone.
            Step::Cut | Step::Switch => {
                if let Some((new_top, _)) = &self.new_top {
                    if self.new_top_took(cloud).await {
                        cloud
                            .switch_root_disk(self.server, &self.old_top, new_top)
                            .await?;
                    }
                }
            }
            Step::Publish | Step::Shorten | Step::Release => {}
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
            Step::Cut if self.new_top.is_some() => {
                if self.new_top_took(cloud).await {
                    self.location = Some(self.old_top.clone());
                    self.virtual_size = layer_size(cloud, &self.old_top).await;
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
            // The service died while the guest may have been frozen.
            cloud.thaw_after_snapshot(self.server).await;
            self.quiesced = false;
        }
    }

    async fn finished(&mut self, cloud: &Cloud) {
        cloud.log_guest_pause(self).await;
        tracing::info!(server = %self.server, image = %self.image, "server snapshot done");
        if self.shortened {
            cloud.collect_garbage_quietly().await;
        }
        let (cloud, image, layered) = (cloud.clone(), self.image, self.new_top.is_some());
        tokio::spawn(async move {
            if !layered {
                cloud.flatten_snapshot_image(image).await;
            }
            cloud.hash_snapshot_image(image).await;
        });
    }

    async fn undone(&mut self, cloud: &Cloud, cause: Option<&Error>) {
        if let Some(cause) = cause {
            cloud
                .record_snapshot_fault(self.server, self.image, cause)
                .await;
        }
    }
}

impl ServerImage {
    /// The disk's content at this instant becomes the image's data.
    async fn cut(&mut self, cloud: &Cloud) -> Result<()> {
        let server = cloud
            .set_snapshot_task(self.server, TaskState::ImagePendingUpload, 30)
            .await?;
        match &self.new_top {
            Some((new_top, path)) => {
                if cloud.vm_is_live(&server).await {
                    cloud
                        .hypervisor
                        .snapshot_disk(&server.id.to_string(), ROOT_DISK_ID, path)
                        .await
                        .map_err(hypervisor_error)?;
                } else {
                    cloud.pool.create_overlay(&self.old_top, new_top).await?;
                }
                self.location = Some(self.old_top.clone());
                self.virtual_size = layer_size(cloud, &self.old_top).await;
            }
            None => {
                let (location, size) = cloud
                    .pool
                    .image_from_disk(&self.old_top, self.image)
                    .await?;
                self.location = Some(location);
                self.virtual_size = Some(size);
            }
        }
        cloud
            .set_snapshot_task(self.server, TaskState::ImageUploading, 50)
            .await?;
        Ok(())
    }

    /// Whether the new top is the disk QEMU writes, or (no QEMU) a complete
    /// overlay of the old top — the same content, so going on is safe.
    async fn new_top_took(&self, cloud: &Cloud) -> bool {
        let Some((new_top, path)) = &self.new_top else {
            return false;
        };
        if let Ok(active) = cloud
            .hypervisor
            .active_disk_file(&self.server.to_string(), ROOT_DISK_ID)
            .await
        {
            return &active == path;
        }
        cloud.pool.overlay_is_valid(new_top).await.unwrap_or(false)
    }
}

pub(super) fn lost_record() -> Error {
    Error::internal("A snapshot saga lost the records it was to insert.")
}

/// The virtual size of a file-pool layer, when it can be read.
async fn layer_size(cloud: &Cloud, layer: &str) -> Option<u64> {
    match cloud.pool.disk_source(layer) {
        Ok(storage::DiskSource::File { path, format }) => {
            storage::qemu_img::info_of_own(&path, &format)
                .await
                .ok()
                .map(|i| i.virtual_size)
        }
        _ => None,
    }
}

impl Cloud {
    /// Starts a snapshot of `server` into a new image; returns the image
    /// (queued) once the server is claimed (and its guest quiesced); the
    /// rest runs in the background.
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
        let old_top = server
            .root_disk
            .clone()
            .ok_or_else(|| Error::conflict("The server has no disk to snapshot."))?;
        let overlay_name = format!(
            "{}-{}",
            server.id,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let new_top = self.pool.new_overlay(&old_top, &overlay_name)?;
        let mut saga = self
            .begin_saga(ServerImage {
                server: server.id,
                image: img.id,
                record: Some(img.clone()),
                quiesce,
                quiesced: false,
                claimed: false,
                old_top,
                new_top,
                location: None,
                virtual_size: None,
                started: SystemTime::now(),
                shortened: false,
            })
            .await?;
        saga.run_through(Step::Quiesce).await?;
        saga.spawn();
        Ok(img)
    }

    /// Logs how long the guest's vCPUs were stopped while the snapshot ran
    /// (QMP STOP → RESUME): none, for a running guest.
    async fn log_guest_pause(&self, saga: &ServerImage) {
        if let Ok(spans) = self.hypervisor.pause_log(&saga.server.to_string()).await {
            let paused = hypervisor::paused_within(&spans, saga.started, SystemTime::now());
            tracing::info!(server = %saga.server, image = %saga.image,
                paused_ms = paused.as_secs_f64() * 1000.0, "guest pause during the snapshot");
        }
    }

    /// The server's disk moves from `old_top` to `new_top` (compare and
    /// swap; done already is fine).
    pub(super) async fn switch_root_disk(
        &self,
        id: ServerId,
        old_top: &str,
        new_top: &str,
    ) -> Result<()> {
        let server = self.store.server(id).await?;
        if server.root_disk.as_deref() == Some(new_top) {
            return Ok(());
        }
        if server.root_disk.as_deref() != Some(old_top) {
            return Err(Error::conflict(format!(
                "The disk of server {id} moved during the snapshot."
            )));
        }
        let mut next = server.clone();
        next.root_disk = Some(new_top.to_string());
        next.progress = 60;
        next.updated_at = Utc::now();
        self.store.update_server(&server, &next).await
    }

    /// Resumes the background work of active snapshot images (flatten,
    /// checksum) that a previous run left unfinished.
    pub(crate) async fn resume_snapshot_images(&self) -> Result<()> {
        for img in self
            .store
            .images_in_status(domain::image::ImageStatus::Active)
            .await?
        {
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
        Ok(())
    }
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
