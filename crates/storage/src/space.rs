//! Free space on the filesystem holding a path.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use domain::{Error, Result};

/// Bytes an unprivileged writer may still write on the filesystem of `path`.
pub fn available_bytes(path: &Path) -> Result<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::internal(format!("{} holds a NUL byte.", path.display())))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stats` points to
    // writable memory of the right type; statvfs fills it when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return Err(Error::unavailable(format!(
            "Cannot read the free space of {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: statvfs returned 0, so it initialised `stats`.
    let stats = unsafe { stats.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Ok(stats.f_bavail as u64 * stats.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_bytes_when_dir_exists_then_some_and_when_missing_then_error() {
        let dir = tempfile::tempdir().unwrap();

        let here = available_bytes(dir.path());
        let missing = available_bytes(&dir.path().join("nope"));

        assert!(here.unwrap() > 0);
        assert!(missing.is_err());
    }
}
