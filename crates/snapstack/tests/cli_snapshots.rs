//! Acceptance: server snapshots (Nova `createImage`) on the file pool, on
//! real QEMU (TCG) through the real `openstack` CLI. What must be true:
//!
//! - a live snapshot never pauses the guest and holds a consistent prefix of
//!   its writes: a server booted from it, the server rebuilt from it and the
//!   downloaded image all show the same last record;
//! - snapshots of paused, suspended and stopped servers leave them so, and
//!   they continue afterwards;
//! - servers and images deleted in any order leave only the files some
//!   record needs (none at the end);
//! - a crash of the service at every step of the saga, or QEMU's death
//!   during one, leaves a working server, an image that is either usable or
//!   gone, and a clean pool.
//!
//! Evidence is what a user can see: statuses, the test guest's console
//! (`SNAPSTACK-GUEST boot=… last_seq=…`, `SEQ n ram=k`, `STOPPED last_seq=…`),
//! downloaded images (`image save`, `qemu-img`, `scripts/guest-check.py`),
//! QEMU processes and the pool's files. "The files some record needs" is
//! computed apart from the service: the root disks of the servers and the
//! data of the active images in its database, with their qcow2 backing
//! chains as `qemu-img info --backing-chain` reads them.
//!
//! Run with `-- --test-threads=2` (2 cores, TCG). Needs the test guest
//! (`scripts/build-guest.sh`, `$SNAPSTACK_GUEST_DIR`), the CLI
//! (`scripts/install-deps.sh`) and python3. The crash tests need a debug
//! build of `snapstack`: release builds have no fault points.

mod common;
mod snapshot_support;

use std::process::Command;
use std::time::Instant;

use common::{fails, ok, Server};
use snapshot_support::*;

#[test]
fn live_snapshot_when_guest_writes_then_no_pause_and_boot_rebuild_and_download_see_one_prefix() {
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    let guest = server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let vm1 = boot(&server, &api, "vm1", "guest", 1, 3);
    let pid_before = qemu_pid(&server, &vm1);

    // The snapshot, while the guest writes a record every 100 ms.
    let before = api.console(&vm1);
    let started = Instant::now();
    let s1 = snapshot(&server, "vm1", "s1");
    let took = started.elapsed();
    let at_active = api.console(&vm1);
    let after = api.wait_seq_above(&vm1, at_active.last().seq);
    let upper = after.first_above(at_active.last().seq).unwrap().seq;
    let vm1_after_snapshot = api.show(&vm1);
    let pid_after = qemu_pid(&server, &vm1);

    // A new server from s1, and vm1 rolled back to s1, booting together.
    ok(server.openstack(&["server", "rebuild", "--image", "s1", "vm1"]));
    let vm2 = boot(&server, &api, "vm2", "s1", 2, 1);
    let rebuilt = api.wait_settled(&vm1, &["ACTIVE"], BOOT);
    let vm1_console = api.wait_booted(&vm1, 2, 1);
    let vm2_console = api.console(&vm2);

    // Its download.
    let saved = save(&server, "s1");
    let s1_id = s1["id"].as_str().unwrap();
    let hashed = api.wait_checksum(s1_id);
    let layer = property(&s1, "direct_url").as_str().unwrap().to_string();
    let layer = layer.strip_prefix("file://").unwrap_or(&layer).to_string();
    let compared = Command::new("qemu-img")
        .args(["compare", "-U", "-f", "qcow2", "-F", "qcow2"])
        .arg(&saved)
        .arg(&layer)
        .output()
        .unwrap();

    // The image.
    assert_eq!(s1["status"], "active");
    assert_eq!(property(&s1, "image_type"), "snapshot");
    assert_eq!(property(&s1, "instance_uuid"), vm1.as_str());
    assert_eq!(property(&s1, "base_image_ref"), guest.as_str());
    // No pause: the same QEMU, no task left, and SEQ lines kept coming during
    // the snapshot, each 10 records and 10 ticks after the previous one.
    assert_eq!(vm1_after_snapshot["status"], "ACTIVE");
    assert!(vm1_after_snapshot["OS-EXT-STS:task_state"].is_null());
    assert_eq!(pid_after, pid_before);
    assert!(
        at_active.seqs.len() > before.seqs.len(),
        "no SEQ line printed during the {took:?} snapshot:\n{}",
        at_active.text
    );
    assert_eq!(
        after.banners.len(),
        1,
        "the guest rebooted:\n{}",
        after.text
    );
    assert_seqs_continuous(&after.seqs, &after);
    // A consistent prefix at the snapshot instant, the same everywhere.
    let from_s1 = *vm2_console.banners.last().unwrap();
    assert_eq!((from_s1.boot, from_s1.corrupt), (2, 0), "{vm2_console:?}");
    assert!(
        (before.last().seq..=upper).contains(&from_s1.last_seq),
        "last_seq {} outside [{}, {upper}]",
        from_s1.last_seq,
        before.last().seq
    );
    assert_eq!(log_of(&saved), (1, from_s1.last_seq, 0));
    // Rebuild: same server, a new boot on s1's data.
    assert_eq!(rebuilt["id"], vm1.as_str());
    assert_eq!(rebuilt["image"]["id"], s1_id);
    assert_eq!(
        vm1_console.banners,
        [
            Banner {
                boot: 1,
                last_seq: 0,
                corrupt: 0
            },
            from_s1
        ]
    );
    // The download: the frozen layer's content, hashed as Glance would.
    assert!(
        compared.status.success(),
        "qemu-img compare: {}{}",
        String::from_utf8_lossy(&compared.stdout),
        String::from_utf8_lossy(&compared.stderr)
    );
    assert_self_contained_qcow2(&saved);
    assert_eq!(hashed["checksum"], md5_hex(&saved).as_str());
    assert_eq!(hashed["size"], std::fs::metadata(&saved).unwrap().len());
    assert_pool_files_check_clean(&server);
    assert_only_needed_files(&server, "after the rebuild");
}

