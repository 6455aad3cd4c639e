//! Acceptance: restore points (issue #7) of a server on the rbd pool, on
//! real QEMU (TCG, the disk opened through QEMU's rbd driver) and the dev
//! Ceph cluster, with the test guest writing a record every 100 ms. What
//! must be true:
//!
//! - A (disk-only) is an RBD snapshot of the server's disk taken without
//!   stopping the guest; B (with memory) stops it for milliseconds and its
//!   memory state is an RBD image in the disks' pool; an internal point is
//!   refused (409: raw RBD images);
//! - revert to B: the server's disk is a new clone of B's snapshot (no copy)
//!   and the guest goes on from B's RAM counter over exactly B's sequence;
//!   C (with memory) taken then; revert to A: a powered-off server whose
//!   next boot finds exactly A's data; D taken after that is a branch
//!   under A;
//! - delete B (C's disk is a clone of its snapshot): its memory image goes,
//!   reverting to C and to D still gives their exact data;
//! - at each stage the vms pool holds exactly what servers and points need;
//!   deleting the points, the server and the image leaves the pools empty.
//!
//! Evidence: the guest's console (`SEQ n ram=k`, banners), the logs on the
//! points' snapshots read by `scripts/guest-check.py` on an `rbd export`,
//! `rbd ls`/`rbd snap ls`/`rbd info`.
//!
//! Needs the dev cluster (`scripts/ceph-dev.sh start && eval
//! "$(scripts/ceph-dev.sh env)"`), the test guest, the `openstack` CLI and
//! python3.

mod common;
mod rbd_support;
mod restore_points_rbd_support;
mod restore_points_support;
mod snapshot_support;

use rbd_support::rbd_ls;
use restore_points_rbd_support::*;
use restore_points_support::*;
use serde_json::json;
use snapshot_support::*;

