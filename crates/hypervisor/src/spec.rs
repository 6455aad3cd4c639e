//! What a VM is made of: [`VmSpec`] and its disks, and the checks they must pass.
//!
//! Names end up in file names and QEMU options, so they are restricted: a VM name is
//! 1–64 of `[A-Za-z0-9_.-]`, not starting with a dot (a UUID fits); a disk id is a QEMU
//! node name: a letter, then up to 22 of `[A-Za-z0-9_-]` (room is left for suffixes such
//! as `-storage` within QEMU's 31-character limit). Paths must be UTF-8 because
//! QEMU's JSON options carry them as strings.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Longest VM name.
const MAX_NAME_LEN: usize = 64;
/// Longest disk id.
const MAX_DISK_ID_LEN: usize = 23;

/// Everything needed to start one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Unique name; Snapstack uses the server's UUID.
    pub name: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// Virtio disks, in this order on the PCI bus (the first one boots).
    pub disks: Vec<DiskSpec>,
    /// Direct kernel boot; the console is the first serial port (`console=ttyS0`).
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    /// Virtio NICs, each on a tap the network plane made (QEMU opens it by name, in the
    /// driver's network namespace). Absent in specs written before NICs existed.
    #[serde(default)]
    pub nics: Vec<NicSpec>,
}

/// One virtio-net NIC on an existing tap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    /// QEMU id of the NIC's netdev (`net0`); its device is `<id>-dev`. Same rules as a
    /// disk id.
    pub id: String,
    /// The guest's MAC address, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// The tap device (at most 15 characters).
    pub tap: String,
}

/// One virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// Node name of the disk's format node in QEMU (`disk0`): block operations
    /// (`blockdev-snapshot`, `transaction`, jobs) name the disk by it.
    pub id: String,
    pub source: DiskSource,
    pub format: DiskFormat,
    pub read_only: bool,
}

/// Where a disk's bytes live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskSource {
    /// A local file.
    File(PathBuf),
    /// An RBD image (QEMU's `rbd` block driver, package `qemu-block-extra`).
    Rbd {
        pool: String,
        image: String,
        /// Open this snapshot instead of the head (read-only).
        snapshot: Option<String>,
        /// `ceph.conf` to use instead of the default.
        conf: Option<PathBuf>,
        /// Ceph client id (`admin` when `None`).
        user: Option<String>,
    },
}

/// The format QEMU reads on top of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    /// QEMU's block driver name.
    pub fn driver(self) -> &'static str {
        match self {
            Self::Qcow2 => "qcow2",
            Self::Raw => "raw",
        }
    }
}

impl VmSpec {
    /// Checks every field that QEMU or the run directory depends on.
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        if self.memory_mib == 0 || self.vcpus == 0 {
            return Err(invalid(format!(
                "VM {} needs memory and at least one vCPU",
                self.name
            )));
        }
        for (i, disk) in self.disks.iter().enumerate() {
            disk.validate()?;
            if self.disks[..i].iter().any(|other| other.id == disk.id) {
                return Err(invalid(format!("disk id {} is used twice", disk.id)));
            }
        }
        for (i, nic) in self.nics.iter().enumerate() {
            nic.validate()?;
            let taken = self.nics[..i].iter().any(|other| other.id == nic.id)
                || self.disks.iter().any(|d| d.id == nic.id);
            if taken {
                return Err(invalid(format!("NIC id {} is used twice", nic.id)));
            }
        }
        for path in [&self.kernel, &self.initrd].into_iter().flatten() {
            utf8_path(path)?;
        }
        Ok(())
    }
}

/// Checks a disk or NIC id (see the module header).
fn validate_id(what: &str, id: &str) -> Result<()> {
    let mut chars = id.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !starts_with_letter || !rest_ok || id.len() > MAX_DISK_ID_LEN {
        return Err(invalid(format!(
            "{what} id {id:?} must be a letter then up to {} of [A-Za-z0-9_-]",
            MAX_DISK_ID_LEN - 1
        )));
    }
    Ok(())
}

impl NicSpec {
    /// Checks the id, the MAC and the tap name.
    pub fn validate(&self) -> Result<()> {
        validate_id("NIC", &self.id)?;
        let octets: Vec<&str> = self.mac.split(':').collect();
        let mac_ok = octets.len() == 6
            && octets
                .iter()
                .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
        if !mac_ok {
            return Err(invalid(format!(
                "NIC {}: MAC {:?} must be six hex pairs separated by colons",
                self.id, self.mac
            )));
        }
        let tap_ok = !self.tap.is_empty()
            && self.tap.len() <= 15
            && self
                .tap
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !tap_ok {
            return Err(invalid(format!(
                "NIC {}: tap {:?} must be 1 to 15 of [A-Za-z0-9_.-]",
                self.id, self.tap
            )));
        }
        Ok(())
    }
}

impl DiskSpec {
    /// Checks the disk id and paths (see the module header).
    pub fn validate(&self) -> Result<()> {
        validate_id("disk", &self.id)?;
        match &self.source {
            DiskSource::File(path) => utf8_path(path).map(drop),
            DiskSource::Rbd { conf, .. } => {
                conf.as_deref().map_or(Ok(()), |c| utf8_path(c).map(drop))
            }
        }
    }
}

/// Checks a VM name (see the module header).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "VM name {name:?} must be 1 to {MAX_NAME_LEN} of [A-Za-z0-9_.-], not starting with a dot"
        )))
    }
}

/// The path as UTF-8, or an `InvalidArgument` error.
pub(crate) fn utf8_path(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| invalid(format!("path {} is not UTF-8", path.display())))
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            name: "6f1c0a52-3b0e-4c8e-9a43-2f7d9b1e0c11".to_string(),
            memory_mib: 64,
            vcpus: 1,
            disks: vec![DiskSpec {
                id: "disk0".to_string(),
                source: DiskSource::File(PathBuf::from("/var/disk0.qcow2")),
                format: DiskFormat::Qcow2,
                read_only: false,
            }],
            nics: Vec::new(),
            kernel: None,
            initrd: None,
            cmdline: None,
        }
    }

    #[test]
    fn validate_when_uuid_name_and_one_disk_then_ok() {
        let spec = spec();

        let result = spec.validate();

        assert!(result.is_ok());
    }

    #[test]
    fn validate_when_name_has_slash_then_invalid_argument() {
        let mut spec = spec();
        spec.name = "../etc".to_string();

        let error = spec.validate().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn validate_when_disk_id_repeated_then_invalid_argument() {
        let mut spec = spec();
        spec.disks.push(spec.disks[0].clone());

        let error = spec.validate().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn validate_when_nic_mac_malformed_then_invalid_argument() {
        let mut spec = spec();
        spec.nics.push(NicSpec {
            id: "net0".into(),
            mac: "fa:16:3e:00:00".into(),
            tap: "tapabc".into(),
        });

        let error = spec.validate().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn spec_when_json_has_no_nics_then_loads_without_nics() {
        let mut json = serde_json::to_value(spec()).unwrap();
        json.as_object_mut().unwrap().remove("nics");

        let loaded: VmSpec = serde_json::from_value(json).unwrap();

        assert_eq!(loaded, spec());
    }

    #[test]
    fn validate_when_disk_id_starts_with_digit_then_invalid_argument() {
        let mut spec = spec();
        spec.disks[0].id = "0disk".to_string();

        let error = spec.validate().unwrap_err();

        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    }
}
