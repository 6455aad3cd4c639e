//! Nova keypairs against the real `snapstack serve`: generated and imported
//! keys, per-user isolation, microversion shapes (2.1: 200/202; 2.2: type,
//! 201/204).

mod common;

use common::{reply, Server};
use serde_json::json;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test@host";

#[test]
fn keypair_when_generated_then_private_key_returned_once_and_listed() {
    let server = Server::start();
    let admin = server.admin();

    let created = admin
        .post(
            "/compute/v2.1/os-keypairs",
            json!({"keypair": {"name": "gen"}}),
        )
        .expect_status(200);
    let shown = admin
        .get("/compute/v2.1/os-keypairs/gen")
        .expect_status(200);
    let listed = admin.get("/compute/v2.1/os-keypairs").expect_status(200);

    let k = &created.body["keypair"];
    assert!(k["private_key"].as_str().unwrap().contains("PRIVATE KEY"));
    assert!(k["public_key"].as_str().unwrap().starts_with("ssh-rsa "));
    assert_eq!(k["fingerprint"].as_str().unwrap().split(':').count(), 16);
    assert!(shown.body["keypair"].get("private_key").is_none());
    assert_eq!(shown.body["keypair"]["fingerprint"], k["fingerprint"]);
    assert_eq!(listed.body["keypairs"][0]["keypair"]["name"], "gen");
}

#[test]
fn keypair_when_imported_at_2_2_then_typed_201_and_delete_204() {
    let server = Server::start();
    let admin = server.admin();
    let at = |r: ureq::Request| r.set("OpenStack-API-Version", "compute 2.2");

    let created = reply(
        at(admin.request("POST", "/compute/v2.1/os-keypairs"))
            .send_json(json!({"keypair": {"name": "imp", "public_key": KEY}})),
    )
    .expect_status(201);
    let deleted = reply(at(admin.request("DELETE", "/compute/v2.1/os-keypairs/imp")).call());

    assert_eq!(created.body["keypair"]["type"], "ssh");
    assert_eq!(created.body["keypair"]["public_key"], KEY);
    assert!(created.body["keypair"].get("private_key").is_none());
    assert_eq!(deleted.status, 204);
}

#[test]
fn keypair_when_other_user_then_not_found_and_name_free() {
    let server = Server::start();
    let admin = server.admin();
    let bob = server.user_with_role("bob", "member");
    admin
        .post(
            "/compute/v2.1/os-keypairs",
            json!({"keypair": {"name": "k", "public_key": KEY}}),
        )
        .expect_status(200);

    let seen = bob.get("/compute/v2.1/os-keypairs/k");
    let own = bob.post(
        "/compute/v2.1/os-keypairs",
        json!({"keypair": {"name": "k", "public_key": KEY}}),
    );

    assert_eq!(seen.status, 404);
    assert_eq!(own.status, 200);
}

#[test]
fn keypair_when_name_taken_or_key_bad_then_409_or_400() {
    let server = Server::start();
    let admin = server.admin();
    let body = json!({"keypair": {"name": "k", "public_key": KEY}});
    admin
        .post("/compute/v2.1/os-keypairs", body.clone())
        .expect_status(200);

    let again = admin.post("/compute/v2.1/os-keypairs", body);
    let bad = admin.post(
        "/compute/v2.1/os-keypairs",
        json!({"keypair": {"name": "b", "public_key": "ssh-rsa bm90IGEga2V5"}}),
    );

    assert_eq!(again.status, 409);
    assert_eq!(bad.status, 400);
}

#[test]
fn keypair_when_user_has_its_key_pairs_quota_then_403_by_api_and_cli() {
    let server = Server::start();
    let admin = server.admin();
    let member = server.user_with_role("keyholder", "member");
    let pid = member.project_id();
    reply(
        admin
            .request("PUT", &format!("/compute/v2.1/os-quota-sets/{pid}"))
            .send_json(json!({"quota_set": {"key_pairs": 1}})),
    );

    let first = member.post(
        "/compute/v2.1/os-keypairs",
        json!({"keypair": {"name": "one", "public_key": KEY}}),
    );
    let second = member.post(
        "/compute/v2.1/os-keypairs",
        json!({"keypair": {"name": "two", "public_key": KEY}}),
    );
    let cli = server.openstack_as(
        "keyholder",
        "pw-keyholder",
        "keyholder-project",
        &["keypair", "create", "three"],
    );
    let listed = member.get("/compute/v2.1/os-keypairs");

    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(second.status, 403, "{}", second.body);
    assert_eq!(
        second.body["forbidden"]["message"],
        json!("Quota exceeded, too many key pairs.")
    );
    assert!(!cli.status.success());
    assert!(String::from_utf8_lossy(&cli.stderr).contains("too many key pairs"));
    assert_eq!(listed.body["keypairs"].as_array().unwrap().len(), 1);
}
