//! Acceptance: restore points (issue #7) on the file pool, on real QEMU
//! (TCG), with the test guest writing a record every 100 ms. What must be
//! true:
//!
//! - A (disk-only) never stops the guest; B and C (with memory) stop it for
//!   milliseconds; a second create while one runs is refused (409);
//! - revert to B: the guest goes on from B's RAM counter (no reboot) over
//!   exactly B's disk; revert to A: a powered-off server whose next boot
//!   finds exactly A's data; D taken after that is a branch under A;
//! - delete B (an inner point: C stands on its layer): reverting to C and
//!   to D still gives their exact data; `qemu-img check` is clean on every
//!   file; the pool holds exactly what servers, images and points need;
//! - deleting points, then the server with its last point, leaves no file
//!   behind (disks, layers, memory states);
//! - another project sees 404, bad requests get 400; the CLI drives the
//!   tree; an inner point of a stopped server is merged away; a point whose
//!   files vanished is shown broken after a restart, and refused (409).
//!
//! Evidence: the guest's console (`SEQ n ram=k`, banners), its disks' logs
//! read by `scripts/guest-check.py` on the points' layers and the server's
//! disk (paths from the service's database), the pool's files.
//!
//! Needs the test guest (`scripts/build-guest.sh`), the `openstack` CLI
//! (`scripts/install-deps.sh`) and python3.

mod common;
mod restore_points_support;
mod snapshot_support;

use common::{run, Server};
use restore_points_support::*;
use serde_json::json;
use snapshot_support::*;

