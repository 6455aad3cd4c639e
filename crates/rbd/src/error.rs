//! The one error type of this crate: a matchable [`ErrorKind`] decoded from the negative
//! errno that librados/librbd return, plus what was being done (`op`, e.g. `rbd_snap_remove`)
//! and to what (`target`, e.g. `images/disk-1@snap`). The errno itself is the `source`.

use std::fmt;
use std::io;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in the terms a storage driver decides on.
///
/// `-ERANGE` from list calls never surfaces: those calls grow their buffer and retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `-ENOENT`: no such pool, image, snapshot or parent.
    NotFound,
    /// `-EEXIST`: an image or snapshot of that name already exists.
    Exists,
    /// `-EBUSY`: the snapshot is protected, the image is open elsewhere (watchers), or the
    /// snapshot still has clones (unprotect).
    Busy,
    /// `-ENOTEMPTY`: the image still has snapshots (remove).
    NotEmpty,
    /// `-EINVAL`: a bad argument, e.g. cloning an unprotected snapshot (clone format 1),
    /// unprotecting a snapshot that is not protected, or a name with a NUL byte.
    InvalidArgument,
    /// `-EROFS`: writing through a handle opened read-only or at a snapshot.
    ReadOnly,
    /// `-ETIMEDOUT`: the monitors did not answer in time (connect).
    TimedOut,
    /// `-ECANCELED`: an operation was stopped, e.g. a callback of ours panicked.
    Cancelled,
    /// Any other errno (positive value, e.g. `5` for `EIO`).
    Other(i32),
}

impl ErrorKind {
    /// Decodes a positive errno.
    pub fn from_errno(errno: i32) -> Self {
        match errno {
            libc::ENOENT => Self::NotFound,
            libc::EEXIST => Self::Exists,
            libc::EBUSY => Self::Busy,
            libc::ENOTEMPTY => Self::NotEmpty,
            libc::EINVAL => Self::InvalidArgument,
            libc::EROFS => Self::ReadOnly,
            libc::ETIMEDOUT => Self::TimedOut,
            libc::ECANCELED => Self::Cancelled,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("not found"),
            Self::Exists => f.write_str("already exists"),
            Self::Busy => f.write_str("busy"),
            Self::NotEmpty => f.write_str("not empty"),
            Self::InvalidArgument => f.write_str("invalid argument"),
            Self::ReadOnly => f.write_str("read-only"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::Other(errno) => write!(f, "errno {errno}"),
        }
    }
}

/// A failed librados/librbd call.
///
/// Displays as `rbd_snap_remove on images/disk@s1 failed: busy`; the errno text
/// (`Device or resource busy (os error 16)`) is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[error("{op} on {target} failed: {kind}")]
pub struct Error {
    kind: ErrorKind,
    op: &'static str,
    target: String,
    #[source]
    source: io::Error,
}

impl Error {
    /// An error for `op` on `target` from a positive errno.
    pub(crate) fn from_errno(errno: i32, op: &'static str, target: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::from_errno(errno),
            op,
            target: target.into(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// The matchable kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The positive errno librados/librbd returned (negated).
    pub fn errno(&self) -> i32 {
        self.source.raw_os_error().unwrap_or(0)
    }

    /// The C function that failed, e.g. `rbd_clone3`.
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// What it was applied to: `pool`, `pool/image` or `pool/image@snap` (or a path).
    pub fn target(&self) -> &str {
        &self.target
    }
}

/// Turns a C return value into `Ok(value)` when `>= 0`, else an [`Error`] for `op`.
/// `target` is only built on failure.
pub(crate) fn check<T, F>(ret: T, op: &'static str, target: F) -> Result<T>
where
    T: Copy + Into<i64>,
    F: FnOnce() -> String,
{
    let value: i64 = ret.into();
    if value >= 0 {
        return Ok(ret);
    }
    let errno = i32::try_from(-value).unwrap_or(libc::EIO);
    Err(Error::from_errno(errno, op, target()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_errno_when_known_errno_then_named_kind() {
        // Arrange
        let cases = [
            (libc::ENOENT, ErrorKind::NotFound),
            (libc::EEXIST, ErrorKind::Exists),
            (libc::EBUSY, ErrorKind::Busy),
            (libc::ENOTEMPTY, ErrorKind::NotEmpty),
            (libc::EINVAL, ErrorKind::InvalidArgument),
            (libc::EROFS, ErrorKind::ReadOnly),
        ];

        // Act
        let kinds: Vec<_> = cases
            .iter()
            .map(|(e, _)| ErrorKind::from_errno(*e))
            .collect();

        // Assert
        let expected: Vec<_> = cases.iter().map(|(_, k)| *k).collect();
        assert_eq!(kinds, expected);
    }

    #[test]
    fn check_when_negative_then_error_with_context() {
        // Arrange
        let ret = -libc::EBUSY;

        // Act
        let err = check(ret, "rbd_snap_remove", || "images/disk@s1".to_string()).unwrap_err();

        // Assert
        assert_eq!(err.kind(), ErrorKind::Busy);
        assert_eq!(err.errno(), libc::EBUSY);
        assert_eq!(
            err.to_string(),
            "rbd_snap_remove on images/disk@s1 failed: busy"
        );
    }

    #[test]
    fn check_when_non_negative_then_value_passes_through() {
        // Arrange
        let ret: isize = 4096;

        // Act
        let value = check(ret as i64, "rbd_read", || unreachable!()).unwrap();

        // Assert
        assert_eq!(value, 4096);
    }
}
