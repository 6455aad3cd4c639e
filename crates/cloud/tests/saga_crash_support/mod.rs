//! The rig of `saga_crash_fakes`: a cloud on fakes (store, pool,
//! hypervisor) that can be "restarted", with a crash hook every `Cloud` of
//! it shares, and the invariants checked after each recovery.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloud::compute::{BlockDevice, NewServer};
use cloud::images::NewImage;
use cloud::volumes::{NewSnapshot, NewVolume};
use cloud::{Cloud, CloudConfig};
use domain::identity::{Caller, Role};
use domain::image::ImageStatus;
use domain::restore_point::RestorePointStatus;
use domain::server::{Flavor, VmState};
use domain::volume::{SnapshotStatus, VolumeStatus};
use domain::{ServerId, VolumeId};
use hypervisor::{FakeHypervisor, Hypervisor};
use storage::fake::FakePool;
use storage::volumes::VolumePool;
use storage::{DiskSource, Pool};
use store::Store;

const PASSWORD: &str = "admin-pw";
pub const WAIT: Duration = Duration::from_secs(5);

/// What the crash hook does, shared by every `Cloud` of a rig.
#[derive(Debug, Default)]
pub struct Plan {
    /// Only fault points of these kinds are seen (one saga of each).
    kinds: Vec<&'static str>,
    crash_at: Vec<String>,
    seen: Vec<String>,
    /// Where sagas died (one per kind at most).
    crashed: Vec<String>,
}

