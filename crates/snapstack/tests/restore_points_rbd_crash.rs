//! Crash safety of restore points on the rbd pool: the service dies (abort,
//! as SIGKILL) at every step of the create, revert and delete sagas (fault
//! points, debug builds only); after a restart without the fault the tree is
//! consistent (no point left `creating`, no task on the server, a memory
//! image for every memory point), the vms pool holds exactly the RBD images
//! and snapshots that servers and points need (`rbd ls`, `rbd snap ls`), and
//! the memory point taken first still reverts exactly. One guest for all of
//! it. And QEMU killed in the middle of a memory point: the point goes, the
//! server is SHUTOFF with a fault, starts again, and the older point
//! reverts; nothing is left behind.
//!
//! Needs the dev cluster (see `rbd_support`), the test guest, the
//! `openstack` CLI, python3 and a debug build.
// The crashed steps stay lists: one representative each here, every step on fakes.
#![allow(clippy::single_element_loop)]

mod common;
mod rbd_support;
mod restore_points_rbd_support;
mod restore_points_support;
mod snapshot_support;

use std::time::Duration;

use common::Server;
use rbd_support::rbd_ls;
use restore_points_rbd_support::*;
use restore_points_support::*;
use serde_json::{json, Value};
use snapshot_support::*;

/// Sends a request that the service may not answer (it dies meanwhile).
fn fire(server: &Server, method: &str, path: &str, body: Option<Value>) {
    let admin = server.admin();
    let request = ureq::request(method, &format!("{}{path}", admin.url))
        .set("X-Auth-Token", &admin.token)
        .timeout(Duration::from_secs(60));
    let _ = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
}

/// Restarts with the fault armed, runs `act`, waits for the death, restarts
/// clean.
fn crash_at(server: &mut Server, point: &str, act: impl FnOnce(&Server)) {
    server.restart_with_env(&[("SNAPSTACK_FAULT_INJECT", point)]);
    act(server);
    let died = server.wait_exit(Duration::from_secs(90));
    let log = server.log();
    server.restart_with_env(&[]);
    assert!(died.is_some(), "the service did not die at {point}");
    assert!(
        log.contains(&format!("fault injection: dying at {point}")),
        "{point}: {log}"
    );
}

