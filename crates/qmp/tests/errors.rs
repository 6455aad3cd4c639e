//! Error replies and connection loss.

mod common;

use std::time::Duration;

use qmp::ErrorKind;
use serde_json::{json, Value};

#[tokio::test]
async fn execute_when_command_unknown_then_command_not_found_with_desc() {
    let qemu = common::Qemu::spawn();
    let client = qemu.connect().await;

    let error = client
        .execute("no-such-command", Value::Null)
        .await
        .unwrap_err();

    assert_eq!(error.kind(), ErrorKind::CommandNotFound);
    assert_eq!(error.class(), Some("CommandNotFound"));
    assert!(error.desc().unwrap().contains("no-such-command"));
}

#[tokio::test]
async fn execute_when_arguments_invalid_then_generic_command_error() {
    let qemu = common::Qemu::spawn();
    let client = qemu.connect().await;

    let error = client
        .execute("job-dismiss", json!({ "id": "no-such-job" }))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Command);
    assert_eq!(error.class(), Some("GenericError"));
}

#[tokio::test]
async fn execute_when_qemu_killed_while_pending_then_disconnected() {
    let mut qemu = common::Qemu::spawn();
    let client = qemu.connect().await;
    // A stopped QEMU never answers: the call below stays pending until the kill.
    qemu.signal("STOP");
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.execute("query-version", Value::Null).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    qemu.kill();
    let error = pending.await.unwrap().unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Disconnected);
}

#[tokio::test]
async fn execute_when_already_disconnected_then_disconnected_and_events_end() {
    let mut qemu = common::Qemu::spawn();
    let client = qemu.connect().await;
    let mut events = client.events();
    qemu.kill();
    client.disconnected().await;

    let error = client
        .execute("query-status", Value::Null)
        .await
        .unwrap_err();
    let end = events.next().await.unwrap_err();

    assert!(!client.is_connected());
    assert_eq!(error.kind(), ErrorKind::Disconnected);
    assert_eq!(end.kind(), ErrorKind::Disconnected);
}
