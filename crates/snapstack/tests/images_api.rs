//! Image v2 against the real `snapstack serve`: bad input (one test each),
//! who may see and change what, JSON patches, paging and filters, data
//! upload/download with ranges and hashes, deactivation, tags, deletion and
//! sharing between projects.

mod common;

use common::{reply, Client, Server};
use md5::Md5;
use serde_json::{json, Value};
use sha2::{Digest, Sha512};

const V21_PATCH: &str = "application/openstack-images-v2.1-json-patch";
const V20_PATCH: &str = "application/openstack-images-v2.0-json-patch";

/// Bytes that no format inspector mistakes for anything but raw.
fn raw_data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) % 251) as u8 ^ 0x5a)
        .collect()
}

fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn new_image(client: &Client, name: &str) -> String {
    client.create_image(json!({"name": name, "disk_format": "raw", "container_format": "bare"}))
}

fn active_image(client: &Client, name: &str, data: &[u8]) -> String {
    let (id, r) = client.upload_image(name, "raw", data);
    r.expect_status(204);
    id
}

// ---- bad input ---------------------------------------------------------

#[test]
fn create_when_body_is_malformed_json_then_400_with_message() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");

    let r = alice.post_raw("/image/v2/images", "application/json", b"{\"name\": ");

    assert_eq!(r.status, 400);
    assert!(
        r.message().contains("not valid JSON"),
        "message: {}",
        r.message()
    );
}

#[test]
fn create_when_extra_property_not_a_string_then_400() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");

    let r = alice.post("/image/v2/images", json!({"name": "n", "hw_cpu_cores": 4}));

    assert_eq!(r.status, 400);
    assert!(
        r.message().contains("hw_cpu_cores"),
        "message: {}",
        r.message()
    );
}

#[test]
fn create_when_name_is_256_chars_then_400() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");

    let r = alice.post("/image/v2/images", json!({"name": "n".repeat(256)}));

    assert_eq!(r.status, 400);
    assert!(r.message().contains("255"), "message: {}", r.message());
}

#[test]
fn create_when_disk_format_unknown_then_400() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");

    let r = alice.post(
        "/image/v2/images",
        json!({"name": "n", "disk_format": "qcow3", "container_format": "bare"}),
    );

    assert_eq!(r.status, 400);
    assert!(
        r.message().contains("disk_format 'qcow3'"),
        "message: {}",
        r.message()
    );
}

#[test]
fn create_when_container_format_unknown_then_400() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");

    let r = alice.post(
        "/image/v2/images",
        json!({"name": "n", "disk_format": "raw", "container_format": "tarball"}),
    );

    assert_eq!(r.status, 400);
    assert!(
        r.message().contains("container_format 'tarball'"),
        "message: {}",
        r.message()
    );
}

#[test]
fn list_when_limit_negative_then_400() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");

    let r = alice.get("/image/v2/images?limit=-1");

    assert_eq!(r.status, 400);
    assert!(
        r.message().contains("limit '-1'"),
        "message: {}",
        r.message()
    );
}

#[test]
fn list_when_limit_not_a_number_then_400() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");

    let r = alice.get("/image/v2/images?limit=abc");

    assert_eq!(r.status, 400);
    assert!(
        r.message().contains("limit 'abc'"),
        "message: {}",
        r.message()
    );
}

#[test]
fn list_when_marker_is_unknown_uuid_then_400() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let unknown = "3b0e4d1c-5a4f-4c38-9d1e-0123456789ab";

    let r = alice.get(&format!("/image/v2/images?marker={unknown}"));

    assert_eq!(r.status, 400);
    assert!(r.message().contains(unknown), "message: {}", r.message());
}

#[test]
fn list_when_marker_not_a_uuid_then_400() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");

    let r = alice.get("/image/v2/images?marker=notauuid");

    assert_eq!(r.status, 400);
    assert!(r.message().contains("notauuid"), "message: {}", r.message());
}

