//! Deleting a server while it is still building is accepted, as Nova does
//! (204), and the server goes away with nothing left behind: no QEMU, no
//! disk, no state file.

mod common;

use std::time::{Duration, Instant};

use common::{file_names, pids_with_cmdline, Client, Server};
use serde_json::json;

const GONE: Duration = Duration::from_secs(120);

fn boot(admin: &Client, image: &str, name: &str) -> String {
    let created = admin
        .post(
            "/compute/v2.1/servers",
            json!({"server": {"name": name, "imageRef": image, "flavorRef": "tiny",
                              "networks": "none"}}),
        )
        .expect_status(202);
    created.body["server"]["id"].as_str().unwrap().to_string()
}

/// Polls until the server answers 404; returns the last status seen.
fn wait_gone(admin: &Client, id: &str) -> u16 {
    let started = Instant::now();
    loop {
        let shown = admin.get(&format!("/compute/v2.1/servers/{id}"));
        if shown.status == 404 || started.elapsed() > GONE {
            return shown.status;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn left_behind(server: &Server, id: &str) -> Vec<String> {
    let data = server.data_dir();
    ["instances", "state"]
        .iter()
        .map(|d| data.join(d))
        .chain([data.join("pool").join("disks")])
        .flat_map(|dir| file_names(&dir))
        .filter(|n| n.contains(id))
        .collect()
}

#[test]
fn server_when_deleted_while_building_then_204_and_gone_without_leftovers() {
    let server = Server::start();
    let image = server.add_guest_image_and_flavor();
    let admin = server.admin();
    let id = boot(&admin, &image, "early");

    let deleted = admin.delete(&format!("/compute/v2.1/servers/{id}"));
    let again = admin.delete(&format!("/compute/v2.1/servers/{id}"));
    let last = wait_gone(&admin, &id);

    assert_eq!(deleted.status, 204, "{}", deleted.message());
    assert!(
        again.status == 204 || again.status == 404,
        "second delete: {} {}",
        again.status,
        again.message()
    );
    assert_eq!(last, 404);
    assert_eq!(
        pids_with_cmdline(&format!("guest={id},")),
        Vec::<u32>::new()
    );
    assert_eq!(left_behind(&server, &id), Vec::<String>::new());
}

#[test]
fn servers_when_deleted_at_once_then_quota_and_listing_empty() {
    let server = Server::start();
    let image = server.add_guest_image_and_flavor();
    let admin = server.admin();
    let ids: Vec<String> = (0..3)
        .map(|i| boot(&admin, &image, &format!("b{i}")))
        .collect();

    let statuses: Vec<u16> = ids
        .iter()
        .map(|id| admin.delete(&format!("/compute/v2.1/servers/{id}")).status)
        .collect();
    let gone: Vec<u16> = ids.iter().map(|id| wait_gone(&admin, id)).collect();
    let listed = admin.get("/compute/v2.1/servers").expect_status(200);

    assert_eq!(statuses, vec![204, 204, 204]);
    assert_eq!(gone, vec![404, 404, 404]);
    assert_eq!(listed.body["servers"], json!([]));
    for id in &ids {
        assert_eq!(left_behind(&server, id), Vec::<String>::new());
    }
}
