//! Images: create/open/remove/list on an [`IoCtx`], and the [`Image`] handle (size, resize,
//! read, write, flush). Snapshots, clones and diffs add methods to `Image` in their own
//! modules.
//!
//! An `Image` is `Send` but not `Sync`: one thread at a time may use a handle (move it into
//! `spawn_blocking`, or share it behind a `Mutex`). It closes itself on drop and keeps its
//! `IoCtx` (and so its cluster) alive until then.

use std::ffi::{c_char, CString};
use std::fmt;
use std::marker::PhantomData;
use std::ops::BitOr;
use std::ptr;

use rbd_sys as sys;

use crate::cluster::IoCtx;
use crate::error::{check, Result};
use crate::ffi_util::{c_string, grow_until_fits, string_from_c, Attempt};

/// RBD image feature bits (`RBD_FEATURE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Features(u64);

impl Features {
    /// Copy-on-write clones of snapshots (always enabled by this crate).
    pub const LAYERING: Self = Self(sys::RBD_FEATURE_LAYERING as u64);
    /// One writer at a time; needed by `OBJECT_MAP`.
    pub const EXCLUSIVE_LOCK: Self = Self(sys::RBD_FEATURE_EXCLUSIVE_LOCK as u64);
    /// Tracks which objects exist (faster clone I/O, flatten, diff); needs `EXCLUSIVE_LOCK`.
    pub const OBJECT_MAP: Self = Self(sys::RBD_FEATURE_OBJECT_MAP as u64);
    /// Diffs from the object map; needs `OBJECT_MAP`.
    pub const FAST_DIFF: Self = Self(sys::RBD_FEATURE_FAST_DIFF as u64);
    /// Flatten also detaches the clone's own snapshots from the parent.
    pub const DEEP_FLATTEN: Self = Self(sys::RBD_FEATURE_DEEP_FLATTEN as u64);
    /// librbd's default set (`RBD_FEATURES_DEFAULT`): all five above, as `rbd create` uses.
    pub const DEFAULT: Self = Self(sys::RBD_FEATURES_DEFAULT as u64);

    /// No feature bits.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// From raw `RBD_FEATURE_*` bits.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Features {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// Options of [`IoCtx::create_image`] and [`IoCtx::clone_image`](crate::IoCtx::clone_image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateOptions {
    /// Object size as a power of two (22 = 4 MiB); `None`: librbd's default for a new image,
    /// the parent's for a clone.
    pub order: Option<u8>,
    /// Feature bits; [`Features::LAYERING`] is always added.
    pub features: Features,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            order: None,
            features: Features::DEFAULT,
        }
    }
}

/// An `rbd_image_options_t`, destroyed on drop.
pub(crate) struct ImageOptions(sys::rbd_image_options_t);

impl ImageOptions {
    /// Options carrying `options.features | LAYERING` and the order, if any.
    pub(crate) fn new(
        options: &CreateOptions,
        op: &'static str,
        target: &dyn Fn() -> String,
    ) -> Result<Self> {
        let mut raw: sys::rbd_image_options_t = ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer; librbd allocates the options object.
        unsafe { sys::rbd_image_options_create(&mut raw) };
        let opts = Self(raw);
        let features = (options.features | Features::LAYERING).bits();
        opts.set(sys::RBD_IMAGE_OPTION_FEATURES, features, op, target)?;
        if let Some(order) = options.order {
            opts.set(sys::RBD_IMAGE_OPTION_ORDER, u64::from(order), op, target)?;
        }
        Ok(opts)
    }

    fn set(
        &self,
        option: u32,
        value: u64,
        op: &'static str,
        target: &dyn Fn() -> String,
    ) -> Result<()> {
        let option = i32::try_from(option).unwrap_or(i32::MAX);
        // SAFETY: `self.0` is a live options object created by `rbd_image_options_create`.
        let ret = unsafe { sys::rbd_image_options_set_uint64(self.0, option, value) };
        check(ret, op, target).map(drop)
    }

    pub(crate) fn raw(&self) -> sys::rbd_image_options_t {
        self.0
    }
}

impl Drop for ImageOptions {
    fn drop(&mut self) {
        // SAFETY: created by `rbd_image_options_create`, destroyed once, here.
        unsafe { sys::rbd_image_options_destroy(self.0) };
    }
}

/// What `rbd_stat` reports about an image (or the snapshot it is opened at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Size in bytes.
    pub size: u64,
    /// Object size in bytes (`1 << order`).
    pub object_size: u64,
    /// Number of objects the image spans.
    pub num_objects: u64,
    /// Object size as a power of two.
    pub order: u8,
}

impl IoCtx {
    /// Creates image `name` of `size` bytes in this pool (format 2, `LAYERING` always on).
    pub fn create_image(&self, name: &str, size: u64, options: &CreateOptions) -> Result<()> {
        const OP: &str = "rbd_create4";
        let c_name = self.c_name(name, OP)?;
        let opts = ImageOptions::new(options, OP, &|| self.target(name))?;
        // SAFETY: live ioctx and options; `c_name` outlives the call.
        let ret = unsafe { sys::rbd_create4(self.raw(), c_name.as_ptr(), size, opts.raw()) };
        check(ret, OP, || self.target(name)).map(drop)
    }

