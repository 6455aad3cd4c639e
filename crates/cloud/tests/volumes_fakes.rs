//! Volumes on fakes: the volume use-cases of [`cloud::Cloud`] on a
//! [`FakePool`] (with its in-memory volume pool), a [`FakeHypervisor`] and
//! an in-memory store — statuses, Cinder's rules, project isolation, the
//! sagas' recovery and garbage collection, in milliseconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use cloud::identity::{NewUser, PasswordAuth, ProjectRef, TokenScope, UserRef};
use cloud::volumes::{NewSnapshot, NewVolume};
use cloud::{Cloud, CloudConfig};
use domain::identity::{Caller, Project};
use domain::volume::{SnapshotStatus, Volume, VolumeSource, VolumeStatus};
use domain::{ErrorKind, ProjectId};
use hypervisor::FakeHypervisor;
use storage::fake::FakePool;
use store::{SagaRecord, Store};

const ADMIN_PASSWORD: &str = "admin-pw";

struct Rig {
    cloud: Cloud,
    pool: Arc<FakePool>,
    admin: Caller,
    _dir: tempfile::TempDir,
}

async fn login(cloud: &Cloud, user: &str, password: &str, project: &str) -> Caller {
    let auth = PasswordAuth {
        user: UserRef::Name(user.into()),
        password: password.into(),
        scope: Some(TokenScope::Project(ProjectRef::Name(project.into()))),
    };
    cloud.authenticate(auth).await.unwrap().caller
}

