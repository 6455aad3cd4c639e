//! Acceptance: server snapshots (Nova `createImage`) on the rbd pool, on
//! real QEMU (TCG, the disk opened through QEMU's rbd driver) and the dev
//! Ceph cluster, through the real `openstack` CLI; checked with the `rbd`
//! CLI. What must be true:
//!
//! - a live snapshot never pauses the guest and holds a consistent prefix of
//!   its writes, as a server booted from it, the server rebuilt from it and
//!   the downloaded image all show;
//! - the image is `active` at once as a clone of a snapshot of the server's
//!   disk, then flattened in the background, after which the disk's
//!   snapshot is gone;
//! - servers and images deleted in any order leave only the RBD images and
//!   snapshots some record needs (none at the end), refusing only what
//!   Ceph cannot do (an image with clones);
//! - the service dying at each step of the saga leaves the image usable or
//!   gone, the server untouched, and nothing orphaned in Ceph.
//!
//! Needs the dev cluster (`CEPH_CONF`, see `rbd_support`), the test guest and
//! the CLI. The crash tests need a debug build (fault points).

mod common;
mod rbd_support;
mod snapshot_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{fails, ok, Server};
use rbd_support::*;
use serde_json::{json, Value};
use snapshot_support::*;

/// How long a background flatten of the test guest's disk may take.
const FLATTEN: Duration = Duration::from_secs(120);

fn start(env: &[(&str, &str)]) -> RbdServer {
    let mut rbd_server = RbdServer::start_with_env(env);
    rbd_server.purge_pools = true;
    rbd_server.server.add_guest_image_and_flavor();
    rbd_server
}

/// The ids of the images (any status but deleted) and of the servers the
/// service's records hold.
fn records(server: &Server) -> (BTreeSet<String>, BTreeSet<String>) {
    let admin = server.admin();
    let ids = |v: &Value, key: &str| -> BTreeSet<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect()
    };
    let images = admin.get("/image/v2/images?limit=1000").expect_status(200);
    let servers = admin
        .get("/compute/v2.1/servers?all_tenants=1")
        .expect_status(200);
    (ids(&images.body, "images"), ids(&servers.body, "servers"))
}

