//! What a VM is doing, as seen by [`Hypervisor::status`](crate::Hypervisor::status).
//!
//! ```text
//!                start, start_incoming          pause
//!   Missing ─────────────────────────▶ Running ─────────▶ Paused
//!      ▲                               │  ▲  ◀───────────  │
//!      │ undefine                      │  │     resume     │
//!      │                               ▼  │ start          ▼
//!      └────────────────────────── Shutoff{reason} ◀───────┘
//!
//!   reason:  shutdown → Shutdown (or Destroyed if the guest ignores it)
//!            destroy → Destroyed      save_memory → Saved { state_file }
//!            guest powers off → Shutdown    QEMU dies unasked → Crashed { detail }
//! ```

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The observed state of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmStatus {
    /// vCPUs run.
    Running,
    /// QEMU is alive but the vCPUs do not run; `reason` is QEMU's run state
    /// (`paused`, `io-error`, `inmigrate`, `postmigrate`, `internal-error`, …).
    Paused { reason: String },
    /// No QEMU process (or a guest that powered itself off).
    Shutoff { reason: ShutoffReason },
    /// No VM of that name.
    Missing,
}

/// Why a VM is shut off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ShutoffReason {
    /// The guest powered off (by itself or after `shutdown`'s ACPI request).
    Shutdown,
    /// Killed by `destroy`, or by `shutdown` when the guest ignored the ACPI request.
    Destroyed,
    /// `save_memory` wrote the memory state to `state_file`, then QEMU quit.
    Saved { state_file: PathBuf },
    /// QEMU exited without being asked to (killed, crashed, failed restore).
    Crashed { detail: String },
}

impl fmt::Display for ShutoffReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shutdown => f.write_str("shut down"),
            Self::Destroyed => f.write_str("destroyed"),
            Self::Saved { state_file } => {
                write!(f, "memory state saved to {}", state_file.display())
            }
            Self::Crashed { detail } => write!(f, "crashed: {detail}"),
        }
    }
}
