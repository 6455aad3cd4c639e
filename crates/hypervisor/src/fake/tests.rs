//! Unit tests of the fake hypervisor.
use super::*;

fn spec(name: &str) -> VmSpec {
    VmSpec {
        name: name.to_string(),
        memory_mib: 64,
        vcpus: 1,
        disks: Vec::new(),
        nics: Vec::new(),
        kernel: None,
        initrd: None,
        cmdline: None,
    }
}

const TIMEOUT: Duration = Duration::from_secs(1);

#[tokio::test]
async fn start_when_already_running_then_ok_and_still_running() {
    let fake = FakeHypervisor::new();
    fake.start(&spec("vm1")).await.unwrap();

    fake.start(&spec("vm1")).await.unwrap();

    assert_eq!(fake.status("vm1").await.unwrap(), VmStatus::Running);
    assert_eq!(
        fake.console_log("vm1", None).await.unwrap(),
        "[fake] vm1 booted\n"
    );
}

#[tokio::test]
async fn save_memory_then_start_incoming_when_running_then_saved_then_running() {
    let fake = FakeHypervisor::new();
    fake.start(&spec("vm1")).await.unwrap();
    let file = Path::new("/states/vm1.mem");

    fake.save_memory("vm1", file).await.unwrap();
    let saved = fake.status("vm1").await.unwrap();
    fake.save_memory("vm1", file).await.unwrap();
    fake.start_incoming(&spec("vm1"), file).await.unwrap();

    let state_file = file.to_path_buf();
    assert_eq!(saved, shutoff(ShutoffReason::Saved { state_file }));
    assert_eq!(fake.status("vm1").await.unwrap(), VmStatus::Running);
}

#[tokio::test]
async fn start_incoming_when_state_never_saved_then_invalid_argument() {
    let fake = FakeHypervisor::new();

    let error = fake
        .start_incoming(&spec("vm1"), Path::new("/nowhere"))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    assert_eq!(fake.status("vm1").await.unwrap(), VmStatus::Missing);
}

#[tokio::test]
async fn destroy_when_called_twice_then_ok_and_destroyed() {
    let fake = FakeHypervisor::new();
    fake.start(&spec("vm1")).await.unwrap();

    fake.destroy("vm1").await.unwrap();
    fake.destroy("vm1").await.unwrap();

    let destroyed = shutoff(ShutoffReason::Destroyed);
    assert_eq!(fake.status("vm1").await.unwrap(), destroyed);
}

#[tokio::test]
async fn pause_when_shut_off_then_not_running() {
    let fake = FakeHypervisor::new();
    fake.start(&spec("vm1")).await.unwrap();
    fake.shutdown("vm1", TIMEOUT).await.unwrap();

    let error = fake.pause("vm1").await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::NotRunning);
}

#[tokio::test]
async fn fail_next_when_injected_then_one_call_fails_and_state_unchanged() {
    let fake = FakeHypervisor::new();
    fake.start(&spec("vm1")).await.unwrap();
    fake.fail_next(Operation::Pause, ErrorKind::Monitor);

    let first = fake.pause("vm1").await.unwrap_err();
    let status_after_failure = fake.status("vm1").await.unwrap();
    fake.pause("vm1").await.unwrap();

    assert_eq!(first.kind(), ErrorKind::Monitor);
    assert_eq!(status_after_failure, VmStatus::Running);
}

#[tokio::test]
async fn crash_when_running_then_shutoff_crashed_and_restartable() {
    let fake = FakeHypervisor::new();
    fake.start(&spec("vm1")).await.unwrap();

    fake.crash("vm1", "killed by signal 9");
    let crashed = fake.status("vm1").await.unwrap();
    fake.start(&spec("vm1")).await.unwrap();

    let detail = "killed by signal 9".to_string();
    assert_eq!(crashed, shutoff(ShutoffReason::Crashed { detail }));
    assert_eq!(fake.status("vm1").await.unwrap(), VmStatus::Running);
}

#[tokio::test]
async fn freeze_then_thaw_when_agent_present_then_frozen_then_thawed() {
    let fake = FakeHypervisor::new();
    fake.start(&spec("vm1")).await.unwrap();

    fake.freeze_filesystems("vm1", TIMEOUT).await.unwrap();
    let frozen = fake.is_frozen("vm1");
    fake.thaw_filesystems("vm1").await.unwrap();

    assert!(frozen);
    assert!(!fake.is_frozen("vm1"));
}

