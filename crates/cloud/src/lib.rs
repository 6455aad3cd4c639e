//! Snapstack's use-cases: identity and images (later servers, volumes,
//! snapshots, restore points), on top of the store and the driver traits.
//!
//! [`Cloud`] is usable without the HTTP API: the API crate only parses
//! requests, calls a method here and converts the result. `Cloud` knows the
//! storage pool only through [`storage::Pool`].

pub mod compute;
mod fault;
pub mod identity;
pub mod images;
pub mod quotas;
pub mod restore_points;
pub mod volumes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use domain::Result;
use hypervisor::Hypervisor;
use storage::qemu_img::Limits;
use storage::Pool;
use store::Store;

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
    /// Held (shared) by every operation that creates pool data before the
    /// database refers to it; garbage collection takes it exclusively.
    gc_lock: Arc<tokio::sync::RwLock<()>>,
    /// Held from a cut of attached volumes until their new locations are
    /// recorded, so that two snapshots never move one volume at once.
    cut_lock: Arc<tokio::sync::Mutex<()>>,
}

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
        Ok(Cloud {
            store,
            pool,
            hypervisor,
            passwords,
            config: Arc::new(config),
            gc_lock: Arc::default(),
            cut_lock: Arc::default(),
        })
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
        let mut repaired = restore_points::recover(self).await?;
        repaired.extend(compute::reconcile(self).await?);
        repaired.extend(images::reconcile(self).await?);
        repaired.extend(volumes::reconcile(self).await?);
        let removed = self.collect_garbage().await?;
        repaired.extend(
            removed
                .into_iter()
                .map(|l| format!("pool data {l} no record needs removed")),
        );
        Ok(repaired)
    }

    /// Removes pool data no record needs: the roots are live servers' disks,
    /// the data of images that are active or deactivated, and of volumes and
    /// volume snapshots not deleted; the pool
    /// keeps whatever those stand on (backing layers, cloned snapshots).
    pub async fn collect_garbage(&self) -> Result<Vec<String>> {
        let _exclusive = self.gc_lock.write().await;
        let mut roots = std::collections::BTreeSet::new();
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
        let mut removed = self.pool.collect_garbage(&roots).await?;
        removed.extend(volumes::collect_garbage(self, &roots).await?);
        for location in &removed {
            tracing::info!(%location, "pool data released");
        }
        Ok(removed)
    }

    /// Runs garbage collection, logging rather than returning a failure.
    pub(crate) async fn collect_garbage_quietly(&self) {
        if let Err(e) = self.collect_garbage().await {
            tracing::warn!(error = %e, "garbage collection failed; it runs again at the next start");
        }
    }
}
