//! The `rbd` pool: image and disk data in Ceph RBD, through librbd (the
//! workspace's `rbd` crate).
//!
//! ```text
//! import_image   create images/<id> ── write the non-zero 4 MiB chunks ── snap `snap`
//!                ── protect  ⇒ rbd://<fsid>/images/<id>/snap
//!                (any failure: the half-made image is removed)
//! create_disk    clone images/<id>@snap → vms/<name> (O(1)) ── grow to the
//!                asked size  ⇒ rbd://<fsid>/vms/<name>
//! check_deletable / delete_image
//!                clones of images/<id>@snap exist? Conflict (409), nothing
//!                touched : unprotect, remove `snap`, remove the image
//! delete_disk    remove the disk's own snapshots (Conflict if one has
//!                clones), then the disk (waiting up to 45 s for the stale
//!                watch a killed QEMU leaves on it)
//! ```
//!
//! The pool stores raw data only ([`Pool::stored_format`] says so): a qcow2
//! image could not be cloned for QEMU's rbd driver, so the caller converts
//! uploads to raw before [`Pool::import_image`].
//!
//! Every librbd call blocks, so each runs on tokio's blocking pool. The
//! connection sets `rados_osd_op_timeout` and `rados_mon_op_timeout`: when
//! Ceph goes away, calls fail after that long with `Unavailable` ("Ceph is
//! unreachable: …", HTTP 503) instead of hanging a request forever.
//!
//! The pools must be Snapstack's own: start-up reconciliation deletes images
//! in them that no Snapstack record points to (as it does for the file pool).

mod errors;
mod import;
mod location;
mod points;
mod reader;
mod snapshots;
mod volumes;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::rbd::{CloneSource, Cluster, ConnectOptions, CreateOptions, IoCtx};
use async_trait::async_trait;
use domain::{Error, ImageId, Result};

use crate::file::is_safe_name;
use crate::{DiskSource, ImageReader, Pool};
use errors::{ceph_error, is_unreachable};
use location::RbdLocation;

/// The snapshot every image is read and cloned from (Glance's name).
pub const IMAGE_SNAPSHOT: &str = "snap";

/// Where the pool's data lives and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdConfig {
    /// The cluster's `ceph.conf` (monitors; the keyring, if auth is on, as
    /// `keyring = …` in it or at Ceph's default path).
    pub conf: PathBuf,
    /// The client id, without `client.` (`admin`).
    pub user: String,
    /// Images (uploads, snapshots made images).
    pub images_pool: String,
    /// Server disks (clones of images).
    pub vms_pool: String,
    /// Volumes (not used yet; checked to exist).
    pub volumes_pool: String,
    /// How long a call waits for the monitors or an OSD before it fails.
    pub op_timeout: Duration,
}

impl RbdConfig {
    /// `client.<user>` on the cluster of `conf`, pools `images`, `vms`,
    /// `volumes`, 10 s timeouts.
    pub fn new(conf: impl Into<PathBuf>, user: impl Into<String>) -> Self {
        Self {
            conf: conf.into(),
            user: user.into(),
            images_pool: "images".into(),
            vms_pool: "vms".into(),
            volumes_pool: "volumes".into(),
            op_timeout: Duration::from_secs(10),
        }
    }
}

/// The `rbd` pool: a connection and an I/O context per pool.
#[derive(Debug, Clone)]
pub struct RbdPool {
    images: IoCtx,
    vms: IoCtx,
    volumes: IoCtx,
    fsid: String,
    config: RbdConfig,
    /// Per image: reads share it, a flatten takes it alone. librbd returns
    /// wrong data (the grandparent's) to a reader of a clone's snapshot in
    /// the process that flattens that clone at the same time (seen on Ceph
    /// 16 with deep-flatten); readers in other processes are not affected.
    flattening: Arc<Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>>,
    _cluster: Cluster,
}

impl RbdPool {
    /// Connects and checks that the three pools exist and answer. Fails with
    /// `Unavailable` naming the configuration when the cluster cannot be
    /// reached within `op_timeout`.
    pub async fn connect(config: RbdConfig) -> Result<RbdPool> {
        blocking(move || Self::connect_blocking(config)).await
    }

