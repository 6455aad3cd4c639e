//! Acceptance: crash safety of server snapshots (Nova `createImage`) on the
//! file pool, on real QEMU through the real `openstack` CLI: the service dies
//! at every step of the saga (fault points, debug builds only), or QEMU dies
//! during a snapshot; after a restart the server works, the image is usable
//! or gone, and the pool holds only what records need. See `cli_snapshots.rs`
//! for the evidence used.

mod common;
mod snapshot_support;

use std::path::Path;
use std::time::Duration;

use common::{ok, Server};
use serde_json::json;
use snapshot_support::*;

// ---- crash safety -----------------------------------------------------------------

/// The service dies (abort) at fault point `point` of a live snapshot of a
/// writing guest; after a restart without the fault, recovery finishes the
/// image, the server runs on untouched and the pool is clean. (One
/// representative step: every step of every saga kind is crashed on fakes
/// in cloud's `saga_crash_fakes`.)
fn snapshot_crash_at(point: &str) {
    let mut server = Server::start_with_env(&[("SNAPSTACK_FAULT_INJECT", point)]);
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let vm = boot(&server, &api, "vm1", "guest", 1, 1);
    let pid = qemu_pid(&server, &vm);
    let before = api.console(&vm).last();

    // The request may or may not be answered: the service dies meanwhile.
    let _ = server.openstack(&["server", "image", "create", "--name", "crash", "vm1"]);
    let died = server.wait_exit(Duration::from_secs(60));
    let dying_log = server.log();
    server.restart_with_env(&[]);
    let api = Api::new(&server);
    let shown = api.show(&vm);
    let listed = cli_json(&server, &["image", "list", "--name", "crash", "-f", "json"]);
    let after_restart = api.wait_seq_above(&vm, before.seq + 10);
    let needed = assert_only_needed_files(&server, "after recovery");
    let open = open_pool_files(pid);

    let died = died.unwrap_or_else(|| panic!("the service did not die at {point}"));
    assert!(!died.success(), "exit status {died}");
    assert!(
        dying_log.contains(&format!("fault injection: dying at {point}")),
        "log:\n{dying_log}"
    );
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["Status"], "active", "{listed}");
    let saved = save(&server, "crash");
    assert_self_contained_qcow2(&saved);
    let (boot, last_seq, corrupt) = log_of(&saved);
    assert_eq!((boot, corrupt), (1, 0));
    assert!(
        (before.seq..=after_restart.last().seq).contains(&last_seq),
        "{last_seq} outside [{}, {}]",
        before.seq,
        after_restart.last().seq
    );
    // The server: untouched, same QEMU, still writing, on files that exist
    // and that its record needs.
    assert_eq!(shown["status"], "ACTIVE", "{shown}");
    assert!(shown["OS-EXT-STS:task_state"].is_null(), "{shown}");
    assert!(alive(pid), "QEMU {pid} died with the service");
    assert_eq!(qemu_pid(&server, &vm), pid);
    assert_eq!(after_restart.banners.len(), 1, "{}", after_restart.text);
    assert_seqs_continuous(&after_restart.seqs, &after_restart);
    assert!(!open.is_empty());
    for file in &open {
        assert!(
            needed.contains(Path::new(file)),
            "QEMU has {file} open, which no record needs (needed: {needed:?})"
        );
    }
    assert_pool_files_check_clean(&server);
}

#[test]
fn snapshot_crash_when_dying_at_overlay_then_image_finished_and_server_runs_on() {
    snapshot_crash_at("server-image:cut");
}

#[test]
fn snapshot_when_qemu_killed_meanwhile_then_shutoff_with_fault_valid_chain_and_start_works() {
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let vm = boot(&server, &api, "vm1", "guest", 1, 1);
    let pid = qemu_pid(&server, &vm);

    // The HTTP API, not the CLI: the kill must follow the request closely.
    let requested = api.admin.post(
        &format!("/compute/v2.1/servers/{vm}/action"),
        json!({"createImage": {"name": "k1"}}),
    );
    kill9(pid);
    let image_id = requested
        .header("location")
        .map(|l| l.rsplit('/').next().unwrap().to_string());
    let crashed = api.wait_settled(&vm, &["SHUTOFF", "ERROR"], ACTION);
    let image = image_id
        .as_deref()
        .and_then(|id| api.wait_image_settled(id));
    eprintln!(
        "QEMU killed during a snapshot: server {}, fault {}, image {}",
        crashed["status"],
        crashed["fault"]["message"],
        image
            .as_ref()
            .map_or("gone".into(), |i| i["status"].to_string())
    );
    assert_pool_files_check_clean(&server);
    assert_only_needed_files(&server, "after QEMU's death");
    ok(server.openstack(&["server", "start", "vm1"]));
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let rebooted = api.wait_booted(&vm, 2, 1);

    assert_eq!(requested.status, 202, "{:?}", requested.body);
    assert!(
        crashed["fault"]["message"].is_string(),
        "no fault: {crashed}"
    );
    if let Some(img) = image.filter(|i| i["status"] == "active") {
        let saved = save(&server, img["id"].as_str().unwrap());
        assert_self_contained_qcow2(&saved);
        assert_eq!(log_of(&saved).2, 0);
    }
    assert_eq!(
        rebooted.banners.last().map(|b| (b.boot, b.corrupt)),
        Some((2, 0))
    );
}
