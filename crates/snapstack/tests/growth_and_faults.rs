//! What nobody else bounds, against the real `snapstack serve`: expired
//! tokens leave the database (`--token-purge-interval`), and a server's fault
//! shows non-admins a message without host paths or tool output, while the
//! admin also sees its `details` (as Nova).

mod common;

use std::time::{Duration, Instant};

use common::{reply, run, Server};
use serde_json::json;

/// Rows of the tokens table, read straight from the service's database.
fn token_rows(server: &Server) -> usize {
    let db = server.data_dir().join("snapstack.db");
    let script = "import sqlite3, sys\n\
                  db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
                  print(db.execute('SELECT COUNT(*) FROM tokens').fetchone()[0])\n";
    run("python3", &["-c", script, db.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap()
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn tokens_when_expired_then_purged_from_the_database_and_refused() {
    let server = Server::start_with(&["--token-ttl", "2", "--token-purge-interval", "1"]);
    let clients: Vec<_> = (0..5).map(|_| server.admin()).collect();
    let issued = token_rows(&server);

    wait_until("the expired tokens' purge", || token_rows(&server) == 0);
    let expired = reply(
        server
            .anonymous("GET", "/compute/v2.1/servers")
            .set("X-Auth-Token", &clients[0].token)
            .call(),
    );

    assert!(issued >= 5, "{issued} tokens before");
    assert_eq!(expired.status, 401);
    assert!(server.log().contains("expired tokens purged"));
}

#[test]
fn server_fault_when_member_looks_then_no_paths_or_tool_output_and_admin_sees_details() {
    let server = Server::start();
    let admin = server.admin();
    let image = server.add_guest_image_and_flavor();
    admin
        .patch(
            &format!("/image/v2/images/{image}"),
            "application/openstack-images-v2.1-json-patch",
            json!([{"op": "replace", "path": "/visibility", "value": "public"}]),
        )
        .expect_status(200);
    let member = server.user_with_role("faulty", "member");
    // The image's data vanishes behind the service's back: the boot fails in qemu-img.
    let layer = admin.image(&image)["direct_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("file://")
        .to_string();
    std::fs::remove_file(&layer).unwrap();

    let created = member.post(
        "/compute/v2.1/servers",
        json!({"server": {"name": "broken", "imageRef": image, "flavorRef": "tiny", "networks": "none"}}),
    );
    let vm = created.expect_status(202).body["server"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/compute/v2.1/servers/{vm}");
    wait_until("the server's fault", || {
        member.get(&path).body["server"]["status"] == "ERROR"
    });
    let seen_by_member = member.get(&path).body["server"]["fault"].clone();
    let seen_by_admin = admin.get(&path).body["server"]["fault"].clone();

    let message = seen_by_member["message"].as_str().unwrap();
    assert!(!message.is_empty());
    assert!(!message.contains('/'), "a host path leaks: {message}");
    assert!(!message.contains('\n'), "tool output leaks: {message}");
    assert!(seen_by_member.get("details").is_none(), "{seen_by_member}");
    assert!(
        seen_by_admin["details"].as_str().unwrap().contains(&layer),
        "the admin sees the whole story: {seen_by_admin}"
    );
}
