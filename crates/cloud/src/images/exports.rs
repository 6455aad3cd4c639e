//! Whole exports of layered images (a server snapshot's layer and the chain
//! it stands on), made once and reused by every download and by the hashing
//! that follows a snapshot.
//!
//! ```text
//!  GET …/file ──▶ pool.export_identity(location) ── None ──▶ stream as stored
//!                        │ Some(chain)
//!                        ▼
//!  <staging>/exports/<image>.<hash of chain>.<format> exists? ── yes ──▶ open it
//!                        │ no (one export per key at a time; at most
//!                        │     `max_concurrent` exports at once, others wait)
//!                        ▼
//!  free space ≥ virtual size + reserve? ── no ──▶ 503, nothing written
//!                        │ yes
//!                        ▼
//!  qemu-img convert ──▶ <…>.partial ── rename ──▶ <…>.<format>
//! ```
//!
//! Layers never change, so an export keyed by the image and its chain stays
//! right for as long as both exist. Garbage collection
//! ([`Cloud::sweep_exports`]) removes exports of images that are gone (or
//! whose chain was rewritten); start-up removes `.partial` leftovers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use domain::image::{Image, ImageStatus};
use domain::{Error, ImageId, Result};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Semaphore};

use crate::Cloud;

/// Settings of the export cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportConfig {
    /// Exports (`qemu-img convert` runs) at once; more wait their turn.
    pub max_concurrent: usize,
    /// Bytes of the staging area an export must leave free (uploads need room too).
    pub staging_reserve: u64,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            max_concurrent: 2,
            staging_reserve: 0,
        }
    }
}

/// The cache's directory, its bound on concurrent exports, and one lock per
/// export being made (a second download of it waits, then reuses it).
#[derive(Debug)]
pub(crate) struct Exports {
    dir: PathBuf,
    reserve: u64,
    permits: Semaphore,
    making: std::sync::Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
}

impl Exports {
    pub(crate) fn new(staging_dir: &Path, config: ExportConfig) -> Exports {
        Exports {
            dir: staging_dir.join("exports"),
            reserve: config.staging_reserve,
            permits: Semaphore::new(config.max_concurrent.max(1)),
            making: std::sync::Mutex::default(),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock_for(&self, path: &Path) -> Arc<Mutex<()>> {
        let mut making = self.making.lock().unwrap_or_else(|e| e.into_inner());
        making.entry(path.to_path_buf()).or_default().clone()
    }

    fn forget_lock(&self, path: &Path, lock: &Arc<Mutex<()>>) {
        let mut making = self.making.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: nobody else waits for this export.
        if Arc::strong_count(lock) == 2 {
            making.remove(path);
        }
    }
}

/// The file name of an image's export: `<image>.<key>.<format>`.
fn export_name(image: ImageId, identity: &str, format: &str) -> String {
    let key = hex::encode(&Sha256::digest(identity.as_bytes())[..8]);
    format!("{image}.{key}.{format}")
}

async fn open_export(path: &Path) -> Result<Option<(tokio::fs::File, u64)>> {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::unavailable(format!(
                "Cannot open the exported image: {e}"
            )))
        }
    };
    let size = file
        .metadata()
        .await
        .map_err(|e| Error::unavailable(format!("Cannot stat the exported image: {e}")))?
        .len();
    Ok(Some((file, size)))
}

impl Cloud {
    /// The whole content of a layered image as `image save` returns it: the
    /// cached export (made now if there is none) and its size, or `None`
    /// when the pool streams the data as stored.
    pub(crate) async fn export_whole(
        &self,
        img: &Image,
        location: &str,
    ) -> Result<Option<(tokio::fs::File, u64)>> {
        let Some(identity) = self.pool.export_identity(location).await? else {
            return Ok(None);
        };
        let format = super::qemu_format_of(img);
        let path = self
            .exports
            .dir()
            .join(export_name(img.id, &identity, format));
        let lock = self.exports.lock_for(&path);
        let made = {
            let _one_at_a_time = lock.lock().await;
            match open_export(&path).await? {
                Some(found) => Ok(Some(found)),
                None => self.make_export(img, location, format, &path).await,
            }
        };
        self.exports.forget_lock(&path, &lock);
        made
    }

    /// Runs the export into `<path>.partial` and renames it into place;
    /// refuses (503) before starting when the staging area lacks the room.
    async fn make_export(
        &self,
        img: &Image,
        location: &str,
        format: &str,
        path: &Path,
    ) -> Result<Option<(tokio::fs::File, u64)>> {
        let _permit = self
            .exports
            .permits
            .acquire()
            .await
            .map_err(|_| Error::unavailable("The image export service is shutting down."))?;
        let dir = self.exports.dir();
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| Error::unavailable(format!("Cannot create {}: {e}", dir.display())))?;
        let needed = img.virtual_size.or(img.size).unwrap_or(0);
        let free = storage::space::available_bytes(dir)?;
        if free < needed.saturating_add(self.exports.reserve) {
            return Err(Error::unavailable(format!(
                "Image {} cannot be exported for download now: it needs {needed} bytes of \
                 staging space and {free} are free (with {} kept in reserve). Try again later.",
                img.id, self.exports.reserve
            )));
        }
        let partial = path.with_extension(format!("{format}.partial"));
        let exported = self.pool.export_image(location, format, &partial).await;
        if !matches!(exported, Ok(true)) {
            let _ = tokio::fs::remove_file(&partial).await;
            return exported.map(|_| None);
        }
        if let Err(e) = tokio::fs::rename(&partial, path).await {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(Error::unavailable(format!(
                "Cannot keep the exported image: {e}"
            )));
        }
        tracing::info!(image = %img.id, export = %path.display(), "image exported once for its downloads");
        open_export(path).await
    }

    /// Removes exports no live image needs: the image is gone (or neither
    /// active nor deactivated), or its chain is no longer the one exported.
    /// `partial_too` at start-up, when no export can be under way.
    pub(crate) async fn sweep_exports(&self, partial_too: bool) -> Vec<String> {
        let mut removed = Vec::new();
        let Ok(mut dir) = tokio::fs::read_dir(self.exports.dir()).await else {
            return removed;
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = if name.ends_with(".partial") {
                !partial_too
            } else {
                self.export_still_needed(&name).await
            };
            if !keep && tokio::fs::remove_file(entry.path()).await.is_ok() {
                tracing::info!(export = %name, "image export removed: no live image needs it");
                removed.push(format!("image export {name} removed"));
            }
        }
        removed
    }

    async fn export_still_needed(&self, name: &str) -> bool {
        let mut parts = name.splitn(3, '.');
        let (Some(id), Some(_key), Some(format)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(id) = id.parse::<ImageId>() else {
            return false;
        };
        let img = match self.store.image(id).await {
            Ok(img) => img,
            Err(e) if e.kind() == domain::ErrorKind::NotFound => return false,
            // The database cannot say: keep it, the next sweep decides.
            Err(_) => return true,
        };
        let live = matches!(img.status, ImageStatus::Active | ImageStatus::Deactivated);
        let Some(location) = img.location.as_deref().filter(|_| live) else {
            return false;
        };
        match self.pool.export_identity(location).await {
            Ok(Some(identity)) => export_name(id, &identity, format) == name,
            Ok(None) => false,
            Err(_) => true,
        }
    }
}
