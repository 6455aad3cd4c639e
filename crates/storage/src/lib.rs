//! Storage pools: where image (and later disk) data lives.
//!
//! [`Pool`] is the one set of operations every backend offers (DESIGN.md §3);
//! the `file` pool keeps images as files under a directory, the [`rbd`] pool
//! keeps them in Ceph RBD (raw, cloned for disks), the in-memory
//! [`fake::FakePool`] serves the unit tests of the layers above. Pools never
//! touch the database: they take and return *locations*, opaque strings the
//! caller stores (`file:///…/images/<id>`).
//!
//! [`qemu_img`] runs `qemu-img` under CPU and address-space limits.

pub mod fake;
pub mod file;
mod file_volumes;
pub mod points;
pub mod qemu_img;
pub mod rbd;
pub mod space;
pub mod volumes;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use async_trait::async_trait;
use domain::{ImageId, Result};
use tokio::io::AsyncRead;

/// A stream of image bytes and how many there are in all.
pub struct ImageReader {
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    /// Size of the whole image in bytes (not of the range being read).
    pub size: u64,
}

impl std::fmt::Debug for ImageReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageReader")
            .field("size", &self.size)
            .finish()
    }
}

/// How a hypervisor opens a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// A local file in `format` (`qcow2` or `raw`).
    File { path: PathBuf, format: String },
    /// An RBD image, opened through librbd with `conf` as `client.<user>`.
    Rbd {
        pool: String,
        image: String,
        conf: PathBuf,
        user: String,
    },
}

/// The operations Snapstack needs from a storage backend.
#[async_trait]
pub trait Pool: Send + Sync + std::fmt::Debug {
    /// A short name for logs and errors (`file`, `rbd`, `fake`).
    fn kind(&self) -> &'static str;

