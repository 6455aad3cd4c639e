//! Volumes on the `file` pool: qcow2 files under `<root>/disks/`, among the
//! server disks, so that the pool's garbage collection (mark along backing
//! chains from the roots, sweep the rest) covers them too.
//!
//! ```text
//! create         disks/volume-<id>.qcow2            (qemu-img create, empty)
//! from image     disks/volume-<id>.qcow2 ──backing──▶ images/<image>   (O(1))
//! snapshot       top T becomes read-only: it *is* the snapshot's data;
//!                a new empty top T' ──backing──▶ T is the volume from now on
//! from snapshot  disks/volume-<id2>.qcow2 ──backing──▶ T               (O(1))
//! flatten        qemu-img convert of the chain into one file, renamed over the top
//! ```
//! A new top is named after the volume's first file plus a unique suffix
//! (`volume-<id>-<hex>`), so the directory still says whose it is.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use domain::{Error, Result};

use crate::file::{is_safe_name, FilePool};
use crate::volumes::{FrozenVolume, VolumePool};
use crate::{qemu_img, DiskSource};

const SCHEME: &str = "file://";

/// Backing chains of volumes are flattened past this many layers.
const MAX_LAYERS: usize = 8;

/// How many characters of a top's name say which volume it belongs to
/// (`volume-` and a hyphenated UUID).
const VOLUME_PREFIX_LEN: usize = 43;

/// How many characters of a snapshot's name end the name of the top it makes.
const SUFFIX_LEN: usize = 16;

impl FilePool {
    fn volume_path(&self, name: &str) -> Result<PathBuf> {
        if !is_safe_name(name) {
            return Err(Error::invalid(format!(
                "'{name}' is not a valid volume name."
            )));
        }
        Ok(self.root().join("disks").join(format!("{name}.qcow2")))
    }

    /// Makes the file for `name` through a `.part` file renamed at the end,
    /// so that a crash never leaves a half-made file under the final name;
    /// a file already there under that name is what an earlier, interrupted
    /// call made completely, and is kept.
    async fn make_volume_file<F, Fut>(&self, name: &str, make: F) -> Result<String>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let path = self.volume_path(name)?;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(location_of(&path));
        }
        let partial = path.with_extension("qcow2.part");
        if let Err(e) = make(partial.clone()).await {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, &path).await.map_err(|e| {
            Error::unavailable(format!("Cannot create volume file {}: {e}", path.display()))
        })?;
        Ok(location_of(&path))
    }
}

fn location_of(path: &Path) -> String {
    format!("{SCHEME}{}", path.display())
}

fn utf8(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| Error::internal("A pool path is not UTF-8."))
}

/// The name of the new top a snapshot `snap` puts over the volume whose
/// current top is `path`: the volume's part of the top's name and the
/// snapshot's, so that a repeated call finds the top the first one made.
fn next_top_name(path: &Path, snap: &str) -> String {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("volume");
    let prefix: String = stem.chars().take(VOLUME_PREFIX_LEN).collect();
    let suffix: String = snap
        .chars()
        .rev()
        .filter(char::is_ascii_alphanumeric)
        .take(SUFFIX_LEN)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{prefix}-{suffix}")
}

async fn set_read_only(path: &Path) -> Result<()> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| Error::unavailable(format!("Cannot stat {}: {e}", path.display())))?;
    let mut perms = meta.permissions();
    perms.set_readonly(true);
    tokio::fs::set_permissions(path, perms)
        .await
        .map_err(|e| Error::unavailable(format!("Cannot make {} read-only: {e}", path.display())))
}

#[async_trait]
impl VolumePool for FilePool {
    fn max_clone_depth(&self) -> usize {
        MAX_LAYERS
    }

    async fn create_volume(&self, name: &str, size: u64) -> Result<String> {
        self.make_volume_file(name, |partial| async move {
            let size = size.to_string();
            qemu_img::run(&["create", "-q", "-f", "qcow2", utf8(&partial)?, &size]).await?;
            Ok(())
        })
        .await
    }

