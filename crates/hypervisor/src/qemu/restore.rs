//! Restore points of a live VM over QMP (see [`crate::restore`]).
//!
//! Disk-only: one `transaction` of `blockdev-snapshot-sync` actions, one per
//! disk, so every disk is cut at the same instant; the guest is never
//! stopped (no `STOP` event).
//!
//! With memory (QEMU 7.2, no `file:` URI):
//!
//! ```text
//!  migrate-set-parameters max-bandwidth (the 128 MiB/s default is 4× slower)
//!  migrate-set-capabilities background-snapshot on
//!  stop ─▶ transaction (new overlays) ─▶ migrate exec:cat > state.part && mv
//!     │                                   │ the migration thread saves the
//!     │                                   │ devices, then QEMU 7.2 resumes the
//!     └──────── guest paused ─────────────┘ VM itself; RAM follows in the
//!                                           background (write-protected pages)
//!  poll query-migrate until completed ─▶ `cont` if the VM is still stopped
//!  (QEMU ≥ 9 no longer resumes it) ─▶ state file renamed into place, fsynced
//!  migrate-set-capabilities background-snapshot off (a later suspend must
//!  be an ordinary migration of a stopped VM)
//! ```
//! Native points (RBD disks, [`NativeSnapshot`]): the same, with
//! `blockdev-snapshot-internal-sync` actions in the transaction — QEMU, the
//! images' exclusive-lock owner, takes an RBD snapshot of each (its cache
//! flushed, no guest pause for a disk-only point) — and, for an RBD memory
//! target, `migrate exec:rbd import - <pool>/<image>.part`, renamed to
//! `<image>` once complete (QEMU 7.2 has no rbd migration target; the stream
//! goes straight into the pool, no local file; see `memory_state`).
//!
//! The disks at the transaction instant and the RAM of the migration are the
//! same instant because the vCPUs do not run in between. Only a running VM
//! can take a memory point: a background snapshot of a paused VM would be
//! resumed by QEMU 7.2.

use std::path::Path;
use std::time::Duration;

use qmp::{Client, RunState};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{block, migration, QemuHypervisor, Vm};
use crate::error::{Error, ErrorKind, Result};
use crate::restore::{DiskOverlay, MemoryState, NativeSnapshot, PointTaken};

/// How often to look at a background snapshot's progress.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

impl QemuHypervisor {
    /// See [`Hypervisor::create_restore_point`](crate::Hypervisor::create_restore_point).
    pub(super) async fn take_restore_point(
        &self,
        name: &str,
        disks: &[DiskOverlay],
        memory: Option<&Path>,
    ) -> Result<PointTaken> {
        let started = Instant::now();
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let live = self.live(&vm).await?;
        let timeout = self.config.monitor_timeout;
        let mut actions = Vec::with_capacity(disks.len());
        for disk in disks {
            let top = block::top_of(&live.qmp, name, &disk.disk_id, timeout).await?;
            let data = block::snapshot_sync_args(&top, &disk.disk_id, &disk.overlay)?;
            actions.push(json!({ "type": "blockdev-snapshot-sync", "data": data }));
        }
        let mut events = live.qmp.events();
        match memory {
            None => {
                let args = json!({ "actions": actions });
                block::run(&live.qmp, name, "transaction", args, timeout).await?;
            }
            Some(state_file) => {
                if live.state != RunState::Running {
                    return Err(Error::new(
                        ErrorKind::NotRunning,
                        format!("VM {name} must be running to save its memory at a restore point"),
                    ));
                }
                let state = MemoryState::File(state_file.to_path_buf());
                self.point_with_memory(&vm, &live.qmp, actions, &state)
                    .await?;
            }
        }
        let (guest_pause, stopped) = pause_from_events(&mut events);
        Ok(PointTaken {
            guest_pause,
            stopped,
            total: started.elapsed(),
        })
    }

