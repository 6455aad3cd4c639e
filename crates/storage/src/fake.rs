//! An in-memory pool for fast unit tests of the layers above the drivers.
//! Same contract as the real pools: idempotent deletes, opaque locations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use domain::{Error, ImageId, Result};

use crate::{DiskSource, Garbage, GarbageKind, ImageReader, Pool};

#[derive(Debug, Default)]
pub struct FakePool {
    images: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Disk location → the image location it was made from.
    disks: Mutex<BTreeMap<String, String>>,
    volumes: crate::volumes::fake::FakeVolumes,
}

impl FakePool {
    pub fn new() -> Self {
        Self::default()
    }

    /// The volume operations (in memory too).
    pub fn fake_volumes(&self) -> &crate::volumes::fake::FakeVolumes {
        &self.volumes
    }

    /// The bytes stored at `location`, if any.
    pub fn data(&self, location: &str) -> Option<Vec<u8>> {
        self.images.lock().ok()?.get(location).cloned()
    }
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
        let location = format!("fake://{id}");
        self.images
            .lock()
            .map_err(|_| Error::internal("fake pool poisoned"))?
            .insert(location.clone(), data);
        Ok(location)
    }

    async fn open_image(&self, location: &str, offset: u64) -> Result<ImageReader> {
        let data = self
            .data(location)
            .ok_or_else(|| Error::not_found("image data", location))?;
        let size = data.len() as u64;
        let tail = data.get(offset as usize..).unwrap_or_default().to_vec();
        Ok(ImageReader {
            reader: Box::pin(std::io::Cursor::new(tail)),
            size,
        })
    }

    async fn delete_image(&self, location: &str) -> Result<()> {
        self.images
            .lock()
            .map_err(|_| Error::internal("fake pool poisoned"))?
            .remove(location);
        Ok(())
    }

    async fn image_locations(&self) -> Result<Vec<String>> {
        Ok(self
            .images
            .lock()
            .map_err(|_| Error::internal("fake pool poisoned"))?
            .keys()
            .cloned()
            .collect())
    }

    async fn create_disk(
        &self,
        name: &str,
        image_location: &str,
        _format: &str,
        _size: u64,
    ) -> Result<String> {
        if self.data(image_location).is_none() {
            return Err(Error::not_found("image data", image_location));
        }
        let location = format!("fake-disk://{name}");
        self.disks
            .lock()
            .map_err(|_| Error::internal("fake pool poisoned"))?
            .insert(location.clone(), image_location.to_string());
        Ok(location)
    }

    fn disk_source(&self, location: &str) -> Result<DiskSource> {
        Ok(DiskSource::File {
            path: location.into(),
            format: "qcow2".into(),
        })
    }

    async fn delete_disk(&self, location: &str) -> Result<()> {
        self.disks
            .lock()
            .map_err(|_| Error::internal("fake pool poisoned"))?
            .remove(location);
        Ok(())
    }

    fn volumes(&self) -> Option<&dyn crate::volumes::VolumePool> {
        Some(&self.volumes)
    }

    /// Marks as the file pool does: a disk that is kept keeps the image it
    /// was made from; everything else not a root is garbage.
    async fn plan_garbage(&self, roots: &BTreeSet<String>) -> Result<Vec<Garbage>> {
        let disks = self
            .disks
            .lock()
            .map_err(|_| Error::internal("fake pool poisoned"))?
            .clone();
        let kept_images: BTreeSet<&String> = disks
            .iter()
            .filter(|(disk, _)| roots.contains(*disk))
            .map(|(_, image)| image)
            .collect();
        let mut garbage: Vec<Garbage> = disks
            .keys()
            .filter(|d| !roots.contains(*d))
            .map(|location| Garbage {
                location: location.clone(),
                what: GarbageKind::Disk,
                reason: "no root is this disk".into(),
            })
            .collect();
        for image in self.image_locations().await? {
            if !roots.contains(&image) && !kept_images.contains(&image) {
                garbage.push(Garbage {
                    location: image,
                    what: GarbageKind::Image,
                    reason: "no root is this image or a disk made from it".into(),
                });
            }
        }
        Ok(garbage)
    }

    async fn disk_locations(&self) -> Result<Vec<String>> {
        Ok(self
            .disks
            .lock()
            .map_err(|_| Error::internal("fake pool poisoned"))?
            .keys()
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
