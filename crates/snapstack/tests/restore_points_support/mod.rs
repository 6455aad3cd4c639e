//! Shared by the restore-point acceptance tests: the restore-point API, the
//! points' layers as the database holds them, and the pool check extended to
//! the files restore points need.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::{run, Server};
use crate::snapshot_support::{needed_files, pool_files, Api, Console, Seq, ACTION, BOOT, POLL};
use serde_json::{json, Value};

pub fn points_path(vm: &str) -> String {
    format!("/compute/v2.1/servers/{vm}/restore-points")
}

/// POSTs a point; returns the reply body's point (status `creating`).
pub fn create_point(api: &Api, vm: &str, name: &str, memory: bool) -> Value {
    let body = json!({"restore_point": {"name": name, "memory": memory}});
    api.admin
        .post(&points_path(vm), body)
        .expect_status(202)
        .body["restore_point"]
        .clone()
}

pub fn show_point(api: &Api, vm: &str, id: &str) -> Value {
    api.admin
        .get(&format!("{}/{id}", points_path(vm)))
        .expect_status(200)
        .body["restore_point"]
        .clone()
}

pub fn tree(api: &Api, vm: &str) -> Value {
    api.admin.get(&points_path(vm)).expect_status(200).body
}

/// Creates a point and waits until it is available and the server idle.
pub fn take_point(api: &Api, vm: &str, name: &str, memory: bool) -> Value {
    let id = create_point(api, vm, name, memory)["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_point(api, vm, &id, "available")
}

/// Creates an internal point (qcow2 `snapshot-save`) and waits for it.
pub fn take_internal_point(api: &Api, vm: &str, name: &str) -> Value {
    let body = json!({"restore_point": {"name": name, "method": "internal"}});
    let created = api.admin.post(&points_path(vm), body).expect_status(202);
    let id = created.body["restore_point"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_point(api, vm, &id, "available")
}

pub fn wait_point(api: &Api, vm: &str, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + ACTION;
    loop {
        let point = show_point(api, vm, id);
        let server = api.show(vm);
        if point["status"] == status && server["OS-EXT-STS:task_state"].is_null() {
            return point;
        }
        assert!(
            Instant::now() < deadline,
            "point {id} never became {status}: {point}"
        );
        std::thread::sleep(POLL);
    }
}

pub fn revert(api: &Api, vm: &str, id: &str) {
    api.admin
        .post(
            &format!("{}/{id}/action", points_path(vm)),
            json!({"revert": {}}),
        )
        .expect_status(202);
}

pub fn delete_point(api: &Api, vm: &str, id: &str) {
    api.admin
        .delete(&format!("{}/{id}", points_path(vm)))
        .expect_status(204);
}

fn query(server: &Server, sql: &str) -> String {
    let script = format!(
        "import sqlite3, sys\n\
         db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
         print('\\n'.join(str(r[0]) for r in db.execute(\"{sql}\")))\n"
    );
    let db = server.data_dir().join("snapstack.db");
    run("python3", &["-c", &script, db.to_str().unwrap()])
}

fn location_path(location: &str) -> PathBuf {
    PathBuf::from(location.strip_prefix("file://").unwrap_or(location))
}

/// The frozen layer of a point's root disk, from the database.
pub fn point_layer(server: &Server, id: &str) -> PathBuf {
    let disks = query(
        server,
        &format!("SELECT disks FROM restore_points WHERE id = '{id}'"),
    );
    let disks: Value = serde_json::from_str(disks.trim()).unwrap();
    location_path(disks[0]["layer"].as_str().unwrap())
}

/// The server's current top, from the database.
pub fn root_disk(server: &Server, vm: &str) -> PathBuf {
    location_path(
        query(
            server,
            &format!("SELECT root_disk FROM servers WHERE id = '{vm}'"),
        )
        .trim(),
    )
}

/// The files the points need: their layers with their backing chains.
pub fn point_files(server: &Server) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    for disks in query(server, "SELECT disks FROM restore_points").lines() {
        let disks: Value = serde_json::from_str(disks).unwrap();
        for disk in disks.as_array().unwrap() {
            let layer = location_path(disk["layer"].as_str().unwrap());
            let chain: Value = serde_json::from_str(&run(
                "qemu-img",
                &[
                    "info",
                    "-U",
                    "--backing-chain",
                    "--output=json",
                    layer.to_str().unwrap(),
                ],
            ))
            .unwrap();
            for file in chain.as_array().unwrap() {
                let file = PathBuf::from(file["filename"].as_str().unwrap());
                files.insert(file.canonicalize().unwrap_or(file));
            }
        }
    }
    files
}

/// The pool holds exactly what servers, images and points need.
pub fn assert_only_needed_files_with_points(server: &Server, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pool = pool_files(server);
        let mut needed = needed_files(server);
        needed.extend(point_files(server));
        if pool == needed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: orphans {:?}, missing {:?}",
            pool.difference(&needed).collect::<Vec<_>>(),
            needed.difference(&pool).collect::<Vec<_>>()
        );
        std::thread::sleep(POLL);
    }
}

/// The memory states under `<data>/state/restore-points`.
pub fn state_files(server: &Server) -> Vec<String> {
    crate::common::file_names(&server.data_dir().join("state").join("restore-points"))
}

/// Runs `snapstack restore-point ARGS` as the admin; returns (success, stdout, stderr).
pub fn restore_point_cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_snapstack"))
        .arg("restore-point")
        .args(args)
        .env("OS_AUTH_URL", format!("{}/identity/v3", server.url))
        .env("OS_USERNAME", "admin")
        .env("OS_PASSWORD", crate::common::ADMIN_PASSWORD)
        .env("OS_PROJECT_NAME", "admin")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The first SEQ line the reverted guest printed: after the `before` first
/// lines, the first that does not continue the run that was going (the old
/// QEMU keeps printing until the revert destroys it): its sequence goes back,
/// or its RAM counter belongs to another run. Waits until there is one.
pub fn first_after_revert(api: &Api, vm: &str, before: usize) -> Seq {
    let found = |c: &Console| {
        (before.max(1)..c.seqs.len())
            .map(|i| (c.seqs[i - 1], c.seqs[i]))
            .find(|(prev, next)| next.seq <= prev.seq || next.seq - next.ram != prev.seq - prev.ram)
            .map(|(_, next)| next)
    };
    let console = api.wait_console(vm, "the reverted guest's first SEQ line", BOOT, |c| {
        found(c).is_some()
    });
    found(&console).unwrap()
}
