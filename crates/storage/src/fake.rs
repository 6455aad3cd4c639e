//! An in-memory pool for fast tests of the layers above the drivers, that
//! behaves like the real pools wherever sagas and the garbage collector
//! depend on it. Same contract as the real pools: idempotent operations,
//! opaque locations, nothing deleted while something stands on it.
//!
//! Every piece of data is an *object* that remembers what it stands on (its
//! parent): a disk its image or the layer under it, a native snapshot its
//! disk, a clone its snapshot. Two modes, like the two real drivers:
//!
//! | | [`FakePool::new`] (layers, like `file`) | [`FakePool::native`] (like `rbd`) |
//! |---|---|---|
//! | snapshot of a disk | [`Pool::new_overlay`] names a new top over it, made by the hypervisor (live) or [`Pool::create_overlay`] | [`Pool::image_from_disk`]: a snapshot `disk@image-<id>` and a clone of it |
//! | image from snapshot | the frozen layer itself | the clone, flattened later ([`Pool::flatten_image`]) |
//! | restore points | — | [`Pool::points`] |
//! | volume snapshot | the volume's top frozen, a new top over it ([`FakeVolumes::layered`](crate::volumes::fake::FakeVolumes::layered)) | in place, `volume@snap` |
//!
//! A hypervisor creates files behind the pool's back (QEMU's
//! `blockdev-snapshot-sync` writes the new top): the fake hypervisor reports
//! them to [`FakePool::file_created`] (wire it with
//! `FakeHypervisor::on_file_created`), and a planned overlay then exists.
//!
//! Garbage collection marks from the roots along parents (the whole chain,
//! cycle-safe), over images, disks, snapshots and volumes alike, and
//! deletes the rest.
//!
//! ```text
//!   fake://<image>  ◀── fake-disk://<server disk> ◀── fake-disk://<new top>      (layers)
//!   fake://<image>  ◀── fake-disk://<disk> ◀── fake-disk://<disk>@image-<id> ◀── fake://<id>   (native)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use domain::{Error, ImageId, Result};

use crate::points::{PointPool, PointSnapshot};
use crate::volumes::VolumePool;
use crate::{DiskSource, Garbage, GarbageKind, ImageReader, Pool};

const IMAGE_SCHEME: &str = "fake://";
const DISK_SCHEME: &str = "fake-disk://";
const STATE_SCHEME: &str = "fake-state://";

/// What kind of data an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// Image data (an upload, or a clone made by `image_from_disk`).
    Image,
    /// A disk or a layer of a disk's chain.
    Disk,
    /// A native (rbd-like) snapshot of a disk.
    Snapshot,
    /// A restore point's memory state.
    State,
}

#[derive(Debug, Clone)]
struct Object {
    kind: ObjectKind,
    /// What it stands on.
    parent: Option<String>,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Objects {
    by_location: BTreeMap<String, Object>,
    /// Overlays named by `new_overlay` that no one made yet: path →
    /// (location, the disk it goes over).
    planned: BTreeMap<PathBuf, (String, String)>,
}

/// In-memory pool; see the module header.
#[derive(Debug, Default)]
pub struct FakePool {
    native: bool,
    objects: Mutex<Objects>,
    volumes: crate::volumes::fake::FakeVolumes,
}

impl FakePool {
    /// A pool that layers, as the `file` pool does (volumes too).
    pub fn new() -> Self {
        FakePool {
            volumes: crate::volumes::fake::FakeVolumes::layered(),
            ..Self::default()
        }
    }

    /// A pool that snapshots natively, as the `rbd` pool does (volumes too).
    pub fn native() -> Self {
        FakePool {
            native: true,
            ..Self::default()
        }
    }

    /// The volume operations (in memory too).
    pub fn fake_volumes(&self) -> &crate::volumes::fake::FakeVolumes {
        &self.volumes
    }

    /// The bytes stored at `location`, if any.
    pub fn data(&self, location: &str) -> Option<Vec<u8>> {
        self.lock()
            .by_location
            .get(location)
            .map(|o| o.data.clone())
    }

    /// Whether anything is stored at `location` (image, disk, snapshot,
    /// memory state, volume or volume snapshot).
    pub fn exists(&self, location: &str) -> bool {
        self.lock().by_location.contains_key(location) || self.volumes.exists(location)
    }

    /// Every location the pool holds, volumes included, with what it stands on.
    pub fn objects(&self) -> BTreeMap<String, Option<String>> {
        let mut all: BTreeMap<String, Option<String>> = self
            .lock()
            .by_location
            .iter()
            .map(|(l, o)| (l.clone(), o.parent.clone()))
            .collect();
        all.extend(self.volumes.parents());
        all
    }

