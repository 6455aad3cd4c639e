//! Shared harness of the integration tests: the cluster from `CEPH_CONF` (started by
//! `scripts/ceph-dev.sh start`; a missing or unreachable cluster is a test failure, not a
//! skip), unique image names, and a guard that removes an image and its snapshots on drop.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rbd::{Cluster, ConnectOptions, CreateOptions, ErrorKind, Image, IoCtx};

pub const MIB: u64 = 1 << 20;

/// Connects to the test cluster named by `CEPH_CONF`; panics with instructions if it can't.
pub fn cluster() -> Cluster {
    let conf = std::env::var_os("CEPH_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "CEPH_CONF is not set. These tests need the dev cluster: run \
             `scripts/ceph-dev.sh start && eval \"$(scripts/ceph-dev.sh env)\"` first"
            )
        });
    let options = ConnectOptions::new(&conf).mount_timeout(Duration::from_secs(10));
    Cluster::connect_with(&options).unwrap_or_else(|err| {
        let cause = std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default();
        panic!(
            "cannot reach the Ceph cluster of CEPH_CONF={}: {err} ({cause}). \
             Is it running? `scripts/ceph-dev.sh status`",
            conf.display(),
        )
    })
}

/// An I/O context on `pool` of the test cluster.
pub fn pool(cluster: &Cluster, pool: &str) -> IoCtx {
    cluster
        .io_ctx(pool)
        .unwrap_or_else(|err| panic!("pool {pool} of the dev cluster: {err}"))
}

/// A name no other test (or test run) uses: `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("test-{prefix}-{}-{n}", std::process::id())
}

/// Removes image `name` (and all its snapshots) from `io` when dropped. Declare children
/// after their parents so they are dropped (removed) first.
pub struct ImageGuard {
    pub io: IoCtx,
    pub name: String,
}

impl ImageGuard {
    /// Creates image `name` of `size` bytes with default options and guards it.
    pub fn create(io: &IoCtx, prefix: &str, size: u64) -> Self {
        let name = unique_name(prefix);
        io.create_image(&name, size, &CreateOptions::default())
            .unwrap_or_else(|err| panic!("arrange: create {name}: {err}"));
        Self::adopt(io, &name)
    }

    /// Guards an image that exists (or is about to).
    pub fn adopt(io: &IoCtx, name: &str) -> Self {
        Self {
            io: io.clone(),
            name: name.to_string(),
        }
    }

    pub fn open(&self) -> Image {
        self.io
            .open_image(&self.name)
            .unwrap_or_else(|err| panic!("open {}: {err}", self.name))
    }
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        if let Err(err) = remove_with_snapshots(&self.io, &self.name) {
            eprintln!(
                "cleanup: could not remove {}/{}: {err}",
                self.io.pool_name(),
                self.name
            );
        }
    }
}

/// Unprotects and removes every snapshot of `name`, then removes the image. Absent → Ok.
pub fn remove_with_snapshots(io: &IoCtx, name: &str) -> rbd::Result<()> {
    let image = match io.open_image(name) {
        Ok(image) => image,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    for snap in image.list_snaps()? {
        if image.is_snap_protected(&snap.name)? {
            image.unprotect_snap(&snap.name)?;
        }
        image.remove_snap(&snap.name)?;
    }
    image.close()?;
    io.remove_image(name)
}

/// `len` bytes of a pattern that differs per `seed` and per offset.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

/// Reads `len` bytes at `offset`.
pub fn read(image: &Image, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let n = image.read_at(offset, &mut buf).unwrap();
    buf.truncate(n);
    buf
}
