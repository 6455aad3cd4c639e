//! Hostile uploads against the real `snapstack serve`: each file is built
//! here with qemu-img (and byte patching), uploaded, and must be refused
//! with a 400 that names the reason, leaving the image `queued`, nothing in
//! the pool and nothing in the staging directory. Valid raw and vmdk uploads
//! still go through.

mod common;

use std::path::{Path, PathBuf};

use common::{run, Client, Reply, Server};
use serde_json::json;

/// A scratch directory for building images, inside the server's tempdir.
fn workdir(server: &Server) -> PathBuf {
    let dir = server.dir.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Creates an image record declared as `disk_format` and uploads `file` to it.
fn upload_file(client: &Client, disk_format: &str, file: &Path) -> (String, Reply) {
    let data = std::fs::read(file).unwrap();
    client.upload_image("hostile", disk_format, &data)
}

/// A rejected upload: 400 naming `reason`, image back to `queued`, no pool
/// file for it, nothing left in staging.
fn assert_rejected(server: &Server, client: &Client, id: &str, r: &Reply, reason: &str) {
    assert_eq!(r.status, 400, "body: {}", String::from_utf8_lossy(&r.raw));
    assert!(
        r.message().to_lowercase().contains(reason),
        "message {:?} does not mention {reason:?}",
        r.message()
    );
    assert_eq!(client.image(id)["status"], "queued");
    assert!(
        !server.pool_files().contains(&id.to_string()),
        "pool holds {:?}",
        server.pool_files()
    );
    assert_eq!(server.staging_files(), Vec::<String>::new());
}

/// Bytes that no format inspector mistakes for anything but raw.
fn raw_data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) % 251) as u8 ^ 0x5a)
        .collect()
}

fn qcow2(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[path_str(&path), "1M"]);
    run("qemu-img", &args);
    path
}

/// Replaces `from` by `to` inside the NUL-padded embedded descriptor of a
/// monolithicSparse vmdk, keeping the descriptor area's length.
fn patch_vmdk_descriptor(file: &Path, from: &str, to: &str) {
    let mut bytes = std::fs::read(file).unwrap();
    let start = find(&bytes, b"# Disk DescriptorFile").expect("no embedded descriptor");
    let len = bytes[start..].iter().position(|b| *b == 0).unwrap();
    let text = String::from_utf8(bytes[start..start + len].to_vec()).unwrap();
    assert!(text.contains(from), "descriptor has no {from:?}:\n{text}");
    let patched = text.replace(from, to);
    bytes[start..start + patched.len()].copy_from_slice(patched.as_bytes());
    bytes[start + patched.len()..start + len.max(patched.len())].fill(0);
    std::fs::write(file, bytes).unwrap();
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---- rejected ----------------------------------------------------------

#[test]
fn upload_when_qcow2_declared_raw_then_400_and_nothing_kept() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let file = qcow2(&workdir(&server), "disk.qcow2", &[]);

    let (id, r) = upload_file(&alice, "raw", &file);

    assert_rejected(&server, &alice, &id, &r, "qcow2");
}

#[test]
fn upload_when_qcow2_has_backing_file_then_400_and_nothing_kept() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let dir = workdir(&server);
    std::fs::write(dir.join("base.raw"), vec![0u8; 1 << 20]).unwrap();
    let file = qcow2(
        &dir,
        "top.qcow2",
        &["-b", path_str(&dir.join("base.raw")), "-F", "raw"],
    );

    let (id, r) = upload_file(&alice, "qcow2", &file);

    assert_rejected(&server, &alice, &id, &r, "backing");
}

#[test]
fn upload_when_qcow2_has_data_file_then_400_and_nothing_kept() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let dir = workdir(&server);
    let data_file = format!("data_file={}", path_str(&dir.join("data.raw")));
    let file = qcow2(&dir, "external.qcow2", &["-o", &data_file]);

    let (id, r) = upload_file(&alice, "qcow2", &file);

    assert_rejected(&server, &alice, &id, &r, "data file");
}