    /// `location` and everything it stands on, down the whole chain (what
    /// the garbage collection keeps for it); a missing link ends the chain
    /// and is listed.
    pub fn chain(&self, location: &str) -> Vec<String> {
        let objects = self.objects();
        let mut chain = Vec::new();
        let mut next = Some(location.to_string());
        while let Some(at) = next.take() {
            if chain.contains(&at) {
                break;
            }
            next = objects.get(&at).cloned().flatten();
            chain.push(at);
        }
        chain
    }

    /// A hypervisor created the file at `path` (a new top of a live disk
    /// snapshot): a planned overlay there exists from now on.
    pub fn file_created(&self, path: &Path) {
        if self.volumes.file_created(path) {
            return;
        }
        let mut objects = self.lock();
        if let Some((location, backing)) = objects.planned.remove(path) {
            objects.by_location.entry(location).or_insert(Object {
                kind: ObjectKind::Disk,
                parent: Some(backing),
                data: Vec::new(),
            });
            return;
        }
        let location = path.to_string_lossy().to_string();
        // A native snapshot the hypervisor took: `<disk>@<name>`.
        if let Some((disk, _)) = location.rsplit_once('@') {
            if objects.by_location.contains_key(disk) {
                let parent = Some(disk.to_string());
                objects.by_location.entry(location).or_insert(Object {
                    kind: ObjectKind::Snapshot,
                    parent,
                    data: Vec::new(),
                });
            }
            return;
        }
        // A memory state of a native point (its location is its path).
        if location.starts_with(STATE_SCHEME) {
            objects.by_location.entry(location).or_insert(Object {
                kind: ObjectKind::State,
                parent: None,
                data: Vec::new(),
            });
        }
    }

    fn lock(&self) -> MutexGuard<'_, Objects> {
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn insert(&self, location: &str, object: Object) {
        self.lock()
            .by_location
            .entry(location.to_string())
            .or_insert(object);
    }

    fn require(&self, location: &str, what: &str) -> Result<Object> {
        self.lock()
            .by_location
            .get(location)
            .cloned()
            .ok_or_else(|| Error::not_found(what, location))
    }

    /// Removes `location` unless something stands on it (volumes too).
    fn remove(&self, location: &str) -> Result<()> {
        let dependants = self.dependants(location);
        if !dependants.is_empty() {
            return Err(Error::conflict(format!(
                "{location} cannot be deleted: {} stand on it.",
                dependants.join(", ")
            )));
        }
        self.lock().by_location.remove(location);
        Ok(())
    }

    fn dependants(&self, location: &str) -> Vec<String> {
        self.objects()
            .into_iter()
            .filter(|(_, parent)| parent.as_deref() == Some(location))
            .map(|(l, _)| l)
            .collect()
    }

    fn locations_of(&self, kinds: &[ObjectKind]) -> Vec<String> {
        self.lock()
            .by_location
            .iter()
            .filter(|(_, o)| kinds.contains(&o.kind))
            .map(|(l, _)| l.clone())
            .collect()
    }

    /// The bytes an object reads: its own, else its parents'.
    fn content(&self, location: &str) -> Option<Vec<u8>> {
        let objects = self.lock();
        let mut at = location.to_string();
        for _ in 0..=objects.by_location.len() {
            let object = objects.by_location.get(&at)?;
            if !object.data.is_empty() || object.parent.is_none() {
                return Some(object.data.clone());
            }
            at = object.parent.clone()?;
        }
        None
    }

    fn depth(&self, location: &str) -> usize {
        self.chain(location).len().saturating_sub(1)
    }
}

fn disk_location(name: &str) -> String {
    format!("{DISK_SCHEME}{name}")
}

#[async_trait]
impl Pool for FakePool {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn import_image(&self, id: ImageId, staged: &Path, _format: &str) -> Result<String> {
        let data = tokio::fs::read(staged)
            .await
            .map_err(|e| Error::unavailable(format!("Cannot read {}: {e}", staged.display())))?;
        let _ = tokio::fs::remove_file(staged).await;
        let location = format!("{IMAGE_SCHEME}{id}");
        self.lock().by_location.insert(
            location.clone(),
            Object {
                kind: ObjectKind::Image,
                parent: None,
                data,
            },
        );
        Ok(location)
    }

