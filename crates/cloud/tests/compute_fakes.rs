//! Servers on fakes: the compute use-cases of [`cloud::Cloud`] on a
//! [`FakeHypervisor`], a [`FakePool`] and an in-memory store — the state
//! machine, the task claims, power sync, start-up reconcile and project
//! isolation, in milliseconds and without QEMU.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use cloud::compute::NewServer;
use cloud::identity::{NewUser, PasswordAuth, ProjectRef, TokenScope, UserRef};
use cloud::images::NewImage;
use cloud::{Cloud, CloudConfig};
use domain::identity::{Caller, Project};
use domain::server::{Flavor, PowerState, Server, ServerAction, TaskState, VmState};
use domain::{ErrorKind, ProjectId, ServerId};
use hypervisor::{FakeHypervisor, Hypervisor, Operation, VmSpec, VmStatus};
use storage::fake::FakePool;
use storage::Pool;
use store::Store;

const ADMIN_PASSWORD: &str = "admin-pw";
const WAIT: Duration = Duration::from_secs(10);

/// A cloud on fakes, with an admin caller, an active image and a flavor.
struct Rig {
    cloud: Cloud,
    hv: Arc<FakeHypervisor>,
    pool: Arc<FakePool>,
    admin: Caller,
    image_id: String,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let pool = Arc::new(FakePool::new());
        // Overlays QEMU makes (live snapshots, restore points) exist in the pool.
        let files = pool.clone();
        hv.on_file_created(Arc::new(move |path| files.file_created(path)));
        let config = CloudConfig {
            token_ttl: Duration::from_secs(3600),
            image_size_cap: 1 << 30,
            staging_dir: dir.path().join("staging"),
            qemu_img_limits: storage::qemu_img::Limits::default(),
            state_dir: dir.path().join("state"),
            shutdown_timeout: Duration::from_secs(1),
            max_chain_depth: 16,
            max_virtual_size: 1 << 40,
            image_quota: Default::default(),
            exports: Default::default(),
            restore_point_quota: Default::default(),
            identity: Default::default(),
        };
        let store = Store::in_memory().await.unwrap();
        let cloud = Cloud::new(store, pool.clone(), hv.clone(), config)
            .await
            .unwrap();
        // As `serve` does: recovery first (it enables garbage collection).
        cloud.reconcile().await.unwrap();
        cloud
            .bootstrap("admin", "admin", ADMIN_PASSWORD, false)
            .await
            .unwrap();
        let admin = login(&cloud, "admin", ADMIN_PASSWORD, "admin").await;
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
        let image_id = upload_raw_image(&cloud, &admin, "guest").await;
        Rig {
            cloud,
            hv,
            pool,
            admin,
            image_id,
            _dir: dir,
        }
    }

    fn new_server(&self, name: &str) -> NewServer {
        NewServer {
            name: name.into(),
            image_ref: self.image_id.clone(),
            flavor_ref: "tiny".into(),
            ..Default::default()
        }
    }

    /// Creates a server and waits until it is active.
    async fn active_server(&self, name: &str) -> Server {
        let created = self
            .cloud
            .create_server(&self.admin, self.new_server(name))
            .await
            .unwrap();
        self.wait_settled(created.id).await
    }

    /// Polls the store until the server has no task; returns it.
    async fn wait_settled(&self, id: ServerId) -> Server {
        let deadline = Instant::now() + WAIT;
        loop {
            let server = self.cloud.store().server(id).await.unwrap();
            if server.task_state.is_none() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "server {id} still has task {:?}",
                server.task_state
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs `action` as the admin and waits for its task to clear.
    async fn act(&self, server: &Server, action: ServerAction) -> Server {
        self.cloud
            .server_action(&self.admin, &server.id.to_string(), action)
            .await
            .unwrap();
        self.wait_settled(server.id).await
    }

    /// A member of a new project `name`-project.
    async fn member_of_new_project(&self, name: &str) -> Caller {
        let project = Project {
            id: ProjectId::new(),
            name: format!("{name}-project"),
            description: String::new(),
            enabled: true,
        };
        let project = self
            .cloud
            .create_project(&self.admin, project)
            .await
            .unwrap();
        let user = NewUser {
            name: name.into(),
            password: Some(format!("pw-{name}")),
            enabled: true,
            ..Default::default()
        };
        let user = self.cloud.create_user(&self.admin, user).await.unwrap();
        let member = self
            .cloud
            .roles(&self.admin, Some("member"))
            .await
            .unwrap()
            .remove(0);
        let (uid, pid, rid) = (
            user.id.to_string(),
            project.id.to_string(),
            member.id.to_string(),
        );
        self.cloud
            .assign_role(&self.admin, &uid, &pid, &rid)
            .await
            .unwrap();
        login(&self.cloud, name, &format!("pw-{name}"), &project.name).await
    }
}

async fn login(cloud: &Cloud, user: &str, password: &str, project: &str) -> Caller {
    let auth = PasswordAuth {
        user: UserRef::Name(user.into()),
        password: password.into(),
        scope: Some(TokenScope::Project(ProjectRef::Name(project.into()))),
    };
    cloud.authenticate(auth).await.unwrap().caller
}

/// Creates and uploads a small raw image; returns its id.
async fn upload_raw_image(cloud: &Cloud, caller: &Caller, name: &str) -> String {
    let new = NewImage {
        name: Some(name.into()),
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

fn kind<T: std::fmt::Debug>(result: domain::Result<T>) -> ErrorKind {
    result.unwrap_err().kind()
}

/// A server record as a previous run might have left it.
fn leftover_server(rig: &Rig, vm_state: VmState, task_state: Option<TaskState>) -> Server {
    let now = Utc::now();
    Server {
        id: ServerId::new(),
        name: "leftover".into(),
        project_id: rig.admin.project_id.unwrap(),
        user_id: rig.admin.user_id,
        image_id: Some(rig.image_id.parse().unwrap()),
        flavor: Flavor {
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
        },
        vm_state,
        task_state,
        power_state: PowerState::NoState,
        progress: 0,
        fault: None,
        metadata: Default::default(),
        key_name: None,
        access_ipv4: None,
        access_ipv6: None,
        locked: false,
        root_disk: None,
        created_at: now,
        updated_at: now,
        launched_at: None,
    }
}

#[tokio::test]
async fn create_server_when_image_and_flavor_then_active_on_its_own_disk() {
    let rig = Rig::new().await;

    let created = rig
        .cloud
        .create_server(&rig.admin, rig.new_server("vm1"))
        .await
        .unwrap();
    let server = rig.wait_settled(created.id).await;

    assert_eq!(created.status(), "BUILD");
    assert_eq!(server.status(), "ACTIVE");
    assert_eq!(server.power_state, PowerState::Running);
    assert!(server.launched_at.is_some());
    assert_eq!(
        rig.pool.disk_locations().await.unwrap(),
        vec![server.root_disk.clone().unwrap()]
    );
    assert_eq!(
        rig.hv.status(&server.id.to_string()).await.unwrap(),
        VmStatus::Running
    );
}

#[tokio::test]
async fn create_server_when_hypervisor_fails_to_start_then_error_with_fault() {
    let rig = Rig::new().await;
    rig.hv
        .fail_next(Operation::Start, hypervisor::ErrorKind::StartFailed);

    let created = rig
        .cloud
        .create_server(&rig.admin, rig.new_server("vm1"))
        .await
        .unwrap();
    let server = rig.wait_settled(created.id).await;

    assert_eq!(server.status(), "ERROR");
    assert!(server.fault.unwrap().message.contains("injected failure"));
}

#[tokio::test]
async fn create_server_when_image_unknown_then_invalid_input() {
    let rig = Rig::new().await;
    let mut new = rig.new_server("vm1");
    new.image_ref = domain::ImageId::new().to_string();

    let result = rig.cloud.create_server(&rig.admin, new).await;

    assert_eq!(kind(result), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn create_server_when_flavor_unknown_then_invalid_input() {
    let rig = Rig::new().await;
    let mut new = rig.new_server("vm1");
    new.flavor_ref = "huge".into();

    let result = rig.cloud.create_server(&rig.admin, new).await;

    assert_eq!(kind(result), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn stop_when_active_then_shutoff_and_vm_shut_off() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;

    let stopped = rig.act(&server, ServerAction::Stop).await;

    assert_eq!(stopped.status(), "SHUTOFF");
    assert_eq!(stopped.power_state, PowerState::Shutdown);
    assert!(matches!(
        rig.hv.status(&server.id.to_string()).await.unwrap(),
        VmStatus::Shutoff { .. }
    ));
}

#[tokio::test]
async fn start_when_stopped_then_active_again() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;
    rig.act(&server, ServerAction::Stop).await;

    let started = rig.act(&server, ServerAction::Start).await;

    assert_eq!(started.status(), "ACTIVE");
    assert_eq!(
        rig.hv.status(&server.id.to_string()).await.unwrap(),
        VmStatus::Running
    );
}

#[tokio::test]
async fn start_when_active_then_conflict() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;

    let result = rig
        .cloud
        .server_action(&rig.admin, &server.id.to_string(), ServerAction::Start)
        .await;

    assert_eq!(kind(result), ErrorKind::Conflict);
}

#[tokio::test]
async fn action_when_another_task_claimed_then_conflict_and_task_kept() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;
    let mut claimed = server.clone();
    claimed.task_state = Some(TaskState::Suspending);
    rig.cloud
        .store()
        .update_server(&server, &claimed)
        .await
        .unwrap();

    let result = rig
        .cloud
        .server_action(&rig.admin, &server.id.to_string(), ServerAction::Pause)
        .await;

    assert_eq!(kind(result), ErrorKind::Conflict);
    let now = rig.cloud.store().server(server.id).await.unwrap();
    assert_eq!(now.task_state, Some(TaskState::Suspending));
}

#[tokio::test]
async fn two_actions_when_racing_then_exactly_one_conflict() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;
    let id = server.id.to_string();

    let (suspend, pause) = tokio::join!(
        rig.cloud
            .server_action(&rig.admin, &id, ServerAction::Suspend),
        rig.cloud
            .server_action(&rig.admin, &id, ServerAction::Pause),
    );

    let conflicts = [suspend.err(), pause.err()]
        .into_iter()
        .flatten()
        .filter(|e| e.kind() == ErrorKind::Conflict);
    assert_eq!(conflicts.count(), 1);
    let settled = rig.wait_settled(server.id).await;
    assert!(
        matches!(settled.vm_state, VmState::Suspended | VmState::Paused),
        "{settled:?}"
    );
}

#[tokio::test]
async fn suspend_when_save_fails_then_active_with_fault() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;
    rig.hv
        .fail_next(Operation::SaveMemory, hypervisor::ErrorKind::Migration);

    let after = rig.act(&server, ServerAction::Suspend).await;

    assert_eq!(after.status(), "ACTIVE");
    assert!(after.fault.unwrap().message.contains("injected failure"));
}

#[tokio::test]
async fn suspend_then_resume_when_active_then_active_from_saved_memory() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;

    let suspended = rig.act(&server, ServerAction::Suspend).await;
    let resumed = rig.act(&server, ServerAction::Resume).await;

    assert_eq!(suspended.status(), "SUSPENDED");
    assert_eq!(resumed.status(), "ACTIVE");
    let console = rig
        .cloud
        .console_output(&rig.admin, &server.id.to_string(), None)
        .await
        .unwrap();
    assert!(console.contains("restored"), "console: {console}");
}

