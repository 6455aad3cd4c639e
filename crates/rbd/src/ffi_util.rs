//! Small helpers shared by the wrappers: Rust strings to C strings (a NUL byte is an
//! `InvalidArgument`), C strings back to Rust, and the `-ERANGE` retry loop that every
//! librbd list call needs.

use std::ffi::{c_char, CStr, CString};

use crate::error::{Error, Result};

/// Converts `s` for C; an interior NUL byte becomes `InvalidArgument` for `op` on `target`.
pub(crate) fn c_string(
    s: &str,
    op: &'static str,
    target: impl FnOnce() -> String,
) -> Result<CString> {
    CString::new(s).map_err(|_| Error::from_errno(libc::EINVAL, op, target()))
}

/// Copies a C string owned by librbd into a `String` (lossy UTF-8); NULL gives "".
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string valid for the duration of the call.
pub(crate) unsafe fn string_from_c(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: the caller guarantees `ptr` is a valid NUL-terminated string.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// The answer of one attempt of a list call.
pub(crate) enum Attempt<T> {
    /// The buffer was big enough.
    Done(T),
    /// `-ERANGE`: librbd asks for (at least) this many entries.
    Grow(usize),
}

/// How many times a list call is retried when the list keeps growing under us.
const MAX_ATTEMPTS: usize = 16;

/// Runs `attempt(capacity)` until it fits, starting at `initial` entries and growing to
/// what librbd asks for (and at least doubling, in case the list grows concurrently).
pub(crate) fn grow_until_fits<T>(
    initial: usize,
    op: &'static str,
    target: impl Fn() -> String,
    mut attempt: impl FnMut(usize) -> Result<Attempt<T>>,
) -> Result<T> {
    let mut capacity = initial.max(1);
    for _ in 0..MAX_ATTEMPTS {
        match attempt(capacity)? {
            Attempt::Done(value) => return Ok(value),
            Attempt::Grow(wanted) => capacity = wanted.max(capacity.saturating_mul(2)),
        }
    }
    Err(Error::from_errno(libc::ERANGE, op, target()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_until_fits_when_too_small_then_retries_with_asked_capacity() {
        // Arrange
        let mut seen = Vec::new();

        // Act
        let result = grow_until_fits(2, "rbd_snap_list", String::new, |capacity| {
            seen.push(capacity);
            Ok(if capacity >= 41 {
                Attempt::Done(capacity)
            } else {
                Attempt::Grow(41)
            })
        });

        // Assert
        assert_eq!(result.unwrap(), 41);
        assert_eq!(seen, vec![2, 41]);
    }

    #[test]
    fn grow_until_fits_when_never_fits_then_range_error() {
        // Arrange
        let attempt = |capacity: usize| Ok::<_, Error>(Attempt::<()>::Grow(capacity + 1));

        // Act
        let err = grow_until_fits(1, "rbd_list2", || "images".into(), attempt).unwrap_err();

        // Assert
        assert_eq!(err.kind(), crate::ErrorKind::Other(libc::ERANGE));
    }

    #[test]
    fn c_string_when_interior_nul_then_invalid_argument() {
        // Arrange
        let name = "bad\0name";

        // Act
        let err = c_string(name, "rbd_open", || "images/bad".into()).unwrap_err();

        // Assert
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
    }
}
