//! The run directory of one VM: the only place its state lives between service restarts.
//!
//! ```text
//! <run_dir>/<name>/
//!   spec.json     the VmSpec it was last started with; its presence defines the VM
//!   qmp.sock      QMP monitor socket (QEMU serves one client at a time)
//!   qga.sock      guest agent channel (virtserialport org.qemu.guest_agent.0)
//!   qemu.pid      written by QEMU (-pidfile)
//!   console.log   serial console (appended across boots)
//!   qemu.log      QEMU's stdout/stderr, each start preceded by a header with the command line
//!   shutoff.json  why the VM stopped, written *before* we stop it on purpose;
//!                 removed when it starts. Absent + no process = QEMU died unasked.
//!   ports.json    which PCIe port each disk's and NIC's device is on (see `qemu::hotplug`)
//! ```

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::spec::VmSpec;
use crate::status::ShutoffReason;

/// Paths and small files of one VM's run directory.
#[derive(Debug, Clone)]
pub(crate) struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub(crate) fn new(run_dir: &Path, name: &str) -> Self {
        Self {
            path: run_dir.join(name),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn qmp_socket(&self) -> PathBuf {
        self.path.join("qmp.sock")
    }

    /// Host end of the guest agent channel (see `qemu::agent`).
    pub(crate) fn agent_socket(&self) -> PathBuf {
        self.path.join("qga.sock")
    }

    pub(crate) fn pid_file(&self) -> PathBuf {
        self.path.join("qemu.pid")
    }

    pub(crate) fn console_log(&self) -> PathBuf {
        self.path.join("console.log")
    }

    pub(crate) fn qemu_log(&self) -> PathBuf {
        self.path.join("qemu.log")
    }

    fn spec_file(&self) -> PathBuf {
        self.path.join("spec.json")
    }

    fn ports_file(&self) -> PathBuf {
        self.path.join("ports.json")
    }

    /// Disk id → PCIe port index, as last recorded (`None` if never).
    pub(crate) async fn read_ports(
        &self,
    ) -> Result<Option<std::collections::BTreeMap<String, usize>>> {
        read_json(&self.ports_file()).await
    }

    pub(crate) async fn write_ports(
        &self,
        ports: &std::collections::BTreeMap<String, usize>,
    ) -> Result<()> {
        write_json(&self.ports_file(), ports).await
    }

    fn shutoff_file(&self) -> PathBuf {
        self.path.join("shutoff.json")
    }

    /// True when a VM was ever started here (and not undefined).
    pub(crate) async fn is_defined(&self) -> bool {
        tokio::fs::try_exists(self.spec_file())
            .await
            .unwrap_or(false)
    }

    /// Creates the directory, records `spec`, forgets the last shutoff reason and
    /// removes what a previous QEMU left behind.
    pub(crate) async fn prepare(&self, spec: &VmSpec) -> Result<()> {
        tokio::fs::create_dir_all(&self.path)
            .await
            .map_err(|e| Error::io("cannot create the run directory", &self.path, e))?;
        write_json(&self.spec_file(), spec).await?;
        let stale_files = [
            self.shutoff_file(),
            self.qmp_socket(),
            self.agent_socket(),
            self.pid_file(),
        ];
        for stale in stale_files {
            remove_if_exists(&stale).await?;
        }
        Ok(())
    }

    /// The spec recorded at the last start (with the NICs hot-plugged since).
    pub(crate) async fn read_spec(&self) -> Result<Option<VmSpec>> {
        read_json(&self.spec_file()).await
    }

    pub(crate) async fn write_spec(&self, spec: &VmSpec) -> Result<()> {
        write_json(&self.spec_file(), spec).await
    }

    /// The pid QEMU wrote, if any.
    pub(crate) async fn read_pid(&self) -> Option<i32> {
        let text = tokio::fs::read_to_string(self.pid_file()).await.ok()?;
        text.trim().parse().ok()
    }

    pub(crate) async fn read_shutoff(&self) -> Result<Option<ShutoffReason>> {
        read_json(&self.shutoff_file()).await
    }

    pub(crate) async fn write_shutoff(&self, reason: &ShutoffReason) -> Result<()> {
        write_json(&self.shutoff_file(), reason).await
    }

    /// Deletes the whole directory.
    pub(crate) async fn remove(&self) -> Result<()> {
        match tokio::fs::remove_dir_all(&self.path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("cannot remove the run directory", &self.path, e)),
        }
    }
}

async fn remove_if_exists(path: &Path) -> Result<()> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", path, e)),
    }
}

/// Writes `value` as JSON through a temporary file and a rename, so readers never see
/// half a file.
async fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| {
        Error::new(
            crate::ErrorKind::Io,
            format!("cannot encode {}", path.display()),
        )
        .with_source(e)
    })?;
    text.push(b'\n');
    let temporary = path.with_extension("json.tmp");
    tokio::fs::write(&temporary, &text)
        .await
        .map_err(|e| Error::io("cannot write", &temporary, e))?;
    tokio::fs::rename(&temporary, path)
        .await
        .map_err(|e| Error::io("cannot replace", path, e))
}

async fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let text = match tokio::fs::read(path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read", path, e)),
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        Error::new(
            crate::ErrorKind::Io,
            format!("cannot decode {}", path.display()),
        )
        .with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            name: "vm1".to_string(),
            memory_mib: 64,
            vcpus: 1,
            disks: Vec::new(),
            nics: Vec::new(),
            kernel: None,
            initrd: None,
            cmdline: None,
        }
    }

    #[tokio::test]
    async fn prepare_when_previous_shutoff_recorded_then_defined_and_reason_forgotten() {
        let root = tempfile::tempdir().unwrap();
        let dir = RunDir::new(root.path(), "vm1");
        dir.prepare(&spec()).await.unwrap();
        dir.write_shutoff(&ShutoffReason::Destroyed).await.unwrap();

        dir.prepare(&spec()).await.unwrap();

        assert!(dir.is_defined().await);
        assert_eq!(dir.read_shutoff().await.unwrap(), None);
    }

    #[tokio::test]
    async fn write_shutoff_when_saved_then_read_back_equal() {
        let root = tempfile::tempdir().unwrap();
        let dir = RunDir::new(root.path(), "vm1");
        dir.prepare(&spec()).await.unwrap();
        let reason = ShutoffReason::Saved {
            state_file: PathBuf::from("/states/a.mem"),
        };

        dir.write_shutoff(&reason).await.unwrap();

        assert_eq!(dir.read_shutoff().await.unwrap(), Some(reason));
    }
}
