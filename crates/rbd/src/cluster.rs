//! Connections: [`Cluster`] (a connected `rados_t`) and [`IoCtx`] (a `rados_ioctx_t` on
//! one pool).
//!
//! Ownership makes the C teardown order automatic: an `IoCtx` holds an `Arc` of its
//! cluster, an [`Image`](crate::Image) holds its `IoCtx`, so `rbd_close` always runs before
//! `rados_ioctx_destroy`, which always runs before `rados_shutdown`, whatever order the
//! Rust values are dropped in. Both types are cheap to clone (an `Arc`), `Send` and `Sync`:
//! librados handles are thread-safe, and an `IoCtx` is never mutated after creation (no
//! namespace or snapshot-read changes), which is the part librados says is not thread-safe.

use std::ffi::{c_char, CString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use rbd_sys as sys;

use crate::error::{check, Result};
use crate::ffi_util::c_string;

/// How [`Cluster::connect_with`] connects.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    conf_path: PathBuf,
    client_id: String,
    keyring: Option<PathBuf>,
    mount_timeout: Duration,
    settings: Vec<(String, String)>,
}

impl ConnectOptions {
    /// Connect with the configuration file at `conf_path`, as `client.admin`, no keyring,
    /// giving up after 30 s if no monitor answers.
    pub fn new(conf_path: impl Into<PathBuf>) -> Self {
        Self {
            conf_path: conf_path.into(),
            client_id: "admin".to_string(),
            keyring: None,
            mount_timeout: Duration::from_secs(30),
            settings: Vec::new(),
        }
    }

    /// The client id without the `client.` prefix (default `admin`).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// A keyring file (not needed when the cluster runs with `auth ... = none`).
    pub fn keyring(mut self, path: impl Into<PathBuf>) -> Self {
        self.keyring = Some(path.into());
        self
    }

    /// How long `connect` waits for the monitors (`client_mount_timeout`; default 30 s,
    /// librados' own default is 300 s).
    pub fn mount_timeout(mut self, timeout: Duration) -> Self {
        self.mount_timeout = timeout;
        self
    }

    /// Any other Ceph option, applied after the configuration file (`rados_conf_set`).
    ///
    /// E.g. `.set("rados_osd_op_timeout", "30")`: by default an I/O to a full or unreachable
    /// OSD waits forever; with a timeout it fails with
    /// [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut) (beware: a long flatten's object
    /// copies are bounded by it too).
    pub fn set(mut self, option: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((option.into(), value.into()));
        self
    }
}

/// The `rados_t`; shut down when the last `Cluster`/`IoCtx`/`Image` referring to it goes.
struct ClusterHandle {
    handle: sys::rados_t,
    conf_path: PathBuf,
}

// SAFETY: a `rados_t` is a pointer to librados' `RadosClient`, which is internally
// synchronised; librados documents its cluster handle as usable from any thread.
unsafe impl Send for ClusterHandle {}
// SAFETY: as above: every operation we call on a connected handle is thread-safe.
unsafe impl Sync for ClusterHandle {}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        // SAFETY: `handle` came from `rados_create` and is shut down exactly once, here;
        // every `IoCtx` made from it holds an `Arc` of this struct, so all are destroyed.
        unsafe { sys::rados_shutdown(self.handle) };
    }
}

/// A connection to a Ceph cluster (librados). Cloning shares the connection.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<ClusterHandle>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("conf_path", &self.inner.conf_path)
            .finish()
    }
}

impl Cluster {
    /// Connects as `client.<client_id>` (e.g. `"admin"`) using the configuration file at
    /// `conf_path`, with an optional keyring. Blocks up to 30 s when no monitor answers
    /// (then [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut)).
    pub fn connect(conf_path: &Path, client_id: &str, keyring: Option<&Path>) -> Result<Self> {
        let mut options = ConnectOptions::new(conf_path).client_id(client_id);
        if let Some(keyring) = keyring {
            options = options.keyring(keyring);
        }
        Self::connect_with(&options)
    }

