//! Restore points on the `rbd` pool ([`PointPool`]): RBD snapshots of the
//! server disks in the `vms` pool, memory states as images beside them.
//!
//! ```text
//! point snapshot   vms/<disk>@rp-<point>       ⇒ rbd://<fsid>/vms/<disk>/rp-<point>
//!                  (taken by QEMU on a live disk; by librbd here otherwise)
//! memory state     vms/rp-<point>-mem          (written as vms/rp-<point>-mem.part,
//!                                               renamed when whole)
//! revert           protect vms/<disk>@rp-<point> ── clone → vms/<new disk>   (O(1))
//! garbage          a disk stays while a root names one of its snapshots; an
//!                  `rp-` snapshot no root names goes once it has no clones; a
//!                  memory state no root names goes as any unnamed disk does;
//!                  a `.part` state no writer holds goes
//! ```
//! Unlike `rbd snap rollback`, which copies the snapshot over the disk, a
//! revert never writes into a disk: the old disk keeps every other point's
//! snapshot, and clones stand on it until they are flattened or deleted.

use std::collections::BTreeSet;
use std::time::Duration;

use ::rbd::{CloneSource, CreateOptions};
use async_trait::async_trait;
use domain::{Error, Result};

use super::errors::ceph_error;
use super::location::RbdLocation;
use super::{blocking, remove_with_snapshots, RbdPool};
use crate::file::is_safe_name;
use crate::points::{PointPool, PointSnapshot};
use crate::{DiskSource, Pool};

/// Prefix of point snapshots and memory states.
const POINT_PREFIX: &str = "rp-";
/// Suffix of a memory state's image name.
const STATE_SUFFIX: &str = "-mem";
/// Suffix of a memory state still being written.
const PARTIAL_SUFFIX: &str = ".part";
/// Clone generations followed at most when measuring depth.
const MAX_WALK: usize = 64;

fn check_point(point: &str) -> Result<()> {
    if is_safe_name(point) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "'{point}' is not a valid point id."
        )))
    }
}

impl RbdPool {
    /// A snapshot location in the vms pool: (disk, snapshot).
    fn own_snapshot(&self, location: &str) -> Result<(String, String)> {
        let parsed = self.own(location, &self.vms, true)?;
        let snap = parsed.snap.unwrap_or_default();
        Ok((parsed.image, snap))
    }

    /// `roots` and the disk of every root that is a snapshot in the vms
    /// pool: a disk stays while a point (or anything) needs one of its
    /// snapshots.
    pub(super) fn with_snapshot_disks(&self, roots: &BTreeSet<String>) -> BTreeSet<String> {
        let mut all = roots.clone();
        for root in roots {
            if let Ok(parsed) = RbdLocation::parse(root) {
                if parsed.fsid == self.fsid
                    && parsed.pool == self.vms.pool_name()
                    && parsed.snap.is_some()
                {
                    all.insert(self.location(&self.vms, &parsed.image, None));
                }
            }
        }
        all
    }

    /// Releases every `rp-` snapshot of the vms pool that no root names and
    /// no clone depends on, and every partial memory state nobody writes.
    pub(super) fn release_unused_points(&self, roots: &BTreeSet<String>) -> Result<Vec<String>> {
        let vms = &self.vms;
        let mut released = Vec::new();
        for name in vms.list_images().map_err(ceph_error)? {
            if name.starts_with(POINT_PREFIX) && name.ends_with(PARTIAL_SUFFIX) {
                // Open by a writer (an `rbd import` still running): Conflict, kept.
                if remove_with_snapshots(vms, &name, Duration::ZERO).is_ok() {
                    released.push(format!("{}/{name}", vms.pool_name()));
                }
                continue;
            }
            let image = match vms.open_image(&name) {
                Ok(image) => image,
                Err(e) if e.kind() == ::rbd::ErrorKind::NotFound => continue,
                Err(e) => return Err(ceph_error(e)),
            };
            for snap in image.list_snaps().map_err(ceph_error)? {
                if !snap.name.starts_with(POINT_PREFIX) {
                    continue;
                }
                let location = self.location(vms, &name, Some(&snap.name));
                if roots.contains(&location)
                    || !image
                        .list_children(&snap.name)
                        .map_err(ceph_error)?
                        .is_empty()
                {
                    continue;
                }
                if image.is_snap_protected(&snap.name).map_err(ceph_error)? {
                    match image.unprotect_snap(&snap.name) {
                        Ok(()) => {}
                        // A clone made just now: still needed.
                        Err(e) if e.kind() == ::rbd::ErrorKind::Busy => continue,
                        Err(e) => return Err(ceph_error(e)),
                    }
                }
                image.remove_snap(&snap.name).map_err(ceph_error)?;
                released.push(location);
            }
            image.close().map_err(ceph_error)?;
        }
        Ok(released)
    }
}