#[test]
fn points_a_b_c_d_when_guest_writes_then_reverts_give_exact_ram_and_disk_and_nothing_leaks() {
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let vm = boot(&server, &api, "vm1", "guest", 1, 2);
    let run1 = api.console(&vm).last();

    // A: disk-only. B: with memory (a second create meanwhile: 409). C: internal.
    let a = take_point(&api, &vm, "A", false);
    api.wait_seq_above(&vm, api.console(&vm).last().seq);
    let b_created = create_point(&api, &vm, "B", true);
    let concurrent = api.admin.post(
        &points_path(&vm),
        json!({"restore_point": {"name": "B2", "memory": true}}),
    );
    let b = wait_point(&api, &vm, b_created["id"].as_str().unwrap(), "available");
    api.wait_seq_above(&vm, api.console(&vm).last().seq);
    let before_c_seq = api.console(&vm).last().seq;
    let c = take_internal_point(&api, &vm, "C");
    let after_c_seq = api.console(&vm).last().seq;
    let (a_id, b_id, c_id) = (
        a["id"].as_str().unwrap().to_string(),
        b["id"].as_str().unwrap().to_string(),
        c["id"].as_str().unwrap().to_string(),
    );
    let (a_layer, b_layer, c_layer) = (
        point_layer(&server, &a_id),
        point_layer(&server, &b_id),
        point_layer(&server, &c_id),
    );
    let (a_seq, b_seq) = (log_of(&a_layer).1, log_of(&b_layer).1);
    api.wait_seq_above(&vm, api.console(&vm).last().seq + 10);

    // Revert to B: the guest goes on from B's RAM counter over B's disk.
    let before_b = api.console(&vm).seqs.len();
    revert(&api, &vm, &b_id);
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let first_after_b = first_after_revert(&api, &vm, before_b);

    // Revert to A: powered off on A's data; its next boot finds A's log.
    revert(&api, &vm, &a_id);
    api.wait_settled(&vm, &["SHUTOFF"], ACTION);
    let disk_after_a = log_of(&root_disk(&server, &vm)).1;
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
    let d_seq = log_of(&point_layer(&server, &d_id)).1;
    let tree_before_delete = tree(&api, &vm);

    // Delete B (inner: C stands on it), then revert to C and to D.
    delete_point(&api, &vm, &b_id);
    let c_after_delete = show_point(&api, &vm, &c_id);
    let before_c = api.console(&vm).seqs.len();
    let c_layer_before_revert = log_of(&c_layer).1;
    revert(&api, &vm, &c_id);
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let first_after_c = first_after_revert(&api, &vm, before_c);
    let c_layer_after_revert = log_of(&c_layer).1;
    assert_only_needed_files_with_points(&server, "after reverting to C");
    revert(&api, &vm, &d_id);
    api.wait_settled(&vm, &["SHUTOFF"], ACTION);
    let disk_after_d = log_of(&root_disk(&server, &vm)).1;
    assert_pool_files_check_clean(&server);
    assert_only_needed_files_with_points(&server, "after reverting to D");

    // Everything goes: A and C by hand, D with the server.
    for id in [&a_id, &c_id] {
        delete_point(&api, &vm, id);
    }
    let empty_tree = tree(&api, &vm);
    api.admin
        .delete(&format!("/compute/v2.1/servers/{vm}"))
        .expect_status(204);
    let deadline = std::time::Instant::now() + ACTION;
    while !names_in_pool(&server, "disks").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(POLL);
    }

    // The points and their pauses.
    assert_eq!(a["guest_pause_ms"], 0.0, "A stopped the guest: {a}");
    let b_pause = b["guest_pause_ms"].as_f64().unwrap();
    let c_pause = c["guest_pause_ms"].as_f64().unwrap();
    eprintln!("guest pause: B {b_pause} ms, C {c_pause} ms");
    assert!(b_pause > 0.0 && b_pause < 1000.0, "{b}");
    assert!(c_pause > 0.0 && c_pause < 1000.0, "{c}");
    assert_eq!(concurrent.status, 409, "{:?}", concurrent.body);
    assert!(a_seq < b_seq, "{a_seq} {b_seq}");
    assert_eq!(c["method"], "internal");
    // Revert to B: B's next record, same run (RAM counter and sequence in step).
    assert!(
        first_after_b.seq > b_seq && first_after_b.seq <= b_seq + 10,
        "B's disk ends at {b_seq}; the guest went on at {first_after_b:?}"
    );
    assert_eq!(first_after_b.seq - first_after_b.ram, run1.seq - run1.ram);
    // Revert to A: A's data, then a cold boot on it.
    assert_eq!(disk_after_a, a_seq);
    assert_eq!(boot2.banners.last().unwrap().last_seq, a_seq);
    // The tree.
    assert_eq!(d["parent_id"], a_id.as_str());
    assert_eq!(tree_before_delete["current"], d_id.as_str());
    assert_eq!(b["parent_id"], a_id.as_str());
    assert_eq!(c["parent_id"], b_id.as_str());
    assert_eq!(c_after_delete["parent_id"], a_id.as_str());
    // C and D after B's delete: their exact data.
    assert!(
        first_after_c.seq > before_c_seq && first_after_c.seq <= after_c_seq + 10,
        "C was taken between {before_c_seq} and {after_c_seq}; the guest went on at {first_after_c:?}"
    );
    assert_eq!(first_after_c.seq - first_after_c.ram, run1.seq - run1.ram);
    assert_eq!(
        c_layer_after_revert, c_layer_before_revert,
        "C's file was written"
    );
    assert_eq!(disk_after_d, d_seq);
    // Nothing left.
    let left: Vec<&str> = empty_tree["restore_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["D"]);
    assert_eq!(names_in_pool(&server, "disks"), Vec::<String>::new());
    assert_eq!(state_files(&server), Vec::<String>::new());
}