    async fn open_image(&self, location: &str, offset: u64) -> Result<ImageReader> {
        let data = self
            .content(location)
            .ok_or_else(|| Error::not_found("image data", location))?;
        let size = data.len() as u64;
        let tail = data.get(offset as usize..).unwrap_or_default().to_vec();
        Ok(ImageReader {
            reader: Box::pin(std::io::Cursor::new(tail)),
            size,
        })
    }

    async fn check_deletable(&self, location: &str) -> Result<()> {
        if self.native && !self.dependants(location).is_empty() {
            return Err(Error::conflict(format!(
                "Image data {location} still has clones."
            )));
        }
        Ok(())
    }

    async fn delete_image(&self, location: &str) -> Result<()> {
        self.remove(location)
    }

    async fn image_locations(&self) -> Result<Vec<String>> {
        Ok(self.locations_of(&[ObjectKind::Image]))
    }

    async fn create_disk(
        &self,
        name: &str,
        image_location: &str,
        _format: &str,
        _size: u64,
    ) -> Result<String> {
        self.require(image_location, "image data")?;
        let location = disk_location(name);
        self.insert(
            &location,
            Object {
                kind: ObjectKind::Disk,
                parent: Some(image_location.to_string()),
                data: Vec::new(),
            },
        );
        Ok(location)
    }

    async fn data_exists(&self, location: &str) -> Result<bool> {
        Ok(self.exists(location))
    }

    fn disk_source(&self, location: &str) -> Result<DiskSource> {
        Ok(DiskSource::File {
            path: location.into(),
            format: if self.native { "raw" } else { "qcow2" }.into(),
        })
    }

    async fn delete_disk(&self, location: &str) -> Result<()> {
        self.remove(location)
    }

    /// Marks as the real pools do: every root and whole chains under it
    /// (across the pool's objects and its volumes); the pool's own objects
    /// left unmarked are garbage.
    async fn plan_garbage(&self, roots: &BTreeSet<String>) -> Result<Vec<Garbage>> {
        let objects = self.objects();
        let mut marked = BTreeSet::new();
        for root in roots {
            let mut next = Some(root.clone());
            while let Some(at) = next.take() {
                if !objects.contains_key(&at) || !marked.insert(at.clone()) {
                    break;
                }
                next = objects.get(&at).cloned().flatten();
            }
        }
        let own = self.lock();
        Ok(own
            .by_location
            .iter()
            .filter(|(l, _)| !marked.contains(*l))
            .map(|(location, object)| Garbage {
                location: location.clone(),
                what: if object.kind == ObjectKind::Disk {
                    GarbageKind::Disk
                } else {
                    GarbageKind::Image
                },
                reason: "no root stands on it".into(),
            })
            .collect())
    }

    async fn delete_garbage(&self, garbage: &[Garbage]) -> Result<Vec<String>> {
        let mut own = self.lock();
        Ok(garbage
            .iter()
            .filter(|g| own.by_location.remove(&g.location).is_some())
            .map(|g| g.location.clone())
            .collect())
    }

    async fn disk_locations(&self) -> Result<Vec<String>> {
        Ok(self.locations_of(&[ObjectKind::Disk]))
    }

    async fn image_from_disk(&self, disk: &str, image: ImageId) -> Result<(String, u64)> {
        if !self.native {
            return Err(Error::internal(format!(
                "The layered fake pool cannot make an image of disk {disk} natively."
            )));
        }
        self.require(disk, "disk")?;
        let snapshot = format!("{disk}@image-{image}");
        self.insert(
            &snapshot,
            Object {
                kind: ObjectKind::Snapshot,
                parent: Some(disk.to_string()),
                data: Vec::new(),
            },
        );
        let location = format!("{IMAGE_SCHEME}{image}");
        self.insert(
            &location,
            Object {
                kind: ObjectKind::Image,
                parent: Some(snapshot),
                data: Vec::new(),
            },
        );
        let size = self.content(&location).map_or(0, |d| d.len() as u64);
        Ok((location, size))
    }

    async fn flatten_image(
        &self,
        location: &str,
        mut progress: Box<dyn FnMut(u8) + Send>,
    ) -> Result<bool> {
        let data = self
            .content(location)
            .ok_or_else(|| Error::not_found("image data", location))?;
        let mut objects = self.lock();
        let object = objects
            .by_location
            .get_mut(location)
            .ok_or_else(|| Error::not_found("image data", location))?;
        if object.parent.is_none() {
            return Ok(false);
        }
        object.data = data;
        object.parent = None;
        progress(100);
        Ok(true)
    }

