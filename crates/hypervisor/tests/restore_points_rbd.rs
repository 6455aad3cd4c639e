//! Native (RBD) restore points on real QEMU and the Ceph dev cluster, with
//! the project's test guest writing its sequence on an RBD disk: a
//! disk-only point is an RBD snapshot taken without stopping the guest; a
//! memory point stops it for milliseconds and streams the memory into an RBD
//! image (`rbd import`); a QEMU started on a clone of the point's snapshot
//! with that image as its incoming stream (`rbd export`) continues from the
//! point's RAM counter over exactly the point's disk. Opt-in (boots Linux
//! under TCG; needs the cluster `CEPH_CONF` names):
//!
//! ```text
//! scripts/build-guest.sh && scripts/ceph-dev.sh start && eval "$(scripts/ceph-dev.sh env)"
//! cargo test -p hypervisor --test restore_points_rbd -- --ignored
//! ```
//! Runs in a pool of its own (`hv-rp`, made if missing), emptied at the end.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hypervisor::{
    DiskFormat, DiskSource, Hypervisor, MemoryState, NativeSnapshot, RbdState, VmStatus,
};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const POOL: &str = "hv-rp";

fn conf() -> PathBuf {
    PathBuf::from(std::env::var_os("CEPH_CONF").expect("CEPH_CONF names the dev cluster"))
}

