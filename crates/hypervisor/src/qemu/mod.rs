//! The QEMU driver: one `qemu-system-x86_64` per VM, supervised through its run
//! directory and its QMP socket.
//!
//! Nothing about a VM lives only in memory: its run directory (see [`run_dir`]) holds
//! the spec, the monitor socket, the pid file, the console and QEMU's own log, and the
//! reason it was stopped. QEMU runs detached from the service (own session, no pipe),
//! so a restarted service finds its VMs with [`Hypervisor::list`] and reattaches to
//! their monitors on first use. This instance keeps only caches: one QMP connection per
//! VM (QEMU serves one client per socket; [`QemuHypervisor::qmp`] hands out clones of
//! it) and the exit status of the QEMUs it spawned itself.
//!
//! Status, from what is observed:
//!
//! ```text
//! no spec.json                                  → Missing
//! no live QEMU (pid file + /proc cmdline)       → Shutoff { shutoff.json, or Crashed }
//! QEMU run state running                        → Running
//! QEMU run state shutdown (guest powered off;   → Shutoff { Shutdown }, after recording
//!   -no-shutdown keeps QEMU alive)                it and quitting QEMU
//! any other run state                           → Paused { reason: run state }
//! ```
//!
//! Every stop we cause writes `shutoff.json` *before* stopping QEMU, so a QEMU that is
//! gone without one died unasked (`Crashed`, with its exit status when this instance
//! spawned it, and the last line QEMU logged).
//!
//! Stopping QEMU (stop after the power-button timeout, destroy, delete) never starts
//! with SIGKILL: writes the guest made are acknowledged once they are in QEMU, and
//! some of what makes them durable (qcow2 mappings and refcounts in QEMU's metadata
//! caches, librbd's cache) lives only in QEMU's memory until a flush. So QEMU is asked
//! to `quit` on its monitor, or sent SIGTERM when the monitor does not answer (as
//! libvirt's destroy does); either way it flushes and closes its block devices before
//! it exits. Only a QEMU still there after [`QemuConfig::exit_timeout`] gets SIGKILL
//! (its unflushed writes are then lost, and the driver logs it).
//!
//! Reboots: [`Hypervisor::reset`] is `system_reset` (hard). [`Hypervisor::reboot`] is a
//! power cycle as libvirt's "fake reboot": ACPI power-off request, wait for the guest to
//! power off (QEMU stays, thanks to `-no-shutdown`), then `system_reset` + `cont`; a
//! guest that ignores ACPI gets `system_reset` after the timeout. Reboots the guest
//! starts itself are handled inside QEMU.
//!
//! Operations that change a VM hold its operation lock, one at a time; `status` does not
//! wait for it, and `destroy` ignores it so that it can always interrupt a stuck one.
//! Guest-agent operations (see [`agent`]) hold the VM's agent lock instead.
//!
//! Every monitor connection feeds the VM's pause log (see [`pauses`]) from its `STOP`
//! and `RESUME` events.

mod agent;
mod block;
mod command_line;
mod hotplug;
mod jobs;
mod memory_state;
mod migration;
mod nic;
mod pauses;
mod process;
mod restore;
mod run_dir;
mod stop;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use qmp::{Client, RunState};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Child;
use tokio::time::Instant;

use crate::console;
use crate::driver::Hypervisor;
use crate::error::{Error, ErrorKind, Result};
use crate::restore::{DiskOverlay, InternalSnapshot, MemoryState, NativeSnapshot, PointTaken};
use crate::spec::{utf8_path, validate_name, VmSpec};
use crate::status::{ShutoffReason, VmStatus};
use run_dir::RunDir;

pub use agent::{
    SYNC_TIMEOUT as GUEST_AGENT_SYNC_TIMEOUT, THAW_TIMEOUT as GUEST_AGENT_THAW_TIMEOUT,
};
pub use command_line::STORAGE_NODE_SUFFIX;