#[test]
fn list_when_no_token_then_401() {
    let server = Server::start();

    let r = server.get_anonymous("/image/v2/images");

    assert_eq!(r.status, 401);
    assert!(
        r.message().contains("X-Auth-Token"),
        "message: {}",
        r.message()
    );
}

#[test]
fn create_when_caller_is_reader_then_403() {
    let server = Server::start();
    let reader = server.user_with_role("rita", "reader");

    let r = reader.post("/image/v2/images", json!({"name": "n"}));

    assert_eq!(r.status, 403);
    assert!(
        r.message().contains("member role"),
        "message: {}",
        r.message()
    );
}

#[test]
fn show_when_id_malformed_then_404() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");

    let r = alice.get("/image/v2/images/not-an-image-id");

    assert_eq!(r.status, 404);
    assert!(
        r.message().contains("not-an-image-id"),
        "message: {}",
        r.message()
    );
}

#[test]
fn patch_when_content_type_is_plain_json_then_415_with_accept_patch() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let id = new_image(&alice, "n");

    let r = alice.patch(
        &format!("/image/v2/images/{id}"),
        "application/json",
        json!([{"op": "add", "path": "/k", "value": "v"}]),
    );

    assert_eq!(r.status, 415);
    assert!(
        r.header("accept-patch")
            .is_some_and(|h| h.contains(V21_PATCH)),
        "headers: {:?}",
        r.headers
    );
}

#[test]
fn patch_when_status_replaced_then_403() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let id = new_image(&alice, "n");

    let r = alice.patch(
        &format!("/image/v2/images/{id}"),
        V21_PATCH,
        json!([{"op": "replace", "path": "/status", "value": "active"}]),
    );

    assert_eq!(r.status, 403);
    assert!(
        r.message().contains("read-only"),
        "message: {}",
        r.message()
    );
    assert_eq!(alice.image(&id)["status"], "queued");
}

// ---- who may do what ---------------------------------------------------

#[test]
fn delete_when_image_protected_then_403_and_image_kept() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let id = alice.create_image(json!({"name": "keep", "protected": true}));

    let r = alice.delete(&format!("/image/v2/images/{id}"));

    assert_eq!(r.status, 403);
    assert!(
        r.message().contains("protected"),
        "message: {}",
        r.message()
    );
    assert_eq!(alice.image(&id)["name"], "keep");
}

#[test]
fn patch_when_member_makes_image_public_then_403() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let id = new_image(&alice, "n");

    let r = alice.patch(
        &format!("/image/v2/images/{id}"),
        V21_PATCH,
        json!([{"op": "replace", "path": "/visibility", "value": "public"}]),
    );

    assert_eq!(r.status, 403);
    assert!(r.message().contains("admin"), "message: {}", r.message());
    assert_eq!(alice.image(&id)["visibility"], "shared");
}

#[test]
fn patch_when_admin_makes_image_public_then_200() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let id = new_image(&alice, "n");

    let r = server.admin().patch(
        &format!("/image/v2/images/{id}"),
        V21_PATCH,
        json!([{"op": "replace", "path": "/visibility", "value": "public"}]),
    );

    assert_eq!(r.status, 200, "body: {}", r.body);
    assert_eq!(r.body["visibility"], "public");
    assert_eq!(alice.image(&id)["visibility"], "public");
}

