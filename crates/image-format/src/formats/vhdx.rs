//! vhdx: region table -> metadata table -> the items we need.
//!
//! ```text
//!   0x00000  "vhdxfile"
//!   0x30000  region table: "regi", checksum, entry count (<= 2047), then
//!            32-byte entries {GUID, file offset u64, length u32, required u32}
//!   metadata region (found by GUID): "metadata", u16 entry count at 10
//!            (<= 2047), then from 32: 32-byte entries
//!            {GUID, offset u32 (from region start), length u32, flags, reserved}
//!   Virtual Disk Size item: u64 bytes
//!   File Parameters item:   u32 block size, u32 flags (bit 1: has parent)
//!   Parent Locator item:    present only in differencing disks
//! ```
//!
//! oslo.utils reads only the virtual size; refusing differencing disks
//! (qemu refuses them too) is our addition. Every table is read at most once
//! and at most 64 KiB.

use std::io::{Read, Seek};

use crate::error::{Error, ErrorKind};
use crate::fields::Fields;
use crate::source::Source;

const REGION_TABLE_OFFSET: u64 = 192 * 1024;
const REGION_SIGNATURE: u32 = 0x6967_6572; // "regi"
const MAX_ENTRIES: usize = 2047;
const ENTRY_LEN: usize = 32;

const METADATA_REGION: [u8; 16] = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
const VIRTUAL_DISK_SIZE: [u8; 16] = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
const FILE_PARAMETERS: [u8; 16] = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
const PARENT_LOCATOR: [u8; 16] = guid(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);
const HAS_PARENT: u32 = 1 << 1;

/// A Microsoft GUID in its on-disk byte order (first three fields little-endian).
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vhdx {
    pub(crate) virtual_size: Option<u64>,
    has_parent: bool,
}

struct MetadataItem {
    id: [u8; 16],
    offset: u32,
}

impl Vhdx {
    pub(crate) fn read<R: Read + Seek + ?Sized>(source: &mut Source<'_, R>) -> Result<Self, Error> {
        let metadata_offset = find_metadata_region(source)?;
        let items = read_metadata_table(source, metadata_offset)?;
        let item_offset = |id: &[u8; 16]| {
            items
                .iter()
                .find(|item| &item.id == id)
                .map(|item| metadata_offset.saturating_add(u64::from(item.offset)))
        };

        let virtual_size = match item_offset(&VIRTUAL_DISK_SIZE) {
            Some(at) => {
                let bytes = source.read_exact_at(at, 8, "vhdx virtual disk size")?;
                Some(Fields::new(&bytes, "vhdx virtual disk size").le_u64(0)?)
            }
            None => None,
        };
        let parent_flag = match item_offset(&FILE_PARAMETERS) {
            Some(at) => {
                let bytes = source.read_exact_at(at, 8, "vhdx file parameters")?;
                Fields::new(&bytes, "vhdx file parameters").le_u32(4)? & HAS_PARENT != 0
            }
            None => false,
        };
        Ok(Self {
            virtual_size,
            has_parent: parent_flag || item_offset(&PARENT_LOCATOR).is_some(),
        })
    }

    /// The rules an uploaded vhdx image must pass.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.has_parent {
            return Err(Error::new(
                ErrorKind::BackingFile,
                "vhdx image is a differencing disk that refers to a parent file; uploaded images may not",
            ));
        }
        Ok(())
    }
}

fn find_metadata_region<R: Read + Seek + ?Sized>(source: &mut Source<'_, R>) -> Result<u64, Error> {
    let header = source.read_exact_at(REGION_TABLE_OFFSET, 16, "vhdx region table")?;
    let fields = Fields::new(&header, "vhdx region table");
    if fields.le_u32(0)? != REGION_SIGNATURE {
        return Err(Error::malformed(format!(
            "vhdx region table at offset {REGION_TABLE_OFFSET} has no \"regi\" signature"
        )));
    }
    let count = fields.le_u32(8)? as usize;
    if count > MAX_ENTRIES {
        return Err(Error::malformed(format!(
            "vhdx region table lists {count} regions; at most {MAX_ENTRIES} are allowed"
        )));
    }
    let entries = source.read_exact_at(
        REGION_TABLE_OFFSET + 16,
        count * ENTRY_LEN,
        "vhdx region table",
    )?;
    let fields = Fields::new(&entries, "vhdx region table");
    for at in (0..count).map(|i| i * ENTRY_LEN) {
        if fields.slice(at, 16)? == METADATA_REGION {
            return fields.le_u64(at + 16);
        }
    }
    Err(Error::malformed("vhdx region table has no metadata region"))
}

