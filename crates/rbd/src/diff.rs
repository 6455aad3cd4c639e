//! Changed extents between a snapshot (or the image's creation) and the handle's current view
//! (`rbd_diff_iterate2`): what an incremental export, or a "what did this snapshot change"
//! query, reads.

use std::ffi::{c_int, c_void};
use std::ops::Range;

use rbd_sys as sys;

use crate::callback::CallbackCell;
use crate::error::{check, Result};
use crate::image::Image;

/// One extent reported by [`Image::diff_iterate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffExtent {
    /// Byte offset in the image.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// `true`: data was written there; `false`: it was discarded (reads as zeros now).
    pub exists: bool,
}

/// What [`Image::diff_iterate`] compares and how it reports.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Compare against this snapshot; `None`: against nothing (every allocated extent).
    pub from_snapshot: Option<String>,
    /// Also report extents that come from the parent of a clone.
    pub include_parent: bool,
    /// Report whole objects instead of exact extents (much cheaper with `FAST_DIFF`).
    pub whole_object: bool,
}

impl Image {
    /// Calls `on_extent` for each changed extent within `range` (bytes), normally in offset
    /// order (librbd does not promise it; [`diff_extents`](Self::diff_extents) sorts).
    ///
    /// `on_extent` may be called from librbd's threads (hence `Send`), one call at a time. If
    /// it panics, iteration stops and the panic is re-raised here, on the caller's thread.
    pub fn diff_iterate<F>(
        &self,
        range: Range<u64>,
        options: &DiffOptions,
        on_extent: F,
    ) -> Result<()>
    where
        F: FnMut(DiffExtent) + Send,
    {
        const OP: &str = "rbd_diff_iterate2";
        let from = options
            .from_snapshot
            .as_deref()
            .map(|s| self.c_snap(s, OP))
            .transpose()?;
        let from_ptr = from.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        let length = range.end.saturating_sub(range.start);
        let cell = CallbackCell::new(on_extent);
        let arg = std::ptr::from_ref(&cell).cast_mut().cast::<c_void>();
        // SAFETY: live handle; `from_ptr` is NULL or points into `from`, which outlives the
        // call; `diff_trampoline::<F>` has the callback's C signature and gets `arg`, a
        // pointer to `cell`, which outlives the call (librbd finishes iterating before
        // `rbd_diff_iterate2` returns).
        let ret = unsafe {
            sys::rbd_diff_iterate2(
                self.raw(),
                from_ptr,
                range.start,
                length,
                u8::from(options.include_parent),
                u8::from(options.whole_object),
                Some(diff_trampoline::<F>),
                arg,
            )
        };
        cell.finish();
        check(ret, OP, || self.spec()).map(drop)
    }

    /// The changed extents within `range`, sorted by offset (see [`diff_iterate`](Self::diff_iterate)).
    pub fn diff_extents(
        &self,
        range: Range<u64>,
        options: &DiffOptions,
    ) -> Result<Vec<DiffExtent>> {
        let mut extents = Vec::new();
        self.diff_iterate(range, options, |extent| extents.push(extent))?;
        extents.sort_by_key(|extent| extent.offset);
        Ok(extents)
    }
}

/// The `rbd_diff_iterate2` callback calling the `F` in the `CallbackCell<F>` behind `arg`.
/// Returns `-ECANCELED` (which stops the iteration) once `F` has panicked.
unsafe extern "C" fn diff_trampoline<F>(
    offset: u64,
    length: usize,
    exists: c_int,
    arg: *mut c_void,
) -> c_int
where
    F: FnMut(DiffExtent) + Send,
{
    // SAFETY: `arg` is the `&CallbackCell<F>` passed by `diff_iterate`, alive for the whole
    // librbd call; the cell's mutex makes the shared reference sufficient.
    let cell = unsafe { &*arg.cast::<CallbackCell<F>>() };
    let extent = DiffExtent {
        offset,
        length: length as u64,
        exists: exists != 0,
    };
    match cell.with(|f| f(extent)) {
        Some(()) => 0,
        None => -libc::ECANCELED,
    }
}