#[test]
fn other_project_private_image_when_shown_downloaded_patched_deleted_then_404() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let bob = server.user_with_role("bob", "member");
    let id = new_image(&alice, "secret");
    alice
        .patch(
            &format!("/image/v2/images/{id}"),
            V21_PATCH,
            json!([{"op": "replace", "path": "/visibility", "value": "private"}]),
        )
        .expect_status(200);
    alice
        .put_bytes(&format!("/image/v2/images/{id}/file"), &raw_data(4096))
        .expect_status(204);

    let show = bob.get(&format!("/image/v2/images/{id}"));
    let download = bob.get(&format!("/image/v2/images/{id}/file"));
    let patch = bob.patch(
        &format!("/image/v2/images/{id}"),
        V21_PATCH,
        json!([{"op": "add", "path": "/k", "value": "v"}]),
    );
    let delete = bob.delete(&format!("/image/v2/images/{id}"));

    assert_eq!(
        [show.status, download.status, patch.status, delete.status],
        [404, 404, 404, 404]
    );
    assert!(show.message().contains(&id), "message: {}", show.message());
    assert_eq!(alice.image(&id)["status"], "active");
}

// ---- uploads -----------------------------------------------------------

#[test]
fn upload_when_image_already_active_then_409() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let id = active_image(&alice, "n", &raw_data(4096));

    let r = alice.put_bytes(&format!("/image/v2/images/{id}/file"), &raw_data(8192));

    assert_eq!(r.status, 409);
    assert!(r.message().contains("active"), "message: {}", r.message());
    assert_eq!(alice.image(&id)["size"], 4096);
}

#[test]
fn upload_when_larger_than_size_cap_then_413_and_image_queued() {
    let server = Server::start_with(&["--image-size-cap", "65536"]);
    let alice = server.user_with_role("alice", "member");
    let id = new_image(&alice, "big");

    let r = alice.put_bytes(&format!("/image/v2/images/{id}/file"), &raw_data(65537));

    assert_eq!(r.status, 413);
    assert!(r.message().contains("65536"), "message: {}", r.message());
    assert_eq!(alice.image(&id)["status"], "queued");
    assert_eq!(server.pool_files(), Vec::<String>::new());
}

#[test]
fn upload_when_chunked_body_exceeds_size_cap_then_413_and_image_queued() {
    let server = Server::start_with(&["--image-size-cap", "65536"]);
    let alice = server.user_with_role("alice", "member");
    let id = new_image(&alice, "big");
    let body = std::io::Cursor::new(raw_data(200_000));

    let r = reply(
        alice
            .request("PUT", &format!("/image/v2/images/{id}/file"))
            .set("Content-Type", "application/octet-stream")
            .send(body),
    );

    assert_eq!(r.status, 413);
    assert!(r.message().contains("65536"), "message: {}", r.message());
    assert_eq!(alice.image(&id)["status"], "queued");
    assert_eq!(server.staging_files(), Vec::<String>::new());
    assert_eq!(server.pool_files(), Vec::<String>::new());
}

#[test]
fn upload_when_raw_data_then_checksum_hash_and_sizes_right() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let data = raw_data(300_000);

    let id = active_image(&alice, "n", &data);

    let img = alice.image(&id);
    assert_eq!(img["status"], "active");
    assert_eq!(img["checksum"], hex::encode(Md5::digest(&data)));
    assert_eq!(img["os_hash_algo"], "sha512");
    assert_eq!(img["os_hash_value"], hex::encode(Sha512::digest(&data)));
    assert_eq!(img["size"], 300_000);
    assert_eq!(img["virtual_size"], 300_000);
}

// ---- patches -----------------------------------------------------------

#[test]
fn patch_when_v2_1_dialect_add_then_property_set() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let id = new_image(&alice, "n");

    let r = alice.patch(
        &format!("/image/v2/images/{id}"),
        V21_PATCH,
        json!([{"op": "add", "path": "/k", "value": "v"}]),
    );

    assert_eq!(r.status, 200, "body: {}", r.body);
    assert_eq!(r.body["k"], "v");
    assert_eq!(alice.image(&id)["k"], "v");
}

#[test]
fn patch_when_v2_0_dialect_add_then_property_set() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let id = new_image(&alice, "n");

    let r = alice.patch(
        &format!("/image/v2/images/{id}"),
        V20_PATCH,
        json!([{"add": "/k", "value": "v"}]),
    );

    assert_eq!(r.status, 200, "body: {}", r.body);
    assert_eq!(r.body["k"], "v");
    assert_eq!(alice.image(&id)["k"], "v");
}

