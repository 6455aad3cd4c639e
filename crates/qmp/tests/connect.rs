//! Connecting: greeting, capabilities, a first command.

mod common;

use serde_json::Value;

#[tokio::test]
async fn connect_when_qemu_listens_then_version_matches_query_version() {
    let qemu = common::Qemu::spawn();

    let client = qemu.connect().await;
    let reply = client.execute("query-version", Value::Null).await.unwrap();

    let version = client.version();
    assert_eq!(reply["qemu"]["major"], version.major);
    assert_eq!(reply["qemu"]["minor"], version.minor);
    assert_eq!(reply["qemu"]["micro"], version.micro);
    assert_eq!(reply["package"].as_str().unwrap().trim(), version.package);
}

#[tokio::test]
async fn connect_when_socket_missing_then_connect_error() {
    let dir = tempfile::tempdir().unwrap();

    let error = qmp::Client::connect(dir.path().join("nothing.sock"))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), qmp::ErrorKind::Connect);
}

#[tokio::test]
async fn query_status_when_fresh_machine_then_running() {
    let qemu = common::Qemu::spawn();
    let client = qemu.connect().await;

    let status = client.query_status().await.unwrap();

    assert_eq!(status.status, qmp::RunState::Running);
    assert!(status.running);
}