#[async_trait]
impl PointPool for RbdPool {
    fn point_snapshot(&self, disk: &str, point: &str) -> Result<PointSnapshot> {
        check_point(point)?;
        let disk = self.own(disk, &self.vms, false)?;
        let name = format!("{POINT_PREFIX}{point}");
        Ok(PointSnapshot {
            location: self.location(&self.vms, &disk.image, Some(&name)),
            name,
        })
    }

    fn point_state(&self, point: &str) -> Result<String> {
        check_point(point)?;
        Ok(self.location(
            &self.vms,
            &format!("{POINT_PREFIX}{point}{STATE_SUFFIX}"),
            None,
        ))
    }

    fn state_source(&self, state: &str) -> Result<DiskSource> {
        self.disk_source(state)
    }

    async fn snapshot_exists(&self, snapshot: &str) -> Result<bool> {
        let (disk, snap) = self.own_snapshot(snapshot)?;
        let vms = self.vms.clone();
        blocking(move || {
            let image = match vms.open_image(&disk) {
                Ok(image) => image,
                Err(e) if e.kind() == ::rbd::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(ceph_error(e)),
            };
            let exists = image.snap_exists(&snap).map_err(ceph_error)?;
            image.close().map_err(ceph_error)?;
            Ok(exists)
        })
        .await
    }

    async fn state_exists(&self, state: &str) -> Result<bool> {
        let name = self.own(state, &self.vms, false)?.image;
        let vms = self.vms.clone();
        blocking(move || match vms.open_image_read_only(&name, None) {
            Ok(image) => image.close().map(|()| true).map_err(ceph_error),
            Err(e) if e.kind() == ::rbd::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ceph_error(e)),
        })
        .await
    }

    async fn snapshot_disk(&self, snapshot: &str) -> Result<()> {
        let (disk, snap) = self.own_snapshot(snapshot)?;
        let vms = self.vms.clone();
        blocking(move || {
            let image = vms.open_image(&disk).map_err(ceph_error)?;
            if !image.snap_exists(&snap).map_err(ceph_error)? {
                image.create_snap(&snap).map_err(ceph_error)?;
            }
            image.close().map_err(ceph_error)
        })
        .await
    }

    fn clone_location(&self, name: &str) -> Result<String> {
        if !is_safe_name(name) {
            return Err(Error::invalid(format!(
                "'{name}' is not a valid disk name."
            )));
        }
        Ok(self.location(&self.vms, name, None))
    }

    async fn clone_snapshot(&self, snapshot: &str, name: &str) -> Result<String> {
        let location = self.clone_location(name)?;
        let (disk, snap) = self.own_snapshot(snapshot)?;
        let (vms, new) = (self.vms.clone(), name.to_string());
        blocking(move || {
            let image = vms.open_image(&disk).map_err(ceph_error)?;
            if !image.snap_exists(&snap).map_err(ceph_error)? {
                return Err(Error::conflict(format!(
                    "{}/{disk}@{snap} is gone; the point cannot be reverted to.",
                    vms.pool_name()
                )));
            }
            if !image.is_snap_protected(&snap).map_err(ceph_error)? {
                image.protect_snap(&snap).map_err(ceph_error)?;
            }
            image.close().map_err(ceph_error)?;
            let from = CloneSource {
                pool: &vms,
                image: &disk,
                snapshot: &snap,
            };
            match vms.clone_image(&new, &from, &CreateOptions::default()) {
                Ok(()) => Ok(()),
                // Made by an interrupted earlier call (names are unique).
                Err(e) if e.kind() == ::rbd::ErrorKind::Exists => Ok(()),
                Err(e) => Err(ceph_error(e)),
            }
        })
        .await?;
        Ok(location)
    }

    async fn delete_state(&self, state: &str) -> Result<()> {
        let name = self.own(state, &self.vms, false)?.image;
        let vms = self.vms.clone();
        blocking(move || remove_with_snapshots(&vms, &name, Duration::ZERO)).await
    }

    async fn clone_depth(&self, disk: &str) -> Result<usize> {
        let disk = self.own(disk, &self.vms, false)?;
        let pool = self.clone();
        blocking(move || {
            let (mut io_name, mut name) = (disk.pool, disk.image);
            for depth in 0..MAX_WALK {
                let Some(io) = pool.io_of(&io_name) else {
                    return Ok(depth);
                };
                match super::snapshots::parent_of(io, &name)? {
                    Some((parent_pool, parent, _)) => (io_name, name) = (parent_pool, parent),
                    None => return Ok(depth),
                }
            }
            Ok(MAX_WALK)
        })
        .await
    }

    async fn flatten(&self, disk: &str) -> Result<()> {
        self.flatten_disk(disk).await
    }
}
