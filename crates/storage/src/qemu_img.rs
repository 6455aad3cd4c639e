//! Running `qemu-img`. Every call names the format explicitly (`-f`), never
//! lets qemu-img probe, and runs under `prlimit` CPU-time and address-space
//! limits, so a hostile image cannot make it spin or eat the host's memory
//! (as OpenStack's `qemu_img_info` does with oslo.concurrency's prlimit).

use std::path::Path;
use std::time::Duration;

use domain::{Error, Result};
use serde::Deserialize;
use tokio::process::Command;

/// Limits for one `qemu-img` run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub cpu_seconds: u64,
    pub address_space_bytes: u64,
    pub wall_clock: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // OpenStack uses 30 s of CPU and 1 GiB of address space.
        Limits {
            cpu_seconds: 30,
            address_space_bytes: 1 << 30,
            wall_clock: Duration::from_secs(60),
        }
    }
}

/// What `qemu-img info --output=json` says of an image.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    #[serde(rename = "actual-size", default)]
    pub actual_size: Option<u64>,
    #[serde(rename = "backing-filename", default)]
    pub backing_filename: Option<String>,
}

/// `qemu-img info` of `path`, read as `format`, under `limits`.
pub async fn info(path: &Path, format: &str, limits: Limits) -> Result<ImageInfo> {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--cpu={}", limits.cpu_seconds))
        .arg(format!("--as={}", limits.address_space_bytes))
        .arg("--")
        .arg("qemu-img")
        .args(["info", "--force-share", "--output=json", "-f", format])
        .arg(path)
        .kill_on_drop(true);
    let output = tokio::time::timeout(limits.wall_clock, cmd.output())
        .await
        .map_err(|_| Error::invalid("qemu-img took too long to read the image; it was stopped."))?
        .map_err(|e| {
            Error::unavailable(format!(
                "Cannot run qemu-img (is qemu-utils installed?): {e}"
            ))
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::invalid(format!(
            "qemu-img cannot read the image as {format}: {}",
            stderr.trim()
        )));
    }
    let info: ImageInfo = serde_json::from_slice(&output.stdout)
        .map_err(|e| Error::internal(format!("qemu-img printed unexpected JSON: {e}")))?;
    if info.backing_filename.is_some() {
        return Err(Error::invalid(
            "The image refers to a backing file; uploaded images may not.",
        ));
    }
    Ok(info)
}

/// Runs `qemu-img` with `args` on Snapstack's own files (no limits: these
/// files were inspected on the way in or written by Snapstack).
pub async fn run(args: &[&str]) -> Result<String> {
    let output = Command::new("qemu-img")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            Error::unavailable(format!(
                "Cannot run qemu-img (is qemu-utils installed?): {e}"
            ))
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::internal(format!(
            "qemu-img {} failed: {}",
            args.first().unwrap_or(&""),
            stderr.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `qemu-img info` of one of Snapstack's own files (no backing-file check).
pub async fn info_of_own(path: &Path, format: &str) -> Result<ImageInfo> {
    let path = path
        .to_str()
        .ok_or_else(|| Error::internal("A pool path is not UTF-8."))?;
    let out = run(&["info", "--force-share", "--output=json", "-f", format, path]).await?;
    serde_json::from_str(&out)
        .map_err(|e| Error::internal(format!("qemu-img printed unexpected JSON: {e}")))
}

/// Converts `src` (an inspected upload in `src_format`) to a new file `dst`
/// in `dst_format`, sparse where the data is zero (`qemu-img convert`).
/// Used when a pool keeps another format than the one uploaded.
pub async fn convert(src: &Path, src_format: &str, dst: &Path, dst_format: &str) -> Result<()> {
    let (Some(src), Some(dst)) = (src.to_str(), dst.to_str()) else {
        return Err(Error::internal("A staging path is not UTF-8."));
    };
    let output = Command::new("qemu-img")
        .args([
            "convert", "-q", "-f", src_format, "-O", dst_format, src, dst,
        ])
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            Error::unavailable(format!(
                "Cannot run qemu-img (is qemu-utils installed?): {e}"
            ))
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let message = format!(
        "qemu-img cannot convert the image from {src_format} to {dst_format}: {}",
        stderr.trim()
    );
    Err(if stderr.contains("No space left") {
        Error::unavailable(message)
    } else {
        Error::invalid(message)
    })
}

/// Creates a qcow2 overlay at `path` over `backing` (in `backing_format`),
/// `size` bytes big. The backing path is written by Snapstack, absolute.
pub async fn create_overlay(
    path: &Path,
    backing: &Path,
    backing_format: &str,
    size: u64,
) -> Result<()> {
    let (Some(path), Some(backing)) = (path.to_str(), backing.to_str()) else {
        return Err(Error::internal("A pool path is not UTF-8."));
    };
    let size = size.to_string();
    run(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        backing,
        "-F",
        backing_format,
        path,
        &size,
    ])
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn raw_file_when_inspected_then_virtual_size_is_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        std::fs::write(&path, vec![0u8; 3 * 512]).unwrap();

        let info = info(&path, "raw", Limits::default()).await.unwrap();

        assert_eq!(info.virtual_size, 1536);
        assert_eq!(info.format, "raw");
    }

    #[tokio::test]
    async fn raw_file_when_read_as_qcow2_then_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();

        let err = info(&path, "qcow2", Limits::default()).await.unwrap_err();

        assert_eq!(err.kind(), domain::ErrorKind::InvalidInput);
    }
}
