//! Jobs: `blockdev-create` is a job that needs no machine.

mod common;

use std::time::Duration;

use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn wait_job_when_job_succeeds_then_ok_and_dismissed() {
    let qemu = common::Qemu::spawn();
    let client = qemu.connect().await;
    let file = qemu.dir.path().join("created.raw");
    let options = json!({ "driver": "file", "filename": file, "size": 1 << 20 });
    client
        .execute(
            "blockdev-create",
            json!({ "job-id": "create-ok", "options": options }),
        )
        .await
        .unwrap();

    client.wait_job("create-ok", TIMEOUT).await.unwrap();

    assert_eq!(std::fs::metadata(&file).unwrap().len(), 1 << 20);
    assert!(client.query_jobs().await.unwrap().is_empty());
}

#[tokio::test]
async fn wait_job_when_job_fails_then_job_failed_with_its_error() {
    let qemu = common::Qemu::spawn();
    let client = qemu.connect().await;
    let file = qemu.dir.path().join("no-such-dir/created.raw");
    let options = json!({ "driver": "file", "filename": file, "size": 1 << 20 });
    client
        .execute(
            "blockdev-create",
            json!({ "job-id": "create-bad", "options": options }),
        )
        .await
        .unwrap();

    let error = client.wait_job("create-bad", TIMEOUT).await.unwrap_err();

    assert_eq!(error.kind(), qmp::ErrorKind::JobFailed);
    assert!(error.desc().unwrap().contains("No such file or directory"));
    assert!(client.query_jobs().await.unwrap().is_empty());
}

#[tokio::test]
async fn wait_job_when_job_unknown_then_job_not_found() {
    let qemu = common::Qemu::spawn();
    let client = qemu.connect().await;

    let error = client.wait_job("never-started", TIMEOUT).await.unwrap_err();

    assert_eq!(error.kind(), qmp::ErrorKind::JobNotFound);
}
