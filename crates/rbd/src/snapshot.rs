//! Snapshots of an [`Image`]: create, list, protect/unprotect, remove, rollback.
//!
//! ```text
//!   create ──> unprotected ──protect──> protected ──clone──> protected, with children
//!                 │   ^                    │                      │
//!              remove └────unprotect───────┘          (unprotect/remove: Busy until the
//!                                                      children are flattened or removed)
//! ```
//! With clone format 1 (this cluster's default, see the crate docs) only a protected
//! snapshot can be cloned, and a protected snapshot cannot be removed (`Busy`).

use std::ffi::c_int;

use rbd_sys as sys;

use crate::error::{check, Result};
use crate::ffi_util::{grow_until_fits, string_from_c, Attempt};
use crate::image::Image;

/// One snapshot, as `rbd_snap_list` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapInfo {
    /// librados snapshot id.
    pub id: u64,
    /// Image size when the snapshot was taken.
    pub size: u64,
    /// Snapshot name.
    pub name: String,
}

impl Image {
    /// Takes snapshot `name` of the image's current content.
    pub fn create_snap(&self, name: &str) -> Result<()> {
        const OP: &str = "rbd_snap_create";
        let c_snap = self.c_snap(name, OP)?;
        // SAFETY: live handle; `c_snap` outlives the call.
        let ret = unsafe { sys::rbd_snap_create(self.raw(), c_snap.as_ptr()) };
        check(ret, OP, || self.snap_spec(name)).map(drop)
    }

    /// The image's snapshots, oldest first (by id). Grows its buffer on `-ERANGE`.
    pub fn list_snaps(&self) -> Result<Vec<SnapInfo>> {
        const OP: &str = "rbd_snap_list";
        let target = || self.spec();
        let mut snaps = grow_until_fits(16, OP, target, |capacity| {
            // librbd writes one entry per snapshot plus a terminating entry (name NULL)
            // that `rbd_snap_list_end` stops at, and asks for that many on -ERANGE.
            let mut entries = vec![
                sys::rbd_snap_info_t {
                    id: 0,
                    size: 0,
                    name: std::ptr::null()
                };
                capacity
            ];
            let mut max = c_int::try_from(capacity).unwrap_or(c_int::MAX);
            // SAFETY: live handle; `entries` holds `max` writable entries.
            let ret = unsafe { sys::rbd_snap_list(self.raw(), entries.as_mut_ptr(), &mut max) };
            if ret == -libc::ERANGE {
                return Ok(Attempt::Grow(usize::try_from(max).unwrap_or(capacity)));
            }
            let count = check(ret, OP, target)?;
            let count = usize::try_from(count).unwrap_or(0).min(capacity);
            let snaps = entries[..count]
                .iter()
                .map(|entry| SnapInfo {
                    id: entry.id,
                    size: entry.size,
                    // SAFETY: librbd filled `name` with a NUL-terminated string.
                    name: unsafe { string_from_c(entry.name) },
                })
                .collect::<Vec<_>>();
            // SAFETY: frees the names librbd allocated in `entries`, once; the list is
            // terminated by an entry whose name is NULL (zeroed above, kept by librbd).
            unsafe { sys::rbd_snap_list_end(entries.as_mut_ptr()) };
            Ok(Attempt::Done(snaps))
        })?;
        snaps.sort_by_key(|snap| snap.id);
        Ok(snaps)
    }

    /// Whether snapshot `name` exists.
    pub fn snap_exists(&self, name: &str) -> Result<bool> {
        const OP: &str = "rbd_snap_exists";
        let c_snap = self.c_snap(name, OP)?;
        let mut exists = false;
        // SAFETY: live handle; `c_snap` outlives the call; `exists` is an out-pointer.
        let ret = unsafe { sys::rbd_snap_exists(self.raw(), c_snap.as_ptr(), &mut exists) };
        check(ret, OP, || self.snap_spec(name))?;
        Ok(exists)
    }

    /// Protects snapshot `name` so it can be cloned and cannot be removed.
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) if it is already protected.
    pub fn protect_snap(&self, name: &str) -> Result<()> {
        const OP: &str = "rbd_snap_protect";
        let c_snap = self.c_snap(name, OP)?;
        // SAFETY: live handle; `c_snap` outlives the call.
        let ret = unsafe { sys::rbd_snap_protect(self.raw(), c_snap.as_ptr()) };
        check(ret, OP, || self.snap_spec(name)).map(drop)
    }

    /// Unprotects snapshot `name`. [`ErrorKind::Busy`](crate::ErrorKind::Busy) while clones
    /// of it exist, [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) if it
    /// is not protected.
    pub fn unprotect_snap(&self, name: &str) -> Result<()> {
        const OP: &str = "rbd_snap_unprotect";
        let c_snap = self.c_snap(name, OP)?;
        // SAFETY: live handle; `c_snap` outlives the call.
        let ret = unsafe { sys::rbd_snap_unprotect(self.raw(), c_snap.as_ptr()) };
        check(ret, OP, || self.snap_spec(name)).map(drop)
    }

    /// Whether snapshot `name` is protected.
    pub fn is_snap_protected(&self, name: &str) -> Result<bool> {
        const OP: &str = "rbd_snap_is_protected";
        let c_snap = self.c_snap(name, OP)?;
        let mut protected: c_int = 0;
        // SAFETY: live handle; `c_snap` outlives the call; `protected` is an out-pointer.
        let ret =
            unsafe { sys::rbd_snap_is_protected(self.raw(), c_snap.as_ptr(), &mut protected) };
        check(ret, OP, || self.snap_spec(name))?;
        Ok(protected != 0)
    }

    /// Removes snapshot `name`. [`ErrorKind::Busy`](crate::ErrorKind::Busy) while it is
    /// protected.
    pub fn remove_snap(&self, name: &str) -> Result<()> {
        const OP: &str = "rbd_snap_remove";
        let c_snap = self.c_snap(name, OP)?;
        // SAFETY: live handle; `c_snap` outlives the call.
        let ret = unsafe { sys::rbd_snap_remove(self.raw(), c_snap.as_ptr()) };
        check(ret, OP, || self.snap_spec(name)).map(drop)
    }

    /// Rolls the image's content back to snapshot `name` (O(size): every object is
    /// rewritten). Nobody else should have the image open.
    pub fn rollback_to_snap(&self, name: &str) -> Result<()> {
        const OP: &str = "rbd_snap_rollback";
        let c_snap = self.c_snap(name, OP)?;
        // SAFETY: live handle; `c_snap` outlives the call.
        let ret = unsafe { sys::rbd_snap_rollback(self.raw(), c_snap.as_ptr()) };
        check(ret, OP, || self.snap_spec(name)).map(drop)
    }
}
