//! Images made from server disks, in O(1), and their later flatten.
//!
//! ```text
//! image_from_disk   vms/<disk> ── snap `image-<id>` ── protect
//!                   ── clone → images/<id> ── snap `snap` ── protect
//!                   ⇒ rbd://<fsid>/images/<id>/snap    (active at once; no copy)
//! flatten_image     images/<id>: copy what it still reads from vms/<disk>@image-<id>
//!                   (rbd_flatten_with_progress; its own snapshots too, deep-flatten)
//!                   ── release vms/<disk>@image-<id> once nothing is cloned from it
//! ```
//!
//! Every step checks what is already there first, so a call repeated after a
//! crash finishes what the first began instead of failing on it. Until the
//! flatten is done the disk keeps the snapshot the image reads through: the
//! disk cannot be removed (its removal is refused as `Conflict`, and the
//! garbage collection retries it later), but everything else works —
//! servers booted from the image are clones of `images/<id>@snap`, the
//! server goes on writing to its disk.
//!
//! A disk snapshot named `image-…` with no clone left is released wherever
//! it is noticed: after a flatten, after the image is deleted, and by the
//! pool's garbage collection (for a crash between the two).

use ::rbd::{CloneSource, CreateOptions, IoCtx};
use domain::{Error, ImageId, Result};

use super::errors::ceph_error;
use super::{RbdPool, IMAGE_SNAPSHOT};

/// Prefix of the disk snapshots images are cloned from.
pub(crate) const FOR_IMAGE_PREFIX: &str = "image-";

/// The name of the snapshot of a disk that image `id` is cloned from.
fn disk_snap_name(id: ImageId) -> String {
    format!("{FOR_IMAGE_PREFIX}{id}")
}

/// Snapshot `snap` of the open `image`, protected, made if missing.
fn ensure_protected_snap(image: &::rbd::Image, snap: &str) -> Result<()> {
    if !image.snap_exists(snap).map_err(ceph_error)? {
        image.create_snap(snap).map_err(ceph_error)?;
    }
    if !image.is_snap_protected(snap).map_err(ceph_error)? {
        image.protect_snap(snap).map_err(ceph_error)?;
    }
    Ok(())
}

/// Blocking body of [`RbdPool::image_from_disk`].
pub(crate) fn image_from_disk_blocking(
    vms: &IoCtx,
    images: &IoCtx,
    disk: &str,
    id: ImageId,
) -> Result<u64> {
    let snap = disk_snap_name(id);
    let name = id.to_string();
    let source = vms.open_image(disk).map_err(|e| match e.kind() {
        ::rbd::ErrorKind::NotFound => Error::conflict(format!(
            "The server's disk {}/{disk} is gone; nothing to snapshot.",
            vms.pool_name()
        )),
        _ => ceph_error(e),
    })?;
    // On a disk QEMU has open, librbd asks QEMU (the exclusive-lock owner)
    // to take the snapshot: its cache is flushed, in-flight writes are
    // ordered around it, the vCPUs never stop.
    ensure_protected_snap(&source, &snap)?;
    source.close().map_err(ceph_error)?;
    let from = CloneSource {
        pool: vms,
        image: disk,
        snapshot: &snap,
    };
    match images.clone_image(&name, &from, &CreateOptions::default()) {
        Ok(()) => {}
        Err(e) if e.kind() == ::rbd::ErrorKind::Exists => {
            check_cloned_from(images, &name, vms.pool_name(), disk, &snap)?
        }
        Err(e) => return Err(ceph_error(e)),
    }
    let image = images.open_image(&name).map_err(ceph_error)?;
    ensure_protected_snap(&image, IMAGE_SNAPSHOT)?;
    let size = image.size().map_err(ceph_error)?;
    image.close().map_err(ceph_error)?;
    Ok(size)
}

