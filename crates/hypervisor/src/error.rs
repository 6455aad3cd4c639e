//! The error of every hypervisor operation, with a small kind callers match on.
//!
//! The message says what failed on which VM; the cause (QMP error, I/O error) is the
//! `source`, never repeated in the message.

use std::fmt;

/// What went wrong, for callers to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No VM of that name (never started, or undefined).
    NotFound,
    /// The operation needs a live VM and this one is shut off.
    NotRunning,
    /// A name, disk id, path or memory-state file is not acceptable.
    InvalidArgument,
    /// QEMU refused to start (bad disk, bad option); the message carries its stderr.
    StartFailed,
    /// The monitor failed: a command was refused, or QEMU stopped answering.
    Monitor,
    /// Saving or restoring the memory state failed.
    Migration,
    /// QEMU did not do something in time (exit, power off).
    Timeout,
    /// A file of the VM's run directory could not be read or written.
    Io,
    /// No QEMU guest agent answers in the guest (none installed or running, guest
    /// paused or not booted yet): nothing was done in the guest, quiescing is
    /// impossible.
    GuestAgentUnavailable,
    /// The guest agent answered but the command failed or did not finish in time;
    /// the guest may be partly frozen, so thaw it.
    GuestAgentFailed,
}

/// A failed hypervisor operation.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error of `kind` described by `message`.
    pub fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
            source: None,
        }
    }

    /// The same error, caused by `source`.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// A monitor failure while doing `what`, caused by `source`.
    pub(crate) fn monitor(what: impl fmt::Display, source: qmp::Error) -> Self {
        Self::new(ErrorKind::Monitor, what).with_source(source)
    }

    /// An I/O failure on `path` while doing `what`.
    pub(crate) fn io(
        what: impl fmt::Display,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> Self {
        Self::new(ErrorKind::Io, format!("{what} {}", path.display())).with_source(source)
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// Result of hypervisor operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