#[test]
fn upload_when_qcow2_has_unknown_incompatible_feature_then_400_and_nothing_kept() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let file = qcow2(&workdir(&server), "future.qcow2", &[]);
    let mut bytes = std::fs::read(&file).unwrap();
    let features = u64::from_be_bytes(bytes[72..80].try_into().unwrap()) | (1 << 63);
    bytes[72..80].copy_from_slice(&features.to_be_bytes());
    std::fs::write(&file, bytes).unwrap();

    let (id, r) = upload_file(&alice, "qcow2", &file);

    assert_rejected(&server, &alice, &id, &r, "feature");
}

#[test]
fn upload_when_vmdk_is_monolithic_flat_descriptor_then_400_and_nothing_kept() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let dir = workdir(&server);
    let file = dir.join("flat.vmdk");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            path_str(&file),
            "1M",
        ],
    );

    let (id, r) = upload_file(&alice, "vmdk", &file);

    assert_rejected(&server, &alice, &id, &r, "descriptor");
}

#[test]
fn upload_when_vmdk_extent_names_etc_passwd_then_400_and_nothing_kept() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let file = workdir(&server).join("sparse.vmdk");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicSparse",
            path_str(&file),
            "1M",
        ],
    );
    patch_vmdk_descriptor(&file, "\"sparse.vmdk\"", "\"/etc/passwd\"");

    let (id, r) = upload_file(&alice, "vmdk", &file);

    assert_rejected(&server, &alice, &id, &r, "/etc/passwd");
}

#[test]
fn upload_when_raw_data_declared_qcow2_then_400_and_nothing_kept() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");

    let (id, r) = alice.upload_image("not-qcow2", "qcow2", &raw_data(1 << 16));

    assert_rejected(&server, &alice, &id, &r, "qcow2");
}

// ---- accepted ----------------------------------------------------------

#[test]
fn upload_when_valid_raw_then_active_with_virtual_size() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");

    let (id, r) = alice.upload_image("good-raw", "raw", &raw_data(1 << 20));

    assert_eq!(r.status, 204, "body: {}", String::from_utf8_lossy(&r.raw));
    let img = alice.image(&id);
    assert_eq!(img["status"], "active");
    assert_eq!(img["virtual_size"], 1 << 20);
    assert_eq!(server.pool_files(), [id]);
    assert_eq!(server.staging_files(), Vec::<String>::new());
}

#[test]
fn upload_when_valid_stream_optimized_vmdk_then_active_with_virtual_size() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let dir = workdir(&server);
    std::fs::write(dir.join("src.raw"), raw_data(3 << 20)).unwrap();
    let file = dir.join("stream.vmdk");
    run(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            path_str(&dir.join("src.raw")),
            path_str(&file),
        ],
    );

    let (id, r) = upload_file(&alice, "vmdk", &file);

    assert_eq!(r.status, 204, "body: {}", String::from_utf8_lossy(&r.raw));
    let img = alice.image(&id);
    assert_eq!(img["status"], "active");
    assert_eq!(img["virtual_size"], 3 << 20);
    assert_eq!(img["size"], std::fs::metadata(&file).unwrap().len());
    assert_eq!(server.staging_files(), Vec::<String>::new());
}

#[test]
fn upload_when_retried_with_valid_data_after_rejection_then_active() {
    let server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let file = qcow2(&workdir(&server), "disk.qcow2", &[]);
    let (id, rejected) = upload_file(&alice, "raw", &file);
    let data = raw_data(1 << 16);

    let r = alice.put_bytes(&format!("/image/v2/images/{id}/file"), &data);

    assert_eq!(rejected.status, 400);
    assert_eq!(r.status, 204, "body: {}", String::from_utf8_lossy(&r.raw));
    let img = alice.image(&id);
    assert_eq!(img["status"], "active");
    assert_eq!(img["size"], 1 << 16);
    assert_eq!(alice.get(&format!("/image/v2/images/{id}/file")).raw, data);
    assert_eq!(json!(server.pool_files()), json!([id]));
}
