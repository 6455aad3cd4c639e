//! vmdk: the hosted sparse extent header (`KDMV`), its embedded descriptor and
//! the stream-optimized footer; the other vmdk shapes are recognised only to be
//! refused.
//!
//! Hosted sparse header (little-endian, packed):
//!
//! ```text
//!   0 magic "KDMV"   4 version (1-3)   8 flags   12 capacity (sectors)
//!  20 grain size    28 descriptor offset (sectors)  36 descriptor size (sectors)
//!  44 GTEs per GT   48 redundant GD offset   56 GD offset (all ones: footer)
//! ```
//!
//! oslo.utils' rules, followed here: the descriptor must start at sector 1
//! (qemu hard-codes that too) and its declared sectors must be present; a
//! grain directory "at the end" means a footer + end-of-stream marker in the
//! last 1536 bytes that must agree with the header.
//!
//! Where qemu reads more than oslo does, so do we: qemu searches the text from
//! sector 1 up to its first NUL (at most 1 MiB - 1), whatever the declared
//! size, so the descriptor checked here is that same text. And a header with
//! capacity 0 makes qemu open the embedded descriptor as a descriptor *file*
//! (whose extents are other files): refused.
//!
//! ```text
//!   KDMV + embedded descriptor      -> checked by `vmdk_descriptor`
//!   KDMV, capacity 0 + descriptor   -> refused (qemu follows its extents)
//!   KDMV without a descriptor       -> refused (an extent of a multi-file image)
//!   COWD (VMware 3 / ESX sparse)     -> refused
//!   plain-text descriptor file      -> refused (its extents are other files)
//! ```

use std::io::{Read, Seek};

use crate::error::{Error, ErrorKind};
use crate::fields::Fields;
use crate::formats::vmdk_descriptor;
use crate::probe::Signature;
use crate::source::Source;

const SECTOR: u64 = 512;
const SPARSE_HEADER_LEN: usize = 64;
/// qemu's and oslo's cap on the embedded descriptor.
const DESCRIPTOR_MAX_LEN: u64 = (1 << 20) - 1;
const GD_AT_END: u64 = u64::MAX;
/// Footer marker, footer, end-of-stream marker.
const FOOTER_REGION_LEN: usize = 3 * SECTOR as usize;
const MARKER_EOS: u32 = 0;
const MARKER_FOOTER: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Vmdk {
    /// A `KDMV` file carrying its own descriptor.
    Hosted(HostedSparse),
    /// A `KDMV` file without a descriptor.
    BareExtent { virtual_size: u64 },
    /// A `KDMV` file of capacity 0 whose descriptor qemu treats as a descriptor file.
    WrappedDescriptor,
    /// A `COWD` file.
    Cowd,
    /// A plain-text descriptor file.
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostedSparse {
    virtual_size: u64,
    header: SparseHeader,
    /// The descriptor up to its first NUL.
    descriptor: Vec<u8>,
    /// The last 1536 bytes when the header says the grain directory is at the end.
    footer_region: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SparseHeader {
    magic: [u8; 4],
    version: u32,
    capacity: u64,
    descriptor_sector: u64,
    descriptor_sectors: u64,
    gd_offset: u64,
}

impl SparseHeader {
    fn parse(fields: Fields<'_>, at: usize) -> Result<Self, Error> {
        let mut magic = [0u8; 4];
        magic.copy_from_slice(fields.slice(at, 4)?);
        Ok(Self {
            magic,
            version: fields.le_u32(at + 4)?,
            capacity: fields.le_u64(at + 12)?,
            descriptor_sector: fields.le_u64(at + 28)?,
            descriptor_sectors: fields.le_u64(at + 36)?,
            gd_offset: fields.le_u64(at + 56)?,
        })
    }
}

impl Vmdk {
    pub(crate) fn read<R: Read + Seek + ?Sized>(
        source: &mut Source<'_, R>,
        signature: Signature,
    ) -> Result<Self, Error> {
        match signature {
            Signature::VmdkCowd => Ok(Vmdk::Cowd),
            Signature::VmdkText => Ok(Vmdk::Text),
            _ => read_sparse(source),
        }
    }

    pub(crate) fn virtual_size(&self) -> Option<u64> {
        match self {
            Vmdk::Hosted(hosted) => Some(hosted.virtual_size),
            Vmdk::BareExtent { virtual_size } => Some(*virtual_size),
            Vmdk::WrappedDescriptor | Vmdk::Cowd | Vmdk::Text => None,
        }
    }

    /// The rules an uploaded vmdk image must pass.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let refuse = |what: &str| {
            Err(Error::new(
                ErrorKind::VmdkSubformat,
                format!("vmdk image is {what}; only single-file monolithicSparse and streamOptimized images are accepted"),
            ))
        };
        match self {
            Vmdk::Cowd => refuse("a VMware 3 (COWD) sparse file"),
            Vmdk::Text => refuse("a bare descriptor file whose extents are other files"),
            Vmdk::WrappedDescriptor => {
                refuse("a descriptor file wrapped in a sparse header of capacity 0")
            }
            Vmdk::BareExtent { .. } => refuse(
                "a sparse extent without an embedded descriptor (one piece of a multi-file image)",
            ),
            Vmdk::Hosted(hosted) => {
                vmdk_descriptor::check(&hosted.descriptor)?;
                match &hosted.footer_region {
                    Some(region) => check_footer(&hosted.header, region),
                    None => Ok(()),
                }
            }
        }
    }
}