#[test]
fn rbd_points_a_b_c_d_when_guest_writes_then_reverts_give_exact_ram_and_disk_and_nothing_leaks() {
    let rbd_server = RbdPoints::start(&[]);
    let server = &rbd_server.server;
    let _log = LogOnFailure::new(server);
    let api = Api::new(server);
    let vm = boot(server, &api, "vm1", "guest", 1, 2);
    let run1 = api.console(&vm).last();
    let disk0 = server_disk(server, &vm);

    // A: disk-only. B: with memory. An internal point: refused.
    let a = take_point(&api, &vm, "A", false);
    api.wait_seq_above(&vm, api.console(&vm).last().seq + 3);
    let b = take_point(&api, &vm, "B", true);
    let internal = api.admin.post(
        &points_path(&vm),
        json!({"restore_point": {"name": "I", "method": "internal"}}),
    );
    let (a_id, b_id) = (
        a["id"].as_str().unwrap().to_string(),
        b["id"].as_str().unwrap().to_string(),
    );
    let (a_snap, b_snap) = (point_snapshot(server, &a_id), point_snapshot(server, &b_id));
    let b_state = point_state(server, &b_id);
    let (a_seq, b_seq) = (rbd_log(server, &a_snap).1, rbd_log(server, &b_snap).1);
    let vms_after_b = vms_contents();
    assert_vms_only_needed(server, "after A and B");
    api.wait_seq_above(&vm, api.console(&vm).last().seq + 10);

    // Revert to B: a clone of B's snapshot; the guest goes on from B.
    let before_b = api.console(&vm).seqs.len();
    revert(&api, &vm, &b_id);
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let first_after_b = first_after_revert(&api, &vm, before_b);
    let disk1 = server_disk(server, &vm);
    let disk1_parent = rbd_parent(&disk1);

    // C: with memory, on the reverted disk (a child of B).
    api.wait_seq_above(&vm, first_after_b.seq + 5);
    let before_c_seq = api.console(&vm).last().seq;
    let c = take_point(&api, &vm, "C", true);
    let after_c_seq = api.console(&vm).last().seq;
    let c_id = c["id"].as_str().unwrap().to_string();
    let c_seq = rbd_log(server, &point_snapshot(server, &c_id)).1;
    api.wait_seq_above(&vm, after_c_seq + 10);

    // Revert to A: powered off on A's data; its next boot finds A's log.
    revert(&api, &vm, &a_id);
    api.wait_settled(&vm, &["SHUTOFF"], ACTION);
    let disk2 = server_disk(server, &vm);
    let disk2_parent = rbd_parent(&disk2);
    let disk_after_a = rbd_log(server, &disk2).1;
    api.admin
        .post(
            &format!("/compute/v2.1/servers/{vm}/action"),
            json!({"os-start": null}),
        )
        .expect_status(202);
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let boot2 = api.wait_booted(&vm, 2, 2);

    // D: a branch under A.
    let d = take_point(&api, &vm, "D", false);
    let d_id = d["id"].as_str().unwrap().to_string();
    let d_seq = rbd_log(server, &point_snapshot(server, &d_id)).1;
    let tree_before_delete = tree(&api, &vm);
    assert_vms_only_needed(server, "after D");

    // Delete B (C's disk stands on its snapshot), then revert to C and to D.
    delete_point(&api, &vm, &b_id);
    let b_state_after_delete = b_state
        .as_ref()
        .map(|s| rbd_ls(VMS).contains(&s.split('/').nth(1).unwrap().to_string()));
    assert_vms_only_needed(server, "after deleting B");
    let c_after_delete = show_point(&api, &vm, &c_id);
    let before_c = api.console(&vm).seqs.len();
    revert(&api, &vm, &c_id);
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let first_after_c = first_after_revert(&api, &vm, before_c);
    revert(&api, &vm, &d_id);
    api.wait_settled(&vm, &["SHUTOFF"], ACTION);
    let disk_after_d = rbd_log(server, &server_disk(server, &vm)).1;
    assert_vms_only_needed(server, "after reverting to C and D");

    // Everything goes: A, C, D, then the server, then the image.
    for id in [&a_id, &c_id, &d_id] {
        delete_point(&api, &vm, id);
    }
    let empty_tree = tree(&api, &vm);
    api.admin
        .delete(&format!("/compute/v2.1/servers/{vm}"))
        .expect_status(204);
    let deadline = std::time::Instant::now() + ACTION;
    while !rbd_ls(VMS).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    let vms_left = vms_contents();
    common::ok(server.openstack(&["image", "delete", "guest"]));
    let deadline = std::time::Instant::now() + ACTION;
    while !rbd_ls("rp-images").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(POLL);
    }

    // A and B: snapshots of the server's disk, B's memory beside it.
    assert_eq!(a["guest_pause_ms"], 0.0, "A stopped the guest: {a}");
    let b_pause = b["guest_pause_ms"].as_f64().unwrap();
    let c_pause = c["guest_pause_ms"].as_f64().unwrap();
    eprintln!("guest pause: B {b_pause} ms, C {c_pause} ms");
    assert!(b_pause > 0.0 && b_pause < 1000.0, "{b}");
    assert_eq!(a_snap, format!("{disk0}@rp-{a_id}"));
    assert_eq!(b_snap, format!("{disk0}@rp-{b_id}"));
    assert_eq!(b_state, Some(format!("{VMS}/rp-{b_id}-mem")));
    assert!(
        vms_after_b.contains(&format!("{VMS}/rp-{b_id}-mem")),
        "{vms_after_b:?}"
    );
    assert_eq!(internal.status, 409, "{:?}", internal.body);
    assert!(a_seq < b_seq, "{a_seq} {b_seq}");
    // Revert to B: a clone of B's snapshot, B's next record, same run.
    assert_ne!(disk1, disk0);
    assert_eq!(disk1_parent.as_deref(), Some(b_snap.as_str()));
    assert!(
        first_after_b.seq > b_seq && first_after_b.seq <= b_seq + 10,
        "B's disk ends at {b_seq}; the guest went on at {first_after_b:?}"
    );
    assert_eq!(first_after_b.seq - first_after_b.ram, run1.seq - run1.ram);
    // Revert to A: A's data, then a cold boot on it.
    assert_eq!(disk2_parent.as_deref(), Some(a_snap.as_str()));
    assert_eq!(disk_after_a, a_seq);
    assert_eq!(boot2.banners.last().unwrap().last_seq, a_seq);
    // The tree.
    assert_eq!(b["parent_id"], a_id.as_str());
    assert_eq!(c["parent_id"], b_id.as_str());
    assert_eq!(d["parent_id"], a_id.as_str());
    assert_eq!(tree_before_delete["current"], d_id.as_str());
    assert_eq!(c_after_delete["parent_id"], a_id.as_str());
    assert_eq!(b_state_after_delete, Some(false), "B's memory image stayed");
    // C and D after B's delete: their exact data.
    assert!(
        first_after_c.seq > before_c_seq && first_after_c.seq <= after_c_seq + 10,
        "C was taken between {before_c_seq} and {after_c_seq}; the guest went on at {first_after_c:?}"
    );
    assert!(first_after_c.seq > c_seq && first_after_c.seq <= c_seq + 10);
    assert_eq!(first_after_c.seq - first_after_c.ram, run1.seq - run1.ram);
    assert_eq!(disk_after_d, d_seq);
    // Nothing left.
    assert_eq!(empty_tree["restore_points"], json!([]));
    assert_eq!(vms_left, Vec::<String>::new());
    assert_eq!(rbd_ls("rp-images"), Vec::<String>::new());
}

