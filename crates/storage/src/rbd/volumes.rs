//! Volumes on the `rbd` pool, in the cluster's `volumes` pool (Cinder's RBD
//! driver, without its synchronous copies).
//!
//! ```text
//! create         rbd create volumes/<name>
//! from image     clone images/<id>@snap → volumes/<name>           (O(1))
//! snapshot       snap create volumes/<name>@<snap> ── protect       (O(1))
//!                ⇒ rbd://<fsid>/volumes/<name>/<snap>
//! from snapshot  clone volumes/<name>@<snap> → volumes/<name2>     (O(1))
//! extend         resize;   flatten: rbd_flatten (O(size))
//! garbage        every volume image no root names goes (after its
//!                snapshots, refused while one has clones); every snapshot
//!                of a volume that no root names goes once it has no clones
//! ```
//! Clones are format 1 (protected snapshots) as the rest of the pool's.

use std::collections::BTreeSet;
use std::time::Duration;

use ::rbd::{CloneSource, CreateOptions, IoCtx};
use async_trait::async_trait;
use domain::{Error, Result};

use super::errors::ceph_error;
use super::{blocking, remove_with_snapshots, RbdPool, IMAGE_SNAPSHOT};
use crate::file::is_safe_name;
use crate::volumes::{FrozenVolume, VolumePool};
use crate::DiskSource;

/// How many rounds garbage collection makes: a volume removed in one round
/// can free the snapshot it was cloned from for the next.
const GC_ROUNDS: usize = 8;

/// Clone generations followed at most when measuring depth.
const MAX_WALK: usize = 64;

fn check_name(name: &str) -> Result<()> {
    if is_safe_name(name) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "'{name}' is not a valid volume name."
        )))
    }
}

/// Clones `from` into `volumes/<name>` (unless an earlier call did) and
/// grows it to `size` if bigger; removes the clone again if growing fails.
fn clone_and_grow(volumes: &IoCtx, name: &str, from: &CloneSource<'_>, size: u64) -> Result<()> {
    match volumes.clone_image(name, from, &CreateOptions::default()) {
        Ok(()) => {}
        // Made by an interrupted earlier call (names are unique per volume).
        Err(e) if e.kind() == ::rbd::ErrorKind::Exists => {}
        Err(e) => return Err(ceph_error(e)),
    }
    let grown = (|| {
        let image = volumes.open_image(name)?;
        if size > image.size()? {
            image.resize(size)?;
        }
        image.close()
    })();
    if let Err(e) = grown {
        if let Err(cleanup) = volumes.remove_image(name) {
            tracing::warn!(volume = name, error = %cleanup, "half-made volume left for garbage collection");
        }
        return Err(ceph_error(e));
    }
    Ok(())
}

/// Protects snapshot `snap` of `image` (clones of format 1 need it); a
/// protected one is left alone.
fn protect_if_needed(volumes: &IoCtx, image: &str, snap: &str) -> Result<()> {
    let image = volumes.open_image(image).map_err(ceph_error)?;
    if !image.is_snap_protected(snap).map_err(ceph_error)? {
        image.protect_snap(snap).map_err(ceph_error)?;
    }
    image.close().map_err(ceph_error)
}

impl RbdPool {
    /// One round of volume garbage collection; returns what went.
    fn collect_volumes_once(&self, roots: &BTreeSet<String>) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for name in self.volumes.list_images().map_err(ceph_error)? {
            if !is_safe_name(&name) {
                continue;
            }
            let location = self.location(&self.volumes, &name, None);
            if !roots.contains(&location) {
                match remove_with_snapshots(&self.volumes, &name, Duration::ZERO) {
                    Ok(()) => {
                        removed.push(location);
                        continue;
                    }
                    Err(e) if e.kind() == domain::ErrorKind::Conflict => {}
                    Err(e) => return Err(e),
                }
            }
            let image = match self.volumes.open_image(&name) {
                Ok(image) => image,
                Err(e) if e.kind() == ::rbd::ErrorKind::NotFound => continue,
                Err(e) => return Err(ceph_error(e)),
            };
            for snap in image.list_snaps().map_err(ceph_error)? {
                let snap_location = self.location(&self.volumes, &name, Some(&snap.name));
                if roots.contains(&snap_location)
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
                        // A clone made just now: keep it.
                        Err(e) if e.kind() == ::rbd::ErrorKind::Busy => continue,
                        Err(e) => return Err(ceph_error(e)),
                    }
                }
                image.remove_snap(&snap.name).map_err(ceph_error)?;
                removed.push(snap_location);
            }
            image.close().map_err(ceph_error)?;
        }
        Ok(removed)
    }

    /// The I/O context of one of the pool's Ceph pools, by name.
    fn volume_io(&self, pool: &str) -> Option<&IoCtx> {
        [&self.images, &self.vms, &self.volumes]
            .into_iter()
            .find(|io| io.pool_name() == pool)
    }
}

