//! Restore points: libvirt-style snapshots of a whole server (every disk, and
//! optionally its memory), kept as a tree per server.
//!
//! A point's data is immutable: for each disk, the layer the disk was frozen
//! in at the point's instant (the server went on in a new overlay), and for a
//! point with memory, the state file written at that same instant. Reverting
//! never writes into a point: the server gets new overlays over the point's
//! layers. The tree: a point's parent is the server's *current* point when it
//! was taken (the last one taken or reverted to); reverting to a point and
//! taking another makes a branch.
//!
//! ```text
//!   creating ──▶ available ──▶ deleting ──▶ (row removed)
//!       │            ▲ │
//!       │            │ └─ files missing ──▶ shown `broken` (never dropped)
//!       └─ failed ───┴──▶ error
//! ```

use std::fmt;

use chrono::{DateTime, Utc};

use crate::server::VmState;
use crate::{Error, ProjectId, Result, ServerId, VolumeId};

pub use crate::ids::RestorePointId;

/// How a point is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMethod {
    /// New overlays (the old files become the point), optionally a memory
    /// state file; no guest pause for disks, milliseconds with memory.
    External,
    /// qcow2 internal snapshots (`snapshot-save`): the guest pauses while
    /// they run.
    Internal,
}

impl RestoreMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::External => "external",
            Self::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "external" => Ok(Self::External),
            "internal" => Ok(Self::Internal),
            other => Err(Error::invalid(format!(
                "Restore point method '{other}' is not one of external, internal."
            ))),
        }
    }
}

impl fmt::Display for RestoreMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a point is in its life (see the module header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePointStatus {
    Creating,
    Available,
    Deleting,
    Error,
}

impl RestorePointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Available => "available",
            Self::Deleting => "deleting",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Creating, Self::Available, Self::Deleting, Self::Error]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

impl fmt::Display for RestorePointStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One disk of a point: the disk's id in the VM and its frozen layer (a pool
/// location); for an attached volume, which volume it is (the server's root
/// disk has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointDisk {
    pub disk_id: String,
    pub layer: String,
    pub volume_id: Option<VolumeId>,
}

/// A restore point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    pub id: RestorePointId,
    pub server_id: ServerId,
    pub project_id: ProjectId,
    pub name: String,
    pub parent_id: Option<RestorePointId>,
    pub method: RestoreMethod,
    /// Whether RAM and device state were saved (revert resumes the guest).
    pub memory: bool,
    /// Whether the guest's filesystems were frozen through its agent.
    pub quiesced: bool,
    pub status: RestorePointStatus,
    pub disks: Vec<PointDisk>,
    /// The memory state file, for points with memory.
    pub state_file: Option<String>,
    /// The server's state when the point was taken.
    pub vm_state: VmState,
    /// How long the guest's vCPUs were stopped while the point was taken.
    pub guest_pause_us: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a caller asks for when creating a point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRestorePoint {
    pub name: String,
    pub memory: bool,
    pub method: RestoreMethod,
    pub quiesce: bool,
}

impl NewRestorePoint {
    /// Checks the request against the server's state.
    pub fn validate(&self, vm_state: VmState) -> Result<()> {
        crate::identity::validate_name("restore point", &self.name)?;
        if self.name.trim().is_empty() {
            return Err(Error::invalid("A restore point needs a name."));
        }
        let allowed = if self.memory {
            &[VmState::Active][..]
        } else {
            &[VmState::Active, VmState::Stopped, VmState::Paused][..]
        };
        if !allowed.contains(&vm_state) {
            return Err(Error::conflict(format!(
                "A restore point {} memory cannot be taken of a server in vm_state {vm_state}.",
                if self.memory { "with" } else { "without" }
            )));
        }
        if self.quiesce && self.memory {
            return Err(Error::invalid(
                "quiesce applies to disk-only points: a point with memory is consistent by itself.",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(memory: bool) -> NewRestorePoint {
        NewRestorePoint {
            name: "before upgrade".into(),
            memory,
            method: RestoreMethod::External,
            quiesce: false,
        }
    }

    #[test]
    fn validate_when_memory_of_stopped_server_then_conflict() {
        let new = request(true);

        let err = new.validate(VmState::Stopped).unwrap_err();

        assert_eq!(err.kind(), crate::ErrorKind::Conflict);
    }

    #[test]
    fn validate_when_disk_only_of_stopped_server_then_ok() {
        let new = request(false);

        let result = new.validate(VmState::Stopped);

        assert!(result.is_ok());
    }

    #[test]
    fn validate_when_name_empty_then_invalid() {
        let mut new = request(false);
        new.name = " ".into();

        let err = new.validate(VmState::Active).unwrap_err();

        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    }

    #[test]
    fn method_when_unknown_then_invalid() {
        let parsed = RestoreMethod::parse("snapshot");

        assert_eq!(parsed.unwrap_err().kind(), crate::ErrorKind::InvalidInput);
    }
}