/// How much of the console log [`Hypervisor::console_log`] reads at most (its end).
pub const CONSOLE_LOG_LIMIT: u64 = 4 << 20;
/// Marker written to `qemu.log` before each start; QEMU's messages follow it.
const LOG_START_MARKER: &str = "--- snapstack: starting";
/// Longest unix socket path (`sun_path` is 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;
/// How often to look again while waiting for QEMU to come up.
const START_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Default of [`QemuConfig::exit_timeout`]: a QEMU flushing a qcow2 metadata cache or
/// an RBD cache onto a busy host gets this long before SIGKILL.
pub const DEFAULT_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// Emulation; works everywhere (KVM hangs guests on the project's machines).
    #[default]
    Tcg,
    /// Hardware virtualisation with `-cpu host`.
    Kvm,
}

/// Settings of the QEMU driver.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// The QEMU binary, found in `PATH` unless absolute.
    pub binary: PathBuf,
    /// Parent of the VMs' run directories.
    pub run_dir: PathBuf,
    pub accel: Accel,
    /// Machine type (`q35`, `pc`, …).
    pub machine: String,
    /// How long QEMU may take to open its monitor.
    pub start_timeout: Duration,
    /// How long one monitor command (or connecting) may take.
    pub monitor_timeout: Duration,
    /// How long QEMU may take to flush and close its disks and exit after `quit` or
    /// SIGTERM before it gets SIGKILL; also how long it may take to go after SIGKILL.
    pub exit_timeout: Duration,
    /// How long saving or loading a memory state may take.
    pub migration_timeout: Duration,
    /// The network namespace QEMU runs in (`ip netns` name), where the network plane
    /// keeps the taps of the VMs' NICs; `None`: the service's own.
    pub netns: Option<String>,
    /// How long the guest may take to release a NIC being unplugged.
    pub nic_unplug_timeout: Duration,
    /// Bytes of each console log kept on disk (its tail); at least 4 KiB.
    pub console_log_cap: u64,
}

impl QemuConfig {
    /// Defaults: `qemu-system-x86_64`, TCG, `q35`.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: PathBuf::from("qemu-system-x86_64"),
            run_dir: run_dir.into(),
            accel: Accel::Tcg,
            machine: "q35".to_string(),
            start_timeout: Duration::from_secs(30),
            monitor_timeout: Duration::from_secs(10),
            exit_timeout: DEFAULT_EXIT_TIMEOUT,
            migration_timeout: Duration::from_secs(600),
            netns: None,
            nic_unplug_timeout: Duration::from_secs(30),
            console_log_cap: CONSOLE_LOG_LIMIT,
        }
    }
}

/// The QEMU implementation of [`Hypervisor`]. See the module header.
#[derive(Debug)]
pub struct QemuHypervisor {
    config: QemuConfig,
    vms: Mutex<HashMap<String, Arc<Vm>>>,
}

/// What this instance knows of one VM besides its run directory.
#[derive(Debug)]
struct Vm {
    name: String,
    dir: RunDir,
    /// Held by every operation that changes the VM.
    op: tokio::sync::Mutex<()>,
    /// The one QMP connection to this VM's QEMU.
    monitor: tokio::sync::Mutex<Option<Client>>,
    /// The QEMU this instance spawned last, and how it ended.
    child: Arc<Mutex<ChildRecord>>,
    /// Held by guest-agent operations (one agent client at a time).
    agent: tokio::sync::Mutex<()>,
    /// STOP/RESUME spans seen on the monitor.
    pauses: pauses::SharedPauseLog,
}

#[derive(Debug, Default)]
struct ChildRecord {
    spawned: Option<i32>,
    exited: Option<(i32, ExitStatus)>,
}

/// What [`QemuHypervisor::observe`] found.
enum Observed {
    Missing,
    Gone,
    Live(Live),
}

/// A live QEMU and its monitor.
struct Live {
    qmp: Client,
    pid: i32,
    state: RunState,
}

