//! vdi (VirtualBox): the little-endian header at offset 0.
//!
//! ```text
//!  0x40 signature 0xbeda107f   0x4c image type (1 dynamic, 2 fixed, 3 undo, 4 diff)
//! 0x170 disk size (bytes)      0x1a8 link UUID   0x1b8 parent UUID
//! ```
//!
//! Undo and differencing images, or a non-nil link or parent UUID, mean the
//! image depends on another one; qemu refuses them too.

use std::io::{Read, Seek};

use crate::error::{Error, ErrorKind};
use crate::fields::Fields;
use crate::source::Source;

const HEADER_LEN: usize = 0x1c8;
const TYPE_DYNAMIC: u32 = 1;
const TYPE_FIXED: u32 = 2;
const TYPE_UNDO: u32 = 3;
const TYPE_DIFF: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vdi {
    pub(crate) virtual_size: u64,
    image_type: u32,
    has_link_or_parent: bool,
}

impl Vdi {
    pub(crate) fn read<R: Read + Seek + ?Sized>(source: &mut Source<'_, R>) -> Result<Self, Error> {
        let header = source.read_exact_at(0, HEADER_LEN, "vdi header")?;
        let fields = Fields::new(&header, "vdi header");
        let uuids = fields.slice(0x1a8, 32)?;
        Ok(Self {
            virtual_size: fields.le_u64(0x170)?,
            image_type: fields.le_u32(0x4c)?,
            has_link_or_parent: uuids.iter().any(|&b| b != 0),
        })
    }

    /// The rules an uploaded vdi image must pass.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let depends_on_another =
            matches!(self.image_type, TYPE_UNDO | TYPE_DIFF) || self.has_link_or_parent;
        if depends_on_another {
            return Err(Error::new(
                ErrorKind::BackingFile,
                "vdi image is a differencing or undo image that refers to a parent; uploaded images may not",
            ));
        }
        if !matches!(self.image_type, TYPE_DYNAMIC | TYPE_FIXED) {
            return Err(Error::malformed(format!(
                "vdi header has image type {}; only dynamic (1) and fixed (2) images are accepted",
                self.image_type
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn header(image_type: u32) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[0x40..0x44].copy_from_slice(&0xbeda_107fu32.to_le_bytes());
        h[0x4c..0x50].copy_from_slice(&image_type.to_le_bytes());
        h[0x170..0x178].copy_from_slice(&(1u64 << 30).to_le_bytes());
        h
    }

    fn read(bytes: Vec<u8>) -> Vdi {
        let mut cursor = Cursor::new(bytes);
        Vdi::read(&mut Source::new(&mut cursor).unwrap()).unwrap()
    }

    #[test]
    fn dynamic_image_when_read_gives_size_and_passes() {
        let vdi = read(header(TYPE_DYNAMIC));

        assert_eq!(vdi.virtual_size, 1 << 30);
        assert!(vdi.check().is_ok());
    }

    #[test]
    fn image_with_parent_uuid_when_checked_is_backing_file() {
        let mut h = header(TYPE_DYNAMIC);
        h[0x1b8] = 1;

        let error = read(h).check().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::BackingFile);
    }

    #[test]
    fn differencing_image_when_checked_is_backing_file() {
        let error = read(header(TYPE_DIFF)).check().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::BackingFile);
    }
}
