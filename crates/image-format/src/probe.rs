//! Signature probing: which format do the bytes claim to be?
//!
//! Probing only looks at magic numbers; the per-format modules parse and check
//! the headers afterwards. Every signature is tested (not first-match-wins), as
//! oslo.utils' `InspectWrapper` does, because one file carrying two formats'
//! signatures is a classic way to make two readers see two different images.
//!
//! Signatures are *strong* (a magic number at the start of the file, or VDI's
//! at 0x40) or *weak* (an ISO volume descriptor at 32 KiB, an MBR boot
//! signature, a VHD footer in the last sector). Resolution:
//!
//! ```text
//!   strong signatures   weak signatures          result
//!   -----------------   ---------------------    ----------------------------
//!   two or more         any                      AmbiguousFormat
//!   one                 none or vhd-footer       that format
//!   one                 iso or mbr               AmbiguousFormat
//!   none                none                     raw
//!   none                iso (+ mbr)              iso (hybrid ISOs carry an MBR)
//!   none                mbr                      partition table (raw)
//!   none                vhd-footer (+ mbr)       fixed vhd (a disk of a partitioned disk)
//!   none                vhd-footer + iso         AmbiguousFormat
//! ```

use std::io::{Read, Seek};

use crate::error::{Error, ErrorKind};
use crate::fields::Fields;
use crate::source::Source;

/// How much of the start of the image probing reads: enough for the ISO 9660
/// volume descriptors at 32 KiB, 34 KiB and 36 KiB.
const HEAD_LEN: usize = 0x9800;

/// The ISO 9660 / UDF volume descriptors that are looked at.
pub(crate) const ISO_DESCRIPTOR_OFFSETS: [usize; 3] = [0x8000, 0x8800, 0x9000];

/// A format signature found in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signature {
    /// `QFI\xfb`: qcow, any version.
    Qcow,
    /// `QED\0`.
    Qed,
    /// `KDMV`: a VMware hosted sparse extent.
    VmdkSparse,
    /// `COWD`: a VMware 3 / ESX sparse extent.
    VmdkCowd,
    /// A plain-text vmdk descriptor file.
    VmdkText,
    /// `conectix` at offset 0: a dynamic (or differencing) vhd's footer copy.
    VhdHeader,
    /// `conectix` only in the last 512 bytes: a fixed vhd.
    VhdFooter,
    /// `vhdxfile`.
    Vhdx,
    /// `0xbeda107f` at 0x40.
    Vdi,
    /// `CD001`, `NSR02` or `NSR03` in a volume descriptor at 32 KiB and up.
    Iso,
    /// `0x55 0xaa` at 510 without a FAT boot sector's layout: an MBR or GPT.
    PartitionTable,
    /// `LUKS\xba\xbe`.
    Luks,
    /// `WithoutFreeSpace` or `WithouFreSpacExt`: Parallels / ploop.
    Ploop,
    /// `Bochs Virtual HD Image`.
    Bochs,
    /// A cloop shell-script header.
    Cloop,
}

impl Signature {
    /// How the format is named in messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Signature::Qcow => "a qcow2 image",
            Signature::Qed => "a QED image",
            Signature::VmdkSparse | Signature::VmdkCowd => "a vmdk image",
            Signature::VmdkText => "a vmdk descriptor file",
            Signature::VhdHeader | Signature::VhdFooter => "a vhd image",
            Signature::Vhdx => "a vhdx image",
            Signature::Vdi => "a vdi image",
            Signature::Iso => "an ISO 9660/UDF image",
            Signature::PartitionTable => "a partitioned disk (MBR/GPT)",
            Signature::Luks => "a LUKS encrypted image",
            Signature::Ploop => "a ploop image",
            Signature::Bochs => "a Bochs image",
            Signature::Cloop => "a cloop image",
        }
    }

    fn is_weak(self) -> bool {
        matches!(
            self,
            Signature::Iso | Signature::PartitionTable | Signature::VhdFooter
        )
    }
}

/// Finds the image's format signature; `None` means raw bytes.
pub(crate) fn identify<R: Read + Seek + ?Sized>(
    source: &mut Source<'_, R>,
) -> Result<Option<Signature>, Error> {
    let head = source.read_up_to(0, HEAD_LEN)?;
    let tail_has_vhd_footer = match source.len().checked_sub(512) {
        Some(offset) if offset > 0 => source.read_up_to(offset, 8)? == b"conectix",
        _ => false,
    };
    let mut found = signatures_in_head(&head);
    if tail_has_vhd_footer && !found.contains(&Signature::VhdHeader) {
        found.push(Signature::VhdFooter);
    }
    resolve(&found)
}