impl QemuHypervisor {
    /// A driver keeping its VMs under `config.run_dir`.
    pub fn new(config: QemuConfig) -> Self {
        Self {
            config,
            vms: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &QemuConfig {
        &self.config
    }

    /// The run directory of VM `name` (its files are listed in the crate documentation).
    pub fn run_dir(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        Ok(RunDir::new(&self.config.run_dir, name).path().to_path_buf())
    }

    /// The monitor of a live VM, for operations this trait does not cover (block
    /// snapshots, jobs). It is the driver's own connection: do not hold it across a
    /// service restart.
    pub async fn qmp(&self, name: &str) -> Result<Client> {
        let vm = self.vm(name)?;
        Ok(self.live(&vm).await?.qmp)
    }

    fn vm(&self, name: &str) -> Result<Arc<Vm>> {
        validate_name(name)?;
        let mut vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
        let vm = vms.entry(name.to_string()).or_insert_with(|| {
            Arc::new(Vm {
                name: name.to_string(),
                dir: RunDir::new(&self.config.run_dir, name),
                op: tokio::sync::Mutex::new(()),
                monitor: tokio::sync::Mutex::new(None),
                child: Arc::default(),
                agent: tokio::sync::Mutex::new(()),
                pauses: Arc::default(),
            })
        });
        Ok(Arc::clone(vm))
    }

    /// Looks at the run directory, the process and the monitor.
    async fn observe(&self, vm: &Vm) -> Result<Observed> {
        if !vm.dir.is_defined().await {
            return Ok(Observed::Missing);
        }
        let Some(pid) = self.live_pid(vm).await else {
            vm.forget_monitor().await;
            return Ok(Observed::Gone);
        };
        match self.query_state(vm).await {
            Ok((qmp, state)) => Ok(Observed::Live(Live { qmp, pid, state })),
            // QEMU may have exited between the two looks.
            Err(_) if self.live_pid(vm).await.is_none() => {
                vm.forget_monitor().await;
                Ok(Observed::Gone)
            }
            Err(error) => Err(error),
        }
    }

    /// The VM, which must be live.
    async fn live(&self, vm: &Vm) -> Result<Live> {
        match self.observe(vm).await? {
            Observed::Live(live) => Ok(live),
            Observed::Missing => Err(not_found(&vm.name)),
            Observed::Gone => Err(not_running(&vm.name)),
        }
    }

    async fn live_pid(&self, vm: &Vm) -> Option<i32> {
        let pid = vm.dir.read_pid().await?;
        process::is_qemu_of(pid, &vm.dir.pid_file())
            .await
            .then_some(pid)
    }

    async fn monitor(&self, vm: &Vm) -> Result<Client> {
        let mut cached = vm.monitor.lock().await;
        if let Some(client) = cached.as_ref().filter(|c| c.is_connected()) {
            return Ok(client.clone());
        }
        let socket = vm.dir.qmp_socket();
        let client = Client::connect_with_timeout(&socket, self.config.monitor_timeout)
            .await
            .map_err(|e| {
                Error::monitor(format!("cannot reach the monitor of VM {}", vm.name), e)
            })?;
        pauses::watch(&vm.name, client.events(), Arc::clone(&vm.pauses));
        *cached = Some(client.clone());
        Ok(client)
    }

    async fn query_state(&self, vm: &Vm) -> Result<(Client, RunState)> {
        let qmp = self.monitor(vm).await?;
        let status = tokio::time::timeout(self.config.monitor_timeout, qmp.query_status())
            .await
            .map_err(|_| self.unresponsive(vm, "query-status"))?
            .map_err(|e| Error::monitor(format!("query-status on VM {} failed", vm.name), e))?;
        Ok((qmp, status.status))
    }

    /// Runs one monitor command, within the monitor timeout.
    async fn execute(&self, vm: &Vm, qmp: &Client, command: &str) -> Result<Value> {
        tokio::time::timeout(
            self.config.monitor_timeout,
            qmp.execute(command, Value::Null),
        )
        .await
        .map_err(|_| self.unresponsive(vm, command))?
        .map_err(|e| Error::monitor(format!("{command} on VM {} failed", vm.name), e))
    }

    fn unresponsive(&self, vm: &Vm, command: &str) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "VM {} did not answer {command} within {:?}",
                vm.name, self.config.monitor_timeout
            ),
        )
    }

    /// Why a VM with no live QEMU is shut off.
    async fn shutoff_reason(&self, vm: &Vm) -> Result<ShutoffReason> {
        if let Some(reason) = vm.dir.read_shutoff().await? {
            return Ok(reason);
        }
        let mut detail = "QEMU exited unexpectedly".to_string();
        if let Some(status) = vm.exit_status() {
            detail.push_str(&format!(" ({status})"));
        }
        if let Some(message) = self.last_qemu_message(vm).await {
            detail.push_str(": ");
            detail.push_str(&message);
        }
        Ok(ShutoffReason::Crashed { detail })
    }

    /// What QEMU printed since it was last started, trimmed (for error messages).
    async fn qemu_messages(&self, vm: &Vm) -> String {
        let log = console::read_tail(&vm.dir.qemu_log(), 16 << 10)
            .await
            .unwrap_or_default();
        let since_start = match log.rfind(LOG_START_MARKER) {
            Some(at) => log[at..].split_once('\n').map_or("", |(_, rest)| rest),
            None => &log,
        };
        since_start.trim().to_string()
    }

    async fn last_qemu_message(&self, vm: &Vm) -> Option<String> {
        let messages = self.qemu_messages(vm).await;
        messages.lines().last().map(str::to_string)
    }

    /// Starts QEMU for `spec` and waits for its monitor.
    async fn launch(&self, vm: &Vm, spec: &VmSpec, incoming: bool) -> Result<Client> {
        let socket = vm.dir.qmp_socket();
        if utf8_path(&socket)?.len() > MAX_SOCKET_PATH {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("the socket path {} is too long", socket.display()),
            ));
        }
        vm.dir.prepare(spec).await?;
        let ports = hotplug::ports_for_launch(&vm.dir, spec, incoming).await?;
        let args = command_line::build(&self.config, &vm.dir, spec, incoming, &ports)?;
        let log = self.open_qemu_log(vm, &args).await?;
        let netns =
            process::open_netns(self.config.netns.as_deref(), !spec.nics.is_empty()).await?;
        let mut child = process::spawn_detached(&self.config.binary, &args, log, netns.as_ref())
            .map_err(|e| {
                Error::new(
                    ErrorKind::StartFailed,
                    format!("cannot run {}", self.config.binary.display()),
                )
                .with_source(e)
            })?;
        let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
            let _ = child.start_kill();
            return Err(Error::new(
                ErrorKind::StartFailed,
                format!("QEMU of VM {} has no pid", vm.name),
            ));
        };
        vm.child_record().spawned = Some(pid);
        tracing::info!(vm = %vm.name, pid, incoming, "QEMU started");
        let connected = self.wait_for_monitor(vm, &mut child).await;
        if connected.is_err() {
            // Through the child handle: a no-op if it was already reaped, so a reused
            // pid is never hit.
            let _ = child.start_kill();
        }
        reap_in_background(child, pid, Arc::clone(&vm.child));
        let client = connected?;
        pauses::watch(&vm.name, client.events(), Arc::clone(&vm.pauses));
        *vm.monitor.lock().await = Some(client.clone());
        Ok(client)
    }

    /// Opens `qemu.log` for QEMU's output, after a header with the command line.
    async fn open_qemu_log(&self, vm: &Vm, args: &[String]) -> Result<std::fs::File> {
        let path = vm.dir.qemu_log();
        let mut log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| Error::io("cannot open", &path, e))?;
        let header = format!(
            "{LOG_START_MARKER}: {} {}\n",
            self.config.binary.display(),
            args.join(" ")
        );
        log.write_all(header.as_bytes())
            .await
            .map_err(|e| Error::io("cannot write", &path, e))?;
        Ok(log.into_std().await)
    }

    async fn wait_for_monitor(&self, vm: &Vm, child: &mut Child) -> Result<Client> {
        let deadline = Instant::now() + self.config.start_timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let messages = self.qemu_messages(vm).await;
                return Err(Error::new(
                    ErrorKind::StartFailed,
                    format!(
                        "QEMU of VM {} exited at start ({status}): {messages}",
                        vm.name
                    ),
                ));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match Client::connect_with_timeout(vm.dir.qmp_socket(), remaining).await {
                Ok(client) => return Ok(client),
                Err(_) if Instant::now() >= deadline => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "QEMU of VM {} did not open its monitor within {:?}",
                            vm.name, self.config.start_timeout
                        ),
                    ));
                }
                Err(_) => tokio::time::sleep(START_POLL_INTERVAL).await,
            }
        }
    }
}