    async fn volume_from_image(
        &self,
        name: &str,
        image_location: &str,
        image_format: &str,
        size: u64,
    ) -> Result<String> {
        let backing = self.path_of(image_location)?;
        let image_size = qemu_img::info_of_own(&backing, image_format)
            .await?
            .virtual_size;
        self.make_volume_file(name, |partial| async move {
            qemu_img::create_overlay(&partial, &backing, image_format, size.max(image_size)).await
        })
        .await
    }

    async fn snapshot_volume(&self, volume: &str, snap: &str) -> Result<FrozenVolume> {
        let frozen = self.disk_path_of(volume)?;
        let size = qemu_img::info_of_own(&frozen, "qcow2").await?.virtual_size;
        let top = self
            .make_volume_file(&next_top_name(&frozen, snap), |partial| {
                let frozen = frozen.clone();
                async move { qemu_img::create_overlay(&partial, &frozen, "qcow2", size).await }
            })
            .await?;
        set_read_only(&frozen).await?;
        Ok(FrozenVolume {
            snapshot: volume.to_string(),
            volume: top,
        })
    }

    fn planned_snapshot(
        &self,
        volume: &str,
        snap: &str,
    ) -> Result<(FrozenVolume, Option<PathBuf>)> {
        let frozen = self.disk_path_of(volume)?;
        let top = self.volume_path(&next_top_name(&frozen, snap))?;
        Ok((
            FrozenVolume {
                snapshot: volume.to_string(),
                volume: location_of(&top),
            },
            Some(top),
        ))
    }

    async fn seal_snapshot(&self, snapshot: &str) -> Result<()> {
        set_read_only(&self.disk_path_of(snapshot)?).await
    }

