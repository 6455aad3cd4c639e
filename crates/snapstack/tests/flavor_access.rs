//! Flavors against the real `snapstack serve`: private flavors and
//! os-flavor-access (enforced at boot), extra specs, size limits, Nova's
//! zero-disk-flavor policy, the virtual_size cap on uploads, and
//! `openstack flavor create --private` / `flavor set|unset --project`.

mod common;

use common::{make_qcow2, ok, Client, Server};
use serde_json::{json, Value};

/// The test guest image, public so that every project can boot it.
fn public_guest(server: &Server) -> String {
    let image = server.add_guest_image_and_flavor();
    server
        .admin()
        .patch(
            &format!("/image/v2/images/{image}"),
            "application/openstack-images-v2.1-json-patch",
            json!([{"op": "replace", "path": "/visibility", "value": "public"}]),
        )
        .expect_status(200);
    image
}

fn create_flavor(admin: &Client, id: &str, disk: u64, public: bool) {
    admin
        .post(
            "/compute/v2.1/flavors",
            json!({"flavor": {"id": id, "name": id, "vcpus": 1, "ram": 256, "disk": disk,
                              "os-flavor-access:is_public": public}}),
        )
        .expect_status(200);
}

fn boot(client: &Client, image: &str, flavor: &str) -> common::Reply {
    client.post(
        "/compute/v2.1/servers",
        json!({"server": {"name": "s", "imageRef": image, "flavorRef": flavor, "networks": "none"}}),
    )
}

fn flavor_action(admin: &Client, flavor: &str, action: &str, project: &str) -> common::Reply {
    admin.post(
        &format!("/compute/v2.1/flavors/{flavor}/action"),
        json!({ action: {"tenant": project} }),
    )
}