#[test]
fn requests_when_other_project_or_bad_input_then_404_and_400_and_cli_drives_the_tree() {
    let mut server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let created = cli_json(
        &server,
        &[
            "server",
            "create",
            "--image",
            "guest",
            "--flavor",
            "tiny",
            "--no-network",
            "-f",
            "json",
            "vm1",
        ],
    );
    let vm = created["id"].as_str().unwrap().to_string();
    let other = server.user_with_role("eve", "member");

    let other_list = other.get(&points_path(&vm)).status;
    let other_create = other
        .post(&points_path(&vm), json!({"restore_point": {"name": "x"}}))
        .status;
    let no_name = api
        .admin
        .post(&points_path(&vm), json!({"restore_point": {}}))
        .status;
    let bad_method = api
        .admin
        .post(
            &points_path(&vm),
            json!({"restore_point": {"name": "x", "method": "copy"}}),
        )
        .status;
    let bad_memory = api
        .admin
        .post(
            &points_path(&vm),
            json!({"restore_point": {"name": "x", "memory": "yes"}}),
        )
        .status;
    let unknown_point = api
        .admin
        .get(&format!("{}/{}", points_path(&vm), uuid_like()))
        .status;
    let bad_action = api
        .admin
        .post(
            &format!("{}/{}/action", points_path(&vm), uuid_like()),
            json!({"rewind": {}}),
        )
        .status;

    // The CLI, on the same server (ACTIVE; the guest need not have booted).
    api.wait_settled(&vm, &["ACTIVE"], BOOT);
    let created_a = restore_point_cli(&server, &["create", "vm1", "--name", "A", "--quiesce"]);
    let created_b = restore_point_cli(&server, &["create", "vm1", "--name", "B"]);
    let listed = restore_point_cli(&server, &["list", "vm1"]);
    let shown = restore_point_cli(&server, &["show", "vm1", "B"]);
    let reverted = restore_point_cli(&server, &["revert", "vm1", "A"]);
    let deleted = restore_point_cli(&server, &["delete", "vm1", "B"]);
    let listed_after = restore_point_cli(&server, &["list", "vm1"]);
    let missing = restore_point_cli(&server, &["show", "vm1", "Z"]);
    // An inner point of a stopped server: its layer is merged into the one
    // layer standing on it (qemu-img rebase), which reads the same after.
    for name in ["P1", "P2", "P3"] {
        assert!(restore_point_cli(&server, &["create", "vm1", "--name", name]).0);
    }
    let id_of = |name: &str| {
        tree(&api, &vm)["restore_points"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (p2_layer, p3_layer) = (
        point_layer(&server, &id_of("P2")),
        point_layer(&server, &id_of("P3")),
    );
    let p3_before = server.dir.path().join("p3-before.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-U",
            "-O",
            "raw",
            p3_layer.to_str().unwrap(),
            p3_before.to_str().unwrap(),
        ],
    );
    let merged = restore_point_cli(&server, &["delete", "vm1", "P2"]);
    let p3_same = std::process::Command::new("qemu-img")
        .args(["compare", "-U", "-f", "raw", "-F", "qcow2"])
        .arg(&p3_before)
        .arg(&p3_layer)
        .status()
        .unwrap();
    assert_only_needed_files_with_points(&server, "after merging P2's layer");
    // P3's files vanish behind the service's back; a restart keeps the tree.
    std::fs::remove_file(&p3_layer).unwrap();
    server.restart();
    let api = Api::new(&server);
    let p3_shown = show_point(&api, &vm, &id_of("P3"));
    let revert_broken = api
        .admin
        .post(
            &format!("{}/{}/action", points_path(&vm), id_of("P3")),
            json!({"revert": {}}),
        )
        .status;
    let names_after_restart: Vec<String> = tree(&api, &vm)["restore_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();

    assert!(created_a.0 && created_b.0, "{created_a:?} {created_b:?}");
    let lines: Vec<&str> = listed.1.lines().collect();
    assert_eq!(lines.len(), 2, "{}", listed.1);
    assert!(
        lines[0].starts_with("A  disk-only  available"),
        "{}",
        listed.1
    );
    assert!(
        lines[1].starts_with("└── B  disk-only  available"),
        "{}",
        listed.1
    );
    assert!(lines[1].ends_with("(current)"), "{}", listed.1);
    let shown: serde_json::Value = serde_json::from_str(&shown.1).unwrap();
    assert_eq!(shown["name"], "B");
    assert!(reverted.0 && reverted.1.contains("SHUTOFF"), "{reverted:?}");
    assert!(deleted.0, "{deleted:?}");
    assert!(
        listed_after.1.starts_with("A  ") && listed_after.1.trim_end().ends_with("(current)"),
        "{}",
        listed_after.1
    );
    assert_eq!(listed_after.1.lines().count(), 1);
    assert!(
        !missing.0 && missing.2.contains("no restore point named Z"),
        "{missing:?}"
    );
    assert!(merged.0, "{merged:?}");
    assert!(!p2_layer.exists(), "P2's layer was not merged away");
    assert!(
        p3_same.success(),
        "P3's layer reads differently after the merge"
    );
    assert_eq!(p3_shown["status"], "broken", "{p3_shown}");
    assert_eq!(revert_broken, 409);
    assert_eq!(names_after_restart, ["A", "P1", "P3"]);
    assert_eq!(other_list, 404);
    assert_eq!(other_create, 404);
    assert_eq!(no_name, 400);
    assert_eq!(bad_method, 400);
    assert_eq!(bad_memory, 400);
    assert_eq!(unknown_point, 404);
    assert_eq!(bad_action, 400);
}

fn uuid_like() -> &'static str {
    "0b3c1f0e-2a4d-4c55-9e1b-6f0d2c3b4a59"
}
