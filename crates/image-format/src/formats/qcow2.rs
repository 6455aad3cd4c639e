//! qcow2: header parsing and the safety rules (no backing file, no external
//! data file, no incompatible feature we do not know).
//!
//! Layout (big-endian, docs/interop/qcow2.txt in qemu):
//!
//! ```text
//!   0  magic "QFI\xfb"        4  version (2 or 3)
//!   8  backing_file_offset   16  backing_file_size     20  cluster_bits
//!  24  size (virtual bytes)  ...                       72  end of the v2 header
//!  72  incompatible_features (v3)   80 compatible   88 autoclear
//!  96  refcount_order       100  header_length (>= 104)
//! header_length..: extensions {u32 type, u32 length, data padded to 8}, type 0 ends
//! ```
//!
//! Incompatible feature bits known here: 0 dirty, 1 corrupt, 2 external data
//! file, 3 compression type, 4 extended L2 entries. oslo.utils allows only bits
//! 0-3; extended L2 is a plain qemu feature (qemu-img 7.2 reads it), so it is
//! accepted here. The external data file name extension (0x44415441) is refused
//! even when bit 2 is clear (qemu then ignores it; oslo does not look at
//! extensions at all): an image that names another file is not one we want.

use std::io::{Read, Seek};

use crate::error::{Error, ErrorKind};
use crate::fields::Fields;
use crate::source::Source;

const V2_HEADER_LEN: u32 = 72;
const V3_MIN_HEADER_LEN: u32 = 104;
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;

const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_KNOWN: u64 = 0b1_1111;

const EXT_END: u32 = 0;
const EXT_DATA_FILE_NAME: u32 = 0x4441_5441;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Qcow2 {
    pub(crate) version: u32,
    pub(crate) backing_file_offset: u64,
    pub(crate) backing_file_size: u32,
    pub(crate) virtual_size: u64,
    pub(crate) incompatible_features: u64,
    /// Types of the header extensions, in file order.
    pub(crate) extensions: Vec<u32>,
}

impl Qcow2 {
    pub(crate) fn read<R: Read + Seek + ?Sized>(source: &mut Source<'_, R>) -> Result<Self, Error> {
        let v2 = source.read_exact_at(0, V2_HEADER_LEN as usize, "qcow2 header")?;
        let version = Fields::new(&v2, "qcow2 header").be_u32(4)?;
        if version != 2 && version != 3 {
            return Err(Error::new(
                ErrorKind::UnsupportedFormat,
                format!(
                    "qcow image has version {version}; only qcow2 versions 2 and 3 are accepted"
                ),
            ));
        }
        let header_len = if version == 3 {
            V3_MIN_HEADER_LEN
        } else {
            V2_HEADER_LEN
        };
        let header = source.read_exact_at(0, header_len as usize, "qcow2 header")?;
        let fields = Fields::new(&header, "qcow2 header");

        let cluster_bits = fields.be_u32(20)?;
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Error::malformed(format!(
                "qcow2 header has cluster_bits {cluster_bits}; qemu accepts {MIN_CLUSTER_BITS} to {MAX_CLUSTER_BITS}"
            )));
        }
        let cluster_size = 1usize << cluster_bits;
        let (incompatible_features, header_length) = if version == 3 {
            (fields.be_u64(72)?, fields.be_u32(100)?)
        } else {
            (0, V2_HEADER_LEN)
        };
        if version == 3 && header_length < V3_MIN_HEADER_LEN {
            return Err(Error::malformed(format!(
                "qcow2 version 3 header_length is {header_length}; it must be at least {V3_MIN_HEADER_LEN}"
            )));
        }
        if header_length as usize > cluster_size {
            return Err(Error::malformed(format!(
                "qcow2 header_length {header_length} is larger than its {cluster_size}-byte cluster"
            )));
        }

        let first_cluster = source.read_up_to(0, cluster_size)?;
        Ok(Self {
            version,
            backing_file_offset: fields.be_u64(8)?,
            backing_file_size: fields.be_u32(16)?,
            virtual_size: fields.be_u64(24)?,
            incompatible_features,
            extensions: extension_types(&first_cluster, header_length as usize)?,
        })
    }

    /// The rules an uploaded qcow2 image must pass.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.backing_file_offset != 0 || self.backing_file_size != 0 {
            return Err(Error::new(
                ErrorKind::BackingFile,
                "qcow2 image refers to a backing file; uploaded images may not",
            ));
        }
        if self.incompatible_features & INCOMPAT_DATA_FILE != 0 {
            return Err(Error::new(
                ErrorKind::DataFile,
                "qcow2 image keeps its data in an external data file; uploaded images may not",
            ));
        }
        if self.extensions.contains(&EXT_DATA_FILE_NAME) {
            return Err(Error::new(
                ErrorKind::DataFile,
                "qcow2 image names an external data file in its header extensions; uploaded images may not",
            ));
        }
        let unknown = self.incompatible_features & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(Error::new(
                ErrorKind::UnknownFeatures,
                format!("qcow2 image sets incompatible feature bits this inspector does not know ({unknown:#x}); it is refused"),
            ));
        }
        Ok(())
    }
}

