//! The one error type of the QMP client, with a small kind callers match on.
//!
//! A QMP error reply (`{"error": {"class": …, "desc": …}}`) keeps QEMU's class and
//! description; the classes QEMU still uses are mapped to their own kinds, any other
//! class to [`ErrorKind::Command`].

use std::fmt;

/// What went wrong, for callers to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The socket could not be opened, or QEMU sent no greeting in time.
    Connect,
    /// QEMU sent something that is not QMP (bad greeting, reply of the wrong shape).
    Protocol,
    /// The connection is gone: every pending and later call fails with this kind.
    Disconnected,
    /// A wait (event, job, greeting) ran out of time.
    Timeout,
    /// QMP error class `CommandNotFound`.
    CommandNotFound,
    /// QMP error class `DeviceNotFound`.
    DeviceNotFound,
    /// QMP error class `DeviceNotActive`.
    DeviceNotActive,
    /// Any other QMP error class, usually `GenericError`.
    Command,
    /// `wait_job` was asked about a job QEMU does not know.
    JobNotFound,
    /// A job concluded with an error.
    JobFailed,
}

/// A failed QMP operation: its kind, a sentence saying what failed, and for error
/// replies the QMP class and description.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    class: Option<String>,
    desc: Option<String>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
            class: None,
            desc: None,
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// An error reply of QEMU to `command`.
    pub(crate) fn reply(command: &str, class: String, desc: String) -> Self {
        let kind = match class.as_str() {
            "CommandNotFound" => ErrorKind::CommandNotFound,
            "DeviceNotFound" => ErrorKind::DeviceNotFound,
            "DeviceNotActive" => ErrorKind::DeviceNotActive,
            _ => ErrorKind::Command,
        };
        Self {
            kind,
            message: format!("QMP command `{command}` failed ({class}): {desc}"),
            class: Some(class),
            desc: Some(desc),
            source: None,
        }
    }

    pub(crate) fn disconnected(why: impl fmt::Display) -> Self {
        Self::new(
            ErrorKind::Disconnected,
            format!("the QMP connection is closed: {why}"),
        )
    }

    pub(crate) fn timeout(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Timeout, format!("timed out waiting for {what}"))
    }

    pub(crate) fn job_failed(job_id: &str, desc: String) -> Self {
        Self {
            kind: ErrorKind::JobFailed,
            message: format!("job `{job_id}` failed: {desc}"),
            class: None,
            desc: Some(desc),
            source: None,
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The QMP error class of an error reply (`GenericError`, `CommandNotFound`, …).
    pub fn class(&self) -> Option<&str> {
        self.class.as_deref()
    }

    /// QEMU's description of an error reply, or a failed job's error.
    pub fn desc(&self) -> Option<&str> {
        self.desc.as_deref()
    }
}

/// Result of QMP operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_when_class_is_device_not_found_then_kind_matches_class() {
        let class = "DeviceNotFound".to_string();
        let desc = "Device 'x' not found".to_string();

        let error = Error::reply("block-job-cancel", class, desc);

        assert_eq!(error.kind(), ErrorKind::DeviceNotFound);
        assert_eq!(error.class(), Some("DeviceNotFound"));
        assert_eq!(error.desc(), Some("Device 'x' not found"));
    }

    #[test]
    fn reply_when_class_is_unknown_then_kind_is_command() {
        let class = "SomeFutureClass".to_string();

        let error = Error::reply("x", class, "d".to_string());

        assert_eq!(error.kind(), ErrorKind::Command);
        assert_eq!(
            error.to_string(),
            "QMP command `x` failed (SomeFutureClass): d"
        );
    }
}
