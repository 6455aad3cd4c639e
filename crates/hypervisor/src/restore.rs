//! What a restore point asks of the hypervisor, and what it cost the guest.
//!
//! A restore point of a live VM is taken in one go: every disk listed goes on
//! in a new qcow2 overlay (its current file is never written again and *is*
//! the point's data), and optionally the RAM and device state at the same
//! instant are written to a state file. Reverting needs no new primitive:
//! [`Hypervisor::destroy`](crate::Hypervisor::destroy), then
//! [`Hypervisor::start_incoming`](crate::Hypervisor::start_incoming) (with
//! memory) or [`Hypervisor::start`](crate::Hypervisor::start) (disk-only) on
//! new overlays over the point's files.

use std::path::PathBuf;
use std::time::Duration;

/// Disk `disk_id` goes on in a new qcow2 at `overlay`, backed by its current top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOverlay {
    pub disk_id: String,
    pub overlay: PathBuf,
}

/// Disk `disk_id` is snapshotted natively by its storage driver (QMP
/// `blockdev-snapshot-internal-sync`: an RBD snapshot named `name`, taken by
/// QEMU, the image's exclusive-lock owner). The disk goes on writing in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeSnapshot {
    pub disk_id: String,
    pub name: String,
}

/// Where a memory state is written and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryState {
    /// A local file (written through `<file>.part`, renamed when whole).
    File(PathBuf),
    /// An RBD image, streamed through the `rbd` CLI: written by
    /// `rbd import - <pool>/<image>.part` then renamed to `<image>` (so an
    /// image of that name is always whole), read by `rbd export`.
    Rbd(RbdState),
}

/// An RBD image holding a memory state, and how to reach its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdState {
    pub pool: String,
    pub image: String,
    pub conf: PathBuf,
    pub user: String,
}

/// How a restore point went, as the guest felt it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PointTaken {
    /// Time the vCPUs were stopped (QMP `STOP` to `RESUME`, by QEMU's clock);
    /// zero when the guest never stopped.
    pub guest_pause: Duration,
    /// Whether QEMU reported a `STOP` at all while the point was taken.
    pub stopped: bool,
    /// From the request to the point being complete (state file written).
    pub total: Duration,
}

/// What to do with a qcow2 internal snapshot (QMP `snapshot-save`,
/// `snapshot-load`, `snapshot-delete` jobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalSnapshot {
    /// Saves every listed disk and the VM state (in the first disk) under
    /// the tag; the guest is paused while it runs.
    Save,
    /// Loads disks and VM state saved under the tag; the guest runs on
    /// from there if it was running.
    Load,
    /// Deletes the tag from every listed disk.
    Delete,
}
