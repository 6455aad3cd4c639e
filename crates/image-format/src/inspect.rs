//! `detect` and `verify`: probe the signature, compare it with the claim,
//! parse the header, run the format's rules.
//!
//! ```text
//!   probe::identify ──> signature ──(verify: must match the claim)──> parse ──(verify: check)──> Inspection
//! ```
//!
//! The claim is compared before the header is parsed, so a raw upload whose
//! first bytes are a broken qcow2 header is a `FormatMismatch`, not a parse error.

use std::io::{Read, Seek};

use crate::disk_format::DiskFormat;
use crate::error::{Error, ErrorKind};
use crate::formats::iso::Iso;
use crate::formats::partition_table::PartitionTable;
use crate::formats::ploop::Ploop;
use crate::formats::qcow2::Qcow2;
use crate::formats::vdi::Vdi;
use crate::formats::vhd::Vhd;
use crate::formats::vhdx::Vhdx;
use crate::formats::vmdk::Vmdk;
use crate::probe::{self, Signature};
use crate::source::Source;
use crate::Inspection;

/// A parsed image of a format we may accept.
enum Parsed {
    Raw { len: u64 },
    Partitioned { len: u64, table: PartitionTable },
    Qcow2(Qcow2),
    Vmdk(Vmdk),
    Vhd(Vhd),
    Vhdx(Vhdx),
    Vdi(Vdi),
    Iso(Iso),
    Ploop(Ploop),
}

pub(crate) fn detect<R: Read + Seek + ?Sized>(
    source: &mut Source<'_, R>,
) -> Result<Inspection, Error> {
    let signature = probe::identify(source)?;
    Ok(parse(source, signature)?.inspection())
}

pub(crate) fn verify<R: Read + Seek + ?Sized>(
    source: &mut Source<'_, R>,
    claimed: DiskFormat,
) -> Result<Inspection, Error> {
    let signature = probe::identify(source)?;
    let matches_claim = match content_format(signature) {
        Ok(DiskFormat::Raw) => claimed.is_raw_like(),
        Ok(content) => content == claimed,
        Err(_) => false,
    };
    if !matches_claim {
        let content = signature.map_or("raw data", Signature::describe);
        return Err(Error::new(
            ErrorKind::FormatMismatch,
            format!("image was declared {claimed} but its content is {content}"),
        ));
    }
    let parsed = parse(source, signature)?;
    parsed.check(claimed)?;
    Ok(parsed.inspection())
}

/// The disk format a signature stands for, or the signature itself when it is
/// a format we never accept.
fn content_format(signature: Option<Signature>) -> Result<DiskFormat, Signature> {
    match signature {
        None | Some(Signature::PartitionTable) => Ok(DiskFormat::Raw),
        Some(Signature::Qcow) => Ok(DiskFormat::Qcow2),
        Some(Signature::VmdkSparse | Signature::VmdkCowd | Signature::VmdkText) => {
            Ok(DiskFormat::Vmdk)
        }
        Some(Signature::VhdHeader | Signature::VhdFooter) => Ok(DiskFormat::Vhd),
        Some(Signature::Vhdx) => Ok(DiskFormat::Vhdx),
        Some(Signature::Vdi) => Ok(DiskFormat::Vdi),
        Some(Signature::Iso) => Ok(DiskFormat::Iso),
        Some(Signature::Ploop) => Ok(DiskFormat::Ploop),
        Some(
            unsupported @ (Signature::Qed | Signature::Luks | Signature::Bochs | Signature::Cloop),
        ) => Err(unsupported),
    }
}

fn parse<R: Read + Seek + ?Sized>(
    source: &mut Source<'_, R>,
    signature: Option<Signature>,
) -> Result<Parsed, Error> {
    let len = source.len();
    Ok(match signature {
        None => Parsed::Raw { len },
        Some(Signature::PartitionTable) => Parsed::Partitioned {
            len,
            table: PartitionTable::read(source)?,
        },
        Some(Signature::Qcow) => Parsed::Qcow2(Qcow2::read(source)?),
        Some(s @ (Signature::VmdkSparse | Signature::VmdkCowd | Signature::VmdkText)) => {
            Parsed::Vmdk(Vmdk::read(source, s)?)
        }
        Some(s @ (Signature::VhdHeader | Signature::VhdFooter)) => {
            Parsed::Vhd(Vhd::read(source, s)?)
        }
        Some(Signature::Vhdx) => Parsed::Vhdx(Vhdx::read(source)?),
        Some(Signature::Vdi) => Parsed::Vdi(Vdi::read(source)?),
        Some(Signature::Iso) => Parsed::Iso(Iso::read(source)?),
        Some(Signature::Ploop) => Parsed::Ploop(Ploop::read(source)?),
        Some(
            unsupported @ (Signature::Qed | Signature::Luks | Signature::Bochs | Signature::Cloop),
        ) => {
            return Err(Error::new(
                ErrorKind::UnsupportedFormat,
                format!(
                    "the image is {}, which is never accepted",
                    unsupported.describe()
                ),
            ))
        }
    })
}

impl Parsed {
    fn check(&self, claimed: DiskFormat) -> Result<(), Error> {
        match self {
            Parsed::Raw { .. } | Parsed::Iso(_) | Parsed::Ploop(_) => Ok(()),
            // Kernels and ramdisks are not disks; a boot signature in them
            // (every bzImage has one) is not a partition table.
            Parsed::Partitioned { .. } if matches!(claimed, DiskFormat::Aki | DiskFormat::Ari) => {
                Ok(())
            }
            Parsed::Partitioned { table, .. } => table.check(),
            Parsed::Qcow2(qcow2) => qcow2.check(),
            Parsed::Vmdk(vmdk) => vmdk.check(),
            Parsed::Vhd(vhd) => vhd.check(),
            Parsed::Vhdx(vhdx) => vhdx.check(),
            Parsed::Vdi(vdi) => vdi.check(),
        }
    }

    fn inspection(&self) -> Inspection {
        let (detected, virtual_size) = match self {
            Parsed::Raw { len } | Parsed::Partitioned { len, .. } => (DiskFormat::Raw, Some(*len)),
            Parsed::Qcow2(qcow2) => (DiskFormat::Qcow2, Some(qcow2.virtual_size)),
            Parsed::Vmdk(vmdk) => (DiskFormat::Vmdk, vmdk.virtual_size()),
            Parsed::Vhd(vhd) => (DiskFormat::Vhd, Some(vhd.virtual_size)),
            Parsed::Vhdx(vhdx) => (DiskFormat::Vhdx, vhdx.virtual_size),
            Parsed::Vdi(vdi) => (DiskFormat::Vdi, Some(vdi.virtual_size)),
            Parsed::Iso(iso) => (DiskFormat::Iso, iso.virtual_size),
            Parsed::Ploop(ploop) => (DiskFormat::Ploop, Some(ploop.virtual_size)),
        };
        Inspection {
            detected,
            virtual_size,
        }
    }
}