    /// Connects with full [`ConnectOptions`].
    pub fn connect_with(options: &ConnectOptions) -> Result<Self> {
        let conf_display = options.conf_path.display().to_string();
        let target = || conf_display.clone();
        let id = c_string(&options.client_id, "rados_create", target)?;
        let mut handle: sys::rados_t = ptr::null_mut();
        // SAFETY: `handle` is a valid out-pointer and `id` a NUL-terminated string that
        // outlives the call.
        let ret = unsafe { sys::rados_create(&mut handle, id.as_ptr()) };
        check(ret, "rados_create", target)?;
        // From here on the handle is owned, so every early return shuts it down.
        let cluster = ClusterHandle {
            handle,
            conf_path: options.conf_path.clone(),
        };

        let conf = c_string(&conf_display, "rados_conf_read_file", target)?;
        // SAFETY: `cluster.handle` is a fresh, unconnected handle; `conf` outlives the call.
        let ret = unsafe { sys::rados_conf_read_file(cluster.handle, conf.as_ptr()) };
        check(ret, "rados_conf_read_file", target)?;

        let timeout = options.mount_timeout.as_secs().max(1).to_string();
        let mut settings = vec![("client_mount_timeout".to_string(), timeout)];
        if let Some(keyring) = &options.keyring {
            settings.push(("keyring".to_string(), keyring.display().to_string()));
        }
        settings.extend(options.settings.iter().cloned());
        for (option, value) in &settings {
            let c_option = c_string(option, "rados_conf_set", target)?;
            let c_value = c_string(value, "rados_conf_set", target)?;
            // SAFETY: unconnected handle; both strings are NUL-terminated and outlive the call.
            let ret =
                unsafe { sys::rados_conf_set(cluster.handle, c_option.as_ptr(), c_value.as_ptr()) };
            check(ret, "rados_conf_set", || {
                format!("{conf_display} ({option})")
            })?;
        }

        // SAFETY: the handle is configured and not yet connected.
        let ret = unsafe { sys::rados_connect(cluster.handle) };
        check(ret, "rados_connect", target)?;
        Ok(Self {
            inner: Arc::new(cluster),
        })
    }

    /// The cluster's fsid, e.g. `46f1f629-9df0-4ef3-85a3-666d2065e7a8` (as in Glance's
    /// `rbd://fsid/pool/image/snap` locations).
    pub fn fsid(&self) -> Result<String> {
        let mut buf = [0u8; 64];
        // SAFETY: connected handle; `buf` is writable for `buf.len()` bytes.
        let ret = unsafe {
            sys::rados_cluster_fsid(
                self.inner.handle,
                buf.as_mut_ptr().cast::<c_char>(),
                buf.len(),
            )
        };
        let len = check(ret, "rados_cluster_fsid", || {
            self.inner.conf_path.display().to_string()
        })?;
        let len = usize::try_from(len).unwrap_or(0).min(buf.len());
        let text = &buf[..len];
        let text = text.split(|b| *b == 0).next().unwrap_or_default();
        Ok(String::from_utf8_lossy(text).into_owned())
    }

    /// An I/O context on `pool` ([`ErrorKind::NotFound`](crate::ErrorKind::NotFound) if
    /// there is no such pool).
    pub fn io_ctx(&self, pool: &str) -> Result<IoCtx> {
        let c_pool = c_string(pool, "rados_ioctx_create", || pool.to_string())?;
        let mut handle: sys::rados_ioctx_t = ptr::null_mut();
        // SAFETY: connected handle; `c_pool` outlives the call; `handle` is an out-pointer.
        let ret =
            unsafe { sys::rados_ioctx_create(self.inner.handle, c_pool.as_ptr(), &mut handle) };
        check(ret, "rados_ioctx_create", || pool.to_string())?;
        Ok(IoCtx {
            inner: Arc::new(IoCtxHandle {
                handle,
                pool: pool.to_string(),
                _cluster: self.clone(),
            }),
        })
    }
}

/// The `rados_ioctx_t`; destroyed when the last `IoCtx`/`Image` using it goes, and always
/// before its cluster (it holds a `Cluster`).
struct IoCtxHandle {
    handle: sys::rados_ioctx_t,
    pool: String,
    _cluster: Cluster,
}

// SAFETY: librados io contexts may be used from several threads as long as their settings
// (namespace, snap context, locator key) are not changed concurrently; this crate never
// changes them after `rados_ioctx_create`. librbd duplicates the context it is given.
unsafe impl Send for IoCtxHandle {}
// SAFETY: as above: shared use only ever reads the context's settings.
unsafe impl Sync for IoCtxHandle {}

impl Drop for IoCtxHandle {
    fn drop(&mut self) {
        // SAFETY: `handle` came from `rados_ioctx_create` and is destroyed once, here; every
        // image opened on it holds an `Arc` of this struct, so all of them are closed, and
        // `_cluster` (dropped after this body) keeps the cluster connected until now.
        unsafe { sys::rados_ioctx_destroy(self.handle) };
    }
}

/// An I/O context on one pool: where images are created, opened, cloned, listed.
/// Cloning shares the context.
#[derive(Clone)]
pub struct IoCtx {
    inner: Arc<IoCtxHandle>,
}

impl fmt::Debug for IoCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoCtx")
            .field("pool", &self.inner.pool)
            .finish()
    }
}

impl IoCtx {
    /// The pool's name.
    pub fn pool_name(&self) -> &str {
        &self.inner.pool
    }

    /// The raw handle, for calls into librbd.
    pub(crate) fn raw(&self) -> sys::rados_ioctx_t {
        self.inner.handle
    }

    /// `pool/name`, for error context.
    pub(crate) fn target(&self, name: &str) -> String {
        format!("{}/{}", self.inner.pool, name)
    }

    /// `name` as a C string for `op`.
    pub(crate) fn c_name(&self, name: &str, op: &'static str) -> Result<CString> {
        c_string(name, op, || self.target(name))
    }
}