/// A cloud on fakes that can be "restarted".
pub struct Rig {
    pub store: Store,
    pub pool: Arc<FakePool>,
    pub hv: Arc<FakeHypervisor>,
    pub cloud: Cloud,
    pub plan: Arc<Mutex<Plan>>,
    pub admin: Caller,
    pub image_id: String,
    /// An image whose servers are quiesced for snapshots.
    pub quiesced_image_id: String,
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub async fn new(native: bool) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(if native {
            FakePool::native()
        } else {
            FakePool::new()
        });
        let hv = Arc::new(FakeHypervisor::new());
        let files = pool.clone();
        hv.on_file_created(Arc::new(move |path| files.file_created(path)));
        let store = Store::in_memory().await.unwrap();
        let plan = Arc::new(Mutex::new(Plan::default()));
        let cloud = new_cloud(&store, &pool, &hv, &plan, dir.path()).await;
        cloud.reconcile().await.unwrap();
        cloud
            .bootstrap("admin", "admin", PASSWORD, false)
            .await
            .unwrap();
        // The admin's token as a login would give it (without hashing the
        // password again: 47 rigs).
        let (user, _) = store.user_by_name("admin").await.unwrap().unwrap();
        let project = store.project_by_name("admin").await.unwrap().unwrap();
        let admin = Caller {
            user_id: user.id,
            user_name: user.name,
            project_id: Some(project.id),
            project_name: Some(project.name),
            roles: vec![Role::Admin],
            expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
            restricted_app_credential: false,
        };
        let flavor = Flavor {
            id: "tiny".into(),
            name: "tiny".into(),
            vcpus: 1,
            ram: 256,
            disk: 1,
            ephemeral: 0,
            swap: 0,
            is_public: true,
            description: None,
            extra_specs: Default::default(),
        };
        cloud.create_flavor(&admin, flavor).await.unwrap();
        // Hundreds of operations in one project: no quota stops them.
        let project_id = project.id.to_string();
        for (service, resources) in [
            (
                cloud::quotas::Service::Compute,
                &["instances", "cores", "ram"][..],
            ),
            (
                cloud::quotas::Service::Volume,
                &["volumes", "snapshots", "gigabytes"][..],
            ),
        ] {
            let unlimited = resources.iter().map(|r| (r.to_string(), -1)).collect();
            cloud
                .update_quotas(&admin, service, &project_id, unlimited, true)
                .await
                .unwrap();
        }
        let image_id = upload_image(&cloud, &admin, BTreeMap::new()).await;
        let quiesce = BTreeMap::from([
            ("hw_qemu_guest_agent".to_string(), "yes".to_string()),
            ("os_require_quiesce".to_string(), "yes".to_string()),
        ]);
        let quiesced_image_id = upload_image(&cloud, &admin, quiesce).await;
        Rig {
            store,
            pool,
            hv,
            cloud,
            plan,
            admin,
            image_id,
            quiesced_image_id,
            dir,
        }
    }

    /// The restart: a new cloud over the same store, pool and hypervisor,
    /// reconciled. A reconcile that fails is a finding.
    pub async fn restart(&mut self) -> Result<Vec<String>, String> {
        self.cloud = new_cloud(
            &self.store,
            &self.pool,
            &self.hv,
            &self.plan,
            self.dir.path(),
        )
        .await;
        self.cloud
            .reconcile()
            .await
            .map_err(|e| format!("reconcile failed: {e}"))
    }

    pub fn arm(&self, kinds: &[&'static str], crash_at: &[&str]) {
        *self.plan.lock().unwrap() = Plan {
            kinds: kinds.to_vec(),
            crash_at: crash_at.iter().map(|p| p.to_string()).collect(),
            seen: Vec::new(),
            crashed: Vec::new(),
        };
    }

    pub fn seen(&self) -> Vec<String> {
        self.plan.lock().unwrap().seen.clone()
    }

    pub fn crashed(&self) -> usize {
        self.plan.lock().unwrap().crashed.len()
    }

    pub async fn server(&self) -> ServerId {
        self.server_of(&self.image_id).await
    }

    pub async fn server_of(&self, image_id: &str) -> ServerId {
        let new = NewServer {
            name: "s".into(),
            image_ref: image_id.to_string(),
            flavor_ref: "tiny".into(),
            ..Default::default()
        };
        let server = self.cloud.create_server(&self.admin, new).await.unwrap();
        self.settled(server.id).await;
        server.id
    }

    /// A server booted from `root` with `data` attached too (both made
    /// beforehand: the build polls volumes still being created slowly).
    pub async fn volume_backed_server(&self, root: VolumeId, data: VolumeId) -> ServerId {
        let device = |uuid: VolumeId, boot_index| BlockDevice {
            source_type: "volume".into(),
            destination_type: "volume".into(),
            uuid: Some(uuid.to_string()),
            boot_index,
            volume_size: Some(1),
            delete_on_termination: false,
            device_name: None,
        };
        let new = NewServer {
            name: "bfv".into(),
            flavor_ref: "tiny".into(),
            block_devices: vec![device(root, Some(0)), device(data, None)],
            ..Default::default()
        };
        let server = self.cloud.create_server(&self.admin, new).await.unwrap();
        self.settled(server.id).await;
        server.id
    }

    pub async fn settled(&self, id: ServerId) {
        let deadline = Instant::now() + WAIT;
        while self.store.server(id).await.unwrap().task_state.is_some() {
            assert!(Instant::now() < deadline, "server {id} never settled");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub async fn blank(&self) -> VolumeId {
        let new = NewVolume {
            size: Some(1),
            ..Default::default()
        };
        let volume = self.cloud.create_volume(&self.admin, new).await.unwrap();
        let deadline = Instant::now() + WAIT;
        while self.store.volume(volume.id).await.unwrap().status != VolumeStatus::Available {
            assert!(
                Instant::now() < deadline,
                "volume {} never available",
                volume.id
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        volume.id
    }

    pub async fn snapshot(&self, volume: VolumeId, force: bool) -> String {
        let new = NewSnapshot {
            volume_id: volume.to_string(),
            name: None,
            description: None,
            metadata: BTreeMap::new(),
            force,
        };
        let snap = self
            .cloud
            .create_volume_snapshot(&self.admin, new)
            .await
            .unwrap();
        snap.id.to_string()
    }

    pub async fn wait_snapshot(&self, id: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let snap = self.cloud.volume_snapshot(&self.admin, id).await.unwrap();
            if snap.status == SnapshotStatus::Available {
                return;
            }
            assert!(Instant::now() < deadline, "snapshot {id} never available");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A disk-only point of `server`, waited for; its id.
    pub async fn point(&self, server: ServerId) -> String {
        let point = self
            .cloud
            .create_restore_point(&self.admin, &server.to_string(), disk_only_point())
            .await
            .unwrap();
        self.settled(server).await;
        point.id.to_string()
    }

    /// The available points of `server`, oldest first.
    pub async fn points(&self, server: ServerId) -> Vec<String> {
        self.store
            .restore_points(Some(server))
            .await
            .unwrap()
            .into_iter()
            .filter(|p| p.status == RestorePointStatus::Available)
            .map(|p| p.id.to_string())
            .collect()
    }

    /// An available point of `server` (one is made when it has none).
    pub async fn available_point(&self, server: ServerId) -> String {
        match self.points(server).await.into_iter().next() {
            Some(point) => point,
            None => self.point(server).await,
        }
    }

    /// Waits until no saga is open (the background part of an operation ran).
    pub async fn sagas_closed(&self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        while !self.store.open_sagas().await.unwrap().is_empty() {
            if Instant::now() > deadline {
                return Err("a saga never ended".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    pub async fn until_crashed(&self, sagas: usize) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        while self.crashed() < sagas {
            if Instant::now() > deadline {
                return Err("the fault point was never reached".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// How many images are active, volumes usable, snapshots and restore
    /// points available, and sagas finished forward: what finished
    /// operations made (a revert or a delete makes only the last).
    pub async fn made(&self) -> usize {
        let finished = self.store.sagas_finished().await.unwrap() as usize;
        let images = self
            .store
            .images_in_status(ImageStatus::Active)
            .await
            .unwrap()
            .len();
        let volumes = self.store.volumes(None).await.unwrap();
        let usable = volumes
            .iter()
            .filter(|v| matches!(v.status, VolumeStatus::Available | VolumeStatus::InUse))
            .count();
        let snapshots = self.store.volume_snapshots(None).await.unwrap();
        let available = snapshots
            .iter()
            .filter(|s| s.status == SnapshotStatus::Available)
            .count();
        images + usable + available + finished
    }

    /// Everything wrong with the cloud now (empty when the invariants hold).
    pub async fn violations(&self) -> Vec<String> {
        let mut wrong = Vec::new();
        for saga in self.store.open_sagas().await.unwrap() {
            wrong.push(format!(
                "saga {} ({}) open at {}",
                saga.id, saga.kind, saga.step
            ));
        }
        let mut needed: Vec<(String, String)> = Vec::new();
        for server in self.store.servers(None).await.unwrap() {
            if server.vm_state == VmState::Deleted {
                continue;
            }
            let what = format!("server {}", server.id);
            if let Some(task) = server.task_state {
                wrong.push(format!("{what} still has task {task:?}"));
            }
            let name = server.id.to_string();
            let live = matches!(
                self.hv.status(&name).await,
                Ok(hypervisor::VmStatus::Running | hypervisor::VmStatus::Paused { .. })
            );
            if self.hv.is_frozen(&name) {
                wrong.push(format!("{what}: its guest is still frozen"));
            }
            if let Some(root) = &server.root_disk {
                needed.push((what.clone(), root.clone()));
                if live {
                    let writes = self.hv.active_disk_file(&name, "root").await.ok();
                    let named = file_of(self.pool.disk_source(root));
                    if writes != named {
                        wrong.push(format!(
                            "{what}: QEMU writes {writes:?}, the row names {root}"
                        ));
                    }
                }
            }
            for attachment in self.store.attachments_of_server(server.id).await.unwrap() {
                let volume = self.store.volume(attachment.volume_id).await.unwrap();
                if !live {
                    continue;
                }
                let writes = self
                    .hv
                    .active_disk_file(&name, &attachment.disk_id)
                    .await
                    .ok();
                let named = volume
                    .location
                    .as_deref()
                    .and_then(|l| file_of(self.pool.fake_volumes().volume_source(l)));
                if writes != named {
                    wrong.push(format!(
                        "{what}: QEMU writes {writes:?} for volume {}, its row names {:?}",
                        volume.id, volume.location
                    ));
                }
            }
        }
        for status in ImageStatus::ALL {
            for image in self.store.images_in_status(status).await.unwrap() {
                let what = format!("image {} ({status:?})", image.id);
                match status {
                    ImageStatus::Queued | ImageStatus::Saving => {
                        wrong.push(format!("{what} is transitional"))
                    }
                    ImageStatus::Active | ImageStatus::Deactivated => {
                        match (&image.location, image.size) {
                            (Some(location), _) => needed.push((what, location.clone())),
                            (None, Some(0)) => {}
                            (None, _) => wrong.push(format!("{what} has no data")),
                        }
                    }
                    ImageStatus::Killed | ImageStatus::Deleted => {}
                }
            }
        }
        for volume in self.store.volumes(None).await.unwrap() {
            let what = format!("volume {} ({})", volume.id, volume.status);
            match volume.status {
                VolumeStatus::Available | VolumeStatus::InUse => match &volume.location {
                    Some(location) => needed.push((what, location.clone())),
                    None => wrong.push(format!("{what} has no data")),
                },
                VolumeStatus::Error | VolumeStatus::Deleted => {}
                _ => wrong.push(format!("{what} is transitional")),
            }
        }
        for snap in self.store.volume_snapshots(None).await.unwrap() {
            let what = format!("volume snapshot {} ({})", snap.id, snap.status);
            match snap.status {
                SnapshotStatus::Available => match &snap.location {
                    Some(location) => needed.push((what, location.clone())),
                    None => wrong.push(format!("{what} has no data")),
                },
                SnapshotStatus::Error | SnapshotStatus::Deleted => {}
                _ => wrong.push(format!("{what} is transitional")),
            }
        }
        for point in self.store.restore_points(None).await.unwrap() {
            let what = format!("restore point {} ({})", point.id, point.status);
            match point.status {
                RestorePointStatus::Available => {
                    for disk in &point.disks {
                        needed.push((what.clone(), disk.layer.clone()));
                    }
                    // A memory state the pool keeps (the fake's native points).
                    if let Some(state) = point.state_file.as_ref().filter(|s| s.contains("://")) {
                        needed.push((what.clone(), state.clone()));
                    }
                }
                RestorePointStatus::Error => {}
                _ => wrong.push(format!("{what} is transitional")),
            }
        }
        let mut kept = BTreeSet::new();
        for (what, location) in &needed {
            for link in self.pool.chain(location) {
                if !self.pool.exists(&link) {
                    wrong.push(format!("{what} needs {link} ({location}), which is gone"));
                }
                kept.insert(link);
            }
        }
        // After a collection, the pool holds what rows need and nothing else.
        if let Err(e) = self.cloud.collect_garbage().await {
            wrong.push(format!("garbage collection failed: {e}"));
        }
        for location in self.pool.objects().keys() {
            if !kept.contains(location) {
                wrong.push(format!("{location} is in the pool, no row needs it"));
            }
        }
        wrong
    }
}

pub async fn new_cloud(
    store: &Store,
    pool: &Arc<FakePool>,
    hv: &Arc<FakeHypervisor>,
    plan: &Arc<Mutex<Plan>>,
    dir: &std::path::Path,
) -> Cloud {
    let config = CloudConfig {
        token_ttl: Duration::from_secs(3600),
        image_size_cap: 1 << 30,
        staging_dir: dir.join("staging"),
        qemu_img_limits: storage::qemu_img::Limits::default(),
        state_dir: dir.join("state"),
        shutdown_timeout: Duration::from_secs(1),
        max_chain_depth: 16,
        max_virtual_size: 1 << 40,
        image_quota: Default::default(),
        exports: Default::default(),
        restore_point_quota: Default::default(),
        identity: Default::default(),
    };
    let plan = plan.clone();
    let hook = Arc::new(move |point: &str| {
        let mut plan = plan.lock().unwrap();
        let kind = point.split(':').next().unwrap_or_default();
        let dead = plan
            .crashed
            .iter()
            .any(|p| p.starts_with(&format!("{kind}:")));
        if !plan.kinds.contains(&kind) || dead {
            return false;
        }
        plan.seen.push(point.to_string());
        let crash = plan.crash_at.iter().any(|p| p == point);
        if crash {
            plan.crashed.push(point.to_string());
        }
        crash
    });
    Cloud::new(store.clone(), pool.clone(), hv.clone(), config)
        .await
        .unwrap()
        .with_crash_hook(hook)
}

pub fn disk_only_point() -> domain::restore_point::NewRestorePoint {
    domain::restore_point::NewRestorePoint {
        name: "p".into(),
        memory: false,
        method: domain::restore_point::RestoreMethod::External,
        quiesce: false,
    }
}

pub fn file_of(source: domain::Result<DiskSource>) -> Option<PathBuf> {
    match source {
        Ok(DiskSource::File { path, .. }) => Some(path),
        _ => None,
    }
}

pub async fn upload_image(
    cloud: &Cloud,
    caller: &Caller,
    properties: BTreeMap<String, String>,
) -> String {
    let new = NewImage {
        name: Some("guest".into()),
        properties,
        disk_format: Some("raw".into()),
        container_format: Some("bare".into()),
        ..Default::default()
    };
    let image = cloud.create_image(caller, new).await.unwrap();
    let data = Bytes::from(vec![0x5a_u8; 64 * 1024]);
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(data)]);
    let id = image.id.to_string();
    cloud.upload_image(caller, &id, body, None).await.unwrap();
    id
}
