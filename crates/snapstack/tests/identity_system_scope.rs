//! Keystone's system scope against the real `snapstack serve`: role
//! assignments on the system (`/v3/system/users/{u}/roles/{r}`), tokens scoped
//! to it, and user attributes Keystone keeps as given (`extra`).

mod common;

use common::{password_auth, Server};
use serde_json::json;

fn role_id(admin: &common::Client, name: &str) -> String {
    let r = admin.get(&format!("/identity/v3/roles?name={name}"));
    r.expect_status(200).body["roles"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn new_user(admin: &common::Client, name: &str) -> String {
    let r = admin.post(
        "/identity/v3/users",
        json!({"user": {"name": name, "password": format!("pw-{name}")}}),
    );
    r.expect_status(201).body["user"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn system_auth(user: &str, password: &str) -> serde_json::Value {
    let mut body = password_auth(user, password, None);
    body["auth"]["scope"] = json!({"system": {"all": true}});
    body
}

#[test]
fn system_grant_when_admin_assigns_reader_then_listed_checked_and_token_carries_it() {
    let server = Server::start();
    let admin = server.admin();
    let uid = new_user(&admin, "sysreader");
    let reader = role_id(&admin, "reader");
    let grant = format!("/identity/v3/system/users/{uid}/roles/{reader}");

    admin.put_empty(&grant).expect_status(204);
    let listed = admin.get(&format!("/identity/v3/system/users/{uid}/roles"));
    let checked = admin.get(&grant);
    let token = server.issue_token(system_auth("sysreader", "pw-sysreader"));

    assert_eq!(listed.expect_status(200).body["roles"][0]["name"], "reader");
    assert_eq!(checked.status, 204);
    let token = token.expect_status(201);
    assert_eq!(token.body["token"]["system"], json!({"all": true}));
    assert_eq!(token.body["token"]["roles"][0]["name"], "reader");
    assert!(token.body["token"].get("project").is_none());
}

#[test]
fn system_token_when_user_has_no_system_role_then_401() {
    let server = Server::start();
    new_user(&server.admin(), "plain");

    let r = server.issue_token(system_auth("plain", "pw-plain"));

    assert_eq!(r.status, 401, "body: {}", r.body);
}

#[test]
fn system_grant_when_member_assigns_then_403_and_revoked_grant_then_404() {
    let server = Server::start();
    let admin = server.admin();
    let member = server.user_with_role("mallory", "member");
    let uid = new_user(&admin, "target");
    let grant = format!(
        "/identity/v3/system/users/{uid}/roles/{}",
        role_id(&admin, "admin")
    );

    let by_member = member.put_empty(&grant);
    admin.put_empty(&grant).expect_status(204);
    admin.delete(&grant).expect_status(204);
    let after = admin.get(&grant);

    assert_eq!(by_member.status, 403);
    assert_eq!(after.status, 404);
}

#[test]
fn system_token_when_used_on_a_project_service_then_401() {
    let server = Server::start();
    let admin = server.admin();
    let uid = new_user(&admin, "sysadmin");
    admin
        .put_empty(&format!(
            "/identity/v3/system/users/{uid}/roles/{}",
            role_id(&admin, "admin")
        ))
        .expect_status(204);
    let token = server
        .issue_token(system_auth("sysadmin", "pw-sysadmin"))
        .expect_status(201);
    let token = token.header("x-subject-token").unwrap().to_string();

    let servers = common::reply(
        server
            .anonymous("GET", "/compute/v2.1/servers")
            .set("X-Auth-Token", &token)
            .call(),
    );

    assert_eq!(servers.status, 401, "body: {}", servers.body);
}

#[test]
fn user_update_when_unknown_attribute_given_then_kept_and_shown() {
    let server = Server::start();
    let admin = server.admin();
    let uid = new_user(&admin, "extra");

    let updated = admin.patch(
        &format!("/identity/v3/users/{uid}"),
        "application/json",
        json!({"user": {"project_id": "p-123", "color": "blue"}}),
    );
    let shown = admin.get(&format!("/identity/v3/users/{uid}"));

    assert_eq!(
        updated.expect_status(200).body["user"]["project_id"],
        "p-123"
    );
    let shown = shown.expect_status(200);
    assert_eq!(shown.body["user"]["project_id"], "p-123");
    assert_eq!(shown.body["user"]["color"], "blue");
}
