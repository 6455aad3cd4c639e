//! Servers (Nova semantics): flavors, and the server state machine.
//!
//! A server has a `vm_state` (what it is), a `task_state` (what is being
//! done to it, at most one thing at a time) and a `power_state` (what the
//! hypervisor last said). The API `status` is derived from the first two.
//!
//! ```text
//!            create                     os-stop                os-start
//!  building ─────────▶ active ───────────────────▶ stopped ──────────▶ active
//!     │                 │  ▲ pause/unpause           ▲
//!     │ failure         │  └──────▶ paused           │ guest powers off / QEMU dies
//!     ▼                 │  suspend/resume            │
//!   error               └──────▶ suspended           active ──────────┘
//!
//!  any state ── delete ──▶ deleted          (each arrow runs under one task_state)
//! ```
//! A task is claimed by a compare-and-swap from `task_state = None`; a second
//! request while one runs gets 409.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};

use crate::{Error, ImageId, ProjectId, Result, ServerId, UserId};

/// The largest value of a flavor's sizes (a 32-bit integer in Nova).
pub const MAX_FLAVOR_FIELD: u64 = i32::MAX as u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    pub vcpus: u32,
    /// MiB.
    pub ram: u64,
    /// GiB.
    pub disk: u64,
    pub ephemeral: u64,
    pub swap: u64,
    pub is_public: bool,
    pub description: Option<String>,
    pub extra_specs: BTreeMap<String, String>,
}

impl Flavor {
    pub fn validate(&self) -> Result<()> {
        crate::identity::validate_name("flavor", &self.name)?;
        if self.name.trim().is_empty() {
            return Err(Error::invalid("A flavor needs a name."));
        }
        if self.id.is_empty()
            || self.id.len() > 255
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_. ".contains(c))
        {
            return Err(Error::invalid(
                "Flavor ids are 1 to 255 letters, digits, '-', '_', '.' or spaces.",
            ));
        }
        if self.vcpus == 0 || self.vcpus > 64 {
            return Err(Error::invalid("A flavor needs between 1 and 64 vcpus."));
        }
        if self.ram < 16 {
            return Err(Error::invalid("A flavor needs at least 16 MiB of RAM."));
        }
        // Nova's schema: every size is a 32-bit integer (so disk * GiB fits).
        for (field, value) in [
            ("ram", self.ram),
            ("disk", self.disk),
            ("OS-FLV-EXT-DATA:ephemeral", self.ephemeral),
            ("swap", self.swap),
        ] {
            if value > MAX_FLAVOR_FIELD {
                return Err(Error::invalid(format!(
                    "Invalid input for field/attribute {field}. Value: {value}. {value} is greater than the maximum of {MAX_FLAVOR_FIELD}"
                )));
            }
        }
        Ok(())
    }
}

macro_rules! string_enum {
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

string_enum!(
    /// What a server is.
    VmState {
        Building => "building",
        Active => "active",
        Stopped => "stopped",
        Paused => "paused",
        Suspended => "suspended",
        Error => "error",
        Deleted => "deleted",
    }
);

string_enum!(
    /// What is being done to a server.
    TaskState {
        Spawning => "spawning",
        PoweringOff => "powering-off",
        PoweringOn => "powering-on",
        Pausing => "pausing",
        Unpausing => "unpausing",
        Suspending => "suspending",
        Resuming => "resuming",
        Rebooting => "rebooting",
        RebootingHard => "rebooting_hard",
        Deleting => "deleting",
        ImageSnapshotPending => "image_snapshot_pending",
        ImagePendingUpload => "image_pending_upload",
        ImageUploading => "image_uploading",
        Rebuilding => "rebuilding",
        RestorePointCreating => "restore_point_creating",
        RestorePointReverting => "restore_point_reverting",
        RestorePointDeleting => "restore_point_deleting",
        AttachingVolume => "attaching_volume",
        DetachingVolume => "detaching_volume",
    }
);

/// Nova's numeric power states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerState {
    NoState = 0,
    Running = 1,
    Paused = 3,
    Shutdown = 4,
    Crashed = 6,
    Suspended = 7,
}

