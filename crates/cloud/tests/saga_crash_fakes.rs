//! Every saga kind, crashed at every fault point, on fakes: the operation
//! is started through the public [`Cloud`] API with an in-process crash
//! hook that stops the saga dead at one fault point (as if the process
//! died there), then "the restart" — a new [`Cloud`] over the same store,
//! the same [`FakePool`] and the same [`FakeHypervisor`] — reconciles, and
//! the invariants of DESIGN.md §5 are checked:
//!
//! - no open saga is left, no row (server task, image, volume, volume
//!   snapshot, restore point) is in a transitional state;
//! - every location a row names exists in the pool, with every layer,
//!   snapshot or image it stands on;
//! - what a live VM writes is what its rows name (root disk, volumes), and
//!   no guest stays frozen;
//! - an image is active with data or gone, a volume or snapshot available
//!   with data or in error (the operation finished or left nothing);
//! - after a collection, the pool holds nothing no row needs.
//!
//! Layered-pool server-image cases are the slow ones: the saga reads the
//! frozen layer's size and the chain with `qemu-img` on the fake's paths
//! (`layer_size`, `shorten_chain`), a process each time, failing.
//!
//! The fault points are not listed here: each scenario first runs with a
//! hook that records every point its kind passes (`"{kind}:{step}:start"`,
//! `"{kind}:{step}"`), and the test asserts they cover every step the saga
//! registry declares. Each recorded point is then crashed at; the points
//! the recovery passes are recorded too, and every `":undo"` point among
//! them is crashed at once more during recovery (a second crash), followed
//! by a second restart.
//!
//! Scenarios `…WhenTheCutFails` (`…WhenThePoolFails`) make the fake
//! hypervisor fail the cut (the fake volume pool fail to make data), so
//! the saga undoes itself in process: their `":undo"` points are crashed at
//! as first crashes. After each recovery the same operation (without the
//! failure) runs once more on the same server or volume and must make
//! something. Two more tests stop two sagas of different kinds at once.
//!
//! Adding a saga kind: add a [`Scenario`] variant (what it prepares, how it
//! starts the operation) and its line in `crash_tests!`;
//! [`every_saga_kind_has_a_scenario`] fails until then.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloud::compute::{AttachVolume, BlockDevice, NewServer};
use cloud::images::NewImage;
use cloud::volumes::{NewSnapshot, NewVolume};
use cloud::{Cloud, CloudConfig};
use domain::identity::{Caller, Role};
use domain::image::ImageStatus;
use domain::restore_point::RestorePointStatus;
use domain::server::{Flavor, ServerAction, VmState};
use domain::volume::{SnapshotStatus, VolumeStatus};
use domain::{ServerId, VolumeId};
use hypervisor::{FakeHypervisor, Hypervisor, Operation};
use storage::fake::FakePool;
use storage::volumes::VolumePool;
use storage::{DiskSource, Pool};
use store::Store;

const PASSWORD: &str = "admin-pw";
const WAIT: Duration = Duration::from_secs(5);

/// One way to start an operation of one saga kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    ImageOfRunningServer,
    /// Its image asks for a quiesced guest (the guest agent freezes it).
    ImageOfQuiescedServer,
    ImageOfStoppedServer,
    ImageOfVolumeBackedServer,
    BlankVolume,
    VolumeFromImage,
    VolumeFromSnapshot,
    VolumeFromVolume,
    SnapshotOfAvailableVolume,
    SnapshotOfInUseVolume,
    /// A disk-only restore point of a running server.
    PointOfRunningServer,
    /// A revert to a disk-only point (the server ends stopped on it).
    RevertToPoint,
    /// A delete of a point (one is made first when the server has none).
    DeletePoint,
    /// The hypervisor fails the cut: the saga undoes itself (in process).
    ImageWhenTheCutFails,
    VolumeBackedImageWhenTheCutFails,
    InUseSnapshotWhenTheCutFails,
    /// The pool fails to make the data: the saga undoes itself.
    BlankVolumeWhenThePoolFails,
    VolumeFromVolumeWhenThePoolFails,
    SnapshotWhenThePoolFails,
}

/// What is made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Hypervisor(Operation),
    /// The volume pool's next creating call.
    VolumePool,
}

/// What a scenario made before the operation under test.
#[derive(Debug, Default)]
struct Prepared {
    server: Option<ServerId>,
    volume: Option<VolumeId>,
    snapshot: Option<String>,
}

