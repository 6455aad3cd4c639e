//! Graceful power-off and soft reboot need a guest that answers the ACPI power button:
//! the project's test guest. Opt-in, since it boots Linux under TCG (~10 s each):
//!
//! ```text
//! scripts/build-guest.sh && cargo test -p hypervisor --test guest -- --ignored
//! ```

mod common;

use std::time::Duration;

use hypervisor::{Hypervisor, ShutoffReason, VmStatus};

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

/// The highest `SEQ n` the guest printed.
fn last_seq(console: &str) -> u64 {
    console
        .lines()
        .filter_map(|line| line.trim().strip_prefix("SEQ "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0)
}
