//! Acceptance: restore points of a server with an attached volume (issue
//! #7 over #6), on the file pool, on real QEMU (TCG), with the test guest
//! writing its record log to both disks in lockstep. What must be true:
//!
//! - A (disk-only) cuts the root disk and the volume at one instant without
//!   stopping the guest; B (with memory) cuts both with the RAM: each
//!   point's volume layer ends where its root layer ends (or one record
//!   behind: the guest writes the root disk first in each round);
//! - revert to B: the guest goes on from B's RAM counter, and both disks go
//!   on from B's data — a disk-only point C taken right after holds on the
//!   volume exactly what the root disk holds, not the records the volume
//!   had before the revert;
//! - revert to A: a powered-off server whose two disks hold exactly A's
//!   data, and whose next boot finds it on both;
//! - a revert while the server's volumes differ from the point's is 409;
//! - deleting the points, the server and the volume leaves no file behind.
//!
//! Evidence: the guest's console (`SEQ n ram=k`, banners, `DISK` lines), its
//! disks' logs read by `scripts/guest-check.py` on the points' layers and
//! the disks' current tops (paths from the service's database).
//!
//! Needs the test guest (`scripts/build-guest.sh`), the `openstack` CLI
//! (`scripts/install-deps.sh`) and python3.

mod cli_volume_attach_support;
mod cli_volumes_support;
mod common;
mod restore_points_support;
mod snapshot_support;

use std::path::PathBuf;

use cli_volume_attach_support::*;
use cli_volumes_support::VolumeApi;
use common::{ok, run, Server};
use restore_points_support::*;
use serde_json::{json, Value};
use snapshot_support::*;