impl PowerState {
    pub fn from_code(code: i64) -> PowerState {
        match code {
            1 => PowerState::Running,
            3 => PowerState::Paused,
            4 => PowerState::Shutdown,
            6 => PowerState::Crashed,
            7 => PowerState::Suspended,
            _ => PowerState::NoState,
        }
    }
}

/// Why a server last failed, as Nova's `fault`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub code: u16,
    pub message: String,
    pub created: DateTime<Utc>,
}

impl Fault {
    /// The message as a non-admin sees it (Nova shows details to admins
    /// only): its first line, without host paths, at most 255 characters.
    pub fn public_message(&self) -> String {
        let first_line = self.message.lines().next().unwrap_or_default();
        let words: Vec<&str> = first_line
            .split_whitespace()
            .map(|w| if w.contains('/') { "[path]" } else { w })
            .collect();
        words.join(" ").chars().take(255).collect()
    }
}

/// The actions a user can ask of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAction {
    Stop,
    Start,
    Pause,
    Unpause,
    Suspend,
    Resume,
    RebootSoft,
    RebootHard,
    Delete,
    CreateImage,
    Rebuild,
}

impl ServerAction {
    /// The task this action runs under.
    pub fn task(self) -> TaskState {
        match self {
            ServerAction::Stop => TaskState::PoweringOff,
            ServerAction::Start => TaskState::PoweringOn,
            ServerAction::Pause => TaskState::Pausing,
            ServerAction::Unpause => TaskState::Unpausing,
            ServerAction::Suspend => TaskState::Suspending,
            ServerAction::Resume => TaskState::Resuming,
            ServerAction::RebootSoft => TaskState::Rebooting,
            ServerAction::RebootHard => TaskState::RebootingHard,
            ServerAction::Delete => TaskState::Deleting,
            ServerAction::CreateImage => TaskState::ImageSnapshotPending,
            ServerAction::Rebuild => TaskState::Rebuilding,
        }
    }

    /// The vm_states the action may start from (Nova's `check_instance_state`).
    pub fn allowed_from(self) -> &'static [VmState] {
        use VmState::*;
        match self {
            ServerAction::Stop => &[Active, Error],
            ServerAction::Start => &[Stopped],
            ServerAction::Pause => &[Active],
            ServerAction::Unpause => &[Paused],
            ServerAction::Suspend => &[Active],
            ServerAction::Resume => &[Suspended],
            ServerAction::RebootSoft => &[Active],
            ServerAction::RebootHard => &[Active, Stopped, Paused, Suspended, Error],
            ServerAction::Delete => &[Building, Active, Stopped, Paused, Suspended, Error],
            ServerAction::CreateImage => &[Active, Stopped, Paused, Suspended],
            ServerAction::Rebuild => &[Active, Stopped, Error],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ServerAction::Stop => "stop",
            ServerAction::Start => "start",
            ServerAction::Pause => "pause",
            ServerAction::Unpause => "unpause",
            ServerAction::Suspend => "suspend",
            ServerAction::Resume => "resume",
            ServerAction::RebootSoft => "reboot",
            ServerAction::RebootHard => "reboot (hard)",
            ServerAction::Delete => "delete",
            ServerAction::CreateImage => "createImage",
            ServerAction::Rebuild => "rebuild",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub id: ServerId,
    pub name: String,
    pub project_id: ProjectId,
    pub user_id: UserId,
    /// The image it booted from (None when booted from a volume).
    pub image_id: Option<ImageId>,
    pub flavor: Flavor,
    pub vm_state: VmState,
    pub task_state: Option<TaskState>,
    pub power_state: PowerState,
    pub progress: u8,
    pub fault: Option<Fault>,
    pub metadata: BTreeMap<String, String>,
    /// The keypair (of its user) it was created with.
    pub key_name: Option<String>,
    /// Nova's `accessIPv4`/`accessIPv6`: addresses the user gives, shown
    /// as given (IPv6 in its canonical form).
    pub access_ipv4: Option<String>,
    pub access_ipv6: Option<String>,
    /// Locked servers refuse actions from non-admins (409).
    pub locked: bool,
    /// Where the root disk lives in the pool.
    pub root_disk: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub launched_at: Option<DateTime<Utc>>,
}

impl Server {
    /// Nova's API `status`, from vm_state and task_state.
    pub fn status(&self) -> &'static str {
        match (self.vm_state, self.task_state) {
            (_, Some(TaskState::Deleting)) if self.vm_state != VmState::Deleted => {
                match self.vm_state {
                    VmState::Error => "ERROR",
                    _ => status_of(self.vm_state),
                }
            }
            (VmState::Active, Some(TaskState::Rebooting)) => "REBOOT",
            (
                VmState::Active | VmState::Stopped | VmState::Paused | VmState::Suspended,
                Some(TaskState::RebootingHard),
            ) => "HARD_REBOOT",
            (_, Some(TaskState::Rebuilding)) => "REBUILD",
            (state, _) => status_of(state),
        }
    }

