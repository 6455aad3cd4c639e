//! [`Fields`]: checked fixed-width integer reads from a header buffer.
//!
//! Every accessor bounds-checks and turns a short buffer into a `Truncated`
//! error, so parsers can use `?` and never index out of range.

use crate::error::Error;

#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    /// Wraps `bytes`, a structure called `what` in error messages.
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    pub(crate) fn slice(&self, at: usize, len: usize) -> Result<&'a [u8], Error> {
        at.checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or_else(|| {
                Error::truncated(format!(
                    "the {} is too short for a {len}-byte field at offset {at}",
                    self.what
                ))
            })
    }

    fn array<const N: usize>(&self, at: usize) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.slice(at, N)?);
        Ok(out)
    }

    pub(crate) fn u8(&self, at: usize) -> Result<u8, Error> {
        Ok(self.array::<1>(at)?[0])
    }

    pub(crate) fn be_u32(&self, at: usize) -> Result<u32, Error> {
        self.array(at).map(u32::from_be_bytes)
    }

    pub(crate) fn be_u64(&self, at: usize) -> Result<u64, Error> {
        self.array(at).map(u64::from_be_bytes)
    }

    pub(crate) fn le_u16(&self, at: usize) -> Result<u16, Error> {
        self.array(at).map(u16::from_le_bytes)
    }

    pub(crate) fn le_u32(&self, at: usize) -> Result<u32, Error> {
        self.array(at).map(u32::from_le_bytes)
    }

    pub(crate) fn le_u64(&self, at: usize) -> Result<u64, Error> {
        self.array(at).map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn field_inside_buffer_when_read_decodes_both_endiannesses() {
        let fields = Fields::new(&[0, 0, 0, 1, 2, 0], "test header");

        let (be, le) = (fields.be_u32(0).unwrap(), fields.le_u16(4).unwrap());

        assert_eq!((be, le), (1, 2));
    }

    #[test]
    fn field_past_buffer_end_when_read_is_truncated() {
        let fields = Fields::new(&[0; 6], "test header");

        let error = fields.le_u64(usize::MAX - 2).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Truncated);
    }
}
