//! Volumes and volume snapshots (Cinder semantics): what they are, their
//! statuses and the legal moves between them.
//!
//! ```text
//!  volume:
//!            create (saga)                       os-extend
//!  creating ─────────────▶ available ◀──────────────────────▶ extending
//!     │ failure             │  ▲  ▲ detach                        │ failure
//!     ▼                     │  │  └────── detaching ◀── in-use    ▼
//!   error ──┐         reserve│  │                          ▲   error_extending
//!           │               ▼  │ unreserve                 │       │
//!           │            reserved ──▶ attaching ───────────┘       │
//!           │                                                      │
//!           └──────────────▶ deleting ◀────────────────────────────┘
//!                              │   ▲ retry        (also from available)
//!                              ▼   │
//!                          deleted  error_deleting
//!
//!  transfer: available ──create──▶ awaiting-transfer ──accept / delete──▶
//!            available (accepted: in the receiving project)
//!
//!  snapshot:
//!  creating ──▶ available ──▶ deleting ──▶ deleted
//!     │                          ▲  │
//!     ▼                          │  ▼
//!   error ───────────────────────┘ error_deleting
//! ```
//! Every change is a compare-and-swap in the store from the status the
//! caller read, so two requests never both move a volume.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};

use crate::{
    AttachmentId, Error, ImageId, ProjectId, Result, ServerId, UserId, VolumeId, VolumeSnapshotId,
    VolumeTypeId,
};

/// One GiB: Cinder sizes are whole GiB.
pub const GIB: u64 = 1 << 30;

/// Largest volume Snapstack creates, in GiB (a guard against typos).
pub const MAX_SIZE_GIB: u64 = 16 * 1024;

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum!(
    /// A volume's Cinder status.
    VolumeStatus {
        Creating => "creating",
        Available => "available",
        Reserved => "reserved",
        Attaching => "attaching",
        InUse => "in-use",
        Detaching => "detaching",
        AwaitingTransfer => "awaiting-transfer",
        Extending => "extending",
        ErrorExtending => "error_extending",
        Deleting => "deleting",
        ErrorDeleting => "error_deleting",
        Error => "error",
        Deleted => "deleted",
    }
);

impl VolumeStatus {
    /// Whether a volume may move from `self` to `next`.
    pub fn can_become(self, next: VolumeStatus) -> bool {
        use VolumeStatus::*;
        matches!(
            (self, next),
            (Creating, Available | Error)
                | (
                    Available,
                    Extending | Deleting | Reserved | AwaitingTransfer
                )
                | (AwaitingTransfer, Available)
                | (Extending, Available | ErrorExtending)
                | (Reserved, Attaching | Available)
                | (Attaching, InUse | Available)
                | (InUse, Detaching)
                | (Detaching, Available | InUse)
                | (Error | ErrorExtending | ErrorDeleting, Deleting)
                | (Deleting, Deleted | ErrorDeleting)
        )
    }

    /// `next` if the move is legal, else a 400 naming both (Cinder answers
    /// "Invalid volume: … must be available …" with 400).
    pub fn transition(self, next: VolumeStatus) -> Result<VolumeStatus> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(Error::invalid(format!(
                "Invalid volume: the volume is {self}, it cannot become {next}."
            )))
        }
    }
}

status_enum!(
    /// A volume snapshot's Cinder status.
    SnapshotStatus {
        Creating => "creating",
        Available => "available",
        Deleting => "deleting",
        ErrorDeleting => "error_deleting",
        Error => "error",
        Deleted => "deleted",
    }
);

impl SnapshotStatus {
    pub fn can_become(self, next: SnapshotStatus) -> bool {
        use SnapshotStatus::*;
        matches!(
            (self, next),
            (Creating, Available | Error)
                | (Available | Error | ErrorDeleting, Deleting)
                | (Deleting, Deleted | ErrorDeleting)
        )
    }

    pub fn transition(self, next: SnapshotStatus) -> Result<SnapshotStatus> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(Error::invalid(format!(
                "Invalid snapshot: the snapshot is {self}, it cannot become {next}."
            )))
        }
    }
}