    /// Opens image `name` for reading and writing.
    pub fn open_image(&self, name: &str) -> Result<Image> {
        Image::open(self, name, None, false)
    }

    /// Opens image `name` read-only, at snapshot `snap` (or the head when `None`).
    pub fn open_image_read_only(&self, name: &str, snap: Option<&str>) -> Result<Image> {
        Image::open(self, name, snap, true)
    }

    /// Removes image `name`. [`ErrorKind::NotEmpty`](crate::ErrorKind::NotEmpty) while it
    /// has snapshots, [`ErrorKind::Busy`](crate::ErrorKind::Busy) while it is open elsewhere.
    pub fn remove_image(&self, name: &str) -> Result<()> {
        const OP: &str = "rbd_remove";
        let c_name = self.c_name(name, OP)?;
        // SAFETY: live ioctx; `c_name` outlives the call.
        let ret = unsafe { sys::rbd_remove(self.raw(), c_name.as_ptr()) };
        check(ret, OP, || self.target(name)).map(drop)
    }

    /// Names of the images in this pool (`rbd ls`), sorted.
    pub fn list_images(&self) -> Result<Vec<String>> {
        const OP: &str = "rbd_list2";
        let target = || self.pool_name().to_string();
        let mut names = grow_until_fits(32, OP, target, |capacity| {
            let empty = sys::rbd_image_spec_t {
                id: ptr::null_mut(),
                name: ptr::null_mut(),
            };
            let mut specs = vec![empty; capacity];
            let mut count = capacity;
            // SAFETY: `specs` holds `count` writable entries; librbd writes at most `count`,
            // sets `count` to how many it wrote, or to how many it needs on -ERANGE.
            let ret = unsafe { sys::rbd_list2(self.raw(), specs.as_mut_ptr(), &mut count) };
            if ret == -libc::ERANGE {
                return Ok(Attempt::Grow(count));
            }
            check(ret, OP, target)?;
            let count = count.min(capacity);
            let names = specs[..count]
                .iter()
                // SAFETY: librbd filled each `name` with a NUL-terminated string.
                .map(|spec| unsafe { string_from_c(spec.name) })
                .collect::<Vec<_>>();
            // SAFETY: frees the strings of exactly the entries librbd filled in, once.
            unsafe { sys::rbd_image_spec_list_cleanup(specs.as_mut_ptr(), count) };
            Ok(Attempt::Done(names))
        })?;
        names.sort();
        Ok(names)
    }
}

/// An open image (`rbd_image_t`). Closed on drop (or with [`Image::close`] to see errors).
///
/// `Send` but not `Sync`: librbd serialises one handle's requests internally, but image
/// handles are not meant to be driven from two threads at once, so one thread at a time:
///
/// ```compile_fail
/// fn shared_between_threads<T: Sync>() {}
/// shared_between_threads::<rbd::Image>();
/// ```
pub struct Image {
    handle: sys::rbd_image_t,
    name: String,
    /// The snapshot the handle was opened at (read-only), `None` for the head.
    snap: Option<String>,
    io: IoCtx,
    /// Makes `Image` `!Sync` (a `Cell` is `Send + !Sync`).
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

// SAFETY: an `rbd_image_t` is a pointer to librbd's `ImageCtx`, which is not tied to the
// thread that opened it; librbd runs its work on its own threads and locks internally.
// Moving the handle to another thread is what QEMU and the `rbd` tool do routinely.
unsafe impl Send for Image {}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image").field("spec", &self.spec()).finish()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            // SAFETY: `handle` came from `rbd_open*` and is closed once (close() nulls it);
            // `self.io` is still alive (it is dropped after this body).
            unsafe { sys::rbd_close(self.handle) };
        }
    }
}

impl Image {
    fn open(io: &IoCtx, name: &str, snap: Option<&str>, read_only: bool) -> Result<Self> {
        let op = if read_only {
            "rbd_open_read_only"
        } else {
            "rbd_open"
        };
        let target = || match snap {
            Some(snap) => format!("{}@{snap}", io.target(name)),
            None => io.target(name),
        };
        let c_name = c_string(name, op, target)?;
        let c_snap = snap.map(|s| c_string(s, op, target)).transpose()?;
        let snap_ptr = c_snap.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        let mut handle: sys::rbd_image_t = ptr::null_mut();
        // SAFETY: live ioctx; `handle` is an out-pointer; the strings outlive the call
        // (`snap_ptr` is NULL or points into `c_snap`).
        let ret = unsafe {
            if read_only {
                sys::rbd_open_read_only(io.raw(), c_name.as_ptr(), &mut handle, snap_ptr)
            } else {
                sys::rbd_open(io.raw(), c_name.as_ptr(), &mut handle, snap_ptr)
            }
        };
        check(ret, op, target)?;
        Ok(Self {
            handle,
            name: name.to_string(),
            snap: snap.map(str::to_string),
            io: io.clone(),
            _not_sync: PhantomData,
        })
    }

