//! Identity v3 against the real `snapstack serve`: tokens (issue, validate,
//! revoke, expiry, restarts), users/projects/role assignments, version
//! documents and request ids.

mod common;

use std::time::Duration;

use common::{password_auth, reply, Server, ADMIN_PASSWORD};
use serde_json::{json, Value};

fn catalog_types(token: &Value) -> Vec<String> {
    let mut types: Vec<String> = token["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap().to_string())
        .collect();
    types.sort();
    types
}

fn catalog_urls(token: &Value) -> Vec<String> {
    token["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["endpoints"].as_array().unwrap().iter())
        .map(|e| e["url"].as_str().unwrap().to_string())
        .collect()
}

/// Every `href` of a `rel: self` link anywhere in `v`.
fn self_links(v: &Value) -> Vec<String> {
    match v {
        Value::Object(o) if o.get("rel") == Some(&json!("self")) => o
            .get("href")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .into_iter()
            .collect(),
        Value::Object(o) => o.values().flat_map(self_links).collect(),
        Value::Array(a) => a.iter().flat_map(self_links).collect(),
        _ => Vec::new(),
    }
}

// ---- tokens ------------------------------------------------------------

#[test]
fn token_issue_when_password_right_then_201_with_subject_token_and_catalog() {
    let server = Server::start();

    let r = server.issue_token(password_auth("admin", ADMIN_PASSWORD, Some("admin")));

    let r = r.expect_status(201);
    assert!(
        r.header("x-subject-token").is_some_and(|t| t.len() >= 32),
        "headers: {:?}",
        r.headers
    );
    assert_eq!(r.body["token"]["user"]["name"], "admin");
    assert_eq!(r.body["token"]["project"]["name"], "admin");
    assert_eq!(
        catalog_types(&r.body["token"]),
        [
            "block-storage",
            "compute",
            "identity",
            "image",
            "network",
            "volumev3"
        ]
    );
    let urls = catalog_urls(&r.body["token"]);
    assert!(
        urls.iter().all(|u| u.starts_with(&server.url)),
        "catalog urls {urls:?} not under {}",
        server.url
    );
}

#[test]
fn token_issue_when_password_wrong_then_401() {
    let server = Server::start();

    let r = server.issue_token(password_auth("admin", "not-the-password", Some("admin")));

    assert_eq!(r.status, 401);
    assert!(
        r.message().contains("requires authentication"),
        "message: {}",
        r.message()
    );
    assert!(r.header("www-authenticate").is_some());
}

#[test]
fn token_issue_when_user_unknown_then_401() {
    let server = Server::start();

    let r = server.issue_token(password_auth("nobody", ADMIN_PASSWORD, Some("admin")));

    assert_eq!(r.status, 401);
    assert!(
        r.message().contains("requires authentication"),
        "message: {}",
        r.message()
    );
    let wrong_password =
        server.issue_token(password_auth("admin", "not-the-password", Some("admin")));
    assert_eq!(
        r.message(),
        wrong_password.message(),
        "an unknown user must look like a wrong password"
    );
}

#[test]
fn token_validate_when_subject_revoked_then_404() {
    let server = Server::start();
    let admin = server.admin();
    let alice = server.user_with_role("alice", "member");
    let revoke = alice
        .request("DELETE", "/identity/v3/auth/tokens")
        .set("X-Subject-Token", &alice.token);
    reply(revoke.call()).expect_status(204);

    let r = reply(
        admin
            .request("GET", "/identity/v3/auth/tokens")
            .set("X-Subject-Token", &alice.token)
            .call(),
    );

    assert_eq!(r.status, 404);
    assert!(r.message().contains("revoked"), "message: {}", r.message());
}

#[test]
fn token_validate_when_valid_then_200_with_same_user() {
    let server = Server::start();
    let admin = server.admin();
    let alice = server.user_with_role("alice", "member");

    let r = reply(
        admin
            .request("GET", "/identity/v3/auth/tokens")
            .set("X-Subject-Token", &alice.token)
            .call(),
    );

    let r = r.expect_status(200);
    assert_eq!(r.body["token"]["user"]["name"], "alice");
    assert_eq!(r.body["token"]["project"]["name"], "alice-project");
    assert_eq!(r.header("x-subject-token"), Some(alice.token.as_str()));
}

#[test]
fn token_revoke_when_deleted_then_401_even_after_restart() {
    let mut server = Server::start();
    let alice = server.user_with_role("alice", "member");

    let r = reply(
        alice
            .request("DELETE", "/identity/v3/auth/tokens")
            .set("X-Subject-Token", &alice.token)
            .call(),
    );

    assert_eq!(r.status, 204);
    let after = alice.get("/image/v2/images");
    assert_eq!(after.status, 401);
    assert!(
        after.message().contains("revoked"),
        "message: {}",
        after.message()
    );
    server.restart();
    let after_restart = alice.get("/image/v2/images");
    assert_eq!(after_restart.status, 401);
    assert!(
        after_restart.message().contains("revoked"),
        "message: {}",
        after_restart.message()
    );
}

#[test]
fn token_use_when_expired_then_401() {
    let server = Server::start_with(&["--token-ttl", "1"]);
    let admin = server.admin();

    std::thread::sleep(Duration::from_secs(2));
    let r = admin.get("/image/v2/images");

    assert_eq!(r.status, 401);
    assert!(r.message().contains("expired"), "message: {}", r.message());
}

#[test]
fn token_use_when_server_restarted_then_still_valid() {
    let mut server = Server::start();
    let admin = server.admin();

    server.restart();
    let r = admin.get("/identity/v3/projects");

    let r = r.expect_status(200);
    assert!(r.body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "admin"));
}

#[test]
fn token_issue_when_user_has_no_role_on_project_then_401() {
    let server = Server::start();
    let admin = server.admin();
    admin
        .post(
            "/identity/v3/projects",
            json!({"project": {"name": "elsewhere"}}),
        )
        .expect_status(201);
    server.user_with_role("bob", "member");

    let r = server.issue_token(password_auth("bob", "pw-bob", Some("elsewhere")));

    assert_eq!(r.status, 401);
    assert!(r.message().contains("no role"), "message: {}", r.message());
}

// ---- users, projects, roles --------------------------------------------

#[test]
fn assignment_when_admin_creates_project_user_and_role_then_user_gets_scoped_token() {
    let server = Server::start();
    let admin = server.admin();
    let project = admin
        .post(
            "/identity/v3/projects",
            json!({"project": {"name": "team"}}),
        )
        .expect_status(201);
    let pid = project.body["project"]["id"].as_str().unwrap().to_string();
    let user = admin
        .post(
            "/identity/v3/users",
            json!({"user": {"name": "carol", "password": "carol-pw"}}),
        )
        .expect_status(201);
    let uid = user.body["user"]["id"].as_str().unwrap().to_string();
    let rid = admin.get("/identity/v3/roles?name=member").body["roles"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let assigned = admin.put_empty(&format!(
        "/identity/v3/projects/{pid}/users/{uid}/roles/{rid}"
    ));

    assert_eq!(assigned.status, 204);
    let listed = admin
        .get(&format!(
            "/identity/v3/role_assignments?user.id={uid}&include_names"
        ))
        .expect_status(200);
    assert_eq!(listed.body["role_assignments"][0]["role"]["name"], "member");
    assert_eq!(
        listed.body["role_assignments"][0]["scope"]["project"]["id"],
        pid
    );
    let token = server
        .issue_token(password_auth("carol", "carol-pw", Some("team")))
        .expect_status(201);
    assert_eq!(token.body["token"]["project"]["id"], pid);
    let roles: Vec<&str> = token.body["token"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        roles.contains(&"member") && !roles.contains(&"admin"),
        "roles: {roles:?}"
    );
}

#[test]
fn user_create_when_caller_not_admin_then_403() {
    let server = Server::start();
    let member = server.user_with_role("dave", "member");

    let r = member.post(
        "/identity/v3/users",
        json!({"user": {"name": "mallory", "password": "x"}}),
    );

    assert_eq!(r.status, 403);
    assert!(
        r.message().contains("identity:create_user"),
        "message: {}",
        r.message()
    );
}

// ---- version documents and request ids ---------------------------------

#[test]
fn version_documents_when_unauthenticated_then_200_or_300_with_self_links_under_server() {
    let server = Server::start();
    let paths = [
        "/identity",
        "/identity/v3",
        "/image",
        "/compute",
        "/compute/v2.1",
        "/volume",
        "/volume/v3",
    ];

    let replies: Vec<_> = paths.iter().map(|p| (p, server.get_anonymous(p))).collect();

    for (path, r) in replies {
        // Keystone, Glance and Cinder answer their roots with 300 Multiple Choices.
        let expected = if ["/identity", "/image", "/volume"].contains(path) {
            300
        } else {
            200
        };
        assert_eq!(
            r.status,
            expected,
            "{path}: {}",
            String::from_utf8_lossy(&r.raw)
        );
        let links = self_links(&r.body);
        assert!(!links.is_empty(), "{path} has no self link: {}", r.body);
        assert!(
            links.iter().all(|l| l.starts_with(&server.url)),
            "{path}: self links {links:?}"
        );
    }
}

#[test]
fn request_id_when_any_response_then_header_starts_with_req() {
    let server = Server::start();
    let admin = server.admin();

    let replies = [
        server.issue_token(password_auth("admin", ADMIN_PASSWORD, Some("admin"))),
        server.issue_token(password_auth("admin", "wrong", Some("admin"))),
        server.get_anonymous("/identity/v3"),
        server.get_anonymous("/image/v2/images"),
        server.get_anonymous("/no/such/api"),
        admin.get("/identity/v3/projects"),
        admin.get("/image/v2/images"),
        admin.post_raw("/image/v2/images", "application/json", b"{not json"),
    ];

    for r in replies {
        let id = r
            .header("x-openstack-request-id")
            .unwrap_or_default()
            .to_string();
        assert!(
            id.starts_with("req-") && id.len() > 10,
            "status {} request id {id:?}",
            r.status
        );
    }
}