/// What a volume's first content came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeSource {
    Blank,
    Image(ImageId),
    Snapshot(VolumeSnapshotId),
    Volume(VolumeId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub id: VolumeId,
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub name: Option<String>,
    pub description: Option<String>,
    /// GiB.
    pub size: u64,
    pub status: VolumeStatus,
    pub source: VolumeSource,
    /// Where the data lives in the pool (None until created).
    pub location: Option<String>,
    pub bootable: bool,
    pub metadata: BTreeMap<String, String>,
    /// Cinder's `volume_image_metadata`: the image's properties, for a
    /// volume made from an image.
    pub image_metadata: BTreeMap<String, String>,
    /// The volume type (the default type unless one was asked for).
    pub volume_type_id: VolumeTypeId,
    /// Cinder's admin metadata `readonly` (`os-update_readonly_flag`);
    /// None until set.
    pub readonly: Option<bool>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Volume {
    /// A new volume record in `creating`.
    pub fn new_creating(
        project_id: ProjectId,
        user_id: UserId,
        size: u64,
        source: VolumeSource,
        now: DateTime<Utc>,
    ) -> Volume {
        Volume {
            id: VolumeId::new(),
            project_id,
            user_id,
            name: None,
            description: None,
            size,
            status: VolumeStatus::Creating,
            source,
            location: None,
            bootable: false,
            metadata: BTreeMap::new(),
            image_metadata: BTreeMap::new(),
            volume_type_id: crate::volume_type::default_type_id(),
            readonly: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Checks the fields a user sets.
    pub fn validate(&self) -> Result<()> {
        validate_size(self.size)?;
        validate_text("name", self.name.as_deref())?;
        validate_text("description", self.description.as_deref())?;
        validate_metadata(&self.metadata)
    }

    /// Whether the volume may be snapshotted now: `available`, or `in-use`
    /// with `force` (Cinder's rule; 400 otherwise).
    pub fn check_snapshot(&self, force: bool) -> Result<()> {
        match self.status {
            VolumeStatus::Available => Ok(()),
            VolumeStatus::InUse if force => Ok(()),
            VolumeStatus::InUse => Err(Error::invalid(format!(
                "Invalid volume: Volume {} status must be available, but current status is: in-use (use --force to snapshot an attached volume).",
                self.id
            ))),
            other => Err(Error::invalid(format!(
                "Invalid volume: Volume {} status must be available, but current status is: {other}.",
                self.id
            ))),
        }
    }

    /// Whether the volume may be deleted now (Cinder: available, error,
    /// error_extending, error_deleting; never while attached).
    pub fn check_deletable(&self) -> Result<()> {
        self.status.transition(VolumeStatus::Deleting).map(|_| ()).map_err(|_| {
            Error::invalid(format!(
                "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer (volume {} is {}).",
                self.id, self.status
            ))
        })
    }

    /// Whether the volume may grow to `new_size` GiB (Cinder's os-extend:
    /// available, larger than now).
    pub fn check_extend(&self, new_size: u64) -> Result<()> {
        if self.status != VolumeStatus::Available {
            return Err(Error::invalid(format!(
                "Invalid volume: Volume {} status must be available to extend, but current status is: {}.",
                self.id, self.status
            )));
        }
        if new_size <= self.size {
            return Err(Error::invalid(format!(
                "Invalid input received: New size for extend must be greater than current size. (current: {}, extended: {new_size}).",
                self.size
            )));
        }
        validate_size(new_size)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSnapshot {
    pub id: VolumeSnapshotId,
    pub volume_id: VolumeId,
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub name: Option<String>,
    pub description: Option<String>,
    /// GiB: the volume's size when taken.
    pub size: u64,
    pub status: SnapshotStatus,
    /// Where the frozen data lives in the pool (None until taken).
    pub location: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Progress as the last `os-update_snapshot_status` gave it ("80%");
    /// None: derived from the status.
    pub progress: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl VolumeSnapshot {
    pub fn validate(&self) -> Result<()> {
        validate_text("name", self.name.as_deref())?;
        validate_text("description", self.description.as_deref())?;
        validate_metadata(&self.metadata)
    }
}

/// One volume attached to one server (Nova's block device mapping of a
/// volume; Cinder's attachment). A volume has at most one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeAttachment {
    pub id: AttachmentId,
    pub volume_id: VolumeId,
    pub server_id: ServerId,
    /// The guest device Nova reports ("/dev/vdb").
    pub device: String,
    /// The disk's QEMU node name: unique in the server, stable for the
    /// attachment's life (see [`disk_id_of`]).
    pub disk_id: String,
    /// `Some(0)` for the volume the server boots from.
    pub boot_index: Option<u32>,
    pub delete_on_termination: bool,
    pub created_at: DateTime<Utc>,
}

impl VolumeAttachment {
    /// Whether this is the server's root (boot) volume.
    pub fn is_root(&self) -> bool {
        self.boot_index == Some(0)
    }
}

/// The QEMU node name of a volume's disk in any server: `vol-` and the
/// first 12 hex digits of its id (a letter first, within the hypervisor's
/// 23 characters, the same whether given at start or hot-plugged).
pub fn disk_id_of(volume: VolumeId) -> String {
    format!("vol-{}", &volume.uuid().simple().to_string()[..12])
}

/// The device names a server's disks take, in order: `/dev/vda`, `/dev/vdb`, …
pub fn device_name(index: usize) -> Option<String> {
    let letter = u8::try_from(index).ok().filter(|i| *i < 26)?;
    Some(format!("/dev/vd{}", (b'a' + letter) as char))
}

/// The first `/dev/vdX` not in `used` (`/dev/vda` is the root disk of an
/// image-backed server, so an attachment starts looking at `first`).
pub fn next_device<'a>(
    used: impl IntoIterator<Item = &'a str> + Clone,
    first: usize,
) -> Result<String> {
    (first..26)
        .filter_map(device_name)
        .find(|d| !used.clone().into_iter().any(|u| u == d))
        .ok_or_else(|| Error::invalid("No device name left on this server (at most 26 disks)."))
}

/// Checks a device name a user asks for (`/dev/vdb`, `vdb`, `/dev/sdb`…
/// are accepted as Nova does and mapped to `/dev/vdX`).
pub fn normalize_device(device: &str) -> Result<String> {
    let name = device.strip_prefix("/dev/").unwrap_or(device);
    let letters = name
        .strip_prefix("vd")
        .or_else(|| name.strip_prefix("sd"))
        .or_else(|| name.strip_prefix("xvd"))
        .or_else(|| name.strip_prefix("hd"));
    match letters {
        Some(l) if l.len() == 1 && l.chars().all(|c| c.is_ascii_lowercase()) => {
            Ok(format!("/dev/vd{l}"))
        }
        _ => Err(Error::invalid(format!(
            "The supplied device path ({device}) is invalid."
        ))),
    }
}

/// A volume's size must be 1 GiB to [`MAX_SIZE_GIB`].
pub fn validate_size(size: u64) -> Result<()> {
    if size == 0 || size > MAX_SIZE_GIB {
        return Err(Error::invalid(format!(
            "Invalid input received: size must be an integer between 1 and {MAX_SIZE_GIB} (GiB); {size} is not."
        )));
    }
    Ok(())
}

fn validate_text(what: &str, text: Option<&str>) -> Result<()> {
    match text {
        Some(t) if t.chars().count() > 255 || t.chars().any(char::is_control) => {
            Err(Error::invalid(format!(
                "Invalid input received: the {what} must be at most 255 printable characters."
            )))
        }
        _ => Ok(()),
    }
}

fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<()> {
    if metadata
        .iter()
        .any(|(k, v)| k.is_empty() || k.len() > 255 || v.len() > 255)
    {
        return Err(Error::invalid(
            "Invalid input received: metadata keys must be 1 to 255 characters and values at most 255.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn volume(status: VolumeStatus) -> Volume {
        let mut v = Volume::new_creating(
            ProjectId::new(),
            UserId::new(),
            1,
            VolumeSource::Blank,
            Utc::now(),
        );
        v.status = status;
        v
    }

    #[test]
    fn in_use_volume_when_snapshotted_without_force_then_invalid() {
        let err = volume(VolumeStatus::InUse)
            .check_snapshot(false)
            .unwrap_err();

        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.message().contains("in-use"));
    }

    #[test]
    fn in_use_volume_when_snapshotted_with_force_then_allowed() {
        assert!(volume(VolumeStatus::InUse).check_snapshot(true).is_ok());
    }

    #[test]
    fn in_use_volume_when_deleted_then_invalid() {
        let err = volume(VolumeStatus::InUse).check_deletable().unwrap_err();

        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn creating_volume_when_extended_then_invalid() {
        let err = volume(VolumeStatus::Creating).check_extend(2).unwrap_err();

        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn available_volume_when_extended_to_same_size_then_invalid() {
        let err = volume(VolumeStatus::Available).check_extend(1).unwrap_err();

        assert!(err.message().contains("greater than current size"));
    }

    #[test]
    fn volume_when_size_zero_then_invalid() {
        let mut v = volume(VolumeStatus::Creating);
        v.size = 0;

        assert_eq!(v.validate().unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn every_volume_status_when_parsed_back_then_same() {
        for status in VolumeStatus::ALL {
            assert_eq!(VolumeStatus::parse(status.as_str()), Some(*status));
        }
    }

    #[test]
    fn deleted_volume_when_moved_anywhere_then_refused() {
        for next in VolumeStatus::ALL {
            assert!(!VolumeStatus::Deleted.can_become(*next));
        }
    }

    #[test]
    fn creating_snapshot_when_deleted_then_invalid() {
        let err = SnapshotStatus::Creating
            .transition(SnapshotStatus::Deleting)
            .unwrap_err();

        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    #[test]
    fn disk_id_when_made_from_a_volume_then_a_node_name() {
        let id = disk_id_of(VolumeId::new());

        assert_eq!(id.len(), 16);
        assert!(id.starts_with("vol-"));
    }

    #[test]
    fn next_device_when_vdb_taken_then_vdc() {
        let used = ["/dev/vda", "/dev/vdb"];

        assert_eq!(next_device(used, 1).unwrap(), "/dev/vdc");
    }

    #[test]
    fn device_when_named_like_nova_then_normalized() {
        assert_eq!(normalize_device("vdc").unwrap(), "/dev/vdc");
        assert_eq!(normalize_device("/dev/sdb").unwrap(), "/dev/vdb");
        assert_eq!(
            normalize_device("/dev/../x").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}
