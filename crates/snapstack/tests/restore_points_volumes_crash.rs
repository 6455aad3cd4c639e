//! Crash safety of restore points of a server with an attached volume (file
//! pool): the service dies (abort, as SIGKILL; fault points, debug builds
//! only) after the cut of a memory point, after a point's switch, after a
//! revert's new tops are made and after a revert's switch. After a restart
//! without the fault: no point left `creating`, no task on the server, a
//! memory state for every memory point and nothing else, the pool holds
//! exactly what servers, volumes, images and points need (the points'
//! volume layers with their chains), `qemu-img check` is clean; and a
//! disk-only point taken afterwards reverts both disks exactly.
// The crashed steps stay lists: one representative each here, every step on fakes.
#![allow(clippy::single_element_loop)]

mod cli_volume_attach_support;
mod cli_volumes_support;
mod common;
mod restore_points_support;
mod snapshot_support;

use std::path::PathBuf;
use std::time::Duration;

use cli_volume_attach_support::*;
use cli_volumes_support::VolumeApi;
use common::{ok, run, Server};
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
        .filter(|p| p["memory"] == true)
        .map(|p| format!("{}.state", p["id"].as_str().unwrap()))
        .collect();
    with_memory.sort();
    assert_eq!(state_files(server), with_memory, "{when}");
    assert!(shown["OS-EXT-STS:task_state"].is_null(), "{when}: {shown}");
    assert_only_needed_files_with_points(server, when);
    assert_pool_files_check_clean(server);
}

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

/// Every disk layer of a point (root first), from the database.
fn layers(server: &Server, id: &str) -> Vec<PathBuf> {
    let disks: Value = serde_json::from_str(&query(
        server,
        &format!("SELECT disks FROM restore_points WHERE id = '{id}'"),
    ))
    .unwrap();
    disks
        .as_array()
        .unwrap()
        .iter()
        .map(|d| path_of(d["layer"].as_str().unwrap()))
        .collect()
}

#[test]
fn service_killed_at_volume_point_steps_then_consistent_and_both_disks_revert() {
    let _one = one_at_a_time();
    let mut server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let (api, volumes) = (Api::new(&server), VolumeApi::new(server.admin()));
    let vm = boot(&server, &api, "vm1", "guest", 1, 2);
    let v1 = volume_create(&server, &volumes, &["--size", "1"], "v1");
    ok(server.openstack(&["server", "add", "volume", "vm1", "v1"]));
    wait_volume_attached(&volumes, &v1, "in-use", 1);
    wait_disk_line(&api, &vm, "RESET vdb", 0);
    let m = take_point(&api, &vm, "M", true);
    let m_id = m["id"].as_str().unwrap().to_string();
    let path = points_path(&vm);

    let mut counts = Vec::new();
    // Representative steps (every step of every kind is crashed on fakes
    // in cloud's saga_crash_fakes).
    for (step, memory) in [("restore-point-create:cut", true)] {
        crash_at(&mut server, step, |s| {
            let body = json!({"restore_point": {"name": step, "memory": memory}});
            fire(s, "POST", &path, Some(body));
        });
        let api = Api::new(&server);
        assert_consistent(&server, &api, &vm, step);
        counts.push(tree(&api, &vm)["restore_points"].as_array().unwrap().len());
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
            ok(server.openstack(&["server", "start", "vm1"]));
            api.wait_settled(&vm, &["ACTIVE"], ACTION);
        }
    }

    // A disk-only point after all that: both disks revert exactly.
    let api = Api::new(&server);
    api.wait_seq_above(&vm, api.console(&vm).last().seq + 3);
    let d = take_point(&api, &vm, "D", false);
    let d_layers = layers(&server, d["id"].as_str().unwrap());
    revert(&api, &vm, d["id"].as_str().unwrap());
    api.wait_settled(&vm, &["SHUTOFF"], ACTION);
    let root_after = log_of(&root_disk(&server, &vm)).1;
    let volume_top = path_of(&query(
        &server,
        &format!("SELECT location FROM volumes WHERE id = '{v1}'"),
    ));
    let volume_after = log_of(&volume_top).1;
    assert_consistent(&server, &api, &vm, "after reverting to D");

    // cut (memory, complete) and switched: both finished.
    assert_eq!(counts, [2]);
    assert_eq!(d_layers.len(), 2, "{d_layers:?}");
    assert_eq!(root_after, log_of(&d_layers[0]).1);
    assert_eq!(volume_after, log_of(&d_layers[1]).1);
    assert!(
        volume_after + 1 >= root_after,
        "{volume_after} {root_after}"
    );
}
