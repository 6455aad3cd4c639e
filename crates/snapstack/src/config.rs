//! `snapstack serve` settings: flags, each with an environment variable,
//! and the layout of the data directory.
//!
//! ```text
//! <data-dir>/snapstack.db     SQLite database
//! <data-dir>/pool/images/     the file pool's images
//! <data-dir>/staging/         uploads being inspected
//! <data-dir>/instances/<id>/  each server's QEMU: QMP socket, pid, console log
//! <data-dir>/state/           memory states of suspended servers
//! <data-dir>/logs/snapstack.log
//! <data-dir>/clouds.yaml      for `openstack --os-cloud snapstack`
//! ```

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use cloud::CloudConfig;
use hypervisor::{Accel, QemuConfig, QemuHypervisor};
use storage::qemu_img::Limits;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Where Snapstack keeps everything (database, pool, logs).
    #[arg(long, env = "SNAPSTACK_DATA_DIR", default_value = "var")]
    pub data_dir: PathBuf,
    /// Address to listen on (one port for every service).
    #[arg(long, env = "SNAPSTACK_LISTEN", default_value = "127.0.0.1:8774")]
    pub listen: String,
    /// Base URL clients reach the API at (default: http://<listen>).
    #[arg(long, env = "SNAPSTACK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Network namespace this host's virtual networks live in (and the prefix of its
    /// DHCP and router namespaces); QEMU runs in it. Default: `ss-` and a hash of the
    /// data directory, so that two services on one host never share one.
    #[arg(long, env = "SNAPSTACK_NETNS")]
    pub netns: Option<String>,
    /// Database URL (default: sqlite://<data-dir>/snapstack.db).
    #[arg(long, env = "SNAPSTACK_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Name of the bootstrap admin user.
    #[arg(long, env = "SNAPSTACK_ADMIN_USER", default_value = "admin")]
    pub admin_user: String,
    /// Name of the bootstrap admin project.
    #[arg(long, env = "SNAPSTACK_ADMIN_PROJECT", default_value = "admin")]
    pub admin_project: String,
    /// Admin password; generated and printed once on first start if unset.
    #[arg(long, env = "SNAPSTACK_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Token lifetime in seconds.
    #[arg(long, env = "SNAPSTACK_TOKEN_TTL", default_value_t = 3600)]
    pub token_ttl: u64,
    /// Largest image upload accepted, in bytes (default 1 TiB).
    #[arg(long, env = "SNAPSTACK_IMAGE_SIZE_CAP", default_value_t = 1 << 40)]
    pub image_size_cap: u64,
    /// Largest virtual size an uploaded image may claim, in bytes
    /// (default 1 TiB); a server booted from it gets a disk that large.
    #[arg(long, env = "SNAPSTACK_MAX_VIRTUAL_SIZE", default_value_t = 1 << 40)]
    pub max_virtual_size: u64,
    /// Images a project may have (Glance's image_count_total; -1: any).
    #[arg(long, env = "SNAPSTACK_IMAGE_COUNT_TOTAL", default_value_t = -1, allow_negative_numbers = true)]
    pub image_count_total: i64,
    /// MiB of image data a project may have (image_size_total; -1: any).
    #[arg(long, env = "SNAPSTACK_IMAGE_SIZE_TOTAL", default_value_t = -1, allow_negative_numbers = true)]
    pub image_size_total: i64,
    /// QEMU accelerator: `tcg` (default; KVM hangs guests on some hosts) or `kvm`.
    #[arg(long, env = "SNAPSTACK_ACCEL", default_value = "tcg", value_parser = ["tcg", "kvm"])]
    pub accel: String,
    /// Seconds a guest gets to power off cleanly before it is killed.
    #[arg(long, env = "SNAPSTACK_SHUTDOWN_TIMEOUT", default_value_t = 60)]
    pub shutdown_timeout: u64,
    /// Seconds between checks that servers' QEMU processes are still alive.
    #[arg(long, env = "SNAPSTACK_POWER_SYNC_INTERVAL", default_value_t = 3)]
    pub power_sync_interval: u64,
    /// Files a running server's disk chain (file pool) may have after a
    /// snapshot; past it, the layers are streamed into the top (block-stream).
    #[arg(long, env = "SNAPSTACK_MAX_CHAIN_DEPTH", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(2..=64))]
    pub max_chain_depth: u64,
    /// Shortest password accepted for a user (Keystone's
    /// `password_regex` with a length rule; 0: any).
    #[arg(long, env = "SNAPSTACK_MIN_PASSWORD_LENGTH", default_value_t = 0)]
    pub min_password_length: usize,
    /// Failed logins in a row that lock a user out (Keystone's
    /// `lockout_failure_attempts`; 0: never).
    #[arg(long, env = "SNAPSTACK_LOCKOUT_FAILURE_ATTEMPTS", default_value_t = 0)]
    pub lockout_failure_attempts: u32,
    /// Seconds a locked-out user stays locked (`lockout_duration`).
    #[arg(long, env = "SNAPSTACK_LOCKOUT_DURATION", default_value_t = 1800)]
    pub lockout_duration: u64,
    /// Password hashes computed at once (each Argon2id takes ~19 MiB).
    #[arg(long, env = "SNAPSTACK_PASSWORD_HASH_WORKERS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub password_hash_workers: u64,
    #[command(flatten)]
    pub storage: crate::storage_config::StorageArgs,
}

