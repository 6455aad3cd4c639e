//! Desired state vs observed state.
//!
//! - [`reconcile`] runs once at start-up: every server left with a task by a
//!   previous run is settled to what the hypervisor shows (a half-built
//!   server becomes `error`, a half-deleted one is deleted), QEMU processes
//!   and disks no live server owns are removed.
//! - [`Cloud::sync_power_states`] runs periodically: a server whose QEMU died
//!   or whose guest powered itself off becomes `stopped`, with a fault when
//!   it was not asked to stop.

use std::collections::BTreeSet;

use chrono::Utc;
use domain::server::{Fault, PowerState, Server, TaskState, VmState};
use domain::Result;
use hypervisor::{ShutoffReason, VmStatus};

use crate::Cloud;

pub(crate) async fn reconcile(cloud: &Cloud) -> Result<Vec<String>> {
    cloud.resume_snapshot_images().await?;
    let mut repaired = Vec::new();
    let servers = cloud.store.servers(None).await?;
    for server in servers.iter().filter(|s| s.task_state.is_some()) {
        repaired.push(cloud.settle_interrupted(server.clone()).await?);
    }

    let live = cloud.store.servers(None).await?;
    let names: BTreeSet<String> = live.iter().map(|s| s.id.to_string()).collect();
    for vm in cloud
        .hypervisor
        .list()
        .await
        .map_err(super::hypervisor_error)?
    {
        if !names.contains(&vm) {
            let _ = cloud.hypervisor.undefine(&vm).await;
            repaired.push(format!("VM {vm} of no live server removed"));
        }
    }
    Ok(repaired)
}

impl Cloud {
    /// Settles a server whose task was cut short by a restart.
    async fn settle_interrupted(&self, server: Server) -> Result<String> {
        let task = server.task_state.map_or("none", TaskState::as_str);
        if server.task_state == Some(TaskState::Deleting) {
            self.finish_delete(server.clone()).await;
            return Ok(format!(
                "server {}: delete interrupted, finished",
                server.id
            ));
        }
        let (observed, power) = self.observed_state(&server).await;
        let mut settled = server.clone();
        settled.task_state = None;
        settled.power_state = power;
        settled.updated_at = Utc::now();
        if server.vm_state == VmState::Building && observed != VmState::Active {
            settled.vm_state = VmState::Error;
            settled.fault = Some(Fault {
                code: 500,
                message: "The build was interrupted by a restart of the service.".into(),
                created: Utc::now(),
            });
        } else {
            settled.vm_state = observed;
            if server.vm_state == VmState::Building {
                settled.launched_at = Some(Utc::now());
            }
        }
        self.store.update_server(&server, &settled).await?;
        Ok(format!(
            "server {}: task {task} interrupted, now {}",
            server.id, settled.vm_state
        ))
    }

    /// Notices servers whose QEMU died or whose guest powered off, and
    /// bounds their console logs on disk.
    pub async fn sync_power_states(&self) -> Result<()> {
        // Console logs grow with the guests' output: bound them on the same tick.
        if let Err(e) = self.hypervisor.trim_console_logs().await {
            tracing::warn!(error = %e, "console logs not trimmed");
        }
        for server in self.store.servers(None).await? {
            let watched = matches!(server.vm_state, VmState::Active | VmState::Paused);
            if server.task_state.is_some() || !watched {
                continue;
            }
            let status = match self.hypervisor.status(&server.id.to_string()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(server = %server.id, error = %e, "power sync skipped");
                    continue;
                }
            };
            let (vm_state, power_state, fault) = match status {
                VmStatus::Running if server.vm_state == VmState::Active => continue,
                VmStatus::Running => (VmState::Active, PowerState::Running, None),
                VmStatus::Paused { .. } if server.vm_state == VmState::Paused => continue,
                VmStatus::Paused { .. } => continue,
                VmStatus::Shutoff {
                    reason: ShutoffReason::Shutdown,
                } => (VmState::Stopped, PowerState::Shutdown, None),
                VmStatus::Shutoff { reason } => (
                    VmState::Stopped,
                    PowerState::Crashed,
                    Some(format!("QEMU is gone: {reason}.")),
                ),
                VmStatus::Missing => (
                    VmState::Stopped,
                    PowerState::Shutdown,
                    Some("QEMU is gone: no VM found.".into()),
                ),
            };
            let mut changed = server.clone();
            changed.vm_state = vm_state;
            changed.power_state = power_state;
            if let Some(message) = fault {
                tracing::warn!(server = %server.id, %message, "server stopped unexpectedly");
                changed.fault = Some(Fault {
                    code: 500,
                    message,
                    created: Utc::now(),
                });
            }
            changed.updated_at = Utc::now();
            // A request may have claimed a task meanwhile: then it wins.
            let _ = self.store.update_server(&server, &changed).await;
        }
        Ok(())
    }
}
