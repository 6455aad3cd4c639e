//! Shared by the volume acceptance tests: a Block Storage v3 client over
//! HTTP (fast polling; the CLI does the user-facing steps), and ways to look
//! at volume data with `qemu-img`/`qemu-io` (file pool) behind the API.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{file_names, reply, run, Client, Reply, Server};

/// The volume API of one project, over HTTP.
pub struct VolumeApi {
    pub client: Client,
    /// `/volume/v3/<project id>`.
    pub base: String,
}

impl VolumeApi {
    pub fn new(client: Client) -> Self {
        let base = format!("/volume/v3/{}", client.project_id());
        Self { client, base }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.client.get(&format!("{}{path}", self.base))
    }

    pub fn post(&self, path: &str, body: Value) -> Reply {
        self.client.post(&format!("{}{path}", self.base), body)
    }

    /// `POST`, or `None` if the service died before it answered.
    pub fn try_post(&self, path: &str, body: Value) -> Option<Reply> {
        match self
            .client
            .request("POST", &format!("{}{path}", self.base))
            .send_json(body)
        {
            Ok(r) => Some(reply(Ok(r))),
            Err(e @ ureq::Error::Status(..)) => Some(reply(Err(e))),
            Err(_) => None,
        }
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.client.delete(&format!("{}{path}", self.base))
    }

    /// `POST /volumes`, expecting 202; the volume.
    pub fn create_volume(&self, volume: Value) -> Value {
        self.post("/volumes", json!({ "volume": volume }))
            .expect_status(202)
            .body["volume"]
            .clone()
    }

    /// `POST /snapshots`, expecting 202; the snapshot.
    pub fn create_snapshot(&self, volume_id: &str, name: &str) -> Value {
        self.post(
            "/snapshots",
            json!({"snapshot": {"volume_id": volume_id, "name": name}}),
        )
        .expect_status(202)
        .body["snapshot"]
            .clone()
    }

    /// Polls `/{kind}/{id}` until its status is `status` (panics after 30 s).
    fn wait(&self, kind: &str, key: &str, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let shown = self.get(&format!("/{kind}/{id}")).expect_status(200).body[key].clone();
            if shown["status"] == status {
                return shown;
            }
            assert!(
                Instant::now() < deadline,
                "{key} {id} never became {status}: {shown}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_volume(&self, id: &str, status: &str) -> Value {
        self.wait("volumes", "volume", id, status)
    }

    pub fn wait_snapshot(&self, id: &str, status: &str) -> Value {
        self.wait("snapshots", "snapshot", id, status)
    }

    /// Polls until `GET /volumes/{id}` is 404 (panics after 30 s).
    pub fn wait_volume_gone(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get(&format!("/volumes/{id}")).status != 404 {
            assert!(Instant::now() < deadline, "volume {id} never went away");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls until `GET /snapshots/{id}` is 404 (panics after 30 s).
    pub fn wait_snapshot_gone(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get(&format!("/snapshots/{id}")).status != 404 {
            assert!(Instant::now() < deadline, "snapshot {id} never went away");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A blank volume of `size` GiB, waited for; its id.
    pub fn blank_volume(&self, name: &str, size: u64) -> String {
        let id = self.create_volume(json!({"name": name, "size": size}))["id"]
            .as_str()
            .unwrap()
            .to_string();
        self.wait_volume(&id, "available");
        id
    }

    /// A snapshot of `volume_id`, waited for; its id.
    pub fn snapshot(&self, volume_id: &str, name: &str) -> String {
        let id = self.create_snapshot(volume_id, name)["id"]
            .as_str()
            .unwrap()
            .to_string();
        self.wait_snapshot(&id, "available");
        id
    }
}

/// The file pool's directory of disks and volumes.
pub fn disks_dir(server: &Server) -> PathBuf {
    server.data_dir().join("pool").join("disks")
}

/// The files of volume `id` in the file pool: its writable top and the
/// read-only layers (snapshots) under it.
pub fn volume_files(server: &Server, id: &str) -> Vec<PathBuf> {
    let dir = disks_dir(server);
    file_names(&dir)
        .into_iter()
        .filter(|n| n.starts_with(&format!("volume-{id}")) && n.ends_with(".qcow2"))
        .map(|n| dir.join(n))
        .collect()
}

fn is_read_only(path: &Path) -> bool {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o222 == 0
}

/// The writable top of volume `id` (what a guest would write to).
pub fn top_of(server: &Server, id: &str) -> PathBuf {
    let tops: Vec<PathBuf> = volume_files(server, id)
        .into_iter()
        .filter(|p| !is_read_only(p))
        .collect();
    assert_eq!(tops.len(), 1, "volume {id} has not one top: {tops:?}");
    tops[0].clone()
}

/// The frozen (read-only) layers of volume `id`.
pub fn frozen_of(server: &Server, id: &str) -> Vec<PathBuf> {
    volume_files(server, id)
        .into_iter()
        .filter(|p| is_read_only(p))
        .collect()
}

/// Writes `pattern` over 64 KiB at `offset` of the qcow2 file at `path`.
pub fn write_pattern(path: &Path, pattern: u8, offset: u64) {
    run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            &format!("write -P {pattern} {offset} 64k"),
            path.to_str().unwrap(),
        ],
    );
}

/// Whether the 64 KiB at `offset` of `image` (a path or a `rbd:` spec,
/// in `format`) all hold `pattern`.
pub fn holds_pattern(image: &str, format: &str, pattern: u8, offset: u64) -> bool {
    let out = Command::new("qemu-io")
        .args([
            "-r",
            "-U",
            "-f",
            format,
            "-c",
            &format!("read -P {pattern} {offset} 64k"),
            image,
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).to_string();
    assert!(
        said.contains("read 65536/65536"),
        "qemu-io read failed: {said}"
    );
    !said.contains("Pattern verification failed")
}

/// `qemu-img compare` of two images (paths or `rbd:` specs): identical?
pub fn same_content(a: &str, a_format: &str, b: &str, b_format: &str) -> bool {
    let out = Command::new("qemu-img")
        .args(["compare", "-U", "-f", a_format, "-F", b_format, a, b])
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "qemu-img compare {a} {b} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `qemu-img check` on every qcow2 file of the file pool's disks directory.
pub fn check_every_file(server: &Server) {
    let dir = disks_dir(server);
    for name in file_names(&dir) {
        assert!(name.ends_with(".qcow2"), "stray file {name} in the pool");
        run(
            "qemu-img",
            &[
                "check",
                "-q",
                "-U",
                "-f",
                "qcow2",
                dir.join(&name).to_str().unwrap(),
            ],
        );
    }
}

/// A small qcow2 image file with `pattern` over its first 64 KiB at
/// `offset`, `size` big.
pub fn patterned_qcow2(dir: &Path, name: &str, size: &str, pattern: u8, offset: u64) -> PathBuf {
    let path = dir.join(name);
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", path.to_str().unwrap(), size],
    );
    write_pattern(&path, pattern, offset);
    path
}
