//! Memory states of a QEMU VM: saving one (as `virsh managedsave`) and
//! loading one into a QEMU started with `-incoming defer`; the migration
//! mechanics are in [`super::migration`].

use std::path::Path;

use qmp::{Client, RunState};

use super::{migration, not_found, not_running, Observed, QemuHypervisor, Vm};
use crate::error::{Error, ErrorKind, Result};
use crate::status::ShutoffReason;

impl QemuHypervisor {
    /// [`Hypervisor::save_memory`](crate::Hypervisor::save_memory).
    pub(super) async fn save_memory_of(&self, name: &str, state_file: &Path) -> Result<()> {
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let saved = ShutoffReason::Saved {
            state_file: state_file.to_path_buf(),
        };
        let live = match self.observe(&vm).await? {
            Observed::Live(live) => live,
            Observed::Missing => return Err(not_found(name)),
            Observed::Gone => {
                let already_saved = vm.dir.read_shutoff().await?.as_ref() == Some(&saved)
                    && tokio::fs::try_exists(state_file).await.unwrap_or(false);
                return if already_saved {
                    Ok(())
                } else {
                    Err(not_running(name))
                };
            }
        };
        let parent_exists = match state_file.parent() {
            Some(parent) => tokio::fs::metadata(parent).await.is_ok_and(|m| m.is_dir()),
            None => false,
        };
        if !parent_exists {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("no directory to write {} in", state_file.display()),
            ));
        }
        let was_running = live.state == RunState::Running;
        if was_running {
            self.execute(&vm, &live.qmp, "stop").await?;
        }
        let timeout = self.config.migration_timeout;
        if let Err(error) = migration::save(&live.qmp, state_file, timeout).await {
            let _ = tokio::fs::remove_file(migration::partial_file(state_file)).await;
            if was_running {
                let _ = self.execute(&vm, &live.qmp, "cont").await;
            }
            return Err(error);
        }
        self.quit(&vm, &live, saved).await?;
        migration::wait_written(state_file, self.config.exit_timeout).await?;
        tracing::info!(vm = %vm.name, state_file = %state_file.display(), "memory state saved");
        Ok(())
    }

    /// Loads `state_file` into a QEMU started with `-incoming defer`, then lets it run.
    /// On failure QEMU is gone and the VM is `Shutoff { Crashed }` with QEMU's message.
    pub(super) async fn restore(&self, vm: &Vm, qmp: &Client, state_file: &Path) -> Result<()> {
        let loaded = migration::load(qmp, state_file, self.config.migration_timeout).await;
        if let Err(error) = loaded {
            // QEMU exits on a bad stream; make sure it is gone whatever happened.
            let detail = format!(
                "restoring {} failed: {}",
                state_file.display(),
                self.qemu_messages(vm).await
            );
            match self.live_pid(vm).await {
                Some(pid) => {
                    self.kill(
                        vm,
                        pid,
                        ShutoffReason::Crashed {
                            detail: detail.clone(),
                        },
                    )
                    .await?
                }
                None => {
                    vm.dir
                        .write_shutoff(&ShutoffReason::Crashed {
                            detail: detail.clone(),
                        })
                        .await?
                }
            }
            return Err(
                Error::new(ErrorKind::Migration, format!("VM {}: {detail}", vm.name))
                    .with_source(error),
            );
        }
        self.execute(vm, qmp, "cont").await?;
        Ok(())
    }
}