impl Vm {
    async fn forget_monitor(&self) {
        *self.monitor.lock().await = None;
    }

    fn child_record(&self) -> MutexGuard<'_, ChildRecord> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How the QEMU this instance spawned last ended, if it did.
    fn exit_status(&self) -> Option<ExitStatus> {
        let record = self.child_record();
        match (record.spawned, record.exited) {
            (Some(spawned), Some((pid, status))) if spawned == pid => Some(status),
            _ => None,
        }
    }
}

fn not_found(name: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("no VM named {name}"))
}

fn not_running(name: &str) -> Error {
    Error::new(ErrorKind::NotRunning, format!("VM {name} is shut off"))
}

/// Waits for the child in the background, so that it never stays a zombie, and keeps
/// its exit status for the `Crashed` detail.
fn reap_in_background(mut child: Child, pid: i32, record: Arc<Mutex<ChildRecord>>) {
    tokio::spawn(async move {
        if let Ok(status) = child.wait().await {
            tracing::debug!(pid, %status, "QEMU exited");
            record.lock().unwrap_or_else(|p| p.into_inner()).exited = Some((pid, status));
        }
    });
}

#[async_trait]
impl Hypervisor for QemuHypervisor {
    async fn start(&self, spec: &VmSpec) -> Result<()> {
        spec.validate()?;
        let vm = self.vm(&spec.name)?;
        let _op = vm.op.lock().await;
        match self.observe(&vm).await? {
            Observed::Live(live) if live.state == RunState::Shutdown => {
                self.quit(&vm, &live, ShutoffReason::Shutdown).await?;
            }
            Observed::Live(_) => return Ok(()),
            Observed::Missing | Observed::Gone => {}
        }
        self.launch(&vm, spec, false).await.map(drop)
    }

