//! The `rbd` pool against a real Ceph cluster: the one `CEPH_CONF` names
//! (`scripts/ceph-dev.sh start && eval "$(scripts/ceph-dev.sh env)"`). A
//! missing or unreachable cluster fails the tests; it never skips them.
//!
//! Every test removes what it made (a guard, also on panic), so `rbd ls` of
//! the pools is the same after the run as before it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use domain::{ErrorKind, ImageId};
use storage::rbd::{RbdConfig, RbdPool, IMAGE_SNAPSHOT};
use storage::{DiskSource, Pool};

mod rbd_support;

use rbd_support::*;

#[tokio::test]
async fn raw_upload_when_imported_then_rbd_image_with_protected_snap() {
    let pool = pool().await;
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    let upload = staged(dir.path(), &data(1, 9 * MIB + 17));
    let id = cleanup.image(ImageId::new());

    let location = pool.import_image(id, &upload, "raw").await.unwrap();

    assert_eq!(location, format!("rbd://{}/images/{id}/snap", pool.fsid()));
    assert!(rbd_ls("images").contains(&id.to_string()));
    assert_eq!(
        rbd_snaps("images", &id.to_string()),
        vec![(IMAGE_SNAPSHOT.to_string(), true)]
    );
    assert!(pool.image_locations().await.unwrap().contains(&location));
    assert!(!upload.exists());
}

#[tokio::test]
async fn imported_image_when_read_from_offsets_then_byte_identical() {
    let pool = pool().await;
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(2, 9 * MIB + 17);
    let location = pool
        .import_image(
            cleanup.image(ImageId::new()),
            &staged(dir.path(), &bytes),
            "raw",
        )
        .await
        .unwrap();

    let (whole, size) = read_from(&pool, &location, 0).await;
    let (tail, _) = read_from(&pool, &location, 5 * MIB as u64 + 3).await;
    let (past_end, _) = read_from(&pool, &location, bytes.len() as u64 + 10).await;

    assert_eq!(size, bytes.len() as u64);
    assert!(whole == bytes, "whole image differs");
    assert!(tail == bytes[5 * MIB + 3..], "tail differs");
    assert!(past_end.is_empty());
}

#[tokio::test]
async fn qcow2_upload_when_converted_then_rbd_data_equals_qemu_img_convert() {
    let pool = pool().await;
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    let seed = staged(dir.path(), &data(3, 6 * MIB));
    let (qcow2, raw, reference) = (
        dir.path().join("up.qcow2"),
        dir.path().join("up.raw"),
        dir.path().join("ref.raw"),
    );
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "qcow2",
        seed.to_str().unwrap(),
        qcow2.to_str().unwrap(),
    ]);
    qemu_img(&[
        "resize",
        "-q",
        "-f",
        "qcow2",
        qcow2.to_str().unwrap(),
        "20M",
    ]);
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "qcow2",
        "-O",
        "raw",
        qcow2.to_str().unwrap(),
        reference.to_str().unwrap(),
    ]);
    let format = pool.stored_format("qcow2");

    storage::qemu_img::convert(&qcow2, "qcow2", &raw, format)
        .await
        .unwrap();
    let location = pool
        .import_image(cleanup.image(ImageId::new()), &raw, format)
        .await
        .unwrap();

    let (stored, size) = read_from(&pool, &location, 0).await;
    assert_eq!(format, "raw");
    assert_eq!(size, 20 * MIB as u64);
    assert!(
        stored == std::fs::read(&reference).unwrap(),
        "RBD data differs from qemu-img convert"
    );
}

#[tokio::test]
async fn qcow2_when_imported_without_conversion_then_refused_and_nothing_made() {
    let pool = pool().await;
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    let qcow2 = dir.path().join("up.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", qcow2.to_str().unwrap(), "1M"]);
    let id = cleanup.image(ImageId::new());

    let err = pool.import_image(id, &qcow2, "qcow2").await.unwrap_err();

    assert_eq!(err.kind(), ErrorKind::Internal);
    assert!(!rbd_ls("images").contains(&id.to_string()));
}

