//! Images made from disks on the `rbd` pool (a server snapshot), against
//! the real dev cluster: O(1) clone of a disk snapshot, readable at once,
//! flattened later; the disk's snapshot released by the flatten, by the
//! image's removal, or by garbage collection — never before.
//!
//! The tests take turns ([`TURN`]): garbage collection removes whatever in
//! the pools its roots do not name, other tests' data included.

mod rbd_support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use domain::{ErrorKind, ImageId};
use rbd_support::*;
use storage::rbd::RbdPool;
use storage::Pool;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An image in the images pool (`data(7, 8 MiB)`, a hole at 4–8 MiB), a
/// 16 MiB disk cloned from it, and the hole filled with `0x5A` in the disk.
async fn written_disk(pool: &RbdPool, cleanup: &mut Cleanup) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let base = pool
        .import_image(
            cleanup.image(ImageId::new()),
            &staged(dir.path(), &data(7, 8 * MIB)),
            "raw",
        )
        .await
        .unwrap();
    let name = cleanup.disk(&unique_disk());
    let disk = pool
        .create_disk(&name, &base, "raw", 16 * MIB as u64)
        .await
        .unwrap();
    write_disk(&name, 4 * MIB as u64, 0x5A);
    (name, disk)
}

fn write_disk(name: &str, offset: u64, byte: u8) {
    let vms = cluster().io_ctx("vms").unwrap();
    let image = vms.open_image(name).unwrap();
    image.write_at(offset, &vec![byte; 4 * MIB]).unwrap();
    image.flush().unwrap();
    image.close().unwrap();
}

fn parent_of(pool: &str, name: &str) -> Option<(String, String, String)> {
    let io = cluster().io_ctx(pool).unwrap();
    let image = io.open_image(name).unwrap();
    let parent = image.parent().unwrap();
    parent.map(|p| (p.image.pool, p.image.image, p.snapshot))
}

#[tokio::test]
async fn image_from_disk_when_disk_written_later_then_image_keeps_the_instant_until_and_after_flatten(
) {
    let _turn = TURN.lock().await;
    let pool = pool().await;
    let mut cleanup = Cleanup::new();
    let (name, disk) = written_disk(&pool, &mut cleanup).await;
    let mut derived = Cleanup::new();
    let id = derived.image(ImageId::new());

    let (location, size) = pool.image_from_disk(&disk, id).await.unwrap();
    let again = pool.image_from_disk(&disk, id).await.unwrap();
    write_disk(&name, 4 * MIB as u64, 0xC3);
    let (before_flatten, _) = read_from(&pool, &location, 0).await;
    let linked = parent_of("images", &id.to_string());
    let disk_snaps = rbd_snaps("vms", &name);
    let reports = Arc::new(Mutex::new(Vec::new()));
    let sink = reports.clone();
    let flattened = pool
        .flatten_image(&location, Box::new(move |p| sink.lock().unwrap().push(p)))
        .await
        .unwrap();
    let flattened_again = pool
        .flatten_image(&location, Box::new(|_| {}))
        .await
        .unwrap();
    let (after_flatten, _) = read_from(&pool, &location, 0).await;

    assert_eq!(location, format!("rbd://{}/images/{id}/snap", pool.fsid()));
    assert_eq!(again, (location.clone(), size));
    assert_eq!(size, 16 * MIB as u64);
    assert!(before_flatten[..4 * MIB] == data(7, 4 * MIB)[..]);
    assert!(before_flatten[4 * MIB..8 * MIB].iter().all(|b| *b == 0x5A));
    assert!(before_flatten[8 * MIB..].iter().all(|b| *b == 0));
    assert!(
        after_flatten == before_flatten,
        "the flatten changed the data"
    );
    assert_eq!(
        linked,
        Some(("vms".into(), name.clone(), format!("image-{id}")))
    );
    assert_eq!(disk_snaps, vec![(format!("image-{id}"), true)]);
    assert!(flattened && !flattened_again);
    assert_eq!(reports.lock().unwrap().last(), Some(&100));
    assert_eq!(parent_of("images", &id.to_string()), None);
    assert_eq!(rbd_snaps("vms", &name), vec![]);
    assert_eq!(
        rbd_snaps("images", &id.to_string()),
        vec![("snap".to_string(), true)]
    );
}

