//! An in-memory [`Hypervisor`] for the unit tests of the layers above.
//!
//! It follows the same state diagram and idempotency rules as the QEMU driver, with no
//! process and no file: memory states "saved" by [`Hypervisor::save_memory`] are
//! remembered by path, and [`Hypervisor::start_incoming`] only accepts those. Tests can
//! make the next call of an operation fail ([`FakeHypervisor::fail_next`]) and make
//! things happen behind the caller's back ([`FakeHypervisor::crash`],
//! [`FakeHypervisor::guest_power_off`]).
//!
//! Guest agent: every running VM has one, unless [`FakeHypervisor::set_guest_agent`]
//! removed it; a paused VM's agent does not answer (`GuestAgentUnavailable`), like
//! QEMU's. [`FakeHypervisor::is_frozen`] tells whether a freeze is still in force. The
//! pause log records `pause`/`resume` calls.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::driver::Hypervisor;
use crate::error::{Error, ErrorKind, Result};
use crate::pauses::{PauseLog, PauseSpan};
use crate::restore::{DiskOverlay, InternalSnapshot, MemoryState, NativeSnapshot, PointTaken};
use crate::spec::{validate_name, DiskSpec, VmSpec};
use crate::status::{ShutoffReason, VmStatus};

/// The operations of [`Hypervisor`] that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    Start,
    StartIncoming,
    Shutdown,
    Reboot,
    Reset,
    Destroy,
    Undefine,
    Pause,
    Resume,
    SaveMemory,
    SnapshotDisk,
    FreezeFilesystems,
    ThawFilesystems,
    CreateRestorePoint,
    InternalSnapshot,
    StreamInto,
    AttachDisk,
    DetachDisk,
    AttachNic,
    DetachNic,
    SetNicLink,
}

/// In-memory hypervisor. See the module header.
#[derive(Debug, Default)]
pub struct FakeHypervisor {
    state: Mutex<FakeState>,
    /// Told of every file the "QEMU" creates (new tops, memory states).
    files: Mutex<Option<FileObserver>>,
}

/// Told the path of every file a fake VM creates, as a real QEMU would
/// (the new top of `blockdev-snapshot-sync`, a memory state): a fake pool
/// learns that way that a planned overlay exists.
pub type FileCreated = std::sync::Arc<dyn Fn(&Path) + Send + Sync>;

struct FileObserver(FileCreated);

impl std::fmt::Debug for FileObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileObserver")
    }
}

#[derive(Debug, Default)]
struct FakeState {
    vms: BTreeMap<String, FakeVm>,
    /// Memory states written by `save_memory`: path → VM name.
    saved: HashMap<PathBuf, String>,
    /// Injected failures, consumed by the next call of each operation.
    failures: HashMap<Operation, ErrorKind>,
    /// VMs whose guest runs no agent.
    without_agent: HashSet<String>,
}

#[derive(Debug)]
struct FakeVm {
    spec: VmSpec,
    status: VmStatus,
    console: String,
    /// A guest-agent freeze is in force.
    frozen: bool,
    pauses: PauseLog,
}

impl FakeHypervisor {
    /// A hypervisor with no VM.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `observer` with the path of every file this hypervisor's VMs
    /// create from now on (wire it to `storage::fake::FakePool::file_created`).
    pub fn on_file_created(&self, observer: FileCreated) {
        *self
            .files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(FileObserver(observer));
    }

    /// Reports files created (outside the state's lock).
    fn created(&self, paths: &[&Path]) {
        let observer = self
            .files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(|o| o.0.clone());
        if let Some(observer) = observer {
            for path in paths {
                observer(path);
            }
        }
    }

    /// Makes the next call of `operation` fail with an error of `kind`, changing nothing.
    pub fn fail_next(&self, operation: Operation, kind: ErrorKind) {
        self.lock().failures.insert(operation, kind);
    }

    /// Forgets every injected failure not consumed yet.
    pub fn clear_failures(&self) {
        self.lock().failures.clear();
    }

    /// Simulates QEMU dying: a live VM becomes `Shutoff { Crashed }`.
    pub fn crash(&self, name: &str, detail: &str) {
        if let Some(vm) = self.lock().live_vm(name) {
            let detail = detail.to_string();
            vm.status = shutoff(ShutoffReason::Crashed { detail });
        }
    }

    /// Simulates the guest powering itself off: a live VM becomes `Shutoff { Shutdown }`.
    pub fn guest_power_off(&self, name: &str) {
        if let Some(vm) = self.lock().live_vm(name) {
            vm.status = shutoff(ShutoffReason::Shutdown);
        }
    }

    /// Gives the guest of VM `name` a guest agent (the default) or takes it away: without
    /// one, freeze and thaw fail with `GuestAgentUnavailable`.
    pub fn set_guest_agent(&self, name: &str, present: bool) {
        let mut state = self.lock();
        if present {
            state.without_agent.remove(name);
        } else {
            state.without_agent.insert(name.to_string());
        }
    }