    fn new_overlay(&self, disk: &str, name: &str) -> Result<Option<(String, PathBuf)>> {
        if self.native {
            return Ok(None);
        }
        let location = disk_location(name);
        let path = PathBuf::from(&location);
        self.lock()
            .planned
            .insert(path.clone(), (location.clone(), disk.to_string()));
        Ok(Some((location, path)))
    }

    async fn create_overlay(&self, disk: &str, target: &str) -> Result<()> {
        if self.native {
            return Err(Error::internal(format!(
                "The native fake pool cannot layer disk {disk}."
            )));
        }
        self.require(disk, "disk")?;
        self.lock().planned.remove(Path::new(target));
        self.insert(
            target,
            Object {
                kind: ObjectKind::Disk,
                parent: Some(disk.to_string()),
                data: Vec::new(),
            },
        );
        Ok(())
    }

    async fn overlay_is_valid(&self, location: &str) -> Result<bool> {
        Ok(!self.native
            && (self.lock().by_location.contains_key(location) || self.volumes.exists(location)))
    }

    async fn export_image(&self, location: &str, _format: &str, dest: &Path) -> Result<bool> {
        let layered = self.require(location, "image data")?.parent.is_some();
        if layered {
            let data = self.content(location).unwrap_or_default();
            tokio::fs::write(dest, data)
                .await
                .map_err(|e| Error::unavailable(format!("Cannot write {}: {e}", dest.display())))?;
        }
        Ok(layered)
    }

    async fn export_identity(&self, location: &str) -> Result<Option<String>> {
        let mut chain = vec![location.to_string()];
        let mut parent = self.require(location, "image data")?.parent.clone();
        while let Some(p) = parent {
            parent = self
                .lock()
                .by_location
                .get(&p)
                .and_then(|o| o.parent.clone());
            chain.push(p);
        }
        Ok((chain.len() > 1).then(|| chain.join("\n")))
    }

    fn volumes(&self) -> Option<&dyn VolumePool> {
        Some(&self.volumes)
    }

    fn points(&self) -> Option<&dyn PointPool> {
        if self.native {
            Some(self)
        } else {
            None
        }
    }
}

/// Restore points of the native mode: a point's disk snapshot is
/// `disk@point-<id>`, its memory state `fake-state://<id>` (written by the
/// hypervisor: see [`FakePool::file_created`]), a revert an O(1) clone.
#[async_trait]
impl PointPool for FakePool {
    fn point_snapshot(&self, disk: &str, point: &str) -> Result<PointSnapshot> {
        let name = format!("point-{point}");
        Ok(PointSnapshot {
            location: format!("{disk}@{name}"),
            name,
        })
    }

    fn point_state(&self, point: &str) -> Result<String> {
        Ok(format!("{STATE_SCHEME}{point}"))
    }

    fn state_source(&self, state: &str) -> Result<DiskSource> {
        Ok(DiskSource::File {
            path: state.into(),
            format: "raw".into(),
        })
    }

    async fn snapshot_exists(&self, snapshot: &str) -> Result<bool> {
        Ok(self.lock().by_location.contains_key(snapshot))
    }

    async fn state_exists(&self, state: &str) -> Result<bool> {
        Ok(self.lock().by_location.contains_key(state))
    }

    async fn snapshot_disk(&self, snapshot: &str) -> Result<()> {
        let (disk, _) = snapshot
            .rsplit_once('@')
            .ok_or_else(|| Error::internal(format!("'{snapshot}' names no snapshot.")))?;
        self.require(disk, "disk")?;
        self.insert(
            snapshot,
            Object {
                kind: ObjectKind::Snapshot,
                parent: Some(disk.to_string()),
                data: Vec::new(),
            },
        );
        Ok(())
    }

    fn clone_location(&self, name: &str) -> Result<String> {
        Ok(disk_location(name))
    }

    async fn clone_snapshot(&self, snapshot: &str, name: &str) -> Result<String> {
        self.require(snapshot, "snapshot")?;
        let location = disk_location(name);
        self.insert(
            &location,
            Object {
                kind: ObjectKind::Disk,
                parent: Some(snapshot.to_string()),
                data: Vec::new(),
            },
        );
        Ok(location)
    }

    async fn delete_state(&self, state: &str) -> Result<()> {
        self.remove(state)
    }

    async fn clone_depth(&self, disk: &str) -> Result<usize> {
        self.require(disk, "disk")?;
        Ok(self
            .chain(disk)
            .iter()
            .filter(|l| {
                self.lock()
                    .by_location
                    .get(*l)
                    .is_some_and(|o| o.kind == ObjectKind::Snapshot)
            })
            .count())
    }

