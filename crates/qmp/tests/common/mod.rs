//! A throw-away `qemu-system-x86_64 -machine none` with a QMP socket, killed on drop.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use qmp::Client;
use tempfile::TempDir;

pub struct Qemu {
    child: Child,
    pub socket: PathBuf,
    pub dir: TempDir,
}

impl Qemu {
    /// Starts QEMU with no machine: enough for every QMP-only test.
    pub fn spawn() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-machine",
                "none",
                "-nodefaults",
                "-display",
                "none",
                "-qmp",
            ])
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, socket, dir }
    }

    /// Connects once the socket is up (QEMU needs a moment to create it).
    pub async fn connect(&self) -> Client {
        for _ in 0..250 {
            if let Ok(client) = Client::connect(&self.socket).await {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("QEMU did not open {}", self.socket.display());
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// Sends a signal by name (`STOP`, `TERM`, …) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}