    /// The format the pool keeps an upload in `uploaded` format (qemu-img's
    /// name) as. When it differs, the caller converts the upload to it before
    /// [`import_image`](Pool::import_image): the `rbd` pool keeps raw data
    /// only, so that disks are O(1) clones QEMU's rbd driver can open.
    fn stored_format<'a>(&self, uploaded: &'a str) -> &'a str {
        uploaded
    }

    /// Takes the verified file at `staged` (on the same host) as the data of
    /// image `id`, in `format` (`qcow2`, `raw`, …). The pool owns the data
    /// afterwards and `staged` is gone. Returns the image's location.
    async fn import_image(&self, id: ImageId, staged: &Path, format: &str) -> Result<String>;

    /// Reads an image's data from byte `offset` on.
    async fn open_image(&self, location: &str, offset: u64) -> Result<ImageReader>;

    /// Whether the image data at `location` could be deleted now: `Conflict`
    /// while disks still depend on it in a way the pool cannot undo (RBD
    /// clones of its snapshot), `Unavailable` if the backend cannot tell.
    /// Callers ask before they mark an image deleted, so a refusal leaves
    /// everything as it was. Data already gone is deletable.
    async fn check_deletable(&self, _location: &str) -> Result<()> {
        Ok(())
    }

    /// Removes an image's data. Removing what is already gone succeeds.
    async fn delete_image(&self, location: &str) -> Result<()>;

    /// Every image location the pool holds, to find orphans at start-up.
    async fn image_locations(&self) -> Result<Vec<String>>;

    /// Creates the disk `name` (a server's root disk, say) as an O(1)
    /// copy-on-write child of the image at `image_location`, whose data is in
    /// `image_format` (qemu-img's name), at least `size` bytes big (never
    /// smaller than the image). Returns the disk's location.
    async fn create_disk(
        &self,
        name: &str,
        image_location: &str,
        image_format: &str,
        size: u64,
    ) -> Result<String>;

    /// How a hypervisor opens the disk at `location`.
    fn disk_source(&self, location: &str) -> Result<DiskSource>;

    /// Removes a disk. Removing what is already gone succeeds.
    async fn delete_disk(&self, location: &str) -> Result<()>;

    /// Every disk location the pool holds, to find orphans at start-up.
    async fn disk_locations(&self) -> Result<Vec<String>>;

    /// Decides, without deleting anything, which images and disks no root
    /// (a location the database or an open saga refers to) needs, each
    /// with why. The caller holds the garbage-collection lock exclusively
    /// while this runs, so that no operation creates or starts referring
    /// to pool data meanwhile; [`delete_garbage`](Pool::delete_garbage)
    /// runs after the lock is released. That is sound because the list
    /// names only what existed and was unreferenced when decided, and
    /// nothing starts referring to unreferenced data afterwards (new data
    /// stands only on roots). A chain the pool cannot read fails the whole
    /// plan: never a reason to delete. The default lists every disk, then
    /// every image, that is not a root; pools whose data stands on other
    /// data (the file pool's backing chains) override it.
    async fn plan_garbage(&self, roots: &BTreeSet<String>) -> Result<Vec<Garbage>> {
        plan_unreferenced(self, roots).await
    }

    /// Deletes what [`plan_garbage`](Pool::plan_garbage) listed and returns
    /// what went; what the pool refuses to delete now (data still cloned, a
    /// disk still busy) stays for the next collection.
    async fn delete_garbage(&self, garbage: &[Garbage]) -> Result<Vec<String>> {
        delete_planned(self, garbage).await
    }

    /// [`plan_garbage`](Pool::plan_garbage) then
    /// [`delete_garbage`](Pool::delete_garbage) in one go (tests, tools).
    async fn collect_garbage(&self, roots: &BTreeSet<String>) -> Result<Vec<String>> {
        let garbage = self.plan_garbage(roots).await?;
        self.delete_garbage(&garbage).await
    }

    /// For pools that snapshot disks natively (rbd): makes the data of image
    /// `image` from the disk at `disk` as it is at this instant, in O(1) —
    /// a snapshot of the disk and a copy-on-write clone of it, readable and
    /// cloneable at once — and returns the image's location and size. A
    /// call repeated after an interruption finishes what the first began.
    /// Pools that layer instead ([`new_overlay`](Pool::new_overlay)) refuse.
    async fn image_from_disk(&self, disk: &str, _image: ImageId) -> Result<(String, u64)> {
        Err(domain::Error::internal(format!(
            "The {} pool cannot make an image of disk {disk} natively.",
            self.kind()
        )))
    }

    /// Makes the image at `location` independent of the disk it was made
    /// from by [`image_from_disk`](Pool::image_from_disk): copies the data
    /// it still shares (O(size), reporting 0–100 to `progress`), then
    /// releases what the disk kept for it. False when there was nothing to
    /// do. Interrupted, a new call goes on from where the last one was.
    async fn flatten_image(
        &self,
        _location: &str,
        _progress: Box<dyn FnMut(u8) + Send>,
    ) -> Result<bool> {
        Ok(false)
    }

    /// For a snapshot of the disk at `disk`: the location and file path of
    /// a new writable top named `name`, to be created as a qcow2 overlay of
    /// the disk (by the hypervisor for a live disk, else by
    /// [`create_overlay`](Pool::create_overlay)). `None` for pools that
    /// snapshot natively.
    fn new_overlay(&self, _disk: &str, _name: &str) -> Result<Option<(String, PathBuf)>> {
        Ok(None)
    }

    /// Creates the overlay at `target` (from [`new_overlay`](Pool::new_overlay))
    /// over the disk at `disk`, for a disk no hypervisor has open.
    async fn create_overlay(&self, disk: &str, _target: &str) -> Result<()> {
        Err(domain::Error::internal(format!(
            "The {} pool cannot layer disk {disk}.",
            self.kind()
        )))
    }

    /// Whether `location` is a valid, complete overlay (for crash recovery).
    async fn overlay_is_valid(&self, _location: &str) -> Result<bool> {
        Ok(false)
    }

    /// For a download: writes the full content of the image at `location`
    /// as `format` into `dest` and returns true when the data stands on other
    /// data (a layer of a backing chain); false when `open_image` can
    /// stream it as stored.
    async fn export_image(&self, _location: &str, _format: &str, _dest: &Path) -> Result<bool> {
        Ok(false)
    }

    /// For a download: what names the data [`export_image`](Pool::export_image)
    /// would write for `location` — the chain it stands on, top first — or
    /// `None` when `open_image` streams it as stored. Layers never change, so
    /// two exports with the same identity hold the same bytes.
    async fn export_identity(&self, _location: &str) -> Result<Option<String>> {
        Ok(None)
    }

    /// Whether the data at `location` (a disk or a layer) is there.
    async fn data_exists(&self, location: &str) -> Result<bool> {
        match self.disk_source(location)? {
            DiskSource::File { path, .. } => {
                Ok(tokio::fs::try_exists(&path).await.unwrap_or(false))
            }
            DiskSource::Rbd { .. } => Ok(true),
        }
    }

    /// The pool's volume operations ([`volumes::VolumePool`]), if it has any.
    fn volumes(&self) -> Option<&dyn volumes::VolumePool> {
        None
    }

    /// The file behind a location, for pools that keep data as qcow2
    /// layers (file); `None` elsewhere.
    fn layer_path(&self, _location: &str) -> Option<PathBuf> {
        None
    }

    /// For pools that keep data as qcow2 layers (file): every file of the
    /// pool with the backing file its header names (absolute), so that
    /// chains can be walked and shortened; `None` for other pools.
    async fn backing_graph(
        &self,
    ) -> Result<Option<std::collections::BTreeMap<PathBuf, Option<PathBuf>>>> {
        Ok(None)
    }

    /// The pool's restore-point operations ([`points::PointPool`]), for
    /// pools that snapshot disks natively; `None` for pools that layer.
    fn points(&self) -> Option<&dyn points::PointPool> {
        None
    }
}