/// Reads one column of the service's database.
fn query(server: &Server, sql: &str) -> String {
    let script = format!(
        "import sqlite3, sys\n\
         db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
         print('\\n'.join(str(r[0]) for r in db.execute(\"{sql}\")))\n"
    );
    let db = server.data_dir().join("snapstack.db");
    run("python3", &["-c", &script, db.to_str().unwrap()])
        .trim()
        .to_string()
}

fn path_of(location: &str) -> PathBuf {
    PathBuf::from(location.strip_prefix("file://").unwrap_or(location))
}

/// A point's (root layer, volume layer) and the volume id it records.
fn point_layers(server: &Server, id: &str) -> (PathBuf, PathBuf, String) {
    let disks: Value = serde_json::from_str(&query(
        server,
        &format!("SELECT disks FROM restore_points WHERE id = '{id}'"),
    ))
    .unwrap();
    let disks = disks.as_array().unwrap();
    assert_eq!(
        disks.len(),
        2,
        "point {id} does not have two disks: {disks:?}"
    );
    let root = disks.iter().find(|d| d["volume_id"].is_null()).unwrap();
    let volume = disks.iter().find(|d| d["volume_id"].is_string()).unwrap();
    (
        path_of(root["layer"].as_str().unwrap()),
        path_of(volume["layer"].as_str().unwrap()),
        volume["volume_id"].as_str().unwrap().to_string(),
    )
}

/// The volume's current top, from the database.
fn volume_top(server: &Server, volume: &str) -> PathBuf {
    path_of(&query(
        server,
        &format!("SELECT location FROM volumes WHERE id = '{volume}'"),
    ))
}

/// The last record of the root layer and of the volume layer of a point.
fn point_seqs(server: &Server, id: &str) -> (u64, u64) {
    let (root, volume, _) = point_layers(server, id);
    (log_of(&root).1, log_of(&volume).1)
}

/// The volume is at most one record behind the root disk (lockstep).
fn in_lockstep(root: u64, volume: u64) -> bool {
    volume == root || volume + 1 == root
}

#[test]
fn points_when_volume_attached_then_cut_and_reverted_with_the_root_disk_and_nothing_leaks() {
    let _one = one_at_a_time();
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let (api, volumes) = (Api::new(&server), VolumeApi::new(server.admin()));
    let vm = boot(&server, &api, "vm1", "guest", 1, 2);
    let v1 = volume_create(&server, &volumes, &["--size", "1"], "v1");
    ok(server.openstack(&["server", "add", "volume", "vm1", "v1"]));
    wait_volume_attached(&volumes, &v1, "in-use", 1);
    let at_plug = wait_disk_line(&api, &vm, "RESET vdb", 0);
    api.wait_seq_above(&vm, at_plug.last().seq + 5);
    let run1 = api.console(&vm).last();

    // A: disk-only. B: with memory.
    let a = take_point(&api, &vm, "A", false);
    api.wait_seq_above(&vm, api.console(&vm).last().seq + 5);
    let b = take_point(&api, &vm, "B", true);
    let (a_id, b_id) = (id_of(&a), id_of(&b));
    let ((a_root, a_vol), (b_root, b_vol)) =
        (point_seqs(&server, &a_id), point_seqs(&server, &b_id));
    let a_volume_id = point_layers(&server, &a_id).2;
    // The volume moves on well past B, so that stale records would show.
    let before_revert = api.wait_seq_above(&vm, b_root + 100).last().seq;

    // Revert to B, then C (disk-only) as soon as the guest goes on.
    let lines_before_b = api.console(&vm).seqs.len();
    revert(&api, &vm, &b_id);
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let first_after_b = first_after_revert(&api, &vm, lines_before_b);
    let c = take_point(&api, &vm, "C", false);
    let c_id = id_of(&c);
    let (c_root, c_vol) = point_seqs(&server, &c_id);

    // Revert to A: powered off on A's data on both disks; the next boot.
    revert(&api, &vm, &a_id);
    api.wait_settled(&vm, &["SHUTOFF"], ACTION);
    let root_after_a = log_of(&restore_points_support::root_disk(&server, &vm)).1;
    let vol_after_a = log_of(&volume_top(&server, &v1)).1;
    let disk_lines_before = disk_lines(&api.console(&vm)).len();
    ok(server.openstack(&["server", "start", "vm1"]));
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let boot2 = api.wait_booted(&vm, 2, 2);
    let boot2_disk = wait_disk_line(&api, &vm, "DISK vdb", disk_lines_before);
    let boot2_disk_line = disk_lines(&boot2_disk)[disk_lines_before..]
        .iter()
        .find(|l| l.starts_with("DISK vdb"))
        .cloned()
        .unwrap();

    // Detached since the point: a revert to it is refused.
    ok(server.openstack(&["server", "stop", "vm1"]));
    api.wait_settled(&vm, &["SHUTOFF"], ACTION);
    ok(server.openstack(&["server", "remove", "volume", "vm1", "v1"]));
    wait_volume_attached(&volumes, &v1, "available", 0);
    let refused = api.admin.post(
        &format!("{}/{b_id}/action", points_path(&vm)),
        json!({"revert": {}}),
    );

    // Everything goes.
    for id in [&a_id, &b_id, &c_id] {
        delete_point(&api, &vm, id);
    }
    server_delete(&server, "vm1");
    volumes.delete(&format!("/volumes/{v1}")).expect_status(202);
    volumes.wait_volume_gone(&v1);
    let deadline = std::time::Instant::now() + ACTION;
    while !names_in_pool(&server, "disks").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(POLL);
    }

    eprintln!(
        "A root {a_root} volume {a_vol}; B root {b_root} volume {b_vol} (pause {} ms); \
         before revert {before_revert}; after B {first_after_b:?}; C root {c_root} volume {c_vol}",
        b["guest_pause_ms"]
    );

    // The points: both disks at one instant, no pause for A.
    assert_eq!(a["guest_pause_ms"], 0.0, "A stopped the guest: {a}");
    assert!(b["guest_pause_ms"].as_f64().unwrap() > 0.0, "{b}");
    assert_eq!(a_volume_id, v1);
    assert!(
        in_lockstep(a_root, a_vol),
        "A: root {a_root}, volume {a_vol}"
    );
    assert!(
        in_lockstep(b_root, b_vol),
        "B: root {b_root}, volume {b_vol}"
    );
    assert!(a_root < b_root, "{a_root} {b_root}");
    // Revert to B: B's next record, same run (RAM counter in step) …
    assert!(
        first_after_b.seq > b_root && first_after_b.seq <= b_root + 10,
        "B's disk ends at {b_root}; the guest went on at {first_after_b:?}"
    );
    assert_eq!(first_after_b.seq - first_after_b.ram, run1.seq - run1.ram);
    // … on both disks: at C the volume holds what the root disk holds, not
    // the records it had up to the revert.
    assert!(
        c_root < before_revert,
        "C ({c_root}) came too late to tell: the guest was at {before_revert} before the revert"
    );
    assert!(c_root > b_root, "{c_root} {b_root}");
    assert!(
        in_lockstep(c_root, c_vol),
        "C: root {c_root}, volume {c_vol}"
    );
    // Revert to A: A's data on both disks, and a cold boot on it.
    assert_eq!(root_after_a, a_root);
    assert_eq!(vol_after_a, a_vol);
    assert_eq!(boot2.banners.last().unwrap().last_seq, a_root);
    assert_eq!(
        field(&boot2_disk_line, "last_seq"),
        Some(a_vol),
        "{boot2_disk_line}"
    );
    // Other volumes than the point's: 409, saying why.
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert!(
        refused.body.to_string().contains("other volumes"),
        "{:?}",
        refused.body
    );
    // Nothing left.
    assert_eq!(names_in_pool(&server, "disks"), Vec::<String>::new());
    assert_eq!(state_files(&server), Vec::<String>::new());
}

#[test]
fn point_when_booted_from_volume_then_memory_revert_goes_on_from_the_volume_layer_and_nothing_leaks(
) {
    let _one = one_at_a_time();
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let (api, volumes) = (Api::new(&server), VolumeApi::new(server.admin()));
    let boot1 = volume_create(
        &server,
        &volumes,
        &["--image", "guest", "--size", "2"],
        "boot1",
    );
    let vm = id_of(&server_create(&server, &["--volume", "boot1"], "vm2"));
    api.wait_booted(&vm, 1, 2);
    let run1 = api.console(&vm).last();

    let b = take_point(&api, &vm, "B", true);
    let b_id = id_of(&b);
    let disks: Value = serde_json::from_str(&query(
        &server,
        &format!("SELECT disks FROM restore_points WHERE id = '{b_id}'"),
    ))
    .unwrap();
    let b_layer = path_of(disks[0]["layer"].as_str().unwrap());
    let b_seq = log_of(&b_layer).1;
    api.wait_seq_above(&vm, b_seq + 20);
    let lines_before = api.console(&vm).seqs.len();
    revert(&api, &vm, &b_id);
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let first_after_b = first_after_revert(&api, &vm, lines_before);
    let top_after_b = volume_top(&server, &boot1);
    let layer_after_b = log_of(&b_layer).1;

    delete_point(&api, &vm, &b_id);
    server_delete(&server, "vm2");
    wait_volume_attached(&volumes, &boot1, "available", 0);
    volumes
        .delete(&format!("/volumes/{boot1}"))
        .expect_status(202);
    volumes.wait_volume_gone(&boot1);
    let deadline = std::time::Instant::now() + ACTION;
    while !names_in_pool(&server, "disks").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(POLL);
    }

    // The point is the volume's layer (no root disk).
    assert_eq!(disks.as_array().unwrap().len(), 1, "{disks}");
    assert_eq!(disks[0]["volume_id"], boot1.as_str());
    assert!(b["guest_pause_ms"].as_f64().unwrap() > 0.0, "{b}");
    // Revert: B's next record, same run, on a new top; B's layer unwritten.
    assert!(
        first_after_b.seq > b_seq && first_after_b.seq <= b_seq + 10,
        "B's layer ends at {b_seq}; the guest went on at {first_after_b:?}"
    );
    assert_eq!(first_after_b.seq - first_after_b.ram, run1.seq - run1.ram);
    assert_ne!(top_after_b, b_layer);
    assert_eq!(layer_after_b, b_seq, "B's layer was written");
    // Nothing left.
    assert_eq!(names_in_pool(&server, "disks"), Vec::<String>::new());
    assert_eq!(state_files(&server), Vec::<String>::new());
}