#[tokio::test]
async fn power_sync_when_qemu_crashed_then_shutoff_with_fault() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;
    rig.hv.crash(&server.id.to_string(), "killed by signal 9");

    rig.cloud.sync_power_states().await.unwrap();

    let after = rig
        .cloud
        .server(&rig.admin, &server.id.to_string())
        .await
        .unwrap();
    assert_eq!(after.status(), "SHUTOFF");
    assert_eq!(after.power_state, PowerState::Crashed);
    assert!(after.fault.unwrap().message.contains("QEMU"));
}

#[tokio::test]
async fn power_sync_when_guest_powered_off_then_shutoff_without_fault() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;
    rig.hv.guest_power_off(&server.id.to_string());

    rig.cloud.sync_power_states().await.unwrap();

    let after = rig
        .cloud
        .server(&rig.admin, &server.id.to_string())
        .await
        .unwrap();
    assert_eq!(after.status(), "SHUTOFF");
    assert_eq!(after.fault, None);
}

#[tokio::test]
async fn power_sync_when_all_running_then_nothing_changes() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;

    rig.cloud.sync_power_states().await.unwrap();

    let after = rig.cloud.store().server(server.id).await.unwrap();
    assert_eq!(after, server);
}

#[tokio::test]
async fn reconcile_when_build_interrupted_without_vm_then_error_with_fault() {
    let rig = Rig::new().await;
    let leftover = leftover_server(&rig, VmState::Building, Some(TaskState::Spawning));
    rig.cloud.store().insert_server(&leftover).await.unwrap();

    let repaired = rig.cloud.reconcile().await.unwrap();

    let after = rig.cloud.store().server(leftover.id).await.unwrap();
    assert_eq!(after.status(), "ERROR");
    assert_eq!(after.task_state, None);
    assert!(after.fault.unwrap().message.contains("restart"));
    assert!(
        repaired
            .iter()
            .any(|line| line.contains(&leftover.id.to_string())),
        "{repaired:?}"
    );
}

