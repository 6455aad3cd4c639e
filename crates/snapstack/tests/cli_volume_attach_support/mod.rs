//! Shared by the attach/detach and boot-from-volume acceptance tests (file
//! and RBD pools): the CLI steps, waits on volume and server states, and the
//! test guest's disk lines (`HOTPLUG`/`DISK`/`RESET`/`UNPLUG`).
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli_volumes_support::VolumeApi;
use crate::common::{fails, ok, Server};
use crate::snapshot_support::{cli_json, Api, Console, ACTION, BOOT};

static ONE_GUEST_TEST_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Guests under TCG on two cores: the tests of one binary boot them one
/// test at a time.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_GUEST_TEST_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// `volume create … -f json NAME`, waited until available; its id.
pub fn volume_create(server: &Server, api: &VolumeApi, args: &[&str], name: &str) -> String {
    let mut all = vec!["volume", "create"];
    all.extend(args);
    all.extend(["-f", "json", name]);
    let id = id_of(&cli_json(server, &all));
    api.wait_volume(&id, "available");
    id
}

/// `server create --wait` with extra arguments; the server as shown.
pub fn server_create(server: &Server, args: &[&str], name: &str) -> Value {
    let mut all = vec![
        "server",
        "create",
        "--flavor",
        "tiny",
        "--no-network",
        "--wait",
        "-f",
        "json",
    ];
    all.extend(args);
    all.push(name);
    cli_json(server, &all)
}

/// The disk lines of a console (`HOTPLUG vdb`, `DISK vdb …`, `RESET vdb …`,
/// `UNPLUG vdb`), in order.
pub fn disk_lines(console: &Console) -> Vec<String> {
    console
        .text
        .lines()
        .map(str::trim)
        .filter_map(|l| {
            ["HOTPLUG ", "DISK ", "RESET ", "UNPLUG "]
                .iter()
                .find_map(|k| l.find(k).map(|at| l[at..].to_string()))
        })
        .collect()
}

/// Waits until the console has a disk line starting with `prefix` past
/// the first `after` disk lines; returns the console.
pub fn wait_disk_line(api: &Api, id: &str, prefix: &str, after: usize) -> Console {
    api.wait_console(id, prefix, ACTION, |c| {
        disk_lines(c)
            .iter()
            .skip(after)
            .any(|l| l.starts_with(prefix))
    })
}

/// Polls the volume until its status is `status` and it has `attachments`
/// attachments; returns it.
pub fn wait_volume_attached(api: &VolumeApi, id: &str, status: &str, attachments: usize) -> Value {
    let deadline = Instant::now() + ACTION;
    loop {
        let v = api.get(&format!("/volumes/{id}")).expect_status(200).body["volume"].clone();
        if v["status"] == status && v["attachments"].as_array().map_or(0, Vec::len) == attachments {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "volume {id} never became {status}: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `server volume list VM -f json`.
pub fn server_volumes(server: &Server, vm: &str) -> Vec<Value> {
    cli_json(server, &["server", "volume", "list", "-f", "json", vm])
        .as_array()
        .unwrap()
        .clone()
}

/// The value of the first key of `row` among `keys` (the CLI's column
/// names vary with its version).
pub fn column<'a>(row: &'a Value, keys: &[&str]) -> &'a Value {
    keys.iter()
        .map(|k| &row[*k])
        .find(|v| !v.is_null())
        .unwrap_or(&Value::Null)
}

/// Waits for the server to settle in `status`, then for `lines` SEQ lines
/// after boot number `boot`.
pub fn wait_running(api: &Api, id: &str, boot: u64, lines: usize) -> Console {
    api.wait_settled(id, &["ACTIVE"], BOOT);
    api.wait_booted(id, boot, lines)
}

/// Asserts the CLI run fails with an HTTP `code` in its message.
pub fn fails_with(out: std::process::Output, code: u16) -> String {
    let err = fails(out);
    assert!(
        err.contains(&format!("HTTP {code}"))
            || err.contains(&format!("({code})"))
            || err.contains(&code.to_string()),
        "expected HTTP {code}: {err}"
    );
    err
}

/// `server delete --wait VM`.
pub fn server_delete(server: &Server, vm: &str) {
    ok(server.openstack(&["server", "delete", "--wait", vm]));
}

/// `GET /servers/{id}` at compute microversion 2.79 (the volumes'
/// `delete_on_termination` shows from 2.3).
pub fn show_server(server: &Server, id: &str) -> Value {
    let r = crate::common::reply(
        server
            .admin()
            .request("GET", &format!("/compute/v2.1/servers/{id}"))
            .set("OpenStack-API-Version", "compute 2.79")
            .call(),
    );
    r.expect_status(200).body["server"].clone()
}
