//! Cinder's administrative volume APIs against the real `snapstack serve`:
//! volume types (the default type, `openstack volume type create|set|show`,
//! access to private types, retype, placement by extra specs with a user
//! message), volume transfers (`openstack volume transfer request
//! create|accept`), snapshot admin actions and delete cascade, the backend
//! views (services, pools), and Glance metadata definitions
//! (`openstack image metadef namespace …`).

mod cli_volumes_support;
mod common;

use cli_volumes_support::VolumeApi;
use common::{fails, ok, Server};
use serde_json::{json, Value};

fn cli_json(out: std::process::Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

#[test]
fn private_type_when_project_given_access_then_volume_of_it_and_retype() {
    let server = Server::start();
    let member = server.user_with_role("vt1", "member");
    let pid = member.project_id();
    let api = VolumeApi::new(member);
    let gold = cli_json(server.openstack(&[
        "volume",
        "type",
        "create",
        "--private",
        "--property",
        "tier=gold",
        "-f",
        "json",
        "gold",
    ]));
    ok(server.openstack(&["volume", "type", "create", "silver"]));

    let refused = api.post(
        "/volumes",
        json!({"volume": {"size": 1, "volume_type": "gold"}}),
    );
    ok(server.openstack(&["volume", "type", "set", "--project", &pid, "gold"]));
    let shown = cli_json(server.openstack(&["volume", "type", "show", "gold", "-f", "json"]));
    let volume = api.create_volume(json!({"size": 1, "volume_type": "gold"}));
    let id = volume["id"].as_str().unwrap();
    api.wait_volume(id, "available");
    let retyped = api.post(
        &format!("/volumes/{id}/action"),
        json!({"os-retype": {"new_type": "silver", "migration_policy": "never"}}),
    );
    let after = api.wait_volume(id, "available");
    let in_use = fails(server.openstack(&["volume", "type", "delete", "silver"]));
    let default = api.get("/types/default").expect_status(200);

    assert_eq!(refused.status, 404, "{}", refused.body);
    assert_eq!(gold["is_public"], json!(false));
    assert_eq!(shown["properties"], json!({"tier": "gold"}));
    assert_eq!(shown["access_project_ids"], json!([pid]));
    assert_eq!(volume["volume_type"], "gold");
    assert_eq!(retyped.status, 202, "{}", retyped.body);
    assert_eq!(after["volume_type"], "silver");
    assert!(in_use.contains("in use"), "{in_use}");
    assert_eq!(default.body["volume_type"]["name"], "__DEFAULT__");
}

#[test]
fn type_naming_another_backend_when_volume_created_then_error_with_user_message() {
    let server = Server::start();
    let admin = VolumeApi::new(server.admin());
    let t = admin
        .post(
            "/types",
            json!({"volume_type": {"name": "elsewhere",
                   "extra_specs": {"volume_backend_name": "lvm-1"}}}),
        )
        .expect_status(200);
    let tid = t.body["volume_type"]["id"].as_str().unwrap();

    let volume = admin.create_volume(json!({"size": 1, "volume_type": tid}));
    let id = volume["id"].as_str().unwrap();
    let errored = admin.wait_volume(id, "error");
    let messages = admin
        .client
        .get_with(
            &format!("{}/messages", admin.base),
            "OpenStack-API-Version",
            "volume 3.3",
        )
        .expect_status(200);
    let pools = admin
        .get("/scheduler-stats/get_pools?detail=true")
        .expect_status(200);

    assert_eq!(errored["volume_type"], "elsewhere");
    let message = messages.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["resource_uuid"] == json!(id))
        .cloned()
        .expect("a message about the volume");
    assert!(
        message["user_message"].as_str().unwrap().contains("lvm-1"),
        "{message}"
    );
    assert_eq!(
        pools.body["pools"][0]["capabilities"]["volume_backend_name"],
        "file"
    );
}

