//! `serve --storage-config FILE`: where image and disk data live.
//!
//! Without the flag, the `file` pool under `<data-dir>/pool`. With it, a
//! TOML file naming a Ceph cluster and its pools (any reachable cluster;
//! `scripts/ceph-dev.sh` makes a local one):
//!
//! ```toml
//! [rbd]
//! conf = "/etc/ceph/ceph.conf"  # monitors (and `keyring = …` if auth is on);
//!                               # relative paths are relative to this file
//! user = "admin"                # client id without `client.` (default admin)
//! images_pool = "images"        # default images
//! vms_pool = "vms"              # default vms
//! volumes_pool = "volumes"      # default volumes
//! timeout_seconds = 10          # per call to Ceph (default 10)
//! ```
//!
//! The pools must be this Snapstack's alone: start-up deletes images in them
//! that no Snapstack record points to. A cluster that does not answer at
//! start-up stops `serve` with an error naming the file and the `ceph.conf`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use storage::file::FilePool;
use storage::rbd::{RbdConfig, RbdPool};
use storage::Pool;

#[derive(Args, Debug, Clone)]
pub struct StorageArgs {
    /// A TOML file naming the Ceph cluster and pools that keep images and
    /// disks (default: the file pool in the data directory).
    #[arg(long, env = "SNAPSTACK_STORAGE_CONFIG")]
    pub storage_config: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageFile {
    rbd: Option<RbdSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RbdSection {
    conf: PathBuf,
    user: Option<String>,
    images_pool: Option<String>,
    vms_pool: Option<String>,
    volumes_pool: Option<String>,
    timeout_seconds: Option<u64>,
}

impl RbdSection {
    /// The pool settings, `conf` resolved against `base` (the file's dir).
    fn into_config(self, base: &Path) -> RbdConfig {
        let mut config = RbdConfig::new(
            base.join(&self.conf),
            self.user.unwrap_or_else(|| "admin".into()),
        );
        if let Some(pool) = self.images_pool {
            config.images_pool = pool;
        }
        if let Some(pool) = self.vms_pool {
            config.vms_pool = pool;
        }
        if let Some(pool) = self.volumes_pool {
            config.volumes_pool = pool;
        }
        if let Some(seconds) = self.timeout_seconds {
            config.op_timeout = Duration::from_secs(seconds.max(1));
        }
        config
    }
}

/// Reads the storage configuration at `path`.
fn read(path: &Path) -> anyhow::Result<RbdConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the storage configuration {}", path.display()))?;
    let file: StorageFile = toml::from_str(&text)
        .with_context(|| format!("invalid storage configuration {}", path.display()))?;
    let section = file.rbd.with_context(|| {
        format!(
            "the storage configuration {} has no [rbd] section",
            path.display()
        )
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(section.into_config(base))
}

/// The pool `serve` uses: the `rbd` pool the file at `config` names
/// (connected and checked), or the file pool under `pool_dir`.
pub async fn open_pool(config: Option<&Path>, pool_dir: &Path) -> anyhow::Result<Arc<dyn Pool>> {
    let Some(path) = config else {
        let pool = FilePool::open(pool_dir)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok(Arc::new(pool));
    };
    let rbd = read(path)?;
    let pool = RbdPool::connect(rbd.clone()).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot open the rbd pool configured in {}: {e}",
            path.display()
        )
    })?;
    tracing::info!(
        conf = %rbd.conf.display(),
        fsid = pool.fsid(),
        images = %rbd.images_pool,
        vms = %rbd.vms_pool,
        "storage: rbd pool"
    );
    Ok(Arc::new(pool))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("storage.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn rbd_section_when_minimal_then_defaults_and_conf_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[rbd]\nconf = \"ceph.conf\"\n");

        let config = read(&path).unwrap();

        assert_eq!(
            config,
            RbdConfig::new(dir.path().join("ceph.conf"), "admin")
        );
    }

    #[test]
    fn rbd_section_when_everything_set_then_taken() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[rbd]\nconf = \"/etc/ceph/ceph.conf\"\nuser = \"snap\"\nimages_pool = \"i\"\n\
                    vms_pool = \"v\"\nvolumes_pool = \"o\"\ntimeout_seconds = 30\n";
        let path = write(dir.path(), text);

        let config = read(&path).unwrap();

        assert_eq!(config.conf, PathBuf::from("/etc/ceph/ceph.conf"));
        assert_eq!(config.user, "snap");
        assert_eq!(
            (
                config.images_pool.as_str(),
                config.vms_pool.as_str(),
                config.volumes_pool.as_str()
            ),
            ("i", "v", "o")
        );
        assert_eq!(config.op_timeout, Duration::from_secs(30));
    }

    #[test]
    fn storage_file_when_key_misspelt_then_error_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[rbd]\nconf = \"c\"\nimage_pool = \"x\"\n");

        let err = format!("{:#}", read(&path).unwrap_err());

        assert!(err.contains("image_pool"), "{err}");
    }

    #[test]
    fn storage_file_when_no_rbd_section_then_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "");

        let err = format!("{:#}", read(&path).unwrap_err());

        assert!(err.contains("no [rbd] section"), "{err}");
    }
}
