//! Application credentials against the real `snapstack serve`: create,
//! list, delete, authenticate with the `application_credential` method,
//! role subsets, expiry, restriction, and the openstack CLI
//! (`application credential create`, `--os-auth-type v3applicationcredential`).

mod common;

use std::time::Duration;

use common::{ok, openstack_cli, reply, Client, Server};
use serde_json::{json, Value};

fn user_id(client: &Client) -> String {
    let r = reply(
        client
            .request("GET", "/identity/v3/auth/tokens?nocatalog")
            .set("X-Subject-Token", &client.token)
            .call(),
    );
    r.expect_status(200).body["token"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn create(client: &Client, uid: &str, body: Value) -> common::Reply {
    client.post(
        &format!("/identity/v3/users/{uid}/application_credentials"),
        json!({ "application_credential": body }),
    )
}

fn app_cred_auth(id: &str, secret: &str) -> Value {
    json!({"auth": {"identity": {"methods": ["application_credential"],
        "application_credential": {"id": id, "secret": secret}}}})
}

fn token_client(server: &Server, reply: &common::Reply) -> Client {
    Client {
        url: server.url.clone(),
        token: reply.header("x-subject-token").unwrap().to_string(),
    }
}

#[test]
fn app_credential_when_created_then_authenticates_and_dies_when_deleted() {
    let server = Server::start();
    let member = server.user_with_role("ac1", "member");
    let uid = user_id(&member);

    let created = create(
        &member,
        &uid,
        json!({"name": "ci", "description": "for CI"}),
    );
    let created = created.expect_status(201).body["application_credential"].clone();
    let (id, secret) = (
        created["id"].as_str().unwrap().to_string(),
        created["secret"].as_str().unwrap().to_string(),
    );
    let issued = server.issue_token(app_cred_auth(&id, &secret));
    let by_name = server.issue_token(
        json!({"auth": {"identity": {"methods": ["application_credential"],
        "application_credential": {"name": "ci", "secret": secret, "user": {"id": uid}}}}}),
    );
    let wrong = server.issue_token(app_cred_auth(&id, "wrong-secret"));
    let issued = issued.expect_status(201);
    let cred_client = token_client(&server, &issued);
    let images = cred_client.get("/image/v2/images");
    let listed = member.get(&format!("/identity/v3/users/{uid}/application_credentials"));
    let duplicate = create(&member, &uid, json!({"name": "ci"}));
    let deleted = member.delete(&format!(
        "/identity/v3/users/{uid}/application_credentials/{id}"
    ));
    let after_delete = cred_client.get("/image/v2/images");
    let auth_after_delete = server.issue_token(app_cred_auth(&id, &secret));

    let token = &issued.body["token"];
    assert_eq!(token["methods"], json!(["application_credential"]));
    assert_eq!(token["project"]["name"], json!("ac1-project"));
    assert_eq!(token["application_credential"]["id"], json!(id));
    assert_eq!(token["application_credential"]["restricted"], json!(true));
    assert_eq!(by_name.status, 201);
    assert_eq!(wrong.status, 401);
    assert_eq!(images.status, 200);
    let listed = &listed.expect_status(200).body["application_credentials"];
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0].get("secret").is_none(), "{listed}");
    assert_eq!(listed[0]["roles"][0]["name"], json!("member"));
    assert_eq!(duplicate.status, 409);
    assert_eq!(deleted.status, 204);
    assert_eq!(after_delete.status, 401);
    assert_eq!(auth_after_delete.status, 401);
}

#[test]
fn app_credential_when_reader_subset_then_token_cannot_write() {
    let server = Server::start();
    let member = server.user_with_role("ac2", "member");
    let uid = user_id(&member);

    let created = create(
        &member,
        &uid,
        json!({"name": "ro", "secret": "ro-secret", "roles": [{"name": "reader"}]}),
    );
    let id = created.expect_status(201).body["application_credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let issued = server
        .issue_token(app_cred_auth(&id, "ro-secret"))
        .expect_status(201);
    let reader = token_client(&server, &issued);
    let read = reader.get("/image/v2/images");
    let write = reader.post(
        "/image/v2/images",
        json!({"name": "x", "disk_format": "raw", "container_format": "bare"}),
    );
    let escalate = create(
        &member,
        &uid,
        json!({"name": "adm", "roles": [{"name": "admin"}]}),
    );
    let nested = create(&reader, &uid, json!({"name": "nested"}));

    let roles: Vec<&str> = issued.body["token"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(roles, vec!["reader"]);
    assert_eq!(read.status, 200);
    assert_eq!(write.status, 403);
    assert_eq!(escalate.status, 404);
    assert_eq!(nested.status, 403);
}

#[test]
fn app_credential_when_expired_then_401_and_past_expiry_refused() {
    let server = Server::start();
    let member = server.user_with_role("ac3", "member");
    let uid = user_id(&member);
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string();

    let past = create(
        &member,
        &uid,
        json!({"name": "old", "expires_at": "2001-01-01T00:00:00"}),
    );
    let created = create(
        &member,
        &uid,
        json!({"name": "brief", "secret": "s3", "expires_at": soon}),
    );
    let id = created.expect_status(201).body["application_credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = server.issue_token(app_cred_auth(&id, "s3"));
    std::thread::sleep(Duration::from_secs(3));
    let after = server.issue_token(app_cred_auth(&id, "s3"));

    assert_eq!(past.status, 400);
    assert_eq!(before.status, 201);
    assert_eq!(after.status, 401);
}

/// A field of `openstack … -f json` output, whatever its case.
fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v.as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

#[test]
fn cli_application_credential_when_created_then_server_list_with_v3applicationcredential() {
    let server = Server::start();
    server.user_with_role("ac4", "member");
    let as_member = |args: &[&str]| server.openstack_as("ac4", "pw-ac4", "ac4-project", args);

    let created: Value = serde_json::from_str(&ok(as_member(&[
        "application",
        "credential",
        "create",
        "cli",
        "-f",
        "json",
    ])))
    .unwrap();
    let listed = ok(as_member(&[
        "application",
        "credential",
        "list",
        "-f",
        "value",
        "-c",
        "Name",
    ]));
    let servers = openstack_cli()
        .env("HOME", server.dir.path())
        .env("OS_AUTH_URL", format!("{}/identity/v3", server.url))
        .env("OS_IDENTITY_API_VERSION", "3")
        .args([
            "--os-auth-type",
            "v3applicationcredential",
            "--os-application-credential-id",
            field(&created, "id"),
            "--os-application-credential-secret",
            field(&created, "secret"),
            "server",
            "list",
            "-f",
            "json",
        ])
        .output()
        .unwrap();
    ok(as_member(&["application", "credential", "delete", "cli"]));
    let after = ok(as_member(&[
        "application",
        "credential",
        "list",
        "-f",
        "value",
        "-c",
        "Name",
    ]));

    assert_eq!(listed, "cli");
    assert_eq!(ok(servers), "[]");
    assert_eq!(after, "");
}