    /// True while a freeze of VM `name`'s guest is in force (not thawed, not rebooted).
    pub fn is_frozen(&self, name: &str) -> bool {
        self.lock().vms.get(name).is_some_and(|vm| vm.frozen)
    }

    /// The spec the VM was last started with, with the disks it has now (hot-plugged
    /// ones added, unplugged ones gone, snapshots' overlays as sources).
    pub fn spec(&self, name: &str) -> Option<VmSpec> {
        self.lock().vms.get(name).map(|vm| vm.spec.clone())
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the state after consuming an injected failure of `operation`, if any.
    fn begin(&self, operation: Operation) -> Result<MutexGuard<'_, FakeState>> {
        let mut state = self.lock();
        match state.failures.remove(&operation) {
            Some(kind) => Err(Error::new(
                kind,
                format!("injected failure of {operation:?}"),
            )),
            None => Ok(state),
        }
    }

    fn boot(state: &mut FakeState, spec: &VmSpec, how: &str) {
        let vm = state
            .vms
            .entry(spec.name.clone())
            .or_insert_with(|| FakeVm {
                spec: spec.clone(),
                status: VmStatus::Missing,
                console: String::new(),
                frozen: false,
                pauses: PauseLog::default(),
            });
        if is_live(&vm.status) {
            return;
        }
        vm.spec = spec.clone();
        vm.status = VmStatus::Running;
        vm.frozen = false;
        vm.console
            .push_str(&format!("[fake] {} {how}\n", spec.name));
    }
}

impl FakeState {
    fn live_vm(&mut self, name: &str) -> Option<&mut FakeVm> {
        self.vms.get_mut(name).filter(|vm| is_live(&vm.status))
    }

    /// The VM, which must exist and be live.
    fn running_vm(&mut self, name: &str) -> Result<&mut FakeVm> {
        let vm = self
            .vms
            .get_mut(name)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no VM named {name}")))?;
        if is_live(&vm.status) {
            Ok(vm)
        } else {
            Err(Error::new(
                ErrorKind::NotRunning,
                format!("VM {name} is shut off"),
            ))
        }
    }

    /// The VM, whose guest agent must answer: live, running, with an agent.
    fn agent_vm(&mut self, name: &str) -> Result<&mut FakeVm> {
        let has_agent = !self.without_agent.contains(name);
        let vm = self.running_vm(name)?;
        if !has_agent || vm.status != VmStatus::Running {
            return Err(Error::new(
                ErrorKind::GuestAgentUnavailable,
                format!("no guest agent answers in VM {name}"),
            ));
        }
        Ok(vm)
    }

    /// Shuts a live VM off for `reason`; a stopped or unknown one is left alone.
    fn stop(&mut self, name: &str, reason: ShutoffReason) {
        if let Some(vm) = self.live_vm(name) {
            vm.status = shutoff(reason);
            vm.frozen = false;
            // As with QEMU: a pause still open ends when the VM stops.
            vm.pauses.resumed(std::time::SystemTime::now());
        }
    }
}

fn is_live(status: &VmStatus) -> bool {
    matches!(status, VmStatus::Running | VmStatus::Paused { .. })
}

fn shutoff(reason: ShutoffReason) -> VmStatus {
    VmStatus::Shutoff { reason }
}

#[async_trait]
impl Hypervisor for FakeHypervisor {
    async fn start(&self, spec: &VmSpec) -> Result<()> {
        spec.validate()?;
        let mut state = self.begin(Operation::Start)?;
        Self::boot(&mut state, spec, "booted");
        Ok(())
    }