    fn connect_blocking(config: RbdConfig) -> Result<RbdPool> {
        let seconds = config.op_timeout.as_secs().max(1).to_string();
        let options = ConnectOptions::new(&config.conf)
            .client_id(&config.user)
            .mount_timeout(config.op_timeout)
            .set("rados_osd_op_timeout", &seconds)
            .set("rados_mon_op_timeout", &seconds);
        let cluster = Cluster::connect_with(&options).map_err(|e| connect_error(&config, e))?;
        let fsid = cluster.fsid().map_err(|e| connect_error(&config, e))?;
        let io = |pool: &str| {
            cluster.io_ctx(pool).map_err(|e| match e.kind() {
                ::rbd::ErrorKind::NotFound => Error::invalid(format!(
                    "Ceph pool '{pool}' does not exist in the cluster of {}.",
                    config.conf.display()
                )),
                _ => connect_error(&config, e),
            })
        };
        let (images, vms, volumes) = (
            io(&config.images_pool)?,
            io(&config.vms_pool)?,
            io(&config.volumes_pool)?,
        );
        // An OSD round trip: a cluster whose monitors answer but whose OSDs
        // do not is as unusable as one that is down.
        images
            .list_images()
            .map_err(|e| connect_error(&config, e))?;
        Ok(RbdPool {
            images,
            vms,
            volumes,
            fsid,
            config,
            flattening: Arc::default(),
            _cluster: cluster,
        })
    }

    /// The cluster's fsid (the host part of every location).
    pub fn fsid(&self) -> &str {
        &self.fsid
    }

    /// How the pool was configured.
    pub fn config(&self) -> &RbdConfig {
        &self.config
    }

    /// The I/O context of the volumes pool (for the volume service to come).
    pub fn volumes(&self) -> &IoCtx {
        &self.volumes
    }

    /// Copies the image data of the disk at `location` into it and cuts its
    /// link to the image (O(size)); the image can be deleted afterwards.
    pub async fn flatten_disk(&self, location: &str) -> Result<()> {
        let disk = self.own(location, &self.vms, false)?;
        let vms = self.vms.clone();
        blocking(move || {
            let image = vms.open_image(&disk.image).map_err(ceph_error)?;
            image.flatten().map_err(ceph_error)?;
            image.close().map_err(ceph_error)
        })
        .await
    }

    /// The read/flatten lock of image `name` of the images pool.
    fn flatten_lock(&self, name: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut locks = self
            .flattening
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(name.to_string()).or_default().clone()
    }

    /// The I/O context of the pool named `name`, if it is one of ours.
    fn io_of(&self, name: &str) -> Option<&IoCtx> {
        [&self.images, &self.vms, &self.volumes]
            .into_iter()
            .find(|io| io.pool_name() == name)
    }

    fn location(&self, pool: &IoCtx, image: &str, snap: Option<&str>) -> String {
        RbdLocation {
            fsid: self.fsid.clone(),
            pool: pool.pool_name().to_string(),
            image: image.to_string(),
            snap: snap.map(str::to_string),
        }
        .to_string()
    }

    /// Parses `location`, refusing anything outside `pool` of this cluster,
    /// or with(out) a snapshot when `with_snap` says otherwise.
    fn own(&self, location: &str, pool: &IoCtx, with_snap: bool) -> Result<RbdLocation> {
        let parsed = RbdLocation::parse(location)?;
        if parsed.fsid != self.fsid {
            return Err(Error::internal(format!(
                "'{location}' belongs to another Ceph cluster (this one is {}).",
                self.fsid
            )));
        }
        if parsed.pool != pool.pool_name() || parsed.snap.is_some() != with_snap {
            return Err(Error::internal(format!(
                "'{location}' is not in the rbd pool's {} pool.",
                pool.pool_name()
            )));
        }
        Ok(parsed)
    }
}

fn connect_error(config: &RbdConfig, err: ::rbd::Error) -> Error {
    connect_error_message(config, &err).with_source(err)
}

fn connect_error_message(config: &RbdConfig, err: &::rbd::Error) -> Error {
    let conf = config.conf.display();
    let who = format!("client.{}", config.user);
    if is_unreachable(err) {
        return Error::unavailable(format!(
            "Ceph is unreachable: the cluster of {conf} did not answer {who} within {} s ({err}). Is it running?",
            config.op_timeout.as_secs()
        ));
    }
    match (err.op(), err.kind()) {
        ("rados_conf_read_file", _) => {
            Error::invalid(format!("Cannot read the Ceph configuration {conf}: {err}."))
        }
        _ => Error::unavailable(format!(
            "Cannot use the Ceph cluster of {conf} as {who}: {err}."
        )),
    }
}

/// Runs a blocking librbd job on tokio's blocking pool.
async fn blocking<T, F>(job: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| Error::internal(format!("A Ceph call did not complete: {e}")))?
}

