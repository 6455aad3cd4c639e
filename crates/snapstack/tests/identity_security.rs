//! Identity hardening against the real `snapstack serve`: users without a
//! password, tokens that die with their user, project or password, lockout
//! of failed logins, the minimum password length, and Keystone's default
//! policies on users, projects and role checks.

mod common;

use std::time::Duration;

use common::{password_auth, reply, Client, Server};
use serde_json::json;

/// The user id behind a client's token.
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

fn create_user(admin: &Client, body: serde_json::Value) -> String {
    let r = admin.post("/identity/v3/users", json!({ "user": body }));
    r.expect_status(201).body["user"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

// ---- passwords -----------------------------------------------------------

#[test]
fn login_when_user_has_no_password_then_401_even_with_empty_password() {
    let server = Server::start();
    create_user(&server.admin(), json!({"name": "nopw"}));

    let r = server.issue_token(password_auth("nopw", "", None));

    assert_eq!(r.status, 401);
}

#[test]
fn user_create_when_password_shorter_than_minimum_then_400() {
    let server = Server::start_with(&["--min-password-length", "10"]);
    let admin = server.admin();

    let short = admin.post(
        "/identity/v3/users",
        json!({"user": {"name": "shorty", "password": "123456789"}}),
    );
    let long = admin.post(
        "/identity/v3/users",
        json!({"user": {"name": "longer", "password": "1234567890"}}),
    );

    assert_eq!(short.status, 400, "body: {}", short.body);
    assert_eq!(long.status, 201);
}

#[test]
fn login_when_failures_reach_lockout_then_locked_until_duration_passes() {
    let server =
        Server::start_with(&["--lockout-failure-attempts", "3", "--lockout-duration", "3"]);
    server.user_with_role("eve", "member");
    for _ in 0..3 {
        assert_eq!(server.try_login("eve", "wrong", "eve-project"), Err(401));
    }

    let locked = server.issue_token(password_auth("eve", "pw-eve", Some("eve-project")));
    std::thread::sleep(Duration::from_secs(4));
    let after = server.try_login("eve", "pw-eve", "eve-project");

    assert_eq!(locked.status, 401);
    assert!(locked.message().contains("locked"), "{}", locked.message());
    assert!(after.is_ok(), "{after:?}");
}

// ---- token invalidation --------------------------------------------------

#[test]
fn token_when_user_disabled_then_401_and_stays_revoked_after_reenable() {
    let server = Server::start();
    let member = server.user_with_role("dan", "member");
    let uid = user_id(&member);
    member.get("/image/v2/images").expect_status(200);
    let admin = server.admin();

    admin
        .patch(
            &format!("/identity/v3/users/{uid}"),
            "application/json",
            json!({"user": {"enabled": false}}),
        )
        .expect_status(200);
    let disabled = member.get("/image/v2/images");
    admin
        .patch(
            &format!("/identity/v3/users/{uid}"),
            "application/json",
            json!({"user": {"enabled": true}}),
        )
        .expect_status(200);
    let reenabled = member.get("/image/v2/images");

    assert_eq!(disabled.status, 401);
    assert_eq!(reenabled.status, 401);
}

#[test]
fn token_when_project_disabled_then_401() {
    let server = Server::start();
    let member = server.user_with_role("pat", "member");
    let pid = member.project_id();

    server
        .admin()
        .patch(
            &format!("/identity/v3/projects/{pid}"),
            "application/json",
            json!({"project": {"enabled": false}}),
        )
        .expect_status(200);

    assert_eq!(member.get("/image/v2/images").status, 401);
}

#[test]
fn token_when_user_deleted_then_401() {
    let server = Server::start();
    let member = server.user_with_role("del", "member");
    let uid = user_id(&member);

    server
        .admin()
        .delete(&format!("/identity/v3/users/{uid}"))
        .expect_status(204);

    assert_eq!(member.get("/image/v2/images").status, 401);
}

#[test]
fn token_when_admin_changes_password_then_401_and_new_password_works() {
    let server = Server::start();
    let member = server.user_with_role("cat", "member");
    let uid = user_id(&member);

    server
        .admin()
        .patch(
            &format!("/identity/v3/users/{uid}"),
            "application/json",
            json!({"user": {"password": "brand-new-pw"}}),
        )
        .expect_status(200);

    assert_eq!(member.get("/image/v2/images").status, 401);
    assert!(server
        .try_login("cat", "brand-new-pw", "cat-project")
        .is_ok());
}

#[test]
fn own_password_change_when_original_right_then_204_and_old_tokens_401() {
    let server = Server::start();
    let member = server.user_with_role("own", "member");
    let uid = user_id(&member);

    let wrong = reply(
        server
            .anonymous("POST", &format!("/identity/v3/users/{uid}/password"))
            .send_json(json!({"user": {"original_password": "nope", "password": "next-pw-1"}})),
    );
    let right = reply(
        server
            .anonymous("POST", &format!("/identity/v3/users/{uid}/password"))
            .send_json(json!({"user": {"original_password": "pw-own", "password": "next-pw-1"}})),
    );

    assert_eq!(wrong.status, 401);
    assert_eq!(right.status, 204);
    assert_eq!(member.get("/image/v2/images").status, 401);
    assert_eq!(server.try_login("own", "pw-own", "own-project"), Err(401));
}

// ---- policies --------------------------------------------------------------

#[test]
fn users_list_when_member_then_403_but_self_readable() {
    let server = Server::start();
    let member = server.user_with_role("mia", "member");
    let uid = user_id(&member);
    let admin_id = user_id(&server.admin());

    let list = member.get("/identity/v3/users");
    let me = member.get(&format!("/identity/v3/users/{uid}"));
    let other = member.get(&format!("/identity/v3/users/{admin_id}"));
    let my_projects = member.get(&format!("/identity/v3/users/{uid}/projects"));
    let their_projects = member.get(&format!("/identity/v3/users/{admin_id}/projects"));

    assert_eq!(list.status, 403);
    assert_eq!(me.status, 200);
    assert_eq!(other.status, 403);
    assert_eq!(my_projects.status, 200);
    assert_eq!(
        my_projects.body["projects"][0]["name"],
        json!("mia-project")
    );
    assert_eq!(their_projects.status, 403);
}

#[test]
fn projects_when_member_then_only_own_project_readable() {
    let server = Server::start();
    let member = server.user_with_role("pam", "member");
    let own = member.project_id();
    let admin_project = server.admin().project_id();

    assert_eq!(member.get("/identity/v3/projects").status, 403);
    assert_eq!(
        member.get(&format!("/identity/v3/projects/{own}")).status,
        200
    );
    assert_eq!(
        member
            .get(&format!("/identity/v3/projects/{admin_project}"))
            .status,
        403
    );
    assert_eq!(member.get("/identity/v3/auth/projects").status, 200);
}

#[test]
fn role_check_when_reader_probes_other_user_then_403() {
    let server = Server::start();
    let admin = server.admin();
    let reader = server.user_with_role("rita", "reader");
    let admin_id = user_id(&admin);
    let admin_project = admin.project_id();
    let rid = admin.get("/identity/v3/roles?name=admin").body["roles"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/identity/v3/projects/{admin_project}/users/{admin_id}/roles/{rid}");

    let probe = reply(reader.request("HEAD", &path).call());
    let list = reader.get(&format!(
        "/identity/v3/projects/{admin_project}/users/{admin_id}/roles"
    ));
    let assignments = reader.get("/identity/v3/role_assignments");
    let roles = reader.get("/identity/v3/roles");
    let by_admin = reply(admin.request("HEAD", &path).call());

    assert_eq!(probe.status, 403);
    assert_eq!(list.status, 403);
    assert_eq!(assignments.status, 403);
    assert_eq!(roles.status, 403);
    assert_eq!(by_admin.status, 204);
}
