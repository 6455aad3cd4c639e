//! Guest-agent quiesce and the pause log on real QEMU.
//!
//! The tests on a blank VM (SeaBIOS only: no agent) run by default. The freeze/thaw
//! round trip needs the project's test guest, whose agent freezes its disk writer:
//!
//! ```text
//! scripts/build-guest.sh && cargo test -p hypervisor --test agent -- --include-ignored
//! ```

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use hypervisor::{DiskSource, ErrorKind, Hypervisor, VmSpec, GUEST_AGENT_SYNC_TIMEOUT};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longer than the writer's tick (100 ms) and print period (1 s).
const QUIET_PERIOD: Duration = Duration::from_millis(2_500);

fn guest_dir() -> PathBuf {
    std::env::var_os("SNAPSTACK_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../build/guest"))
}

/// The test guest booting from `guest-noagent.qcow2`: the same guest, no agent.
fn guest_without_agent_spec(harness: &common::Harness, name: &str) -> VmSpec {
    let base = guest_dir().join("guest-noagent.qcow2");
    assert!(
        base.exists(),
        "{} missing: run scripts/build-guest.sh",
        base.display()
    );
    let overlay = harness.root.path().join(format!("{name}-noagent.qcow2"));
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base)
        .arg(&overlay)
        .status()
        .unwrap();
    assert!(status.success());
    let mut spec = harness.guest_spec(name);
    spec.disks[0].source = DiskSource::File(overlay);
    spec
}

