//! Clones of protected snapshots, parent/children links, and flatten with progress.

mod common;

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use common::{cluster, pattern, pool, read, unique_name, ImageGuard, MIB};
use rbd::{CloneSource, CreateOptions, ErrorKind, Image, IoCtx, Progress};

/// A parent image in `images` with `data` at offset 0 and a protected snapshot `snap`.
fn protected_parent(images: &IoCtx, size: u64, data: &[u8]) -> (ImageGuard, Image) {
    let guard = ImageGuard::create(images, "parent", size);
    let parent = guard.open();
    parent.write_at(0, data).unwrap();
    parent.create_snap("snap").unwrap();
    parent.protect_snap("snap").unwrap();
    (guard, parent)
}

/// Clones `images/<parent>@snap` into `vms` and guards the clone.
fn clone_into(vms: &IoCtx, images: &IoCtx, parent: &ImageGuard) -> ImageGuard {
    let name = unique_name("clone");
    let source = CloneSource {
        pool: images,
        image: &parent.name,
        snapshot: "snap",
    };
    vms.clone_image(&name, &source, &CreateOptions::default())
        .unwrap();
    ImageGuard::adopt(vms, &name)
}

#[test]
fn clone_when_snapshot_protected_then_child_reads_parent_data_and_links_both_ways() {
    // Arrange
    let cluster = cluster();
    let (images, vms) = (pool(&cluster, "images"), pool(&cluster, "vms"));
    let data = pattern(9, 64 * 1024);
    let (parent_guard, parent) = protected_parent(&images, 8 * MIB, &data);
    let name = unique_name("clone");
    let source = CloneSource {
        pool: &images,
        image: &parent_guard.name,
        snapshot: "snap",
    };

    // Act
    vms.clone_image(&name, &source, &CreateOptions::default())
        .unwrap();
    let child_guard = ImageGuard::adopt(&vms, &name);

    // Assert
    let child = child_guard.open();
    assert_eq!(read(&child, 0, data.len()), data);
    let parent_info = child.parent().unwrap().expect("a clone has a parent");
    assert_eq!(
        (
            parent_info.image.pool.as_str(),
            parent_info.image.image.as_str(),
            parent_info.snapshot.as_str()
        ),
        ("images", parent_guard.name.as_str(), "snap")
    );
    let children = parent.list_children("snap").unwrap();
    let names: Vec<_> = children
        .iter()
        .map(|c| (c.pool.as_str(), c.image.as_str()))
        .collect();
    assert_eq!(names, vec![("vms", name.as_str())]);
}

#[test]
fn clone_when_snapshot_not_protected_then_invalid_argument() {
    // Arrange: clone format 1 needs a protected snapshot.
    let cluster = cluster();
    let (images, vms) = (pool(&cluster, "images"), pool(&cluster, "vms"));
    let parent_guard = ImageGuard::create(&images, "unprotected-parent", MIB);
    parent_guard.open().create_snap("snap").unwrap();
    let name = unique_name("clone");
    let source = CloneSource {
        pool: &images,
        image: &parent_guard.name,
        snapshot: "snap",
    };

    // Act
    let err = vms
        .clone_image(&name, &source, &CreateOptions::default())
        .unwrap_err();
    let _cleanup = ImageGuard::adopt(&vms, &name);

    // Assert
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

#[test]
fn parent_when_image_not_a_clone_then_none() {
    // Arrange
    let cluster = cluster();
    let images = pool(&cluster, "images");
    let guard = ImageGuard::create(&images, "no-parent", MIB);
    let image = guard.open();

    // Act
    let parent = image.parent().unwrap();

    // Assert
    assert_eq!(parent, None);
}

#[test]
fn unprotect_when_snapshot_has_children_then_busy() {
    // Arrange
    let cluster = cluster();
    let (images, vms) = (pool(&cluster, "images"), pool(&cluster, "vms"));
    let (parent_guard, parent) = protected_parent(&images, MIB, b"x");
    let _child = clone_into(&vms, &images, &parent_guard);

    // Act
    let err = parent.unprotect_snap("snap").unwrap_err();

    // Assert
    assert_eq!(err.kind(), ErrorKind::Busy);
}

#[test]
fn flatten_when_clone_then_progress_reported_parent_gone_and_data_intact() {
    // Arrange: an 8 MiB parent = 2 objects of 4 MiB; the data spans both.
    let cluster = cluster();
    let (images, vms) = (pool(&cluster, "images"), pool(&cluster, "vms"));
    let data = pattern(5, (4 * MIB + 4096) as usize);
    let (parent_guard, parent) = protected_parent(&images, 8 * MIB, &data);
    let child_guard = clone_into(&vms, &images, &parent_guard);
    let child = child_guard.open();
    let calls = Arc::new(Mutex::new(Vec::<Progress>::new()));
    let recorder = Arc::clone(&calls);

    // Act
    child
        .flatten_with_progress(move |p| recorder.lock().unwrap().push(p))
        .unwrap();

    // Assert
    let calls = calls.lock().unwrap();
    assert_eq!(
        calls.last(),
        Some(&Progress { done: 2, total: 2 }),
        "reports: {calls:?}"
    );
    assert_eq!(child.parent().unwrap(), None);
    assert!(parent.list_children("snap").unwrap().is_empty());
    assert_eq!(read(&child, 0, data.len()), data);
    parent.unprotect_snap("snap").unwrap(); // no children left, so this now succeeds
}

#[test]
fn flatten_when_progress_callback_panics_then_panic_reaches_caller_and_flatten_completes() {
    // Arrange
    let cluster = cluster();
    let (images, vms) = (pool(&cluster, "images"), pool(&cluster, "vms"));
    let (parent_guard, _parent) = protected_parent(&images, 4 * MIB, &pattern(6, 4096));
    let child_guard = clone_into(&vms, &images, &parent_guard);
    let child = child_guard.open();

    // Act
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        child.flatten_with_progress(|_| panic!("progress callback failed"))
    }));

    // Assert
    let payload = outcome.expect_err("the callback's panic is re-raised");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"progress callback failed")
    );
    assert_eq!(child.parent().unwrap(), None);
}

#[test]
fn write_to_clone_when_parent_shared_then_parent_snapshot_unchanged() {
    // Arrange
    let cluster = cluster();
    let (images, vms) = (pool(&cluster, "images"), pool(&cluster, "vms"));
    let data = pattern(8, 4096);
    let (parent_guard, _parent) = protected_parent(&images, MIB, &data);
    let child_guard = clone_into(&vms, &images, &parent_guard);
    let child = child_guard.open();

    // Act
    child.write_at(0, &pattern(9, 4096)).unwrap();

    // Assert
    let at_snap = images
        .open_image_read_only(&parent_guard.name, Some("snap"))
        .unwrap();
    assert_eq!(read(&at_snap, 0, 4096), data);
}

#[test]
fn list_children_when_more_than_initial_buffer_then_all_listed() {
    // Arrange: 12 clones; the first rbd_list_children3 call has room for 8 and gets -ERANGE.
    let cluster = cluster();
    let (images, vms) = (pool(&cluster, "images"), pool(&cluster, "vms"));
    let (parent_guard, parent) = protected_parent(&images, MIB, b"x");
    let clones: Vec<ImageGuard> = (0..12)
        .map(|_| clone_into(&vms, &images, &parent_guard))
        .collect();

    // Act
    let children = parent.list_children("snap").unwrap();

    // Assert
    let mut listed: Vec<_> = children.into_iter().map(|c| c.image).collect();
    let mut expected: Vec<_> = clones.iter().map(|g| g.name.clone()).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
}
