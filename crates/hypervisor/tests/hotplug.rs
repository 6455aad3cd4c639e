//! Disk hot-plug on real QEMU with the project's test guest writing its
//! sequence: a disk attached to a live guest is found and written by it, a
//! restore point cuts the boot disk and the hot-plugged disk in one
//! transaction, and a detached disk is released by the guest and by QEMU
//! (its file is no longer open). Opt-in (boots Linux under TCG):
//!
//! ```text
//! scripts/build-guest.sh && cargo test -p hypervisor --test hotplug -- --ignored
//! ```

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hypervisor::{DiskFormat, DiskOverlay, DiskSource, DiskSpec, Hypervisor, VmStatus};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const UNPLUG_TIMEOUT: Duration = Duration::from_secs(30);

fn blank_disk(path: &Path) -> DiskSpec {
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg("64M")
        .status()
        .unwrap();
    assert!(status.success());
    DiskSpec {
        id: "vol-0123456789ab".to_string(),
        source: DiskSource::File(path.to_path_buf()),
        format: DiskFormat::Qcow2,
        read_only: false,
    }
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

/// `corrupt` of the guest's log on a disk image: records not where its
/// header says they belong (another disk's writes land so).
fn corrupt_on(image: &Path) -> u64 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/guest-check.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(image)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let at = text.find("\"corrupt\": ").unwrap() + "\"corrupt\": ".len();
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether a process holds the image's lock (`qemu-img info` without `-U`
/// fails on an image QEMU has open for writing).
fn is_open_by_qemu(image: &Path) -> bool {
    let output = Command::new("qemu-img")
        .arg("info")
        .arg(image)
        .output()
        .unwrap();
    !output.status.success()
}

fn file_of(disk: &DiskSpec) -> PathBuf {
    match &disk.source {
        DiskSource::File(path) => path.clone(),
        other => panic!("not a file disk: {other:?}"),
    }
}

#[tokio::test]
#[ignore = "boots the test guest from build/guest (scripts/build-guest.sh)"]
async fn disk_when_hot_plugged_then_guest_writes_it_and_when_unplugged_then_released() {
    let harness = common::Harness::new();
    let spec = harness.guest_spec("vm1");
    harness.driver.start(&spec).await.unwrap();
    harness
        .wait_console_for("vm1", "READY disks=1", BOOT_TIMEOUT)
        .await;
    let extra = blank_disk(&harness.root.path().join("extra.qcow2"));

    harness.driver.attach_disk("vm1", &extra).await.unwrap();
    harness.driver.attach_disk("vm1", &extra).await.unwrap();
    let console = harness
        .wait_console_for("vm1", "RESET vdb", Duration::from_secs(20))
        .await;
    let seqs_seen = console.matches("SEQ ").count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while harness
        .driver
        .console_log("vm1", None)
        .await
        .unwrap()
        .matches("SEQ ")
        .count()
        < seqs_seen + 2
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(is_open_by_qemu(&file_of(&extra)));
    harness
        .driver
        .detach_disk("vm1", &extra.id, UNPLUG_TIMEOUT)
        .await
        .unwrap();
    harness
        .driver
        .detach_disk("vm1", &extra.id, UNPLUG_TIMEOUT)
        .await
        .unwrap();

    let console = harness
        .wait_console_for("vm1", "UNPLUG vdb", Duration::from_secs(10))
        .await;
    assert!(console.contains("HOTPLUG vdb"), "{console}");
    assert!(!is_open_by_qemu(&file_of(&extra)));
    assert!(last_seq_on(&file_of(&extra)) > 0);
    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Running
    );
}