#[tokio::test]
async fn reconcile_when_action_interrupted_then_settled_to_what_the_vm_shows() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;
    let mut claimed = server.clone();
    claimed.task_state = Some(TaskState::PoweringOff);
    rig.cloud
        .store()
        .update_server(&server, &claimed)
        .await
        .unwrap();

    rig.cloud.reconcile().await.unwrap();

    let after = rig.cloud.store().server(server.id).await.unwrap();
    assert_eq!(after.status(), "ACTIVE");
    assert_eq!(after.task_state, None);
}

#[tokio::test]
async fn reconcile_when_delete_interrupted_then_deleted_and_disk_gone() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;
    let mut claimed = server.clone();
    claimed.task_state = Some(TaskState::Deleting);
    rig.cloud
        .store()
        .update_server(&server, &claimed)
        .await
        .unwrap();

    rig.cloud.reconcile().await.unwrap();

    let after = rig.cloud.store().server(server.id).await.unwrap();
    assert_eq!(after.vm_state, VmState::Deleted);
    let left = rig.pool.disk_locations().await.unwrap();
    assert!(
        left.is_empty(),
        "disks left: {left:?} (server {})",
        server.id
    );
    assert!(rig.hv.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn reconcile_when_orphan_vm_and_disk_then_removed_and_live_server_kept() {
    let rig = Rig::new().await;
    let live = rig.active_server("vm1").await;
    let orphan = ServerId::new().to_string();
    let image_location = rig
        .cloud
        .store()
        .image(rig.image_id.parse().unwrap())
        .await
        .unwrap()
        .location
        .unwrap();
    rig.pool
        .create_disk(&orphan, &image_location, "raw", 1 << 30)
        .await
        .unwrap();
    let spec = VmSpec {
        name: orphan.clone(),
        memory_mib: 64,
        vcpus: 1,
        disks: vec![],
        nics: Vec::new(),
        kernel: None,
        initrd: None,
        cmdline: None,
    };
    rig.hv.start(&spec).await.unwrap();

    let repaired = rig.cloud.reconcile().await.unwrap();

    assert_eq!(rig.hv.list().await.unwrap(), vec![live.id.to_string()]);
    assert_eq!(
        rig.pool.disk_locations().await.unwrap(),
        vec![live.root_disk.clone().unwrap()]
    );
    assert_eq!(repaired.len(), 2, "{repaired:?}");
}

#[tokio::test]
async fn delete_when_active_then_deleted_vm_undefined_and_disk_gone() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;

    let after = rig.act(&server, ServerAction::Delete).await;
    // The disk goes right after the delete is recorded (garbage collection).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !rig.pool.disk_locations().await.unwrap().is_empty()
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    assert_eq!(after.vm_state, VmState::Deleted);
    assert!(rig.pool.disk_locations().await.unwrap().is_empty());
    assert!(rig.hv.list().await.unwrap().is_empty());
    assert_eq!(
        kind(rig.cloud.server(&rig.admin, &server.id.to_string()).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        rig.cloud
            .image(&rig.admin, &rig.image_id)
            .await
            .unwrap()
            .status
            .to_string(),
        "active"
    );
}

#[tokio::test]
async fn delete_when_stopped_then_deleted() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;
    rig.act(&server, ServerAction::Stop).await;

    let after = rig.act(&server, ServerAction::Delete).await;

    assert_eq!(after.vm_state, VmState::Deleted);
    assert!(rig.pool.disk_locations().await.unwrap().is_empty());
}