#[test]
fn private_flavor_when_no_access_then_hidden_and_boot_400_until_access_added() {
    let server = Server::start();
    let image = public_guest(&server);
    let admin = server.admin();
    let member = server.user_with_role("fa1", "member");
    let pid = member.project_id();
    create_flavor(&admin, "secret", 1, false);

    let hidden_show = member.get("/compute/v2.1/flavors/secret");
    let hidden_boot = boot(&member, &image, "secret");
    let empty = admin.get("/compute/v2.1/flavors/secret/os-flavor-access");
    let added = flavor_action(&admin, "secret", "addTenantAccess", &pid);
    let again = flavor_action(&admin, "secret", "addTenantAccess", &pid);
    let listed = member.get("/compute/v2.1/flavors");
    let booted = boot(&member, &image, "secret");
    let removed = flavor_action(&admin, "secret", "removeTenantAccess", &pid);
    let removed_again = flavor_action(&admin, "secret", "removeTenantAccess", &pid);
    let after_removal = boot(&member, &image, "secret");
    let public_access = admin.get("/compute/v2.1/flavors/tiny/os-flavor-access");

    assert_eq!(hidden_show.status, 404);
    assert_eq!(hidden_boot.status, 400, "{}", hidden_boot.body);
    assert_eq!(empty.expect_status(200).body, json!({"flavor_access": []}));
    assert_eq!(
        added.expect_status(200).body,
        json!({"flavor_access": [{"flavor_id": "secret", "tenant_id": pid}]})
    );
    assert_eq!(again.status, 409);
    let names: Vec<&str> = listed.body["flavors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert!(names.contains(&"secret"), "{names:?}");
    assert_eq!(booted.status, 202, "{}", booted.body);
    assert_eq!(removed.status, 200);
    assert_eq!(removed_again.status, 404);
    assert_eq!(after_removal.status, 400);
    assert_eq!(public_access.status, 404);
}

#[test]
fn extra_specs_when_set_shown_updated_deleted_then_nova_shapes() {
    let server = Server::start();
    let admin = server.admin();
    let member = server.user_with_role("fa2", "member");
    create_flavor(&admin, "specs", 1, true);
    let base = "/compute/v2.1/flavors/specs/os-extra_specs";

    let set = admin.post(
        base,
        json!({"extra_specs": {"hw:cpu_policy": "dedicated", "a": "1"}}),
    );
    let by_member = member.post(base, json!({"extra_specs": {"b": "2"}}));
    let one = member.get(&format!("{base}/a"));
    let put = common::reply(
        admin
            .request("PUT", &format!("{base}/a"))
            .send_json(json!({"a": "2"})),
    );
    let mismatch = common::reply(
        admin
            .request("PUT", &format!("{base}/a"))
            .send_json(json!({"b": "2"})),
    );
    let deleted = admin.delete(&format!("{base}/hw:cpu_policy"));
    let missing = admin.get(&format!("{base}/hw:cpu_policy"));
    let all = member.get(base);

    assert_eq!(
        set.expect_status(200).body,
        json!({"extra_specs": {"hw:cpu_policy": "dedicated", "a": "1"}})
    );
    assert_eq!(by_member.status, 403);
    assert_eq!(one.expect_status(200).body, json!({"a": "1"}));
    assert_eq!(put.expect_status(200).body, json!({"a": "2"}));
    assert_eq!(mismatch.status, 400);
    assert_eq!(deleted.status, 200);
    assert_eq!(missing.status, 404);
    assert_eq!(all.body, json!({"extra_specs": {"a": "2"}}));
}

#[test]
fn flavor_create_when_disk_beyond_32_bits_then_400() {
    let server = Server::start();

    let r = server.admin().post(
        "/compute/v2.1/flavors",
        json!({"flavor": {"name": "huge", "vcpus": 1, "ram": 256, "disk": 17179869184u64}}),
    );

    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn boot_when_zero_disk_flavor_and_image_backed_then_403_for_member() {
    let server = Server::start();
    let image = public_guest(&server);
    let admin = server.admin();
    let member = server.user_with_role("fa3", "member");
    create_flavor(&admin, "zero", 0, true);

    let r = boot(&member, &image, "zero");

    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body["forbidden"]["message"]
        .as_str()
        .unwrap()
        .contains("zero disk"));
}

#[test]
fn upload_when_virtual_size_over_cap_then_413_and_image_not_active() {
    let server = Server::start_with(&["--max-virtual-size", "1073741824"]);
    let admin = server.admin();
    let big = make_qcow2(server.dir.path(), "big.qcow2", "4T");

    let (id, r) = admin.upload_image("big", "qcow2", &std::fs::read(big).unwrap());

    assert_eq!(r.status, 413, "{}", r.body);
    assert_ne!(admin.image(&id)["status"], json!("active"));
    assert!(server.pool_files().is_empty(), "{:?}", server.pool_files());
}

#[test]
fn cli_flavor_private_then_set_and_unset_project_then_access_follows() {
    let server = Server::start();
    server.user_with_role("fa4", "member");
    let pid = server
        .admin()
        .get("/identity/v3/projects?name=fa4-project")
        .body["projects"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    ok(server.openstack(&[
        "flavor",
        "create",
        "--private",
        "--vcpus",
        "1",
        "--ram",
        "256",
        "--disk",
        "1",
        "priv",
    ]));
    ok(server.openstack(&["flavor", "set", "--project", "fa4-project", "priv"]));
    let shown: Value = serde_json::from_str(&ok(
        server.openstack(&["flavor", "show", "priv", "-f", "json"])
    ))
    .unwrap();
    ok(server.openstack(&["flavor", "unset", "--project", "fa4-project", "priv"]));
    let access = server.admin().get(&format!(
        "/compute/v2.1/flavors/{}/os-flavor-access",
        shown["id"].as_str().unwrap()
    ));

    assert_eq!(shown["os-flavor-access:is_public"], json!(false), "{shown}");
    assert_eq!(shown["access_project_ids"], json!([pid]), "{shown}");
    assert_eq!(access.body, json!({"flavor_access": []}));
}

#[test]
fn flavor_create_when_id_is_a_number_and_is_public_a_string_then_accepted_as_nova() {
    let server = Server::start();
    let admin = server.admin();

    let created = admin.post(
        "/compute/v2.1/flavors",
        json!({"flavor": {"id": 4242, "name": "numbered", "vcpus": 1, "ram": 256, "disk": 1,
                          "os-flavor-access:is_public": "False"}}),
    );
    let bad = admin.post(
        "/compute/v2.1/flavors",
        json!({"flavor": {"name": "maybe", "vcpus": 1, "ram": 256, "disk": 1,
                          "os-flavor-access:is_public": "perhaps"}}),
    );

    let created = created.expect_status(200);
    assert_eq!(created.body["flavor"]["id"], "4242");
    assert_eq!(created.body["flavor"]["os-flavor-access:is_public"], false);
    assert_eq!(bad.status, 400);
}
