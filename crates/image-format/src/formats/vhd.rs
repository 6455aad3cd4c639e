//! vhd (qemu's "vpc"): the 512-byte big-endian footer.
//!
//! A fixed disk has the footer only in its last sector; a dynamic disk also
//! keeps a copy at offset 0, which qemu reads first and so do we.
//!
//! ```text
//!   0 cookie "conectix"   40 original size   48 current size   60 disk type
//!   disk type: 2 fixed, 3 dynamic, 4 differencing (has a parent file)
//! ```

use std::io::{Read, Seek};

use crate::error::{Error, ErrorKind};
use crate::fields::Fields;
use crate::probe::Signature;
use crate::source::Source;

const FOOTER_LEN: usize = 512;
const DISK_FIXED: u32 = 2;
const DISK_DYNAMIC: u32 = 3;
const DISK_DIFFERENCING: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vhd {
    pub(crate) virtual_size: u64,
    disk_type: u32,
}

impl Vhd {
    pub(crate) fn read<R: Read + Seek + ?Sized>(
        source: &mut Source<'_, R>,
        signature: Signature,
    ) -> Result<Self, Error> {
        let offset = match signature {
            Signature::VhdHeader => 0,
            _ => source.len().saturating_sub(FOOTER_LEN as u64),
        };
        let footer = source.read_exact_at(offset, FOOTER_LEN, "vhd footer")?;
        let fields = Fields::new(&footer, "vhd footer");
        Ok(Self {
            virtual_size: fields.be_u64(48)?,
            disk_type: fields.be_u32(60)?,
        })
    }

    /// The rules an uploaded vhd image must pass.
    pub(crate) fn check(&self) -> Result<(), Error> {
        match self.disk_type {
            DISK_FIXED | DISK_DYNAMIC => Ok(()),
            DISK_DIFFERENCING => Err(Error::new(
                ErrorKind::BackingFile,
                "vhd image is a differencing disk that refers to a parent file; uploaded images may not",
            )),
            other => Err(Error::malformed(format!(
                "vhd footer has disk type {other}; only fixed (2) and dynamic (3) disks are accepted"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn footer(disk_type: u32) -> Vec<u8> {
        let mut f = vec![0u8; 512];
        f[..8].copy_from_slice(b"conectix");
        f[48..56].copy_from_slice(&(64u64 << 20).to_be_bytes());
        f[60..64].copy_from_slice(&disk_type.to_be_bytes());
        f
    }

    fn read(bytes: Vec<u8>, signature: Signature) -> Vhd {
        let mut cursor = Cursor::new(bytes);
        Vhd::read(&mut Source::new(&mut cursor).unwrap(), signature).unwrap()
    }

    #[test]
    fn fixed_disk_footer_at_the_end_when_read_gives_current_size() {
        let mut image = vec![0u8; 4096];
        image.extend(footer(DISK_FIXED));

        let vhd = read(image, Signature::VhdFooter);

        assert_eq!(vhd.virtual_size, 64 << 20);
        assert!(vhd.check().is_ok());
    }

    #[test]
    fn differencing_disk_when_checked_is_backing_file() {
        let vhd = read(footer(DISK_DIFFERENCING), Signature::VhdHeader);

        let error = vhd.check().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::BackingFile);
    }
}