#[tokio::test]
async fn server_of_project_a_when_project_b_member_asks_then_not_found() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;
    let other = rig.member_of_new_project("bob").await;
    let id = server.id.to_string();

    let show = rig.cloud.server(&other, &id).await;
    let stop = rig
        .cloud
        .server_action(&other, &id, ServerAction::Stop)
        .await;
    let console = rig.cloud.console_output(&other, &id, None).await;
    let listed = rig.cloud.servers(&other, true).await.unwrap();

    assert_eq!(kind(show), ErrorKind::NotFound);
    assert_eq!(kind(stop), ErrorKind::NotFound);
    assert_eq!(kind(console), ErrorKind::NotFound);
    assert!(listed.is_empty());
    let untouched = rig.cloud.store().server(server.id).await.unwrap();
    assert_eq!(untouched.status(), "ACTIVE");
}

#[tokio::test]
async fn rename_when_looping_during_restore_points_then_each_new_top_stays_the_disk() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm1").await;
    let id = server.id.to_string();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renames = {
        let (cloud, admin, id, stop) = (
            rig.cloud.clone(),
            rig.admin.clone(),
            id.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                // A conflict with the point's own updates is fine; a lost
                // update is not.
                let rename = cloud::compute::ServerChanges {
                    name: Some(format!("vm-{n}")),
                    ..Default::default()
                };
                let _ = cloud.update_server(&admin, &id, rename).await;
                tokio::task::yield_now().await;
            }
            n
        })
    };

    let mut tops = Vec::new();
    for i in 0..10 {
        let new = domain::restore_point::NewRestorePoint {
            name: format!("p{i}"),
            memory: false,
            method: domain::restore_point::RestoreMethod::External,
            quiesce: false,
        };
        rig.cloud
            .create_restore_point(&rig.admin, &id, new)
            .await
            .unwrap();
        let settled = rig.wait_settled(server.id).await;
        tops.push(settled.root_disk.clone().unwrap());
        rig.cloud.collect_garbage().await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let renamed = renames.await.unwrap();

    let now = rig.cloud.store().server(server.id).await.unwrap();
    let writes = rig.hv.active_disk_file(&id, "root").await.unwrap();
    assert!(renamed > 10, "only {renamed} renames ran");
    assert_eq!(
        tops.iter().collect::<std::collections::BTreeSet<_>>().len(),
        10,
        "{tops:?}"
    );
    assert_eq!(now.root_disk.as_ref(), tops.last());
    assert_eq!(
        Some(writes),
        rig.pool
            .disk_source(tops.last().unwrap())
            .ok()
            .and_then(|s| match s {
                storage::DiskSource::File { path, .. } => Some(path),
                _ => None,
            })
    );
    assert!(
        rig.pool.exists(tops.last().unwrap()),
        "the disk QEMU writes was collected"
    );
}

