//! Stopping QEMU and powering guests off (see the module header of
//! `qemu`: never SIGKILL first, so QEMU flushes and closes its disks).

use std::time::Duration;

use qmp::Client;
use serde_json::Value;

use super::{process, Live, QemuHypervisor, Vm};
use crate::error::{Error, ErrorKind, Result};
use crate::status::ShutoffReason;

impl QemuHypervisor {
    /// Records `reason` and stops the live QEMU through its monitor (see
    /// [`Self::stop_qemu`]).
    pub(super) async fn quit(&self, vm: &Vm, live: &Live, reason: ShutoffReason) -> Result<()> {
        self.stop_qemu(vm, live.pid, Some(&live.qmp), reason).await
    }

    /// Records `reason`, then has QEMU flush and close its disks and exit: `quit` on
    /// `qmp`, or SIGTERM when there is no monitor or it does not take the command.
    /// SIGKILL only for a QEMU still there after `exit_timeout`.
    pub(super) async fn stop_qemu(
        &self,
        vm: &Vm,
        pid: i32,
        qmp: Option<&Client>,
        reason: ShutoffReason,
    ) -> Result<()> {
        vm.dir.write_shutoff(&reason).await?;
        let quitting = match qmp {
            Some(qmp) => self.ask_to_quit(vm, qmp).await,
            None => false,
        };
        if !quitting && process::is_qemu_of(pid, &vm.dir.pid_file()).await {
            if let Err(error) = process::signal(pid, libc::SIGTERM) {
                tracing::debug!(vm = %vm.name, %error, "SIGTERM failed, QEMU probably gone");
            }
        }
        let timeout = self.config.exit_timeout;
        if process::wait_gone(pid, &vm.dir.pid_file(), timeout).await {
            vm.forget_monitor().await;
            tracing::info!(vm = %vm.name, pid, %reason, "QEMU stopped");
            return Ok(());
        }
        tracing::warn!(
            vm = %vm.name, pid, ?timeout,
            "QEMU did not exit after quit or SIGTERM, killing it: writes it had not flushed are lost"
        );
        self.kill(vm, pid, &reason).await
    }

    /// Sends `quit`; true when QEMU answered it (it then closes its disks and exits).
    /// A monitor that closed instead may have got it or not: SIGTERM makes sure (QEMU
    /// ignores a second request while it exits).
    pub(super) async fn ask_to_quit(&self, vm: &Vm, qmp: &Client) -> bool {
        let sent = tokio::time::timeout(
            self.config.monitor_timeout,
            qmp.execute("quit", Value::Null),
        )
        .await;
        match sent {
            Ok(Ok(_)) => true,
            // QEMU may close the socket before its reply gets out.
            Ok(Err(e)) if e.kind() == qmp::ErrorKind::Disconnected => false,
            Ok(Err(e)) => {
                tracing::warn!(vm = %vm.name, error = %e, "quit refused, sending SIGTERM");
                false
            }
            Err(_) => {
                tracing::warn!(vm = %vm.name, "quit unanswered, sending SIGTERM");
                false
            }
        }
    }

    /// SIGKILLs QEMU and waits for it to go (the last resort of [`Self::stop_qemu`]).
    pub(super) async fn kill(&self, vm: &Vm, pid: i32, reason: &ShutoffReason) -> Result<()> {
        if let Err(error) = process::signal(pid, libc::SIGKILL) {
            tracing::debug!(vm = %vm.name, %error, "SIGKILL failed, QEMU probably gone");
        }
        let gone = process::wait_gone(pid, &vm.dir.pid_file(), self.config.exit_timeout).await;
        vm.forget_monitor().await;
        if gone {
            tracing::info!(vm = %vm.name, pid, %reason, "QEMU stopped");
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Timeout,
                format!("QEMU of VM {} (pid {pid}) survived SIGKILL", vm.name),
            ))
        }
    }

    /// Sends the ACPI power button and waits for the guest to power off.
    pub(super) async fn power_off(&self, vm: &Vm, live: &Live, timeout: Duration) -> Result<bool> {
        let mut events = live.qmp.events();
        self.execute(vm, &live.qmp, "system_powerdown").await?;
        match events.wait_for("SHUTDOWN", |_| true, timeout).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == qmp::ErrorKind::Timeout => Ok(false),
            Err(e) => Err(Error::monitor(
                format!("VM {} vanished while powering off", vm.name),
                e,
            )),
        }
    }
}
