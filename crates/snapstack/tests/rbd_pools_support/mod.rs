//! A `snapstack serve` on RBD pools of its own (`<prefix>-images`,
//! `<prefix>-vms`, `<prefix>-volumes`, made here if missing) of the Ceph dev
//! cluster that `CEPH_CONF` names. A service's garbage collection deletes
//! RBD images its database does not know, so a test binary whose service
//! makes RBD data must not share pools with other suites; the pools are
//! purged before the service starts and when it is dropped (also on panic).
//! One service per prefix at a time within a binary.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use crate::common::{run, Server};
use crate::rbd_support::{ceph_conf, rbd, rbd_ls, rbd_snaps};

/// One service on the pools at a time.
static TURN: Mutex<()> = Mutex::new(());

/// The service and its pools.
pub struct PrivateRbd {
    pub server: Server,
    pub prefix: &'static str,
    _config: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl PrivateRbd {
    pub fn start(prefix: &'static str) -> Self {
        Self::start_with_env(prefix, &[])
    }

    /// Starts with extra environment variables for the service process.
    pub fn start_with_env(prefix: &'static str, env: &[(&str, &str)]) -> Self {
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        ensure_pools(prefix);
        purge_pools(prefix);
        let config = tempfile::tempdir().unwrap();
        let path = config.path().join("storage.toml");
        std::fs::write(
            &path,
            format!(
                "[rbd]\nconf = \"{}\"\nuser = \"admin\"\nimages_pool = \"{prefix}-images\"\n\
                 vms_pool = \"{prefix}-vms\"\nvolumes_pool = \"{prefix}-volumes\"\ntimeout_seconds = 5\n",
                ceph_conf().display()
            ),
        )
        .unwrap();
        let server = Server::start_full(&["--storage-config", path.to_str().unwrap()], env);
        Self {
            server,
            prefix,
            _config: config,
            _turn: turn,
        }
    }

    /// The name of one of the pools: `images`, `vms` or `volumes`.
    pub fn pool(&self, kind: &str) -> String {
        format!("{}-{kind}", self.prefix)
    }
}

impl Drop for PrivateRbd {
    fn drop(&mut self) {
        // QEMU outlives the service: stop it cleanly, so that it closes its
        // RBD disks and leaves no watch that blocks their removal.
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
            .any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        purge_pools(self.prefix);
    }
}

fn pools(prefix: &str) -> [String; 3] {
    ["images", "vms", "volumes"].map(|kind| format!("{prefix}-{kind}"))
}

/// Creates the pools once (size 1, as the dev cluster's).
pub fn ensure_pools(prefix: &str) {
    let conf = ceph_conf();
    for pool in pools(prefix) {
        let listed = Command::new("rbd")
            .args(["-c", conf.to_str().unwrap(), "ls", &pool])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if !listed.success() {
            run(
                "ceph",
                &[
                    "-c",
                    conf.to_str().unwrap(),
                    "osd",
                    "pool",
                    "create",
                    &pool,
                    "8",
                    "8",
                ],
            );
            rbd(&["pool", "init", &pool]);
        }
    }
}

/// Empties the pools: clones first, a few rounds.
pub fn purge_pools(prefix: &str) {
    for _ in 0..4 {
        for pool in pools(prefix) {
            for image in rbd_ls(&pool) {
                let spec = format!("{pool}/{image}");
                for (snap, _) in rbd_snaps(&spec) {
                    quiet_rbd(&["snap", "unprotect", &format!("{spec}@{snap}")]);
                }
                quiet_rbd(&["snap", "purge", "--no-progress", &spec]);
                quiet_rbd(&["rm", "--no-progress", &spec]);
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
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
