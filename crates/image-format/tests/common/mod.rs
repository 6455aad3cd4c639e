//! Test helpers: a scratch directory, `qemu-img create` into it, byte patching.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under the system temp dir, removed on drop.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "image-format-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs `qemu-img create -q -f <format> <options...> <name> [size]` in the
    /// scratch directory (so relative backing/data file names land there too).
    pub fn qemu_img_create(
        &self,
        name: &str,
        format: &str,
        options: &[&str],
        size: Option<&str>,
    ) -> PathBuf {
        let mut command = Command::new("qemu-img");
        command
            .current_dir(&self.dir)
            .args(["create", "-q", "-f", format]);
        command.args(options).arg(name).args(size);
        let output = command.output().expect("qemu-img must be installed");
        assert!(
            output.status.success(),
            "qemu-img create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.path(name)
    }

    /// Writes `bytes` as the file `name`.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Overwrites `bytes` at `offset` of the file at `path`.
pub fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
}

/// Replaces the text of the descriptor embedded in a qemu-made sparse vmdk
/// (sector 1, NUL-padded) with `edit(old_text)`.
pub fn rewrite_vmdk_descriptor(path: &Path, edit: impl FnOnce(&str) -> String) {
    let bytes = fs::read(path).unwrap();
    let area = &bytes[512..512 + 20 * 512];
    let old_len = area.iter().position(|&b| b == 0).unwrap();
    let new_text = edit(std::str::from_utf8(&area[..old_len]).unwrap());
    let mut replacement = new_text.into_bytes();
    assert!(
        replacement.len() <= area.len(),
        "descriptor too long for its sectors"
    );
    replacement.resize(replacement.len().max(old_len), 0);
    patch(path, 512, &replacement);
}

/// A 1 MiB raw disk whose sector 0 is a GPT protective MBR.
pub fn gpt_disk() -> Vec<u8> {
    let mut disk = vec![0u8; 1 << 20];
    disk[446..462].copy_from_slice(&[
        0, 0, 2, 0, 0xee, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0xff, 0x07, 0, 0,
    ]);
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk[512..520].copy_from_slice(b"EFI PART");
    disk
}

/// A minimal ISO 9660 image: system area, a primary volume descriptor of
/// `blocks` 2048-byte blocks, and a set terminator.
pub fn iso_image(blocks: u32) -> Vec<u8> {
    let mut iso = vec![0u8; 0x9000];
    let pvd = 0x8000;
    iso[pvd] = 1;
    iso[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
    iso[pvd + 6] = 1;
    iso[pvd + 80..pvd + 84].copy_from_slice(&blocks.to_le_bytes());
    iso[pvd + 84..pvd + 88].copy_from_slice(&blocks.to_be_bytes());
    iso[pvd + 128..pvd + 130].copy_from_slice(&2048u16.to_le_bytes());
    iso[pvd + 130..pvd + 132].copy_from_slice(&2048u16.to_be_bytes());
    let terminator = 0x8800;
    iso[terminator] = 255;
    iso[terminator + 1..terminator + 6].copy_from_slice(b"CD001");
    iso[terminator + 6] = 1;
    iso
}