// ---- paused, suspended, stopped ---------------------------------------------

#[test]
fn snapshot_when_paused_suspended_or_shutoff_then_state_kept_and_server_continues() {
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let vm = boot(&server, &api, "vm1", "guest", 1, 1);

    // PAUSED: the guest is frozen; the snapshot holds what it had written.
    ok(server.openstack(&["server", "pause", "vm1"]));
    api.wait_settled(&vm, &["PAUSED"], ACTION);
    let paused = api.console(&vm);
    let p1 = snapshot(&server, "vm1", "p1");
    let still_paused = api.show(&vm);
    let console_while_paused = api.console(&vm);
    ok(server.openstack(&["server", "unpause", "vm1"]));
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let unpaused = api.wait_seq_above(&vm, paused.last().seq);

    // SUSPENDED: memory in a file, no QEMU; resume continues the same run.
    ok(server.openstack(&["server", "suspend", "vm1"]));
    api.wait_settled(&vm, &["SUSPENDED"], ACTION);
    let suspended = api.console(&vm);
    let u1 = snapshot(&server, "vm1", "u1");
    let still_suspended = api.show(&vm);
    ok(server.openstack(&["server", "resume", "vm1"]));
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let resumed = api.wait_seq_above(&vm, suspended.last().seq);

    // SHUTOFF: a clean stop; start boots again on the same disk.
    ok(server.openstack(&["server", "stop", "vm1"]));
    api.wait_settled(&vm, &["SHUTOFF"], ACTION);
    let stopped = api.console(&vm);
    let h1 = snapshot(&server, "vm1", "h1");
    let still_shutoff = api.show(&vm);
    ok(server.openstack(&["server", "start", "vm1"]));
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let started = api.wait_booted(&vm, 2, 1);

    let logs: Vec<(u64, u64, u64)> = ["p1", "u1", "h1"]
        .iter()
        .map(|name| {
            let saved = save(&server, name);
            assert_self_contained_qcow2(&saved);
            log_of(&saved)
        })
        .collect();

    for img in [&p1, &u1, &h1] {
        assert_eq!(img["status"], "active", "{img}");
        assert_eq!(property(img, "instance_uuid"), vm.as_str());
    }
    for (shown, status) in [
        (&still_paused, "PAUSED"),
        (&still_suspended, "SUSPENDED"),
        (&still_shutoff, "SHUTOFF"),
    ] {
        assert_eq!(shown["status"], status, "{shown}");
        assert!(shown["OS-EXT-STS:task_state"].is_null(), "{shown}");
    }
    // Paused: nothing printed meanwhile; the image holds the records written
    // up to the pause (at most the one whose SEQ line was not printed yet).
    let p = paused.last().seq;
    assert_eq!(console_while_paused.seqs, paused.seqs);
    assert_eq!(logs[0].0, 1);
    assert!(
        (p..=p + 10).contains(&logs[0].1),
        "p1 {:?}, paused at SEQ {p}",
        logs[0]
    );
    assert_eq!(logs[0].2, 0);
    // Suspended: same, and resume continued the same run (no banner, no gap).
    let s = suspended.last().seq;
    assert_eq!(logs[1].0, 1);
    assert!(
        (s..=s + 10).contains(&logs[1].1),
        "u1 {:?}, suspended at SEQ {s}",
        logs[1]
    );
    assert_eq!(logs[1].2, 0);
    assert_eq!(
        resumed.banners.len(),
        1,
        "resume rebooted:\n{}",
        resumed.text
    );
    assert_eq!(
        unpaused.banners.len(),
        1,
        "unpause rebooted:\n{}",
        unpaused.text
    );
    assert_seqs_continuous(&resumed.seqs, &resumed);
    // Shutoff: exactly what the guest had written when it stopped.
    let last_written = *stopped
        .stopped
        .last()
        .unwrap_or_else(|| panic!("no STOPPED line after a clean stop:\n{}", stopped.text));
    assert_eq!(logs[2], (1, last_written, 0));
    assert_eq!(
        started.banners.last(),
        Some(&Banner {
            boot: 2,
            last_seq: last_written,
            corrupt: 0
        })
    );
    assert_pool_files_check_clean(&server);
    assert_only_needed_files(&server, "after the three snapshots");
}