    /// See [`Hypervisor::create_native_point`](crate::Hypervisor::create_native_point).
    pub(super) async fn take_native_point(
        &self,
        name: &str,
        disks: &[NativeSnapshot],
        memory: Option<&MemoryState>,
    ) -> Result<PointTaken> {
        let started = Instant::now();
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let live = self.live(&vm).await?;
        let timeout = self.config.monitor_timeout;
        let mut actions = Vec::with_capacity(disks.len());
        for disk in disks {
            let top = block::top_of(&live.qmp, name, &disk.disk_id, timeout).await?;
            let data = json!({ "device": top.node, "name": disk.name });
            actions.push(json!({ "type": "blockdev-snapshot-internal-sync", "data": data }));
        }
        let mut events = live.qmp.events();
        match memory {
            None => {
                let args = json!({ "actions": actions });
                block::run(&live.qmp, name, "transaction", args, timeout).await?;
            }
            Some(state) => {
                if live.state != RunState::Running {
                    return Err(Error::new(
                        ErrorKind::NotRunning,
                        format!("VM {name} must be running to save its memory at a restore point"),
                    ));
                }
                self.point_with_memory(&vm, &live.qmp, actions, state)
                    .await?;
            }
        }
        let (guest_pause, stopped) = pause_from_events(&mut events);
        Ok(PointTaken {
            guest_pause,
            stopped,
            total: started.elapsed(),
        })
    }

    async fn point_with_memory(
        &self,
        vm: &Vm,
        qmp: &Client,
        actions: Vec<Value>,
        state: &MemoryState,
    ) -> Result<()> {
        let name = vm.name.as_str();
        let timeout = self.config.monitor_timeout;
        let uri = match state {
            MemoryState::File(file) => {
                check_parent_dir(file)?;
                migration::save_uri(file)?
            }
            MemoryState::Rbd(rbd) => {
                let _ = tokio::fs::remove_file(rbd_marker(vm)).await;
                super::memory_state::rbd_save_uri(rbd, &rbd_marker(vm))?
            }
        };
        let parameters = json!({ "max-bandwidth": migration::MAX_BANDWIDTH });
        block::run(qmp, name, "migrate-set-parameters", parameters, timeout).await?;
        set_background_snapshot(qmp, name, true, timeout).await?;
        let taken = self.stop_cut_and_save(vm, qmp, actions, &uri, state).await;
        let reset = set_background_snapshot(qmp, name, false, timeout).await;
        if taken.is_err() {
            if let MemoryState::File(file) = state {
                let _ = tokio::fs::remove_file(migration::partial_file(file)).await;
            }
            if let Ok(status) = qmp.query_status().await {
                if status.status != RunState::Running {
                    let _ = self.execute(vm, qmp, "cont").await;
                }
            }
        }
        taken?;
        reset?;
        match state {
            MemoryState::File(file) => {
                migration::wait_written(file, self.config.exit_timeout).await
            }
            MemoryState::Rbd(rbd) => {
                let timeout = self.config.migration_timeout;
                super::memory_state::rbd_finish_save(rbd, &rbd_marker(vm), timeout).await
            }
        }
    }