    async fn start_incoming(&self, spec: &VmSpec, state_file: &Path) -> Result<()> {
        spec.validate()?;
        let mut state = self.begin(Operation::StartIncoming)?;
        if !state.saved.contains_key(state_file) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("no memory state at {}", state_file.display()),
            ));
        }
        Self::boot(&mut state, spec, "restored");
        Ok(())
    }

    async fn status(&self, name: &str) -> Result<VmStatus> {
        validate_name(name)?;
        let state = self.lock();
        Ok(state
            .vms
            .get(name)
            .map_or(VmStatus::Missing, |vm| vm.status.clone()))
    }

    async fn shutdown(&self, name: &str, _timeout: Duration) -> Result<()> {
        let mut state = self.begin(Operation::Shutdown)?;
        state.stop(name, ShutoffReason::Shutdown);
        Ok(())
    }

    async fn reboot(&self, name: &str, _timeout: Duration) -> Result<()> {
        let mut state = self.begin(Operation::Reboot)?;
        let vm = state.running_vm(name)?;
        vm.console.push_str(&format!("[fake] {name} rebooted\n"));
        Ok(())
    }

    async fn reset(&self, name: &str) -> Result<()> {
        let mut state = self.begin(Operation::Reset)?;
        let vm = state.running_vm(name)?;
        vm.console.push_str(&format!("[fake] {name} reset\n"));
        Ok(())
    }

    async fn destroy(&self, name: &str) -> Result<()> {
        let mut state = self.begin(Operation::Destroy)?;
        state.stop(name, ShutoffReason::Destroyed);
        Ok(())
    }

    async fn undefine(&self, name: &str) -> Result<()> {
        let mut state = self.begin(Operation::Undefine)?;
        state.vms.remove(name);
        Ok(())
    }

    async fn pause(&self, name: &str) -> Result<()> {
        let mut state = self.begin(Operation::Pause)?;
        let vm = state.running_vm(name)?;
        vm.status = VmStatus::Paused {
            reason: "paused".to_string(),
        };
        vm.pauses.stopped(std::time::SystemTime::now());
        Ok(())
    }

    async fn resume(&self, name: &str) -> Result<()> {
        let mut state = self.begin(Operation::Resume)?;
        let vm = state.running_vm(name)?;
        vm.status = VmStatus::Running;
        vm.pauses.resumed(std::time::SystemTime::now());
        Ok(())
    }

    async fn save_memory(&self, name: &str, state_file: &Path) -> Result<()> {
        let mut state = self.begin(Operation::SaveMemory)?;
        let saved = ShutoffReason::Saved {
            state_file: state_file.to_path_buf(),
        };
        if let Some(vm) = state.vms.get(name) {
            if vm.status == shutoff(saved.clone()) {
                return Ok(());
            }
        }
        state.running_vm(name)?;
        state.stop(name, saved);
        state
            .saved
            .insert(state_file.to_path_buf(), name.to_string());
        drop(state);
        self.created(&[state_file]);
        Ok(())
    }

    async fn console_log(&self, name: &str, max_lines: Option<usize>) -> Result<String> {
        let state = self.lock();
        let vm = state
            .vms
            .get(name)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no VM named {name}")))?;
        Ok(crate::console::last_lines(&vm.console, max_lines).to_string())
    }

    async fn list(&self) -> Result<Vec<String>> {
        Ok(self.lock().vms.keys().cloned().collect())
    }

    async fn snapshot_disk(&self, name: &str, disk_id: &str, overlay: &Path) -> Result<()> {
        let mut state = self.begin(Operation::SnapshotDisk)?;
        let vm = state.running_vm(name)?;
        let disk = vm
            .spec
            .disks
            .iter_mut()
            .find(|d| d.id == disk_id)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!("VM {name} has no disk {disk_id}"),
                )
            })?;
        let created = disk.source != crate::DiskSource::File(overlay.to_path_buf());
        disk.source = crate::DiskSource::File(overlay.to_path_buf());
        drop(state);
        if created {
            self.created(&[overlay]);
        }
        Ok(())
    }

    async fn create_restore_point(
        &self,
        name: &str,
        disks: &[DiskOverlay],
        memory: Option<&Path>,
    ) -> Result<PointTaken> {
        let mut state = self.begin(Operation::CreateRestorePoint)?;
        let vm = state.running_vm(name)?;
        if memory.is_some() && vm.status != VmStatus::Running {
            return Err(Error::new(
                ErrorKind::NotRunning,
                format!("VM {name} must be running to save its memory"),
            ));
        }
        let mut spec = vm.spec.clone();
        for wanted in disks {
            let disk = spec
                .disks
                .iter_mut()
                .find(|d| d.id == wanted.disk_id)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidArgument,
                        format!("VM {name} has no disk {}", wanted.disk_id),
                    )
                })?;
            disk.source = crate::DiskSource::File(wanted.overlay.clone());
        }
        vm.spec = spec;
        if let Some(file) = memory {
            state.saved.insert(file.to_path_buf(), name.to_string());
        }
        drop(state);
        let mut created: Vec<&Path> = disks.iter().map(|d| d.overlay.as_path()).collect();
        created.extend(memory);
        self.created(&created);
        Ok(PointTaken::default())
    }

    /// Reports every snapshot taken as a file `<disk file>@<name>` (and the
    /// memory state's file), so that a fake pool that snapshots natively
    /// learns of them.
    async fn create_native_point(
        &self,
        name: &str,
        disks: &[NativeSnapshot],
        memory: Option<&MemoryState>,
    ) -> Result<PointTaken> {
        let mut state = self.begin(Operation::CreateRestorePoint)?;
        let vm = state.running_vm(name)?;
        if memory.is_some() && vm.status != VmStatus::Running {
            return Err(Error::new(
                ErrorKind::NotRunning,
                format!("VM {name} must be running to save its memory"),
            ));
        }
        let mut created = Vec::with_capacity(disks.len() + 1);
        for wanted in disks {
            let source = vm
                .spec
                .disks
                .iter()
                .find(|d| d.id == wanted.disk_id)
                .map(|d| &d.source);
            match source {
                Some(crate::DiskSource::File(path)) => {
                    created.push(PathBuf::from(format!("{}@{}", path.display(), wanted.name)))
                }
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!("VM {name} has no disk {} to snapshot", wanted.disk_id),
                    ))
                }
            }
        }
        if let Some(MemoryState::File(file)) = memory {
            state.saved.insert(file.clone(), name.to_string());
            created.push(file.clone());
        }
        drop(state);
        let paths: Vec<&Path> = created.iter().map(PathBuf::as_path).collect();
        self.created(&paths);
        Ok(PointTaken::default())
    }

    async fn internal_snapshot(
        &self,
        name: &str,
        _disk_ids: &[String],
        _op: InternalSnapshot,
        _tag: &str,
    ) -> Result<PointTaken> {
        let mut state = self.begin(Operation::InternalSnapshot)?;
        state.running_vm(name)?;
        Ok(PointTaken::default())
    }

    async fn stream_into(&self, name: &str, _into: &Path, _base: &Path) -> Result<()> {
        let mut state = self.begin(Operation::StreamInto)?;
        state.running_vm(name).map(drop)
    }

    async fn active_disk_file(&self, name: &str, disk_id: &str) -> Result<PathBuf> {
        let mut state = self.lock();
        let vm = state.running_vm(name)?;
        match vm
            .spec
            .disks
            .iter()
            .find(|d| d.id == disk_id)
            .map(|d| &d.source)
        {
            Some(crate::DiskSource::File(path)) => Ok(path.clone()),
            _ => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("VM {name} has no file disk {disk_id}"),
            )),
        }
    }

    async fn attach_disk(&self, name: &str, disk: &DiskSpec) -> Result<()> {
        disk.validate()?;
        let mut state = self.begin(Operation::AttachDisk)?;
        let vm = state.running_vm(name)?;
        if !vm.spec.disks.iter().any(|d| d.id == disk.id) {
            vm.spec.disks.push(disk.clone());
        }
        Ok(())
    }

    async fn detach_disk(&self, name: &str, disk_id: &str, _timeout: Duration) -> Result<()> {
        let mut state = self.begin(Operation::DetachDisk)?;
        let vm = state.running_vm(name)?;
        vm.spec.disks.retain(|d| d.id != disk_id);
        Ok(())
    }

    async fn attach_nic(&self, name: &str, nic: &crate::spec::NicSpec) -> Result<()> {
        nic.validate()?;
        let mut state = self.begin(Operation::AttachNic)?;
        let vm = state.running_vm(name)?;
        if !vm.spec.nics.iter().any(|n| n.id == nic.id) {
            vm.spec.nics.push(nic.clone());
        }
        Ok(())
    }

    async fn detach_nic(&self, name: &str, nic_id: &str) -> Result<()> {
        let mut state = self.begin(Operation::DetachNic)?;
        let vm = state.running_vm(name)?;
        vm.spec.nics.retain(|n| n.id != nic_id);
        Ok(())
    }

    async fn set_nic_link(&self, name: &str, nic_id: &str, _up: bool) -> Result<()> {
        let mut state = self.begin(Operation::SetNicLink)?;
        let vm = state.running_vm(name)?;
        if vm.spec.nics.iter().any(|n| n.id == nic_id) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::NotFound,
                format!("VM {name} has no NIC {nic_id}"),
            ))
        }
    }

    async fn freeze_filesystems(&self, name: &str, _timeout: Duration) -> Result<u32> {
        let mut state = self.begin(Operation::FreezeFilesystems)?;
        let vm = state.agent_vm(name)?;
        if vm.frozen {
            return Err(Error::new(
                ErrorKind::GuestAgentFailed,
                format!("the guest of VM {name} is already frozen"),
            ));
        }
        vm.frozen = true;
        Ok(u32::try_from(vm.spec.disks.len()).unwrap_or(u32::MAX))
    }

    async fn thaw_filesystems(&self, name: &str) -> Result<u32> {
        let mut state = self.begin(Operation::ThawFilesystems)?;
        let vm = state.agent_vm(name)?;
        let thawed = if std::mem::take(&mut vm.frozen) {
            vm.spec.disks.len()
        } else {
            0
        };
        Ok(u32::try_from(thawed).unwrap_or(u32::MAX))
    }

    async fn pause_log(&self, name: &str) -> Result<Vec<PauseSpan>> {
        let state = self.lock();
        let vm = state
            .vms
            .get(name)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no VM named {name}")))?;
        Ok(vm.pauses.spans())
    }
}

#[cfg(test)]
mod tests;