/// Walks the header extensions in the first cluster; each is 8 bytes of type
/// and length followed by its data padded to 8 bytes.
fn extension_types(cluster: &[u8], start: usize) -> Result<Vec<u32>, Error> {
    let fields = Fields::new(cluster, "qcow2 header cluster");
    let mut types = Vec::new();
    let mut offset = start;
    while offset.saturating_add(8) <= cluster.len() {
        let kind = fields.be_u32(offset)?;
        if kind == EXT_END {
            break;
        }
        let len = fields.be_u32(offset + 4)? as usize;
        let padded_len = len.saturating_add(7) & !7;
        let data_end = (offset + 8).saturating_add(len);
        if data_end > cluster.len() {
            return Err(Error::malformed(format!(
                "qcow2 header extension {kind:#010x} at offset {offset} runs past the first cluster or the end of the image"
            )));
        }
        types.push(kind);
        offset = (offset + 8).saturating_add(padded_len);
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A minimal version 3 header with 64 KiB clusters.
    fn v3_header() -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        h
    }

    fn read(bytes: Vec<u8>) -> Result<Qcow2, Error> {
        let mut cursor = Cursor::new(bytes);
        Qcow2::read(&mut Source::new(&mut cursor).unwrap())
    }

    #[test]
    fn v3_header_when_read_gives_size_and_passes_checks() {
        let qcow2 = read(v3_header()).unwrap();

        assert_eq!(qcow2.virtual_size, 1 << 30);
        assert!(qcow2.check().is_ok());
    }

    #[test]
    fn extended_l2_bit_when_checked_is_accepted() {
        let mut h = v3_header();
        h[79] = 1 << 4;

        let result = read(h).unwrap().check();

        assert!(result.is_ok());
    }

    #[test]
    fn bit_five_when_checked_is_unknown_feature() {
        let mut h = v3_header();
        h[79] = 1 << 5;

        let error = read(h).unwrap().check().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::UnknownFeatures);
    }

    #[test]
    fn high_byte_bit_when_checked_is_unknown_feature() {
        let mut h = v3_header();
        h[72] = 0x80;

        let error = read(h).unwrap().check().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::UnknownFeatures);
    }

    #[test]
    fn backing_file_size_without_offset_when_checked_is_backing_file() {
        let mut h = v3_header();
        h[16..20].copy_from_slice(&5u32.to_be_bytes());

        let error = read(h).unwrap().check().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::BackingFile);
    }

    #[test]
    fn data_file_name_extension_when_checked_is_data_file() {
        let mut h = v3_header();
        h[104..108].copy_from_slice(&EXT_DATA_FILE_NAME.to_be_bytes());
        h[108..112].copy_from_slice(&5u32.to_be_bytes());
        h[112..117].copy_from_slice(b"d.raw");

        let error = read(h).unwrap().check().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::DataFile);
    }

    #[test]
    fn extension_longer_than_the_cluster_when_read_is_malformed() {
        let mut h = v3_header();
        h[104..108].copy_from_slice(&0x1234u32.to_be_bytes());
        h[108..112].copy_from_slice(&u32::MAX.to_be_bytes());

        let error = read(h).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Malformed);
    }

    #[test]
    fn version_one_when_read_is_unsupported() {
        let mut h = v3_header();
        h[4..8].copy_from_slice(&1u32.to_be_bytes());

        let error = read(h).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::UnsupportedFormat);
    }

    #[test]
    fn huge_cluster_bits_when_read_is_malformed() {
        let mut h = v3_header();
        h[20..24].copy_from_slice(&63u32.to_be_bytes());

        let error = read(h).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Malformed);
    }
}
