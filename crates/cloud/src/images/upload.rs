//! `PUT /v2/images/{id}/file`: a streamed upload.
//!
//! ```text
//!  queued ──CAS──▶ saving ──stream to staging file (md5 ∥ sha512, size cap)──▶
//!     inspect the bytes (format inspector: content matches disk_format, no
//!     backing file, no data file, no VMDK extent paths)                    ──▶
//!     qemu-img info -f FORMAT under prlimit (virtual size)                 ──▶
//!     [convert to the pool's format if it keeps another: raw on rbd, see
//!      `convert`]                                                         ──▶
//!     pool.import (rename on the file pool)  ──CAS──▶ active
//!  any failure: staging file removed, saving ──CAS──▶ queued, error returned
//! ```
//!
//! The body is never held in memory: chunks flow through bounded channels to
//! two blocking threads, one writing the file and computing MD5, the other
//! computing SHA-512, so the two hashes run on both cores. A process death
//! mid-way leaves the image `saving` and a staging file; [`super::reconcile`]
//! puts it back to `queued` at the next start.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::Utc;
use domain::image::{Image, ImageStatus};
use domain::{Error, ErrorKind, Result};
use futures_util::{Stream, StreamExt};
use image_format::DiskFormat;
use md5::Md5;
use sha2::{Digest, Sha512};
use tokio::sync::mpsc;

use crate::Cloud;

/// What bounds an upload's bytes: the size cap (with image_size_total) and
/// the project's share of the staging area (image_stage_total).
struct UploadLimits<'a> {
    cap: u64,
    staging: Option<&'a mut super::stage_quota::StageClaim>,
}

/// What the staging step measured.
struct Staged {
    size: u64,
    md5: String,
    sha512: String,
}

impl Cloud {
    /// Streams `body` in as the data of image `id`.
    pub async fn upload_image<S>(
        &self,
        caller: &domain::identity::Caller,
        id: &str,
        body: S,
        content_length: Option<u64>,
    ) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        let img = self
            .image_for_change(caller, id, "upload image data")
            .await?;
        self.refuse_if_saga_makes(&img).await?;
        img.ready_for_upload()?;
        let quota_left = self.image_bytes_left(img.owner).await?;
        let cap = quota_left.map_or(self.config.image_size_cap, |left| {
            left.min(self.config.image_size_cap)
        });
        if content_length.is_some_and(|len| len > cap) {
            return Err(too_large(cap));
        }
        // Held until the upload ends, however it ends.
        let mut staging = self.stage_meter.claim(
            img.owner,
            self.config.image_quota.stage_total_mib,
            content_length,
        )?;
        let mut saving = img.clone();
        saving.status = img.status.transition(ImageStatus::Saving)?;
        saving.updated_at = Utc::now();
        self.store.update_image(&img, &saving).await?;

        let staged_path = self.config.staging_dir.join(format!("{}.upload", img.id));
        let limits = UploadLimits {
            cap,
            staging: staging.as_mut(),
        };
        match self.store_upload(&saving, &staged_path, body, limits).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = tokio::fs::remove_file(&staged_path).await;
                let _ = tokio::fs::remove_file(super::convert::converted_path(&staged_path)).await;
                self.abandon_upload(&saving).await;
                Err(e)
            }
        }
    }

    async fn store_upload<S>(
        &self,
        img: &Image,
        staged_path: &Path,
        body: S,
        limits: UploadLimits<'_>,
    ) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        let staged = stream_to_file(body, staged_path.to_path_buf(), limits).await?;
        let claimed = img.disk_format.clone().unwrap_or_default();
        let format: DiskFormat = claimed
            .parse()
            .map_err(|_| Error::invalid(format!("Unknown disk_format '{claimed}'.")))?;
        inspect(staged_path, format).await?;
        let qemu_format = image_format::qemu_img_format(format);
        let info =
            storage::qemu_img::info(staged_path, qemu_format, self.config.qemu_img_limits).await?;
        // Raw data is as large as it is (Glance's inspector says so too);
        // qemu-img would round it up to whole 512-byte sectors.
        let virtual_size = if qemu_format == "raw" {
            staged.size
        } else {
            info.virtual_size
        };
        let max_virtual = self.config.max_virtual_size;
        if virtual_size > max_virtual {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "The image's virtual size of {virtual_size} bytes is larger than the {max_virtual} bytes this cloud accepts."
                ),
            ));
        }

        let mut active = img.clone();
        active.status = ImageStatus::Active;
        active.size = Some(staged.size);
        active.virtual_size = Some(virtual_size);
        active.checksum = Some(staged.md5);
        active.os_hash_algo = Some("sha512".into());
        active.os_hash_value = Some(staged.sha512);
        let stored_format = self.pool.stored_format(qemu_format);
        let import_path = if stored_format == qemu_format {
            staged_path.to_path_buf()
        } else {
            let cap = self.config.image_size_cap;
            let converted =
                super::convert::convert(staged_path, qemu_format, stored_format, virtual_size, cap)
                    .await?;
            super::convert::describe(&mut active, &converted, stored_format);
            let _ = tokio::fs::remove_file(staged_path).await;
            converted.path
        };
        let _gc = self.gc_lock.read().await;
        let location = self
            .pool
            .import_image(img.id, &import_path, stored_format)
            .await?;
        active.location = Some(location.clone());
        active.updated_at = Utc::now();
        let added: std::collections::BTreeMap<String, String> = active
            .properties
            .iter()
            .filter(|(k, v)| img.properties.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let published = self
            .store
            .finish_image_upload(&active, &added, ImageStatus::Saving)
            .await;
        if let Err(e) = published {
            // Deleted (or otherwise moved) while we were uploading.
            let _ = self.pool.delete_image(&location).await;
            return Err(if e.kind() == ErrorKind::Conflict {
                Error::new(
                    ErrorKind::Gone,
                    format!("Image {} was deleted during the upload.", img.id),
                )
            } else {
                e
            });
        }
        tracing::info!(image = %img.id, size = staged.size, "image uploaded");
        Ok(())
    }

    /// Puts an image whose upload failed back to `queued` (if still saving).
    async fn abandon_upload(&self, saving: &Image) {
        let mut queued = saving.clone();
        queued.status = ImageStatus::Queued;
        queued.updated_at = Utc::now();
        if let Err(e) = self.store.update_image(saving, &queued).await {
            tracing::warn!(image = %saving.id, error = %e, "could not put the image back to queued");
        }
    }
}

