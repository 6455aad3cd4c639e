//! Acceptance: quiesced server snapshots on the file pool, real QEMU, real
//! CLI. The test guest runs a QEMU guest agent (guest/qga.c) whose freeze
//! stops its writer and prints `FROZEN last_seq=m`, whose thaw prints
//! `THAWED`; `guest-noagent.qcow2` is the same guest without the agent.
//!
//! - `hw_qemu_guest_agent=yes`: the snapshot holds exactly the records
//!   written up to the freeze, and the guest is thawed afterwards;
//! - with `os_require_quiesce=yes` and no agent answering: 409, no image,
//!   the server untouched;
//! - `os_require_quiesce=yes` without `hw_qemu_guest_agent`: 409 at once.

mod common;
mod snapshot_support;

use common::{fails, guest_dir, ok, Server};
use snapshot_support::*;

/// Uploads `file` of the guest directory as image `name` with `properties`.
fn add_image(server: &Server, name: &str, file: &str, properties: &[&str]) {
    let path = guest_dir().join(file);
    let mut args = vec![
        "image",
        "create",
        "--disk-format",
        "qcow2",
        "--container-format",
        "bare",
        "--file",
        path.to_str().unwrap(),
    ];
    for p in properties {
        args.extend(["--property", p]);
    }
    args.push(name);
    ok(server.openstack(&args));
}

/// `last_seq=` of the lines of `console` starting with `prefix`.
fn marks(console: &Console, prefix: &str) -> Vec<u64> {
    console
        .text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| field(l, "last_seq"))
        .collect()
}

#[test]
fn snapshot_when_image_has_guest_agent_then_frozen_instant_captured_and_guest_thawed() {
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    add_image(
        &server,
        "agent",
        "guest.qcow2",
        &["hw_qemu_guest_agent=yes"],
    );
    let api = Api::new(&server);
    let vm = boot(&server, &api, "vm1", "agent", 1, 3);

    let s1 = snapshot(&server, "vm1", "q1");
    let console = api.console(&vm);
    let after = api.wait_seq_above(&vm, console.last().seq);
    let saved = save(&server, "q1");
    let shown = api.show(&vm);

    let frozen = marks(&after, "FROZEN");
    let thawed = marks(&after, "THAWED");
    assert_eq!(s1["status"], "active");
    assert_eq!(frozen.len(), 1, "one freeze:\n{}", after.text);
    assert_eq!(
        thawed, frozen,
        "thawed at the freeze point:\n{}",
        after.text
    );
    // Exactly the records written up to the freeze.
    assert_eq!(log_of(&saved), (1, frozen[0], 0));
    assert_eq!(shown["status"], "ACTIVE");
    assert!(shown["OS-EXT-STS:task_state"].is_null());
    assert_eq!(after.banners.len(), 1);
    assert_pool_files_check_clean(&server);
}

#[test]
fn snapshot_when_quiesce_required_and_no_agent_answers_then_409_and_nothing_made() {
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    add_image(
        &server,
        "mute",
        "guest-noagent.qcow2",
        &["hw_qemu_guest_agent=yes", "os_require_quiesce=yes"],
    );
    add_image(
        &server,
        "no-agent",
        "guest.qcow2",
        &["os_require_quiesce=yes"],
    );
    let api = Api::new(&server);
    let vm = boot(&server, &api, "vm1", "mute", 1, 1);
    boot(&server, &api, "vm2", "no-agent", 1, 1);
    let before = api.console(&vm).last();

    let refused = fails(server.openstack(&["server", "image", "create", "--name", "r1", "vm1"]));
    let refused_at_once =
        fails(server.openstack(&["server", "image", "create", "--name", "r2", "vm2"]));
    let listed = cli_json(&server, &["image", "list", "-f", "json"]);
    let shown = api.show(&vm);
    let after = api.wait_seq_above(&vm, before.seq + 10);

    assert!(
        refused.contains("409") && refused.contains("quiesc"),
        "{refused}"
    );
    assert!(
        refused_at_once.contains("409") && refused_at_once.contains("hw_qemu_guest_agent"),
        "{refused_at_once}"
    );
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["Name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"r1") && !names.contains(&"r2"),
        "{names:?}"
    );
    assert_eq!(shown["status"], "ACTIVE");
    assert!(shown["OS-EXT-STS:task_state"].is_null(), "{shown}");
    assert!(marks(&after, "FROZEN").is_empty());
    assert_seqs_continuous(&after.seqs, &after);
    assert_only_needed_files(&server, "after the refusals");
}
