//! Layering: copy-on-write clones of a snapshot, the parent/children links between them, and
//! flatten (copy the parent's data into the clone and cut the link).
//!
//! ```text
//!   images/base@snap (protected) ──clone──> vms/disk   (reads fall through to the parent)
//!                                             │ flatten: O(size) copy, with progress
//!                                             v
//!                                           vms/disk   (no parent; base@snap can be unprotected)
//! ```
//! Clone format 1 (the default of a cluster whose `require_min_compat_client` is below
//! mimic, as `scripts/ceph-dev.sh` leaves it): the parent snapshot must be protected, and the
//! children of a snapshot are recorded in the parent pool's `rbd_children` object.

use std::ffi::{c_int, c_void};

use rbd_sys as sys;

use crate::callback::CallbackCell;
use crate::cluster::IoCtx;
use crate::error::{check, Result};
use crate::ffi_util::{grow_until_fits, string_from_c, Attempt};
use crate::image::{CreateOptions, Image, ImageOptions};

/// The snapshot a clone is made from: `pool/image@snapshot`.
#[derive(Debug, Clone, Copy)]
pub struct CloneSource<'a> {
    /// The parent's pool.
    pub pool: &'a IoCtx,
    /// The parent image.
    pub image: &'a str,
    /// A protected snapshot of it.
    pub snapshot: &'a str,
}

impl CloneSource<'_> {
    fn spec(&self) -> String {
        format!("{}@{}", self.pool.target(self.image), self.snapshot)
    }
}

/// An image linked to another by layering: a child of a snapshot, or the parent of a clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedImage {
    /// Pool name.
    pub pool: String,
    /// Pool namespace ("" for the default namespace).
    pub pool_namespace: String,
    /// Image name.
    pub image: String,
    /// Image id (the `rbd_data.<id>` prefix).
    pub image_id: String,
    /// Whether the image is in the trash.
    pub trash: bool,
}

impl LinkedImage {
    /// Copies a librbd `rbd_linked_image_spec_t` (which the caller still has to clean up).
    ///
    /// # Safety
    /// The string fields of `spec` must be NULL or valid NUL-terminated strings.
    unsafe fn from_spec(spec: &sys::rbd_linked_image_spec_t) -> Self {
        // SAFETY: guaranteed by the caller for each string field.
        unsafe {
            Self {
                pool: string_from_c(spec.pool_name),
                pool_namespace: string_from_c(spec.pool_namespace),
                image: string_from_c(spec.image_name),
                image_id: string_from_c(spec.image_id),
                trash: spec.trash,
            }
        }
    }
}

/// Where a clone comes from: `parent.pool/parent.image@snapshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentInfo {
    /// The parent image.
    pub image: LinkedImage,
    /// The parent snapshot's name.
    pub snapshot: String,
    /// The parent snapshot's id.
    pub snapshot_id: u64,
}

/// Flatten progress as librbd reports it: `done` of `total` objects copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Units done (objects, for flatten).
    pub done: u64,
    /// Units in all.
    pub total: u64,
}

impl IoCtx {
    /// Clones `source` (a protected snapshot, any pool) into this pool as `name`.
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) if the snapshot is
    /// not protected (clone format 1), `Exists` if `name` exists, `NotFound` if the source
    /// does not.
    pub fn clone_image(
        &self,
        name: &str,
        source: &CloneSource<'_>,
        options: &CreateOptions,
    ) -> Result<()> {
        const OP: &str = "rbd_clone3";
        let target = || format!("{} -> {}", source.spec(), self.target(name));
        let c_parent = source.pool.c_name(source.image, OP)?;
        let c_snap = source.pool.c_name(source.snapshot, OP)?;
        let c_name = self.c_name(name, OP)?;
        let opts = ImageOptions::new(options, OP, &target)?;
        // SAFETY: both io contexts and the options are live; the strings outlive the call.
        let ret = unsafe {
            sys::rbd_clone3(
                source.pool.raw(),
                c_parent.as_ptr(),
                c_snap.as_ptr(),
                self.raw(),
                c_name.as_ptr(),
                opts.raw(),
            )
        };
        check(ret, OP, target).map(drop)
    }
}

impl Image {
    /// The clones of snapshot `snap` of this image, in every pool (`rbd children`).
    ///
    /// Opens a second, read-only handle at `snap` for the call, so this handle's state is
    /// untouched.
    pub fn list_children(&self, snap: &str) -> Result<Vec<LinkedImage>> {
        const OP: &str = "rbd_list_children3";
        let at_snap = self
            .io_ctx()
            .open_image_read_only(self.name(), Some(snap))?;
        let target = || self.snap_spec(snap);
        grow_until_fits(8, OP, target, |capacity| {
            // SAFETY: `rbd_linked_image_spec_t` is plain old data (pointers may be NULL).
            let mut specs: Vec<sys::rbd_linked_image_spec_t> = (0..capacity)
                .map(|_| unsafe { std::mem::zeroed() })
                .collect();
            let mut count = capacity;
            // SAFETY: live handle; `specs` holds `count` writable entries.
            let ret =
                unsafe { sys::rbd_list_children3(at_snap.raw(), specs.as_mut_ptr(), &mut count) };
            if ret == -libc::ERANGE {
                return Ok(Attempt::Grow(count));
            }
            check(ret, OP, target)?;
            let count = count.min(capacity);
            let children = specs[..count]
                .iter()
                // SAFETY: librbd filled the first `count` entries with valid strings.
                .map(|spec| unsafe { LinkedImage::from_spec(spec) })
                .collect();
            // SAFETY: frees exactly the `count` entries librbd filled in, once.
            unsafe { sys::rbd_linked_image_spec_list_cleanup(specs.as_mut_ptr(), count) };
            Ok(Attempt::Done(children))
        })
    }

