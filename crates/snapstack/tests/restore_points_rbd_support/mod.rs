//! Shared by the restore-point tests on the rbd pool: a `snapstack serve` on
//! pools of its own (`rp-images`, `rp-vms`, `rp-volumes`, made here if
//! missing) — its garbage collection deletes RBD images its database does
//! not know, so it must not share pools with the other RBD tests — and what
//! the points are in Ceph, read with the `rbd` CLI. One service on the pools
//! at a time, across processes too (a lock file): two test runs on the same
//! machine (two sessions, or `cargo test` beside a single binary) would
//! otherwise purge each other's images.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{run, Server};
use crate::rbd_support::{ceph_conf, rbd, rbd_ls, rbd_snaps};
use crate::snapshot_support::{log_of, POLL};
use serde_json::Value;

pub const POOLS: [&str; 3] = ["rp-images", "rp-vms", "rp-volumes"];
pub const VMS: &str = "rp-vms";

fn quiet_rbd(args: &[&str]) {
    let _ = Command::new("rbd")
        .arg("-c")
        .arg(ceph_conf())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Creates the test's pools once (size 1, as the dev cluster's).
fn ensure_pools() {
    let conf = ceph_conf();
    for pool in POOLS {
        let listed = Command::new("rbd")
            .args(["-c", conf.to_str().unwrap(), "ls", pool])
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
                    pool,
                    "8",
                    "8",
                ],
            );
            rbd(&["pool", "init", pool]);
        }
    }
}

