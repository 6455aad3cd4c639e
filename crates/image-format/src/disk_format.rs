//! [`DiskFormat`]: Glance's `disk_format` values, their spelling, and the
//! `qemu-img -f` driver that reads each of them.

use std::fmt;
use std::str::FromStr;

/// A Glance `disk_format` value.
///
/// `Ami`, `Ari` and `Aki` (Amazon machine, ramdisk and kernel images) have no
/// signature of their own: they are raw bytes as far as inspection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
    Vdi,
    Iso,
    Ami,
    Ari,
    Aki,
    Ploop,
}

impl DiskFormat {
    /// Every format, in Glance's documentation order.
    pub const ALL: [DiskFormat; 11] = [
        DiskFormat::Raw,
        DiskFormat::Qcow2,
        DiskFormat::Vmdk,
        DiskFormat::Vhd,
        DiskFormat::Vhdx,
        DiskFormat::Vdi,
        DiskFormat::Iso,
        DiskFormat::Ami,
        DiskFormat::Ari,
        DiskFormat::Aki,
        DiskFormat::Ploop,
    ];

    /// Glance's spelling: `"raw"`, `"qcow2"`, `"vmdk"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Vhdx => "vhdx",
            DiskFormat::Vdi => "vdi",
            DiskFormat::Iso => "iso",
            DiskFormat::Ami => "ami",
            DiskFormat::Ari => "ari",
            DiskFormat::Aki => "aki",
            DiskFormat::Ploop => "ploop",
        }
    }

    /// The `-f` argument qemu-img needs to read this format (never let it probe).
    pub fn qemu_img_format(self) -> &'static str {
        match self {
            DiskFormat::Raw
            | DiskFormat::Iso
            | DiskFormat::Ami
            | DiskFormat::Ari
            | DiskFormat::Aki => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vhd => "vpc",
            DiskFormat::Vhdx => "vhdx",
            DiskFormat::Vdi => "vdi",
            DiskFormat::Ploop => "parallels",
        }
    }

    /// Formats whose content is plain bytes with no signature of its own.
    pub(crate) fn is_raw_like(self) -> bool {
        matches!(
            self,
            DiskFormat::Raw | DiskFormat::Ami | DiskFormat::Ari | DiskFormat::Aki
        )
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of Glance's `disk_format` values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a disk format; expected one of raw, qcow2, vmdk, vhd, vhdx, vdi, iso, ami, ari, aki, ploop")]
pub struct ParseDiskFormatError(String);

impl FromStr for DiskFormat {
    type Err = ParseDiskFormatError;

    /// Parses Glance's exact (lower-case) spelling.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DiskFormat::ALL
            .into_iter()
            .find(|format| format.as_str() == s)
            .ok_or_else(|| ParseDiskFormatError(s.chars().take(64).collect()))
    }
}

/// The `-f` argument qemu-img needs to read `format`; see [`DiskFormat::qemu_img_format`].
pub fn qemu_img_format(format: DiskFormat) -> &'static str {
    format.qemu_img_format()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_when_displayed_then_parsed_round_trips() {
        let parsed: Vec<DiskFormat> = DiskFormat::ALL
            .iter()
            .map(|format| format.to_string().parse().unwrap())
            .collect();

        assert_eq!(parsed, DiskFormat::ALL.to_vec());
    }

    #[test]
    fn glance_spelling_when_parsed_gives_the_variant() {
        let vhd: DiskFormat = "vhd".parse().unwrap();
        let ploop: DiskFormat = "ploop".parse().unwrap();

        assert_eq!((vhd, ploop), (DiskFormat::Vhd, DiskFormat::Ploop));
    }

    #[test]
    fn unknown_or_upper_case_name_when_parsed_is_refused() {
        let upper = "QCOW2".parse::<DiskFormat>();
        let vpc = "vpc".parse::<DiskFormat>();

        assert!(upper.is_err());
        assert_eq!(
            vpc.unwrap_err().to_string(),
            "\"vpc\" is not a disk format; expected one of raw, qcow2, vmdk, vhd, vhdx, vdi, iso, ami, ari, aki, ploop"
        );
    }

    #[test]
    fn qemu_img_format_when_asked_names_qemu_drivers() {
        let names: Vec<&str> = DiskFormat::ALL
            .iter()
            .map(|f| qemu_img_format(*f))
            .collect();

        assert_eq!(
            names,
            [
                "raw",
                "qcow2",
                "vmdk",
                "vpc",
                "vhdx",
                "vdi",
                "raw",
                "raw",
                "raw",
                "raw",
                "parallels"
            ]
        );
    }
}