// ---- delete orders ------------------------------------------------------------

#[test]
fn images_and_servers_when_deleted_in_any_order_then_pool_keeps_only_needed_files() {
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    boot(&server, &api, "vm1", "guest", 1, 1);
    snapshot(&server, "vm1", "sa");
    snapshot(&server, "vm1", "sb");
    let vm2 = boot(&server, &api, "vm2", "sb", 2, 1);
    let with_all = assert_only_needed_files(&server, "with two servers and three images");

    // Image, then its server.
    ok(server.openstack(&["image", "delete", "sa"]));
    let after_sa = assert_only_needed_files(&server, "after deleting sa");
    ok(server.openstack(&["server", "delete", "--wait", "vm1"]));
    let after_vm1 = assert_only_needed_files(&server, "after deleting vm1");

    // The image a running server was booted from.
    let before_delete = api.console(&vm2).last();
    ok(server.openstack(&["image", "delete", "sb"]));
    let after_sb = assert_only_needed_files(&server, "after deleting sb");
    let vm2_writes = api.wait_seq_above(&vm2, before_delete.seq + 10);
    let vm2_shown = api.show(&vm2);

    // Server, then its image.
    snapshot(&server, "vm2", "sc");
    ok(server.openstack(&["server", "delete", "--wait", "vm2"]));
    let after_vm2 = assert_only_needed_files(&server, "after deleting vm2");
    let sc_saved = save(&server, "sc");
    ok(server.openstack(&["image", "delete", "sc"]));
    assert_only_needed_files(&server, "after deleting sc");
    let disks_left = names_in_pool(&server, "disks");
    ok(server.openstack(&["image", "delete", "guest"]));
    assert_only_needed_files(&server, "after deleting everything");

    // guest, vm1's top + 2 frozen layers, vm2's top.
    assert_eq!(with_all.len(), 5, "{with_all:?}");
    // sa's layer backs sb's, which two running servers read: it stays
    // (merging it would need a stream in both at once).
    assert_eq!(after_sa, with_all);
    // vm1's top goes; sa's layer is merged into sb's (only vm2 reads it
    // now, block-stream in vm2) and released: guest, sb's layer, vm2's top.
    assert_eq!(after_vm1.len(), 3, "{after_vm1:?}");
    // Deleting sb streams its layer into vm2's top while vm2 runs on.
    assert_eq!(after_sb.len(), 2, "{after_sb:?}");
    assert_eq!(vm2_shown["status"], "ACTIVE");
    assert_eq!(vm2_writes.banners.len(), 1);
    // vm2's new top goes; sc keeps its layer (on the guest image).
    assert_eq!(after_vm2.len(), 2, "{after_vm2:?}");
    let (_, sc_last, sc_corrupt) = log_of(&sc_saved);
    assert!(
        sc_last > before_delete.seq && sc_corrupt == 0,
        "{sc_last} {sc_corrupt}"
    );
    assert_eq!(disks_left, Vec::<String>::new());
    assert_eq!(names_in_pool(&server, "images"), Vec::<String>::new());
    assert_eq!(names_in_pool(&server, "disks"), Vec::<String>::new());
    assert!(fails(server.openstack(&["image", "show", "sb"])).contains("sb"));
}

