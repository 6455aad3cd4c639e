//! Memory states of a QEMU VM: saving one (as `virsh managedsave`) and
//! loading one into a QEMU started with `-incoming defer`; the migration
//! mechanics are in [`super::migration`].
//!
//! A state may also live in an RBD image (restore points of RBD servers,
//! so that any host of the cluster could load it). QEMU 7.2 has no rbd
//! migration URI, so the stream goes through the `rbd` CLI:
//!
//! ```text
//! save  exec:rbd … import --no-progress - <pool>/<image>.part && touch <run dir>/rbd-state.imported
//!       then, once QEMU says the migration completed and the marker is there:
//!       rbd … mv <pool>/<image>.part <pool>/<image>            (by the driver)
//! load  exec:rbd … export --no-progress <pool>/<image> -
//! ```
//! The driver renames, not the `exec:` command: `rbd import` also ends well
//! on a stream cut short (QEMU killed mid-save closes the pipe), so only a
//! migration QEMU reported complete is renamed. An image under its final
//! name is always whole; a `.part` image is garbage.

use std::path::Path;

use qmp::{Client, RunState};

use super::migration::shell_quote;
use super::{migration, not_found, not_running, Observed, QemuHypervisor, Vm};
use crate::error::{Error, ErrorKind, Result};
use crate::restore::RbdState;
use crate::spec::{utf8_path, VmSpec};
use crate::status::ShutoffReason;

/// `rbd --conf <conf> --id <user>`, quoted for `/bin/sh`.
fn rbd_command(state: &RbdState) -> Result<String> {
    Ok(format!(
        "rbd --conf {} --id {}",
        shell_quote(utf8_path(&state.conf)?),
        shell_quote(&state.user)
    ))
}

/// The `exec:` URI that streams a migration into `<image>.part` of `state`
/// and then creates `marker`.
pub(crate) fn rbd_save_uri(state: &RbdState, marker: &Path) -> Result<String> {
    let rbd = rbd_command(state)?;
    let partial = shell_quote(&format!("{}/{}.part", state.pool, state.image));
    let marker = shell_quote(utf8_path(marker)?);
    Ok(format!(
        "exec:{rbd} import --no-progress - {partial} && touch {marker}"
    ))
}

/// Waits until the `rbd import` of a completed migration has ended (its
/// marker appeared), then renames `<image>.part` to `<image>`.
pub(crate) async fn rbd_finish_save(
    state: &RbdState,
    marker: &Path,
    timeout: std::time::Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !tokio::fs::try_exists(marker).await.unwrap_or(false) {
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::Migration,
                format!(
                    "the memory state {}/{}.part was never stored",
                    state.pool, state.image
                ),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let _ = tokio::fs::remove_file(marker).await;
    let image = format!("{}/{}", state.pool, state.image);
    let output = tokio::process::Command::new("rbd")
        .arg("--conf")
        .arg(&state.conf)
        .args(["--id", &state.user, "mv", &format!("{image}.part"), &image])
        .output()
        .await
        .map_err(|e| Error::io("cannot run rbd", Path::new("rbd"), e))?;
    if !output.status.success() {
        return Err(Error::new(
            ErrorKind::Migration,
            format!(
                "renaming {image}.part to {image} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// The `exec:` URI that streams the RBD image of `state` into an incoming migration.
pub(crate) fn rbd_load_uri(state: &RbdState) -> Result<String> {
    let rbd = rbd_command(state)?;
    let image = shell_quote(&format!("{}/{}", state.pool, state.image));
    Ok(format!("exec:{rbd} export --no-progress {image} -"))
}

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
        let uri = migration::load_uri(state_file)?;
        self.restore_from(vm, qmp, &uri, &state_file.display().to_string())
            .await
    }

    /// [`Hypervisor::start_incoming_from`](crate::Hypervisor::start_incoming_from)
    /// with an RBD state: the image is streamed by `rbd export`.
    pub(super) async fn start_incoming_rbd(&self, spec: &VmSpec, state: &RbdState) -> Result<()> {
        spec.validate()?;
        let uri = rbd_load_uri(state)?;
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
        let what = format!("rbd:{}/{}", state.pool, state.image);
        self.restore_from(&vm, &qmp, &uri, &what).await
    }

    /// Loads the stream of `uri` (`what`, for messages) into a QEMU started
    /// with `-incoming defer`, then lets it run.
    async fn restore_from(&self, vm: &Vm, qmp: &Client, uri: &str, what: &str) -> Result<()> {
        let loaded = migration::load_from(qmp, uri, self.config.migration_timeout).await;
        if let Err(error) = loaded {
            // QEMU exits on a bad stream; make sure it is gone whatever happened.
            let detail = format!("restoring {what} failed: {}", self.qemu_messages(vm).await);
            match self.live_pid(vm).await {
                Some(pid) => {
                    self.stop_qemu(
                        vm,
                        pid,
                        Some(qmp),
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn state() -> RbdState {
        RbdState {
            pool: "vms".into(),
            image: "rp-1-mem".into(),
            conf: PathBuf::from("/etc/ceph/it's.conf"),
            user: "admin".into(),
        }
    }

    #[test]
    fn rbd_save_uri_when_built_then_imports_partial_and_marks_the_end() {
        let uri = rbd_save_uri(&state(), Path::new("/run/vm1/rbd-state.imported")).unwrap();

        assert_eq!(
            uri,
            r"exec:rbd --conf '/etc/ceph/it'\''s.conf' --id 'admin' import --no-progress - 'vms/rp-1-mem.part' && touch '/run/vm1/rbd-state.imported'"
        );
    }

    #[test]
    fn rbd_load_uri_when_built_then_exports_to_stdout() {
        let uri = rbd_load_uri(&state()).unwrap();

        assert_eq!(
            uri,
            r"exec:rbd --conf '/etc/ceph/it'\''s.conf' --id 'admin' export --no-progress 'vms/rp-1-mem' -"
        );
    }
}