impl Rig {
    async fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(FakePool::new());
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
        let cloud = Cloud::new(store, pool.clone(), Arc::new(FakeHypervisor::new()), config)
            .await
            .unwrap();
        // As `serve` does: recovery first (it enables garbage collection).
        cloud.reconcile().await.unwrap();
        cloud
            .bootstrap("admin", "admin", ADMIN_PASSWORD, false)
            .await
            .unwrap();
        let admin = login(&cloud, "admin", ADMIN_PASSWORD, "admin").await;
        Rig {
            cloud,
            pool,
            admin,
            _dir: dir,
        }
    }

    async fn wait_volume(&self, id: &str, status: VolumeStatus) -> Volume {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self
                .cloud
                .store()
                .volume(id.parse().unwrap())
                .await
                .unwrap();
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

    async fn blank(&self, size: u64) -> Volume {
        let new = NewVolume {
            size: Some(size),
            ..Default::default()
        };
        let v = self.cloud.create_volume(&self.admin, new).await.unwrap();
        self.wait_volume(&v.id.to_string(), VolumeStatus::Available)
            .await
    }

    async fn snapshot(&self, volume: &Volume) -> String {
        let new = NewSnapshot {
            volume_id: volume.id.to_string(),
            ..Default::default()
        };
        let s = self
            .cloud
            .create_volume_snapshot(&self.admin, new)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .cloud
            .store()
            .volume_snapshot(s.id)
            .await
            .unwrap()
            .status
            != SnapshotStatus::Available
        {
            assert!(Instant::now() < deadline, "snapshot never available");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s.id.to_string()
    }

    /// Waits until snapshot `id` is deleted (its data released first).
    async fn wait_snapshot_gone(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .cloud
            .store()
            .volume_snapshot(id.parse().unwrap())
            .await
            .unwrap()
            .status
            != SnapshotStatus::Deleted
        {
            assert!(Instant::now() < deadline, "snapshot {id} never deleted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

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

#[tokio::test]
async fn volume_when_created_blank_then_available_with_data_in_the_pool() {
    let rig = Rig::new().await;

    let v = rig.blank(2).await;

    assert_eq!(v.size, 2);
    assert_eq!(
        rig.pool.fake_volumes().locations(),
        vec![v.location.clone().unwrap()]
    );
}

#[tokio::test]
async fn volume_with_a_snapshot_when_deleted_then_invalid_input() {
    let rig = Rig::new().await;
    let v = rig.blank(1).await;
    rig.snapshot(&v).await;

    let err = rig
        .cloud
        .delete_volume(&rig.admin, &v.id.to_string(), false)
        .await
        .unwrap_err();

    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn volume_from_snapshot_when_smaller_than_it_then_invalid_input() {
    let rig = Rig::new().await;
    let v = rig.blank(2).await;
    let s = rig.snapshot(&v).await;
    let new = NewVolume {
        size: Some(1),
        snapshot_id: Some(s),
        ..Default::default()
    };

    let err = rig.cloud.create_volume(&rig.admin, new).await.unwrap_err();

    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn volume_of_another_project_when_shown_then_not_found() {
    let rig = Rig::new().await;
    let v = rig.blank(1).await;
    let eve = rig.member_of_new_project("eve").await;

    let err = rig.cloud.volume(&eve, &v.id.to_string()).await.unwrap_err();

    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(rig.cloud.volumes(&eve, false).await.unwrap().is_empty());
}

#[tokio::test]
async fn in_use_volume_when_snapshotted_without_force_then_invalid_and_with_force_allowed() {
    let rig = Rig::new().await;
    let v = rig.blank(1).await;
    rig.cloud
        .store()
        .set_volume_status(v.id, VolumeStatus::Available, VolumeStatus::InUse, None)
        .await
        .unwrap();
    let new = |force| NewSnapshot {
        volume_id: v.id.to_string(),
        force,
        ..Default::default()
    };

    let refused = rig
        .cloud
        .create_volume_snapshot(&rig.admin, new(false))
        .await;
    let forced = rig
        .cloud
        .create_volume_snapshot(&rig.admin, new(true))
        .await;

    assert_eq!(refused.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert!(forced.is_ok());
}

#[tokio::test]
async fn snapshot_with_a_volume_made_from_it_when_deleted_then_its_data_stays_until_that_volume_goes(
) {
    let rig = Rig::new().await;
    let v1 = rig.blank(1).await;
    let s = rig.snapshot(&v1).await;
    let new = NewVolume {
        snapshot_id: Some(s.clone()),
        ..Default::default()
    };
    let v2 = rig.cloud.create_volume(&rig.admin, new).await.unwrap();
    let v2 = rig
        .wait_volume(&v2.id.to_string(), VolumeStatus::Available)
        .await;
    rig.cloud
        .delete_volume_snapshot(&rig.admin, &s)
        .await
        .unwrap();
    rig.wait_snapshot_gone(&s).await;
    rig.cloud
        .delete_volume(&rig.admin, &v1.id.to_string(), false)
        .await
        .unwrap();
    rig.wait_volume(&v1.id.to_string(), VolumeStatus::Deleted)
        .await;
    // v2 and the snapshot data it stands on (a layer or an rbd snapshot).
    let v2_chain = rig.pool.chain(v2.location.as_deref().unwrap());
    let while_v2_lives = v2_chain.iter().filter(|l| rig.pool.exists(l)).count();

    rig.cloud
        .delete_volume(&rig.admin, &v2.id.to_string(), false)
        .await
        .unwrap();
    rig.wait_volume(&v2.id.to_string(), VolumeStatus::Deleted)
        .await;

    assert_eq!(while_v2_lives, 2, "v2 and the snapshot's data stay");
    assert!(rig.pool.fake_volumes().locations().is_empty());
}

#[tokio::test]
async fn creation_saga_when_left_after_record_then_reconcile_makes_the_volume() {
    let rig = Rig::new().await;
    let mut v = Volume::new_creating(
        rig.admin.project_id.unwrap(),
        rig.admin.user_id,
        1,
        VolumeSource::Blank,
        Utc::now(),
    );
    v.name = Some("left".into());
    let saga = SagaRecord {
        id: uuid::Uuid::new_v4().to_string(),
        kind: "volume-create".into(),
        step: "record".into(),
        phase: store::SagaPhase::Done,
        data: serde_json::json!({"volume": v.id.to_string(), "source_old": null, "frozen": null, "location": null}),
        created_at: Utc::now(),
    };
    rig.cloud.store().insert_saga(&saga).await.unwrap();
    rig.cloud.store().insert_volume(&v).await.unwrap();

    let repaired = rig.cloud.reconcile().await.unwrap();

    let after = rig.cloud.store().volume(v.id).await.unwrap();
    assert_eq!(after.status, VolumeStatus::Available);
    assert!(after.location.is_some());
    assert!(rig.cloud.store().open_sagas().await.unwrap().is_empty());
    assert!(repaired.iter().any(|r| r.contains(&v.id.to_string())));
}

#[tokio::test]
async fn volume_when_extended_then_bigger_in_record_and_pool() {
    let rig = Rig::new().await;
    let v = rig.blank(1).await;

    rig.cloud
        .extend_volume(&rig.admin, &v.id.to_string(), 3)
        .await
        .unwrap();
    let after = rig
        .wait_volume(&v.id.to_string(), VolumeStatus::Available)
        .await;

    assert_eq!(after.size, 3);
    let pool = storage::Pool::volumes(rig.pool.as_ref()).unwrap();
    assert_eq!(
        pool.volume_size(after.location.as_deref().unwrap())
            .await
            .unwrap(),
        3 << 30
    );
}