#[tokio::test]
#[ignore = "boots the test guest from build/guest (scripts/build-guest.sh)"]
async fn restore_point_when_disk_hot_plugged_then_both_disks_cut_at_one_instant() {
    let harness = common::Harness::new();
    let spec = harness.guest_spec("vm1");
    let root_top = file_of(&spec.disks[0]);
    harness.driver.start(&spec).await.unwrap();
    harness
        .wait_console_for("vm1", "READY disks=1", BOOT_TIMEOUT)
        .await;
    let extra = blank_disk(&harness.root.path().join("extra.qcow2"));
    harness.driver.attach_disk("vm1", &extra).await.unwrap();
    harness
        .wait_console_for("vm1", "RESET vdb", Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let disks = [
        DiskOverlay {
            disk_id: "disk0".to_string(),
            overlay: harness.root.path().join("root-p1.qcow2"),
        },
        DiskOverlay {
            disk_id: extra.id.clone(),
            overlay: harness.root.path().join("extra-p1.qcow2"),
        },
    ];

    harness
        .driver
        .create_restore_point("vm1", &disks, None)
        .await
        .unwrap();

    let extra_top = harness
        .driver
        .active_disk_file("vm1", &extra.id)
        .await
        .unwrap();
    assert_eq!(extra_top, disks[1].overlay);
    harness.driver.destroy("vm1").await.unwrap();
    let (root_seq, extra_seq) = (last_seq_on(&root_top), last_seq_on(&file_of(&extra)));
    assert!(root_seq > 0);
    assert!(
        root_seq == extra_seq || root_seq == extra_seq + 1,
        "the cut split the lockstep: boot disk at {root_seq}, hot-plugged disk at {extra_seq}"
    );
}

#[tokio::test]
async fn attach_disk_when_vm_shut_off_then_not_running() {
    let harness = common::Harness::new();
    let spec = harness.spec("vm1");
    harness.driver.start(&spec).await.unwrap();
    harness.driver.destroy("vm1").await.unwrap();
    let extra = blank_disk(&harness.root.path().join("extra.qcow2"));

    let err = harness.driver.attach_disk("vm1", &extra).await.unwrap_err();

    assert_eq!(err.kind(), hypervisor::ErrorKind::NotRunning);
}

#[tokio::test]
async fn attach_disk_when_started_again_from_spec_with_it_then_boots_with_both() {
    let harness = common::Harness::new();
    let mut spec = harness.spec("vm1");
    harness.driver.start(&spec).await.unwrap();
    let extra = blank_disk(&harness.root.path().join("extra.qcow2"));
    harness.driver.attach_disk("vm1", &extra).await.unwrap();
    harness.driver.destroy("vm1").await.unwrap();
    spec.disks.push(extra.clone());

    harness.driver.start(&spec).await.unwrap();

    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Running
    );
    assert!(is_open_by_qemu(&file_of(&extra)));
}

fn blank_disk_named(harness: &common::Harness, id: &str) -> DiskSpec {
    let mut disk = blank_disk(&harness.root.path().join(format!("{id}.qcow2")));
    disk.id = id.to_string();
    disk
}

#[tokio::test]
#[ignore = "boots the test guest from build/guest (scripts/build-guest.sh)"]
async fn memory_state_when_disks_unplugged_and_plugged_then_restored_with_each_disk_on_its_port() {
    let harness = common::Harness::new();
    let mut spec = harness.guest_spec("vm1");
    let (one, three) = (
        blank_disk_named(&harness, "vol-one"),
        blank_disk_named(&harness, "vol-three"),
    );
    spec.disks.extend([one.clone(), three.clone()]);
    harness.driver.start(&spec).await.unwrap();
    harness
        .wait_console_for("vm1", "READY disks=3", BOOT_TIMEOUT)
        .await;
    harness
        .driver
        .detach_disk("vm1", &one.id, UNPLUG_TIMEOUT)
        .await
        .unwrap();
    let two = blank_disk_named(&harness, "vol-two");
    harness.driver.attach_disk("vm1", &two).await.unwrap();
    harness
        .wait_console_for("vm1", "HOTPLUG vdb", Duration::from_secs(20))
        .await;
    let state = harness.root.path().join("vm1.state");

    harness.driver.save_memory("vm1", &state).await.unwrap();
    // The order a caller may well give: not the order of the ports.
    spec.disks = vec![spec.disks[0].clone(), three.clone(), two.clone()];
    let before = harness.driver.console_log("vm1", None).await.unwrap();
    harness.driver.start_incoming(&spec, &state).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let after = harness.driver.console_log("vm1", None).await.unwrap();
    let since = &after[before.len()..];
    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Running
    );
    assert!(since.contains("SEQ "), "the guest writes on: {since}");
    assert!(!since.contains("SNAPSTACK-GUEST"), "no reboot: {since}");
    assert!(
        !since.contains("UNPLUG") && !since.contains("ERROR"),
        "{since}"
    );
    assert!(is_open_by_qemu(&file_of(&two)) && is_open_by_qemu(&file_of(&three)));
    assert!(!is_open_by_qemu(&file_of(&one)));
    harness.driver.destroy("vm1").await.unwrap();
    for disk in [&two, &three] {
        assert_eq!(
            corrupt_on(&file_of(disk)),
            0,
            "{} got another disk's writes",
            disk.id
        );
        assert!(last_seq_on(&file_of(disk)) > 0);
    }
}
