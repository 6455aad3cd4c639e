//! Downloads of snapshot images (a layer and the chain it stands on) against
//! the real `snapstack serve` and QEMU: the chain is exported once and every
//! download (whole or a byte range) reuses that export; it goes with the
//! image; a staging area without room answers 503 and keeps nothing.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{file_names, run, Client, Server};
use serde_json::json;

const EXPORTED: &str = "image exported once for its downloads";

/// Boots a server from the guest image and snapshots it; returns the
/// snapshot image's id once it is active.
fn snapshot_image(server: &Server, admin: &Client) -> String {
    let image = server.add_guest_image_and_flavor();
    let created = admin.post(
        "/compute/v2.1/servers",
        json!({"server": {"name": "vm", "imageRef": image, "flavorRef": "tiny", "networks": "none"}}),
    );
    let vm = created.expect_status(202).body["server"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(|| {
        admin.get(&format!("/compute/v2.1/servers/{vm}")).body["server"]["status"] == "ACTIVE"
    });
    let snap = admin.post(
        &format!("/compute/v2.1/servers/{vm}/action"),
        json!({"createImage": {"name": "snap"}}),
    );
    let snap = snap.expect_status(202);
    let id = snap
        .header("location")
        .and_then(|l| l.rsplit('/').next())
        .unwrap()
        .to_string();
    wait_for(|| admin.image(&id)["status"] == "active");
    id
}

fn wait_for(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn exports_dir(server: &Server) -> PathBuf {
    server.staging_dir().join("exports")
}

fn download(admin: &Client, id: &str, range: Option<&str>) -> common::Reply {
    let mut request = admin.request("GET", &format!("/image/v2/images/{id}/file"));
    if let Some(r) = range {
        request = request.set("Range", r);
    }
    common::reply(request.call())
}

#[test]
fn snapshot_download_when_fetched_twice_and_by_range_then_one_export_reused_and_bytes_as_qemu_img()
{
    let server = Server::start();
    let admin = server.admin();
    let id = snapshot_image(&server, &admin);
    let layer = admin.image(&id)["direct_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("file://")
        .to_string();
    let expected_path = server.dir.path().join("expected.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-U",
            "-f",
            "qcow2",
            "-O",
            "qcow2",
            &layer,
            expected_path.to_str().unwrap(),
        ],
    );
    let expected = std::fs::read(&expected_path).unwrap();

    let first_byte = download(&admin, &id, Some("bytes=0-0"));
    let exports = file_names(&exports_dir(&server));
    let inode = std::fs::metadata(exports_dir(&server).join(&exports[0]))
        .unwrap()
        .ino();
    let whole = download(&admin, &id, None);
    let again = download(&admin, &id, None);
    let tail = download(&admin, &id, Some("bytes=-100"));

    assert_eq!(first_byte.status, 206);
    assert_eq!(first_byte.raw, expected[..1]);
    assert_eq!(whole.expect_status(200).raw, expected);
    assert_eq!(again.raw, expected);
    assert_eq!(
        tail.expect_status(206).raw,
        expected[expected.len() - 100..]
    );
    assert_eq!(exports.len(), 1, "{exports:?}");
    let still = file_names(&exports_dir(&server));
    assert_eq!(still, exports);
    let inode_after = std::fs::metadata(exports_dir(&server).join(&still[0]))
        .unwrap()
        .ino();
    assert_eq!(inode_after, inode);
    assert_eq!(
        server.log().matches(EXPORTED).count(),
        1,
        "{}",
        server.log()
    );
}

#[test]
fn snapshot_image_when_deleted_then_its_export_goes() {
    let server = Server::start();
    let admin = server.admin();
    let id = snapshot_image(&server, &admin);
    download(&admin, &id, Some("bytes=0-0")).expect_status(206);
    let before = file_names(&exports_dir(&server));

    admin
        .delete(&format!("/image/v2/images/{id}"))
        .expect_status(204);

    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0].starts_with(&id), "{before:?}");
    assert_eq!(file_names(&exports_dir(&server)), Vec::<String>::new());
}

#[test]
fn snapshot_download_when_staging_lacks_room_then_503_and_nothing_written() {
    let server = Server::start_with(&["--staging-reserve", &u64::MAX.to_string()]);
    let admin = server.admin();
    let id = snapshot_image(&server, &admin);

    let r = download(&admin, &id, None);

    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.message().contains("staging space"), "{}", r.message());
    assert_eq!(file_names(&exports_dir(&server)), Vec::<String>::new());
    assert_eq!(server.log().matches(EXPORTED).count(), 0);
}