fn rbd(args: &[&str]) -> String {
    let out = Command::new("rbd")
        .arg("-c")
        .arg(conf())
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "rbd {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn quiet_rbd(args: &[&str]) {
    let _ = Command::new("rbd")
        .arg("-c")
        .arg(conf())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Makes the test's pool if missing, and empties it.
fn fresh_pool() {
    let listed = Command::new("rbd")
        .arg("-c")
        .arg(conf())
        .args(["ls", POOL])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    if !listed.success() {
        let made = Command::new("ceph")
            .arg("-c")
            .arg(conf())
            .args(["osd", "pool", "create", POOL, "8", "8"])
            .status()
            .unwrap();
        assert!(made.success());
        rbd(&["pool", "init", POOL]);
    }
    purge_pool();
}

fn purge_pool() {
    for _ in 0..3 {
        for image in rbd(&["ls", POOL]).lines() {
            let spec = format!("{POOL}/{image}");
            for snap in ["a", "b"] {
                quiet_rbd(&["snap", "unprotect", &format!("{spec}@{snap}")]);
            }
            quiet_rbd(&["snap", "purge", "--no-progress", &spec]);
            quiet_rbd(&["rm", "--no-progress", &spec]);
        }
    }
}

fn seq_lines(console: &str) -> Vec<(u64, u64)> {
    console
        .lines()
        .filter_map(|line| {
            let rest = &line[line.find("SEQ ")? + 4..];
            let (seq, ram) = rest.trim().split_once(" ram=")?;
            Some((seq.parse().ok()?, ram.trim().parse().ok()?))
        })
        .collect()
}

/// `last_seq` of the guest's log on an RBD image or snapshot (exported).
fn last_seq_on(spec: &str, dir: &Path) -> u64 {
    let file = dir.join(format!("{}.raw", spec.replace(['/', '@'], "_")));
    rbd(&["export", "--no-progress", spec, file.to_str().unwrap()]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/guest-check.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    v["last_seq"].as_u64().unwrap()
}

async fn wait_seq_beyond(harness: &common::Harness, name: &str, at_least: usize) -> String {
    let deadline = tokio::time::Instant::now() + BOOT_TIMEOUT;
    loop {
        let console = harness.driver.console_log(name, None).await.unwrap();
        if seq_lines(&console).len() >= at_least {
            return console;
        }
        assert!(tokio::time::Instant::now() < deadline, "{console}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rbd_disk(image: &str) -> DiskSource {
    DiskSource::Rbd {
        pool: POOL.into(),
        image: image.into(),
        snapshot: None,
        conf: Some(conf()),
        user: None,
    }
}

#[tokio::test]
#[ignore = "boots the test guest on the Ceph dev cluster (CEPH_CONF)"]
async fn native_points_when_guest_writes_on_rbd_then_snapshot_unpaused_and_memory_revert_continues()
{
    fresh_pool();
    let harness = common::Harness::new();
    let mut spec = harness.guest_spec("vm1");
    let guest_raw = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/guest/guest.raw");
    rbd(&[
        "import",
        "--no-progress",
        guest_raw.to_str().unwrap(),
        &format!("{POOL}/disk"),
    ]);
    spec.disks[0].source = rbd_disk("disk");
    spec.disks[0].format = DiskFormat::Raw;
    harness.driver.start(&spec).await.unwrap();
    wait_seq_beyond(&harness, "vm1", 2).await;
    let snap = |name: &str| {
        vec![NativeSnapshot {
            disk_id: spec.disks[0].id.clone(),
            name: name.into(),
        }]
    };
    let state = MemoryState::Rbd(RbdState {
        pool: POOL.into(),
        image: "b-mem".into(),
        conf: conf(),
        user: "admin".into(),
    });

    let a = harness
        .driver
        .create_native_point("vm1", &snap("a"), None)
        .await
        .unwrap();
    wait_seq_beyond(&harness, "vm1", 4).await;
    let b = harness
        .driver
        .create_native_point("vm1", &snap("b"), Some(&state))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !rbd(&["ls", POOL]).lines().any(|l| l == "b-mem") {
        assert!(std::time::Instant::now() < deadline, "b-mem never stored");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_seq_beyond(&harness, "vm1", 7).await;
    let b_last_seq = last_seq_on(&format!("{POOL}/disk@b"), harness.root.path());
    let a_last_seq = last_seq_on(&format!("{POOL}/disk@a"), harness.root.path());
    rbd(&["snap", "protect", &format!("{POOL}/disk@b")]);
    rbd(&[
        "clone",
        &format!("{POOL}/disk@b"),
        &format!("{POOL}/reverted"),
    ]);
    harness.driver.destroy("vm1").await.unwrap();
    let before_revert = harness.driver.console_log("vm1", None).await.unwrap();
    spec.disks[0].source = rbd_disk("reverted");
    let revert_started = std::time::Instant::now();
    harness
        .driver
        .start_incoming_from(&spec, &state)
        .await
        .unwrap();
    let revert_took = revert_started.elapsed();
    let after = wait_seq_beyond(&harness, "vm1", seq_lines(&before_revert).len() + 2).await;
    let status = harness.driver.status("vm1").await.unwrap();
    harness.driver.destroy("vm1").await.unwrap();
    purge_pool();

    eprintln!(
        "rbd disk-only point: pause {:?} (stopped: {}), total {:?}; memory point: pause {:?}, total {:?}; revert {revert_took:?}",
        a.guest_pause, a.stopped, a.total, b.guest_pause, b.total
    );
    assert!(!a.stopped, "a disk-only point stopped the guest");
    assert!(b.stopped);
    assert!(
        b.guest_pause < Duration::from_secs(1),
        "{:?}",
        b.guest_pause
    );
    assert!(a_last_seq < b_last_seq, "{a_last_seq} {b_last_seq}");
    let (first_seq_after, first_ram_after) = seq_lines(&after)[seq_lines(&before_revert).len()];
    assert!(
        first_seq_after > b_last_seq && first_seq_after <= b_last_seq + 10,
        "B's disk ends at {b_last_seq}, the guest went on at {first_seq_after}"
    );
    let (seq0, ram0) = seq_lines(&before_revert)[0];
    assert_eq!(first_seq_after - first_ram_after, seq0 - ram0);
    assert!(!after[before_revert.len()..].contains("SNAPSTACK-GUEST boot="));
    assert_eq!(status, VmStatus::Running);
}
