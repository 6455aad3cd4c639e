//! Snapstack's use-cases: identity and images (later servers, volumes,
//! snapshots, restore points), on top of the store and the driver traits.
//!
//! [`Cloud`] is usable without the HTTP API: the API crate only parses
//! requests, calls a method here and converts the result. `Cloud` knows the
//! storage pool only through [`storage::Pool`].

mod chains;
pub mod compute;
mod fault;
pub mod identity;
pub mod images;
pub mod network;
pub mod quotas;
pub mod restore_points;
pub mod saga;
pub mod volumes;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use domain::Result;
use hypervisor::Hypervisor;
use storage::qemu_img::Limits;
use storage::Pool;
use store::Store;

/// Garbage collection goes again while a round deletes something, at most
/// this many times.
const GC_ROUNDS: usize = 4;

/// Settings of the cloud layer.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// How long a token lives.
    pub token_ttl: Duration,
    /// Largest image upload accepted, in bytes (Glance's `image_size_cap`).
    pub image_size_cap: u64,
    /// Where uploads are written and inspected before the pool takes them;
    /// on the same filesystem as a `file` pool so that import is a rename.
    pub staging_dir: PathBuf,
    /// Limits for `qemu-img info` on uploaded data.
    pub qemu_img_limits: Limits,
    /// Where suspended servers' memory states are kept.
    pub state_dir: PathBuf,
    /// How long a guest gets to power off cleanly before it is killed.
    pub shutdown_timeout: Duration,
    /// How many files a running server's disk chain (file pool) may have
    /// after a snapshot before its layers are merged into its top.
    pub max_chain_depth: usize,
    /// Largest virtual size an uploaded image may claim, in bytes (every
    /// pool: a disk booted from it gets that size).
    pub max_virtual_size: u64,
    /// Glance's per-project image limits.
    pub image_quota: quotas::ImageQuota,
    /// Password rules, lockout and the hashing pool.
    pub identity: identity::IdentityConfig,
    /// The cache of whole exports of layered images (downloads).
    pub exports: images::ExportConfig,
    /// Restore points per server, bytes of memory states per project.
    pub restore_point_quota: restore_points::quota::RestorePointQuota,
}