/// An image of this name already exists: fine only if a previous attempt
/// made it from the same snapshot (or it was flattened since).
fn check_cloned_from(images: &IoCtx, name: &str, pool: &str, disk: &str, snap: &str) -> Result<()> {
    let image = images.open_image(name).map_err(ceph_error)?;
    let parent = image.parent().map_err(ceph_error)?;
    image.close().map_err(ceph_error)?;
    match parent {
        Some(p) if p.image.pool == pool && p.image.image == disk && p.snapshot == snap => Ok(()),
        None => Ok(()),
        Some(p) => Err(Error::internal(format!(
            "{}/{name} exists and is a clone of {}/{}@{}, not of {pool}/{disk}@{snap}.",
            images.pool_name(),
            p.image.pool,
            p.image.image,
            p.snapshot
        ))),
    }
}

/// Blocking body of [`RbdPool::flatten_image`].
pub(crate) fn flatten_image_blocking(
    pool: &RbdPool,
    name: &str,
    progress: &mut (dyn FnMut(u8) + Send),
) -> Result<bool> {
    let image = match pool.images.open_image(name) {
        Ok(image) => image,
        Err(e) if e.kind() == ::rbd::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ceph_error(e)),
    };
    let Some(parent) = image.parent().map_err(ceph_error)? else {
        image.close().map_err(ceph_error)?;
        return Ok(false);
    };
    image
        .flatten_with_progress(|p| {
            let percent = (p.done * 100).checked_div(p.total).unwrap_or(100);
            progress(u8::try_from(percent.min(100)).unwrap_or(100));
        })
        .map_err(ceph_error)?;
    image.close().map_err(ceph_error)?;
    if let Some(io) = pool.io_of(&parent.image.pool) {
        release_disk_snap(io, &parent.image.image, &parent.snapshot)?;
    }
    Ok(true)
}

/// Removes `disk@snap` if it is a snapshot made for an image and no clone
/// of it is left; true if it went. Gone already is fine (false).
pub(crate) fn release_disk_snap(io: &IoCtx, disk: &str, snap: &str) -> Result<bool> {
    if !snap.starts_with(FOR_IMAGE_PREFIX) {
        return Ok(false);
    }
    let image = match io.open_image(disk) {
        Ok(image) => image,
        Err(e) if e.kind() == ::rbd::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ceph_error(e)),
    };
    let released = (|| {
        if !image.snap_exists(snap)? || !image.list_children(snap)?.is_empty() {
            return Ok(false);
        }
        if image.is_snap_protected(snap)? {
            match image.unprotect_snap(snap) {
                Ok(()) => {}
                // A clone made since the check: it is still needed.
                Err(e) if e.kind() == ::rbd::ErrorKind::Busy => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        image.remove_snap(snap)?;
        Ok(true)
    })()
    .map_err(ceph_error)?;
    image.close().map_err(ceph_error)?;
    if released {
        tracing::debug!(disk, snap, "disk snapshot released");
    }
    Ok(released)
}

/// Releases every `image-…` snapshot of every disk of `io` that nothing is
/// cloned from any more; returns their specs.
pub(crate) fn release_unused_disk_snaps(io: &IoCtx) -> Result<Vec<String>> {
    let mut released = Vec::new();
    for disk in io.list_images().map_err(ceph_error)? {
        let snaps = match io.open_image(&disk) {
            Ok(image) => {
                let snaps = image.list_snaps().map_err(ceph_error)?;
                image.close().map_err(ceph_error)?;
                snaps
            }
            Err(e) if e.kind() == ::rbd::ErrorKind::NotFound => continue,
            Err(e) => return Err(ceph_error(e)),
        };
        for snap in snaps {
            if release_disk_snap(io, &disk, &snap.name)? {
                released.push(format!("{}/{disk}@{}", io.pool_name(), snap.name));
            }
        }
    }
    Ok(released)
}

/// The parent (pool, image, snapshot) of image `name` of `io`, if any.
pub(crate) fn parent_of(io: &IoCtx, name: &str) -> Result<Option<(String, String, String)>> {
    let image = match io.open_image(name) {
        Ok(image) => image,
        Err(e) if e.kind() == ::rbd::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ceph_error(e)),
    };
    let parent = image.parent().map_err(ceph_error)?;
    image.close().map_err(ceph_error)?;
    Ok(parent.map(|p| (p.image.pool, p.image.image, p.snapshot)))
}