impl Scenario {
    /// The same operation without an injected failure.
    fn without_failure(self) -> Scenario {
        match self {
            Scenario::ImageWhenTheCutFails => Scenario::ImageOfRunningServer,
            Scenario::VolumeBackedImageWhenTheCutFails => Scenario::ImageOfVolumeBackedServer,
            Scenario::InUseSnapshotWhenTheCutFails => Scenario::SnapshotOfInUseVolume,
            Scenario::BlankVolumeWhenThePoolFails => Scenario::BlankVolume,
            Scenario::VolumeFromVolumeWhenThePoolFails => Scenario::VolumeFromVolume,
            Scenario::SnapshotWhenThePoolFails => Scenario::SnapshotOfAvailableVolume,
            other => other,
        }
    }

    /// The hypervisor operation made to fail, if any.
    fn failure(self) -> Option<Failure> {
        match self {
            Scenario::ImageWhenTheCutFails => Some(Failure::Hypervisor(Operation::SnapshotDisk)),
            Scenario::VolumeBackedImageWhenTheCutFails | Scenario::InUseSnapshotWhenTheCutFails => {
                Some(Failure::Hypervisor(Operation::CreateRestorePoint))
            }
            Scenario::BlankVolumeWhenThePoolFails
            | Scenario::VolumeFromVolumeWhenThePoolFails
            | Scenario::SnapshotWhenThePoolFails => Some(Failure::VolumePool),
            _ => None,
        }
    }

