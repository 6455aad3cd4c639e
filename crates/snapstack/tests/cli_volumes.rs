//! Acceptance: volumes and volume snapshots (Cinder v3) on the file pool,
//! driven with the real `openstack` CLI, the data checked with
//! `qemu-img`/`qemu-io` behind the API. Writes a guest would make are made
//! with `qemu-io` on the volume's current top (no attach yet).

mod cli_volumes_support;
mod common;

use cli_volumes_support::*;
use common::{fails, ok, Server};
use serde_json::{json, Value};

fn show_json(server: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-f", "json"]);
    serde_json::from_str(&ok(server.openstack(&all))).unwrap()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn volumes_when_made_from_image_snapshot_and_volume_then_hold_exactly_the_source_data() {
    let server = Server::start();
    let api = VolumeApi::new(server.admin());
    let image = patterned_qcow2(server.dir.path(), "guest.qcow2", "64M", 0x5a, 0);
    ok(server.openstack(&[
        "image",
        "create",
        "--disk-format",
        "qcow2",
        "--file",
        image.to_str().unwrap(),
        "guest",
    ]));

    let boot1 = id_of(&show_json(
        &server,
        &[
            "volume", "create", "--image", "guest", "--size", "2", "boot1",
        ],
    ));
    api.wait_volume(&boot1, "available");
    write_pattern(&top_of(&server, &boot1), 0x11, 1 << 20);
    let snap = id_of(&show_json(
        &server,
        &["volume", "snapshot", "create", "--volume", "boot1", "s"],
    ));
    api.wait_snapshot(&snap, "available");
    write_pattern(&top_of(&server, &boot1), 0x22, 1 << 20);
    let v2 = id_of(&show_json(
        &server,
        &["volume", "create", "--snapshot", "s", "v2"],
    ));
    api.wait_volume(&v2, "available");
    let snapshot_layer = frozen_of(&server, &boot1);
    let v3 = id_of(&show_json(
        &server,
        &["volume", "create", "--source", "boot1", "v3"],
    ));
    api.wait_volume(&v3, "available");

    let shown = show_json(&server, &["volume", "show", "boot1"]);
    assert_eq!(shown["bootable"], true);
    assert_eq!(shown["size"], 2);
    assert_eq!(shown["volume_image_metadata"]["image_name"], "guest");
    assert_eq!(
        snapshot_layer.len(),
        1,
        "one frozen layer after one snapshot"
    );
    let (top_v2, top_v3, top_boot1) = (
        top_of(&server, &v2),
        top_of(&server, &v3),
        top_of(&server, &boot1),
    );
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    assert!(same_content(
        &path(&top_v2),
        "qcow2",
        &path(&snapshot_layer[0]),
        "qcow2"
    ));
    assert!(holds_pattern(&path(&top_v2), "qcow2", 0x11, 1 << 20));
    assert!(holds_pattern(&path(&top_v2), "qcow2", 0x5a, 0));
    assert!(!same_content(
        &path(&top_v2),
        "qcow2",
        &path(&top_boot1),
        "qcow2"
    ));
    assert!(same_content(
        &path(&top_v3),
        "qcow2",
        &path(&top_boot1),
        "qcow2"
    ));
    assert!(holds_pattern(&path(&top_v3), "qcow2", 0x22, 1 << 20));
    let v2_shown = show_json(&server, &["volume", "show", "v2"]);
    assert_eq!(v2_shown["snapshot_id"], snap.as_str());
    assert_eq!(v2_shown["size"], 2);
    check_every_file(&server);
}

#[test]
fn volume_delete_when_snapshots_then_refused_and_when_all_deleted_then_pool_empty() {
    let server = Server::start();
    let api = VolumeApi::new(server.admin());
    let v1 = id_of(&show_json(
        &server,
        &["volume", "create", "--size", "1", "v1"],
    ));
    api.wait_volume(&v1, "available");
    write_pattern(&top_of(&server, &v1), 0x33, 0);
    let s1 = id_of(&show_json(
        &server,
        &["volume", "snapshot", "create", "--volume", "v1", "s1"],
    ));
    api.wait_snapshot(&s1, "available");
    let v2 = id_of(&show_json(
        &server,
        &["volume", "create", "--snapshot", "s1", "v2"],
    ));
    api.wait_volume(&v2, "available");

    let refused = fails(server.openstack(&["volume", "delete", "v1"]));
    ok(server.openstack(&["volume", "snapshot", "delete", "s1"]));
    api.wait_snapshot_gone(&s1);
    ok(server.openstack(&["volume", "delete", "v1"]));
    api.wait_volume_gone(&v1);
    let v2_reads_data_after_parent_gone =
        holds_pattern(top_of(&server, &v2).to_str().unwrap(), "qcow2", 0x33, 0);
    ok(server.openstack(&[
        "volume",
        "set",
        "--size",
        "3",
        "--name",
        "v2b",
        "--property",
        "k=v",
        "v2",
    ]));
    let extended = api.wait_volume(&v2, "available");
    let listed_before = ok(server.openstack(&["volume", "list", "-f", "value", "-c", "Name"]));
    ok(server.openstack(&["volume", "delete", "v2b"]));
    api.wait_volume_gone(&v2);

    assert!(refused.contains("400"), "{refused}");
    assert!(refused.contains("snapshot"), "{refused}");
    assert!(v2_reads_data_after_parent_gone);
    assert_eq!(extended["size"], 3);
    assert_eq!(extended["name"], "v2b");
    assert_eq!(extended["metadata"]["k"], "v");
    assert_eq!(listed_before, "v2b");
    assert_eq!(ok(server.openstack(&["volume", "list", "-f", "value"])), "");
    assert_eq!(
        ok(server.openstack(&["volume", "snapshot", "list", "-f", "value"])),
        ""
    );
    assert_eq!(
        common::file_names(&disks_dir(&server)),
        Vec::<String>::new()
    );
    assert!(fails(server.openstack(&["volume", "show", "v1"])).contains("No Volume found"));
}

#[test]
fn volume_api_when_bad_requests_then_cinder_errors_and_versions() {
    let server = Server::start();
    let admin = server.admin();
    let api = VolumeApi::new(admin.clone());
    let big = patterned_qcow2(server.dir.path(), "big.qcow2", "3G", 1, 0);
    let data = std::fs::read(&big).unwrap();
    let (image, upload) = admin.upload_image("big", "qcow2", &data);
    upload.expect_status(204);
    let v = api.blank_volume("v", 2);
    let s = api.snapshot(&v, "s");
    let other = VolumeApi::new(server.user_with_role("eve", "member"));
    let volumes_url = format!("{}/volumes", api.base);

    let unknown = api.get(&format!("/volumes/{}", uuid_like()));
    let too_small_for_snapshot =
        api.post("/volumes", json!({"volume": {"size": 1, "snapshot_id": s}}));
    let too_small_for_image = api.post(
        "/volumes",
        json!({"volume": {"size": 1, "imageRef": image}}),
    );
    let no_size = api.post("/volumes", json!({"volume": {"name": "x"}}));
    let delete_with_snapshot = api.delete(&format!("/volumes/{v}"));
    let not_mine = other.get(&format!("/volumes/{v}"));
    let not_mine_snapshot = other.get(&format!("/snapshots/{s}"));
    let not_mine_listed = other.get("/volumes/detail").expect_status(200);
    let wrong_project_url = other.client.get(&volumes_url);
    let version = |v: &str| admin.get_with(&volumes_url, "OpenStack-API-Version", v);
    let (no_version, v3_0, v3_65, v3_999, garbage) = (
        admin.get(&volumes_url),
        version("volume 3.0"),
        version("volume 3.65"),
        version("volume 3.999"),
        version("volume three"),
    );

    assert_eq!(unknown.status, 404);
    assert!(unknown.body["itemNotFound"]["message"].is_string());
    assert_eq!(
        too_small_for_snapshot.status, 400,
        "{:?}",
        too_small_for_snapshot.body
    );
    assert_eq!(
        too_small_for_image.status, 400,
        "{:?}",
        too_small_for_image.body
    );
    assert_eq!(no_size.status, 400);
    assert_eq!(delete_with_snapshot.status, 400);
    assert!(delete_with_snapshot.body["badRequest"]["message"]
        .as_str()
        .unwrap()
        .contains("snapshot"));
    assert_eq!(not_mine.status, 404);
    assert_eq!(not_mine_snapshot.status, 404);
    assert_eq!(not_mine_listed.body["volumes"], json!([]));
    assert_eq!(wrong_project_url.status, 400);
    assert_eq!(
        no_version.header("openstack-api-version"),
        Some("volume 3.0")
    );
    assert_eq!(v3_0.header("openstack-api-version"), Some("volume 3.0"));
    assert_eq!(v3_65.header("openstack-api-version"), Some("volume 3.65"));
    assert_eq!(v3_999.status, 406);
    assert_eq!(garbage.status, 400);
    assert_eq!(api.wait_volume(&v, "available")["size"], 2);
}

fn uuid_like() -> String {
    "0b3e4a5c-1111-4222-8333-944455556666".to_string()
}

#[test]
fn volume_sagas_when_killed_at_each_step_then_restart_finishes_them_cleanly() {
    // One representative step per kind (every step of every kind is
    // crashed on fakes in cloud's saga_crash_fakes).
    for point in ["volume-create:freeze", "volume-snapshot:freeze"] {
        let mut server = Server::start();
        let api = VolumeApi::new(server.admin());
        let source = if point == "volume-create:record" || point == "volume-create:make" {
            None
        } else {
            Some(api.blank_volume("source", 1))
        };
        // Armed only now: every volume creation passes every step.
        server.restart_with_env(&[("SNAPSTACK_FAULT_INJECT", point)]);
        let api = VolumeApi::new(server.admin());
        let made = match (point, &source) {
            ("volume-create:freeze", Some(src)) => api.try_post(
                "/volumes",
                json!({"volume": {"source_volid": src, "name": "clone"}}),
            ),
            (p, Some(src)) if p.starts_with("volume-snapshot") => api.try_post(
                "/snapshots",
                json!({"snapshot": {"volume_id": src, "name": "s"}}),
            ),
            _ => api.try_post("/volumes", json!({"volume": {"size": 1, "name": "v"}})),
        };
        let exited = server.wait_exit(std::time::Duration::from_secs(10));
        server.restart_with_env(&[]);
        let api = VolumeApi::new(server.admin());

        assert!(exited.is_some(), "{point}: the service did not die");
        let id = made.and_then(|r| r.body.as_object()?.values().next().map(id_of));
        match (point.starts_with("volume-snapshot"), id) {
            (true, Some(id)) => {
                api.wait_snapshot(&id, "available");
            }
            (false, Some(id)) => {
                api.wait_volume(&id, "available");
            }
            // Died before answering: the record may or may not exist, but
            // nothing stays half-made.
            (_, None) => {}
        }
        let listed = api.get("/volumes/detail").expect_status(200).body;
        for v in listed["volumes"].as_array().unwrap() {
            assert_eq!(v["status"], "available", "{point}: {v}");
        }
        let snaps = api.get("/snapshots").expect_status(200).body;
        for s in snaps["snapshots"].as_array().unwrap() {
            assert_eq!(s["status"], "available", "{point}: {s}");
        }
        check_every_file(&server);
        if let Some(src) = &source {
            let top = top_of(&server, src);
            assert!(
                holds_pattern(top.to_str().unwrap(), "qcow2", 0, 0),
                "{point}"
            );
        }
    }
}

#[test]
fn snapshot_delete_when_nothing_made_from_it_then_its_layer_is_merged_into_the_volume_and_released()
{
    let server = Server::start();
    let admin = server.admin();
    let api = VolumeApi::new(admin.clone());
    let image = patterned_qcow2(server.dir.path(), "guest.qcow2", "64M", 0x5a, 0);
    let data = std::fs::read(&image).unwrap();
    let (image_id, upload) = admin.upload_image("guest", "qcow2", &data);
    upload.expect_status(204);
    let v = api.create_volume(json!({"size": 1, "imageRef": image_id, "name": "v"}));
    let v = id_of(&v);
    api.wait_volume(&v, "available");
    write_pattern(&top_of(&server, &v), 0x11, 1 << 20);
    let s1 = api.snapshot(&v, "s1");
    write_pattern(&top_of(&server, &v), 0x22, 2 << 20);
    let s2 = api.snapshot(&v, "s2");
    write_pattern(&top_of(&server, &v), 0x33, 3 << 20);
    let layers_before = volume_files(&server, &v).len();

    ok(server.openstack(&["volume", "snapshot", "delete", "s2"]));
    api.wait_snapshot_gone(&s2);
    ok(server.openstack(&["volume", "snapshot", "delete", "s1"]));
    api.wait_snapshot_gone(&s1);

    let top = top_of(&server, &v);
    let top = top.to_str().unwrap();
    assert_eq!(layers_before, 3);
    assert_eq!(volume_files(&server, &v).len(), 1, "both layers released");
    assert!(holds_pattern(top, "qcow2", 0x5a, 0));
    assert!(holds_pattern(top, "qcow2", 0x11, 1 << 20));
    assert!(holds_pattern(top, "qcow2", 0x22, 2 << 20));
    assert!(holds_pattern(top, "qcow2", 0x33, 3 << 20));
    check_every_file(&server);
}

/// Layers under the top of the qcow2 file at `path` (its backing chain).
fn chain_depth(path: &std::path::Path) -> usize {
    let out = common::run(
        "qemu-img",
        &[
            "info",
            "-U",
            "--backing-chain",
            "--output",
            "json",
            path.to_str().unwrap(),
        ],
    );
    serde_json::from_str::<Vec<Value>>(&out).unwrap().len() - 1
}

#[test]
fn volume_cloned_many_times_when_measured_then_source_and_clones_stay_within_the_depth_bound() {
    let server = Server::start();
    let admin = server.admin();
    let pid = admin.project_id();
    // Eleven volumes: past Cinder's default quota of ten.
    admin
        .request("PUT", &format!("/volume/v3/{pid}/os-quota-sets/{pid}"))
        .send_json(json!({"quota_set": {"volumes": -1}}))
        .unwrap();
    let api = VolumeApi::new(admin);
    let v1 = api.blank_volume("v1", 1);
    write_pattern(&top_of(&server, &v1), 0x44, 0);

    let clones: Vec<String> = (0..10)
        .map(|i| {
            let c = api.create_volume(json!({"source_volid": v1, "name": format!("c{i}")}));
            let c = id_of(&c);
            api.wait_volume(&c, "available");
            c
        })
        .collect();

    let source_depth = chain_depth(&top_of(&server, &v1));
    let deepest_clone = clones
        .iter()
        .map(|c| chain_depth(&top_of(&server, c)))
        .max()
        .unwrap();
    assert!(source_depth <= 8, "source depth {source_depth}");
    assert!(deepest_clone <= 8, "clone depth {deepest_clone}");
    for c in &clones {
        assert!(holds_pattern(
            top_of(&server, c).to_str().unwrap(),
            "qcow2",
            0x44,
            0
        ));
    }
    assert!(holds_pattern(
        top_of(&server, &v1).to_str().unwrap(),
        "qcow2",
        0x44,
        0
    ));
    check_every_file(&server);
}