    async fn snapshot_exists(&self, snapshot: &str) -> Result<bool> {
        let path = self.disk_path_of(snapshot)?;
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(false);
        }
        Ok(
            qemu_img::run(&["check", "-q", "-f", "qcow2", "-U", utf8(&path)?])
                .await
                .is_ok(),
        )
    }

    async fn volume_from_snapshot(&self, name: &str, snapshot: &str, size: u64) -> Result<String> {
        let backing = self.disk_path_of(snapshot)?;
        let snap_size = qemu_img::info_of_own(&backing, "qcow2").await?.virtual_size;
        self.make_volume_file(name, |partial| async move {
            qemu_img::create_overlay(&partial, &backing, "qcow2", size.max(snap_size)).await
        })
        .await
    }

    async fn extend_volume(&self, volume: &str, size: u64) -> Result<()> {
        let path = self.disk_path_of(volume)?;
        let size = size.to_string();
        qemu_img::run(&["resize", "-q", "-f", "qcow2", utf8(&path)?, &size]).await?;
        Ok(())
    }

    async fn clone_depth(&self, volume: &str) -> Result<usize> {
        let path = self.disk_path_of(volume)?;
        let out = qemu_img::run(&[
            "info",
            "-U",
            "--backing-chain",
            "--output",
            "json",
            "-f",
            "qcow2",
            utf8(&path)?,
        ])
        .await?;
        let chain: Vec<serde_json::Value> = serde_json::from_str(&out).map_err(|e| {
            Error::internal(format!(
                "qemu-img info gave unreadable JSON for {}: {e}",
                path.display()
            ))
        })?;
        Ok(chain.len().saturating_sub(1))
    }

    async fn flatten_volume(&self, volume: &str) -> Result<()> {
        let path = self.disk_path_of(volume)?;
        let partial = path.with_extension("qcow2.flat");
        let converted = qemu_img::run(&[
            "convert",
            "-q",
            "-U",
            "-f",
            "qcow2",
            "-O",
            "qcow2",
            utf8(&path)?,
            utf8(&partial)?,
        ])
        .await;
        if let Err(e) = converted {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, &path).await.map_err(|e| {
            Error::unavailable(format!(
                "Cannot replace {} by its flat copy: {e}",
                path.display()
            ))
        })
    }

    async fn release_snapshot(&self, volume: &str, snapshot: &str) -> Result<bool> {
        let (top, layer) = (self.disk_path_of(volume)?, self.disk_path_of(snapshot)?);
        let top_info = qemu_img::info_of_own(&top, "qcow2").await?;
        if top_info.backing_filename.as_deref() != Some(utf8(&layer)?) {
            return Ok(false);
        }
        // The layer's own backing file and its format, as Snapstack wrote
        // them in its header (never probed).
        let info = qemu_img::run(&[
            "info",
            "-U",
            "--output",
            "json",
            "-f",
            "qcow2",
            utf8(&layer)?,
        ])
        .await?;
        let info: serde_json::Value = serde_json::from_str(&info).map_err(|e| {
            Error::internal(format!(
                "qemu-img info gave unreadable JSON for {}: {e}",
                layer.display()
            ))
        })?;
        let below = info["backing-filename"].as_str().map(str::to_owned);
        let below_format = info["backing-filename-format"]
            .as_str()
            .unwrap_or("raw")
            .to_string();
        if let Some(path) = &below {
            if self.path_of(&location_of(Path::new(path))).is_err() {
                return Err(Error::internal(format!(
                    "{} stands on {path}, outside the pool.",
                    layer.display()
                )));
            }
        }
        // Safe mode: every cluster the layer provides is copied into the top
        // before the top's header names the layer's backing file instead.
        let mut args = vec!["rebase", "-q", "-f", "qcow2", "-b"];
        args.push(below.as_deref().unwrap_or(""));
        if below.is_some() {
            args.extend(["-F", below_format.as_str()]);
        }
        args.push(utf8(&top)?);
        qemu_img::run(&args).await?;
        Ok(true)
    }

    async fn volume_size(&self, volume: &str) -> Result<u64> {
        let path = self.disk_path_of(volume)?;
        Ok(qemu_img::info_of_own(&path, "qcow2").await?.virtual_size)
    }

    fn volume_source(&self, location: &str) -> Result<DiskSource> {
        Ok(DiskSource::File {
            path: self.disk_path_of(location)?,
            format: "qcow2".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use domain::ImageId;

    use super::*;
    use crate::Pool;

    async fn pool() -> (tempfile::TempDir, FilePool) {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::open(dir.path().join("pool")).await.unwrap();
        (dir, pool)
    }

    async fn write(pool: &FilePool, volume: &str, pattern: &str) {
        let DiskSource::File { path, .. } = pool.volume_source(volume).unwrap() else {
            panic!("not a file")
        };
        qemu_img_io(&path, &format!("write -P {pattern} 0 64k")).await;
    }

    async fn qemu_img_io(path: &Path, command: &str) {
        let status = tokio::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", command, path.to_str().unwrap()])
            .output()
            .await
            .unwrap();
        assert!(status.status.success(), "{status:?}");
    }

    async fn pattern_at_zero(pool: &FilePool, location: &str) -> bool {
        let DiskSource::File { path, .. } = pool.volume_source(location).unwrap() else {
            panic!("not a file")
        };
        let out = tokio::process::Command::new("qemu-io")
            .args([
                "-r",
                "-U",
                "-f",
                "qcow2",
                "-c",
                "read -P 0x5a 0 64k",
                path.to_str().unwrap(),
            ])
            .output()
            .await
            .unwrap();
        let said = [out.stdout, out.stderr].concat();
        said.windows(7).all(|w| w != b"Pattern")
    }

    #[tokio::test]
    async fn snapshot_when_volume_written_after_then_volume_from_snapshot_sees_old_data() {
        let (_dir, pool) = pool().await;
        let v1 = pool.create_volume("volume-a", 1 << 20).await.unwrap();
        write(&pool, &v1, "0x5a").await;
        let frozen = pool.snapshot_volume(&v1, "snapshot-s").await.unwrap();
        write(&pool, &frozen.volume, "0x11").await;

        let v2 = pool
            .volume_from_snapshot("volume-b", &frozen.snapshot, 2 << 20)
            .await
            .unwrap();

        assert!(pattern_at_zero(&pool, &v2).await);
        assert!(!pattern_at_zero(&pool, &frozen.volume).await);
        assert_eq!(pool.volume_size(&v2).await.unwrap(), 2 << 20);
        assert_eq!(pool.clone_depth(&v2).await.unwrap(), 1);
        assert!(pool.snapshot_exists(&frozen.snapshot).await.unwrap());
    }

    #[tokio::test]
    async fn volume_when_flattened_then_stands_alone_with_same_data() {
        let (_dir, pool) = pool().await;
        let v1 = pool.create_volume("volume-a", 1 << 20).await.unwrap();
        write(&pool, &v1, "0x5a").await;
        let frozen = pool.snapshot_volume(&v1, "snapshot-s").await.unwrap();
        let v2 = pool
            .volume_from_snapshot("volume-b", &frozen.snapshot, 0)
            .await
            .unwrap();

        pool.flatten_volume(&v2).await.unwrap();

        assert_eq!(pool.clone_depth(&v2).await.unwrap(), 0);
        assert!(pattern_at_zero(&pool, &v2).await);
    }

    #[tokio::test]
    async fn garbage_when_snapshot_not_a_root_but_under_a_volume_then_kept() {
        let (_dir, pool) = pool().await;
        let staged = pool.root().join("upload");
        tokio::fs::write(&staged, vec![1u8; 1 << 20]).await.unwrap();
        let image = pool
            .import_image(ImageId::new(), &staged, "raw")
            .await
            .unwrap();
        let v1 = pool
            .volume_from_image("volume-a", &image, "raw", 2 << 20)
            .await
            .unwrap();
        let frozen = pool.snapshot_volume(&v1, "snapshot-s").await.unwrap();
        let gone = pool.create_volume("volume-gone", 1 << 20).await.unwrap();

        let removed = pool
            .collect_garbage(&BTreeSet::from([frozen.volume.clone()]))
            .await
            .unwrap();

        assert_eq!(removed, vec![gone]);
        assert!(pool.snapshot_exists(&frozen.snapshot).await.unwrap());
        assert_eq!(pool.image_locations().await.unwrap(), vec![image]);
        assert_eq!(pool.clone_depth(&frozen.volume).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn volume_when_extended_then_bigger() {
        let (_dir, pool) = pool().await;
        let v1 = pool.create_volume("volume-a", 1 << 20).await.unwrap();

        pool.extend_volume(&v1, 3 << 20).await.unwrap();

        assert_eq!(pool.volume_size(&v1).await.unwrap(), 3 << 20);
    }

    #[tokio::test]
    async fn snapshot_when_repeated_after_interruption_then_same_top() {
        let (_dir, pool) = pool().await;
        let v1 = pool.create_volume("volume-a", 1 << 20).await.unwrap();
        let first = pool.snapshot_volume(&v1, "snapshot-1234").await.unwrap();

        let again = pool.snapshot_volume(&v1, "snapshot-1234").await.unwrap();

        assert_eq!(again, first);
        assert_ne!(first.volume, v1);
        assert_eq!(pool.disk_locations().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn snapshot_when_released_then_top_stands_alone_with_same_data_and_layer_is_garbage() {
        let (_dir, pool) = pool().await;
        let v1 = pool.create_volume("volume-a", 1 << 20).await.unwrap();
        write(&pool, &v1, "0x5a").await;
        let frozen = pool.snapshot_volume(&v1, "snapshot-s").await.unwrap();

        let released = pool
            .release_snapshot(&frozen.volume, &frozen.snapshot)
            .await
            .unwrap();
        let removed = pool
            .collect_garbage(&BTreeSet::from([frozen.volume.clone()]))
            .await
            .unwrap();

        assert!(released);
        assert_eq!(removed, vec![frozen.snapshot.clone()]);
        assert_eq!(pool.clone_depth(&frozen.volume).await.unwrap(), 0);
        assert!(pattern_at_zero(&pool, &frozen.volume).await);
    }

    #[tokio::test]
    async fn snapshot_when_not_directly_under_the_top_then_not_released() {
        let (_dir, pool) = pool().await;
        let v1 = pool.create_volume("volume-a", 1 << 20).await.unwrap();
        let first = pool.snapshot_volume(&v1, "snapshot-1").await.unwrap();
        let second = pool
            .snapshot_volume(&first.volume, "snapshot-2")
            .await
            .unwrap();

        let released = pool
            .release_snapshot(&second.volume, &first.snapshot)
            .await
            .unwrap();

        assert!(!released);
        assert_eq!(pool.clone_depth(&second.volume).await.unwrap(), 2);
    }
}