/// Clone generations `spec` stands on (its parent, the parent's parent, …).
fn clone_depth(spec: &str) -> usize {
    let mut depth = 0;
    let mut image = spec.to_string();
    while let Some(parent) = rbd_parent(&image) {
        depth += 1;
        image = parent.split('@').next().unwrap().to_string();
    }
    depth
}

#[test]
fn rbd_reverts_when_chained_past_clone_depth_then_disk_flattened_data_kept_and_old_disks_released()
{
    let rbd_server = RbdPoints::start(&[]);
    let server = &rbd_server.server;
    let _log = LogOnFailure::new(server);
    let api = Api::new(server);
    let vm = boot(server, &api, "vm1", "guest", 1, 2);
    api.admin
        .post(
            &format!("/compute/v2.1/servers/{vm}/action"),
            json!({"os-stop": null}),
        )
        .expect_status(202);
    api.wait_settled(&vm, &["SHUTOFF"], ACTION);
    let written = rbd_log(server, &server_disk(server, &vm));

    // Seven rounds of: point of the stopped server's disk, revert to it.
    let mut depths = Vec::new();
    let mut points = Vec::new();
    for round in 0..7 {
        let p = take_point(&api, &vm, &format!("P{round}"), false);
        let id = p["id"].as_str().unwrap().to_string();
        revert(&api, &vm, &id);
        api.wait_settled(&vm, &["SHUTOFF"], ACTION);
        points.push(id);
        // The flatten runs in the background after the revert.
        let deadline = std::time::Instant::now() + ACTION;
        let mut depth = clone_depth(&server_disk(server, &vm));
        while depth > 5 && std::time::Instant::now() < deadline {
            std::thread::sleep(POLL);
            depth = clone_depth(&server_disk(server, &vm));
        }
        depths.push(depth);
    }
    let disk_now = rbd_log(server, &server_disk(server, &vm));
    assert_vms_only_needed(server, "with the seven points");
    let disks_with_points = rbd_ls(VMS).len();
    for id in &points {
        delete_point(&api, &vm, id);
    }
    assert_vms_only_needed(server, "after deleting the points");
    let disks_after = rbd_ls(VMS);

    eprintln!("clone depth after each revert: {depths:?}");
    // The guest's disk is a clone of the image (1), each revert adds one
    // generation; past 5 the disk is flattened (0) and grows again.
    assert_eq!(depths, [2, 3, 4, 5, 0, 1, 2]);
    assert_eq!(disk_now, written);
    assert_eq!(disks_with_points, 8, "{:?}", rbd_ls(VMS));
    // The flattened disk's ancestors went with their points; what is left is
    // the server's disk and the two generations it still stands on.
    assert_eq!(disks_after.len(), 3, "{disks_after:?}");
}

#[test]
fn rbd_point_when_its_snapshot_or_memory_image_vanished_then_broken_after_restart_refused_and_deletable(
) {
    let mut rbd_server = RbdPoints::start(&[]);
    let api = Api::new(&rbd_server.server);
    let vm = boot(&rbd_server.server, &api, "vm1", "guest", 1, 1);
    let a = take_point(&api, &vm, "A", false);
    let b = take_point(&api, &vm, "B", true);
    let (a_id, b_id) = (
        a["id"].as_str().unwrap().to_string(),
        b["id"].as_str().unwrap().to_string(),
    );
    let a_snap = point_snapshot(&rbd_server.server, &a_id);
    let b_state = point_state(&rbd_server.server, &b_id).unwrap();

    // Someone removes A's snapshot and B's memory image behind Snapstack's back.
    rbd_support::rbd(&["snap", "rm", "--no-progress", &a_snap]);
    rbd_support::rbd(&["rm", "--no-progress", &b_state]);
    rbd_server.server.restart();
    let api = Api::new(&rbd_server.server);
    let a_after = show_point(&api, &vm, &a_id);
    let b_after = show_point(&api, &vm, &b_id);
    let revert_a = api.admin.post(
        &format!("{}/{a_id}/action", points_path(&vm)),
        json!({"revert": {}}),
    );
    let revert_b = api.admin.post(
        &format!("{}/{b_id}/action", points_path(&vm)),
        json!({"revert": {}}),
    );
    let server_after = api.show(&vm);
    for id in [&a_id, &b_id] {
        delete_point(&api, &vm, id);
    }
    assert_vms_only_needed(&rbd_server.server, "after deleting the broken points");
    let tree_after = tree(&api, &vm);

    assert_eq!(a_after["status"], "broken", "{a_after}");
    assert_eq!(b_after["status"], "broken", "{b_after}");
    assert_eq!(revert_a.status, 409, "{:?}", revert_a.body);
    assert_eq!(revert_b.status, 409, "{:?}", revert_b.body);
    assert_eq!(server_after["status"], "ACTIVE");
    assert_eq!(tree_after["restore_points"], json!([]));
}
