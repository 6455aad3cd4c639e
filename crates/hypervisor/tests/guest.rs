//! Graceful power-off and soft reboot need a guest that answers the ACPI power button:
//! the project's test guest; a stop that keeps every write QEMU accepted needs one that
//! ignores the button and never flushes (its `snapstack.power_button=ignore` and
//! `snapstack.flush=off`). The latter runs with every test (it guards against data
//! loss); the others are opt-in, since each boots Linux under TCG (~10 s):
//!
//! ```text
//! scripts/build-guest.sh && cargo test -p hypervisor --test guest -- --include-ignored
//! ```

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hypervisor::{DiskSource, Hypervisor, ShutoffReason, VmStatus};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(60);
const BANNER: &str = "SNAPSTACK-GUEST boot=";

#[tokio::test]
#[ignore = "boots the test guest from build/guest (scripts/build-guest.sh)"]
async fn shutdown_when_guest_booted_then_guest_powers_off_and_shutoff_shutdown() {
    let harness = common::Harness::new();
    let spec = harness.guest_spec("vm1");
    harness.driver.start(&spec).await.unwrap();
    harness.wait_console_for("vm1", BANNER, BOOT_TIMEOUT).await;

    harness
        .driver
        .shutdown("vm1", POWER_OFF_TIMEOUT)
        .await
        .unwrap();

    let reason = ShutoffReason::Shutdown;
    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Shutoff { reason }
    );
    let console = harness.driver.console_log("vm1", None).await.unwrap();
    assert!(console.contains("STOPPED"), "{console}");
}

#[tokio::test]
#[ignore = "boots the test guest from build/guest (scripts/build-guest.sh)"]
async fn reboot_when_guest_booted_then_power_cycled_into_a_second_boot() {
    let harness = common::Harness::new();
    let spec = harness.guest_spec("vm1");
    harness.driver.start(&spec).await.unwrap();
    harness
        .wait_console_for("vm1", "SNAPSTACK-GUEST boot=1", BOOT_TIMEOUT)
        .await;
    let pid = harness.qemu_pid("vm1");

    harness
        .driver
        .reboot("vm1", POWER_OFF_TIMEOUT)
        .await
        .unwrap();
    harness
        .wait_console_for("vm1", "SNAPSTACK-GUEST boot=2", BOOT_TIMEOUT)
        .await;

    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Running
    );
    assert_eq!(harness.qemu_pid("vm1"), pid);
}

#[tokio::test]
#[ignore = "boots the test guest from build/guest (scripts/build-guest.sh)"]
async fn start_incoming_when_guest_saved_while_writing_then_it_continues_without_reboot() {
    let harness = common::Harness::new();
    let spec = harness.guest_spec("vm1");
    harness.driver.start(&spec).await.unwrap();
    harness
        .wait_console_for("vm1", "SEQ 10 ", BOOT_TIMEOUT)
        .await;
    let state_file = harness.root.path().join("vm1.mem");
    harness
        .driver
        .save_memory("vm1", &state_file)
        .await
        .unwrap();
    let before = last_seq(&harness.driver.console_log("vm1", None).await.unwrap());

    harness
        .driver
        .start_incoming(&spec, &state_file)
        .await
        .unwrap();
    let next = format!("SEQ {} ", before + 10);
    let console = harness.wait_console_for("vm1", &next, BOOT_TIMEOUT).await;

    assert!(!console.contains("SNAPSTACK-GUEST boot=2"), "{console}");
    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Running
    );
}

#[tokio::test]
async fn shutdown_when_guest_ignores_power_button_and_never_flushes_then_accepted_writes_survive() {
    let harness = common::Harness::new();
    // 100 records a second: each 64 KiB cluster of the overlay (128 records) is
    // allocated while the guest runs, and its qcow2 mapping stays in QEMU's memory.
    let extra = "snapstack.interval_ms=10 snapstack.flush=off snapstack.power_button=ignore";
    let spec = harness.guest_kernel_spec("vm1", extra);
    let DiskSource::File(disk) = spec.disks[0].source.clone() else {
        unreachable!("guest_spec boots a file")
    };
    harness.driver.start(&spec).await.unwrap();
    harness
        .wait_console_for("vm1", "SEQ 400 ", BOOT_TIMEOUT)
        .await;

    harness
        .driver
        .shutdown("vm1", Duration::from_secs(1))
        .await
        .unwrap();
    let status = harness.driver.status("vm1").await.unwrap();
    let console = harness.driver.console_log("vm1", None).await.unwrap();
    let accepted = last_seq(&console);
    let check = qemu_img_check(&disk);
    harness.driver.start(&spec).await.unwrap();
    let console = wait_second_banner(&harness, "vm1").await;

    let reason = ShutoffReason::Destroyed;
    assert_eq!(status, VmStatus::Shutoff { reason });
    assert!(console.contains("POWERBUTTON ignored"), "{console}");
    assert_eq!(check, (true, String::new()), "qemu-img check of the disk");
    let (found, corrupt) = banner(&console, 2);
    assert!(
        found >= accepted,
        "the guest wrote up to {accepted} but the disk ends at {found}"
    );
    assert_eq!(corrupt, 0);
}

/// `qemu-img check` of `image`: whether it passed, and what it reported.
fn qemu_img_check(image: &Path) -> (bool, String) {
    let output = Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(image)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), report)
}

/// Waits for the banner of the guest's second run; returns the console.
async fn wait_second_banner(harness: &common::Harness, name: &str) -> String {
    let deadline = tokio::time::Instant::now() + BOOT_TIMEOUT;
    loop {
        let console = harness.driver.console_log(name, None).await.unwrap();
        let banners = console.lines().filter(|l| l.contains(BANNER)).count();
        if banners >= 2 || tokio::time::Instant::now() >= deadline {
            return console;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `last_seq` and `corrupt` of the `run`th banner (1-based) on the console.
fn banner(console: &str, run: usize) -> (u64, u64) {
    let line = console
        .lines()
        .filter(|l| l.contains(BANNER))
        .nth(run - 1)
        .unwrap_or_else(|| panic!("no banner number {run} in {console}"));
    let field = |name: &str| -> u64 {
        let at = line.find(name).unwrap() + name.len();
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (field(" last_seq="), field(" corrupt="))
}

/// The highest `SEQ n` the guest printed.
fn last_seq(console: &str) -> u64 {
    console
        .lines()
        .filter_map(|line| line.trim().strip_prefix("SEQ "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0)
}