#[tokio::test]
async fn freeze_when_no_agent_then_unavailable_and_not_frozen() {
    let fake = FakeHypervisor::new();
    fake.start(&spec("vm1")).await.unwrap();
    fake.set_guest_agent("vm1", false);

    let error = fake.freeze_filesystems("vm1", TIMEOUT).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::GuestAgentUnavailable);
    assert!(!fake.is_frozen("vm1"));
}

#[tokio::test]
async fn freeze_when_failure_injected_then_that_kind_and_next_freeze_works() {
    let fake = FakeHypervisor::new();
    fake.start(&spec("vm1")).await.unwrap();
    fake.fail_next(Operation::FreezeFilesystems, ErrorKind::GuestAgentFailed);

    let error = fake.freeze_filesystems("vm1", TIMEOUT).await.unwrap_err();
    let frozen_after_failure = fake.is_frozen("vm1");
    fake.freeze_filesystems("vm1", TIMEOUT).await.unwrap();

    assert_eq!(error.kind(), ErrorKind::GuestAgentFailed);
    assert!(!frozen_after_failure);
    assert!(fake.is_frozen("vm1"));
}

#[tokio::test]
async fn thaw_when_not_frozen_then_zero_thawed() {
    let fake = FakeHypervisor::new();
    fake.start(&spec("vm1")).await.unwrap();

    let thawed = fake.thaw_filesystems("vm1").await.unwrap();

    assert_eq!(thawed, 0);
}

#[tokio::test]
async fn pause_log_when_paused_then_resumed_then_one_closed_span() {
    let fake = FakeHypervisor::new();
    fake.start(&spec("vm1")).await.unwrap();

    fake.pause("vm1").await.unwrap();
    fake.resume("vm1").await.unwrap();

    let spans = fake.pause_log("vm1").await.unwrap();
    assert_eq!(spans.len(), 1);
    assert!(spans[0].duration.is_some());
}

#[tokio::test]
async fn undefine_when_defined_then_missing_and_unlisted() {
    let fake = FakeHypervisor::new();
    fake.start(&spec("vm1")).await.unwrap();
    fake.start(&spec("vm2")).await.unwrap();

    fake.undefine("vm1").await.unwrap();

    assert_eq!(fake.status("vm1").await.unwrap(), VmStatus::Missing);
    assert_eq!(fake.list().await.unwrap(), ["vm2"]);
}

#[tokio::test]
async fn snapshot_disk_and_native_point_when_observed_then_every_new_file_reported() {
    let fake = FakeHypervisor::new();
    let reported = std::sync::Arc::new(Mutex::new(Vec::<PathBuf>::new()));
    let sink = reported.clone();
    fake.on_file_created(std::sync::Arc::new(move |path: &Path| {
        sink.lock().unwrap().push(path.to_path_buf())
    }));
    let mut with_disk = spec("vm1");
    with_disk.disks.push(DiskSpec {
        id: "root".into(),
        source: crate::DiskSource::File("/d/top".into()),
        format: crate::DiskFormat::Qcow2,
        read_only: false,
    });
    fake.start(&with_disk).await.unwrap();

    fake.snapshot_disk("vm1", "root", Path::new("/d/new"))
        .await
        .unwrap();
    fake.snapshot_disk("vm1", "root", Path::new("/d/new"))
        .await
        .unwrap();
    let point = NativeSnapshot {
        disk_id: "root".into(),
        name: "p1".into(),
    };
    fake.create_native_point("vm1", &[point], None)
        .await
        .unwrap();

    assert_eq!(
        *reported.lock().unwrap(),
        [PathBuf::from("/d/new"), PathBuf::from("/d/new@p1")]
    );
    assert_eq!(
        fake.active_disk_file("vm1", "root").await.unwrap(),
        PathBuf::from("/d/new")
    );
}

#[tokio::test]
async fn attach_nic_when_twice_then_one_nic_and_detach_removes_it() {
    let fake = FakeHypervisor::new();
    fake.start(&spec("vm1")).await.unwrap();
    let nic = crate::spec::NicSpec {
        id: "net0".into(),
        mac: "fa:16:3e:00:00:01".into(),
        tap: "tapabc".into(),
    };

    fake.attach_nic("vm1", &nic).await.unwrap();
    fake.attach_nic("vm1", &nic).await.unwrap();
    let attached = fake.spec("vm1").unwrap().nics;
    fake.detach_nic("vm1", "net0").await.unwrap();

    assert_eq!(attached, vec![nic]);
    assert!(fake.spec("vm1").unwrap().nics.is_empty());
}

#[tokio::test]
async fn set_nic_link_when_vm_has_no_such_nic_then_not_found() {
    let fake = FakeHypervisor::new();
    fake.start(&spec("vm1")).await.unwrap();

    let error = fake.set_nic_link("vm1", "net0", false).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::NotFound);
}