    /// Closes the handle, reporting librbd's error (drop ignores it).
    pub fn close(mut self) -> Result<()> {
        let handle = std::mem::replace(&mut self.handle, ptr::null_mut());
        // SAFETY: `handle` is the live handle; it is nulled above so drop will not close it again.
        let ret = unsafe { sys::rbd_close(handle) };
        check(ret, "rbd_close", || self.spec()).map(drop)
    }

    /// The image's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The snapshot this handle reads, if it was opened at one.
    pub fn snapshot(&self) -> Option<&str> {
        self.snap.as_deref()
    }

    /// The pool the image lives in.
    pub fn io_ctx(&self) -> &IoCtx {
        &self.io
    }

    /// `pool/image` or `pool/image@snap`, for messages.
    pub fn spec(&self) -> String {
        match &self.snap {
            Some(snap) => format!("{}@{snap}", self.io.target(&self.name)),
            None => self.io.target(&self.name),
        }
    }

    /// `pool/image@snap` for a snapshot of this image, for messages.
    pub(crate) fn snap_spec(&self, snap: &str) -> String {
        format!("{}@{snap}", self.io.target(&self.name))
    }

    pub(crate) fn raw(&self) -> sys::rbd_image_t {
        self.handle
    }

    /// `rbd_stat`: size, object size, object count, order.
    pub fn stat(&self) -> Result<ImageInfo> {
        // SAFETY: `rbd_image_info_t` is plain old data; all-zero is a valid value.
        let mut info: sys::rbd_image_info_t = unsafe { std::mem::zeroed() };
        let info_size = std::mem::size_of::<sys::rbd_image_info_t>();
        // SAFETY: live handle; `info` is writable and `info_size` is its size.
        let ret = unsafe { sys::rbd_stat(self.handle, &mut info, info_size) };
        check(ret, "rbd_stat", || self.spec())?;
        Ok(ImageInfo {
            size: info.size,
            object_size: info.obj_size,
            num_objects: info.num_objs,
            order: u8::try_from(info.order).unwrap_or(u8::MAX),
        })
    }

    /// Size in bytes (of the head, or of the snapshot the handle is at).
    pub fn size(&self) -> Result<u64> {
        let mut size = 0u64;
        // SAFETY: live handle; `size` is a valid out-pointer.
        let ret = unsafe { sys::rbd_get_size(self.handle, &mut size) };
        check(ret, "rbd_get_size", || self.spec())?;
        Ok(size)
    }

    /// Feature bits of the image.
    pub fn features(&self) -> Result<Features> {
        let mut bits = 0u64;
        // SAFETY: live handle; `bits` is a valid out-pointer.
        let ret = unsafe { sys::rbd_get_features(self.handle, &mut bits) };
        check(ret, "rbd_get_features", || self.spec())?;
        Ok(Features(bits))
    }

    /// Grows or shrinks the image to `size` bytes.
    pub fn resize(&self, size: u64) -> Result<()> {
        // SAFETY: live handle.
        let ret = unsafe { sys::rbd_resize(self.handle, size) };
        check(ret, "rbd_resize", || self.spec()).map(drop)
    }

    /// Reads into `buf` from byte `offset`; returns the bytes read (fewer than `buf.len()`
    /// only at the end of the image). Unwritten ranges read as zeros (or the parent's data).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        // SAFETY: live handle; `buf` is writable for `buf.len()` bytes for the whole call.
        let ret = unsafe {
            sys::rbd_read(
                self.handle,
                offset,
                buf.len(),
                buf.as_mut_ptr().cast::<c_char>(),
            )
        };
        let read = check(ret as i64, "rbd_read", || {
            format!("{} at {offset}", self.spec())
        })?;
        Ok(usize::try_from(read).unwrap_or(0))
    }

    /// Writes all of `data` at byte `offset` (which must be inside the image).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        // SAFETY: live handle; `data` is readable for `data.len()` bytes for the whole call.
        let ret = unsafe {
            sys::rbd_write(
                self.handle,
                offset,
                data.len(),
                data.as_ptr().cast::<c_char>(),
            )
        };
        let written = check(ret as i64, "rbd_write", || {
            format!("{} at {offset}", self.spec())
        })?;
        if usize::try_from(written).ok() != Some(data.len()) {
            return Err(crate::Error::from_errno(
                libc::EIO,
                "rbd_write",
                format!("{} at {offset}", self.spec()),
            ));
        }
        Ok(())
    }

    /// Waits until every write issued through this handle is stable in the cluster.
    pub fn flush(&self) -> Result<()> {
        // SAFETY: live handle.
        let ret = unsafe { sys::rbd_flush(self.handle) };
        check(ret, "rbd_flush", || self.spec()).map(drop)
    }

    /// Holds a C copy of `snap` for `op` on this image.
    pub(crate) fn c_snap(&self, snap: &str, op: &'static str) -> Result<CString> {
        c_string(snap, op, || self.snap_spec(snap))
    }
}
