//! Saving the memory state to a file and starting from it.

mod common;

use hypervisor::{ErrorKind, Hypervisor, ShutoffReason, VmStatus};

#[tokio::test]
async fn save_memory_then_start_incoming_when_running_then_saved_then_running_again() {
    let harness = common::Harness::new();
    let spec = harness.spec("vm1");
    harness.driver.start(&spec).await.unwrap();
    harness.wait_console("vm1", "SeaBIOS").await;
    let old_pid = harness.qemu_pid("vm1");
    let state_file = harness.root.path().join("vm1.mem");

    harness
        .driver
        .save_memory("vm1", &state_file)
        .await
        .unwrap();
    let saved = harness.driver.status("vm1").await.unwrap();
    harness
        .driver
        .save_memory("vm1", &state_file)
        .await
        .unwrap();
    harness
        .driver
        .start_incoming(&spec, &state_file)
        .await
        .unwrap();

    let reason = ShutoffReason::Saved {
        state_file: state_file.clone(),
    };
    assert_eq!(saved, VmStatus::Shutoff { reason });
    assert!(std::fs::metadata(&state_file).unwrap().len() > 0);
    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Running
    );
    assert_ne!(harness.qemu_pid("vm1"), old_pid);
}

#[tokio::test]
async fn start_incoming_when_state_file_is_garbage_then_migration_error_and_crashed() {
    let harness = common::Harness::new();
    let spec = harness.spec("vm1");
    let state_file = harness.root.path().join("garbage.mem");
    std::fs::write(&state_file, b"this is not a QEMU migration stream").unwrap();

    let error = harness
        .driver
        .start_incoming(&spec, &state_file)
        .await
        .unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Migration);
    let status = harness.driver.status("vm1").await.unwrap();
    assert!(
        matches!(
            status,
            VmStatus::Shutoff {
                reason: ShutoffReason::Crashed { .. }
            }
        ),
        "{status:?}"
    );
}

#[tokio::test]
async fn save_memory_when_vm_shut_off_then_not_running() {
    let harness = common::Harness::new();
    harness.driver.start(&harness.spec("vm1")).await.unwrap();
    harness.driver.destroy("vm1").await.unwrap();

    let error = harness
        .driver
        .save_memory("vm1", &harness.root.path().join("vm1.mem"))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), ErrorKind::NotRunning);
}