#[test]
fn transfer_request_when_accepted_by_another_project_then_volume_moves() {
    let server = Server::start();
    let giver = server.user_with_role("vt3a", "member");
    let _taker = server.user_with_role("vt3b", "member");
    let api = VolumeApi::new(giver);
    let volume = api.create_volume(json!({"size": 1, "name": "gift"}));
    let id = volume["id"].as_str().unwrap().to_string();
    api.wait_volume(&id, "available");
    let as_giver = |args: &[&str]| server.openstack_as("vt3a", "pw-vt3a", "vt3a-project", args);
    let as_taker = |args: &[&str]| server.openstack_as("vt3b", "pw-vt3b", "vt3b-project", args);

    let transfer = cli_json(as_giver(&[
        "volume", "transfer", "request", "create", "--name", "t1", "-f", "json", &id,
    ]));
    let awaiting = api.get(&format!("/volumes/{id}")).expect_status(200);
    let tid = transfer["id"].as_str().unwrap();
    let key = transfer["auth_key"].as_str().unwrap();
    let wrong = fails(as_taker(&[
        "volume",
        "transfer",
        "request",
        "accept",
        "--auth-key",
        "0000",
        tid,
    ]));
    ok(as_taker(&[
        "volume",
        "transfer",
        "request",
        "accept",
        "--auth-key",
        key,
        tid,
    ]));
    let gone_for_giver = api.get(&format!("/volumes/{id}"));
    let taken = cli_json(as_taker(&["volume", "show", "gift", "-f", "json"]));

    assert_eq!(awaiting.body["volume"]["status"], "awaiting-transfer");
    assert!(wrong.to_lowercase().contains("auth key"), "{wrong}");
    assert_eq!(gone_for_giver.status, 404);
    assert_eq!(taken["id"], json!(id));
    assert_eq!(taken["status"], "available");
}

#[test]
fn snapshot_admin_actions_and_delete_cascade() {
    let server = Server::start();
    let api = VolumeApi::new(server.admin());
    let volume = api.blank_volume("cascade", 1);
    let s1 = api.snapshot(&volume, "s1");
    let s2 = api.snapshot(&volume, "s2");

    let reset = api.post(
        &format!("/snapshots/{s1}/action"),
        json!({"os-reset_status": {"status": "creating"}}),
    );
    let updated = api.post(
        &format!("/snapshots/{s1}/action"),
        json!({"os-update_snapshot_status": {"status": "error", "progress": "80%"}}),
    );
    let shown = api.get(&format!("/snapshots/{s1}")).expect_status(200);
    let without_cascade = api.delete(&format!("/volumes/{volume}"));
    let with_cascade = api.delete(&format!("/volumes/{volume}?cascade=true"));
    api.wait_volume_gone(&volume);
    let s1_after = api.get(&format!("/snapshots/{s1}"));
    let s2_after = api.get(&format!("/snapshots/{s2}"));

    assert_eq!(reset.status, 202, "{}", reset.body);
    assert_eq!(updated.status, 202, "{}", updated.body);
    assert_eq!(shown.body["snapshot"]["status"], "error");
    assert_eq!(
        shown.body["snapshot"]["os-extended-snapshot-attributes:progress"],
        "80%"
    );
    assert_eq!(without_cascade.status, 400);
    assert_eq!(with_cascade.status, 202, "{}", with_cascade.body);
    assert_eq!(s1_after.status, 404);
    assert_eq!(s2_after.status, 404);
}

#[test]
fn volume_services_when_listed_then_scheduler_and_backend_up() {
    let server = Server::start();

    let services = cli_json(server.openstack(&["volume", "service", "list", "-f", "json"]));

    let mut pairs: Vec<(String, String, String)> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["Binary"].as_str().unwrap().into(),
                s["Host"].as_str().unwrap().into(),
                s["State"].as_str().unwrap().into(),
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        vec![
            ("cinder-scheduler".into(), "snapstack".into(), "up".into()),
            ("cinder-volume".into(), "snapstack@file".into(), "up".into()),
        ]
    );
}

#[test]
fn metadef_namespace_when_protected_then_delete_refused_until_unprotected() {
    let server = Server::start();
    let member = server.user_with_role("vt6", "member");

    ok(server.openstack(&[
        "image",
        "metadef",
        "namespace",
        "create",
        "--public",
        "--protected",
        "--description",
        "Snapstack test",
        "OS::Test::Ns",
    ]));
    let shown = cli_json(server.openstack(&[
        "image",
        "metadef",
        "namespace",
        "show",
        "OS::Test::Ns",
        "-f",
        "json",
    ]));
    let member_create = member.post(
        "/image/v2/metadefs/namespaces",
        json!({"namespace": "OS::Member::Ns"}),
    );
    let refused = server
        .admin()
        .delete("/image/v2/metadefs/namespaces/OS::Test::Ns");
    ok(server.openstack(&[
        "image",
        "metadef",
        "namespace",
        "set",
        "--unprotected",
        "OS::Test::Ns",
    ]));
    ok(server.openstack(&["image", "metadef", "namespace", "delete", "OS::Test::Ns"]));
    let after = server
        .admin()
        .get("/image/v2/metadefs/namespaces/OS::Test::Ns");

    assert_eq!(shown["visibility"], "public");
    assert_eq!(shown["protected"], json!(true));
    assert_eq!(member_create.status, 403);
    assert_eq!(refused.status, 403);
    assert_eq!(after.status, 404);
}
