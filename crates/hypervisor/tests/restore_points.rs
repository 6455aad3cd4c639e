//! Restore points on real QEMU with the project's test guest writing its
//! sequence: disk-only points never stop the guest, memory points stop it for
//! milliseconds, and a revert from a memory point on a new overlay continues
//! from the point's RAM counter over exactly the point's disk. Opt-in (boots
//! Linux under TCG):
//!
//! ```text
//! scripts/build-guest.sh && cargo test -p hypervisor --test restore_points -- --ignored
//! ```

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hypervisor::{DiskOverlay, DiskSource, Hypervisor, InternalSnapshot, VmStatus};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

fn overlay(path: &Path) -> Vec<DiskOverlay> {
    vec![DiskOverlay {
        disk_id: "disk0".to_string(),
        overlay: path.to_path_buf(),
    }]
}

/// The `SEQ n ram=k` lines of a console text, as (n, k).
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

/// `last_seq` of the guest's log on a disk image (scripts/guest-check.py).
fn last_seq_on(image: &Path) -> u64 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/guest-check.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(image)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let at = text.find("\"last_seq\": ").unwrap() + "\"last_seq\": ".len();
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn qemu_img_check(image: &Path) {
    let status = Command::new("qemu-img")
        .args(["check", "-q", "-U"])
        .arg(image)
        .status()
        .unwrap();
    assert!(status.success(), "qemu-img check {}", image.display());
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

#[tokio::test]
#[ignore = "boots the test guest from build/guest (scripts/build-guest.sh)"]
async fn revert_to_memory_point_when_guest_kept_writing_then_continues_from_point_ram_and_disk() {
    let harness = common::Harness::new();
    let mut spec = harness.guest_spec("vm1");
    let DiskSource::File(base_top) = spec.disks[0].source.clone() else {
        unreachable!()
    };
    harness.driver.start(&spec).await.unwrap();
    wait_seq_beyond(&harness, "vm1", 2).await;
    let a_top = harness.root.path().join("vm1-a.qcow2");
    let b_top = harness.root.path().join("vm1-b.qcow2");
    let b_state = harness.root.path().join("vm1-b.state");

    let a = harness
        .driver
        .create_restore_point("vm1", &overlay(&a_top), None)
        .await
        .unwrap();
    wait_seq_beyond(&harness, "vm1", 4).await;
    let b = harness
        .driver
        .create_restore_point("vm1", &overlay(&b_top), Some(&b_state))
        .await
        .unwrap();
    let before_revert = wait_seq_beyond(&harness, "vm1", 7).await;
    let b_last_seq = last_seq_on(&a_top);
    let reverted_top = harness.root.path().join("vm1-r.qcow2");
    let created = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&a_top)
        .arg(&reverted_top)
        .status()
        .unwrap();
    assert!(created.success());
    spec.disks[0].source = DiskSource::File(reverted_top.clone());
    harness.driver.destroy("vm1").await.unwrap();
    let revert_started = std::time::Instant::now();
    harness
        .driver
        .start_incoming(&spec, &b_state)
        .await
        .unwrap();
    let revert_took = revert_started.elapsed();
    let after = wait_seq_beyond(&harness, "vm1", seq_lines(&before_revert).len() + 2).await;

    eprintln!(
        "disk-only point: pause {:?} (stopped: {}), total {:?}; memory point: pause {:?}, total {:?}; revert {revert_took:?}",
        a.guest_pause, a.stopped, a.total, b.guest_pause, b.total
    );
    assert!(!a.stopped, "a disk-only point stopped the guest");
    assert!(b.stopped);
    assert!(
        b.guest_pause < Duration::from_secs(1),
        "{:?}",
        b.guest_pause
    );
    let (first_seq_after, first_ram_after) = seq_lines(&after)[seq_lines(&before_revert).len()];
    let (last_seq_before, _) = *seq_lines(&before_revert).last().unwrap();
    assert!(
        first_seq_after > b_last_seq && first_seq_after <= b_last_seq + 10,
        "B's disk ends at {b_last_seq}, the guest went on at {first_seq_after}"
    );
    assert!(first_seq_after < last_seq_before);
    let (seq0, ram0) = seq_lines(&before_revert)[0];
    assert_eq!(
        first_seq_after - first_ram_after,
        seq0 - ram0,
        "after the revert the RAM counter goes on with the sequence, as in the run B was taken in"
    );
    assert!(!after[before_revert.len()..].contains("SNAPSTACK-GUEST boot="));
    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Running
    );
    for file in [&base_top, &a_top, &b_top] {
        qemu_img_check(file);
    }
}

#[tokio::test]
#[ignore = "boots the test guest from build/guest (scripts/build-guest.sh)"]
async fn internal_snapshot_when_loaded_after_more_writes_then_guest_back_at_the_save() {
    let harness = common::Harness::new();
    let spec = harness.guest_spec("vm1");
    harness.driver.start(&spec).await.unwrap();
    wait_seq_beyond(&harness, "vm1", 2).await;
    let disks = ["disk0".to_string()];

    let saved = harness
        .driver
        .internal_snapshot("vm1", &disks, InternalSnapshot::Save, "p1")
        .await
        .unwrap();
    let at_save = wait_seq_beyond(&harness, "vm1", 3).await;
    let before_load = wait_seq_beyond(&harness, "vm1", seq_lines(&at_save).len() + 3).await;
    let loaded = harness
        .driver
        .internal_snapshot("vm1", &disks, InternalSnapshot::Load, "p1")
        .await
        .unwrap();
    let after = wait_seq_beyond(&harness, "vm1", seq_lines(&before_load).len() + 1).await;
    let deleted = harness
        .driver
        .internal_snapshot("vm1", &disks, InternalSnapshot::Delete, "p1")
        .await;

    eprintln!(
        "internal save: pause {:?}, total {:?}; load: pause {:?}, total {:?}",
        saved.guest_pause, saved.total, loaded.guest_pause, loaded.total
    );
    assert!(saved.stopped && loaded.stopped);
    let saved_at = seq_lines(&at_save)[seq_lines(&at_save).len() - 1].0;
    let (last_before_load, _) = *seq_lines(&before_load).last().unwrap();
    let (first_after_load, _) = seq_lines(&after)[seq_lines(&before_load).len()];
    assert!(
        first_after_load < last_before_load && first_after_load <= saved_at,
        "after the load the guest went on at {first_after_load} (saved near {saved_at}, was at {last_before_load})"
    );
    assert!(deleted.is_ok(), "{deleted:?}");
    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Running
    );
}
