//! The driver trait the layers above use to run VMs, whatever runs them.
//!
//! Every operation names a VM by its [`VmSpec::name`]. Operations are idempotent where a
//! retry must be harmless (a saga step re-run after a crash): starting a running VM,
//! pausing a paused one, shutting down or destroying a stopped one all succeed without
//! doing anything. Operations that need a live VM fail with
//! [`ErrorKind::NotRunning`](crate::ErrorKind::NotRunning) on a shut-off one and
//! [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) on an unknown one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::error::{Error, ErrorKind};
use crate::restore::{DiskOverlay, InternalSnapshot, MemoryState, NativeSnapshot, PointTaken};
use crate::spec::{DiskSpec, NicSpec, VmSpec};
use crate::status::VmStatus;

/// Runs VMs. Implementations: [`QemuHypervisor`](crate::QemuHypervisor) and
/// [`FakeHypervisor`](crate::FakeHypervisor).
#[async_trait]
pub trait Hypervisor: Send + Sync {
    /// Boots the VM. A VM that is already live is left alone.
    async fn start(&self, spec: &VmSpec) -> Result<()>;

    /// Starts the VM from a memory state written by [`Hypervisor::save_memory`] with
    /// the same spec (disks unchanged since), and lets it run. A VM that is already live
    /// is left alone. The state file is kept.
    async fn start_incoming(&self, spec: &VmSpec, state_file: &Path) -> Result<()>;

    /// What the VM is doing now. Never fails for an unknown name: [`VmStatus::Missing`].
    async fn status(&self, name: &str) -> Result<VmStatus>;

    /// Asks the guest to power off (ACPI), waits up to `timeout`, then kills it.
    async fn shutdown(&self, name: &str, timeout: Duration) -> Result<()>;

    /// Soft reboot: asks the guest to power off (ACPI), waits up to `timeout` for it,
    /// then resets and runs it (a power cycle that keeps the VM's processes and
    /// sockets). A guest that ignores the request is reset anyway.
    async fn reboot(&self, name: &str, timeout: Duration) -> Result<()>;

    /// Hard reboot: resets the VM at once, like its reset button.
    async fn reset(&self, name: &str) -> Result<()>;

    /// Kills the VM at once. Succeeds on a VM that is not running.
    async fn destroy(&self, name: &str) -> Result<()>;

    /// Destroys the VM and forgets it (its console log too): afterwards it is
    /// [`VmStatus::Missing`]. Succeeds on an unknown VM.
    async fn undefine(&self, name: &str) -> Result<()>;

    /// Stops the vCPUs.
    async fn pause(&self, name: &str) -> Result<()>;

    /// Runs the vCPUs again.
    async fn resume(&self, name: &str) -> Result<()>;

    /// Pauses the VM, writes its memory and device state to `state_file`, and stops it
    /// (as `virsh managedsave`): the VM ends `Shutoff { Saved }`. Succeeds without doing
    /// anything if the VM was already saved to this file.
    async fn save_memory(&self, name: &str, state_file: &Path) -> Result<()>;

    /// The serial console output, all of it or its last `max_lines` lines.
    async fn console_log(&self, name: &str, max_lines: Option<usize>) -> Result<String>;

    /// Bounds the console logs on disk to their configured cap, keeping their
    /// tails (called periodically; a driver without logs on disk does nothing).
    async fn trim_console_logs(&self) -> Result<()> {
        Ok(())
    }

    /// The names of every VM this hypervisor knows, live or shut off, sorted.
    async fn list(&self) -> Result<Vec<String>>;

    /// Live external snapshot of disk `disk_id` of a live VM, without a
    /// pause: QEMU creates a qcow2 at `overlay` whose backing file is the
    /// disk's current top (by absolute path), and writes go there from now
    /// on; the old top is never written again.
    async fn snapshot_disk(&self, name: &str, disk_id: &str, overlay: &Path) -> Result<()>;

    /// Restore point of a live VM: every disk in `disks` goes on in its new
    /// overlay at one instant (one transaction, no guest pause); with
    /// `memory`, the RAM and device state at that same instant are written to
    /// that file (the VM must be running; it is paused for milliseconds).
    /// The old tops are never written again: they are the point's data.
    async fn create_restore_point(
        &self,
        name: &str,
        disks: &[DiskOverlay],
        memory: Option<&Path>,
    ) -> Result<PointTaken>;