    /// Checks that `action` may start now.
    pub fn check_action(&self, action: ServerAction) -> Result<()> {
        if let Some(task) = self.task_state {
            return Err(Error::conflict(format!(
                "Cannot '{}' server {} while it is in task_state {task}.",
                action.name(),
                self.id
            )));
        }
        if !action.allowed_from().contains(&self.vm_state) {
            return Err(Error::conflict(format!(
                "Cannot '{}' server {} while it is in vm_state {}.",
                action.name(),
                self.id,
                self.vm_state
            )));
        }
        Ok(())
    }
}

fn status_of(state: VmState) -> &'static str {
    match state {
        VmState::Building => "BUILD",
        VmState::Active => "ACTIVE",
        VmState::Stopped => "SHUTOFF",
        VmState::Paused => "PAUSED",
        VmState::Suspended => "SUSPENDED",
        VmState::Error => "ERROR",
        VmState::Deleted => "DELETED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn server(vm_state: VmState, task_state: Option<TaskState>) -> Server {
        let now = Utc::now();
        Server {
            id: ServerId::new(),
            name: "vm".into(),
            project_id: ProjectId::new(),
            user_id: UserId::new(),
            image_id: None,
            flavor: Flavor {
                id: "1".into(),
                name: "tiny".into(),
                vcpus: 1,
                ram: 256,
                disk: 1,
                ephemeral: 0,
                swap: 0,
                is_public: true,
                description: None,
                extra_specs: BTreeMap::new(),
            },
            vm_state,
            task_state,
            power_state: PowerState::NoState,
            progress: 0,
            fault: None,
            metadata: BTreeMap::new(),
            key_name: None,
            access_ipv4: None,
            access_ipv6: None,
            locked: false,
            root_disk: None,
            created_at: now,
            updated_at: now,
            launched_at: None,
        }
    }

    #[test]
    fn fault_public_message_when_paths_and_tool_output_then_hidden() {
        let fault = Fault {
            code: 500,
            message:
                "Cannot boot: qemu-img failed on /var/lib/snapstack/pool/x.qcow2\nstderr: boom"
                    .into(),
            created: Utc::now(),
        };

        assert_eq!(
            fault.public_message(),
            "Cannot boot: qemu-img failed on [path]"
        );
    }

    #[test]
    fn active_server_when_started_then_conflict() {
        let err = server(VmState::Active, None)
            .check_action(ServerAction::Start)
            .unwrap_err();

        assert_eq!(err.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn server_with_task_when_any_action_then_conflict() {
        let busy = server(VmState::Active, Some(TaskState::Suspending));

        let err = busy.check_action(ServerAction::Stop).unwrap_err();

        assert!(err.message().contains("suspending"));
    }

    #[test]
    fn stopped_server_when_started_then_allowed() {
        assert!(server(VmState::Stopped, None)
            .check_action(ServerAction::Start)
            .is_ok());
    }

    #[test]
    fn active_server_when_rebooting_hard_then_status_hard_reboot() {
        assert_eq!(
            server(VmState::Active, Some(TaskState::RebootingHard)).status(),
            "HARD_REBOOT"
        );
    }

    #[test]
    fn every_vm_state_when_shown_then_has_a_status() {
        for state in VmState::ALL {
            assert!(!server(*state, None).status().is_empty());
        }
    }

    #[test]
    fn flavor_when_zero_vcpus_then_invalid() {
        let mut f = server(VmState::Active, None).flavor;
        f.vcpus = 0;

        assert_eq!(f.validate().unwrap_err().kind(), ErrorKind::InvalidInput);
    }
}