/// Writes the raw file at `staged` into the new image `name`, then snapshots
/// and protects it. Removes whatever it made if any step fails.
fn import_blocking(images: &IoCtx, name: &str, staged: &Path) -> Result<()> {
    let mut file = std::fs::File::open(staged).map_err(|e| {
        Error::unavailable(format!(
            "Cannot open the staged image {}: {e}",
            staged.display()
        ))
    })?;
    let size = file
        .metadata()
        .map_err(|e| {
            Error::unavailable(format!(
                "Cannot stat the staged image {}: {e}",
                staged.display()
            ))
        })?
        .len();
    // The caller holds the image record in `saving`: an RBD image of this
    // name can only be what an interrupted earlier attempt left.
    remove_with_snapshots(images, name, Duration::ZERO)?;
    images
        .create_image(name, size, &CreateOptions::default())
        .map_err(ceph_error)?;
    let filled = (|| {
        let image = images.open_image(name).map_err(ceph_error)?;
        let copied = import::copy_sparse(&mut file, &image)?;
        image.create_snap(IMAGE_SNAPSHOT).map_err(ceph_error)?;
        image.protect_snap(IMAGE_SNAPSHOT).map_err(ceph_error)?;
        image.close().map_err(ceph_error)?;
        Ok(copied)
    })();
    match filled {
        Ok(copied) => {
            tracing::debug!(
                image = name,
                size,
                written = copied.written,
                "raw image imported into RBD"
            );
            Ok(())
        }
        Err(e) => {
            if let Err(cleanup) = remove_with_snapshots(images, name, Duration::ZERO) {
                tracing::warn!(image = name, error = %cleanup, "half-made RBD image left for reconciliation");
            }
            Err(e)
        }
    }
}

/// Fails with `Conflict` if snapshot `snap` of `image` has clones.
fn refuse_if_cloned(image: &::rbd::Image, snap: &str) -> Result<()> {
    let children = image.list_children(snap).map_err(ceph_error)?;
    if children.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = children
        .iter()
        .map(|c| format!("{}/{}", c.pool, c.image))
        .collect();
    let clones = match names.len() {
        1 => format!("a clone of it ({})", names[0]),
        n => format!("{n} clones of it ({})", names.join(", ")),
    };
    Err(in_use(&image.snap_spec_of(snap), &clones))
}

fn in_use(spec: &str, clones: &str) -> Error {
    Error::conflict(format!(
        "{spec} is in use by {clones}; delete the servers (or volumes) using it first."
    ))
}

/// How long removing a disk waits for the watch of a client that died
/// with the disk open (a killed QEMU): the OSDs drop it after
/// `osd_client_watch_timeout` (30 s by default); until then `rbd_remove`
/// answers "busy". Nova retries its removals for a minute for this reason.
const STALE_WATCH_WAIT: Duration = Duration::from_secs(45);

/// Removes image `name` of `io` and all its snapshots; absent is fine.
/// `Conflict` (nothing removed) if a snapshot has clones, or if the image is
/// still open elsewhere after waiting `watch_wait` for stale watches to go.
fn remove_with_snapshots(io: &IoCtx, name: &str, watch_wait: Duration) -> Result<()> {
    let image = match io.open_image(name) {
        Ok(image) => image,
        Err(e) if e.kind() == ::rbd::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ceph_error(e)),
    };
    let snaps = image.list_snaps().map_err(ceph_error)?;
    for snap in &snaps {
        if image.is_snap_protected(&snap.name).map_err(ceph_error)? {
            refuse_if_cloned(&image, &snap.name)?;
        }
    }
    for snap in &snaps {
        if image.is_snap_protected(&snap.name).map_err(ceph_error)? {
            // A clone made since the check above makes this Busy.
            image
                .unprotect_snap(&snap.name)
                .map_err(|e| match e.kind() {
                    ::rbd::ErrorKind::Busy => {
                        in_use(&image.snap_spec_of(&snap.name), "a clone made just now")
                    }
                    _ => ceph_error(e),
                })?;
        }
        image.remove_snap(&snap.name).map_err(ceph_error)?;
    }
    image.close().map_err(ceph_error)?;
    let deadline = std::time::Instant::now() + watch_wait;
    loop {
        match io.remove_image(name) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ::rbd::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if e.kind() == ::rbd::ErrorKind::Busy && std::time::Instant::now() < deadline =>
            {
                tracing::debug!(
                    image = name,
                    "still watched (a client that died?); retrying"
                );
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) if e.kind() == ::rbd::ErrorKind::Busy => {
                return Err(Error::conflict(format!(
                    "{}/{name} is open elsewhere (a running VM?); stop it first.",
                    io.pool_name()
                )))
            }
            Err(e) => return Err(ceph_error(e)),
        }
    }
}