fn signatures_in_head(head: &[u8]) -> Vec<Signature> {
    let fields = Fields::new(head, "image");
    let starts = |magic: &[u8]| head.starts_with(magic);
    let mut found = Vec::new();
    let mut add = |present: bool, signature| {
        if present {
            found.push(signature);
        }
    };
    add(starts(b"QFI\xfb"), Signature::Qcow);
    add(starts(b"QED\0"), Signature::Qed);
    add(starts(b"KDMV"), Signature::VmdkSparse);
    add(starts(b"COWD"), Signature::VmdkCowd);
    add(is_vmdk_text_descriptor(head), Signature::VmdkText);
    add(starts(b"conectix"), Signature::VhdHeader);
    add(starts(b"vhdxfile"), Signature::Vhdx);
    add(
        fields.le_u32(0x40).ok() == Some(0xbeda_107f),
        Signature::Vdi,
    );
    add(has_iso_descriptor(head), Signature::Iso);
    add(has_partition_table(head), Signature::PartitionTable);
    add(starts(b"LUKS\xba\xbe"), Signature::Luks);
    add(
        starts(b"WithoutFreeSpace") || starts(b"WithouFreSpacExt"),
        Signature::Ploop,
    );
    add(starts(b"Bochs Virtual HD Image\0"), Signature::Bochs);
    add(
        starts(b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0"),
        Signature::Cloop,
    );
    found
}

fn resolve(found: &[Signature]) -> Result<Option<Signature>, Error> {
    let strong: Vec<Signature> = found.iter().copied().filter(|s| !s.is_weak()).collect();
    let weak: Vec<Signature> = found.iter().copied().filter(|s| s.is_weak()).collect();
    let has = |s| weak.contains(&s);
    match (strong.as_slice(), weak.as_slice()) {
        ([], []) => Ok(None),
        ([only], []) | ([only], [Signature::VhdFooter]) => Ok(Some(*only)),
        ([_], _) | ([_, _, ..], _) => Err(ambiguous(found)),
        ([], _) if has(Signature::Iso) && has(Signature::VhdFooter) => Err(ambiguous(found)),
        ([], _) if has(Signature::Iso) => Ok(Some(Signature::Iso)),
        ([], _) if has(Signature::VhdFooter) => Ok(Some(Signature::VhdFooter)),
        ([], _) => Ok(Some(Signature::PartitionTable)),
    }
}

fn ambiguous(found: &[Signature]) -> Error {
    let names: Vec<&str> = found.iter().map(|s| s.describe()).collect();
    Error::new(
        ErrorKind::AmbiguousFormat,
        format!(
            "the image carries the signatures of several formats ({}); it is refused",
            names.join(", ")
        ),
    )
}

fn has_iso_descriptor(head: &[u8]) -> bool {
    ISO_DESCRIPTOR_OFFSETS.iter().any(|&offset| {
        let id = head.get(offset + 1..offset + 6);
        matches!(id, Some(b"CD001" | b"NSR02" | b"NSR03"))
    })
}

/// An MBR boot signature, excluding FAT volume boot records (oslo's rule: two
/// FATs and the fixed-disk media descriptor mean a filesystem, not a disk).
fn has_partition_table(head: &[u8]) -> bool {
    let boot_signature = head.get(510..512) == Some(&[0x55, 0xaa][..]);
    let fat_boot_sector = head.get(0x10) == Some(&2) && head.get(0x15) == Some(&0xf8);
    boot_signature && !fat_boot_sector
}

/// A text vmdk descriptor, recognised the way qemu's `vmdk_probe` does
/// (comment and blank lines, then `version=1|2|3`), or oslo's way (the first
/// sector is printable text that sets `createType`).
fn is_vmdk_text_descriptor(head: &[u8]) -> bool {
    qemu_would_probe_vmdk_text(&head[..head.len().min(2048)])
        || text_sets_create_type(&head[..head.len().min(512)])
}

fn qemu_would_probe_vmdk_text(buf: &[u8]) -> bool {
    let mut rest = buf;
    while !rest.is_empty() {
        let line_end = rest.iter().position(|&b| b == b'\n');
        let line = &rest[..line_end.unwrap_or(rest.len())];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"#") || line.iter().all(|&b| b == b' ') {
            let Some(end) = line_end else { return false };
            rest = &rest[end + 1..];
            continue;
        }
        return line_end.is_some() && matches!(line, b"version=1" | b"version=2" | b"version=3");
    }
    false
}

fn text_sets_create_type(buf: &[u8]) -> bool {
    let printable = buf
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    printable
        && buf
            .to_ascii_lowercase()
            .windows(b"createtype=".len())
            .any(|w| w == b"createtype=")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbr() -> Vec<u8> {
        let mut sector = vec![0u8; 512];
        sector[510] = 0x55;
        sector[511] = 0xaa;
        sector
    }

    #[test]
    fn qcow_magic_with_mbr_signature_when_resolved_is_ambiguous() {
        let mut head = mbr();
        head[..4].copy_from_slice(b"QFI\xfb");

        let error = resolve(&signatures_in_head(&head)).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::AmbiguousFormat);
    }

    #[test]
    fn iso_with_mbr_when_resolved_is_iso() {
        let mut head = mbr();
        head.resize(0x9000, 0);
        head[0x8001..0x8006].copy_from_slice(b"CD001");

        let signature = resolve(&signatures_in_head(&head)).unwrap();

        assert_eq!(signature, Some(Signature::Iso));
    }

    #[test]
    fn fixed_vhd_footer_with_mbr_when_resolved_is_vhd() {
        let found = [Signature::PartitionTable, Signature::VhdFooter];

        let signature = resolve(&found).unwrap();

        assert_eq!(signature, Some(Signature::VhdFooter));
    }

    #[test]
    fn fat_boot_sector_when_probed_is_not_a_partition_table() {
        let mut head = mbr();
        head[0x10] = 2;
        head[0x15] = 0xf8;

        let found = signatures_in_head(&head);

        assert!(found.is_empty());
    }

    #[test]
    fn descriptor_text_when_probed_is_vmdk_text() {
        let text = b"# Disk DescriptorFile\nversion=1\nCID=1\ncreateType=\"monolithicFlat\"\n";

        let found = signatures_in_head(text);

        assert_eq!(found, [Signature::VmdkText]);
    }

    #[test]
    fn version_line_without_newline_when_probed_is_not_vmdk_text() {
        let found = qemu_would_probe_vmdk_text(b"#c\n  \r\nversion=1");

        assert!(!found);
    }
}
