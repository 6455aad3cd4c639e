//! Acceptance: the real `openstack` CLI (python-openstackclient) against
//! `snapstack serve` — identity and the image service, as a user would.

mod common;

use common::{fails, make_qcow2, ok, run, Server};
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};

fn json(out: String) -> Value {
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A qcow2 with real data in it, so sizes and hashes are not trivial.
fn guest_like_qcow2(dir: &std::path::Path) -> std::path::PathBuf {
    let raw = dir.join("seed.raw");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(&raw, data).unwrap();
    let qcow2 = dir.join("guest.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            qcow2.to_str().unwrap(),
        ],
    );
    run(
        "qemu-img",
        &[
            "resize",
            "-q",
            "-f",
            "qcow2",
            qcow2.to_str().unwrap(),
            "64M",
        ],
    );
    qcow2
}

#[test]
fn token_issue_when_right_password_then_project_scoped_token() {
    let server = Server::start();

    let token = json(ok(server.openstack(&["token", "issue", "-f", "json"])));

    assert!(!token["id"].as_str().unwrap().is_empty());
    assert_eq!(token["project_id"].as_str().unwrap().len(), 32);
}

#[test]
fn token_issue_when_wrong_password_then_401() {
    let server = Server::start();

    let err = fails(server.openstack_as("admin", "wrong", "admin", &["token", "issue"]));

    assert!(err.contains("401"), "stderr: {err}");
}

#[test]
fn image_create_when_qcow2_file_then_active_with_hashes_and_sizes() {
    let server = Server::start();
    let file = guest_like_qcow2(server.dir.path());
    let bytes = std::fs::read(&file).unwrap();

    let img = json(ok(server.openstack(&[
        "image",
        "create",
        "--file",
        file.to_str().unwrap(),
        "--disk-format",
        "qcow2",
        "--container-format",
        "bare",
        "-f",
        "json",
        "guest",
    ])));

    assert_eq!(img["status"], "active");
    assert_eq!(img["checksum"], hex::encode(md5::Md5::digest(&bytes)));
    assert_eq!(img["size"], bytes.len() as u64);
    assert_eq!(img["virtual_size"], 64 * 1024 * 1024);
    let shown = json(ok(
        server.openstack(&["image", "show", "guest", "-f", "json"])
    ));
    let props = &shown["properties"];
    assert_eq!(props["os_hash_algo"], "sha512");
    assert_eq!(props["os_hash_value"], hex::encode(Sha512::digest(&bytes)));
}

#[test]
fn image_list_when_filtered_and_paged_then_matching_images() {
    let server = Server::start();
    let file = make_qcow2(server.dir.path(), "small.qcow2", "1M");
    for name in ["a1", "a2", "a3"] {
        ok(server.openstack(&[
            "image",
            "create",
            "--file",
            file.to_str().unwrap(),
            "--disk-format",
            "qcow2",
            "--container-format",
            "bare",
            name,
        ]));
    }
    // Without --file and with stdin not a terminal, the CLI uploads stdin:
    // make the queued (data-less) image through the API instead.
    server.admin().create_image(
        serde_json::json!({"name": "empty", "disk_format": "raw", "container_format": "bare"}),
    );

    let by_name =
        ok(server.openstack(&["image", "list", "--name", "a2", "-f", "value", "-c", "Name"]));
    let queued = ok(server.openstack(&[
        "image", "list", "--status", "queued", "-f", "value", "-c", "Name",
    ]));
    let page: Vec<Value> = serde_json::from_str(&ok(
        server.openstack(&["image", "list", "--limit", "2", "-f", "json"])
    ))
    .unwrap();
    let newest_first = ok(server.openstack(&["image", "list", "-f", "value", "-c", "Name"]));
    let marker = page[0]["ID"].as_str().unwrap().to_string();
    let after = ok(server.openstack(&[
        "image", "list", "--limit", "2", "--marker", &marker, "-f", "value", "-c", "Name",
    ]));

    assert_eq!(by_name, "a2");
    assert_eq!(queued, "empty");
    assert_eq!(newest_first.lines().count(), 4);
    assert!(
        after.lines().count() <= 2 && !after.contains(page[0]["Name"].as_str().unwrap()),
        "after marker: {after}"
    );
}

#[test]
fn image_properties_when_set_and_unset_then_shown_and_gone() {
    let server = Server::start();
    ok(server.openstack(&[
        "image",
        "create",
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "img",
    ]));

    ok(server.openstack(&["image", "set", "--property", "os_distro=debian", "img"]));
    let with = json(ok(server.openstack(&["image", "show", "img", "-f", "json"])));
    let listed = ok(server.openstack(&[
        "image",
        "list",
        "--property",
        "os_distro=debian",
        "-f",
        "value",
        "-c",
        "Name",
    ]));
    ok(server.openstack(&["image", "unset", "--property", "os_distro", "img"]));
    let without = json(ok(server.openstack(&["image", "show", "img", "-f", "json"])));
    let listed_after = ok(server.openstack(&[
        "image",
        "list",
        "--property",
        "os_distro=debian",
        "-f",
        "value",
        "-c",
        "Name",
    ]));

    assert_eq!(with["properties"]["os_distro"], "debian");
    assert_eq!(listed, "img");
    assert!(without["properties"].get("os_distro").is_none());
    assert_eq!(listed_after, "");
}