// ---- listing -----------------------------------------------------------

#[test]
fn list_when_walking_next_links_with_limit_2_then_every_image_once() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let mut created: Vec<String> = (0..5)
        .map(|i| new_image(&alice, &format!("img-{i}")))
        .collect();
    created.sort();

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut next = Some("/v2/images?limit=2".to_string());
    while let Some(path) = next {
        let page = alice.get(&format!("/image{path}")).expect_status(200);
        assert!(page.body["images"].as_array().unwrap().len() <= 2);
        seen.extend(ids(&page.body));
        next = page.body["next"].as_str().map(str::to_owned);
        pages += 1;
    }

    seen.sort();
    assert_eq!(seen, created);
    assert_eq!(pages, 3);
}

#[test]
fn list_when_filtered_by_name_status_or_tag_then_only_matches() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let tagged = alice.create_image(json!({"name": "alpha", "disk_format": "raw", "container_format": "bare", "tags": ["gold"]}));
    let uploaded = active_image(&alice, "beta", &raw_data(4096));
    new_image(&alice, "gamma");

    let by_name = alice.get("/image/v2/images?name=alpha").expect_status(200);
    let by_status = alice
        .get("/image/v2/images?status=active")
        .expect_status(200);
    let by_tag = alice.get("/image/v2/images?tag=gold").expect_status(200);

    assert_eq!(ids(&by_name.body), vec![tagged.clone()]);
    assert_eq!(ids(&by_status.body), [uploaded]);
    assert_eq!(ids(&by_tag.body), [tagged]);
}

// ---- downloads ---------------------------------------------------------

#[test]
fn download_when_whole_image_then_same_bytes_and_content_md5_is_checksum() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let data = raw_data(1_500_000);
    let id = active_image(&alice, "n", &data);

    let r = alice.get(&format!("/image/v2/images/{id}/file"));

    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1500000"));
    assert!(
        r.raw == data,
        "downloaded {} bytes differ from the {} uploaded",
        r.raw.len(),
        data.len()
    );
    assert_eq!(
        r.header("content-md5"),
        alice.image(&id)["checksum"].as_str()
    );
}

#[test]
fn download_when_range_10_to_19_then_206_with_those_bytes() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let data = raw_data(4096);
    let id = active_image(&alice, "n", &data);

    let r = alice.get_with(
        &format!("/image/v2/images/{id}/file"),
        "Range",
        "bytes=10-19",
    );

    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/4096"));
    assert_eq!(r.raw, data[10..20]);
}

#[test]
fn download_when_range_beyond_end_then_416() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let id = active_image(&alice, "n", &raw_data(4096));

    let r = alice.get_with(
        &format!("/image/v2/images/{id}/file"),
        "Range",
        "bytes=5000-5100",
    );

    assert_eq!(r.status, 416);
    assert!(r.message().contains("4096"), "message: {}", r.message());
}

#[test]
fn download_when_deactivated_then_403_for_member_and_works_after_reactivate() {
    let server = Server::start();
    let admin = server.admin();
    let alice = server.user_with_role("alice", "member");
    let data = raw_data(4096);
    let id = active_image(&alice, "n", &data);

    admin
        .post(
            &format!("/image/v2/images/{id}/actions/deactivate"),
            json!({}),
        )
        .expect_status(204);
    let while_deactivated = alice.get(&format!("/image/v2/images/{id}/file"));
    admin
        .post(
            &format!("/image/v2/images/{id}/actions/reactivate"),
            json!({}),
        )
        .expect_status(204);
    let after = alice.get(&format!("/image/v2/images/{id}/file"));

    assert_eq!(while_deactivated.status, 403);
    assert!(
        while_deactivated.message().contains("deactivated"),
        "message: {}",
        while_deactivated.message()
    );
    assert_eq!(after.status, 200);
    assert!(after.raw == data);
    assert_eq!(alice.image(&id)["status"], "active");
}

