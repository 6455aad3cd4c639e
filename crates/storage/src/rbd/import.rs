//! Writing a raw file into a new RBD image, sparsely: object-sized,
//! object-aligned chunks, and chunks that are all zeros are not written at
//! all (a fresh RBD image reads as zeros), so a mostly empty disk image
//! costs only its data in the cluster.

use std::fs::File;
use std::io::Read;

use domain::{Error, Result};

use super::errors::ceph_error;

/// Bytes per write: one default-sized RBD object (4 MiB), aligned to objects.
pub(crate) const CHUNK: usize = 4 << 20;

/// What [`copy_sparse`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Copied {
    /// Bytes read from the file (the image size).
    pub read: u64,
    /// Bytes written to the image (the non-zero chunks).
    pub written: u64,
}

/// Copies all of `file` to the start of `image` (which is at least as big),
/// skipping all-zero chunks, then flushes.
pub(crate) fn copy_sparse(file: &mut File, image: &::rbd::Image) -> Result<Copied> {
    let mut buf = vec![0u8; CHUNK];
    let mut copied = Copied {
        read: 0,
        written: 0,
    };
    loop {
        let n = read_full(file, &mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if !is_zero(chunk) {
            image.write_at(copied.read, chunk).map_err(ceph_error)?;
            copied.written += n as u64;
        }
        copied.read += n as u64;
    }
    image.flush().map_err(ceph_error)?;
    Ok(copied)
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::unavailable(format!(
                    "Cannot read the staged image: {e}"
                )))
            }
        }
    }
    Ok(filled)
}

/// Whether every byte is zero: OR-folds 256-byte blocks (which the compiler
/// vectorises) and stops at the first block with a set bit.
fn is_zero(chunk: &[u8]) -> bool {
    chunk
        .chunks(256)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_zero_when_one_byte_set_anywhere_then_false() {
        let mut chunk = vec![0u8; 4099];
        let all_zero = is_zero(&chunk[1..]);
        chunk[4098] = 1;

        let with_tail_byte = is_zero(&chunk[1..]);

        assert!(all_zero);
        assert!(!with_tail_byte);
    }
}