fn read_sparse<R: Read + Seek + ?Sized>(source: &mut Source<'_, R>) -> Result<Vmdk, Error> {
    let head = source.read_exact_at(0, SPARSE_HEADER_LEN, "vmdk sparse header")?;
    let header = SparseHeader::parse(Fields::new(&head, "vmdk sparse header"), 0)?;
    if !(1..=3).contains(&header.version) {
        return Err(Error::malformed(format!(
            "vmdk sparse header has version {}; versions 1 to 3 are accepted",
            header.version
        )));
    }
    let virtual_size = header.capacity.checked_mul(SECTOR).ok_or_else(|| {
        Error::malformed("vmdk sparse header capacity does not fit in 64 bits of bytes")
    })?;
    if header.descriptor_sector == 0 {
        return Ok(Vmdk::BareExtent { virtual_size });
    }
    if header.descriptor_sector != 1 {
        return Err(Error::malformed(format!(
            "vmdk embedded descriptor starts at sector {}; only sector 1 is accepted",
            header.descriptor_sector
        )));
    }
    if header.capacity == 0 {
        return Ok(Vmdk::WrappedDescriptor);
    }
    let descriptor = read_descriptor(source, &header)?;
    let footer_region = if header.gd_offset == GD_AT_END {
        let offset = source
            .len()
            .checked_sub(FOOTER_REGION_LEN as u64)
            .ok_or_else(|| {
                Error::truncated("the image is too short for the vmdk footer its header announces")
            })?;
        Some(source.read_exact_at(offset, FOOTER_REGION_LEN, "vmdk footer")?)
    } else {
        None
    };
    Ok(Vmdk::Hosted(HostedSparse {
        virtual_size,
        header,
        descriptor,
        footer_region,
    }))
}

/// The embedded descriptor as qemu sees it: from sector 1 to the first NUL,
/// at most 1 MiB - 1 bytes. The declared sectors must all be present.
fn read_descriptor<R: Read + Seek + ?Sized>(
    source: &mut Source<'_, R>,
    header: &SparseHeader,
) -> Result<Vec<u8>, Error> {
    let declared_len = header
        .descriptor_sectors
        .saturating_mul(SECTOR)
        .min(DESCRIPTOR_MAX_LEN) as usize;
    source.read_exact_at(SECTOR, declared_len, "vmdk embedded descriptor")?;
    let mut text = source.read_up_to(SECTOR, DESCRIPTOR_MAX_LEN as usize)?;
    if let Some(nul) = text.iter().position(|&b| b == 0) {
        text.truncate(nul);
    }
    Ok(text)
}