/// What a garbage collection decided to delete, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbage {
    pub location: String,
    pub what: GarbageKind,
    /// Why it goes, for the log line of its deletion.
    pub reason: String,
}

/// How a [`Garbage`] entry is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GarbageKind {
    /// A disk (or volume data kept among the disks): `delete_disk`.
    Disk,
    /// Image data: `delete_image`.
    Image,
    /// Volume data of a pool that keeps volumes apart from disks.
    Volume,
    /// Released while deciding, by a pool whose decision cannot be
    /// separated from the deletion (see the rbd pool): nothing left to do.
    Released,
}

/// The default plan: every disk, then every image, that is not in `roots`.
pub async fn plan_unreferenced<P: Pool + ?Sized>(
    pool: &P,
    roots: &BTreeSet<String>,
) -> Result<Vec<Garbage>> {
    let mut garbage = Vec::new();
    for (what, locations) in [
        (GarbageKind::Disk, pool.disk_locations().await?),
        (GarbageKind::Image, pool.image_locations().await?),
    ] {
        garbage.extend(
            locations
                .into_iter()
                .filter(|l| !roots.contains(l))
                .map(|location| Garbage {
                    location,
                    what,
                    reason: "no record or open saga refers to it".into(),
                }),
        );
    }
    Ok(garbage)
}

/// The default deletion: disks with `delete_disk`, images with
/// `delete_image`; one that cannot go now (busy disk, cloned image) stays
/// for the next collection and does not stop the rest.
pub async fn delete_planned<P: Pool + ?Sized>(
    pool: &P,
    garbage: &[Garbage],
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for g in garbage {
        let deleted = match g.what {
            GarbageKind::Disk => pool.delete_disk(&g.location).await,
            GarbageKind::Image => pool.delete_image(&g.location).await,
            GarbageKind::Volume => Err(domain::Error::internal(format!(
                "The {} pool keeps no volume data apart from its disks.",
                pool.kind()
            ))),
            GarbageKind::Released => Ok(()),
        };
        match deleted {
            Ok(()) => {
                tracing::info!(pool = pool.kind(), location = %g.location, reason = %g.reason, "garbage deleted");
                removed.push(g.location.clone());
            }
            Err(e) if e.kind() == domain::ErrorKind::Conflict => {
                tracing::debug!(location = %g.location, "garbage still in use, kept for the next collection")
            }
            Err(e) => {
                tracing::warn!(location = %g.location, error = %e, "garbage kept for the next collection")
            }
        }
    }
    Ok(removed)
}

/// The default garbage collection: deletes every disk, then every image,
/// that is not in `roots`, disks first; what the pool refuses to delete now
/// (data still cloned, a disk still open) stays for the next collection.
pub async fn collect_unreferenced<P: Pool + ?Sized>(
    pool: &P,
    roots: &BTreeSet<String>,
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for disk in pool.disk_locations().await? {
        if !roots.contains(&disk) {
            // One disk that cannot go now (still busy) does not stop the rest.
            match pool.delete_disk(&disk).await {
                Ok(()) => removed.push(disk),
                Err(e) => {
                    tracing::warn!(%disk, error = %e, "garbage disk kept for the next collection")
                }
            }
        }
    }
    for image in pool.image_locations().await? {
        if !roots.contains(&image) {
            match pool.delete_image(&image).await {
                Ok(()) => removed.push(image),
                Err(e) if e.kind() == domain::ErrorKind::Conflict => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}