#[tokio::test]
async fn import_when_staged_data_unreadable_then_half_made_image_removed() {
    let pool = pool().await;
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    // Opening a directory works; reading it fails, after the image was created.
    let not_a_file = dir.path().join("upload");
    std::fs::create_dir(&not_a_file).unwrap();
    let id = cleanup.image(ImageId::new());

    let err = pool.import_image(id, &not_a_file, "raw").await.unwrap_err();

    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(!rbd_ls("images").contains(&id.to_string()));
}

#[tokio::test]
async fn disk_when_created_then_clone_of_image_snap_and_writes_stay_in_disk() {
    let pool = pool().await;
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(4, 5 * MIB);
    let id = cleanup.image(ImageId::new());
    let image = pool
        .import_image(id, &staged(dir.path(), &bytes), "raw")
        .await
        .unwrap();
    let name = cleanup.disk(&unique_disk());

    let disk = pool
        .create_disk(&name, &image, "raw", 64 * MIB as u64)
        .await
        .unwrap();

    let vms = cluster().io_ctx("vms").unwrap();
    let clone = vms.open_image(&name).unwrap();
    let parent = clone.parent().unwrap().expect("the disk is a clone");
    clone.write_at(0, &[0xAB; 4096]).unwrap();
    let mut head = vec![0u8; 4096];
    clone.read_at(0, &mut head).unwrap();
    let (image_data, _) = read_from(&pool, &image, 0).await;
    assert_eq!(disk, format!("rbd://{}/vms/{name}", pool.fsid()));
    assert_eq!(
        (parent.image.pool.as_str(), parent.image.image.as_str()),
        ("images", id.to_string().as_str())
    );
    assert_eq!(parent.snapshot, IMAGE_SNAPSHOT);
    assert_eq!(clone.size().unwrap(), 64 * MIB as u64);
    assert_eq!(head, vec![0xAB; 4096]);
    assert!(image_data == bytes, "a write to the disk changed the image");
    assert!(pool.disk_locations().await.unwrap().contains(&disk));
    assert_eq!(
        pool.disk_source(&disk).unwrap(),
        DiskSource::Rbd {
            pool: "vms".into(),
            image: name.clone(),
            conf: ceph_conf(),
            user: "admin".into()
        }
    );
}

#[tokio::test]
async fn image_with_clone_when_deleted_then_conflict_and_everything_kept() {
    let pool = pool().await;
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    let id = cleanup.image(ImageId::new());
    let image = pool
        .import_image(id, &staged(dir.path(), &data(5, MIB)), "raw")
        .await
        .unwrap();
    let name = cleanup.disk(&unique_disk());
    pool.create_disk(&name, &image, "raw", 0).await.unwrap();

    let check = pool.check_deletable(&image).await.unwrap_err();
    let delete = pool.delete_image(&image).await.unwrap_err();

    assert_eq!(check.kind(), ErrorKind::Conflict);
    assert_eq!(delete.kind(), ErrorKind::Conflict);
    assert!(
        delete.message().contains(&format!("vms/{name}")),
        "{delete}"
    );
    assert!(rbd_ls("images").contains(&id.to_string()));
    assert!(rbd_ls("vms").contains(&name));
    assert_eq!(
        rbd_snaps("images", &id.to_string()),
        vec![(IMAGE_SNAPSHOT.to_string(), true)]
    );
}

#[tokio::test]
async fn disk_then_image_when_deleted_then_nothing_left_and_deletes_idempotent() {
    let pool = pool().await;
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    let id = cleanup.image(ImageId::new());
    let image = pool
        .import_image(id, &staged(dir.path(), &data(6, MIB)), "raw")
        .await
        .unwrap();
    let name = cleanup.disk(&unique_disk());
    let disk = pool.create_disk(&name, &image, "raw", 0).await.unwrap();

    pool.delete_disk(&disk).await.unwrap();
    pool.check_deletable(&image).await.unwrap();
    pool.delete_image(&image).await.unwrap();
    pool.delete_disk(&disk).await.unwrap();
    pool.delete_image(&image).await.unwrap();

    assert!(!rbd_ls("vms").contains(&name));
    assert!(!rbd_ls("images").contains(&id.to_string()));
    assert!(!pool.image_locations().await.unwrap().contains(&image));
}