    /// The saga kind the operation runs as.
    fn kind(self) -> &'static str {
        if self.without_failure() != self {
            return self.without_failure().kind();
        }
        match self {
            Scenario::ImageOfRunningServer
            | Scenario::ImageOfQuiescedServer
            | Scenario::ImageOfStoppedServer => "server-image",
            Scenario::ImageOfVolumeBackedServer => "server-volume-image",
            Scenario::BlankVolume
            | Scenario::VolumeFromImage
            | Scenario::VolumeFromSnapshot
            | Scenario::VolumeFromVolume => "volume-create",
            Scenario::SnapshotOfAvailableVolume | Scenario::SnapshotOfInUseVolume => {
                "volume-snapshot"
            }
            Scenario::PointOfRunningServer => "restore-point-create",
            Scenario::RevertToPoint => "restore-point-revert",
            Scenario::DeletePoint => "restore-point-delete",
            Scenario::ImageWhenTheCutFails
            | Scenario::VolumeBackedImageWhenTheCutFails
            | Scenario::InUseSnapshotWhenTheCutFails
            | Scenario::BlankVolumeWhenThePoolFails
            | Scenario::VolumeFromVolumeWhenThePoolFails
            | Scenario::SnapshotWhenThePoolFails => {
                unreachable!("{self:?} is {:?} with a failure", self.without_failure())
            }
        }
    }

    /// Makes what the operation needs (no fault point is armed yet).
    async fn prepare(self, rig: &Rig) -> Prepared {
        if self.without_failure() != self {
            return Box::pin(self.without_failure().prepare(rig)).await;
        }
        match self {
            Scenario::ImageOfRunningServer => Prepared {
                server: Some(rig.server().await),
                ..Prepared::default()
            },
            Scenario::ImageOfQuiescedServer => Prepared {
                server: Some(rig.server_of(&rig.quiesced_image_id).await),
                ..Prepared::default()
            },
            Scenario::ImageOfStoppedServer => {
                let server = rig.server().await;
                rig.cloud
                    .server_action(&rig.admin, &server.to_string(), ServerAction::Stop)
                    .await
                    .unwrap();
                rig.settled(server).await;
                Prepared {
                    server: Some(server),
                    ..Prepared::default()
                }
            }
            Scenario::ImageOfVolumeBackedServer => {
                let root = rig.blank().await;
                let data = rig.blank().await;
                let server = rig.volume_backed_server(root, data).await;
                Prepared {
                    server: Some(server),
                    volume: Some(root),
                    ..Prepared::default()
                }
            }
            Scenario::BlankVolume | Scenario::VolumeFromImage => Prepared::default(),
            Scenario::VolumeFromSnapshot => {
                let volume = rig.blank().await;
                let snapshot = rig.snapshot(volume, false).await;
                rig.wait_snapshot(&snapshot).await;
                Prepared {
                    volume: Some(volume),
                    snapshot: Some(snapshot),
                    ..Prepared::default()
                }
            }
            Scenario::VolumeFromVolume | Scenario::SnapshotOfAvailableVolume => Prepared {
                volume: Some(rig.blank().await),
                ..Prepared::default()
            },
            Scenario::PointOfRunningServer => Prepared {
                server: Some(rig.server().await),
                ..Prepared::default()
            },
            Scenario::RevertToPoint | Scenario::DeletePoint => {
                let server = rig.server().await;
                rig.point(server).await;
                Prepared {
                    server: Some(server),
                    ..Prepared::default()
                }
            }
            Scenario::SnapshotOfInUseVolume => {
                let server = rig.server().await;
                let volume = rig.blank().await;
                let request = AttachVolume {
                    volume_id: volume.to_string(),
                    ..Default::default()
                };
                rig.cloud
                    .attach_volume(&rig.admin, &server.to_string(), request)
                    .await
                    .unwrap();
                rig.settled(server).await;
                Prepared {
                    server: Some(server),
                    volume: Some(volume),
                    ..Prepared::default()
                }
            }
            Scenario::ImageWhenTheCutFails
            | Scenario::VolumeBackedImageWhenTheCutFails
            | Scenario::InUseSnapshotWhenTheCutFails
            | Scenario::BlankVolumeWhenThePoolFails
            | Scenario::VolumeFromVolumeWhenThePoolFails
            | Scenario::SnapshotWhenThePoolFails => {
                unreachable!("{self:?} is {:?} with a failure", self.without_failure())
            }
        }
    }

    /// Starts the operation under test; a crash may make it fail.
    async fn start(self, rig: &Rig, prepared: &Prepared) -> domain::Result<()> {
        if let Some(failure) = self.failure() {
            match failure {
                Failure::Hypervisor(operation) => {
                    rig.hv.fail_next(operation, hypervisor::ErrorKind::Monitor)
                }
                Failure::VolumePool => rig.pool.fake_volumes().fail_next_create(true),
            }
            return Box::pin(self.without_failure().start(rig, prepared)).await;
        }
        let server = prepared.server.map(|s| s.to_string()).unwrap_or_default();
        let volume = prepared.volume.map(|v| v.to_string());
        match self {
            Scenario::ImageOfRunningServer
            | Scenario::ImageOfQuiescedServer
            | Scenario::ImageOfStoppedServer
            | Scenario::ImageOfVolumeBackedServer => rig
                .cloud
                .create_server_image(&rig.admin, &server, "snap".into(), BTreeMap::new())
                .await
                .map(drop),
            Scenario::BlankVolume
            | Scenario::VolumeFromImage
            | Scenario::VolumeFromSnapshot
            | Scenario::VolumeFromVolume => {
                let new = NewVolume {
                    size: Some(1),
                    image_ref: (self == Scenario::VolumeFromImage).then(|| rig.image_id.clone()),
                    snapshot_id: prepared.snapshot.clone(),
                    source_volid: volume.filter(|_| self == Scenario::VolumeFromVolume),
                    ..Default::default()
                };
                rig.cloud.create_volume(&rig.admin, new).await.map(drop)
            }
            Scenario::SnapshotOfAvailableVolume | Scenario::SnapshotOfInUseVolume => {
                let new = NewSnapshot {
                    volume_id: volume.unwrap_or_default(),
                    name: Some("snap".into()),
                    description: None,
                    metadata: BTreeMap::new(),
                    force: true,
                };
                rig.cloud
                    .create_volume_snapshot(&rig.admin, new)
                    .await
                    .map(drop)
            }
            Scenario::PointOfRunningServer => rig
                .cloud
                .create_restore_point(&rig.admin, &server, disk_only_point())
                .await
                .map(drop),
            Scenario::RevertToPoint => {
                let point = rig.available_point(prepared.server.unwrap()).await;
                rig.cloud
                    .revert_to_restore_point(&rig.admin, &server, &point)
                    .await
                    .map(drop)
            }
            Scenario::DeletePoint => {
                let id = prepared.server.unwrap();
                let point = match rig.points(id).await.pop() {
                    Some(point) => point,
                    None => rig.point(id).await,
                };
                rig.cloud
                    .delete_restore_point(&rig.admin, &server, &point)
                    .await
            }
            Scenario::ImageWhenTheCutFails
            | Scenario::VolumeBackedImageWhenTheCutFails
            | Scenario::InUseSnapshotWhenTheCutFails
            | Scenario::BlankVolumeWhenThePoolFails
            | Scenario::VolumeFromVolumeWhenThePoolFails
            | Scenario::SnapshotWhenThePoolFails => {
                unreachable!("{self:?} is {:?} with a failure", self.without_failure())
            }
        }
    }
}

