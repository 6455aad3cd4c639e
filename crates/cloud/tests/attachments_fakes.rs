//! Volume attachments and boot from volume on fakes: the state rules of
//! attach, detach, server delete and start-up recovery, on a
//! [`FakeHypervisor`], a [`FakePool`] (with its volume pool) and an
//! in-memory store, in milliseconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloud::compute::{AttachVolume, BlockDevice, NewServer};
use cloud::identity::{PasswordAuth, ProjectRef, TokenScope, UserRef};
use cloud::images::NewImage;
use cloud::volumes::NewVolume;
use cloud::{Cloud, CloudConfig};
use domain::identity::Caller;
use domain::server::{Flavor, Server, ServerAction, TaskState, VmState};
use domain::volume::{Volume, VolumeStatus};
use domain::{ErrorKind, ServerId, VolumeId};
use hypervisor::{FakeHypervisor, Operation};
use storage::fake::FakePool;
use store::Store;

const ADMIN_PASSWORD: &str = "admin-pw";
const WAIT: Duration = Duration::from_secs(10);

struct Rig {
    cloud: Cloud,
    hv: Arc<FakeHypervisor>,
    admin: Caller,
    image_id: String,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
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
        let cloud = Cloud::new(store, Arc::new(FakePool::new()), hv.clone(), config)
            .await
            .unwrap();
        // As `serve` does: recovery first (it enables garbage collection).
        cloud.reconcile().await.unwrap();
        cloud
            .bootstrap("admin", "admin", ADMIN_PASSWORD, false)
            .await
            .unwrap();
        let auth = PasswordAuth {
            user: UserRef::Name("admin".into()),
            password: ADMIN_PASSWORD.into(),
            scope: Some(TokenScope::Project(ProjectRef::Name("admin".into()))),
        };
        let admin = cloud.authenticate(auth).await.unwrap().caller;
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
        let image = cloud
            .create_image(
                &admin,
                NewImage {
                    name: Some("guest".into()),
                    disk_format: Some("raw".into()),
                    container_format: Some("bare".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(vec![
            0x5a_u8;
            64 * 1024
        ]))]);
        let image_id = image.id.to_string();
        cloud
            .upload_image(&admin, &image_id, body, None)
            .await
            .unwrap();
        Rig {
            cloud,
            hv,
            admin,
            image_id,
            _dir: dir,
        }
    }

    async fn settled(&self, id: ServerId) -> Server {
        let deadline = Instant::now() + WAIT;
        loop {
            let server = self.cloud.store().server(id).await.unwrap();
            if server.task_state.is_none() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "server {id} stuck in {:?}",
                server.task_state
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn create(&self, new: NewServer) -> Server {
        let created = self.cloud.create_server(&self.admin, new).await.unwrap();
        self.settled(created.id).await
    }

    async fn active_server(&self, name: &str) -> Server {
        self.create(NewServer {
            name: name.into(),
            image_ref: self.image_id.clone(),
            flavor_ref: "tiny".into(),
            ..Default::default()
        })
        .await
    }

    async fn volume(&self, id: VolumeId) -> Volume {
        self.cloud.store().volume(id).await.unwrap()
    }

    async fn wait_volume(&self, id: VolumeId, status: VolumeStatus) -> Volume {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.volume(id).await;
            if v.status == status {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "volume {id} stuck in {}",
                v.status
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn blank(&self) -> Volume {
        let new = NewVolume {
            size: Some(1),
            ..Default::default()
        };
        let v = self.cloud.create_volume(&self.admin, new).await.unwrap();
        self.wait_volume(v.id, VolumeStatus::Available).await
    }

    async fn attach(&self, server: &Server, volume: &Volume) -> domain::Result<()> {
        let request = AttachVolume {
            volume_id: volume.id.to_string(),
            ..Default::default()
        };
        self.cloud
            .attach_volume(&self.admin, &server.id.to_string(), request)
            .await?;
        self.settled(server.id).await;
        Ok(())
    }

    async fn detach(&self, server: &Server, volume: &Volume) -> domain::Result<()> {
        self.cloud
            .detach_volume(&self.admin, &server.id.to_string(), &volume.id.to_string())
            .await?;
        self.settled(server.id).await;
        Ok(())
    }

    fn disk_ids(&self, server: &Server) -> Vec<String> {
        self.hv
            .spec(&server.id.to_string())
            .map(|s| s.disks.into_iter().map(|d| d.id).collect())
            .unwrap_or_default()
    }

    async fn act(&self, server: &Server, action: ServerAction) -> Server {
        self.cloud
            .server_action(&self.admin, &server.id.to_string(), action)
            .await
            .unwrap();
        self.settled(server.id).await
    }
}

fn disk_id(volume: &Volume) -> String {
    domain::volume::disk_id_of(volume.id)
}

#[tokio::test]
async fn attach_when_server_active_then_in_use_and_hot_plugged_and_detach_then_available_and_unplugged(
) {
    let rig = Rig::new().await;
    let server = rig.active_server("vm").await;
    let v = rig.blank().await;

    rig.attach(&server, &v).await.unwrap();
    let attached = rig.volume(v.id).await;
    let disks_attached = rig.disk_ids(&server);
    rig.detach(&server, &v).await.unwrap();

    assert_eq!(attached.status, VolumeStatus::InUse);
    assert_eq!(disks_attached, vec!["root".to_string(), disk_id(&v)]);
    assert_eq!(rig.volume(v.id).await.status, VolumeStatus::Available);
    assert_eq!(rig.disk_ids(&server), vec!["root".to_string()]);
    assert!(rig
        .cloud
        .store()
        .attachment_of_volume(v.id)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn attach_when_volume_in_use_then_invalid_and_when_unknown_then_not_found() {
    let rig = Rig::new().await;
    let (a, b) = (rig.active_server("a").await, rig.active_server("b").await);
    let v = rig.blank().await;
    rig.attach(&a, &v).await.unwrap();

    let in_use = rig.attach(&b, &v).await.unwrap_err();
    let unknown = rig
        .cloud
        .attach_volume(
            &rig.admin,
            &b.id.to_string(),
            AttachVolume {
                volume_id: VolumeId::new().to_string(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();

    assert_eq!(in_use.kind(), ErrorKind::InvalidInput);
    assert!(in_use.message().contains("Invalid volume"));
    assert_eq!(unknown.kind(), ErrorKind::NotFound);
    assert_eq!(rig.settled(b.id).await.task_state, None);
}

#[tokio::test]
async fn attach_when_server_suspended_then_conflict_and_volume_untouched() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm").await;
    let server = rig.act(&server, ServerAction::Suspend).await;
    let v = rig.blank().await;

    let err = rig.attach(&server, &v).await.unwrap_err();

    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(rig.volume(v.id).await.status, VolumeStatus::Available);
}

#[tokio::test]
async fn attach_when_hot_plug_fails_then_volume_available_again_and_no_attachment() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm").await;
    let v = rig.blank().await;
    rig.hv
        .fail_next(Operation::AttachDisk, hypervisor::ErrorKind::Monitor);

    rig.attach(&server, &v).await.unwrap();

    assert_eq!(rig.volume(v.id).await.status, VolumeStatus::Available);
    assert!(rig
        .cloud
        .store()
        .attachment_of_volume(v.id)
        .await
        .unwrap()
        .is_none());
    assert_eq!(rig.settled(server.id).await.task_state, None);
}

#[tokio::test]
async fn detach_when_unplug_fails_then_volume_stays_in_use() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm").await;
    let v = rig.blank().await;
    rig.attach(&server, &v).await.unwrap();
    rig.hv
        .fail_next(Operation::DetachDisk, hypervisor::ErrorKind::Timeout);

    rig.detach(&server, &v).await.unwrap();

    assert_eq!(rig.volume(v.id).await.status, VolumeStatus::InUse);
    assert!(rig
        .cloud
        .store()
        .attachment_of_volume(v.id)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn attach_when_server_stopped_then_recorded_and_started_with_it() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm").await;
    let server = rig.act(&server, ServerAction::Stop).await;
    let v = rig.blank().await;

    rig.attach(&server, &v).await.unwrap();
    let in_use = rig.volume(v.id).await.status;
    rig.act(&server, ServerAction::Start).await;

    assert_eq!(in_use, VolumeStatus::InUse);
    assert_eq!(rig.disk_ids(&server), vec!["root".to_string(), disk_id(&v)]);
}

#[tokio::test]
async fn volume_when_attached_then_delete_refused() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm").await;
    let v = rig.blank().await;
    rig.attach(&server, &v).await.unwrap();

    let err = rig
        .cloud
        .delete_volume(&rig.admin, &v.id.to_string(), false)
        .await
        .unwrap_err();

    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

fn boot_volume(uuid: Option<String>, source: &str, delete: bool) -> BlockDevice {
    BlockDevice {
        source_type: source.into(),
        destination_type: "volume".into(),
        uuid,
        boot_index: Some(0),
        volume_size: Some(1),
        delete_on_termination: delete,
        device_name: None,
    }
}

#[tokio::test]
async fn server_when_booted_from_volume_then_no_image_root_volume_first_and_in_use() {
    let rig = Rig::new().await;
    let root = rig.blank().await;
    let mut extra = boot_volume(None, "blank", true);
    extra.boot_index = None;

    let server = rig
        .create(NewServer {
            name: "bfv".into(),
            flavor_ref: "tiny".into(),
            block_devices: vec![
                extra,
                boot_volume(Some(root.id.to_string()), "volume", false),
            ],
            ..Default::default()
        })
        .await;

    let attachments = rig.cloud.attachments_of(&server).await.unwrap();
    assert_eq!(server.vm_state, VmState::Active);
    assert_eq!(server.image_id, None);
    assert_eq!(server.root_disk, None);
    assert_eq!(attachments.len(), 2);
    assert_eq!(attachments[0].volume_id, root.id);
    assert_eq!(attachments[0].device, "/dev/vda");
    assert_eq!(attachments[1].device, "/dev/vdb");
    assert_eq!(
        rig.disk_ids(&server),
        vec![
            disk_id(&root),
            domain::volume::disk_id_of(attachments[1].volume_id)
        ]
    );
    for a in &attachments {
        assert_eq!(rig.volume(a.volume_id).await.status, VolumeStatus::InUse);
    }
    let err = rig.detach(&server, &root).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn server_when_deleted_then_delete_on_termination_volumes_deleted_and_others_available() {
    let rig = Rig::new().await;
    let kept = rig.blank().await;
    let server = rig
        .create(NewServer {
            name: "bfv".into(),
            flavor_ref: "tiny".into(),
            block_devices: vec![boot_volume(Some(rig.image_id.clone()), "image", true)],
            ..Default::default()
        })
        .await;
    let root = rig.cloud.attachments_of(&server).await.unwrap()[0].volume_id;
    rig.attach(&server, &kept).await.unwrap();

    rig.act(&server, ServerAction::Delete).await;

    rig.wait_volume(root, VolumeStatus::Deleted).await;
    assert_eq!(rig.volume(kept.id).await.status, VolumeStatus::Available);
    assert!(rig.cloud.store().attachments().await.unwrap().is_empty());
}

#[tokio::test]
async fn server_create_when_volume_not_available_then_invalid_and_nothing_recorded() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm").await;
    let used = rig.blank().await;
    rig.attach(&server, &used).await.unwrap();

    let err = rig
        .cloud
        .create_server(
            &rig.admin,
            NewServer {
                name: "bfv".into(),
                flavor_ref: "tiny".into(),
                block_devices: vec![boot_volume(Some(used.id.to_string()), "volume", false)],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();

    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(rig.cloud.store().servers(None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn reconcile_when_volumes_left_attaching_and_detaching_then_settled_from_the_hypervisor() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm").await;
    let (attaching, detaching, orphan) = (rig.blank().await, rig.blank().await, rig.blank().await);
    rig.attach(&server, &detaching).await.unwrap();
    // What a crash leaves: an attach recorded but not plugged, a detach
    // begun, a reservation without its row.
    let store = rig.cloud.store();
    store
        .insert_attachment(&domain::volume::VolumeAttachment {
            id: domain::AttachmentId::new(),
            volume_id: attaching.id,
            server_id: server.id,
            device: "/dev/vdc".into(),
            disk_id: disk_id(&attaching),
            boot_index: None,
            delete_on_termination: false,
            created_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    for (v, from, to) in [
        (&attaching, VolumeStatus::Available, VolumeStatus::Attaching),
        (&detaching, VolumeStatus::InUse, VolumeStatus::Detaching),
        (&orphan, VolumeStatus::Available, VolumeStatus::Reserved),
    ] {
        store.set_volume_status(v.id, from, to, None).await.unwrap();
    }

    let repaired = rig.cloud.reconcile().await.unwrap();

    assert_eq!(rig.volume(attaching.id).await.status, VolumeStatus::InUse);
    assert_eq!(
        rig.volume(detaching.id).await.status,
        VolumeStatus::Available
    );
    assert_eq!(rig.volume(orphan.id).await.status, VolumeStatus::Available);
    assert_eq!(
        rig.disk_ids(&server),
        vec!["root".to_string(), disk_id(&attaching)]
    );
    assert!(repaired.len() >= 3, "{repaired:?}");
    assert_eq!(
        rig.cloud
            .store()
            .server(server.id)
            .await
            .unwrap()
            .task_state,
        None::<TaskState>
    );
}

#[tokio::test]
async fn attach_when_server_paused_then_hot_plugged_and_detach_when_paused_then_conflict() {
    let rig = Rig::new().await;
    let server = rig.active_server("vm").await;
    let server = rig.act(&server, ServerAction::Pause).await;
    let v = rig.blank().await;

    rig.attach(&server, &v).await.unwrap();
    let err = rig.detach(&server, &v).await.unwrap_err();

    assert_eq!(rig.volume(v.id).await.status, VolumeStatus::InUse);
    assert_eq!(rig.disk_ids(&server), vec!["root".to_string(), disk_id(&v)]);
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(rig.settled(server.id).await.vm_state, VmState::Paused);
}