    /// The parent of this clone, or `None` if the image is not a clone (or was flattened).
    pub fn parent(&self) -> Result<Option<ParentInfo>> {
        const OP: &str = "rbd_get_parent";
        // SAFETY: both specs are plain old data; all-zero (NULL strings) is valid.
        let mut image: sys::rbd_linked_image_spec_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut snap: sys::rbd_snap_spec_t = unsafe { std::mem::zeroed() };
        // SAFETY: live handle; both out-structs are writable.
        let ret = unsafe { sys::rbd_get_parent(self.raw(), &mut image, &mut snap) };
        if ret == -libc::ENOENT {
            return Ok(None);
        }
        check(ret, OP, || self.spec())?;
        let parent = ParentInfo {
            // SAFETY: on success librbd filled both specs with valid strings.
            image: unsafe { LinkedImage::from_spec(&image) },
            // SAFETY: as above.
            snapshot: unsafe { string_from_c(snap.name) },
            snapshot_id: snap.id,
        };
        // SAFETY: frees the strings librbd allocated in the two specs, once.
        unsafe {
            sys::rbd_linked_image_spec_cleanup(&mut image);
            sys::rbd_snap_spec_cleanup(&mut snap);
        }
        Ok(Some(parent))
    }

    /// Copies the parent's data into this clone and detaches it (O(size)); blocks until done.
    pub fn flatten(&self) -> Result<()> {
        self.flatten_with_progress(|_| {})
    }

    /// [`flatten`](Self::flatten), calling `progress` as objects are copied.
    ///
    /// librbd reports `done` = the index of the object it starts copying, of `total` objects
    /// in the parent overlap, so its last report is `total - 1`; after a successful flatten
    /// this wrapper reports `done == total` once more, so callers can rely on a final 100 %.
    ///
    /// `progress` runs on librbd's threads (hence `Send`), one call at a time. If it panics it
    /// is not called again, the flatten still runs to its end, and the panic is re-raised
    /// here, on the caller's thread.
    pub fn flatten_with_progress<F>(&self, progress: F) -> Result<()>
    where
        F: FnMut(Progress) + Send,
    {
        let cell = CallbackCell::new(ProgressReporter {
            progress,
            last: None,
        });
        let arg = std::ptr::from_ref(&cell).cast_mut().cast::<c_void>();
        // SAFETY: live handle; `progress_trampoline::<F>` matches `librbd_progress_fn_t` and
        // receives `arg`, a pointer to `cell`, which outlives the call: librbd's progress
        // context lives on the stack of `rbd_flatten_with_progress`, so no call happens after
        // it returns.
        let ret = unsafe {
            sys::rbd_flatten_with_progress(self.raw(), Some(progress_trampoline::<F>), arg)
        };
        if ret >= 0 {
            cell.with(ProgressReporter::complete);
        }
        cell.finish();
        check(ret, "rbd_flatten_with_progress", || self.spec()).map(drop)
    }
}

/// The caller's progress closure plus the last report, to send the final `done == total`.
struct ProgressReporter<F> {
    progress: F,
    last: Option<Progress>,
}

impl<F: FnMut(Progress)> ProgressReporter<F> {
    fn report(&mut self, report: Progress) {
        self.last = Some(report);
        (self.progress)(report);
    }

    fn complete(&mut self) {
        if let Some(last) = self.last.filter(|last| last.done != last.total) {
            self.report(Progress {
                done: last.total,
                total: last.total,
            });
        }
    }
}

/// `librbd_progress_fn_t` reporting to the `ProgressReporter<F>` in the cell behind `arg`.
unsafe extern "C" fn progress_trampoline<F>(offset: u64, total: u64, arg: *mut c_void) -> c_int
where
    F: FnMut(Progress) + Send,
{
    // SAFETY: `arg` is the `&CallbackCell<ProgressReporter<F>>` passed by
    // `flatten_with_progress`, alive for the whole librbd call; the cell's mutex makes the
    // shared reference sufficient.
    let cell = unsafe { &*arg.cast::<CallbackCell<ProgressReporter<F>>>() };
    cell.with(|reporter| {
        reporter.report(Progress {
            done: offset,
            total,
        })
    });
    0
}