fn too_large(cap: u64) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("The image is larger than the {cap}-byte limit of this cloud."),
    )
}

/// Writes the stream to `path`, hashing it on two threads; fsyncs the file.
async fn stream_to_file<S>(mut body: S, path: PathBuf, limits: UploadLimits<'_>) -> Result<Staged>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
{
    let (file_tx, mut file_rx) = mpsc::channel::<Bytes>(16);
    let (sha_tx, mut sha_rx) = mpsc::channel::<Bytes>(16);
    let writer_path = path.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<String> {
        let file = std::fs::File::create(&writer_path).map_err(|e| {
            Error::unavailable(format!("Cannot create {}: {e}", writer_path.display()))
        })?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut md5 = Md5::new();
        while let Some(chunk) = file_rx.blocking_recv() {
            md5.update(&chunk);
            out.write_all(&chunk)
                .map_err(|e| Error::unavailable(format!("Cannot write the upload: {e}")))?;
        }
        let file = out
            .into_inner()
            .map_err(|e| Error::unavailable(format!("Cannot write the upload: {}", e.error())))?;
        file.sync_all()
            .map_err(|e| Error::unavailable(format!("Cannot flush the upload to disk: {e}")))?;
        Ok(hex::encode(md5.finalize()))
    });
    let hasher = tokio::task::spawn_blocking(move || {
        let mut sha = Sha512::new();
        while let Some(chunk) = sha_rx.blocking_recv() {
            sha.update(&chunk);
        }
        hex::encode(sha.finalize())
    });

    let UploadLimits { cap, mut staging } = limits;
    let mut size: u64 = 0;
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                failure = Some(Error::invalid(format!("The upload was interrupted: {e}")));
                break;
            }
        };
        size += chunk.len() as u64;
        if size > cap {
            failure = Some(too_large(cap));
            break;
        }
        if let Some(Err(e)) = staging.as_deref_mut().map(|c| c.grow(chunk.len() as u64)) {
            failure = Some(e);
            break;
        }
        if file_tx.send(chunk.clone()).await.is_err() || sha_tx.send(chunk).await.is_err() {
            break; // the writer failed; its error is reported below
        }
    }
    drop(file_tx);
    drop(sha_tx);
    let md5 = writer
        .await
        .map_err(|e| Error::internal(format!("Upload writer failed: {e}")))?;
    let sha512 = hasher
        .await
        .map_err(|e| Error::internal(format!("Upload hasher failed: {e}")))?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Staged {
        size,
        md5: md5?,
        sha512,
    })
}

/// Runs the format inspector over the staged file.
async fn inspect(path: &Path, claimed: DiskFormat) -> Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)
            .map_err(|e| Error::unavailable(format!("Cannot reopen the upload: {e}")))?;
        image_format::verify(&mut file, claimed)
            .map(|_| ())
            .map_err(|e| Error::invalid(format!("The image was rejected: {e}")))
    })
    .await
    .map_err(|e| Error::internal(format!("Format inspection failed: {e}")))?
}
