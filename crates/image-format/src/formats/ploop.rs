//! ploop (qemu's "parallels"): the little-endian header at offset 0.
//!
//! ```text
//!   0 magic "WithoutFreeSpace" (v1) or "WithouFreSpacExt" (ext)   16 version (2)
//!  36 nb_sectors (only the low 32 bits count for the v1 magic)
//! ```

use std::io::{Read, Seek};

use crate::error::Error;
use crate::fields::Fields;
use crate::source::Source;

const HEADER_LEN: usize = 64;
const VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ploop {
    pub(crate) virtual_size: u64,
}

impl Ploop {
    pub(crate) fn read<R: Read + Seek + ?Sized>(source: &mut Source<'_, R>) -> Result<Self, Error> {
        let header = source.read_exact_at(0, HEADER_LEN, "ploop header")?;
        let fields = Fields::new(&header, "ploop header");
        let version = fields.le_u32(16)?;
        if version != VERSION {
            return Err(Error::malformed(format!(
                "ploop header has version {version}; only version {VERSION} is accepted"
            )));
        }
        let mut sectors = fields.le_u64(36)?;
        if header.starts_with(b"WithoutFreeSpace") {
            sectors &= 0xffff_ffff;
        }
        let virtual_size = sectors.checked_mul(512).ok_or_else(|| {
            Error::malformed("ploop header sector count does not fit in 64 bits of bytes")
        })?;
        Ok(Self { virtual_size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn old_magic_header_when_read_uses_low_32_bits_of_sectors() {
        let mut h = vec![0u8; 64];
        h[..16].copy_from_slice(b"WithoutFreeSpace");
        h[16..20].copy_from_slice(&VERSION.to_le_bytes());
        h[36..44].copy_from_slice(&0x1_0000_0800u64.to_le_bytes());
        let mut cursor = Cursor::new(h);

        let ploop = Ploop::read(&mut Source::new(&mut cursor).unwrap()).unwrap();

        assert_eq!(ploop.virtual_size, 0x800 * 512);
    }
}
