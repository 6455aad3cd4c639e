//! librbd errors as Snapstack errors: what a caller can act on.
//!
//! | librbd | kind | why |
//! |---|---|---|
//! | timed out, connection refused/reset, not connected | `Unavailable` (503) | Ceph is down or unreachable: "Ceph is unreachable: …" |
//! | no space, quota | `Unavailable` (503) | the cluster is full |
//! | not found | `NotFound` | |
//! | exists, busy, not empty | `Conflict` (409) | in use, or has snapshots/children |
//! | anything else | `Internal` (500) | a bug or a misconfigured cluster |
//!
//! Callers that know better (a busy snapshot means "has clones") map those
//! cases themselves before falling back to [`ceph_error`].

use domain::{Error, ErrorKind};

/// The Snapstack error for a failed librbd/librados call (`err` is its source).
pub(crate) fn ceph_error(err: ::rbd::Error) -> Error {
    ceph_error_message(&err).with_source(err)
}

fn ceph_error_message(err: &::rbd::Error) -> Error {
    if is_unreachable(err) {
        return Error::unavailable(format!("Ceph is unreachable: {err}."));
    }
    match err.kind() {
        ::rbd::ErrorKind::NotFound => {
            Error::new(ErrorKind::NotFound, format!("Not found in Ceph: {err}."))
        }
        ::rbd::ErrorKind::Exists | ::rbd::ErrorKind::Busy | ::rbd::ErrorKind::NotEmpty => {
            Error::conflict(format!("Ceph refused: {err}."))
        }
        ::rbd::ErrorKind::Other(errno) if errno == libc::ENOSPC || errno == libc::EDQUOT => {
            Error::unavailable(format!("The Ceph cluster is full: {err}."))
        }
        _ => Error::internal(format!("Ceph failed: {err}.")),
    }
}

/// Whether the call failed because the cluster did not answer.
pub(crate) fn is_unreachable(err: &::rbd::Error) -> bool {
    matches!(err.kind(), ::rbd::ErrorKind::TimedOut)
        || matches!(
            err.errno(),
            libc::ETIMEDOUT
                | libc::ENOTCONN
                | libc::ECONNREFUSED
                | libc::ECONNRESET
                | libc::ECONNABORTED
                | libc::ESHUTDOWN
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
        )
}