#[async_trait]
impl VolumePool for RbdPool {
    async fn create_volume(&self, name: &str, size: u64) -> Result<String> {
        check_name(name)?;
        let (volumes, job) = (self.volumes.clone(), name.to_string());
        blocking(move || {
            match volumes.create_image(&job, size, &CreateOptions::default()) {
                Ok(()) => Ok(()),
                // Made by an interrupted earlier call (names are unique per volume).
                Err(e) if e.kind() == ::rbd::ErrorKind::Exists => Ok(()),
                Err(e) => Err(ceph_error(e)),
            }
        })
        .await?;
        Ok(self.location(&self.volumes, name, None))
    }

    async fn volume_from_image(
        &self,
        name: &str,
        image_location: &str,
        image_format: &str,
        size: u64,
    ) -> Result<String> {
        check_name(name)?;
        if image_format != "raw" {
            return Err(Error::invalid(format!(
                "The rbd pool makes volumes from raw images only; this image is {image_format}."
            )));
        }
        let source = self.own(image_location, &self.images, true)?;
        let (images, volumes, job) = (self.images.clone(), self.volumes.clone(), name.to_string());
        blocking(move || {
            let snap = source.snap.as_deref().unwrap_or(IMAGE_SNAPSHOT);
            let from = CloneSource {
                pool: &images,
                image: &source.image,
                snapshot: snap,
            };
            clone_and_grow(&volumes, &job, &from, size)
        })
        .await?;
        Ok(self.location(&self.volumes, name, None))
    }

    fn planned_snapshot(
        &self,
        volume: &str,
        snap: &str,
    ) -> Result<(FrozenVolume, Option<std::path::PathBuf>)> {
        check_name(snap)?;
        let name = self.own(volume, &self.volumes, false)?.image;
        Ok((
            FrozenVolume {
                snapshot: self.location(&self.volumes, &name, Some(snap)),
                volume: volume.to_string(),
            },
            None,
        ))
    }

    async fn snapshot_volume(&self, volume: &str, snap: &str) -> Result<FrozenVolume> {
        check_name(snap)?;
        let name = self.own(volume, &self.volumes, false)?.image;
        let (volumes, job, image_name) = (self.volumes.clone(), snap.to_string(), name.clone());
        blocking(move || {
            let image = volumes.open_image(&image_name).map_err(ceph_error)?;
            // Repeated after a crash: finish what is there.
            if !image.snap_exists(&job).map_err(ceph_error)? {
                image.create_snap(&job).map_err(ceph_error)?;
            }
            if !image.is_snap_protected(&job).map_err(ceph_error)? {
                image.protect_snap(&job).map_err(ceph_error)?;
            }
            image.close().map_err(ceph_error)
        })
        .await?;
        Ok(FrozenVolume {
            snapshot: self.location(&self.volumes, &name, Some(snap)),
            volume: volume.to_string(),
        })
    }

    async fn seal_snapshot(&self, snapshot: &str) -> Result<()> {
        let parsed = self.own(snapshot, &self.volumes, true)?;
        let volumes = self.volumes.clone();
        blocking(move || {
            protect_if_needed(&volumes, &parsed.image, &parsed.snap.unwrap_or_default())
        })
        .await
    }

    async fn snapshot_exists(&self, snapshot: &str) -> Result<bool> {
        let parsed = self.own(snapshot, &self.volumes, true)?;
        let volumes = self.volumes.clone();
        blocking(move || {
            let snap = parsed.snap.unwrap_or_default();
            let image = match volumes.open_image(&parsed.image) {
                Ok(image) => image,
                Err(e) if e.kind() == ::rbd::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(ceph_error(e)),
            };
            let done = image.snap_exists(&snap).map_err(ceph_error)?
                && image.is_snap_protected(&snap).map_err(ceph_error)?;
            image.close().map_err(ceph_error)?;
            Ok(done)
        })
        .await
    }