/// The memory images the points' records name, sorted.
fn memory_images(server: &Server, api: &Api, vm: &str) -> Vec<String> {
    let mut images: Vec<String> = tree(api, vm)["restore_points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["memory"] == true)
        .map(|p| {
            point_state(server, p["id"].as_str().unwrap())
                .unwrap_or_else(|| panic!("memory point without a memory image: {p}"))
        })
        .collect();
    images.sort();
    images
}

/// What must hold after every recovery.
fn assert_consistent(server: &Server, api: &Api, vm: &str, when: &str) {
    let shown = api.wait_settled(vm, &["ACTIVE", "SHUTOFF"], ACTION);
    let listed = tree(api, vm);
    for p in listed["restore_points"].as_array().unwrap() {
        assert_eq!(p["status"], "available", "{when}: {p}");
    }
    assert!(shown["OS-EXT-STS:task_state"].is_null(), "{when}: {shown}");
    assert_vms_only_needed(server, when);
    let in_pool: Vec<String> = rbd_ls(VMS)
        .into_iter()
        .filter(|name| name.ends_with("-mem"))
        .map(|name| format!("{VMS}/{name}"))
        .collect();
    assert_eq!(in_pool, memory_images(server, api, vm), "{when}");
}

#[test]
fn rbd_service_killed_at_every_restore_point_step_then_tree_consistent_and_points_revert() {
    let mut rbd_server = RbdPoints::start(&[]);
    let server = &mut rbd_server.server;
    let _log = LogOnFailure::new(server);
    let api = Api::new(server);
    let vm = boot(server, &api, "vm1", "guest", 1, 2);
    let run1 = api.console(&vm).last();
    let m = take_point(&api, &vm, "M", true);
    let m_id = m["id"].as_str().unwrap().to_string();
    let m_seq = rbd_log(server, &point_snapshot(server, &m_id)).1;
    let path = points_path(&vm);

    let mut outcomes = Vec::new();
    for (step, memory) in [
        // One representative step per kind (every step of every kind is
        // crashed on fakes in cloud's saga_crash_fakes).
        ("restore-point-create:cut", true),
    ] {
        crash_at(server, step, |s| {
            let body = json!({"restore_point": {"name": step, "memory": memory}});
            fire(s, "POST", &path, Some(body));
        });
        let api = Api::new(server);
        assert_consistent(server, &api, &vm, step);
        outcomes.push(tree(&api, &vm)["restore_points"].as_array().unwrap().len());
    }
    let mut victims_left = Vec::new();
    for step in ["restore-point-delete:remove"] {
        let api = Api::new(server);
        let victim = take_point(&api, &vm, "victim", true);
        let victim_id = victim["id"].as_str().unwrap().to_string();
        let victim_snap = point_snapshot(server, &victim_id);
        crash_at(server, step, |s| {
            fire(s, "DELETE", &format!("{path}/{victim_id}"), None);
        });
        let api = Api::new(server);
        assert_consistent(server, &api, &vm, step);
        let gone = api.admin.get(&format!("{path}/{victim_id}")).status;
        assert_eq!(gone, 404, "{step}: the deleted point survived");
        if vms_contents().contains(&victim_snap) {
            victims_left.push(victim_snap);
        }
    }
    for step in ["restore-point-revert:switch"] {
        crash_at(server, step, |s| {
            fire(
                s,
                "POST",
                &format!("{path}/{m_id}/action"),
                Some(json!({"revert": {}})),
            );
        });
        let api = Api::new(server);
        assert_consistent(server, &api, &vm, step);
        if api.show(&vm)["status"] == "SHUTOFF" {
            api.admin
                .post(
                    &format!("/compute/v2.1/servers/{vm}/action"),
                    json!({"os-start": null}),
                )
                .expect_status(202);
            api.wait_settled(&vm, &["ACTIVE"], ACTION);
        }
    }

    // M still reverts exactly.
    let api = Api::new(server);
    let before = api.console(&vm).seqs.len();
    revert(&api, &vm, &m_id);
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let first = first_after_revert(&api, &vm, before);
    assert_consistent(server, &api, &vm, "after the last revert");

    eprintln!("points after each create crash: {outcomes:?}");
    // The cut (snapshot and memory image whole): finished.
    assert_eq!(outcomes, [2]);
    assert_eq!(victims_left, Vec::<String>::new());
    assert!(
        first.seq > m_seq && first.seq <= m_seq + 10,
        "M ends at {m_seq}: {first:?}"
    );
    assert_eq!(first.seq - first.ram, run1.seq - run1.ram);
}

#[test]
fn rbd_qemu_killed_during_a_memory_point_then_point_gone_server_shutoff_with_fault_and_starts() {
    let rbd_server = RbdPoints::start(&[]);
    let server = &rbd_server.server;
    let _log = LogOnFailure::new(server);
    let api = Api::new(server);
    let vm = boot(server, &api, "vm1", "guest", 1, 1);
    let a = take_point(&api, &vm, "A", false);
    let a_id = a["id"].as_str().unwrap().to_string();
    let pid = qemu_pid(server, &vm);

    create_point(&api, &vm, "B", true);
    std::thread::sleep(Duration::from_millis(150));
    kill9(pid);
    let crashed = api.wait_settled(&vm, &["SHUTOFF", "ACTIVE"], ACTION);
    let listed = tree(&api, &vm);
    api.admin
        .post(
            &format!("/compute/v2.1/servers/{vm}/action"),
            json!({"os-start": null}),
        )
        .expect_status(202);
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let rebooted = api.wait_booted(&vm, 2, 1);
    revert(&api, &vm, &a_id);
    api.wait_settled(&vm, &["SHUTOFF"], ACTION);
    let on_a = rbd_log(server, &server_disk(server, &vm)).1;
    assert_vms_only_needed(server, "after QEMU died and the revert");
    let memory_left: Vec<String> = rbd_ls(VMS)
        .into_iter()
        .filter(|n| n.contains("-mem"))
        .collect();

    let names: Vec<&str> = listed["restore_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    eprintln!(
        "QEMU killed during a memory point: server {}, points {names:?}",
        crashed["status"]
    );
    assert_eq!(names, ["A"], "{listed}");
    assert_eq!(memory_left, Vec::<String>::new());
    assert_eq!(crashed["status"], "SHUTOFF");
    assert!(crashed["fault"]["message"].is_string(), "{crashed}");
    assert_eq!(rebooted.banners.last().unwrap().corrupt, 0);
    assert_eq!(on_a, rbd_log(server, &point_snapshot(server, &a_id)).1);
}
