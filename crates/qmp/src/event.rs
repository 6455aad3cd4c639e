//! Asynchronous QMP events, kept as JSON.
//!
//! Events are never typed by name: an event this crate has never heard of is delivered
//! like any other (the `qapi` crate refuses unknown events; a newer QEMU must not break
//! us). Every [`EventStream`] sees every event that arrives after it was created.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// One QMP event: `{"event": name, "data": …, "timestamp": {"seconds", "microseconds"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event name, e.g. `STOP`, `JOB_STATUS_CHANGE`.
    pub name: String,
    /// The `data` member; `Value::Null` when QEMU sent none.
    pub data: Value,
    /// QEMU's host clock when the event happened: (seconds, microseconds).
    pub timestamp: (i64, i64),
}

impl Event {
    /// Reads an event message; `None` when `message` has no `event` member.
    pub(crate) fn from_message(message: &mut Value) -> Option<Self> {
        let name = message.get("event")?.as_str()?.to_string();
        let data = message.get_mut("data").map(Value::take).unwrap_or_default();
        let stamp = message.get("timestamp");
        let field = |key: &str| {
            stamp
                .and_then(|s| s.get(key))
                .and_then(Value::as_i64)
                .unwrap_or(-1)
        };
        Some(Self {
            name,
            data,
            timestamp: (field("seconds"), field("microseconds")),
        })
    }
}

/// The events of one connection, from the moment the stream was created.
#[derive(Debug)]
pub struct EventStream {
    receiver: broadcast::Receiver<Event>,
}

impl EventStream {
    pub(crate) fn new(receiver: broadcast::Receiver<Event>) -> Self {
        Self { receiver }
    }

    /// The next event. Events lost because this stream fell too far behind are skipped
    /// with a warning; fails with `Disconnected` once the connection is closed and every
    /// event received before that was returned.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            match self.receiver.recv().await {
                Ok(event) => return Ok(event),
                Err(broadcast::error::RecvError::Lagged(lost)) => {
                    tracing::warn!(lost, "QMP event stream fell behind, events skipped");
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Error::disconnected("no more events"));
                }
            }
        }
    }

    /// Waits for the next event called `name` for which `predicate` holds.
    pub async fn wait_for(
        &mut self,
        name: &str,
        mut predicate: impl FnMut(&Event) -> bool,
        timeout: Duration,
    ) -> Result<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let event = tokio::time::timeout_at(deadline, self.next())
                .await
                .map_err(|_| Error::timeout(format_args!("QMP event {name}")))??;
            if event.name == name && predicate(&event) {
                return Ok(event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn from_message_when_event_is_unknown_then_keeps_name_data_and_timestamp() {
        let mut message = json!({
            "event": "SOMETHING_NEW", "data": {"x": 1},
            "timestamp": {"seconds": 17, "microseconds": 42}
        });

        let event = Event::from_message(&mut message).unwrap();

        assert_eq!(event.name, "SOMETHING_NEW");
        assert_eq!(event.data, json!({"x": 1}));
        assert_eq!(event.timestamp, (17, 42));
    }

    #[test]
    fn from_message_when_no_data_then_data_is_null() {
        let mut message = json!({"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}});

        let event = Event::from_message(&mut message).unwrap();

        assert_eq!(event.data, Value::Null);
    }

    #[test]
    fn from_message_when_reply_then_none() {
        let mut message = json!({"return": {}, "id": 1});

        let event = Event::from_message(&mut message);

        assert_eq!(event, None);
    }
}