#[tokio::test]
async fn disk_when_image_not_flattened_then_kept_by_gc_until_flatten_then_collected() {
    let _turn = TURN.lock().await;
    let pool = pool().await;
    let mut cleanup = Cleanup::new();
    let (name, disk) = written_disk(&pool, &mut cleanup).await;
    let mut derived = Cleanup::new();
    let id = derived.image(ImageId::new());
    let (location, _) = pool.image_from_disk(&disk, id).await.unwrap();
    let base = format!("rbd://{}/images/{}/snap", pool.fsid(), cleanup.images[0]);
    // The server is gone: only the two images are roots.
    let roots: BTreeSet<String> = [base, location.clone()].into();

    let refused = pool.delete_disk(&disk).await.unwrap_err();
    let first = pool.collect_garbage(&roots).await.unwrap();
    let kept = rbd_ls("vms").contains(&name);
    pool.flatten_image(&location, Box::new(|_| {}))
        .await
        .unwrap();
    let second = pool.collect_garbage(&roots).await.unwrap();
    let (image_data, _) = read_from(&pool, &location, 0).await;

    assert_eq!(refused.kind(), ErrorKind::Conflict);
    assert!(!first.contains(&disk), "{first:?}");
    assert!(kept);
    assert!(second.contains(&disk), "{second:?}");
    assert!(!rbd_ls("vms").contains(&name));
    assert!(image_data[4 * MIB..8 * MIB].iter().all(|b| *b == 0x5A));
}

#[tokio::test]
async fn image_from_disk_when_deleted_before_flatten_then_disk_snapshot_released() {
    let _turn = TURN.lock().await;
    let pool = pool().await;
    let mut cleanup = Cleanup::new();
    let (name, disk) = written_disk(&pool, &mut cleanup).await;
    let id = ImageId::new();
    let (location, _) = pool.image_from_disk(&disk, id).await.unwrap();

    pool.check_deletable(&location).await.unwrap();
    pool.delete_image(&location).await.unwrap();

    assert!(!rbd_ls("images").contains(&id.to_string()));
    assert_eq!(rbd_snaps("vms", &name), vec![]);
    pool.delete_disk(&disk).await.unwrap();
}

#[tokio::test]
async fn gc_when_disk_snapshot_left_by_a_crash_then_released_and_cloned_ones_kept() {
    let _turn = TURN.lock().await;
    let pool = pool().await;
    let mut cleanup = Cleanup::new();
    let (name, disk) = written_disk(&pool, &mut cleanup).await;
    let mut derived = Cleanup::new();
    let kept_id = derived.image(ImageId::new());
    let (kept, _) = pool.image_from_disk(&disk, kept_id).await.unwrap();
    // What a crash between `rbd snap create` and the clone leaves.
    let orphan = format!("image-{}", ImageId::new());
    {
        let vms = cluster().io_ctx("vms").unwrap();
        let image = vms.open_image(&name).unwrap();
        image.create_snap(&orphan).unwrap();
        image.protect_snap(&orphan).unwrap();
        image.close().unwrap();
    }
    let base = format!("rbd://{}/images/{}/snap", pool.fsid(), cleanup.images[0]);
    let roots: BTreeSet<String> = [base, kept, disk].into();

    let removed = pool.collect_garbage(&roots).await.unwrap();

    assert!(
        removed.contains(&format!("vms/{name}@{orphan}")),
        "{removed:?}"
    );
    assert_eq!(
        rbd_snaps("vms", &name),
        vec![(format!("image-{kept_id}"), true)]
    );
}