fn read_metadata_table<R: Read + Seek + ?Sized>(
    source: &mut Source<'_, R>,
    region: u64,
) -> Result<Vec<MetadataItem>, Error> {
    let header = source.read_exact_at(region, 32, "vhdx metadata table")?;
    let fields = Fields::new(&header, "vhdx metadata table");
    if fields.slice(0, 8)? != b"metadata" {
        return Err(Error::malformed(format!(
            "vhdx metadata table at offset {region} has no \"metadata\" signature"
        )));
    }
    let count = usize::from(fields.le_u16(10)?);
    if count > MAX_ENTRIES {
        return Err(Error::malformed(format!(
            "vhdx metadata table lists {count} items; at most {MAX_ENTRIES} are allowed"
        )));
    }
    let entries_at = region.saturating_add(32);
    let entries = source.read_exact_at(entries_at, count * ENTRY_LEN, "vhdx metadata table")?;
    let fields = Fields::new(&entries, "vhdx metadata table");
    (0..count)
        .map(|i| {
            let at = i * ENTRY_LEN;
            let mut id = [0u8; 16];
            id.copy_from_slice(fields.slice(at, 16)?);
            Ok(MetadataItem {
                id,
                offset: fields.le_u32(at + 16)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const METADATA_AT: usize = 0x40000;

    fn image(items: &[([u8; 16], u32, [u8; 8])]) -> Vec<u8> {
        let mut image = vec![0u8; METADATA_AT + 0x20000];
        image[..8].copy_from_slice(b"vhdxfile");
        let table = REGION_TABLE_OFFSET as usize;
        image[table..table + 4].copy_from_slice(&REGION_SIGNATURE.to_le_bytes());
        image[table + 8..table + 12].copy_from_slice(&1u32.to_le_bytes());
        image[table + 16..table + 32].copy_from_slice(&METADATA_REGION);
        image[table + 32..table + 40].copy_from_slice(&(METADATA_AT as u64).to_le_bytes());
        image[METADATA_AT..METADATA_AT + 8].copy_from_slice(b"metadata");
        image[METADATA_AT + 10..METADATA_AT + 12]
            .copy_from_slice(&(items.len() as u16).to_le_bytes());
        for (i, (id, offset, value)) in items.iter().enumerate() {
            let entry = METADATA_AT + 32 + i * 32;
            image[entry..entry + 16].copy_from_slice(id);
            image[entry + 16..entry + 20].copy_from_slice(&offset.to_le_bytes());
            let item = METADATA_AT + *offset as usize;
            image[item..item + 8].copy_from_slice(value);
        }
        image
    }

    fn read(bytes: Vec<u8>) -> Result<Vhdx, Error> {
        let mut cursor = Cursor::new(bytes);
        Vhdx::read(&mut Source::new(&mut cursor).unwrap())
    }

    #[test]
    fn metadata_with_virtual_disk_size_when_read_gives_the_size() {
        let bytes = image(&[(VIRTUAL_DISK_SIZE, 0x10000, (5u64 << 30).to_le_bytes())]);

        let vhdx = read(bytes).unwrap();

        assert_eq!(vhdx.virtual_size, Some(5 << 30));
        assert!(vhdx.check().is_ok());
    }

    #[test]
    fn file_parameters_with_has_parent_when_checked_is_backing_file() {
        let params = [0, 0, 0x20, 0, 2, 0, 0, 0];
        let bytes = image(&[(FILE_PARAMETERS, 0x10000, params)]);

        let error = read(bytes).unwrap().check().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::BackingFile);
    }

    #[test]
    fn metadata_offset_past_the_end_when_read_is_truncated() {
        let mut bytes = image(&[]);
        let entry = REGION_TABLE_OFFSET as usize + 32;
        bytes[entry..entry + 8].copy_from_slice(&u64::MAX.to_le_bytes());

        let error = read(bytes).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Truncated);
    }
}
