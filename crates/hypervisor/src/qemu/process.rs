//! The QEMU process: spawned so that it outlives the service, found again by pid.
//!
//! QEMU is started in its own session (`setsid`), with stdin on `/dev/null` and
//! stdout/stderr appended to `qemu.log`: no pipe, no controlling terminal, no signal of
//! the service's process group reaches it, so the service can die and restart while VMs
//! run. (`-daemonize` would do the same but sends QEMU's later stderr to `/dev/null`.)
//!
//! With a network namespace, QEMU is moved into it between fork and exec (`setns(2)` on
//! a descriptor opened before the fork), so it opens its taps by name there while the
//! service stays in the host's namespace.
//!
//! A pid alone is not trusted (pids are reused): a process counts as "the QEMU of this
//! run directory" only if its command line has `-pidfile <our pid file>`. A zombie has an
//! empty command line, so it counts as gone.

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How often to look again while waiting for a process to go.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Spawns `binary args…` detached from this process (see the module header), inside
/// the network namespace `netns` (an open `/run/netns/<name>`) when given.
pub(crate) fn spawn_detached(
    binary: &Path,
    args: &[String],
    log: std::fs::File,
    netns: Option<&std::fs::File>,
) -> io::Result<Child> {
    use std::os::fd::AsRawFd;
    let netns_fd = netns.map(AsRawFd::as_raw_fd);
    let mut command = Command::new(binary);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec; it only calls setsid(2)
    // and setns(2), which are async-signal-safe, on a descriptor the parent keeps open
    // until spawn returns, and builds its error without allocating.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if let Some(fd) = netns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command.spawn()
}

/// True when `pid` is a live QEMU started with `-pidfile pid_file`.
pub(crate) async fn is_qemu_of(pid: i32, pid_file: &Path) -> bool {
    let Ok(cmdline) = tokio::fs::read(format!("/proc/{pid}/cmdline")).await else {
        return false;
    };
    let Some(pid_file) = pid_file.to_str() else {
        return false;
    };
    let mut args = cmdline.split(|&b| b == 0);
    while let Some(arg) = args.next() {
        if arg == b"-pidfile" {
            return args.next() == Some(pid_file.as_bytes());
        }
    }
    false
}

/// Sends `signal` to `pid`, which must be a single process (never 0 or negative, which
/// kill(2) would apply to whole process groups).
/// The network namespace `name` (an `ip netns` name), opened for `setns(2)` in
/// [`spawn_detached`]. A VM without NICs starts where it is when the namespace does not
/// exist (yet): no network does.
pub(crate) async fn open_netns(
    name: Option<&str>,
    has_nics: bool,
) -> crate::Result<Option<std::fs::File>> {
    let Some(name) = name else {
        return Ok(None);
    };
    let path = Path::new("/run/netns").join(name);
    if !has_nics && !tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Ok(None);
    }
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        crate::Error::new(
            crate::ErrorKind::StartFailed,
            format!("cannot open network namespace {name}"),
        )
        .with_source(e)
    })?;
    Ok(Some(file.into_std().await))
}

pub(crate) fn signal(pid: i32, signal: libc::c_int) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        ));
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let result = unsafe { libc::kill(pid, signal) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits until `pid` is no longer the QEMU of `pid_file`; false on timeout.
pub(crate) async fn wait_gone(pid: i32, pid_file: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_qemu_of(pid, pid_file).await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_when_pid_is_zero_then_refused() {
        let pid = 0;

        let result = signal(pid, 0);

        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn is_qemu_of_when_pid_is_this_test_then_false() {
        let pid = i32::try_from(std::process::id()).unwrap();

        let found = is_qemu_of(pid, Path::new("/run/x/qemu.pid")).await;

        assert!(!found);
    }

    #[tokio::test]
    async fn spawn_detached_when_child_runs_then_it_leads_its_own_session() {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let args = ["-c".to_string(), "cut -d' ' -f6 /proc/$$/stat".to_string()];

        let child = spawn_detached(Path::new("/bin/sh"), &args, log, None).unwrap();
        let pid = child.id().unwrap();
        let output = child.wait_with_output().await.unwrap();

        assert!(output.status.success());
        let sid = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(sid.trim(), pid.to_string());
    }
}
