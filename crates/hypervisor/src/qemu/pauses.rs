//! Feeds a VM's pause log (see [`crate::pauses`]) from its monitor's `STOP` and
//! `RESUME` events.
//!
//! Each new monitor connection gets a watcher task, subscribed before the driver sends
//! anything on it, that ends with the connection. A span still open then (the VM was
//! stopped when QEMU quit, e.g. by `save_memory`) ends at that moment. Event timestamps are QEMU's (host
//! wall clock, microseconds), so a span measures what QEMU did, not when we noticed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use qmp::{Event, EventStream};

use crate::pauses::PauseLog;

/// A VM's pause log, shared between the driver and the watcher of its monitor.
pub(super) type SharedPauseLog = Arc<Mutex<PauseLog>>;

/// Records the `STOP`/`RESUME` events of `events` into `log` until the connection ends.
pub(super) fn watch(vm: &str, mut events: EventStream, log: SharedPauseLog) {
    let vm = vm.to_string();
    tokio::spawn(async move {
        while let Ok(event) = events.next().await {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            match event.name.as_str() {
                "STOP" => log.stopped(event_time(&event)),
                "RESUME" => log.resumed(event_time(&event)),
                _ => continue,
            }
            tracing::debug!(vm = %vm, event = %event.name, "vCPUs stopped or resumed");
        }
        // The connection ended, normally because QEMU exited: a span still open ends
        // here, so that it is not closed by a later QEMU's RESUME.
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        log.resumed(SystemTime::now());
    });
}

/// When the event happened, by QEMU's clock; now when QEMU gave no timestamp.
fn event_time(event: &Event) -> SystemTime {
    let (seconds, microseconds) = event.timestamp;
    match (u64::try_from(seconds), u64::try_from(microseconds)) {
        (Ok(s), Ok(us)) => {
            SystemTime::UNIX_EPOCH + Duration::from_secs(s) + Duration::from_micros(us)
        }
        _ => SystemTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn event_time_when_stamped_then_qemu_time_to_the_microsecond() {
        let event = Event {
            name: "STOP".to_string(),
            data: Value::Null,
            timestamp: (1_700_000_000, 250_001),
        };

        let time = event_time(&event);

        let expected = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_250_001);
        assert_eq!(time, expected);
    }
}