/// `pool/image@snap` of an open image, for messages.
trait SnapSpec {
    fn snap_spec_of(&self, snap: &str) -> String;
}

impl RbdPool {
    /// The rbd pool's collection, deciding and deleting object by object
    /// (see [`Pool::plan_garbage`] on [`RbdPool`]); every deletion is
    /// logged with its reason.
    async fn collect_under_lock(&self, roots: &BTreeSet<String>) -> Result<Vec<String>> {
        let vms = self.vms.clone();
        let mut removed = blocking(move || snapshots::release_unused_disk_snaps(&vms)).await?;
        // A disk stays while a root (a restore point) names one of its snapshots.
        let roots = self.with_snapshot_disks(roots);
        // Removing an image can free the disk it was cloned from (and the
        // other way round): go again while a round removes something.
        for _ in 0..4 {
            let (pool, job_roots) = (self.clone(), roots.clone());
            let mut round = blocking(move || pool.release_unused_points(&job_roots)).await?;
            round.extend(crate::collect_unreferenced(self, &roots).await?);
            if round.is_empty() {
                break;
            }
            removed.extend(round);
        }
        for location in &removed {
            tracing::info!(pool = "rbd", %location, reason = "no record or open saga refers to it", "garbage deleted");
        }
        Ok(removed)
    }
}

impl SnapSpec for ::rbd::Image {
    fn snap_spec_of(&self, snap: &str) -> String {
        format!("{}/{}@{snap}", self.io_ctx().pool_name(), self.name())
    }
}

