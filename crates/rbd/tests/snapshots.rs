//! Snapshots: create, list (including long lists that need librbd's -ERANGE retry),
//! protect/unprotect, remove, rollback.

mod common;

use common::{cluster, pattern, pool, read, ImageGuard, MIB};
use rbd::ErrorKind;

#[test]
fn list_snaps_when_created_then_names_in_creation_order_with_size() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "snaps", 4 * MIB);
    let image = guard.open();

    // Act
    image.create_snap("first").unwrap();
    image.resize(8 * MIB).unwrap();
    image.create_snap("second").unwrap();
    let snaps = image.list_snaps().unwrap();

    // Assert
    let listed: Vec<_> = snaps.iter().map(|s| (s.name.as_str(), s.size)).collect();
    assert_eq!(listed, vec![("first", 4 * MIB), ("second", 8 * MIB)]);
    assert!(snaps[0].id < snaps[1].id);
}

#[test]
fn list_snaps_when_more_than_initial_buffer_then_all_listed() {
    // Arrange: 40 snapshots; the first rbd_snap_list call has room for 16 and gets -ERANGE.
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "many-snaps", MIB);
    let image = guard.open();
    let names: Vec<String> = (0..40).map(|i| format!("s{i:02}")).collect();
    for name in &names {
        image.create_snap(name).unwrap();
    }

    // Act
    let snaps = image.list_snaps().unwrap();

    // Assert
    let listed: Vec<String> = snaps.into_iter().map(|s| s.name).collect();
    assert_eq!(listed, names);
}

#[test]
fn list_snaps_when_none_then_empty() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "no-snaps", MIB);
    let image = guard.open();

    // Act
    let snaps = image.list_snaps().unwrap();

    // Assert
    assert!(snaps.is_empty());
}

#[test]
fn protect_when_snapshot_exists_then_reported_protected() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "protect", MIB);
    let image = guard.open();
    image.create_snap("s").unwrap();
    let before = image.is_snap_protected("s").unwrap();

    // Act
    image.protect_snap("s").unwrap();

    // Assert
    assert!(!before);
    assert!(image.is_snap_protected("s").unwrap());
}

#[test]
fn remove_snap_when_protected_then_busy() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "rm-protected", MIB);
    let image = guard.open();
    image.create_snap("s").unwrap();
    image.protect_snap("s").unwrap();

    // Act
    let err = image.remove_snap("s").unwrap_err();

    // Assert
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert_eq!(err.target(), format!("images/{}@s", guard.name));
    assert!(image.snap_exists("s").unwrap());
}

#[test]
fn remove_snap_when_unprotected_again_then_gone() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "unprotect", MIB);
    let image = guard.open();
    image.create_snap("s").unwrap();
    image.protect_snap("s").unwrap();

    // Act
    image.unprotect_snap("s").unwrap();
    image.remove_snap("s").unwrap();

    // Assert
    assert!(!image.snap_exists("s").unwrap());
}

#[test]
fn unprotect_when_not_protected_then_invalid_argument() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "unprotect-twice", MIB);
    let image = guard.open();
    image.create_snap("s").unwrap();

    // Act
    let err = image.unprotect_snap("s").unwrap_err();

    // Assert
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn create_snap_when_name_taken_then_exists() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "snap-dup", MIB);
    let image = guard.open();
    image.create_snap("s").unwrap();

    // Act
    let err = image.create_snap("s").unwrap_err();

    // Assert
    assert_eq!(err.kind(), ErrorKind::Exists);
}

#[test]
fn remove_image_when_it_has_snapshots_then_not_empty() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "rm-with-snaps", MIB);
    let image = guard.open();
    image.create_snap("s").unwrap();
    image.close().unwrap();

    // Act
    let err = images.remove_image(&guard.name).unwrap_err();

    // Assert
    assert_eq!(err.kind(), ErrorKind::NotEmpty);
}

#[test]
fn rollback_when_overwritten_after_snapshot_then_old_content_back() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "rollback", 4 * MIB);
    let image = guard.open();
    let before = pattern(1, 8192);
    image.write_at(MIB, &before).unwrap();
    image.create_snap("s").unwrap();
    image.write_at(MIB, &pattern(2, 8192)).unwrap();

    // Act
    image.rollback_to_snap("s").unwrap();

    // Assert
    assert_eq!(read(&image, MIB, 8192), before);
}

#[test]
fn read_when_opened_at_snapshot_then_content_of_that_instant() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "snap-read", 4 * MIB);
    let image = guard.open();
    let at_snapshot = pattern(3, 4096);
    image.write_at(0, &at_snapshot).unwrap();
    image.create_snap("s").unwrap();
    image.write_at(0, &pattern(4, 4096)).unwrap();

    // Act
    let at_snap = images.open_image_read_only(&guard.name, Some("s")).unwrap();

    // Assert
    assert_eq!(read(&at_snap, 0, 4096), at_snapshot);
    assert_eq!(at_snap.snapshot(), Some("s"));
}