/// Empties the test's pools: clones first, a few rounds.
fn purge_pools() {
    for _ in 0..5 {
        for pool in POOLS {
            for image in rbd_ls(pool) {
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

/// One service at a time on the test's pools.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A `snapstack serve` on the test's pools; stops its QEMUs and purges the
/// pools when dropped.
pub struct RbdPoints {
    pub server: Server,
    _config: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
    /// Locked (exclusive) while the pools are this process's.
    _lock: std::fs::File,
}

impl RbdPoints {
    pub fn start(env: &[(&str, &str)]) -> Self {
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("snapstack-test-rp-pools.lock"))
            .unwrap();
        lock.lock().unwrap();
        ensure_pools();
        purge_pools();
        let config = tempfile::tempdir().unwrap();
        let path = config.path().join("storage.toml");
        std::fs::write(
            &path,
            format!(
                "[rbd]\nconf = \"{}\"\nuser = \"admin\"\nimages_pool = \"rp-images\"\n\
                 vms_pool = \"rp-vms\"\nvolumes_pool = \"rp-volumes\"\ntimeout_seconds = 5\n",
                ceph_conf().display()
            ),
        )
        .unwrap();
        let server = Server::start_full(&["--storage-config", path.to_str().unwrap()], env);
        server.add_guest_image_and_flavor();
        Self {
            server,
            _config: config,
            _turn: turn,
            _lock: lock,
        }
    }
}

impl Drop for RbdPoints {
    fn drop(&mut self) {
        let qemus = self.server.qemu_pids();
        self.server.kill();
        for pid in &qemus {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while qemus
            .iter()
            .any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        purge_pools();
    }
}

/// A read-only query of the service's database (one column).
pub fn query(server: &Server, sql: &str) -> String {
    let script = format!(
        "import sqlite3, sys\n\
         db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
         print('\\n'.join(str(r[0]) for r in db.execute(\"{sql}\")))\n"
    );
    let db = server.data_dir().join("snapstack.db");
    run("python3", &["-c", &script, db.to_str().unwrap()])
}

/// `pool/image[@snap]` of an RBD location `rbd://fsid/pool/image[/snap]`.
pub fn spec_of(location: &str) -> String {
    let parts: Vec<&str> = location
        .strip_prefix("rbd://")
        .unwrap_or_else(|| panic!("not an RBD location: {location}"))
        .split('/')
        .collect();
    match parts.as_slice() {
        [_, pool, image] => format!("{pool}/{image}"),
        [_, pool, image, snap] => format!("{pool}/{image}@{snap}"),
        _ => panic!("not an RBD location: {location}"),
    }
}

/// The point's snapshot of the root disk (`pool/disk@snap`), from the database.
pub fn point_snapshot(server: &Server, id: &str) -> String {
    let disks = query(
        server,
        &format!("SELECT disks FROM restore_points WHERE id = '{id}'"),
    );
    let disks: Value = serde_json::from_str(disks.trim()).unwrap();
    spec_of(disks[0]["layer"].as_str().unwrap())
}

/// The point's memory image (`pool/image`), if any, from the database.
pub fn point_state(server: &Server, id: &str) -> Option<String> {
    let state = query(
        server,
        &format!("SELECT state_file FROM restore_points WHERE id = '{id}'"),
    );
    let state = state.trim();
    (state != "None" && !state.is_empty()).then(|| spec_of(state))
}

/// The server's disk (`pool/image`), from the database.
pub fn server_disk(server: &Server, vm: &str) -> String {
    spec_of(
        query(
            server,
            &format!("SELECT root_disk FROM servers WHERE id = '{vm}'"),
        )
        .trim(),
    )
}

/// The guest's log on an RBD image or snapshot: (boot, last_seq, corrupt).
pub fn rbd_log(server: &Server, spec: &str) -> (u64, u64, u64) {
    let file = server
        .dir
        .path()
        .join(format!("{}.export", spec.replace(['/', '@'], "_")));
    let _ = std::fs::remove_file(&file);
    rbd(&["export", "--no-progress", spec, file.to_str().unwrap()]);
    let log = log_of(&file);
    let _ = std::fs::remove_file(&file);
    log
}

/// `pool/image@snap` of the parent of `spec`, if it is a clone.
pub fn rbd_parent(spec: &str) -> Option<String> {
    let info: Value = serde_json::from_str(&rbd(&["info", "--format", "json", spec])).unwrap();
    let parent = info.get("parent")?;
    Some(format!(
        "{}/{}@{}",
        parent["pool"].as_str()?,
        parent["image"].as_str()?,
        parent["snapshot"].as_str()?
    ))
}

/// Every image of the vms pool with its snapshots: `image` and `image@snap`.
pub fn vms_contents() -> Vec<String> {
    let mut all = Vec::new();
    for image in rbd_ls(VMS) {
        let spec = format!("{VMS}/{image}");
        for (snap, _) in rbd_snaps(&spec) {
            all.push(format!("{spec}@{snap}"));
        }
        all.push(spec);
    }
    all.sort();
    all
}

/// What the records need in the vms pool: servers' disks, points'
/// snapshots (with their disks) and memory images, and the parents of any
/// of those (a clone keeps its parent snapshot and that snapshot's disk).
pub fn vms_needed(server: &Server) -> Vec<String> {
    let mut needed = std::collections::BTreeSet::new();
    for disk in query(
        server,
        "SELECT root_disk FROM servers WHERE vm_state != 'deleted' AND root_disk IS NOT NULL",
    )
    .lines()
    .filter(|l| l.starts_with("rbd://"))
    {
        needed.insert(spec_of(disk));
    }
    for disks in query(server, "SELECT disks FROM restore_points")
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let disks: Value = serde_json::from_str(disks).unwrap();
        for disk in disks.as_array().unwrap() {
            let snap = spec_of(disk["layer"].as_str().unwrap());
            needed.insert(snap.split('@').next().unwrap().to_string());
            needed.insert(snap);
        }
    }
    for state in query(
        server,
        "SELECT state_file FROM restore_points WHERE state_file IS NOT NULL",
    )
    .lines()
    .filter(|l| l.starts_with("rbd://"))
    {
        needed.insert(spec_of(state));
    }
    // Parents, transitively, within the vms pool.
    let mut todo: Vec<String> = needed
        .iter()
        .filter(|s| !s.contains('@'))
        .cloned()
        .collect();
    while let Some(image) = todo.pop() {
        if let Some(parent) = rbd_parent(&image).filter(|p| p.starts_with(&format!("{VMS}/"))) {
            let disk = parent.split('@').next().unwrap().to_string();
            needed.insert(parent);
            if needed.insert(disk.clone()) {
                todo.push(disk);
            }
        }
    }
    needed.into_iter().collect()
}

/// The vms pool holds exactly what the records need (within 30 s: garbage
/// collection runs after each operation).
pub fn assert_vms_only_needed(server: &Server, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (have, need) = (vms_contents(), vms_needed(server));
        if have == need {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: the vms pool holds {have:?}, the records need {need:?}"
        );
        std::thread::sleep(POLL);
    }
}

pub fn data_file(server: &Server, name: &str) -> PathBuf {
    server.dir.path().join(name)
}
