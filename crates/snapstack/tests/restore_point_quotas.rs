//! Snapstack's limits on restore points against the real `snapstack serve`
//! and QEMU: points per server (`--max-restore-points-per-server`) and the
//! bytes of memory states per project (`--restore-point-memory-total`),
//! refused with 403 "Quota exceeded for …" as Nova answers, through the API
//! and the `snapstack restore-point` CLI.

mod common;
mod restore_points_support;
mod snapshot_support;

use std::time::Duration;

use common::Server;
use restore_points_support::*;
use serde_json::json;
use snapshot_support::Api;

/// Boots a server from the guest image (flavor `tiny`: 256 MiB); its id once ACTIVE.
fn running_server(server: &Server, api: &Api) -> String {
    let image = server.add_guest_image_and_flavor();
    let created = api.admin.post(
        "/compute/v2.1/servers",
        json!({"server": {"name": "vm1", "imageRef": image, "flavorRef": "tiny", "networks": "none"}}),
    );
    let vm = created.expect_status(202).body["server"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.wait_settled(&vm, &["ACTIVE"], Duration::from_secs(120));
    vm
}

/// The message of Nova's 403 body (`{"forbidden": {"message": …}}`).
fn forbidden(r: &common::Reply) -> String {
    r.body["forbidden"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn try_point(api: &Api, vm: &str, name: &str, memory: bool) -> common::Reply {
    api.admin.post(
        &points_path(vm),
        json!({"restore_point": {"name": name, "memory": memory}}),
    )
}

#[test]
fn points_when_server_has_its_limit_then_403_by_api_and_cli_until_one_is_deleted() {
    let server = Server::start_with(&["--max-restore-points-per-server", "1"]);
    let api = Api::new(&server);
    let vm = running_server(&server, &api);
    let a = take_point(&api, &vm, "A", false)["id"]
        .as_str()
        .unwrap()
        .to_string();

    let refused = try_point(&api, &vm, "B", false);
    let (cli_ok, _, cli_err) = restore_point_cli(&server, &["create", &vm, "--name", "B"]);
    delete_point(&api, &vm, &a);
    wait_for_no_task(&api, &vm);
    let after_delete = try_point(&api, &vm, "C", false);

    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        forbidden(&refused)
            .contains("Quota exceeded for restore_points: Requested 1, but already used 1 of 1"),
        "{}",
        refused.body
    );
    assert!(!cli_ok);
    assert!(
        cli_err.contains("Quota exceeded for restore_points"),
        "{cli_err}"
    );
    assert_eq!(after_delete.status, 202, "{}", after_delete.body);
}

#[test]
fn memory_points_when_project_memory_limit_reached_then_403_and_disk_only_points_still_fit() {
    // 256 MiB: one memory state of the 256 MiB guest fits, a second does not.
    let server = Server::start_with(&["--restore-point-memory-total", "256"]);
    let api = Api::new(&server);
    let vm = running_server(&server, &api);

    let first = try_point(&api, &vm, "M1", true);
    let first_id = first.body["restore_point"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_point(&api, &vm, &first_id, "available");
    let second = try_point(&api, &vm, "M2", true);
    let disk_only = try_point(&api, &vm, "D", false);

    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(second.status, 403, "{}", second.body);
    assert!(
        forbidden(&second).contains("Quota exceeded for restore_point_memory_mb"),
        "{}",
        second.body
    );
    assert_eq!(disk_only.status, 202, "{}", disk_only.body);
}

#[test]
fn memory_point_when_larger_than_project_limit_then_403_before_anything_is_made() {
    let server = Server::start_with(&["--restore-point-memory-total", "100"]);
    let api = Api::new(&server);
    let vm = running_server(&server, &api);

    let refused = try_point(&api, &vm, "big", true);
    let points = api.admin.get(&points_path(&vm));

    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        forbidden(&refused)
            .contains("Requested 256, but already used 0 of 100 restore_point_memory_mb"),
        "{}",
        refused.body
    );
    assert_eq!(
        points.expect_status(200).body["restore_points"],
        json!([]),
        "nothing recorded"
    );
}

fn wait_for_no_task(api: &Api, vm: &str) {
    api.wait_settled(vm, &["ACTIVE"], Duration::from_secs(60));
}
