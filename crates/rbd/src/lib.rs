//! A small, safe, blocking wrapper over librbd and librados (Ceph 16, librbd 1.16): what
//! Snapstack's `rbd` storage driver needs — connect, pools, images, snapshots, clones,
//! flatten, diffs.
//!
//! ```no_run
//! # fn main() -> rbd::Result<()> {
//! use rbd::{Cluster, CloneSource, CreateOptions};
//! let cluster = Cluster::connect("build/ceph/ceph.conf".as_ref(), "admin", None)?;
//! let images = cluster.io_ctx("images")?;
//! images.create_image("base", 1 << 30, &CreateOptions::default())?;
//! let base = images.open_image("base")?;
//! base.write_at(0, b"hello")?;
//! base.create_snap("snap")?;
//! base.protect_snap("snap")?;
//! let vms = cluster.io_ctx("vms")?;
//! let source = CloneSource { pool: &images, image: "base", snapshot: "snap" };
//! vms.clone_image("disk", &source, &CreateOptions::default())?;
//! vms.open_image("disk")?.flatten_with_progress(|p| eprintln!("{}/{}", p.done, p.total))?;
//! # Ok(()) }
//! ```
//!
//! # Blocking
//! Every call blocks the calling thread until the cluster answers (a flatten can take
//! seconds to minutes). From async code, run them on the blocking pool:
//! `tokio::task::spawn_blocking(move || image.flatten())`. All handle types are `'static`
//! (they own `Arc`s), so they move into such closures freely.
//!
//! # Threads and lifetimes
//! - [`Cluster`] and [`IoCtx`] are `Send + Sync + Clone` (shared `Arc`s).
//! - [`Image`] is `Send` but not `Sync`: use one handle from one thread at a time (or put
//!   it in a `Mutex`); open several handles for parallel work.
//! - Teardown order is enforced by ownership: an `Image` keeps its `IoCtx` alive, an `IoCtx`
//!   its `Cluster`; `rbd_close` → `rados_ioctx_destroy` → `rados_shutdown` always happen in
//!   that order, whatever order the Rust values are dropped in.
//! - Callbacks (flatten progress, diff extents) may run on librbd's threads; they must be
//!   `Send`, are called one at a time, and a panic in them is caught at the FFI boundary
//!   and re-raised on the caller's thread after the librbd call returns.
//!
//! # Errors
//! One [`Error`] type: a matchable [`ErrorKind`] decoded from the negative errno (`NotFound`,
//! `Exists`, `Busy`, `NotEmpty`, `InvalidArgument`, …), the C function that failed and the
//! `pool/image@snap` it was applied to. `-ERANGE` from list calls is handled internally
//! (the buffer grows and the call is retried).
//!
//! # Clone format
//! librbd's `rbd_default_clone_format = auto` uses clone format 2 (no protection needed)
//! only when the cluster's `require_min_compat_client` is at least mimic. Snapstack's
//! clusters keep the default (luminous), so clones are format 1: **protect a snapshot
//! before cloning it**; a protected snapshot cannot be removed (`Busy`), nor unprotected
//! while it has children (`Busy`); flatten or remove the children first.

mod callback;
mod cluster;
mod diff;
mod error;
mod ffi_util;
mod image;
mod layering;
mod snapshot;

pub use cluster::{Cluster, ConnectOptions, IoCtx};
pub use diff::{DiffExtent, DiffOptions};
pub use error::{Error, ErrorKind, Result};
pub use image::{CreateOptions, Features, Image, ImageInfo};
pub use layering::{CloneSource, LinkedImage, ParentInfo, Progress};
pub use snapshot::SnapInfo;

// The thread-safety promises above, checked at compile time.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Cluster>();
    send_sync::<IoCtx>();
    send_sync::<Error>();
    send::<Image>();
};
