//! `diff_iterate`: which extents changed since a snapshot (or since creation).

mod common;

use std::panic::{self, AssertUnwindSafe};

use common::{cluster, pattern, pool, ImageGuard, MIB};
use rbd::{DiffExtent, DiffOptions};

#[test]
fn diff_when_from_creation_then_written_extents_reported() {
    // Arrange: writes at the start of objects (4 MiB each). librbd reports the allocated
    // extents of each object; a memstore OSD does not track holes, so a write in the middle
    // of an empty object would be reported from the object's start.
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "diff-all", 16 * MIB);
    let image = guard.open();
    image.write_at(0, &pattern(1, 4096)).unwrap();
    image.write_at(8 * MIB, &pattern(2, 8192)).unwrap();

    // Act
    let extents = image
        .diff_extents(0..16 * MIB, &DiffOptions::default())
        .unwrap();

    // Assert
    assert_eq!(
        extents,
        vec![
            DiffExtent {
                offset: 0,
                length: 4096,
                exists: true
            },
            DiffExtent {
                offset: 8 * MIB,
                length: 8192,
                exists: true
            },
        ]
    );
}

#[test]
fn diff_when_from_snapshot_then_only_later_writes_reported() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "diff-snap", 16 * MIB);
    let image = guard.open();
    image.write_at(0, &pattern(1, 4096)).unwrap();
    image.create_snap("s").unwrap();
    image.write_at(12 * MIB, &pattern(3, 4096)).unwrap();
    let options = DiffOptions {
        from_snapshot: Some("s".into()),
        ..DiffOptions::default()
    };

    // Act
    let extents = image.diff_extents(0..16 * MIB, &options).unwrap();

    // Assert
    assert_eq!(
        extents,
        vec![DiffExtent {
            offset: 12 * MIB,
            length: 4096,
            exists: true
        }]
    );
}

#[test]
fn diff_when_whole_object_then_extents_cover_objects() {
    // Arrange: default order 22, objects of 4 MiB.
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "diff-whole", 16 * MIB);
    let image = guard.open();
    image.write_at(5 * MIB, &pattern(1, 4096)).unwrap();
    let options = DiffOptions {
        whole_object: true,
        ..DiffOptions::default()
    };

    // Act
    let extents = image.diff_extents(0..16 * MIB, &options).unwrap();

    // Assert
    assert_eq!(
        extents,
        vec![DiffExtent {
            offset: 4 * MIB,
            length: 4 * MIB,
            exists: true
        }]
    );
}

#[test]
fn diff_when_callback_panics_then_panic_reaches_caller() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "diff-panic", 8 * MIB);
    let image = guard.open();
    image.write_at(0, &pattern(1, 4096)).unwrap();
    image.write_at(6 * MIB, &pattern(1, 4096)).unwrap();

    // Act
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        image.diff_iterate(0..8 * MIB, &DiffOptions::default(), |_| {
            panic!("extent callback failed")
        })
    }));

    // Assert
    let payload = outcome.expect_err("the callback's panic is re-raised");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"extent callback failed")
    );
}