/// Where things live under the data directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub data_dir: PathBuf,
    pub pool_dir: PathBuf,
    pub staging_dir: PathBuf,
    pub instances_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log_file: PathBuf,
}

/// `ss-` and 8 hex digits of a hash (FNV-1a) of the data directory's path.
pub fn default_netns(data_dir: &Path) -> String {
    let hash = data_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("ss-{:08x}", hash as u32)
}

/// Where the data plane keeps its files (DHCP servers' hosts files, leases, logs).
pub fn network_state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("network")
}

pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("snapstack.db").display())
}

impl ServeArgs {
    pub fn prepare_dirs(&self) -> anyhow::Result<Paths> {
        std::fs::create_dir_all(&self.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                self.data_dir.display()
            )
        })?;
        let data_dir = self.data_dir.canonicalize()?;
        let paths = Paths {
            pool_dir: data_dir.join("pool"),
            staging_dir: data_dir.join("staging"),
            instances_dir: data_dir.join("instances"),
            state_dir: data_dir.join("state"),
            log_file: data_dir.join("logs").join("snapstack.log"),
            data_dir,
        };
        if let Some(logs) = paths.log_file.parent() {
            std::fs::create_dir_all(logs)?;
        }
        Ok(paths)
    }

    pub fn database_url(&self, paths: &Paths) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| sqlite_url(&paths.data_dir))
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }

    pub fn cloud_config(&self, paths: &Paths) -> CloudConfig {
        CloudConfig {
            token_ttl: Duration::from_secs(self.token_ttl),
            image_size_cap: self.image_size_cap,
            staging_dir: paths.staging_dir.clone(),
            qemu_img_limits: Limits::default(),
            state_dir: paths.state_dir.clone(),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
            max_chain_depth: self.max_chain_depth as usize,
            max_virtual_size: self.max_virtual_size,
            image_quota: cloud::quotas::ImageQuota {
                count_total: self.image_count_total,
                size_total_mib: self.image_size_total,
            },
            identity: cloud::identity::IdentityConfig {
                min_password_length: self.min_password_length,
                lockout_failure_attempts: self.lockout_failure_attempts,
                lockout_duration: Duration::from_secs(self.lockout_duration),
                hash_workers: self.password_hash_workers as usize,
            },
        }
    }

    /// The network namespace of this host's data plane (see `--netns`).
    pub fn netns(&self, paths: &Paths) -> String {
        self.netns
            .clone()
            .unwrap_or_else(|| default_netns(&paths.data_dir))
    }

    pub fn hypervisor(&self, paths: &Paths) -> QemuHypervisor {
        let mut config = QemuConfig::new(&paths.instances_dir);
        config.netns = Some(self.netns(paths));
        config.accel = if self.accel == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        QemuHypervisor::new(config)
    }
}

/// Logs go to stderr and to the log file; `RUST_LOG` picks the level.
pub fn init_logging(log_file: &Path) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .with_context(|| format!("cannot open the log file {}", log_file.display()))?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(Mutex::new(file)),
        )
        .try_init()
        .context("cannot set up logging")?;
    Ok(())
}
