//! Acceptance: `snapstack serve --storage-config` on the Ceph cluster that
//! `CEPH_CONF` names (`scripts/ceph-dev.sh start && eval "$(scripts/ceph-dev.sh env)"`),
//! driven with the real `openstack` CLI and checked with the real `rbd` CLI.
//! A missing cluster fails these tests; it never skips them.
//!
//! Each test removes the RBD images it made (a guard, also on panic); the
//! tests take turns on the pools (see `rbd_support`).

mod common;
mod rbd_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{fails, ok, run, Server};
use rbd_support::*;
use serde_json::Value;

/// `len` bytes with structure (not all zeros, and a 4 MiB hole).
fn raw_file(dir: &Path, len: usize) -> PathBuf {
    let mut data: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 | 1)
        .collect();
    let hole = (4 << 20).min(len)..(8 << 20).min(len);
    data[hole].fill(0);
    let path = dir.join("disk.raw");
    std::fs::write(&path, data).unwrap();
    path
}

#[test]
fn image_create_when_raw_then_rbd_image_with_protected_snap_and_direct_url() {
    let mut rbd_server = RbdServer::start();
    let file = raw_file(rbd_server.server.dir.path(), 9 << 20);

    let image = rbd_server.create_image("raw-on-ceph", "raw", &file);

    let id = image["id"].as_str().unwrap();
    let shown = rbd_server.show(id);
    assert_eq!(image["status"], "active");
    assert!(rbd_ls("images").contains(&id.to_string()));
    assert_eq!(
        rbd_snaps(&format!("images/{id}")),
        vec![("snap".to_string(), "true".to_string())]
    );
    assert_eq!(
        shown["properties"]["direct_url"],
        format!("rbd://{}/images/{id}/snap", fsid())
    );
}

#[test]
fn image_save_when_on_rbd_then_byte_identical() {
    let mut rbd_server = RbdServer::start();
    let dir = rbd_server.server.dir.path().to_path_buf();
    let file = raw_file(&dir, (9 << 20) + 123);
    rbd_server.create_image("to-save", "raw", &file);
    let saved = dir.join("saved.raw");

    ok(rbd_server.server.openstack(&[
        "image",
        "save",
        "--file",
        saved.to_str().unwrap(),
        "to-save",
    ]));

    assert!(
        std::fs::read(&saved).unwrap() == std::fs::read(&file).unwrap(),
        "downloaded bytes differ"
    );
}

#[test]
fn image_delete_when_on_rbd_then_rbd_image_and_snap_gone() {
    let mut rbd_server = RbdServer::start();
    let file = raw_file(rbd_server.server.dir.path(), 1 << 20);
    let id = rbd_server.create_image("to-delete", "raw", &file)["id"]
        .as_str()
        .unwrap()
        .to_string();

    ok(rbd_server.server.openstack(&["image", "delete", &id]));

    assert!(!rbd_ls("images").contains(&id));
}

#[test]
fn image_delete_when_cloned_then_409_and_image_and_data_kept() {
    let mut rbd_server = RbdServer::start();
    let file = raw_file(rbd_server.server.dir.path(), 1 << 20);
    let id = rbd_server.create_image("cloned", "raw", &file)["id"]
        .as_str()
        .unwrap()
        .to_string();
    // What a server booted from the image has: a clone of image@snap in vms.
    let clone = format!("test-clone-{id}");
    rbd(&[
        "clone",
        &format!("images/{id}@snap"),
        &format!("vms/{clone}"),
    ]);
    rbd_server.cleanup.push(format!("vms/{clone}"));

    let err = fails(rbd_server.server.openstack(&["image", "delete", &id]));

    assert!(err.contains("409"), "stderr: {err}");
    assert!(err.contains(&format!("vms/{clone}")), "stderr: {err}");
    assert_eq!(rbd_server.show(&id)["status"], "active");
    assert!(rbd_ls("images").contains(&id));
    assert_eq!(
        rbd_snaps(&format!("images/{id}")),
        vec![("snap".to_string(), "true".to_string())]
    );
}

#[test]
fn image_create_when_qcow2_on_rbd_then_stored_raw_with_conversion_in_properties() {
    let mut rbd_server = RbdServer::start();
    let dir = rbd_server.server.dir.path().to_path_buf();
    let seed = raw_file(&dir, 3 << 20);
    let (qcow2, reference, saved) = (
        dir.join("up.qcow2"),
        dir.join("ref.raw"),
        dir.join("saved.raw"),
    );
    let p = |path: &Path| path.to_str().unwrap().to_string();
    run(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            &p(&seed),
            &p(&qcow2),
        ],
    );
    run(
        "qemu-img",
        &["resize", "-q", "-f", "qcow2", &p(&qcow2), "16M"],
    );
    run(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "qcow2",
            "-O",
            "raw",
            &p(&qcow2),
            &p(&reference),
        ],
    );
    let uploaded_size = std::fs::metadata(&qcow2).unwrap().len();

    let image = rbd_server.create_image("converted", "qcow2", &qcow2);

    ok(rbd_server
        .server
        .openstack(&["image", "save", "--file", &p(&saved), "converted"]));
    let shown = rbd_server.show("converted");
    let props = &shown["properties"];
    assert_eq!(image["status"], "active");
    assert_eq!(shown["disk_format"], "raw");
    assert_eq!(shown["size"], 16 << 20);
    assert_eq!(shown["virtual_size"], 16 << 20);
    assert_eq!(props["snapstack_converted_from"], "qcow2");
    assert_eq!(props["snapstack_uploaded_size"], uploaded_size.to_string());
    assert!(
        std::fs::read(&saved).unwrap() == std::fs::read(&reference).unwrap(),
        "not qemu-img's conversion"
    );
    assert!(rbd_server.server.staging_files().is_empty());
}

