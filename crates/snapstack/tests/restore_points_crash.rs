//! Crash safety of restore points: the service dies (abort, as SIGKILL) at
//! every step of the create, revert and delete sagas (fault points, debug
//! builds only); after a restart without the fault, the tree is consistent
//! (no point left `creating`, no task on the server, a memory state for
//! every memory point and nothing else), the pool holds exactly what
//! servers, images and points need, `qemu-img check` is clean, and the
//! memory point taken first still reverts exactly. One guest for all of it.
//! And QEMU killed in the middle of a memory point: the point goes, the
//! server is SHUTOFF with a fault, starts again, and older points revert.
// The crashed steps stay lists: one representative each here, every step on fakes.
#![allow(clippy::single_element_loop)]

mod common;
mod restore_points_support;
mod snapshot_support;

use std::time::Duration;

use common::Server;
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
/// clean; returns the log of the dying run.
fn crash_at(server: &mut Server, point: &str, act: impl FnOnce(&Server)) -> String {
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
    log
}

/// What must hold after every recovery.
fn assert_consistent(server: &Server, api: &Api, vm: &str, when: &str) {
    let shown = api.wait_settled(vm, &["ACTIVE", "SHUTOFF"], ACTION);
    let listed = tree(api, vm);
    let points = listed["restore_points"].as_array().unwrap();
    for p in points {
        assert_eq!(p["status"], "available", "{when}: {p}");
    }
    let mut with_memory: Vec<String> = points
        .iter()
        .filter(|p| p["memory"] == true && p["method"] == "external")
        .map(|p| format!("{}.state", p["id"].as_str().unwrap()))
        .collect();
    with_memory.sort();
    assert_eq!(state_files(server), with_memory, "{when}");
    assert!(shown["OS-EXT-STS:task_state"].is_null(), "{when}: {shown}");
    assert_only_needed_files_with_points(server, when);
    assert_pool_files_check_clean(server);
}

#[test]
fn service_killed_at_every_restore_point_step_then_tree_consistent_and_points_revert() {
    let mut server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let vm = boot(&server, &api, "vm1", "guest", 1, 2);
    let run1 = api.console(&vm).last();
    let m = take_point(&api, &vm, "M", true);
    let m_id = m["id"].as_str().unwrap().to_string();
    let m_seq = log_of(&point_layer(&server, &m_id)).1;
    let path = points_path(&vm);

    let mut outcomes = Vec::new();
    for (step, memory, internal) in [
        // Representative steps (every step of every kind is crashed on
        // fakes in cloud's saga_crash_fakes): a memory cut QEMU made (found
        // by the probe, finished) and an internal save (undone).
        ("restore-point-create:cut", true, false),
        ("restore-point-create:cut", true, true),
    ] {
        crash_at(&mut server, step, |s| {
            let method = if internal { "internal" } else { "external" };
            let body = json!({"restore_point": {"name": step, "memory": memory, "method": method}});
            fire(s, "POST", &path, Some(body));
        });
        let api = Api::new(&server);
        assert_consistent(&server, &api, &vm, step);
        outcomes.push((
            step,
            tree(&api, &vm)["restore_points"].as_array().unwrap().len(),
        ));
    }
    for step in ["restore-point-delete:remove"] {
        let api = Api::new(&server);
        let victim = take_point(&api, &vm, "victim", true);
        let victim_id = victim["id"].as_str().unwrap().to_string();
        let victim_layer = point_layer(&server, &victim_id);
        crash_at(&mut server, step, |s| {
            fire(s, "DELETE", &format!("{path}/{victim_id}"), None);
        });
        let api = Api::new(&server);
        assert_consistent(&server, &api, &vm, step);
        let gone = api.admin.get(&format!("{path}/{victim_id}")).status;
        assert_eq!(gone, 404, "{step}: the deleted point survived");
        // Only the running top stood on its layer: merged into it, then gone.
        assert!(
            !victim_layer.exists(),
            "{step}: {} kept",
            victim_layer.display()
        );
    }
    for step in ["restore-point-revert:switch"] {
        crash_at(&mut server, step, |s| {
            fire(
                s,
                "POST",
                &format!("{path}/{m_id}/action"),
                Some(json!({"revert": {}})),
            );
        });
        let api = Api::new(&server);
        assert_consistent(&server, &api, &vm, step);
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
    let api = Api::new(&server);
    let before = api.console(&vm).seqs.len();
    revert(&api, &vm, &m_id);
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let first = first_after_revert(&api, &vm, before);
    assert_consistent(&server, &api, &vm, "after the last revert");

    eprintln!("points after each create crash: {outcomes:?}");
    // The external cut: finished; the internal save: undone.
    let counts: Vec<usize> = outcomes.iter().map(|o| o.1).collect();
    assert_eq!(counts, [2, 2]);
    assert!(
        first.seq > m_seq && first.seq <= m_seq + 10,
        "M ends at {m_seq}: {first:?}"
    );
    assert_eq!(first.seq - first.ram, run1.seq - run1.ram);
}

#[test]
fn qemu_killed_during_a_memory_point_then_point_gone_server_shutoff_with_fault_and_starts() {
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let vm = boot(&server, &api, "vm1", "guest", 1, 1);
    let a = take_point(&api, &vm, "A", false);
    let pid = qemu_pid(&server, &vm);

    create_point(&api, &vm, "B", true);
    std::thread::sleep(Duration::from_millis(150));
    kill9(pid);
    let crashed = api.wait_settled(&vm, &["SHUTOFF", "ACTIVE"], ACTION);
    let listed = tree(&api, &vm);
    assert_only_needed_files_with_points(&server, "after QEMU died");
    assert_pool_files_check_clean(&server);
    let states = state_files(&server);
    api.admin
        .post(
            &format!("/compute/v2.1/servers/{vm}/action"),
            json!({"os-start": null}),
        )
        .expect_status(202);
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let rebooted = api.wait_booted(&vm, 2, 1);
    revert(&api, &vm, a["id"].as_str().unwrap());
    api.wait_settled(&vm, &["SHUTOFF"], ACTION);
    let on_a = log_of(&root_disk(&server, &vm)).1;

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
    // Killed 150 ms into a save that takes about a second: B never completes.
    assert_eq!(names, ["A"], "{listed}");
    assert_eq!(states, Vec::<String>::new());
    assert_eq!(crashed["status"], "SHUTOFF");
    assert!(crashed["fault"]["message"].is_string(), "{crashed}");
    assert_eq!(rebooted.banners.last().unwrap().corrupt, 0);
    assert_eq!(
        on_a,
        log_of(&point_layer(&server, a["id"].as_str().unwrap())).1
    );
}