#[tokio::test]
async fn flatten_when_disk_is_clone_then_image_deletable() {
    let pool = pool().await;
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(7, 5 * MIB);
    let image = pool
        .import_image(
            cleanup.image(ImageId::new()),
            &staged(dir.path(), &bytes),
            "raw",
        )
        .await
        .unwrap();
    let name = cleanup.disk(&unique_disk());
    let disk = pool.create_disk(&name, &image, "raw", 0).await.unwrap();

    pool.flatten_disk(&disk).await.unwrap();
    pool.delete_image(&image).await.unwrap();

    let clone = cluster().io_ctx("vms").unwrap().open_image(&name).unwrap();
    let mut copy = vec![0u8; bytes.len()];
    clone.read_at(0, &mut copy).unwrap();
    assert_eq!(clone.parent().unwrap(), None);
    assert!(copy == bytes, "the flattened disk lost the image's data");
}

#[tokio::test]
async fn location_when_from_another_cluster_or_pool_then_internal_error() {
    let pool = pool().await;
    let foreign = format!(
        "rbd://00000000-0000-0000-0000-000000000000/images/{}/snap",
        ImageId::new()
    );
    let disk_as_image = format!("rbd://{}/vms/x", pool.fsid());

    let from_elsewhere = pool.delete_image(&foreign).await.unwrap_err();
    let wrong_pool = pool.delete_image(&disk_as_image).await.unwrap_err();

    assert_eq!(from_elsewhere.kind(), ErrorKind::Internal);
    assert_eq!(wrong_pool.kind(), ErrorKind::Internal);
}

#[tokio::test]
async fn connect_when_no_cluster_answers_then_unavailable_naming_the_conf() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("dead.conf");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &conf,
        format!("[global]\nmon host = v1:127.0.0.1:{port}\nauth client required = none\n"),
    )
    .unwrap();
    let mut config = RbdConfig::new(&conf, "admin");
    config.op_timeout = Duration::from_secs(2);
    let started = Instant::now();

    let err = RbdPool::connect(config).await.unwrap_err();

    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("Ceph is unreachable"), "{err}");
    assert!(err.message().contains(conf.to_str().unwrap()), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connect_when_pool_missing_then_invalid_naming_the_pool() {
    let mut config = RbdConfig::new(ceph_conf(), "admin");
    config.vms_pool = "no-such-pool".into();

    let err = RbdPool::connect(config).await.unwrap_err();

    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("'no-such-pool'"), "{err}");
}

#[tokio::test]
async fn disk_when_client_died_with_it_open_then_delete_waits_for_stale_watch_and_removes() {
    let pool = pool().await;
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    let image = pool
        .import_image(
            cleanup.image(ImageId::new()),
            &staged(dir.path(), &data(8, MIB)),
            "raw",
        )
        .await
        .unwrap();
    let name = cleanup.disk(&unique_disk());
    let disk = pool.create_disk(&name, &image, "raw", 0).await.unwrap();
    // A writer that dies without closing the image, as a killed QEMU does.
    let conf = ceph_conf();
    let mut writer = Command::new("rbd")
        .arg("-c")
        .arg(&conf)
        .args([
            "bench",
            "--io-type",
            "write",
            "--io-size",
            "4K",
            "--io-threads",
            "1",
        ])
        .args(["--io-total", "256M", &format!("vms/{name}")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let watched = Instant::now() + Duration::from_secs(20);
    while !rbd_status(&conf, &name).contains("watcher=") && Instant::now() < watched {
        std::thread::sleep(Duration::from_millis(200));
    }
    writer.kill().unwrap();
    writer.wait().unwrap();
    let still_watched = rbd_status(&conf, &name).contains("watcher=");

    pool.delete_disk(&disk).await.unwrap();

    assert!(
        still_watched,
        "the killed writer left no watch: the test proves nothing"
    );
    assert!(!rbd_ls("vms").contains(&name));
}

fn rbd_status(conf: &Path, name: &str) -> String {
    let out = Command::new("rbd")
        .arg("-c")
        .arg(conf)
        .args(["status", &format!("vms/{name}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
