//! Start, status, pause/resume, reset, shutdown, destroy, restart of the service.

mod common;

use std::time::Duration;

use hypervisor::{ErrorKind, Hypervisor, ShutoffReason, VmStatus};

const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn start_when_new_vm_then_running_with_monitor_and_console_log() {
    let harness = common::Harness::new();
    let spec = harness.spec("vm1");

    harness.driver.start(&spec).await.unwrap();

    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Running
    );
    let qmp = harness.driver.qmp("vm1").await.unwrap();
    let block = qmp
        .execute("query-named-block-nodes", serde_json::json!({}))
        .await
        .unwrap();
    let nodes: Vec<&str> = block
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["node-name"].as_str().unwrap())
        .collect();
    assert!(nodes.contains(&"disk0") && nodes.contains(&"disk0-storage"));
    let console = harness.wait_console("vm1", "SeaBIOS").await;
    assert!(console.contains("SeaBIOS"));
    assert!(harness.run_dir().join("vm1/console.log").exists());
}

#[tokio::test]
async fn start_when_already_running_then_same_qemu_kept() {
    let harness = common::Harness::new();
    let spec = harness.spec("vm1");
    harness.driver.start(&spec).await.unwrap();
    let pid = harness.qemu_pid("vm1");

    harness.driver.start(&spec).await.unwrap();

    assert_eq!(harness.qemu_pid("vm1"), pid);
    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Running
    );
}

#[tokio::test]
async fn start_when_disk_missing_then_start_failed_with_qemu_message() {
    let harness = common::Harness::new();
    let mut spec = harness.spec("vm1");
    let missing = harness.root.path().join("missing.qcow2");
    spec.disks[0].source = hypervisor::DiskSource::File(missing);

    let error = harness.driver.start(&spec).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::StartFailed);
    assert!(error.to_string().contains("missing.qcow2"), "{error}");
}

#[tokio::test]
async fn pause_then_resume_when_running_then_paused_then_running_with_events() {
    let harness = common::Harness::new();
    harness.driver.start(&harness.spec("vm1")).await.unwrap();
    let mut events = harness.driver.qmp("vm1").await.unwrap().events();

    harness.driver.pause("vm1").await.unwrap();
    let paused = harness.driver.status("vm1").await.unwrap();
    harness.driver.resume("vm1").await.unwrap();
    let resumed = harness.driver.status("vm1").await.unwrap();

    let reason = "paused".to_string();
    assert_eq!(paused, VmStatus::Paused { reason });
    assert_eq!(resumed, VmStatus::Running);
    events
        .wait_for("STOP", |_| true, EVENT_TIMEOUT)
        .await
        .unwrap();
    events
        .wait_for("RESUME", |_| true, EVENT_TIMEOUT)
        .await
        .unwrap();
}

#[tokio::test]
async fn reset_when_running_then_reset_event_and_still_running() {
    let harness = common::Harness::new();
    harness.driver.start(&harness.spec("vm1")).await.unwrap();
    let mut events = harness.driver.qmp("vm1").await.unwrap().events();

    harness.driver.reset("vm1").await.unwrap();

    let reset = events
        .wait_for("RESET", |_| true, EVENT_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(reset.data["guest"], false);
    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Running
    );
}

#[tokio::test]
async fn shutdown_when_guest_ignores_power_button_then_destroyed_after_timeout() {
    let harness = common::Harness::new();
    harness.driver.start(&harness.spec("vm1")).await.unwrap();
    let pid = harness.qemu_pid("vm1");

    harness
        .driver
        .shutdown("vm1", Duration::from_millis(500))
        .await
        .unwrap();

    let reason = ShutoffReason::Destroyed;
    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Shutoff { reason }
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap()
                .is_empty()
    );
}

#[tokio::test]
async fn destroy_when_called_twice_then_ok_and_shutoff_destroyed() {
    let harness = common::Harness::new();
    harness.driver.start(&harness.spec("vm1")).await.unwrap();

    harness.driver.destroy("vm1").await.unwrap();
    harness.driver.destroy("vm1").await.unwrap();

    let reason = ShutoffReason::Destroyed;
    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Shutoff { reason }
    );
    let error = harness.driver.pause("vm1").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotRunning);
}

#[tokio::test]
async fn destroy_when_monitor_does_not_answer_then_qemu_gets_sigterm_not_sigkill() {
    let harness = common::Harness::new();
    harness.driver.start(&harness.spec("vm1")).await.unwrap();
    // QEMU serves one monitor client: `harness.driver` keeps it, so this driver's
    // connection is never greeted.
    let mut config = harness.driver.config().clone();
    config.monitor_timeout = Duration::from_secs(1);
    let other = hypervisor::QemuHypervisor::new(config);

    other.destroy("vm1").await.unwrap();

    let log = std::fs::read_to_string(harness.run_dir().join("vm1/qemu.log")).unwrap();
    assert!(log.contains("terminating on signal 15"), "{log}");
    let reason = ShutoffReason::Destroyed;
    assert_eq!(
        other.status("vm1").await.unwrap(),
        VmStatus::Shutoff { reason }
    );
}

#[tokio::test]
async fn status_when_qemu_killed_behind_our_back_then_shutoff_crashed() {
    let harness = common::Harness::new();
    harness.driver.start(&harness.spec("vm1")).await.unwrap();

    common::kill_behind_the_back(harness.qemu_pid("vm1"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = harness.driver.status("vm1").await.unwrap();

    let VmStatus::Shutoff {
        reason: ShutoffReason::Crashed { detail },
    } = status
    else {
        panic!("expected Shutoff(Crashed), got {status:?}");
    };
    assert!(detail.contains("exited unexpectedly"), "{detail}");
}

#[tokio::test]
async fn list_when_service_restarted_then_new_driver_finds_and_reattaches_vm() {
    let harness = common::Harness::new();
    let first = hypervisor::QemuHypervisor::new(harness.driver.config().clone());
    first.start(&harness.spec("vm1")).await.unwrap();
    let pid = harness.qemu_pid("vm1");
    drop(first);

    let restarted = harness.restarted_driver();
    let names = restarted.list().await.unwrap();
    let status = restarted.status("vm1").await.unwrap();
    restarted.pause("vm1").await.unwrap();

    assert_eq!(names, ["vm1"]);
    assert_eq!(status, VmStatus::Running);
    assert_eq!(harness.qemu_pid("vm1"), pid);
    let reason = "paused".to_string();
    assert_eq!(
        restarted.status("vm1").await.unwrap(),
        VmStatus::Paused { reason }
    );
}

#[tokio::test]
async fn undefine_when_running_then_missing_and_unlisted() {
    let harness = common::Harness::new();
    harness.driver.start(&harness.spec("vm1")).await.unwrap();

    harness.driver.undefine("vm1").await.unwrap();

    assert_eq!(
        harness.driver.status("vm1").await.unwrap(),
        VmStatus::Missing
    );
    assert!(harness.driver.list().await.unwrap().is_empty());
    let error = harness.driver.console_log("vm1", None).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
}