/// What the crash hook does, shared by every `Cloud` of a rig.
#[derive(Debug, Default)]
struct Plan {
    /// Only fault points of these kinds are seen (one saga of each).
    kinds: Vec<&'static str>,
    crash_at: Vec<String>,
    seen: Vec<String>,
    /// Where sagas died (one per kind at most).
    crashed: Vec<String>,
}

/// A cloud on fakes that can be "restarted".
struct Rig {
    store: Store,
    pool: Arc<FakePool>,
    hv: Arc<FakeHypervisor>,
    cloud: Cloud,
    plan: Arc<Mutex<Plan>>,
    admin: Caller,
    image_id: String,
    /// An image whose servers are quiesced for snapshots.
    quiesced_image_id: String,
    dir: tempfile::TempDir,
}

impl Rig {
    async fn new(native: bool) -> Rig {
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
    async fn restart(&mut self) -> Result<Vec<String>, String> {
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

    fn arm(&self, kinds: &[&'static str], crash_at: &[&str]) {
        *self.plan.lock().unwrap() = Plan {
            kinds: kinds.to_vec(),
            crash_at: crash_at.iter().map(|p| p.to_string()).collect(),
            seen: Vec::new(),
            crashed: Vec::new(),
        };
    }

    fn seen(&self) -> Vec<String> {
        self.plan.lock().unwrap().seen.clone()
    }

    fn crashed(&self) -> usize {
        self.plan.lock().unwrap().crashed.len()
    }

    async fn server(&self) -> ServerId {
        self.server_of(&self.image_id).await
    }

    async fn server_of(&self, image_id: &str) -> ServerId {
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
    async fn volume_backed_server(&self, root: VolumeId, data: VolumeId) -> ServerId {
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

    async fn settled(&self, id: ServerId) {
        let deadline = Instant::now() + WAIT;
        while self.store.server(id).await.unwrap().task_state.is_some() {
            assert!(Instant::now() < deadline, "server {id} never settled");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn blank(&self) -> VolumeId {
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

    async fn snapshot(&self, volume: VolumeId, force: bool) -> String {
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

    async fn wait_snapshot(&self, id: &str) {
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
    async fn point(&self, server: ServerId) -> String {
        let point = self
            .cloud
            .create_restore_point(&self.admin, &server.to_string(), disk_only_point())
            .await
            .unwrap();
        self.settled(server).await;
        point.id.to_string()
    }

    /// The available points of `server`, oldest first.
    async fn points(&self, server: ServerId) -> Vec<String> {
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
    async fn available_point(&self, server: ServerId) -> String {
        match self.points(server).await.into_iter().next() {
            Some(point) => point,
            None => self.point(server).await,
        }
    }

    /// Waits until no saga is open (the background part of an operation ran).
    async fn sagas_closed(&self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        while !self.store.open_sagas().await.unwrap().is_empty() {
            if Instant::now() > deadline {
                return Err("a saga never ended".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    async fn until_crashed(&self, sagas: usize) -> Result<(), String> {
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
    async fn made(&self) -> usize {
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
    async fn violations(&self) -> Vec<String> {
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

async fn new_cloud(
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

fn disk_only_point() -> domain::restore_point::NewRestorePoint {
    domain::restore_point::NewRestorePoint {
        name: "p".into(),
        memory: false,
        method: domain::restore_point::RestoreMethod::External,
        quiesce: false,
    }
}

fn file_of(source: domain::Result<DiskSource>) -> Option<PathBuf> {
    match source {
        Ok(DiskSource::File { path, .. }) => Some(path),
        _ => None,
    }
}

async fn upload_image(
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

/// One crash: at `point` while the operation runs, then (if given) at
/// `again` while the restart recovers it. Returns the recovery's fault
/// points and what is wrong afterwards.
async fn crash_once(
    rig: &mut Rig,
    scenario: Scenario,
    point: &str,
    again: Option<&str>,
) -> Result<Vec<String>, String> {
    let kind = scenario.kind();
    rig.arm(&[], &[]);
    let prepared = scenario.prepare(rig).await;
    rig.arm(&[kind], &[point]);
    let _ = scenario.start(rig, &prepared).await;
    rig.until_crashed(1).await?;
    rig.arm(&[kind], &again.into_iter().collect::<Vec<_>>());
    rig.restart().await?;
    let recovery = rig.seen();
    if let Some(again) = again {
        if rig.crashed() == 0 {
            return Err(format!("recovery never reached {again}"));
        }
        rig.arm(&[], &[]);
        rig.restart().await?;
    }
    rig.arm(&[], &[]);
    let wrong = rig.violations().await;
    if !wrong.is_empty() {
        return Err(wrong.join("; "));
    }
    // What the crash left can be used again: the same operation on the
    // same server or volume works.
    // (A failure injected for a step the crash came before is not due.)
    rig.hv.clear_failures();
    rig.pool.fake_volumes().fail_next_create(false);
    let before = rig.made().await;
    scenario
        .without_failure()
        .start(rig, &prepared)
        .await
        .map_err(|e| format!("after recovery, the operation again: {e}"))?;
    rig.sagas_closed().await?;
    if rig.made().await <= before {
        return Err("after recovery, the operation again made nothing".into());
    }
    let wrong = rig.violations().await;
    if !wrong.is_empty() {
        return Err(format!(
            "after recovery, the operation again: {}",
            wrong.join("; ")
        ));
    }
    Ok(recovery)
}

/// Runs `scenario` once without a crash; returns the fault points it
/// passed (and checks the invariants hold without a crash).
async fn learn_points(rig: &mut Rig, scenario: Scenario) -> Vec<String> {
    let kind = scenario.kind();
    rig.arm(&[], &[]);
    let prepared = scenario.prepare(rig).await;
    rig.arm(&[kind], &[]);
    let started = scenario.start(rig, &prepared).await;
    assert!(
        started.is_ok() || scenario.failure().is_some(),
        "{scenario:?}: {started:?}"
    );
    rig.sagas_closed().await.unwrap();
    let points = rig.seen();
    rig.arm(&[], &[]);
    let clean = rig.violations().await;
    assert!(clean.is_empty(), "{scenario:?} without a crash: {clean:?}");
    points
}

/// Two sagas of different kinds stopped at once, one restart.
async fn crash_two(
    rig: &mut Rig,
    (first, at): (Scenario, &str),
    (second, second_at): (Scenario, &str),
) -> Result<(), String> {
    rig.arm(&[], &[]);
    let prepared = (first.prepare(rig).await, second.prepare(rig).await);
    rig.arm(&[first.kind(), second.kind()], &[at, second_at]);
    let _ = first.start(rig, &prepared.0).await;
    let _ = second.start(rig, &prepared.1).await;
    rig.until_crashed(2).await?;
    rig.arm(&[], &[]);
    rig.restart().await?;
    let wrong = rig.violations().await;
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

/// For every kind (a scenario of each), with the next kind in the list as
/// its companion (a ring, so every kind is both): the first crashed after
/// each of its steps ran (the plain points; the `:start` ones are covered
/// alone) while the second is stopped too — at its first point (recovery
/// undoes it) or half-way (recovery finishes it), in turn.
async fn crash_kinds_in_pairs(native: bool) {
    let started = Instant::now();
    let mut one_per_kind: Vec<Scenario> = Vec::new();
    for scenario in SCENARIOS {
        if !one_per_kind.iter().any(|s| s.kind() == scenario.kind()) {
            one_per_kind.push(*scenario);
        }
    }
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut rig = Rig::new(native).await;
    for (i, first) in one_per_kind.iter().enumerate() {
        for second in [&one_per_kind[(i + 1) % one_per_kind.len()]] {
            let points = learn_points(&mut rig, *first).await;
            let theirs = learn_points(&mut rig, *second).await;
            let stops = [theirs[0].clone(), theirs[theirs.len() / 2].clone()];
            let ran = points.iter().filter(|p| !p.ends_with(":start"));
            for (n, at) in ran.enumerate() {
                let second_at = &stops[n % 2];
                cases += 1;
                if let Err(wrong) = crash_two(&mut rig, (*first, at), (*second, second_at)).await {
                    failures.push(format!("crash at {at} and {second_at}: {wrong}"));
                }
            }
        }
    }
    eprintln!(
        "pairs of kinds ({} pool): {cases} cases, {:?}",
        if native { "native" } else { "layered" },
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn two_kinds_crashed_at_once_on_the_layered_pool_when_recovered_then_settled() {
    crash_kinds_in_pairs(false).await;
}

#[tokio::test]
async fn two_kinds_crashed_at_once_on_the_native_pool_when_recovered_then_settled() {
    crash_kinds_in_pairs(true).await;
}

/// Runs `scenario` once to learn its fault points, then crashes at each;
/// panics with every failing case.
async fn crash_everywhere(scenario: Scenario, native: bool) {
    let started = Instant::now();
    let mut rig = Rig::new(native).await;
    let kind = scenario.kind();
    let steps = cloud::saga::saga_kinds()
        .into_iter()
        .find(|k| k.name == kind)
        .unwrap_or_else(|| panic!("no saga kind {kind} in the registry"))
        .steps;

    let points = learn_points(&mut rig, scenario).await;
    // A failing operation stops at its failure and passes the undo points.
    let fails = points.iter().any(|p| p.ends_with(":undo"));
    assert!(
        !fails || scenario.failure().is_some(),
        "{scenario:?} failed without an injected failure: {points:?}"
    );
    for step in steps.iter().filter(|_| !fails) {
        for point in [format!("{kind}:{step}:start"), format!("{kind}:{step}")] {
            assert!(
                points.contains(&point),
                "{scenario:?} never passed {point}; it passed {points:?}"
            );
        }
    }

    let mut failures = Vec::new();
    let mut undo_points: BTreeMap<String, String> = BTreeMap::new();
    for point in &points {
        match crash_once(&mut rig, scenario, point, None).await {
            Ok(recovery) => {
                for undo in recovery.into_iter().filter(|p| p.ends_with(":undo")) {
                    undo_points.entry(undo).or_insert_with(|| point.clone());
                }
            }
            Err(wrong) => failures.push(format!("crash at {point}: {wrong}")),
        }
    }
    for (undo, first) in &undo_points {
        if let Err(wrong) = crash_once(&mut rig, scenario, first, Some(undo)).await {
            failures.push(format!("crash at {first}, then at {undo}: {wrong}"));
        }
    }
    eprintln!(
        "{scenario:?} ({} pool): {} fault points, {} undo points in recovery, {:?}",
        if native { "native" } else { "layered" },
        points.len(),
        undo_points.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{scenario:?} ({} pool):\n{}",
        if native { "native" } else { "layered" },
        failures.join("\n")
    );
}

/// For each scenario, a module with one test per pool mode; and
/// `SCENARIOS`, the list of them all.
macro_rules! crash_tests {
    ($($module:ident => $scenario:ident;)*) => {
        const SCENARIOS: &[Scenario] = &[$(Scenario::$scenario),*];
        $(
        mod $module {
            #[tokio::test]
            async fn layered_pool_when_crashed_anywhere_then_settled() {
                super::crash_everywhere(super::Scenario::$scenario, false).await;
            }

            #[tokio::test]
            async fn native_pool_when_crashed_anywhere_then_settled() {
                super::crash_everywhere(super::Scenario::$scenario, true).await;
            }
        }
    )*
    };
}

crash_tests! {
    image_of_running_server => ImageOfRunningServer;
    image_of_quiesced_server => ImageOfQuiescedServer;
    image_of_stopped_server => ImageOfStoppedServer;
    image_of_volume_backed_server => ImageOfVolumeBackedServer;
    blank_volume => BlankVolume;
    volume_from_image => VolumeFromImage;
    volume_from_snapshot => VolumeFromSnapshot;
    volume_from_volume => VolumeFromVolume;
    snapshot_of_available_volume => SnapshotOfAvailableVolume;
    snapshot_of_in_use_volume => SnapshotOfInUseVolume;
    point_of_running_server => PointOfRunningServer;
    revert_to_point => RevertToPoint;
    delete_point => DeletePoint;
    image_when_the_cut_fails => ImageWhenTheCutFails;
    volume_backed_image_when_the_cut_fails => VolumeBackedImageWhenTheCutFails;
    in_use_snapshot_when_the_cut_fails => InUseSnapshotWhenTheCutFails;
    blank_volume_when_the_pool_fails => BlankVolumeWhenThePoolFails;
    volume_from_volume_when_the_pool_fails => VolumeFromVolumeWhenThePoolFails;
    snapshot_when_the_pool_fails => SnapshotWhenThePoolFails;
}

#[test]
fn every_saga_kind_has_a_scenario() {
    let covered: BTreeSet<&str> = SCENARIOS.iter().map(|s| s.kind()).collect();

    let missing: Vec<&str> = cloud::saga::saga_kinds()
        .into_iter()
        .map(|k| k.name)
        .filter(|k| !covered.contains(k))
        .collect();

    assert!(
        missing.is_empty(),
        "saga kinds without a crash scenario: {missing:?}"
    );
}
