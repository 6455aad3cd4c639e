//! The pause log of a VM: every interval during which its vCPUs were stopped.
//!
//! The QEMU driver fills it from the monitor's `STOP` and `RESUME` events (their
//! timestamps are QEMU's host wall clock, so a span's duration is QEMU's own measure);
//! the fake from its `pause`/`resume` calls. It lets the layers above say "the guest was
//! paused N ms during the snapshot", and benchmarks check that a live snapshot pauses
//! nothing. The log lives in memory (a restarted service starts with an empty one)
//! and holds the last [`PAUSE_LOG_LIMIT`] spans of the VM, across its restarts.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

/// How many spans a VM's log keeps (the oldest are dropped first).
pub const PAUSE_LOG_LIMIT: usize = 256;

/// One interval during which the guest's vCPUs were stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseSpan {
    /// When the vCPUs stopped (`STOP`).
    pub started_at: SystemTime,
    /// How long they stayed stopped (until `RESUME`); `None` while still stopped.
    pub duration: Option<Duration>,
}

impl PauseSpan {
    /// When the vCPUs ran again, if they did.
    pub fn ended_at(&self) -> Option<SystemTime> {
        self.duration.map(|d| self.started_at + d)
    }

    /// How much of `[from, to]` this span covers; an open span is taken to last until
    /// `to`.
    pub fn overlap(&self, from: SystemTime, to: SystemTime) -> Duration {
        let start = self.started_at.max(from);
        let end = self.ended_at().map_or(to, |end| end.min(to));
        end.duration_since(start).unwrap_or(Duration::ZERO)
    }
}

/// Total time the guest was paused within `[from, to]`, according to `spans`.
pub fn paused_within(spans: &[PauseSpan], from: SystemTime, to: SystemTime) -> Duration {
    spans.iter().map(|span| span.overlap(from, to)).sum()
}

/// A bounded log of spans, fed with stop and resume moments.
#[derive(Debug, Default, Clone)]
pub(crate) struct PauseLog {
    spans: VecDeque<PauseSpan>,
}

impl PauseLog {
    /// The vCPUs stopped at `at`. A second stop while one is open is ignored.
    pub(crate) fn stopped(&mut self, at: SystemTime) {
        if self.spans.back().is_some_and(|s| s.duration.is_none()) {
            return;
        }
        if self.spans.len() == PAUSE_LOG_LIMIT {
            self.spans.pop_front();
        }
        self.spans.push_back(PauseSpan {
            started_at: at,
            duration: None,
        });
    }

    /// The vCPUs run again from `at`. A resume with no open span (the VM was started
    /// paused, or stopped before the log began) is ignored.
    pub(crate) fn resumed(&mut self, at: SystemTime) {
        if let Some(open) = self.spans.back_mut().filter(|s| s.duration.is_none()) {
            open.duration = Some(at.duration_since(open.started_at).unwrap_or(Duration::ZERO));
        }
    }

    pub(crate) fn spans(&self) -> Vec<PauseSpan> {
        self.spans.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn resumed_when_stopped_then_one_closed_span_with_the_duration() {
        let mut log = PauseLog::default();

        log.stopped(at(1_000));
        log.resumed(at(1_250));

        let span = PauseSpan {
            started_at: at(1_000),
            duration: Some(Duration::from_millis(250)),
        };
        assert_eq!(log.spans(), [span]);
    }

    #[test]
    fn stopped_when_already_stopped_then_first_stop_kept_and_span_open() {
        let mut log = PauseLog::default();

        log.stopped(at(10));
        log.stopped(at(20));

        let span = PauseSpan {
            started_at: at(10),
            duration: None,
        };
        assert_eq!(log.spans(), [span]);
    }

    #[test]
    fn resumed_when_nothing_open_then_log_unchanged() {
        let mut log = PauseLog::default();

        log.resumed(at(5));

        assert!(log.spans().is_empty());
    }

    #[test]
    fn stopped_when_log_full_then_oldest_dropped() {
        let mut log = PauseLog::default();
        for i in 0..PAUSE_LOG_LIMIT as u64 + 1 {
            log.stopped(at(i * 10));
            log.resumed(at(i * 10 + 1));
        }

        let spans = log.spans();

        assert_eq!(spans.len(), PAUSE_LOG_LIMIT);
        assert_eq!(spans[0].started_at, at(10));
    }

    #[test]
    fn paused_within_when_spans_cross_the_window_then_only_the_inside_counts() {
        let spans = [
            PauseSpan {
                started_at: at(0),
                duration: Some(Duration::from_millis(100)),
            },
            PauseSpan {
                started_at: at(900),
                duration: None,
            },
        ];

        let paused = paused_within(&spans, at(50), at(1_000));

        assert_eq!(paused, Duration::from_millis(150));
    }
}
