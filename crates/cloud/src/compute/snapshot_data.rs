//! What follows a server snapshot in the background, once its image is
//! `active`: the hashes of what `image save` returns, and — for images
//! cloned from a disk (rbd) — the flatten that cuts them loose from the
//! server's disk, so that the disk's snapshot can go.
//!
//! Both are derivable from the image and the pool, so neither needs a saga:
//! at start-up every active snapshot image without hashes is hashed, and
//! every one still sharing data with a disk is flattened (librbd's flatten
//! skips what an interrupted run already copied).

use std::io::Read;
use std::time::Instant;

use domain::image::ImageStatus;
use domain::ImageId;
use tokio::io::AsyncReadExt;

use crate::Cloud;

impl Cloud {
    /// Size, MD5 and SHA-512 of what `image save` returns, computed after
    /// the image is active (the image is usable at once; the hashes follow).
    pub(crate) async fn hash_snapshot_image(&self, id: ImageId) {
        let Ok(img) = self.store.image(id).await else {
            return;
        };
        let (Some(location), None) = (img.location.clone(), img.checksum.as_ref()) else {
            return;
        };
        let hashed = match self.export_whole(&img, &location).await {
            Ok(Some((file, _))) => {
                let file = file.into_std().await;
                tokio::task::spawn_blocking(move || crate::images::convert::hash_open_file(file))
                    .await
            }
            // Stored as `image save` returns it: hash the stream itself.
            Ok(None) => match self.pool.open_image(&location, 0).await {
                Ok(data) => {
                    let reader = BlockingRead {
                        reader: data.reader,
                        runtime: tokio::runtime::Handle::current(),
                    };
                    tokio::task::spawn_blocking(move || crate::images::convert::hash_reader(reader))
                        .await
                }
                Err(e) => {
                    return tracing::warn!(image = %id, error = %e, "could not hash a snapshot image")
                }
            },
            Err(e) => {
                return tracing::warn!(image = %id, error = %e, "could not hash a snapshot image")
            }
        };
        let Ok(Ok((size, md5, sha512))) = hashed else {
            return tracing::warn!(image = %id, "could not hash a snapshot image");
        };
        let Ok(now) = self.store.image(id).await else {
            return;
        };
        if now.status != ImageStatus::Active || now.checksum.is_some() {
            return;
        }
        let mut hashed = now.clone();
        hashed.size = Some(size);
        hashed.checksum = Some(md5);
        hashed.os_hash_algo = Some("sha512".into());
        hashed.os_hash_value = Some(sha512);
        let _ = self.store.update_image(&now, &hashed).await;
    }

    /// Flattens the data of image `id` if it still shares data with the
    /// disk it was taken from, logging progress every 10 %, then lets the
    /// garbage collection take what that released (the disk's snapshot,
    /// and the disk itself if its server is gone).
    pub(crate) async fn flatten_snapshot_image(&self, id: ImageId) {
        let Ok(img) = self.store.image(id).await else {
            return;
        };
        let (ImageStatus::Active, Some(location)) = (img.status, img.location.clone()) else {
            return;
        };
        let started = Instant::now();
        let mut logged = 0u8;
        let progress = Box::new(move |percent: u8| {
            if percent >= logged.saturating_add(10) || (percent == 100 && logged < 100) {
                logged = percent;
                tracing::info!(image = %id, percent, "flattening snapshot image");
            }
        });
        match self.pool.flatten_image(&location, progress).await {
            Ok(true) => {
                tracing::info!(image = %id, ms = started.elapsed().as_millis() as u64,
                    "snapshot image flattened; its server disk's snapshot is released");
                self.collect_garbage_quietly().await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(image = %id, error = %e, "flatten of a snapshot image failed; it is retried at the next start")
            }
        }
    }
}

/// A blocking [`Read`] over an async reader, for hashing on a blocking
/// thread (the reads wait on the runtime's I/O).
struct BlockingRead {
    reader: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
    runtime: tokio::runtime::Handle,
}

impl Read for BlockingRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.runtime.block_on(self.reader.read(buf))
    }
}