    async fn volume_from_snapshot(&self, name: &str, snapshot: &str, size: u64) -> Result<String> {
        check_name(name)?;
        let source = self.own(snapshot, &self.volumes, true)?;
        let (volumes, job) = (self.volumes.clone(), name.to_string());
        blocking(move || {
            let snap = source.snap.unwrap_or_default();
            // A snapshot a hypervisor took is protected when sealed; a clone
            // made before that protects it here.
            protect_if_needed(&volumes, &source.image, &snap)?;
            let from = CloneSource {
                pool: &volumes,
                image: &source.image,
                snapshot: &snap,
            };
            clone_and_grow(&volumes, &job, &from, size)
        })
        .await?;
        Ok(self.location(&self.volumes, name, None))
    }

    async fn extend_volume(&self, volume: &str, size: u64) -> Result<()> {
        let parsed = self.own(volume, &self.volumes, false)?;
        let volumes = self.volumes.clone();
        blocking(move || {
            let image = volumes.open_image(&parsed.image).map_err(ceph_error)?;
            if size > image.size().map_err(ceph_error)? {
                image.resize(size).map_err(ceph_error)?;
            }
            image.close().map_err(ceph_error)
        })
        .await
    }

    async fn clone_depth(&self, volume: &str) -> Result<usize> {
        let parsed = self.own(volume, &self.volumes, false)?;
        let pool = self.clone();
        blocking(move || {
            let mut depth = 0;
            let mut current = pool.volumes.open_image(&parsed.image).map_err(ceph_error)?;
            while depth < MAX_WALK {
                let Some(parent) = current.parent().map_err(ceph_error)? else {
                    break;
                };
                current.close().map_err(ceph_error)?;
                depth += 1;
                let Some(io) = pool.volume_io(&parent.image.pool) else {
                    return Ok(depth);
                };
                current = io.open_image(&parent.image.image).map_err(ceph_error)?;
            }
            current.close().map_err(ceph_error)?;
            Ok(depth)
        })
        .await
    }

    async fn flatten_volume(&self, volume: &str) -> Result<()> {
        let parsed = self.own(volume, &self.volumes, false)?;
        let volumes = self.volumes.clone();
        blocking(move || {
            let image = volumes.open_image(&parsed.image).map_err(ceph_error)?;
            if image.parent().map_err(ceph_error)?.is_some() {
                image.flatten().map_err(ceph_error)?;
            }
            image.close().map_err(ceph_error)
        })
        .await
    }

    async fn volume_size(&self, volume: &str) -> Result<u64> {
        let parsed = self.own(volume, &self.volumes, false)?;
        let volumes = self.volumes.clone();
        blocking(move || {
            let image = volumes.open_image(&parsed.image).map_err(ceph_error)?;
            let size = image.size().map_err(ceph_error)?;
            image.close().map_err(ceph_error)?;
            Ok(size)
        })
        .await
    }

    fn volume_source(&self, location: &str) -> Result<DiskSource> {
        let parsed = self.own(location, &self.volumes, false)?;
        Ok(DiskSource::Rbd {
            pool: parsed.pool,
            image: parsed.image,
            conf: self.config.conf.clone(),
            user: self.config.user.clone(),
        })
    }

    /// Decides and deletes at once, under the caller's lock, for the
    /// reason given on the rbd pool's `plan_garbage`: an RBD image or
    /// snapshot can go only once its clones are gone, which each round
    /// changes. Returns what went as released.
    async fn plan_volume_garbage(&self, roots: &BTreeSet<String>) -> Result<Vec<crate::Garbage>> {
        let (pool, roots) = (self.clone(), roots.clone());
        blocking(move || {
            let mut removed = Vec::new();
            for _ in 0..GC_ROUNDS {
                let round = pool.collect_volumes_once(&roots)?;
                if round.is_empty() {
                    break;
                }
                removed.extend(round);
            }
            Ok(removed)
        })
        .await
        .map(|removed| {
            removed
                .into_iter()
                .map(|location| {
                    tracing::info!(pool = "rbd", %location, reason = "no record or open saga refers to it", "volume garbage deleted");
                    crate::Garbage {
                        location,
                        what: crate::GarbageKind::Released,
                        reason: "no record or open saga refers to it (released while deciding)".into(),
                    }
                })
                .collect()
        })
    }
}