// ---- chain depth --------------------------------------------------------------

#[test]
fn snapshots_when_chain_exceeds_max_depth_then_streamed_into_top_and_images_intact() {
    let server = Server::start_with(&["--max-chain-depth", "3"]);
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let vm = boot(&server, &api, "vm1", "guest", 1, 1);
    let pid = qemu_pid(&server, &vm);

    // top + guest, then top + sa + guest: within the depth.
    snapshot(&server, "vm1", "sa");
    let open_after_sa = open_pool_files(pid);
    // top + sb + sa + guest: one too many, streamed into the top.
    snapshot(&server, "vm1", "sb");
    // The image is active before the stream; the server's task ends after it.
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let open_after_sb = open_pool_files(pid);
    let written = api.console(&vm).last();
    let after = api.wait_seq_above(&vm, written.seq + 10);
    let sa = log_of(&save(&server, "sa"));
    let sb = log_of(&save(&server, "sb"));
    let needed = assert_only_needed_files(&server, "after the stream");

    assert_eq!(open_after_sa.len(), 3, "{open_after_sa:?}");
    assert_eq!(
        open_after_sb.len(),
        2,
        "QEMU still reads layers: {open_after_sb:?}\n{}",
        common::run(
            "qemu-img",
            &["info", "-U", "--backing-chain", &open_after_sb[0]]
        )
    );
    assert!(server
        .log()
        .contains("chain too deep: file rebased onto the bottom of its chain"));
    // The guest ran on, unaware; both images hold consistent prefixes.
    assert_eq!(after.banners.len(), 1, "{}", after.text);
    assert_seqs_continuous(&after.seqs, &after);
    assert!(
        sa.0 == 1 && sa.2 == 0 && sb.0 == 1 && sb.2 == 0,
        "{sa:?} {sb:?}"
    );
    assert!(sa.1 <= sb.1, "{sa:?} {sb:?}");
    // The layers stay for the images: guest, sa's, sb's layers and the top.
    assert_eq!(needed.len(), 4, "{needed:?}");
    assert_pool_files_check_clean(&server);
}
