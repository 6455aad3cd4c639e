//! [`Source`]: bounded positional reads from the caller's `Read + Seek`.
//!
//! Every read in the crate goes through here. A read never allocates more than
//! [`MAX_READ`] bytes nor more than the image holds past the offset, so header
//! fields chosen by an attacker cannot make us allocate or read without bound.

use std::io::{self, Read, Seek, SeekFrom};

use crate::error::Error;

/// The largest single read: a 2 MiB qcow2 cluster (the largest qemu allows)
/// holding the header and its extensions.
pub(crate) const MAX_READ: usize = 2 * 1024 * 1024;

pub(crate) struct Source<'r, R: ?Sized> {
    reader: &'r mut R,
    len: u64,
}

impl<'r, R: Read + Seek + ?Sized> Source<'r, R> {
    /// Wraps `reader`, finding its length by seeking to its end.
    pub(crate) fn new(reader: &'r mut R) -> Result<Self, Error> {
        let len = reader
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io("could not find the length of the image", e))?;
        Ok(Self { reader, len })
    }

    /// The image's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Reads up to `len` bytes at `offset`: fewer when the image ends first,
    /// never more than [`MAX_READ`].
    pub(crate) fn read_up_to(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
        debug_assert!(len <= MAX_READ, "read of {len} bytes exceeds MAX_READ");
        let available = self.len.saturating_sub(offset);
        let wanted = usize::try_from(available)
            .map_or(len, |a| a.min(len))
            .min(MAX_READ);
        let mut buf = vec![0u8; wanted];
        if wanted == 0 {
            return Ok(buf);
        }
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(format!("could not seek to offset {offset} of the image"), e))?;
        let mut filled = 0;
        while filled < wanted {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                // A reader claiming more than it was given is clamped, not trusted.
                Ok(n) => filled = filled.saturating_add(n).min(wanted),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("could not read the image at offset {offset}"),
                        e,
                    ))
                }
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    /// Reads exactly `len` bytes at `offset`, or fails with a `Truncated` error
    /// naming `what` was being read.
    pub(crate) fn read_exact_at(
        &mut self,
        offset: u64,
        len: usize,
        what: &str,
    ) -> Result<Vec<u8>, Error> {
        let buf = self.read_up_to(offset, len)?;
        if buf.len() < len {
            return Err(Error::truncated(format!(
                "the image ends before its {what} ({len} bytes at offset {offset})"
            )));
        }
        Ok(buf)
    }

    /// Moves the reader back to the start of the image.
    pub(crate) fn rewind(&mut self) -> Result<(), Error> {
        self.reader
            .seek(SeekFrom::Start(0))
            .map(|_| ())
            .map_err(|e| Error::io("could not rewind the image", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::io::Cursor;

    #[test]
    fn read_up_to_when_image_ends_early_returns_what_is_there() {
        let mut cursor = Cursor::new(vec![7u8; 10]);
        let mut source = Source::new(&mut cursor).unwrap();

        let bytes = source.read_up_to(6, 100).unwrap();

        assert_eq!(bytes, vec![7u8; 4]);
    }

    #[test]
    fn read_up_to_when_offset_is_past_the_end_returns_nothing() {
        let mut cursor = Cursor::new(vec![7u8; 10]);
        let mut source = Source::new(&mut cursor).unwrap();

        let bytes = source.read_up_to(u64::MAX, 100).unwrap();

        assert!(bytes.is_empty());
    }

    #[test]
    fn read_exact_at_when_image_ends_early_is_truncated() {
        let mut cursor = Cursor::new(vec![0u8; 10]);
        let mut source = Source::new(&mut cursor).unwrap();

        let error = source.read_exact_at(8, 4, "test header").unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Truncated);
        assert_eq!(
            error.to_string(),
            "the image ends before its test header (4 bytes at offset 8)"
        );
    }
}