/// The cloud: every use-case hangs off this.
#[derive(Clone)]
pub struct Cloud {
    store: Store,
    pool: Arc<dyn Pool>,
    hypervisor: Arc<dyn Hypervisor>,
    config: Arc<CloudConfig>,
    /// The bounded password-hashing pool.
    passwords: Arc<identity::Passwords>,
    /// Exports of layered images, made once for every download.
    exports: Arc<images::exports::Exports>,
    /// Bytes of uploads under way per project (Glance's image_stage_total).
    stage_meter: Arc<images::stage_quota::StageMeter>,
    /// Held from a restore point's quota check until the point is recorded.
    point_quota_lock: Arc<tokio::sync::Mutex<()>>,
    /// Held (shared) by every operation that creates pool data before the
    /// database refers to it; garbage collection takes it exclusively.
    gc_lock: Arc<tokio::sync::RwLock<()>>,
    /// Held from a cut of attached volumes until their new locations are
    /// recorded, so that two snapshots never move one volume at once.
    cut_lock: Arc<tokio::sync::Mutex<()>>,
    /// False until start-up recovery has finished or undone every open
    /// saga: no garbage is collected before.
    gc_ready: Arc<std::sync::atomic::AtomicBool>,
    /// Fake-based crash tests: a saga stops (as if the process died) at
    /// the fault point this returns true for.
    crash_hook: Option<CrashHook>,
    /// This host's network data plane, and its name in ports' `binding:host_id`.
    plane: Arc<dyn netplane::NetworkPlane>,
    host: Arc<str>,
    /// One network allocation or apply at a time.
    net_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Says, for a fault point's name, whether to "die" there.
pub type CrashHook = Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl std::fmt::Debug for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloud")
            .field("pool", &self.pool)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Cloud {
    pub async fn new(
        store: Store,
        pool: Arc<dyn Pool>,
        hypervisor: Arc<dyn Hypervisor>,
        config: CloudConfig,
    ) -> Result<Cloud> {
        for dir in [&config.staging_dir, &config.state_dir] {
            tokio::fs::create_dir_all(dir).await.map_err(|e| {
                domain::Error::unavailable(format!(
                    "Cannot create the directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let passwords = Arc::new(identity::Passwords::new(config.identity.hash_workers)?);
        let exports = Arc::new(images::exports::Exports::new(
            &config.staging_dir,
            config.exports,
        ));
        Ok(Cloud {
            store,
            pool,
            hypervisor,
            passwords,
            exports,
            stage_meter: Arc::default(),
            point_quota_lock: Arc::default(),
            config: Arc::new(config),
            gc_lock: Arc::default(),
            cut_lock: Arc::default(),
            gc_ready: Arc::default(),
            crash_hook: None,
            plane: Arc::new(netplane::FakePlane::new()),
            host: "localhost".into(),
            net_lock: Arc::default(),
        })
    }

    /// For crash tests on fakes: sagas of this cloud stop dead at every
    /// fault point `hook` returns true for (see [`saga`]).
    pub fn with_crash_hook(mut self, hook: CrashHook) -> Cloud {
        self.crash_hook = Some(hook);
        self
    }

    /// The network data plane of this host (a fake one until this is called), and the
    /// host's name.
    pub fn with_network_plane(
        mut self,
        plane: Arc<dyn netplane::NetworkPlane>,
        host: &str,
    ) -> Cloud {
        self.plane = plane;
        self.host = host.into();
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &CloudConfig {
        &self.config
    }

    /// Finishes or undoes whatever a previous run left half-way; run once at
    /// start-up before serving. Returns a line per thing it repaired.
    pub async fn reconcile(&self) -> Result<Vec<String>> {
        self.store.clear_quota_reservations().await?;
        let mut repaired = self.recover_sagas().await?;
        // Taps exist before compute's repair starts any server.
        repaired.extend(self.release_orphan_ports().await?);
        self.sync_network().await;
        repaired.extend(compute::reconcile(self).await?);
        repaired.extend(images::reconcile(self).await?);
        repaired.extend(volumes::reconcile(self).await?);
        self.gc_ready
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // A chain that cannot be read (a file gone behind the service's
        // back) stops the collection, never a reason to delete; the service
        // still starts, and says so.
        match self.collect_garbage().await {
            Ok(removed) => repaired.extend(
                removed
                    .into_iter()
                    .map(|l| format!("pool data {l} no record needs removed")),
            ),
            Err(e) => {
                tracing::error!(error = %e, "garbage collection stopped: nothing deleted");
                repaired.push(format!("garbage collection stopped, nothing deleted: {e}"));
            }
        }
        Ok(repaired)
    }

    /// What garbage collection keeps (with whatever each stands on): live
    /// servers' disks, restore points' layers, the data of images that are
    /// active or deactivated, of volumes and volume snapshots not being
    /// deleted — and everything open sagas name.
    pub(crate) async fn gc_roots(&self) -> Result<BTreeSet<String>> {
        let mut roots = self.saga_roots().await?;
        for server in self.store.servers(None).await? {
            roots.extend(server.root_disk);
        }
        roots.extend(self.restore_point_roots().await?);
        for status in [
            domain::image::ImageStatus::Active,
            domain::image::ImageStatus::Deactivated,
        ] {
            for image in self.store.images_in_status(status).await? {
                roots.extend(image.location);
            }
        }
        roots.extend(volumes::garbage_roots(self).await?);
        Ok(roots)
    }

    /// Removes pool data no root ([`gc_roots`](Cloud::gc_roots)) needs;
    /// the pool keeps whatever those stand on (backing layers, cloned
    /// snapshots). Layers released by deletes are merged first
    /// ([`shorten_chains`](Cloud::shorten_chains)), so that they become
    /// garbage. What goes is decided under the lock held exclusively (no
    /// operation creates data or records meanwhile) and deleted after it is
    /// released; each deletion is logged with its reason by the pool.
    /// Repeated while a round deletes something (an RBD image's deletion
    /// can free the snapshot it was cloned from).
    pub async fn collect_garbage(&self) -> Result<Vec<String>> {
        if !self.gc_ready.load(std::sync::atomic::Ordering::SeqCst) {
            tracing::debug!("garbage collection waits for start-up recovery");
            return Ok(Vec::new());
        }
        self.shorten_chains_quietly().await;
        let mut removed = Vec::new();
        for _ in 0..GC_ROUNDS {
            let (pool_garbage, volume_garbage) = {
                let _exclusive = self.gc_lock.write().await;
                let roots = self.gc_roots().await?;
                let pool_garbage = self.pool.plan_garbage(&roots).await?;
                let volume_garbage = match self.pool.volumes() {
                    Some(volumes) => volumes.plan_volume_garbage(&roots).await?,
                    None => Vec::new(),
                };
                (pool_garbage, volume_garbage)
            };
            if pool_garbage.is_empty() && volume_garbage.is_empty() {
                break;
            }
            let mut round = self.pool.delete_garbage(&pool_garbage).await?;
            if let Some(volumes) = self.pool.volumes() {
                round.extend(volumes.delete_volume_garbage(&volume_garbage).await?);
            }
            if round.is_empty() {
                break;
            }
            removed.extend(round);
        }
        // Exports of images that went (each removal is logged).
        self.sweep_exports(false).await;
        Ok(removed)
    }

    /// Runs garbage collection, logging rather than returning a failure.
    pub(crate) async fn collect_garbage_quietly(&self) {
        if let Err(e) = self.collect_garbage().await {
            tracing::warn!(error = %e, "garbage collection failed; it runs again at the next start");
        }
    }
}