#[test]
fn serve_when_ceph_unreachable_then_exits_nonzero_naming_the_conf() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead_conf = dir.path().join("dead-ceph.conf");
    std::fs::write(
        &dead_conf,
        format!("[global]\nmon host = v1:127.0.0.1:{port}\nauth client required = none\n"),
    )
    .unwrap();
    let config = storage_config(dir.path(), &dead_conf);
    let started = Instant::now();

    let out = Command::new(env!("CARGO_BIN_EXE_snapstack"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-password",
            "pw",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--storage-config")
        .arg(&config)
        .env("HOME", dir.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Ceph is unreachable"), "stderr: {stderr}");
    assert!(
        stderr.contains(dead_conf.to_str().unwrap()),
        "stderr: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

/// A private single-node cluster (`scripts/ceph-dev.sh` in a temporary
/// directory), stopped when dropped: for the test that takes Ceph down.
struct PrivateCluster {
    dir: tempfile::TempDir,
}

impl PrivateCluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(Self::script())
            .arg("start")
            .arg(dir.path().join("ceph"))
            .env("CEPH_DEV_MEMSTORE_BYTES", (512u64 << 20).to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ceph-dev.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ceph-dev.sh")
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("ceph").join("ceph.conf")
    }

    /// Kills the monitor and the OSD (and removes the cluster).
    fn stop(&self) {
        let _ = Command::new(Self::script())
            .arg("stop")
            .arg(self.dir.path().join("ceph"))
            .output();
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn ceph_down_while_serving_then_503_naming_ceph_and_nothing_changed() {
    let cluster = PrivateCluster::start();
    let config_dir = tempfile::tempdir().unwrap();
    let config = storage_config(config_dir.path(), &cluster.conf());
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("timeout_seconds = 5", "timeout_seconds = 3"),
    )
    .unwrap();
    let server = Server::start_with(&["--storage-config", config.to_str().unwrap()]);
    let admin = server.admin();
    let (id, uploaded) = admin.upload_image("before", "raw", &vec![7u8; 1 << 20]);
    uploaded.expect_status(204);
    let queued = admin.create_image(
        serde_json::json!({"name": "after", "disk_format": "raw", "container_format": "bare"}),
    );

    cluster.stop();
    let download = admin.get(&format!("/image/v2/images/{id}/file"));
    let delete = admin.delete(&format!("/image/v2/images/{id}"));
    let upload = admin.put_bytes(&format!("/image/v2/images/{queued}/file"), &[1u8; 4096]);

    for reply in [&download, &delete, &upload] {
        assert_eq!(reply.status, 503, "{}", String::from_utf8_lossy(&reply.raw));
        assert!(
            reply.message().contains("Ceph is unreachable"),
            "{}",
            reply.message()
        );
    }
    assert_eq!(admin.image(&id)["status"], "active");
    assert_eq!(admin.image(&queued)["status"], "queued");
    assert!(server.staging_files().is_empty());
}

#[test]
fn server_when_booted_from_rbd_image_then_clone_in_vms_until_deleted() {
    let mut rbd_server = RbdServer::start();
    let image = rbd_server.create_image("guest", "qcow2", &guest_qcow2());
    let image_id = image["id"].as_str().unwrap().to_string();
    let flavor = serde_json::json!({"flavor": {"id": "tiny", "name": "tiny", "vcpus": 1, "ram": 256, "disk": 1}});
    rbd_server
        .server
        .admin()
        .post("/compute/v2.1/flavors", flavor)
        .expect_status(200);

    let created: Value = serde_json::from_str(&ok(rbd_server.server.openstack(&[
        "server",
        "create",
        "--image",
        "guest",
        "--flavor",
        "tiny",
        "--no-network",
        "--wait",
        "-f",
        "json",
        "vm1",
    ])))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    rbd_server.cleanup.insert(0, format!("vms/{id}"));
    let booted = Instant::now() + Duration::from_secs(90);
    let mut console = String::new();
    while !console.contains("SNAPSTACK-GUEST boot=1") && Instant::now() < booted {
        std::thread::sleep(Duration::from_secs(1));
        console = ok(rbd_server
            .server
            .openstack(&["console", "log", "show", "vm1"]));
    }
    let disk_info: Value =
        serde_json::from_str(&rbd(&["info", "--format", "json", &format!("vms/{id}")])).unwrap();
    let delete_image_in_use = fails(rbd_server.server.openstack(&["image", "delete", "guest"]));
    ok(rbd_server
        .server
        .openstack(&["server", "delete", "--wait", "vm1"]));
    let disk_gone = Instant::now() + Duration::from_secs(60);
    while rbd_ls("vms").contains(&id) && Instant::now() < disk_gone {
        std::thread::sleep(Duration::from_secs(1));
    }
    let vms_after_server_delete = rbd_ls("vms");
    ok(rbd_server.server.openstack(&["image", "delete", "guest"]));

    assert_eq!(created["status"], "ACTIVE");
    assert!(
        console.contains("SNAPSTACK-GUEST boot=1 last_seq=0 corrupt=0"),
        "console:\n{console}"
    );
    assert_eq!(disk_info["parent"]["pool"], "images");
    assert_eq!(disk_info["parent"]["image"], image_id.as_str());
    assert_eq!(disk_info["parent"]["snapshot"], "snap");
    assert_eq!(disk_info["size"], 1u64 << 30);
    assert!(
        delete_image_in_use.contains("409"),
        "stderr: {delete_image_in_use}"
    );
    assert!(
        !vms_after_server_delete.contains(&id),
        "the server's clone outlived it"
    );
    assert!(!rbd_ls("images").contains(&image_id));
}
