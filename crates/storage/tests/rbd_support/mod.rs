//! Shared by the tests of the `rbd` pool: the dev cluster `CEPH_CONF`
//! names, a [`Cleanup`] guard, data makers and `rbd`-like views.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use domain::ImageId;
use storage::rbd::{RbdConfig, RbdPool};
use storage::Pool;
use tokio::io::AsyncReadExt;

pub const MIB: usize = 1 << 20;

pub fn ceph_conf() -> PathBuf {
    std::env::var_os("CEPH_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "CEPH_CONF is not set. These tests need the dev cluster: run \
             `scripts/ceph-dev.sh start && eval \"$(scripts/ceph-dev.sh env)\"` first"
            )
        })
}

pub async fn pool() -> RbdPool {
    let conf = ceph_conf();
    RbdPool::connect(RbdConfig::new(&conf, "admin"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot use the cluster of CEPH_CONF={}: {e}",
                conf.display()
            )
        })
}

pub fn cluster() -> rbd::Cluster {
    rbd::Cluster::connect(&ceph_conf(), "admin", None).unwrap()
}

/// Removes, when dropped, the disks then the images a test made (with their
/// snapshots), straight through librbd, whatever state the test left.
pub struct Cleanup {
    cluster: rbd::Cluster,
    pub disks: Vec<String>,
    pub images: Vec<String>,
}

impl Cleanup {
    pub fn new() -> Self {
        Self {
            cluster: cluster(),
            disks: Vec::new(),
            images: Vec::new(),
        }
    }

    pub fn image(&mut self, id: ImageId) -> ImageId {
        self.images.push(id.to_string());
        id
    }

    pub fn disk(&mut self, name: &str) -> String {
        self.disks.push(name.to_string());
        name.to_string()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (pool, names) in [("vms", &self.disks), ("images", &self.images)] {
            let io = self.cluster.io_ctx(pool).unwrap();
            for name in names {
                if let Err(e) = remove_with_snapshots(&io, name) {
                    eprintln!("cleanup: cannot remove {pool}/{name}: {e}");
                }
            }
        }
    }
}

pub fn remove_with_snapshots(io: &rbd::IoCtx, name: &str) -> rbd::Result<()> {
    let image = match io.open_image(name) {
        Ok(image) => image,
        Err(e) if e.kind() == rbd::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
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

/// `rbd ls POOL` through librbd.
pub fn rbd_ls(pool: &str) -> Vec<String> {
    cluster().io_ctx(pool).unwrap().list_images().unwrap()
}

/// (name, protected) of each snapshot of `pool/image`.
pub fn rbd_snaps(pool: &str, image: &str) -> Vec<(String, bool)> {
    let io = cluster().io_ctx(pool).unwrap();
    let image = io.open_image(image).unwrap();
    let snaps = image.list_snaps().unwrap();
    snaps
        .into_iter()
        .map(|s| (s.name.clone(), image.is_snap_protected(&s.name).unwrap()))
        .collect()
}

/// `len` bytes that differ per offset and per `seed`, with a zero hole of
/// 4 MiB after the first 4 MiB (a chunk the import skips).
pub fn data(seed: u8, len: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8) | 1)
        .collect();
    let hole = (4 * MIB).min(len)..(8 * MIB).min(len);
    bytes[hole].fill(0);
    bytes
}

pub fn staged(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join("upload");
    std::fs::write(&path, bytes).unwrap();
    path
}

pub async fn read_from(pool: &RbdPool, location: &str, offset: u64) -> (Vec<u8>, u64) {
    let mut reader = pool.open_image(location, offset).await.unwrap();
    let mut bytes = Vec::new();
    reader.reader.read_to_end(&mut bytes).await.unwrap();
    (bytes, reader.size)
}

pub fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn unique_disk() -> String {
    format!("test-disk-{}-{}", std::process::id(), ImageId::new())
}