/// Every RBD image and snapshot in the pools is one a record needs: an
/// image's data (with its `snap`), a server's disk, or the snapshot of a
/// disk that an image not yet flattened is still cloned from (the disk
/// itself may have lost its server). What is released in the background (a
/// disk freed by a flatten) gets 30 s. Returns (images pool, vms pool).
fn assert_rbd_only_needed(server: &Server, when: &str) -> (Vec<String>, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (stray, pools) = rbd_not_needed(server);
        if stray.is_empty() {
            return pools;
        }
        assert!(Instant::now() < deadline, "{when}: {}", stray.join("; "));
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What [`assert_rbd_only_needed`] finds unneeded now, and the pools.
fn rbd_not_needed(server: &Server) -> (Vec<String>, (Vec<String>, Vec<String>)) {
    let (images, servers) = records(server);
    let in_images = rbd_ls("images");
    let in_vms = rbd_ls("vms");
    let mut stray = Vec::new();
    for name in &in_images {
        if !images.contains(name) {
            stray.push(format!("images/{name} belongs to no image"));
        }
        for (snap, _) in rbd_snaps(&format!("images/{name}")) {
            if snap != "snap" {
                stray.push(format!("stray snapshot images/{name}@{snap}"));
            }
        }
    }
    for disk in &in_vms {
        let snaps = rbd_snaps(&format!("vms/{disk}"));
        for (snap, _) in &snaps {
            let children = rbd(&["children", &format!("vms/{disk}@{snap}")]);
            let needed = snap.strip_prefix("image-").is_some_and(|image| {
                images.contains(image) && children.trim() == format!("images/{image}")
            });
            if !needed {
                stray.push(format!(
                    "vms/{disk}@{snap} is kept for no image (children: {children:?})"
                ));
            }
        }
        // A server's disk is named by its id (`<id>-<suffix>` after a rebuild).
        let owned = servers.iter().any(|id| disk.starts_with(id.as_str()));
        if !owned && snaps.is_empty() {
            stray.push(format!(
                "vms/{disk} belongs to no server and no image needs it"
            ));
        }
    }
    (stray, (in_images, in_vms))
}

/// Waits until images/<id> has no parent and no disk keeps a snapshot for
/// it; returns how long that took.
fn wait_flattened(id: &str) -> Duration {
    let started = Instant::now();
    loop {
        let info: Value =
            serde_json::from_str(&rbd(&["info", "--format", "json", &format!("images/{id}")]))
                .unwrap();
        let kept = rbd_ls("vms").into_iter().any(|disk| {
            rbd_snaps(&format!("vms/{disk}"))
                .iter()
                .any(|(snap, _)| snap == &format!("image-{id}"))
        });
        if info.get("parent").is_none() && !kept {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < FLATTEN,
            "images/{id} still depends on a disk after {FLATTEN:?}: {info}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The raw content of `images/<id>@snap`, exported by the `rbd` CLI.
fn rbd_export(server: &Server, id: &str) -> std::path::PathBuf {
    let file = server.dir.path().join(format!("{id}.rbd-export"));
    rbd(&[
        "export",
        "--no-progress",
        &format!("images/{id}@snap"),
        file.to_str().unwrap(),
    ]);
    file
}

#[test]
fn live_snapshot_on_rbd_when_guest_writes_then_no_pause_clone_then_flattened_and_deletes_clean() {
    let rbd_server = start(&[]);
    let server = &rbd_server.server;
    let _log = LogOnFailure::new(server);
    let api = Api::new(server);
    let vm1 = boot(server, &api, "vm1", "guest", 1, 3);
    let pid_before = qemu_pid(server, &vm1);

    // The snapshot, while the guest writes a record every 100 ms.
    let before = api.console(&vm1);
    let s1 = snapshot(server, "vm1", "s1");
    let s1_id = s1["id"].as_str().unwrap().to_string();
    let at_active = api.console(&vm1);
    let after = api.wait_seq_above(&vm1, at_active.last().seq);
    let upper = after.first_above(at_active.last().seq).unwrap().seq;
    let vm1_after = api.show(&vm1);
    let pid_after = qemu_pid(server, &vm1);
    let flattened_in = wait_flattened(&s1_id);
    let with_s1 = assert_rbd_only_needed(server, "after s1 is flattened");

    // A server from s1, and vm1 rolled back to s1.
    ok(server.openstack(&["server", "rebuild", "--image", "s1", "vm1"]));
    let vm2 = boot(server, &api, "vm2", "s1", 2, 1);
    let rebuilt = api.wait_settled(&vm1, &["ACTIVE"], BOOT);
    let vm1_console = api.wait_booted(&vm1, 2, 1);
    let vm2_console = api.console(&vm2);

    // The download, against what Ceph holds.
    let saved = save(server, "s1");
    let exported = rbd_export(server, &s1_id);
    let hashed = api.wait_checksum(&s1_id);

    // Delete orders: the image a running server was booted from (Ceph
    // cannot: 409), a server with a snapshot not yet flattened (at once),
    // then everything.
    let refused = fails(server.openstack(&["image", "delete", "s1"]));
    ok(server.openstack(&["server", "stop", "vm2"]));
    api.wait_settled(&vm2, &["SHUTOFF"], ACTION);
    let s2 = snapshot(server, "vm2", "s2");
    let s2_id = s2["id"].as_str().unwrap().to_string();
    let s2_saved = save(server, "s2");
    let vm2_stopped = api.console(&vm2);
    ok(server.openstack(&["server", "delete", "--wait", "vm2"]));
    let after_vm2 = assert_rbd_only_needed(server, "after deleting vm2");
    wait_flattened(&s2_id);
    ok(server.openstack(&["server", "delete", "--wait", "vm1"]));
    for name in ["s1", "s2", "guest"] {
        ok(server.openstack(&["image", "delete", name]));
    }
    let gone = Instant::now() + Duration::from_secs(60);
    let mut left = assert_rbd_only_needed(server, "after deleting everything");
    while left != (vec![], vec![]) && Instant::now() < gone {
        std::thread::sleep(Duration::from_secs(1));
        left = assert_rbd_only_needed(server, "after deleting everything");
    }

    // The image: active at once, raw, its data in the images pool.
    assert_eq!(s1["status"], "active");
    assert_eq!(s1["disk_format"], "raw");
    assert_eq!(property(&s1, "image_type"), "snapshot");
    assert_eq!(property(&s1, "instance_uuid"), vm1.as_str());
    assert_eq!(
        property(&s1, "direct_url"),
        &json!(format!("rbd://{}/images/{s1_id}/snap", fsid()))
    );
    eprintln!("s1 flattened {flattened_in:?} after it was active");
    assert!(with_s1.0.contains(&s1_id), "{with_s1:?}");
    // No pause: the same QEMU, no task left, SEQ lines kept coming.
    assert_eq!(vm1_after["status"], "ACTIVE");
    assert!(vm1_after["OS-EXT-STS:task_state"].is_null());
    assert_eq!(pid_after, pid_before);
    assert_eq!(
        after.banners.len(),
        1,
        "the guest rebooted:\n{}",
        after.text
    );
    assert_seqs_continuous(&after.seqs, &after);
    // One consistent prefix at the snapshot instant, everywhere.
    let from_s1 = *vm2_console.banners.last().unwrap();
    assert_eq!((from_s1.boot, from_s1.corrupt), (2, 0), "{vm2_console:?}");
    assert!(
        (before.last().seq..=upper).contains(&from_s1.last_seq),
        "last_seq {} outside [{}, {upper}]",
        from_s1.last_seq,
        before.last().seq
    );
    assert_eq!(rebuilt["id"], vm1.as_str());
    assert_eq!(rebuilt["image"]["id"], s1_id.as_str());
    assert_eq!(vm1_console.banners.last(), Some(&from_s1));
    assert_eq!(log_of(&saved), (1, from_s1.last_seq, 0));
    assert!(
        std::fs::read(&saved).unwrap() == std::fs::read(&exported).unwrap(),
        "image save differs from rbd export of images/{s1_id}@snap"
    );
    assert_eq!(hashed["checksum"], md5_hex(&saved).as_str());
    // Refused only where Ceph must: s1 has a clone (vm2's disk).
    assert!(refused.contains("409"), "{refused}");
    // A stopped server: exactly what the guest wrote before it stopped.
    let last_written = *vm2_stopped.stopped.last().unwrap();
    assert_eq!(log_of(&s2_saved), (2, last_written, 0));
    assert!(after_vm2.0.contains(&s2_id), "{after_vm2:?}");
    assert_eq!(left, (vec![], vec![]), "RBD images left at the end");
}

// ---- crash safety ---------------------------------------------------------------

/// The service dies at `point` of a live snapshot on RBD; after a restart
/// the image is `expected` (active or gone), the server runs on with the
/// same QEMU, and Ceph holds only what records need.
fn rbd_snapshot_crash_at(point: &str, finished: bool) {
    let mut rbd_server = start(&[("SNAPSTACK_FAULT_INJECT", point)]);
    let _log = LogOnFailure::new(&rbd_server.server);
    let api = Api::new(&rbd_server.server);
    let vm = boot(&rbd_server.server, &api, "vm1", "guest", 1, 1);
    let pid = qemu_pid(&rbd_server.server, &vm);
    let before = api.console(&vm).last();

    let _ = rbd_server
        .server
        .openstack(&["server", "image", "create", "--name", "crash", "vm1"]);
    let died = rbd_server.server.wait_exit(Duration::from_secs(60));
    let dying_log = rbd_server.server.log();
    rbd_server.server.restart_with_env(&[]);
    let server = &rbd_server.server;
    let api = Api::new(server);
    let shown = api.show(&vm);
    let listed = cli_json(server, &["image", "list", "--name", "crash", "-f", "json"]);
    let after_restart = api.wait_seq_above(&vm, before.seq + 10);
    let needed = assert_rbd_only_needed(server, "after recovery");

    assert!(
        died.is_some_and(|s| !s.success()),
        "the service did not die at {point}"
    );
    assert!(
        dying_log.contains(&format!("fault injection: dying at {point}")),
        "log:\n{dying_log}"
    );
    if finished {
        assert_eq!(listed[0]["Status"], "active", "{listed}");
        let id = listed[0]["ID"].as_str().unwrap().to_string();
        wait_flattened(&id);
        let (boot, last_seq, corrupt) = log_of(&save(server, "crash"));
        assert_eq!((boot, corrupt), (1, 0));
        assert!(
            (before.seq..=after_restart.last().seq).contains(&last_seq),
            "{last_seq} outside [{}, {}]",
            before.seq,
            after_restart.last().seq
        );
    } else {
        assert_eq!(listed, json!([]), "the image survived the undo");
        assert_eq!(needed.0.len(), 1, "only the guest image: {needed:?}");
        assert_eq!(rbd_snaps(&format!("vms/{vm}")), vec![]);
    }
    assert_eq!(shown["status"], "ACTIVE", "{shown}");
    assert!(shown["OS-EXT-STS:task_state"].is_null(), "{shown}");
    assert!(alive(pid), "QEMU {pid} died with the service");
    assert_eq!(qemu_pid(server, &vm), pid);
    assert_eq!(after_restart.banners.len(), 1, "{}", after_restart.text);
    assert_seqs_continuous(&after_restart.seqs, &after_restart);
}

#[test]
fn rbd_snapshot_crash_when_dying_after_the_clone_then_finished_and_flattened() {
    rbd_snapshot_crash_at("server-image:cut", true);
}

#[test]
fn rbd_snapshot_when_paused_or_suspended_then_state_kept_and_data_of_that_instant() {
    let rbd_server = start(&[]);
    let server = &rbd_server.server;
    let _log = LogOnFailure::new(server);
    let api = Api::new(server);
    let vm = boot(server, &api, "vm1", "guest", 1, 1);

    ok(server.openstack(&["server", "pause", "vm1"]));
    api.wait_settled(&vm, &["PAUSED"], ACTION);
    let paused = api.console(&vm).last().seq;
    snapshot(server, "vm1", "p1");
    let still_paused = api.show(&vm);
    ok(server.openstack(&["server", "unpause", "vm1"]));
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    ok(server.openstack(&["server", "suspend", "vm1"]));
    api.wait_settled(&vm, &["SUSPENDED"], ACTION);
    let suspended = api.console(&vm).last().seq;
    snapshot(server, "vm1", "u1");
    let still_suspended = api.show(&vm);
    ok(server.openstack(&["server", "resume", "vm1"]));
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let resumed = api.wait_seq_above(&vm, suspended);
    let p1 = log_of(&save(server, "p1"));
    let u1 = log_of(&save(server, "u1"));

    for (shown, status) in [(&still_paused, "PAUSED"), (&still_suspended, "SUSPENDED")] {
        assert_eq!(shown["status"], status, "{shown}");
        assert!(shown["OS-EXT-STS:task_state"].is_null(), "{shown}");
    }
    // Up to the last printed record, at most the one not printed yet.
    assert!(
        p1.0 == 1 && p1.2 == 0 && (paused..=paused + 10).contains(&p1.1),
        "{p1:?} paused at {paused}"
    );
    assert!(
        u1.0 == 1 && u1.2 == 0 && (suspended..=suspended + 10).contains(&u1.1),
        "{u1:?} suspended at {suspended}"
    );
    assert_eq!(
        resumed.banners.len(),
        1,
        "resume rebooted:\n{}",
        resumed.text
    );
    assert_seqs_continuous(&resumed.seqs, &resumed);
    assert_rbd_only_needed(server, "after both snapshots");
}
