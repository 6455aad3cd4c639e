//! The RBD side of the acceptance tests: the dev cluster that `CEPH_CONF`
//! names (`scripts/ceph-dev.sh start && eval "$(scripts/ceph-dev.sh env)"`),
//! the real `rbd` CLI to look at it, and [`RbdServer`], a `snapstack serve`
//! on its pools that removes the RBD images a test made (also on panic).
//!
//! The tests take turns: every `serve` owns the pools it is given (its
//! garbage collection deletes RBD images its database does not know), so
//! two servers with two databases must not share pools at the same time.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use crate::common::{ok, run, Server};

pub fn ceph_conf() -> PathBuf {
    let conf = std::env::var_os("CEPH_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "CEPH_CONF is not set. These tests need the dev cluster: run \
             `scripts/ceph-dev.sh start && eval \"$(scripts/ceph-dev.sh env)\"` first"
            )
        });
    assert!(
        conf.exists(),
        "CEPH_CONF={} does not exist; is the dev cluster running?",
        conf.display()
    );
    conf
}

/// `rbd -c $CEPH_CONF ARGS…`, asserting success.
pub fn rbd(args: &[&str]) -> String {
    let conf = ceph_conf();
    let mut all = vec!["-c", conf.to_str().unwrap()];
    all.extend_from_slice(args);
    run("rbd", &all)
}

pub fn rbd_ls(pool: &str) -> Vec<String> {
    rbd(&["ls", pool]).lines().map(str::to_string).collect()
}

/// (name, protected) of each snapshot of `pool/image`.
pub fn rbd_snaps(spec: &str) -> Vec<(String, String)> {
    let snaps: Value =
        serde_json::from_str(&rbd(&["snap", "ls", "--format", "json", spec])).unwrap();
    snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["protected"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

pub fn fsid() -> String {
    let conf = ceph_conf();
    run(
        "ceph",
        &[
            "-c",
            conf.to_str().unwrap(),
            "--connect-timeout",
            "10",
            "fsid",
        ],
    )
    .trim()
    .to_string()
}

/// A storage configuration naming the dev cluster, in its own directory.
pub fn storage_config(dir: &Path, conf: &Path) -> PathBuf {
    let path = dir.join("storage.toml");
    let text = format!(
        "[rbd]\nconf = \"{}\"\nuser = \"admin\"\nimages_pool = \"images\"\nvms_pool = \"vms\"\n\
         volumes_pool = \"volumes\"\ntimeout_seconds = 5\n",
        conf.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A `snapstack serve` on the dev cluster, and the RBD images to remove at
/// the end (clones first).
pub struct RbdServer {
    pub server: Server,
    _config_dir: tempfile::TempDir,
    pub cleanup: Vec<String>,
    /// Empty the volumes, vms and images pools at the end (tests whose service makes
    /// RBD images of its own: snapshots, clones).
    pub purge_pools: bool,
    /// Released after `drop` has cleaned up.
    _turn: MutexGuard<'static, ()>,
}

/// One `serve` on the shared pools at a time (see the module header).
static TURN: Mutex<()> = Mutex::new(());

impl RbdServer {
    pub fn start() -> Self {
        Self::start_with_env(&[])
    }

    /// Starts with extra environment variables for the service process.
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let config_dir = tempfile::tempdir().unwrap();
        let config = storage_config(config_dir.path(), &ceph_conf());
        let server = Server::start_full(&["--storage-config", config.to_str().unwrap()], env);
        Self {
            server,
            _config_dir: config_dir,
            cleanup: Vec::new(),
            purge_pools: false,
            _turn: turn,
        }
    }

    /// `openstack image create` from `file`; returns the image (JSON).
    pub fn create_image(&mut self, name: &str, disk_format: &str, file: &Path) -> Value {
        let out = self.server.openstack(&[
            "image",
            "create",
            "--disk-format",
            disk_format,
            "--container-format",
            "bare",
            "--file",
            file.to_str().unwrap(),
            "-f",
            "json",
            name,
        ]);
        let image: Value = serde_json::from_str(&ok(out)).unwrap();
        self.cleanup
            .push(format!("images/{}", image["id"].as_str().unwrap()));
        image
    }

    pub fn show(&self, name: &str) -> Value {
        serde_json::from_str(&ok(self
            .server
            .openstack(&["image", "show", "-f", "json", name])))
        .unwrap()
    }
}

impl Drop for RbdServer {
    fn drop(&mut self) {
        // QEMU outlives the service: stop it cleanly (SIGTERM), so that it
        // closes its RBD disks and leaves no watch that blocks their removal.
        let qemus = self.server.qemu_pids();
        self.server.kill();
        for pid in &qemus {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while qemus
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        for spec in self.cleanup.iter().rev() {
            purge(spec);
        }
        if self.purge_pools {
            // Clones stand on snapshots in the other pool: a few rounds.
            for _ in 0..3 {
                for pool in ["volumes", "vms", "images"] {
                    for image in rbd_ls(pool) {
                        let spec = format!("{pool}/{image}");
                        for (snap, _) in rbd_snaps(&spec) {
                            quiet_rbd(&["snap", "unprotect", &format!("{spec}@{snap}")]);
                        }
                        purge(&spec);
                    }
                }
            }
        }
    }
}

/// `rbd ARGS…` on the dev cluster, ignoring the outcome.
fn quiet_rbd(args: &[&str]) {
    let _ = Command::new("rbd")
        .arg("-c")
        .arg(ceph_conf())
        .args(args)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status();
}

/// Removes `pool/image` with its snapshots, quietly (absent is fine).
pub fn purge(spec: &str) {
    quiet_rbd(&["snap", "unprotect", &format!("{spec}@snap")]);
    quiet_rbd(&["snap", "purge", "--no-progress", spec]);
    quiet_rbd(&["rm", "--no-progress", spec]);
}

/// The test guest's disk (`scripts/build-guest.sh`).
pub fn guest_qcow2() -> PathBuf {
    let dir = std::env::var_os("SNAPSTACK_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/guest"));
    let disk = dir.join("guest.qcow2");
    assert!(
        disk.is_file(),
        "the test guest is not at {} — run scripts/build-guest.sh",
        disk.display()
    );
    disk
}