    /// Restore point of a live VM on disks its storage driver snapshots
    /// natively (RBD): one `transaction` of `blockdev-snapshot-internal-sync`
    /// actions, so every disk is cut at one instant without a guest pause;
    /// with `memory`, the VM is stopped first and the RAM and device state
    /// of that instant are written there (as for
    /// [`create_restore_point`](Hypervisor::create_restore_point)). An
    /// [`MemoryState::Rbd`] target is stored as `<image>.part` and renamed to
    /// `<image>` when whole, before the call returns.
    async fn create_native_point(
        &self,
        name: &str,
        _disks: &[NativeSnapshot],
        _memory: Option<&MemoryState>,
    ) -> Result<PointTaken> {
        Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("VM {name}: this hypervisor cannot snapshot disks natively"),
        ))
    }

    /// [`start_incoming`](Hypervisor::start_incoming) from a memory state
    /// wherever it is kept.
    async fn start_incoming_from(&self, spec: &VmSpec, state: &MemoryState) -> Result<()> {
        match state {
            MemoryState::File(path) => self.start_incoming(spec, path).await,
            MemoryState::Rbd(rbd) => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "VM {}: this hypervisor cannot load a memory state from RBD ({}/{})",
                    spec.name, rbd.pool, rbd.image
                ),
            )),
        }
    }

    /// qcow2 internal snapshot `tag` of the current tops of `disk_ids` of a
    /// live VM (with the VM state in the first one): save, load or delete.
    /// The guest is paused while a save or load runs; a running guest runs
    /// on afterwards.
    async fn internal_snapshot(
        &self,
        name: &str,
        disk_ids: &[String],
        op: InternalSnapshot,
        tag: &str,
    ) -> Result<PointTaken>;

    /// `block-stream` job on a live VM: the data of the files between `into`
    /// and `base` in one of its disk chains is copied into `into`, whose
    /// backing file becomes `base`; what the guest (and anything reading
    /// `into`) sees does not change. `into` may be the top or an inner file.
    async fn stream_into(&self, name: &str, into: &Path, base: &Path) -> Result<()>;

    /// The file disk `disk_id` of a live VM currently writes to.
    async fn active_disk_file(&self, name: &str, disk_id: &str) -> Result<PathBuf>;

    /// Quiesces a running guest through its QEMU guest agent (`guest-fsfreeze-freeze`):
    /// the guest flushes and stops writing until [`Hypervisor::thaw_filesystems`].
    /// Returns how many filesystems the agent froze. `timeout` bounds the freeze itself;
    /// a guest with no agent fails within a few seconds with
    /// [`ErrorKind::GuestAgentUnavailable`](crate::ErrorKind::GuestAgentUnavailable)
    /// (nothing frozen); any other failure may leave the guest partly frozen: thaw it.
    async fn freeze_filesystems(&self, name: &str, timeout: Duration) -> Result<u32>;

    /// Thaws what [`Hypervisor::freeze_filesystems`] froze; harmless on a guest that is
    /// not frozen (returns 0). Returns how many filesystems were thawed. Fails with
    /// `GuestAgentUnavailable` when no agent answers, like the freeze: call it after
    /// every freeze that did not fail with that kind, whatever happened in between.
    async fn thaw_filesystems(&self, name: &str) -> Result<u32>;

    /// Every interval during which the VM's vCPUs were stopped, oldest first, as far as
    /// this driver saw them (see [`PauseSpan`](crate::PauseSpan)).
    async fn pause_log(&self, name: &str) -> Result<Vec<crate::PauseSpan>>;

    /// Hot-plugs `disk` into a live VM (running or paused): its block nodes, then a
    /// virtio-blk device `<id>-dev` on a free PCIe port; the guest sees a new disk.
    /// The disk is then named by its id like a disk given at start (block operations,
    /// restore points). Succeeds without doing anything if the disk is already there.
    /// The next start takes the disks of the spec it is given.
    async fn attach_disk(&self, name: &str, disk: &DiskSpec) -> Result<()>;

    /// Unplugs disk `disk_id` from a live VM: asks the guest to release the device,
    /// waits up to `timeout` for it (a paused guest cannot answer: it times out), then
    /// removes its block nodes, so its files are no longer open. Succeeds without doing
    /// anything if the VM has no such disk.
    async fn detach_disk(&self, name: &str, disk_id: &str, timeout: Duration) -> Result<()>;

    /// Hot-plugs `nic` into a live VM (running or paused): a tap netdev on its tap and a
    /// virtio-net device `<id>-dev` on a free PCIe port; the guest sees a new NIC. The
    /// NIC is recorded in the VM's spec, so a memory state saved afterwards restores
    /// with it. Succeeds without doing anything if the NIC is already there.
    async fn attach_nic(&self, name: &str, nic: &NicSpec) -> Result<()>;

    /// Unplugs NIC `nic_id` from a live VM: asks the guest to release the device, waits
    /// for it, then removes the netdev (the tap stays, the network plane owns it).
    /// Succeeds without doing anything if the VM has no such NIC.
    async fn detach_nic(&self, name: &str, nic_id: &str) -> Result<()>;

    /// Sets the link of NIC `nic_id` of a live VM down or up, as a cable pulled and
    /// plugged back: the guest sees the carrier go and come. The guest reads the link
    /// state when it handles the change: leave the link down long enough for it to
    /// notice (seconds under TCG), or it sees no change. (The test guest does not yet
    /// ask DHCP again when its carrier comes back.)
    /// Fails with `NotFound` when the VM has no such NIC.
    async fn set_nic_link(&self, name: &str, nic_id: &str, up: bool) -> Result<()>;
}