    async fn start_incoming(&self, spec: &VmSpec, state_file: &Path) -> Result<()> {
        spec.validate()?;
        utf8_path(state_file)?;
        let is_file = tokio::fs::metadata(state_file)
            .await
            .is_ok_and(|m| m.is_file());
        if !is_file {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("no memory state at {}", state_file.display()),
            ));
        }
        let vm = self.vm(&spec.name)?;
        let _op = vm.op.lock().await;
        match self.observe(&vm).await? {
            Observed::Live(live) if live.state == RunState::Shutdown => {
                self.quit(&vm, &live, ShutoffReason::Shutdown).await?;
            }
            Observed::Live(_) => return Ok(()),
            Observed::Missing | Observed::Gone => {}
        }
        let qmp = self.launch(&vm, spec, true).await?;
        self.restore(&vm, &qmp, state_file).await
    }

    async fn status(&self, name: &str) -> Result<VmStatus> {
        let vm = self.vm(name)?;
        let live = match self.observe(&vm).await? {
            Observed::Missing => return Ok(VmStatus::Missing),
            Observed::Gone => {
                let reason = self.shutoff_reason(&vm).await?;
                return Ok(VmStatus::Shutoff { reason });
            }
            Observed::Live(live) => live,
        };
        match live.state {
            RunState::Running => Ok(VmStatus::Running),
            RunState::Shutdown => {
                // The guest powered off. Finish the job unless an operation is under way
                // (a soft reboot goes through this state).
                if let Ok(_op) = vm.op.try_lock() {
                    self.quit(&vm, &live, ShutoffReason::Shutdown).await?;
                }
                Ok(VmStatus::Shutoff {
                    reason: ShutoffReason::Shutdown,
                })
            }
            other => Ok(VmStatus::Paused {
                reason: other.as_str().to_string(),
            }),
        }
    }

    async fn shutdown(&self, name: &str, timeout: Duration) -> Result<()> {
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let Observed::Live(live) = self.observe(&vm).await? else {
            return Ok(());
        };
        if live.state != RunState::Shutdown && !self.power_off(&vm, &live, timeout).await? {
            // As hard for the guest as pulling the plug, but QEMU still writes out
            // what the guest had written (see the module header).
            tracing::info!(vm = %vm.name, ?timeout, "guest ignored the power button, quitting QEMU");
            return self.quit(&vm, &live, ShutoffReason::Destroyed).await;
        }
        self.quit(&vm, &live, ShutoffReason::Shutdown).await
    }

    async fn reboot(&self, name: &str, timeout: Duration) -> Result<()> {
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let live = self.live(&vm).await?;
        if live.state != RunState::Shutdown && !self.power_off(&vm, &live, timeout).await? {
            tracing::info!(vm = %vm.name, ?timeout, "guest ignored the power button, resetting it");
            self.execute(&vm, &live.qmp, "system_reset").await?;
            return Ok(());
        }
        self.execute(&vm, &live.qmp, "system_reset").await?;
        self.execute(&vm, &live.qmp, "cont").await?;
        Ok(())
    }

    async fn reset(&self, name: &str) -> Result<()> {
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let live = self.live(&vm).await?;
        self.execute(&vm, &live.qmp, "system_reset").await?;
        if live.state == RunState::Shutdown {
            self.execute(&vm, &live.qmp, "cont").await?;
        }
        Ok(())
    }

    async fn destroy(&self, name: &str) -> Result<()> {
        let vm = self.vm(name)?;
        // No operation lock: destroy must be able to interrupt a stuck operation.
        // A QEMU that still answers gets `quit`, one that does not SIGTERM: the guest
        // stops just as hard, but QEMU flushes and closes its disks (and librbd
        // releases its watch at once instead of leaving the image busy for ~30 s);
        // SIGKILL only after `exit_timeout`.
        let observed = tokio::time::timeout(self.config.monitor_timeout, self.observe(&vm)).await;
        if let Ok(Ok(Observed::Live(live))) = observed {
            return self.quit(&vm, &live, ShutoffReason::Destroyed).await;
        }
        match self.live_pid(&vm).await {
            Some(pid) => {
                self.stop_qemu(&vm, pid, None, ShutoffReason::Destroyed)
                    .await
            }
            None => Ok(()),
        }
    }

    async fn undefine(&self, name: &str) -> Result<()> {
        self.destroy(name).await?;
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        vm.dir.remove().await?;
        self.vms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(())
    }

    async fn pause(&self, name: &str) -> Result<()> {
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let live = self.live(&vm).await?;
        self.execute(&vm, &live.qmp, "stop").await.map(drop)
    }

    async fn resume(&self, name: &str) -> Result<()> {
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let live = self.live(&vm).await?;
        self.execute(&vm, &live.qmp, "cont").await.map(drop)
    }

    async fn save_memory(&self, name: &str, state_file: &Path) -> Result<()> {
        self.save_memory_of(name, state_file).await
    }

    async fn console_log(&self, name: &str, max_lines: Option<usize>) -> Result<String> {
        let vm = self.vm(name)?;
        if !vm.dir.is_defined().await {
            return Err(not_found(name));
        }
        let path = vm.dir.console_log();
        let cap = self.config.console_log_cap.max(4096);
        let text = console::read_tail(&path, CONSOLE_LOG_LIMIT.min(cap))
            .await
            .map_err(|e| Error::io("cannot read", &path, e))?;
        Ok(console::last_lines(&text, max_lines).to_string())
    }

    async fn trim_console_logs(&self) -> Result<()> {
        let cap = self.config.console_log_cap.max(4096);
        for name in self.list().await? {
            let path = RunDir::new(&self.config.run_dir, &name).console_log();
            if let Err(e) = console::trim_head(&path, cap).await {
                tracing::warn!(vm = %name, error = %e, "could not trim a console log");
            }
        }
        Ok(())
    }

    async fn attach_disk(&self, name: &str, disk: &crate::spec::DiskSpec) -> Result<()> {
        self.hotplug_disk(name, disk).await
    }

    async fn detach_disk(&self, name: &str, disk_id: &str, timeout: Duration) -> Result<()> {
        self.unplug_disk(name, disk_id, timeout).await
    }

    async fn attach_nic(&self, name: &str, nic: &crate::spec::NicSpec) -> Result<()> {
        self.hotplug_nic(name, nic).await
    }

    async fn detach_nic(&self, name: &str, nic_id: &str) -> Result<()> {
        self.unplug_nic(name, nic_id).await
    }

    async fn set_nic_link(&self, name: &str, nic_id: &str, up: bool) -> Result<()> {
        self.nic_link(name, nic_id, up).await
    }

    async fn snapshot_disk(&self, name: &str, disk_id: &str, overlay: &Path) -> Result<()> {
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let live = self.live(&vm).await?;
        let timeout = self.config.monitor_timeout;
        block::snapshot_sync(&live.qmp, name, disk_id, overlay, timeout).await
    }

    async fn create_restore_point(
        &self,
        name: &str,
        disks: &[DiskOverlay],
        memory: Option<&Path>,
    ) -> Result<PointTaken> {
        self.take_restore_point(name, disks, memory).await
    }

    async fn create_native_point(
        &self,
        name: &str,
        disks: &[NativeSnapshot],
        memory: Option<&MemoryState>,
    ) -> Result<PointTaken> {
        self.take_native_point(name, disks, memory).await
    }

    async fn start_incoming_from(&self, spec: &VmSpec, state: &MemoryState) -> Result<()> {
        match state {
            MemoryState::File(path) => self.start_incoming(spec, path).await,
            MemoryState::Rbd(rbd) => self.start_incoming_rbd(spec, rbd).await,
        }
    }

    async fn internal_snapshot(
        &self,
        name: &str,
        disk_ids: &[String],
        op: InternalSnapshot,
        tag: &str,
    ) -> Result<PointTaken> {
        self.run_internal_snapshot(name, disk_ids, op, tag).await
    }

    async fn stream_into(&self, name: &str, into: &Path, base: &Path) -> Result<()> {
        self.run_stream_into(name, into, base).await
    }

    async fn active_disk_file(&self, name: &str, disk_id: &str) -> Result<PathBuf> {
        let vm = self.vm(name)?;
        let live = self.live(&vm).await?;
        let timeout = self.config.monitor_timeout;
        Ok(block::top_of(&live.qmp, name, disk_id, timeout).await?.file)
    }

    async fn freeze_filesystems(&self, name: &str, timeout: Duration) -> Result<u32> {
        self.agent_freeze(name, timeout).await
    }

    async fn thaw_filesystems(&self, name: &str) -> Result<u32> {
        self.agent_thaw(name).await
    }

    async fn pause_log(&self, name: &str) -> Result<Vec<crate::PauseSpan>> {
        let vm = self.vm(name)?;
        if !vm.dir.is_defined().await {
            return Err(not_found(name));
        }
        // Connects the monitor (and so its watcher) if this instance never did.
        let _ = self.observe(&vm).await;
        let log = vm.pauses.lock().unwrap_or_else(|p| p.into_inner());
        Ok(log.spans())
    }

    async fn list(&self) -> Result<Vec<String>> {
        let root = &self.config.run_dir;
        let mut entries = match tokio::fs::read_dir(root).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("cannot list", root, e)),
        };
        let mut names = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| Error::io("cannot list", root, e))?
        {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if validate_name(&name).is_ok() && RunDir::new(root, &name).is_defined().await {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}
