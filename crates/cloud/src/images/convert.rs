//! Converting an upload to the format the pool keeps (raw, on the `rbd`
//! pool: a qcow2 image cannot be cloned into a disk QEMU opens with its rbd
//! driver).
//!
//! ```text
//!  <staging>/<id>.upload (qcow2, inspected) ── qemu-img convert -O raw ──▶
//!  <staging>/<id>.converted (sparse) ── md5 ∥ sha512 ──▶ pool.import
//! ```
//!
//! The image then describes what is stored, as Glance's `image_conversion`
//! import plugin leaves it: `disk_format` raw, `container_format` bare,
//! `size` = `virtual_size` = the raw size, `checksum`/`os_hash_value` of the
//! raw bytes (so a download verifies). What was uploaded is kept in
//! properties: `snapstack_converted_from` (its disk_format),
//! `snapstack_uploaded_size`, `snapstack_uploaded_checksum` (MD5) and
//! `snapstack_uploaded_os_hash_value` (SHA-512).

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use domain::image::Image;
use domain::{Error, ErrorKind, Result};
use md5::Md5;
use sha2::{Digest, Sha512};

/// The upload converted to the pool's format.
pub(super) struct Converted {
    pub path: PathBuf,
    pub size: u64,
    pub md5: String,
    pub sha512: String,
}

/// Where the conversion of the upload at `staged` is written (removed with
/// the staging directory's other files on failure and at start-up).
pub(super) fn converted_path(staged: &Path) -> PathBuf {
    staged.with_extension("converted")
}

/// Converts `staged` from `from` to `to` (qemu-img names) and hashes the
/// result. `virtual_size` is checked against `cap` first: a tiny qcow2 can
/// claim terabytes, and the converted data is read whole.
pub(super) async fn convert(
    staged: &Path,
    from: &str,
    to: &str,
    virtual_size: u64,
    cap: u64,
) -> Result<Converted> {
    if virtual_size > cap {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("This cloud stores images as {to}: the image's virtual size ({virtual_size} bytes) is over its {cap}-byte limit."),
        ));
    }
    let path = converted_path(staged);
    storage::qemu_img::convert(staged, from, &path, to).await?;
    let hashed_path = path.clone();
    let (size, md5, sha512) = tokio::task::spawn_blocking(move || hash_file(&hashed_path))
        .await
        .map_err(|e| Error::internal(format!("Hashing the converted image failed: {e}")))??;
    Ok(Converted {
        path,
        size,
        md5,
        sha512,
    })
}

/// Makes `active` describe the converted data, keeping what was uploaded in
/// properties (see the module header).
pub(super) fn describe(active: &mut Image, converted: &Converted, stored_format: &str) {
    let uploaded_format = active.disk_format.clone().unwrap_or_default();
    let uploaded = [
        ("snapstack_converted_from", uploaded_format),
        (
            "snapstack_uploaded_size",
            active.size.unwrap_or(0).to_string(),
        ),
        (
            "snapstack_uploaded_checksum",
            active.checksum.clone().unwrap_or_default(),
        ),
        (
            "snapstack_uploaded_os_hash_value",
            active.os_hash_value.clone().unwrap_or_default(),
        ),
    ];
    for (key, value) in uploaded {
        active.properties.insert(key.to_string(), value);
    }
    // qemu-img and Glance name raw (the only format a pool converts to) alike.
    active.disk_format = Some(stored_format.to_string());
    active.container_format = Some("bare".into());
    active.size = Some(converted.size);
    active.virtual_size = Some(converted.size);
    active.checksum = Some(converted.md5.clone());
    active.os_hash_value = Some(converted.sha512.clone());
}

/// Size, MD5 and SHA-512 of a file; the two hashes run on two threads.
pub(crate) fn hash_file(path: &Path) -> Result<(u64, String, String)> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::unavailable(format!("Cannot open the converted image: {e}")))?;
    hash_open_file(file)
}

/// Size, MD5 and SHA-512 of everything left to read in `file`.
pub(crate) fn hash_open_file(file: std::fs::File) -> Result<(u64, String, String)> {
    hash_reader(file)
}

/// Size, MD5 and SHA-512 of everything `file` yields.
pub(crate) fn hash_reader(mut file: impl Read) -> Result<(u64, String, String)> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(4);
    let sha = std::thread::spawn(move || {
        let mut sha = Sha512::new();
        for chunk in rx {
            sha.update(&chunk);
        }
        hex::encode(sha.finalize())
    });
    let mut md5 = Md5::new();
    let mut size = 0u64;
    let mut failure = None;
    loop {
        let mut buf = vec![0u8; 4 << 20];
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                buf.truncate(n);
                md5.update(&buf);
                size += n as u64;
                if tx.send(Bytes::from(buf)).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                failure = Some(Error::unavailable(format!(
                    "Cannot read the converted image: {e}"
                )));
                break;
            }
        }
    }
    drop(tx);
    let sha512 = sha
        .join()
        .map_err(|_| Error::internal("The SHA-512 thread panicked."))?;
    match failure {
        Some(e) => Err(e),
        None => Ok((size, hex::encode(md5.finalize()), sha512)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_file_when_read_then_size_and_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, b"abc").unwrap();

        let (size, md5, sha512) = hash_file(&path).unwrap();

        assert_eq!(size, 3);
        assert_eq!(md5, "900150983cd24fb0d6963f7d28e17f72");
        assert!(sha512.starts_with("ddaf35a193617aba"));
    }

    #[tokio::test]
    async fn convert_when_virtual_size_over_cap_then_too_large_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("x.upload");

        let err = convert(&staged, "qcow2", "raw", 2 << 30, 1 << 30)
            .await
            .err()
            .unwrap();

        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert!(!converted_path(&staged).exists());
    }
}