#[async_trait]
impl Pool for RbdPool {
    fn kind(&self) -> &'static str {
        "rbd"
    }

    fn stored_format<'a>(&self, _uploaded: &'a str) -> &'a str {
        "raw"
    }

    fn volumes(&self) -> Option<&dyn crate::volumes::VolumePool> {
        Some(self)
    }

    fn points(&self) -> Option<&dyn crate::points::PointPool> {
        Some(self)
    }

    async fn import_image(&self, id: ImageId, staged: &Path, format: &str) -> Result<String> {
        if format != "raw" {
            return Err(Error::internal(format!(
                "The rbd pool stores raw images only, not {format}: convert the upload first."
            )));
        }
        let name = id.to_string();
        let (images, job_name, job_staged) =
            (self.images.clone(), name.clone(), staged.to_path_buf());
        blocking(move || import_blocking(&images, &job_name, &job_staged)).await?;
        if let Err(e) = tokio::fs::remove_file(staged).await {
            tracing::warn!(path = %staged.display(), error = %e, "cannot remove the imported staging file");
        }
        Ok(self.location(&self.images, &name, Some(IMAGE_SNAPSHOT)))
    }

    async fn open_image(&self, location: &str, offset: u64) -> Result<ImageReader> {
        let source = self.own(location, &self.images, true)?;
        let reading = self.flatten_lock(&source.image).read_owned().await;
        let images = self.images.clone();
        let (image, size) = blocking(move || {
            let snap = source.snap.as_deref();
            let image = images
                .open_image_read_only(&source.image, snap)
                .map_err(ceph_error)?;
            let size = image.size().map_err(ceph_error)?;
            Ok((image, size))
        })
        .await?;
        let reader = reader::spawn(image, offset.min(size), size, reading);
        Ok(ImageReader {
            reader: Box::pin(reader),
            size,
        })
    }

    async fn check_deletable(&self, location: &str) -> Result<()> {
        let source = self.own(location, &self.images, true)?;
        let images = self.images.clone();
        blocking(move || {
            let image = match images.open_image(&source.image) {
                Ok(image) => image,
                Err(e) if e.kind() == ::rbd::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(ceph_error(e)),
            };
            for snap in image.list_snaps().map_err(ceph_error)? {
                refuse_if_cloned(&image, &snap.name)?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_image(&self, location: &str) -> Result<()> {
        let source = self.own(location, &self.images, true)?;
        let pool = self.clone();
        blocking(move || {
            // An image made from a disk (not flattened yet) releases the
            // disk's snapshot it was cloned from.
            let parent = snapshots::parent_of(&pool.images, &source.image)?;
            remove_with_snapshots(&pool.images, &source.image, Duration::ZERO)?;
            if let Some((parent_pool, disk, snap)) = parent {
                if let Some(io) = pool.io_of(&parent_pool) {
                    snapshots::release_disk_snap(io, &disk, &snap)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn image_locations(&self) -> Result<Vec<String>> {
        let images = self.images.clone();
        let names = blocking(move || images.list_images().map_err(ceph_error)).await?;
        Ok(names
            .iter()
            .filter(|name| {
                name.parse::<ImageId>()
                    .is_ok_and(|id| id.to_string() == **name)
            })
            .map(|name| self.location(&self.images, name, Some(IMAGE_SNAPSHOT)))
            .collect())
    }

    async fn create_disk(
        &self,
        name: &str,
        image_location: &str,
        image_format: &str,
        size: u64,
    ) -> Result<String> {
        if !is_safe_name(name) {
            return Err(Error::invalid(format!(
                "'{name}' is not a valid disk name."
            )));
        }
        if image_format != "raw" {
            return Err(Error::invalid(format!(
                "The rbd pool makes disks from raw images only; this image is {image_format}."
            )));
        }
        let source = self.own(image_location, &self.images, true)?;
        let (images, vms, disk) = (self.images.clone(), self.vms.clone(), name.to_string());
        blocking(move || {
            let snap = source.snap.as_deref().unwrap_or(IMAGE_SNAPSHOT);
            let from = CloneSource { pool: &images, image: &source.image, snapshot: snap };
            vms.clone_image(&disk, &from, &CreateOptions::default()).map_err(|e| match e.kind() {
                ::rbd::ErrorKind::Exists => Error::conflict(format!("Disk {}/{disk} already exists.", vms.pool_name())),
                _ => ceph_error(e),
            })?;
            let grown = (|| {
                let image = vms.open_image(&disk)?;
                if size > image.size()? {
                    image.resize(size)?;
                }
                image.close()
            })();
            if let Err(e) = grown {
                if let Err(cleanup) = vms.remove_image(&disk) {
                    tracing::warn!(disk = %disk, error = %cleanup, "half-made disk left for reconciliation");
                }
                return Err(ceph_error(e));
            }
            Ok(())
        })
        .await?;
        Ok(self.location(&self.vms, name, None))
    }

    fn disk_source(&self, location: &str) -> Result<DiskSource> {
        let disk = self.own(location, &self.vms, false)?;
        Ok(DiskSource::Rbd {
            pool: disk.pool,
            image: disk.image,
            conf: self.config.conf.clone(),
            user: self.config.user.clone(),
        })
    }

    async fn delete_disk(&self, location: &str) -> Result<()> {
        let disk = self.own(location, &self.vms, false)?;
        let vms = self.vms.clone();
        blocking(move || remove_with_snapshots(&vms, &disk.image, STALE_WATCH_WAIT)).await
    }

    async fn image_from_disk(&self, disk: &str, image: ImageId) -> Result<(String, u64)> {
        let source = self.own(disk, &self.vms, false)?;
        let (vms, images) = (self.vms.clone(), self.images.clone());
        let size = blocking(move || {
            snapshots::image_from_disk_blocking(&vms, &images, &source.image, image)
        })
        .await?;
        Ok((
            self.location(&self.images, &image.to_string(), Some(IMAGE_SNAPSHOT)),
            size,
        ))
    }

    async fn flatten_image(
        &self,
        location: &str,
        mut progress: Box<dyn FnMut(u8) + Send>,
    ) -> Result<bool> {
        let source = self.own(location, &self.images, true)?;
        let _alone = self.flatten_lock(&source.image).write_owned().await;
        let pool = self.clone();
        blocking(move || snapshots::flatten_image_blocking(&pool, &source.image, &mut *progress))
            .await
    }

    /// Decides *and deletes* under the caller's lock, returning what went
    /// as [`GarbageKind::Released`](crate::GarbageKind::Released): whether
    /// an RBD image or snapshot can go depends on its clone children and
    /// protection, which change as each one goes (removing an image frees
    /// the snapshot it was cloned from, a restore point's snapshot frees
    /// its disk); so the decision is made object by object, in rounds,
    /// against the cluster's state at that instant, and cannot be written
    /// down first and carried out later without re-deciding.
    async fn plan_garbage(&self, roots: &BTreeSet<String>) -> Result<Vec<crate::Garbage>> {
        Ok(self
            .collect_under_lock(roots)
            .await?
            .into_iter()
            .map(|location| crate::Garbage {
                location,
                what: crate::GarbageKind::Released,
                reason: "no record or open saga refers to it (released while deciding)".into(),
            })
            .collect())
    }

    async fn disk_locations(&self) -> Result<Vec<String>> {
        let vms = self.vms.clone();
        let names = blocking(move || vms.list_images().map_err(ceph_error)).await?;
        Ok(names
            .iter()
            .filter(|name| is_safe_name(name))
            .map(|name| self.location(&self.vms, name, None))
            .collect())
    }
}