/// The numbers of every `SEQ <n>` line in `text`.
fn seqs(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| line.split("SEQ ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// `last_seq` of the first line starting with `word` (`FROZEN`, `THAWED`).
fn last_seq_of(text: &str, word: &str) -> u64 {
    let line = text
        .lines()
        .find(|line| line.contains(&format!("{word} last_seq=")))
        .unwrap_or_else(|| panic!("no {word} line in {text}"));
    let value = line.split("last_seq=").nth(1).unwrap();
    value.split_whitespace().next().unwrap().parse().unwrap()
}

/// What the console gained after `before` (its length at some earlier moment).
async fn console_since(harness: &common::Harness, name: &str, before: usize) -> String {
    let log = harness.driver.console_log(name, None).await.unwrap();
    log[before..].to_string()
}

#[tokio::test]
async fn freeze_when_vm_has_no_agent_then_unavailable_within_the_sync_timeout() {
    let harness = common::Harness::new();
    harness.driver.start(&harness.spec("vm1")).await.unwrap();
    let started = Instant::now();

    let error = harness
        .driver
        .freeze_filesystems("vm1", FREEZE_TIMEOUT)
        .await
        .unwrap_err();

    assert_eq!(error.kind(), ErrorKind::GuestAgentUnavailable, "{error}");
    assert!(started.elapsed() < GUEST_AGENT_SYNC_TIMEOUT + Duration::from_secs(2));
}

#[tokio::test]
async fn freeze_when_vm_paused_then_unavailable_at_once() {
    let harness = common::Harness::new();
    harness.driver.start(&harness.spec("vm1")).await.unwrap();
    harness.driver.pause("vm1").await.unwrap();
    let started = Instant::now();

    let error = harness
        .driver
        .freeze_filesystems("vm1", FREEZE_TIMEOUT)
        .await
        .unwrap_err();

    assert_eq!(error.kind(), ErrorKind::GuestAgentUnavailable, "{error}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn pause_log_when_stopped_then_continued_then_one_closed_span() {
    let harness = common::Harness::new();
    harness.driver.start(&harness.spec("vm1")).await.unwrap();

    harness.driver.pause("vm1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    harness.driver.resume("vm1").await.unwrap();

    // The events may arrive just after the replies.
    let mut spans = harness.driver.pause_log("vm1").await.unwrap();
    for _ in 0..50 {
        if spans.first().is_some_and(|s| s.duration.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        spans = harness.driver.pause_log("vm1").await.unwrap();
    }
    assert_eq!(spans.len(), 1, "{spans:?}");
    let paused = spans[0].duration.unwrap();
    assert!(paused >= Duration::from_millis(150), "{paused:?}");
    assert!(paused < Duration::from_secs(5), "{paused:?}");
}

#[tokio::test]
async fn pause_log_when_destroyed_while_paused_then_span_ends_with_qemu() {
    let harness = common::Harness::new();
    harness.driver.start(&harness.spec("vm1")).await.unwrap();
    harness.driver.pause("vm1").await.unwrap();

    harness.driver.destroy("vm1").await.unwrap();

    let mut spans = harness.driver.pause_log("vm1").await.unwrap();
    for _ in 0..50 {
        if spans.first().is_some_and(|s| s.duration.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        spans = harness.driver.pause_log("vm1").await.unwrap();
    }
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert!(spans[0].duration.is_some(), "{spans:?}");
}

#[tokio::test]
async fn pause_log_when_live_disk_snapshot_then_no_span() {
    let harness = common::Harness::new();
    harness.driver.start(&harness.spec("vm1")).await.unwrap();
    let overlay = harness.root.path().join("vm1-disk0-snap.qcow2");

    harness
        .driver
        .snapshot_disk("vm1", "disk0", &overlay)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_eq!(harness.driver.pause_log("vm1").await.unwrap(), []);
    assert_eq!(
        harness
            .driver
            .active_disk_file("vm1", "disk0")
            .await
            .unwrap(),
        overlay
    );
}

#[tokio::test]
async fn pause_log_when_vm_unknown_then_not_found() {
    let harness = common::Harness::new();

    let error = harness.driver.pause_log("nobody").await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::NotFound);
}

#[tokio::test]
#[ignore = "boots the test guest from build/guest (scripts/build-guest.sh)"]
async fn freeze_then_thaw_when_guest_has_agent_then_writer_stops_then_continues() {
    let harness = common::Harness::new();
    harness
        .driver
        .start(&harness.guest_spec("vm1"))
        .await
        .unwrap();
    harness
        .wait_console_for("vm1", "AGENT ready", BOOT_TIMEOUT)
        .await;
    harness
        .wait_console_for("vm1", "SEQ 10 ", BOOT_TIMEOUT)
        .await;
    let before = harness.driver.console_log("vm1", None).await.unwrap().len();

    let freeze_started = Instant::now();
    let frozen = harness
        .driver
        .freeze_filesystems("vm1", FREEZE_TIMEOUT)
        .await
        .unwrap();
    let freeze_took = freeze_started.elapsed();
    let reported_frozen = harness.driver.filesystems_frozen("vm1").await.unwrap();
    tokio::time::sleep(QUIET_PERIOD).await;
    let while_frozen = console_since(&harness, "vm1", before).await;
    let thaw_started = Instant::now();
    let thawed = harness.driver.thaw_filesystems("vm1").await.unwrap();
    let thaw_took = thaw_started.elapsed();
    let frozen_at = last_seq_of(&while_frozen, "FROZEN");
    let after_thaw = harness
        .wait_console_for(
            "vm1",
            &format!("SEQ {} ", (frozen_at / 10 + 1) * 10),
            QUIET_PERIOD,
        )
        .await;
    eprintln!("freeze took {freeze_took:?}, thaw took {thaw_took:?}");

    assert_eq!((frozen, thawed), (1, 1));
    assert!(reported_frozen);
    let frozen_part = &while_frozen[while_frozen.find("FROZEN").unwrap()..];
    assert_eq!(seqs(frozen_part), Vec::<u64>::new(), "{while_frozen}");
    assert_eq!(last_seq_of(&after_thaw[before..], "THAWED"), frozen_at);
    assert!(!harness.driver.filesystems_frozen("vm1").await.unwrap());
}

#[tokio::test]
#[ignore = "boots the test guest from build/guest (scripts/build-guest.sh)"]
async fn thaw_when_guest_not_frozen_then_zero_and_writer_undisturbed() {
    let harness = common::Harness::new();
    harness
        .driver
        .start(&harness.guest_spec("vm1"))
        .await
        .unwrap();
    harness
        .wait_console_for("vm1", "AGENT ready", BOOT_TIMEOUT)
        .await;
    harness
        .wait_console_for("vm1", "SEQ 10 ", BOOT_TIMEOUT)
        .await;
    let before = harness.driver.console_log("vm1", None).await.unwrap().len();

    let thawed = harness.driver.thaw_filesystems("vm1").await.unwrap();
    tokio::time::sleep(QUIET_PERIOD).await;

    let since = console_since(&harness, "vm1", before).await;
    assert_eq!(thawed, 0);
    assert!(!since.contains("THAWED"), "{since}");
    assert!(seqs(&since).len() >= 2, "{since}");
}

#[tokio::test]
#[ignore = "boots the test guest from build/guest (scripts/build-guest.sh)"]
async fn freeze_when_guest_booted_without_agent_then_unavailable_fast_and_writer_undisturbed() {
    let harness = common::Harness::new();
    harness
        .driver
        .start(&guest_without_agent_spec(&harness, "vm1"))
        .await
        .unwrap();
    harness
        .wait_console_for("vm1", "AGENT off", BOOT_TIMEOUT)
        .await;
    harness
        .wait_console_for("vm1", "SEQ 10 ", BOOT_TIMEOUT)
        .await;
    let started = Instant::now();

    let error = harness
        .driver
        .freeze_filesystems("vm1", FREEZE_TIMEOUT)
        .await
        .unwrap_err();

    let took = started.elapsed();
    eprintln!("no-agent freeze failed after {took:?}");
    assert_eq!(error.kind(), ErrorKind::GuestAgentUnavailable, "{error}");
    assert!(took < GUEST_AGENT_SYNC_TIMEOUT + Duration::from_secs(2));
    let console = harness.driver.console_log("vm1", None).await.unwrap();
    assert!(!console.contains("FROZEN"), "{console}");
}

/// `last_seq` of the record log in a disk image, read by `scripts/guest-check.py`.
fn disk_last_seq(image: &std::path::Path) -> u64 {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/guest-check.py");
    let output = Command::new("python3")
        .arg(script)
        .args(["--format", "qcow2"])
        .arg(image)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    report["last_seq"].as_u64().unwrap()
}

#[tokio::test]
#[ignore = "boots the test guest from build/guest (scripts/build-guest.sh)"]
async fn snapshot_disk_when_guest_frozen_then_snapshot_ends_at_the_frozen_record_without_pause() {
    let harness = common::Harness::new();
    let spec = harness.guest_spec("vm1");
    let DiskSource::File(old_top) = spec.disks[0].source.clone() else {
        unreachable!("guest_spec gives a file disk")
    };
    harness.driver.start(&spec).await.unwrap();
    harness
        .wait_console_for("vm1", "AGENT ready", BOOT_TIMEOUT)
        .await;
    harness
        .wait_console_for("vm1", "SEQ 10 ", BOOT_TIMEOUT)
        .await;
    let overlay = harness.root.path().join("vm1-snap.qcow2");
    let pauses_before = harness.driver.pause_log("vm1").await.unwrap();

    harness
        .driver
        .freeze_filesystems("vm1", FREEZE_TIMEOUT)
        .await
        .unwrap();
    let snapshot = harness.driver.snapshot_disk("vm1", "disk0", &overlay).await;
    harness.driver.thaw_filesystems("vm1").await.unwrap();
    snapshot.unwrap();
    let console = harness.wait_console("vm1", "THAWED").await;

    let frozen_at = last_seq_of(&console, "FROZEN");
    assert_eq!(disk_last_seq(&old_top), frozen_at);
    assert_eq!(
        harness.driver.pause_log("vm1").await.unwrap(),
        pauses_before
    );
}
