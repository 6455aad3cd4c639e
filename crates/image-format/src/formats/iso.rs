//! ISO 9660 / UDF: the volume descriptors from 32 KiB on.
//!
//! The size comes from the ISO 9660 primary volume descriptor (type 1,
//! `CD001`): volume space size (LE u32 at 80) times logical block size (LE u16
//! at 128). A UDF-only image has no such descriptor, and no size here.

use std::io::{Read, Seek};

use crate::error::Error;
use crate::fields::Fields;
use crate::probe::ISO_DESCRIPTOR_OFFSETS;
use crate::source::Source;

const DESCRIPTOR_LEN: usize = 2048;
const PRIMARY_VOLUME_DESCRIPTOR: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Iso {
    pub(crate) virtual_size: Option<u64>,
}

impl Iso {
    pub(crate) fn read<R: Read + Seek + ?Sized>(source: &mut Source<'_, R>) -> Result<Self, Error> {
        for offset in ISO_DESCRIPTOR_OFFSETS {
            let descriptor = source.read_up_to(offset as u64, DESCRIPTOR_LEN)?;
            let fields = Fields::new(&descriptor, "ISO volume descriptor");
            let is_primary = fields.u8(0).ok() == Some(PRIMARY_VOLUME_DESCRIPTOR)
                && fields.slice(1, 5).ok() == Some(&b"CD001"[..]);
            if is_primary {
                let blocks = u64::from(fields.le_u32(80)?);
                let block_size = u64::from(fields.le_u16(128)?);
                return Ok(Self {
                    virtual_size: Some(blocks * block_size),
                });
            }
        }
        Ok(Self { virtual_size: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn primary_volume_descriptor_when_read_gives_blocks_times_block_size() {
        let mut image = vec![0u8; 0x8800];
        image[0x8000] = PRIMARY_VOLUME_DESCRIPTOR;
        image[0x8001..0x8006].copy_from_slice(b"CD001");
        image[0x8000 + 80..0x8000 + 84].copy_from_slice(&100u32.to_le_bytes());
        image[0x8000 + 128..0x8000 + 130].copy_from_slice(&2048u16.to_le_bytes());
        let mut cursor = Cursor::new(image);

        let iso = Iso::read(&mut Source::new(&mut cursor).unwrap()).unwrap();

        assert_eq!(iso.virtual_size, Some(100 * 2048));
    }
}