#[test]
fn image_delete_when_protected_then_403_until_unprotected() {
    let server = Server::start();
    let file = make_qcow2(server.dir.path(), "small.qcow2", "1M");
    ok(server.openstack(&[
        "image",
        "create",
        "--file",
        file.to_str().unwrap(),
        "--disk-format",
        "qcow2",
        "--container-format",
        "bare",
        "img",
    ]));
    ok(server.openstack(&["image", "set", "--protected", "img"]));

    let err = fails(server.openstack(&["image", "delete", "img"]));
    let still = ok(server.openstack(&["image", "show", "img", "-f", "value", "-c", "status"]));
    ok(server.openstack(&["image", "set", "--unprotected", "img"]));
    ok(server.openstack(&["image", "delete", "img"]));

    assert!(err.contains("403"), "stderr: {err}");
    assert_eq!(still, "active");
    assert!(fails(server.openstack(&["image", "show", "img"])).contains("No Image found"));
    let pool: Vec<_> = std::fs::read_dir(server.data_dir().join("pool/images"))
        .unwrap()
        .collect();
    assert!(pool.is_empty(), "pool still holds {pool:?}");
}

#[test]
fn image_save_when_downloaded_then_byte_identical() {
    let server = Server::start();
    let file = guest_like_qcow2(server.dir.path());
    ok(server.openstack(&[
        "image",
        "create",
        "--file",
        file.to_str().unwrap(),
        "--disk-format",
        "qcow2",
        "--container-format",
        "bare",
        "img",
    ]));
    let out = server.dir.path().join("saved.qcow2");

    ok(server.openstack(&["image", "save", "--file", out.to_str().unwrap(), "img"]));

    assert_eq!(
        Sha256::digest(std::fs::read(&out).unwrap()),
        Sha256::digest(std::fs::read(&file).unwrap())
    );
}

#[test]
fn projects_when_users_and_roles_assigned_then_isolated_and_reader_read_only() {
    let server = Server::start();
    let file = make_qcow2(server.dir.path(), "small.qcow2", "1M");
    let private_id = ok(server.openstack(&[
        "image",
        "create",
        "--file",
        file.to_str().unwrap(),
        "--disk-format",
        "qcow2",
        "--container-format",
        "bare",
        "--private",
        "-f",
        "value",
        "-c",
        "id",
        "private-a",
    ]));
    ok(server.openstack(&["project", "create", "project-b"]));
    ok(server.openstack(&[
        "user",
        "create",
        "--project",
        "project-b",
        "--password",
        "pw-member",
        "member-b",
    ]));
    ok(server.openstack(&[
        "role",
        "add",
        "--user",
        "member-b",
        "--project",
        "project-b",
        "member",
    ]));
    ok(server.openstack(&[
        "user",
        "create",
        "--project",
        "project-b",
        "--password",
        "pw-reader",
        "reader-b",
    ]));
    ok(server.openstack(&[
        "role",
        "add",
        "--user",
        "reader-b",
        "--project",
        "project-b",
        "reader",
    ]));

    let hidden = fails(server.openstack_as(
        "member-b",
        "pw-member",
        "project-b",
        &["image", "show", &private_id],
    ));
    let member_list = ok(server.openstack_as(
        "member-b",
        "pw-member",
        "project-b",
        &["image", "list", "-f", "value", "-c", "Name"],
    ));
    let reader_create = fails(server.openstack_as(
        "reader-b",
        "pw-reader",
        "project-b",
        &[
            "image",
            "create",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "r",
        ],
    ));
    let member_create = ok(server.openstack_as(
        "member-b",
        "pw-member",
        "project-b",
        &[
            "image",
            "create",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "-f",
            "value",
            "-c",
            "name",
            "m",
        ],
    ));
    let assignments = ok(server.openstack(&[
        "role",
        "assignment",
        "list",
        "--names",
        "--project",
        "project-b",
        "-f",
        "value",
        "-c",
        "Role",
        "-c",
        "User",
    ]));

    assert!(hidden.contains("No Image found"), "stderr: {hidden}");
    assert!(!member_list.contains("private-a"));
    assert!(reader_create.contains("403"), "stderr: {reader_create}");
    assert_eq!(member_create, "m");
    assert!(
        assignments.contains("member member-b@Default"),
        "assignments: {assignments}"
    );
    assert!(
        assignments.contains("reader reader-b@Default"),
        "assignments: {assignments}"
    );
}