#[tokio::test]
async fn reconcile_when_port_made_for_a_server_never_recorded_then_released() {
    let rig = Rig::new().await;
    let net = rig
        .cloud
        .create_network(
            &rig.admin,
            cloud::network::NewNetwork {
                name: "n".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    rig.cloud
        .create_subnet(
            &rig.admin,
            cloud::network::NewSubnet {
                network_id: net.id.to_string(),
                cidr: "10.9.0.0/24".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let port = rig
        .cloud
        .create_port(
            &rig.admin,
            cloud::network::NewPort {
                network_id: net.id.to_string(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // What a stop between "port made and bound" and "server row written" leaves.
    let orphan = domain::network::Port {
        device_id: domain::ServerId::new().to_string(),
        device_owner: cloud::network::COMPUTE_OWNER.into(),
        delete_with_device: true,
        ..port.clone()
    };
    rig.cloud.store().update_port(&port, &orphan).await.unwrap();

    let repaired = rig.cloud.reconcile().await.unwrap();

    let gone = rig.cloud.store().port(port.id).await.unwrap_err();
    assert_eq!(gone.kind(), domain::ErrorKind::NotFound);
    assert!(
        repaired.iter().any(|l| l.contains(&port.id.to_string())),
        "{repaired:?}"
    );
}