#[test]
fn deactivate_when_caller_is_member_of_owner_then_204_and_reader_403() {
    let server = Server::start();
    let project = server.admin().post(
        "/identity/v3/projects",
        json!({"project": {"name": "shared-project"}}),
    );
    let pid = project.body["project"]["id"].as_str().unwrap().to_string();
    let alice = server.user_in_project("alice", &pid, "shared-project", "member");
    let carol = server.user_in_project("carol", &pid, "shared-project", "reader");
    let id = active_image(&alice, "n", &raw_data(4096));

    let by_reader = carol.post(
        &format!("/image/v2/images/{id}/actions/deactivate"),
        json!({}),
    );
    let by_owner = alice.post(
        &format!("/image/v2/images/{id}/actions/deactivate"),
        json!({}),
    );

    assert_eq!(by_reader.status, 403);
    assert_eq!(by_owner.status, 204);
    assert_eq!(alice.image(&id)["status"], "deactivated");
}

// ---- tags, deletion ----------------------------------------------------

#[test]
fn tags_when_added_and_removed_then_image_shows_them() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let id = new_image(&alice, "n");

    alice
        .put_empty(&format!("/image/v2/images/{id}/tags/red"))
        .expect_status(204);
    alice
        .put_empty(&format!("/image/v2/images/{id}/tags/blue"))
        .expect_status(204);
    let both = alice.image(&id);
    alice
        .delete(&format!("/image/v2/images/{id}/tags/red"))
        .expect_status(204);
    let after_remove = alice.image(&id);

    assert_eq!(both["tags"], json!(["blue", "red"]));
    assert_eq!(after_remove["tags"], json!(["blue"]));
}

#[test]
fn delete_when_active_image_then_404_afterwards_and_file_gone() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let id = active_image(&alice, "n", &raw_data(4096));
    let before = server.pool_files();

    let r = alice.delete(&format!("/image/v2/images/{id}"));

    assert_eq!(r.status, 204);
    assert_eq!(before, vec![id.clone()]);
    assert_eq!(alice.get(&format!("/image/v2/images/{id}")).status, 404);
    assert_eq!(server.pool_files(), Vec::<String>::new());
}

// ---- sharing -----------------------------------------------------------

#[test]
fn shared_image_when_member_accepts_then_listed_for_member_project() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let bob = server.user_with_role("bob", "member");
    let bob_project = bob.project_id();
    let id = active_image(&alice, "shared-one", &raw_data(4096));
    alice
        .patch(
            &format!("/image/v2/images/{id}"),
            V21_PATCH,
            json!([{"op": "replace", "path": "/visibility", "value": "shared"}]),
        )
        .expect_status(200);

    let added = alice.post(
        &format!("/image/v2/images/{id}/members"),
        json!({"member": bob_project}),
    );
    let shown_by_id = bob.get(&format!("/image/v2/images/{id}"));
    let listed_before = bob.get("/image/v2/images").expect_status(200);
    let accepted = reply(
        bob.request(
            "PUT",
            &format!("/image/v2/images/{id}/members/{bob_project}"),
        )
        .send_json(json!({"status": "accepted"})),
    );
    let listed_after = bob.get("/image/v2/images").expect_status(200);

    assert_eq!(added.status, 200, "body: {}", added.body);
    assert_eq!(added.body["status"], "pending");
    assert_eq!(shown_by_id.status, 200);
    assert_eq!(shown_by_id.body["name"], "shared-one");
    assert_eq!(ids(&listed_before.body), Vec::<String>::new());
    assert_eq!(accepted.status, 200, "body: {}", accepted.body);
    assert_eq!(accepted.body["status"], "accepted");
    assert_eq!(ids(&listed_after.body), [id]);
}
