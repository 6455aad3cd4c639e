//! A run directory in a temporary directory, a driver on it, and a guard that kills
//! every QEMU started under it when the test ends, passed or failed.
//!
//! The guests have no OS: a blank qcow2 disk, on which SeaBIOS prints to the serial
//! console and then waits. QEMU tests in one binary run one at a time (2 cores).

#![allow(dead_code)]

pub mod net;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hypervisor::{
    DiskFormat, DiskSource, DiskSpec, Hypervisor, QemuConfig, QemuHypervisor, VmSpec,
};
use tempfile::TempDir;

static ONE_QEMU_TEST_AT_A_TIME: Mutex<()> = Mutex::new(());

pub struct Harness {
    pub driver: QemuHypervisor,
    pub root: TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl Harness {
    pub fn new() -> Self {
        let serial = ONE_QEMU_TEST_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let root = tempfile::tempdir().unwrap();
        let driver = QemuHypervisor::new(config(root.path()));
        Self {
            driver,
            root,
            _serial: serial,
        }
    }

    /// A harness whose QEMUs run in network namespace `netns` (where the taps are).
    pub fn with_netns(netns: &str) -> Self {
        let mut harness = Self::new();
        let mut config = config(harness.root.path());
        config.netns = Some(netns.to_string());
        harness.driver = QemuHypervisor::new(config);
        harness
    }

    /// Another driver on the same run directory whose QEMUs run in `netns`.
    pub fn driver_in(&self, netns: &str) -> QemuHypervisor {
        let mut config = config(self.root.path());
        config.netns = Some(netns.to_string());
        QemuHypervisor::new(config)
    }

    /// Another driver on the same run directory, as after a service restart.
    pub fn restarted_driver(&self) -> QemuHypervisor {
        QemuHypervisor::new(config(self.root.path()))
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.path().join("run")
    }

    /// A 64 MiB, one-vCPU VM with a blank 16 MiB qcow2 disk `disk0`.
    pub fn spec(&self, name: &str) -> VmSpec {
        let disk = self.root.path().join(format!("{name}-disk0.qcow2"));
        if !disk.exists() {
            let status = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&disk)
                .arg("16M")
                .status()
                .unwrap();
            assert!(status.success());
        }
        VmSpec {
            name: name.to_string(),
            memory_mib: 64,
            vcpus: 1,
            disks: vec![DiskSpec {
                id: "disk0".to_string(),
                source: DiskSource::File(disk),
                format: DiskFormat::Qcow2,
                read_only: false,
            }],
            nics: Vec::new(),
            kernel: None,
            initrd: None,
            cmdline: None,
        }
    }

    /// A 256 MiB VM booting a qcow2 overlay of the project's test guest
    /// (`scripts/build-guest.sh`, or `$SNAPSTACK_GUEST_DIR`), which powers off on the
    /// ACPI power button. Panics when the guest is not built.
    pub fn guest_spec(&self, name: &str) -> VmSpec {
        let base = guest_dir().join("guest.qcow2");
        assert!(
            base.exists(),
            "{} missing: run scripts/build-guest.sh",
            base.display()
        );
        let overlay = self.root.path().join(format!("{name}-overlay.qcow2"));
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&base)
            .arg(&overlay)
            .status()
            .unwrap();
        assert!(status.success());
        let mut spec = self.spec(name);
        spec.memory_mib = 256;
        spec.disks[0].source = DiskSource::File(overlay);
        spec
    }

    /// Like `guest_spec`, booting the guest's kernel and initramfs directly with
    /// `extra` added to its command line (the writer's `snapstack.*` parameters).
    pub fn guest_kernel_spec(&self, name: &str, extra: &str) -> VmSpec {
        let dir = guest_dir();
        let cmdline = std::fs::read_to_string(dir.join("cmdline")).unwrap();
        let mut spec = self.guest_spec(name);
        spec.kernel = Some(dir.join("vmlinuz"));
        spec.initrd = Some(dir.join("initrd.img"));
        spec.cmdline = Some(format!("{} {extra}", cmdline.trim()));
        spec
    }

    /// The pid of the VM's QEMU, from its pid file.
    pub fn qemu_pid(&self, name: &str) -> i32 {
        let text = std::fs::read_to_string(self.run_dir().join(name).join("qemu.pid")).unwrap();
        text.trim().parse().unwrap()
    }

    /// Waits until the console log contains `needle`; returns the log.
    pub async fn wait_console(&self, name: &str, needle: &str) -> String {
        self.wait_console_for(name, needle, Duration::from_secs(10))
            .await
    }

    /// Like `wait_console`, for at most `timeout`.
    pub async fn wait_console_for(&self, name: &str, needle: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            let log = self.driver.console_log(name, None).await.unwrap();
            if log.contains(needle) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{needle:?} never appeared on the console of {name}");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.run_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            kill_qemu_of(&entry.path());
        }
    }
}

/// The test guest's build directory (`$SNAPSTACK_GUEST_DIR`, else `build/guest`).
fn guest_dir() -> PathBuf {
    std::env::var_os("SNAPSTACK_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/guest"))
}

fn config(root: &Path) -> QemuConfig {
    let mut config = QemuConfig::new(root.join("run"));
    config.start_timeout = Duration::from_secs(20);
    config.migration_timeout = Duration::from_secs(60);
    config
}

/// SIGKILLs the QEMU of a run directory, if its pid file names a QEMU of it.
fn kill_qemu_of(vm_dir: &Path) {
    let pid_file = vm_dir.join("qemu.pid");
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
    else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = cmdline
        .split(|&b| b == 0)
        .any(|arg| arg == pid_file.as_os_str().as_encoded_bytes());
    if ours {
        // SAFETY: kill(2) takes two integers; the pid was checked to be our QEMU.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Sends SIGKILL to `pid` behind the driver's back.
pub fn kill_behind_the_back(pid: i32) {
    // SAFETY: kill(2) takes two integers; the pid comes from the VM's pid file.
    let result = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(result, 0);
}
