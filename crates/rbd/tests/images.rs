//! Connecting, and the life of a plain image: create, write, read, stat, resize, remove.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{cluster, pattern, pool, read, unique_name, ImageGuard, MIB};
use rbd::{Cluster, ConnectOptions, CreateOptions, ErrorKind, Features};

#[test]
fn fsid_when_connected_then_uuid_of_the_cluster() {
    // Arrange
    let cluster = cluster();

    // Act
    let fsid = cluster.fsid().unwrap();

    // Assert
    assert_eq!(fsid.len(), 36, "fsid {fsid:?}");
    assert_eq!(fsid.matches('-').count(), 4, "fsid {fsid:?}");
}

#[test]
fn connect_when_no_monitor_answers_then_timed_out() {
    // Arrange
    let mut conf = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        conf,
        "[global]\nmon host = 127.0.0.1:1\nauth client required = none\nlog file = /dev/null"
    )
    .unwrap();
    let options = ConnectOptions::new(conf.path()).mount_timeout(Duration::from_secs(1));

    // Act
    let err = Cluster::connect_with(&options).unwrap_err();

    // Assert
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert_eq!(err.op(), "rados_connect");
}

#[test]
fn connect_when_conf_file_missing_then_not_found() {
    // Arrange
    let conf = std::path::Path::new("/nonexistent/ceph.conf");

    // Act
    let err = Cluster::connect(conf, "admin", None).unwrap_err();

    // Assert
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(
        (err.op(), err.target()),
        ("rados_conf_read_file", "/nonexistent/ceph.conf")
    );
}

#[test]
fn io_ctx_when_pool_missing_then_not_found() {
    // Arrange
    let cluster = cluster();

    // Act
    let err = cluster.io_ctx("no-such-pool").unwrap_err();

    // Assert
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.target(), "no-such-pool");
}

#[test]
fn write_then_read_when_fresh_image_then_same_bytes_and_zeros_elsewhere() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "rw", 16 * MIB);
    let image = guard.open();
    let data = pattern(7, 64 * 1024);

    // Act
    image.write_at(5 * MIB + 3, &data).unwrap();
    image.flush().unwrap();

    // Assert
    assert_eq!(read(&image, 5 * MIB + 3, data.len()), data);
    assert_eq!(read(&image, 0, 4096), vec![0u8; 4096]);
}

#[test]
fn stat_when_created_then_size_order_and_layering() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let name = unique_name("stat");
    let options = CreateOptions {
        order: Some(20),
        features: Features::empty(),
    };

    // Act
    images.create_image(&name, 10 * MIB, &options).unwrap();
    let guard = ImageGuard::adopt(&images, &name);
    let image = guard.open();

    // Assert
    let info = image.stat().unwrap();
    assert_eq!(
        (info.size, info.order, info.object_size, info.num_objects),
        (10 * MIB, 20, MIB, 10)
    );
    assert_eq!(image.size().unwrap(), 10 * MIB);
    assert!(
        image.features().unwrap().contains(Features::LAYERING),
        "layering is always added"
    );
}

#[test]
fn resize_when_grown_then_new_size() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "resize", 8 * MIB);
    let image = guard.open();

    // Act
    image.resize(24 * MIB).unwrap();

    // Assert
    assert_eq!(image.size().unwrap(), 24 * MIB);
}

#[test]
fn create_when_name_taken_then_exists() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "dup", MIB);

    // Act
    let err = images
        .create_image(&guard.name, MIB, &CreateOptions::default())
        .unwrap_err();

    // Assert
    assert_eq!(err.kind(), ErrorKind::Exists);
    assert_eq!(err.target(), format!("images/{}", guard.name));
}

#[test]
fn remove_when_image_exists_then_gone_from_list_and_open_not_found() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "rm", MIB);
    let listed_before = images.list_images().unwrap().contains(&guard.name);

    // Act
    images.remove_image(&guard.name).unwrap();

    // Assert
    assert!(listed_before);
    assert!(!images.list_images().unwrap().contains(&guard.name));
    assert_eq!(
        images.open_image(&guard.name).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn open_when_image_missing_then_not_found_with_context() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");

    // Act
    let err = images.open_image("no-such-image").unwrap_err();

    // Assert
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        "rbd_open on images/no-such-image failed: not found"
    );
}

#[test]
fn image_when_moved_to_another_thread_then_usable_there() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "send", MIB);
    let image = guard.open();
    drop(cluster); // the image keeps its pool and cluster alive

    // Act
    let size = std::thread::spawn(move || image.size().unwrap())
        .join()
        .unwrap();

    // Assert
    assert_eq!(size, MIB);
}

#[test]
fn write_when_opened_at_snapshot_then_read_only() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "ro", MIB);
    guard.open().create_snap("s").unwrap();
    let at_snap = images.open_image_read_only(&guard.name, Some("s")).unwrap();

    // Act
    let err = at_snap.write_at(0, b"x").unwrap_err();

    // Assert
    assert_eq!(err.kind(), ErrorKind::ReadOnly);
}

#[test]
fn list_images_when_more_than_initial_buffer_then_all_listed() {
    // Arrange: 40 images; the first rbd_list2 call has room for 32 and gets -ERANGE.
    let cluster = cluster();
    let volumes = pool(&cluster, "volumes");
    let guards: Vec<ImageGuard> = (0..40)
        .map(|_| ImageGuard::create(&volumes, "many", MIB))
        .collect();

    // Act
    let listed = volumes.list_images().unwrap();

    // Assert
    let missing: Vec<_> = guards
        .iter()
        .filter(|g| !listed.contains(&g.name))
        .map(|g| &g.name)
        .collect();
    assert!(missing.is_empty(), "not listed: {missing:?}");
}