    async fn flatten(&self, disk: &str) -> Result<()> {
        let data = self.content(disk).unwrap_or_default();
        let mut objects = self.lock();
        let object = objects
            .by_location
            .get_mut(disk)
            .ok_or_else(|| Error::not_found("disk", disk))?;
        object.data = data;
        object.parent = None;
        Ok(())
    }
}

impl FakePool {
    /// How many layers the disk at `location` stands on.
    pub fn layers_under(&self, location: &str) -> usize {
        self.depth(location)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn layer_under_a_root_when_collected_then_kept_with_its_whole_chain() {
        let pool = FakePool::new();
        let image = pool.lock().by_location.insert(
            "fake://i".into(),
            Object {
                kind: ObjectKind::Image,
                parent: None,
                data: b"x".to_vec(),
            },
        );
        assert!(image.is_none());
        let disk = pool.create_disk("d", "fake://i", "raw", 1).await.unwrap();
        let (top, path) = pool.new_overlay(&disk, "top").unwrap().unwrap();
        pool.file_created(&path);

        let removed = pool
            .collect_garbage(&BTreeSet::from([top.clone()]))
            .await
            .unwrap();

        assert!(removed.is_empty());
        assert_eq!(pool.chain(&top), vec![top.clone(), disk, "fake://i".into()]);
        assert!(pool.overlay_is_valid(&top).await.unwrap());
    }

    #[tokio::test]
    async fn native_image_of_a_disk_when_not_flattened_then_the_disk_cannot_go() {
        let pool = FakePool::native();
        pool.lock().by_location.insert(
            "fake://i".into(),
            Object {
                kind: ObjectKind::Image,
                parent: None,
                data: b"x".to_vec(),
            },
        );
        let disk = pool.create_disk("d", "fake://i", "raw", 1).await.unwrap();
        let image = ImageId::new();
        let (location, _) = pool.image_from_disk(&disk, image).await.unwrap();

        let refused = pool.delete_disk(&disk).await;
        let flattened = pool.flatten_image(&location, Box::new(|_| {})).await;
        let removed = pool
            .collect_garbage(&BTreeSet::from([location.clone()]))
            .await
            .unwrap();

        assert_eq!(refused.unwrap_err().kind(), domain::ErrorKind::Conflict);
        assert!(flattened.unwrap());
        assert_eq!(removed.len(), 3);
        assert_eq!(pool.data(&location).unwrap(), b"x".to_vec());
    }

    #[tokio::test]
    async fn point_clone_when_flattened_then_its_snapshot_is_garbage_and_the_disk_is_not() {
        let pool = FakePool::native();
        pool.lock().by_location.insert(
            "fake://i".into(),
            Object {
                kind: ObjectKind::Image,
                parent: None,
                data: b"x".to_vec(),
            },
        );
        let disk = pool.create_disk("d", "fake://i", "raw", 1).await.unwrap();
        let points = pool.points().unwrap();
        let snap = points.point_snapshot(&disk, "p1").unwrap();
        points.snapshot_disk(&snap.location).await.unwrap();
        let clone = points.clone_snapshot(&snap.location, "c").await.unwrap();
        let depth = points.clone_depth(&clone).await.unwrap();

        points.flatten(&clone).await.unwrap();
        let removed = pool
            .collect_garbage(&BTreeSet::from([clone.clone(), disk.clone()]))
            .await
            .unwrap();

        assert_eq!(depth, 1);
        assert_eq!(removed, vec![snap.location.clone()]);
        assert_eq!(points.clone_depth(&clone).await.unwrap(), 0);
        assert!(pool.exists(&disk));
    }

    #[tokio::test]
    async fn garbage_when_a_kept_disk_stands_on_an_unnamed_image_then_image_kept() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FakePool::new();
        let staged = dir.path().join("upload");
        tokio::fs::write(&staged, b"data").await.unwrap();
        let image = pool
            .import_image(ImageId::new(), &staged, "raw")
            .await
            .unwrap();
        let disk = pool.create_disk("vm", &image, "raw", 4).await.unwrap();
        let gone = pool.create_disk("old", &image, "raw", 4).await.unwrap();

        let removed = pool.collect_garbage(&BTreeSet::from([disk])).await.unwrap();

        assert_eq!(removed, vec![gone]);
        assert!(pool.data(&image).is_some());
    }
}
