//! Merging the layer of a deleted inner point, so that deleting points gives
//! space back without changing what anyone sees.
//!
//! A deleted point's layer L stays while something stands on it. When
//! exactly one file C stands on L, L's data is copied into C and C's backing
//! file becomes L's backing file B; then nothing stands on L and garbage
//! collection removes it. C's content, as any reader sees it, is unchanged;
//! B is never written (a block-commit of L into B would change what B's
//! owner — another point or an image — sees).
//!
//! ```text
//!   B ◀── L ◀── C ◀── …          B ◀── C' ◀── …      (C' = C + L's clusters)
//! ```
//! - C in the server's running chain: QMP `block-stream` into C's node with
//!   base B (C may be the top or an inner file);
//! - otherwise no QEMU has C open: `qemu-img rebase -b B C` (safe mode).
//!
//! Skipped (L simply stays, refcounted) when: L is still a root (another
//! point's layer, an image's data, a server's disk); zero or several files
//! stand on it; C holds internal snapshots (their unallocated clusters read
//! through to L: rebasing would change them); or an image's chain goes
//! through C (another server's QEMU may read C).

use std::path::{Path, PathBuf};

use domain::image::ImageStatus;
use domain::Result;
use serde_json::Value;

use crate::compute::hypervisor_error;
use crate::Cloud;

impl Cloud {
    /// Merges `layer` into the one file standing on it, if that is safe
    /// (see the module header). Returns whether it did.
    pub(super) async fn merge_released_layer(
        &self,
        server: domain::ServerId,
        layer: &str,
    ) -> Result<bool> {
        if self.is_still_a_root(layer).await? {
            return Ok(false);
        }
        let Ok(storage::DiskSource::File { path: l_path, .. }) = self.pool.disk_source(layer)
        else {
            return Ok(false);
        };
        let l_info = info(&l_path).await?;
        let Some(base) = l_info["full-backing-filename"].as_str().map(PathBuf::from) else {
            return Ok(false);
        };
        let base_format = l_info["backing-filename-format"]
            .as_str()
            .unwrap_or("qcow2")
            .to_string();
        let children = self.files_backed_by(&l_path).await?;
        let [child] = &children[..] else {
            return Ok(false);
        };
        let child_info = info(child).await?;
        if child_info["snapshots"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
        {
            return Ok(false);
        }
        if self.an_image_reads(child).await? {
            return Ok(false);
        }
        let srv = self.store.server(server).await?;
        let live_chain = if self.point_qemu_is_up(&srv).await {
            match srv.root_disk.as_deref().map(|d| self.pool.disk_source(d)) {
                Some(Ok(storage::DiskSource::File { path, .. })) => chain_of(&path).await?,
                _ => Vec::new(),
            }
        } else {
            Vec::new()
        };
        if live_chain.iter().any(|f| same_file(f, child)) {
            self.hypervisor
                .stream_into(&srv.id.to_string(), child, &base)
                .await
                .map_err(hypervisor_error)?;
        } else {
            let (Some(c), Some(b)) = (child.to_str(), base.to_str()) else {
                return Ok(false);
            };
            storage::qemu_img::run(&[
                "rebase",
                "-q",
                "-f",
                "qcow2",
                "-b",
                b,
                "-F",
                &base_format,
                c,
            ])
            .await?;
        }
        tracing::info!(layer, into = %child.display(), "released restore-point layer merged");
        Ok(true)
    }

    async fn is_still_a_root(&self, layer: &str) -> Result<bool> {
        for point in self.store.restore_points(None).await? {
            if point.disks.iter().any(|d| d.layer == layer) {
                return Ok(true);
            }
        }
        for server in self.store.servers(None).await? {
            if server.root_disk.as_deref() == Some(layer) {
                return Ok(true);
            }
        }
        for status in [
            ImageStatus::Active,
            ImageStatus::Deactivated,
            ImageStatus::Saving,
        ] {
            for image in self.store.images_in_status(status).await? {
                if image.location.as_deref() == Some(layer) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The pool's disk files whose backing file is `file`.
    async fn files_backed_by(&self, file: &Path) -> Result<Vec<PathBuf>> {
        let mut children = Vec::new();
        for location in self.pool.disk_locations().await? {
            let Ok(storage::DiskSource::File { path, .. }) = self.pool.disk_source(&location)
            else {
                continue;
            };
            let backing = info(&path).await?["full-backing-filename"]
                .as_str()
                .map(PathBuf::from);
            if backing.is_some_and(|b| same_file(&b, file)) {
                children.push(path);
            }
        }
        Ok(children)
    }

    /// Whether the chain of an image's data goes through `file`.
    async fn an_image_reads(&self, file: &Path) -> Result<bool> {
        for status in [
            ImageStatus::Active,
            ImageStatus::Deactivated,
            ImageStatus::Saving,
        ] {
            for image in self.store.images_in_status(status).await? {
                let Some(location) = image.location else {
                    continue;
                };
                let Ok(storage::DiskSource::File { path, .. }) = self.pool.disk_source(&location)
                else {
                    continue;
                };
                if chain_of(&path).await?.iter().any(|f| same_file(f, file)) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

async fn info(path: &Path) -> Result<Value> {
    let Some(p) = path.to_str() else {
        return Err(domain::Error::internal("A pool path is not UTF-8."));
    };
    let text = storage::qemu_img::run(&["info", "-U", "--output=json", p]).await?;
    serde_json::from_str(&text)
        .map_err(|e| domain::Error::internal(format!("qemu-img printed unexpected JSON: {e}")))
}

/// Every file of the backing chain of `path`, top first.
pub(crate) async fn chain_of(path: &Path) -> Result<Vec<PathBuf>> {
    let Some(p) = path.to_str() else {
        return Ok(Vec::new());
    };
    let text =
        storage::qemu_img::run(&["info", "-U", "--backing-chain", "--output=json", p]).await?;
    let chain: Value = serde_json::from_str(&text)
        .map_err(|e| domain::Error::internal(format!("qemu-img printed unexpected JSON: {e}")))?;
    Ok(chain
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["filename"].as_str().map(PathBuf::from))
        .collect())
}

fn same_file(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canonical(a) == canonical(b)
}
