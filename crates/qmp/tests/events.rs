//! Events: delivery, waiting, timeouts.

mod common;

use std::time::Duration;

use serde_json::Value;

#[tokio::test]
async fn stop_when_running_then_stop_event_and_paused_state() {
    let qemu = common::Qemu::spawn();
    let client = qemu.connect().await;
    let mut events = client.events();

    client.execute("stop", Value::Null).await.unwrap();
    let event = events
        .wait_for("STOP", |_| true, Duration::from_secs(5))
        .await
        .unwrap();
    let status = client.query_status().await.unwrap();

    assert_eq!(event.name, "STOP");
    assert!(event.timestamp.0 > 0);
    assert_eq!(status.status, qmp::RunState::Paused);
}

#[tokio::test]
async fn wait_event_when_nothing_happens_then_timeout() {
    let qemu = common::Qemu::spawn();
    let client = qemu.connect().await;

    let error = client
        .wait_event("RESUME", |_| true, Duration::from_millis(200))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), qmp::ErrorKind::Timeout);
}

#[tokio::test]
async fn wait_for_when_other_events_come_first_then_returns_the_named_one() {
    let qemu = common::Qemu::spawn();
    let client = qemu.connect().await;
    let mut events = client.events();
    client.execute("stop", Value::Null).await.unwrap();
    client.execute("cont", Value::Null).await.unwrap();

    let event = events
        .wait_for("RESUME", |_| true, Duration::from_secs(5))
        .await
        .unwrap();

    assert_eq!(event.name, "RESUME");
}