    async fn stop_cut_and_save(
        &self,
        vm: &Vm,
        qmp: &Client,
        actions: Vec<Value>,
        uri: &str,
        state: &MemoryState,
    ) -> Result<()> {
        let name = vm.name.as_str();
        let timeout = self.config.monitor_timeout;
        self.execute(vm, qmp, "stop").await?;
        let args = json!({ "actions": actions });
        block::run(qmp, name, "transaction", args, timeout).await?;
        block::run(qmp, name, "migrate", json!({ "uri": uri }), timeout).await?;
        let deadline = Instant::now() + self.config.migration_timeout;
        loop {
            let info = block::run(qmp, name, "query-migrate", json!({}), timeout).await?;
            match info["status"].as_str().unwrap_or_default() {
                "completed" => break,
                "failed" | "cancelled" => {
                    let why = info["error-desc"].as_str().unwrap_or("no reason given");
                    return Err(Error::new(
                        ErrorKind::Migration,
                        format!(
                            "VM {name}: saving the memory of a restore point to {} failed: {why}",
                            describe(state)
                        ),
                    ));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                let _ = qmp.execute("migrate_cancel", json!({})).await;
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("VM {name}: saving the memory of a restore point took too long"),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let status = qmp
            .query_status()
            .await
            .map_err(|e| Error::monitor(format!("query-status on VM {name} failed"), e))?;
        if status.status != RunState::Running {
            // QEMU ≥ 9 leaves the VM as it found it (stopped, by us).
            self.execute(vm, qmp, "cont").await?;
        }
        Ok(())
    }
}

async fn set_background_snapshot(
    qmp: &Client,
    name: &str,
    on: bool,
    timeout: Duration,
) -> Result<()> {
    let args = json!({
        "capabilities": [{ "capability": "background-snapshot", "state": on }]
    });
    block::run(qmp, name, "migrate-set-capabilities", args, timeout)
        .await
        .map(drop)
}

/// The file the `exec:` command of an RBD save creates when `rbd import` is done.
fn rbd_marker(vm: &Vm) -> std::path::PathBuf {
    vm.dir.path().join("rbd-state.imported")
}

/// Where a memory state goes, for messages.
fn describe(state: &MemoryState) -> String {
    match state {
        MemoryState::File(file) => file.display().to_string(),
        MemoryState::Rbd(rbd) => format!("rbd:{}/{}", rbd.pool, rbd.image),
    }
}

fn check_parent_dir(state_file: &Path) -> Result<()> {
    let ok = state_file.parent().is_some_and(Path::is_dir);
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("no directory to write {} in", state_file.display()),
        ))
    }
}

/// The guest pause seen in the events already received: from each `STOP` to
/// the next `RESUME`, by QEMU's timestamps.
pub(super) fn pause_from_events(events: &mut qmp::EventStream) -> (Duration, bool) {
    let mut received = Vec::new();
    while let Some(Ok(event)) = events.next().now_or_never_ready() {
        received.push(event);
    }
    pause_of(&received)
}

fn pause_of(events: &[qmp::Event]) -> (Duration, bool) {
    let micros = |e: &qmp::Event| e.timestamp.0 * 1_000_000 + e.timestamp.1;
    let mut total = 0i64;
    let mut stopped_at = None;
    let mut stopped = false;
    for event in events {
        match event.name.as_str() {
            "STOP" => {
                stopped = true;
                stopped_at.get_or_insert(micros(event));
            }
            "RESUME" => {
                if let Some(at) = stopped_at.take() {
                    total += (micros(event) - at).max(0);
                }
            }
            _ => {}
        }
    }
    let pause = Duration::from_micros(u64::try_from(total).unwrap_or(0));
    (pause, stopped)
}

/// Polls a future once, as `futures::FutureExt::now_or_never` (events already
/// received are ready at once).
trait NowOrNever: std::future::Future + Sized {
    fn now_or_never_ready(self) -> Option<Self::Output> {
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        let mut future = std::pin::pin!(self);
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }
}

impl<F: std::future::Future> NowOrNever for F {}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, seconds: i64, micros: i64) -> qmp::Event {
        qmp::Event {
            name: name.to_string(),
            data: Value::Null,
            timestamp: (seconds, micros),
        }
    }

    #[test]
    fn pause_of_when_stop_then_resume_then_difference() {
        let events = [event("STOP", 10, 999_000), event("RESUME", 11, 17_000)];

        let (pause, stopped) = pause_of(&events);

        assert_eq!(pause, Duration::from_millis(18));
        assert!(stopped);
    }

    #[test]
    fn pause_of_when_no_stop_then_zero_and_not_stopped() {
        let events = [event("JOB_STATUS_CHANGE", 1, 0)];

        let (pause, stopped) = pause_of(&events);

        assert_eq!(pause, Duration::ZERO);
        assert!(!stopped);
    }
}
