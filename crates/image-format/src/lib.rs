//! image-format: a disk-image format inspector that runs on uploaded images
//! *before* qemu-img ever touches them.
//!
//! It follows the rules of oslo.utils' `format_inspector` as Glance and nova use
//! it, in Rust, reading only what it needs through a caller-given `Read + Seek`
//! (reads are capped at 2 MiB each, at fixed places or at offsets checked
//! against the image's length; nothing here panics on any input).
//!
//! - [`detect`]: what are these bytes? (format and virtual size)
//! - [`verify`]: do these bytes match the declared `disk_format`, and are they
//!   safe to hand to qemu-img with `-f` [`qemu_img_format`]?
//!
//! # The rules `verify` applies
//!
//! | claimed | content must be | and must pass |
//! |---|---|---|
//! | raw, ami | no recognised format (an MBR/GPT disk counts as raw) | the MBR/GPT partition-table check when there is an MBR |
//! | aki, ari | no recognised format (an MBR signature is ignored) | - |
//! | qcow2 | qcow2 v2 or v3 | no backing file, no external data file (bit or header extension), no unknown incompatible feature bit |
//! | vmdk | `KDMV` hosted sparse extent, capacity > 0, with an embedded descriptor | `createType` (set once) monolithicSparse or streamOptimized, every descriptor line understood, no extent naming a path ('/'), at least one extent, no `parentFileNameHint` anywhere in the text, a valid footer when the grain directory is at the end |
//! | vhd | `conectix` at offset 0 (dynamic) or in the last 512 bytes (fixed) | not a differencing disk |
//! | vhdx | `vhdxfile` with a readable region and metadata table | not a differencing disk |
//! | vdi | `0xbeda107f` at 0x40 | not an undo/differencing image, no link or parent UUID |
//! | iso | an ISO 9660 / UDF volume descriptor at 32 KiB, 34 KiB or 36 KiB | - |
//! | ploop | `WithoutFreeSpace` / `WithouFreSpacExt` version 2 | - |
//!
//! Decisions where oslo.utils leaves room:
//! - An ISO declared `raw` is refused (as nova and Glance's import conversion
//!   do): declare it `iso`. A bootable ISO that also carries an MBR is an ISO.
//! - Content with two formats' signatures (a qcow2 header and an MBR boot
//!   signature, say) is refused as [`ErrorKind::AmbiguousFormat`].
//! - QED, LUKS, qcow v1, Bochs and cloop images are recognised and always
//!   refused ([`ErrorKind::UnsupportedFormat`] from `detect`,
//!   [`ErrorKind::FormatMismatch`] from `verify`).
//! - A plain-text vmdk descriptor file, a `COWD` file and a sparse extent
//!   without a descriptor are vmdk content, refused as
//!   [`ErrorKind::VmdkSubformat`].
//! - qcow2 extended L2 entries (incompatible bit 4) are accepted; oslo.utils
//!   refuses bit 4 too.
//! - Where oslo's vmdk descriptor parser and qemu's disagree, the stricter
//!   reading wins: qemu 7.2 follows a `parentFileNameHint` found in a comment
//!   as a backing file, reads the case-sensitive `createType` when oslo reads
//!   the first case-insensitive one, and opens a capacity-0 `KDMV` file's
//!   descriptor as a descriptor file whose extents are sibling files. All
//!   three are refused here (oslo.utils accepts them).
//! - A fixed vhd (footer only in the last sector) is vhd content, so it is
//!   refused when declared raw.
//!
//! The reader is left at offset 0 when inspection succeeds; after an error its
//! position is unspecified.

mod disk_format;
mod error;
mod fields;
mod formats;
mod inspect;
mod probe;
mod source;

use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

pub use disk_format::{qemu_img_format, DiskFormat, ParseDiskFormatError};
pub use error::{Error, ErrorKind};

use source::Source;

/// What the bytes of an image are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Inspection {
    /// The format of the content. Images with no signature (including MBR/GPT
    /// disks and anything uploaded as ami/ari/aki) are [`DiskFormat::Raw`].
    pub detected: DiskFormat,
    /// The disk size the guest sees, in bytes: from the header when the format
    /// has one, the file length for raw content, `None` when the header does
    /// not say (a UDF-only ISO, a vhdx without a size item, a vmdk descriptor
    /// file).
    pub virtual_size: Option<u64>,
}

/// Identifies the format of the image in `reader` and reads its virtual size.
///
/// Runs no safety rules: use [`verify`] on uploads. Fails on I/O errors,
/// truncated or malformed headers, ambiguous content, and formats never
/// accepted (QED, LUKS, ...).
pub fn detect<R: Read + Seek + ?Sized>(reader: &mut R) -> Result<Inspection, Error> {
    let mut source = Source::new(reader)?;
    let inspection = inspect::detect(&mut source)?;
    source.rewind()?;
    Ok(inspection)
}

/// Checks that the image in `reader` is what the uploader `claimed` and that it
/// is safe to hand to qemu-img (see the crate documentation for the rules).
pub fn verify<R: Read + Seek + ?Sized>(
    reader: &mut R,
    claimed: DiskFormat,
) -> Result<Inspection, Error> {
    let mut source = Source::new(reader)?;
    let inspection = inspect::verify(&mut source, claimed)?;
    source.rewind()?;
    Ok(inspection)
}

/// [`detect`] on the file at `path`.
pub fn detect_path(path: impl AsRef<Path>) -> Result<Inspection, Error> {
    detect(&mut open(path.as_ref())?)
}

/// [`verify`] on the file at `path`.
pub fn verify_path(path: impl AsRef<Path>, claimed: DiskFormat) -> Result<Inspection, Error> {
    verify(&mut open(path.as_ref())?, claimed)
}

fn open(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|e| {
        Error::io(
            format!("could not open the image file {}", path.display()),
            e,
        )
    })
}