/// oslo's footer rules: the footer repeats the header's identity and
/// descriptor, does not announce yet another footer, and is framed by a footer
/// marker before it and an end-of-stream marker after it.
fn check_footer(header: &SparseHeader, region: &[u8]) -> Result<(), Error> {
    let fields = Fields::new(region, "vmdk footer");
    let footer = SparseHeader::parse(fields, 512)?;
    let disagrees = footer.magic != header.magic
        || footer.version != header.version
        || footer.descriptor_sector != header.descriptor_sector
        || footer.descriptor_sectors != header.descriptor_sectors;
    if disagrees {
        return Err(Error::malformed(
            "vmdk footer does not match the image's header",
        ));
    }
    if footer.gd_offset == GD_AT_END {
        return Err(Error::malformed("vmdk footer announces yet another footer"));
    }
    let footer_marker_ok = fields.le_u32(8)? == 0
        && fields.le_u32(12)? == MARKER_FOOTER
        && fields.slice(16, 496)?.iter().all(|&b| b == 0);
    if !footer_marker_ok {
        return Err(Error::malformed("vmdk footer marker is invalid"));
    }
    let eos_ok = fields.le_u64(1024)? == 0
        && fields.le_u32(1032)? == 0
        && fields.le_u32(1036)? == MARKER_EOS
        && fields.slice(1040, 496)?.iter().all(|&b| b == 0);
    if !eos_ok {
        return Err(Error::malformed("vmdk end-of-stream marker is invalid"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const DESCRIPTOR: &str = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\nRW 2048 SPARSE \"a.vmdk\"\nddb.adapterType = \"ide\"\n";

    fn sparse_header(gd_offset: u64) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"KDMV");
        h[4..8].copy_from_slice(&3u32.to_le_bytes());
        h[12..20].copy_from_slice(&2048u64.to_le_bytes());
        h[28..36].copy_from_slice(&1u64.to_le_bytes());
        h[36..44].copy_from_slice(&2u64.to_le_bytes());
        h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
        h
    }

    /// Header, descriptor, and (with `GD_AT_END`) footer marker, footer and
    /// end-of-stream marker.
    fn stream_image(footer_gd_offset: u64) -> Vec<u8> {
        let mut image = sparse_header(GD_AT_END);
        let mut descriptor = DESCRIPTOR.as_bytes().to_vec();
        descriptor.resize(1024, 0);
        image.extend(descriptor);
        let mut marker = vec![0u8; 512];
        marker[12..16].copy_from_slice(&MARKER_FOOTER.to_le_bytes());
        image.extend(marker);
        image.extend(sparse_header(footer_gd_offset));
        image.extend([0u8; 512]);
        image
    }

    fn read(bytes: Vec<u8>) -> Result<Vmdk, Error> {
        let mut cursor = Cursor::new(bytes);
        Vmdk::read(
            &mut Source::new(&mut cursor).unwrap(),
            Signature::VmdkSparse,
        )
    }

    #[test]
    fn stream_optimized_with_valid_footer_when_checked_is_accepted() {
        let vmdk = read(stream_image(3)).unwrap();

        let result = vmdk.check();

        assert!(result.is_ok(), "{result:?}");
        assert_eq!(vmdk.virtual_size(), Some(2048 * 512));
    }

    #[test]
    fn footer_announcing_another_footer_when_checked_is_malformed() {
        let vmdk = read(stream_image(GD_AT_END)).unwrap();

        let error = vmdk.check().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Malformed);
    }

    #[test]
    fn descriptor_outside_sector_one_when_read_is_malformed() {
        let mut image = sparse_header(0);
        image[28..36].copy_from_slice(&7u64.to_le_bytes());

        let error = read(image).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Malformed);
    }

    #[test]
    fn huge_descriptor_size_when_read_is_capped_and_truncated() {
        let mut image = sparse_header(0);
        image[36..44].copy_from_slice(&u64::MAX.to_le_bytes());

        let error = read(image).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Truncated);
    }

    #[test]
    fn capacity_zero_with_descriptor_when_checked_is_subformat() {
        let mut image = sparse_header(0);
        image[12..20].copy_from_slice(&0u64.to_le_bytes());
        image.extend(DESCRIPTOR.as_bytes());
        image.resize(4096, 0);

        let error = read(image).unwrap().check().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::VmdkSubformat);
    }

    #[test]
    fn descriptor_text_running_past_its_declared_size_when_checked_is_seen_whole() {
        let mut image = sparse_header(0);
        image[36..44].copy_from_slice(&1u64.to_le_bytes());
        let mut text = DESCRIPTOR.as_bytes().to_vec();
        text.resize(512, b'#');
        image.extend(text);
        image.extend(b"\nparentFileNameHint=\"/etc/passwd\"\n");
        image.resize(4096, 0);

        let error = read(image).unwrap().check().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::BackingFile);
    }

    #[test]
    fn sparse_extent_without_descriptor_when_checked_is_subformat() {
        let mut image = sparse_header(0);
        image[28..36].copy_from_slice(&0u64.to_le_bytes());

        let error = read(image).unwrap().check().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::VmdkSubformat);
    }
}
