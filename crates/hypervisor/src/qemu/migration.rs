//! Memory state to and from a file, by migration through `exec:` (QEMU 7.2 has no
//! `file:` URI).
//!
//! Save (as `virsh managedsave`): raise `max-bandwidth` (QEMU 7.2 defaults to 128 MiB/s)
//! so that saving is not throttled, `stop` the VM so one pass copies a consistent state,
//! `migrate exec:cat > '<file>.part' && touch '<file>.written'`, poll `query-migrate`
//! until `completed`, then the caller quits QEMU. QEMU reports `completed` before it has
//! necessarily closed the pipe, so `cat` may still be writing when QEMU is gone: the
//! marker says `cat` is done, and [`wait_written`] — called only once QEMU said
//! `completed` — waits for it, fsyncs the stream and renames it to `<file>`. `cat` also
//! ends well when QEMU dies mid-stream (a truncated stream is still an EOF), so the
//! rename is never the shell's: a state file that exists is always complete.
//!
//! Load: QEMU started with `-incoming defer -S`, `migrate-incoming exec:cat '<file>'`,
//! poll `query-status` until it leaves `inmigrate`. When loading fails QEMU 7.2 exits
//! (status 1, message on stderr); the caller sees the monitor disconnect.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qmp::{Client, RunState};
use serde_json::json;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::spec::utf8_path;

/// Bandwidth limit while saving: 1 TiB/s, i.e. none (QEMU 7.2 defaults to 128 MiB/s).
pub(crate) const MAX_BANDWIDTH: u64 = 1 << 40;
/// How often to ask QEMU how far the migration is.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Where the stream is written before it is renamed to `state_file`.
pub(crate) fn partial_file(state_file: &Path) -> PathBuf {
    let mut name = state_file.as_os_str().to_os_string();
    name.push(".part");
    PathBuf::from(name)
}

/// What `cat` touches once it has written the whole stream it was given.
fn written_marker(state_file: &Path) -> PathBuf {
    let mut name = state_file.as_os_str().to_os_string();
    name.push(".written");
    PathBuf::from(name)
}

/// The `exec:` URI that writes the stream to `state_file`'s partial file
/// (see the module header); a stale marker is removed first.
pub(crate) fn save_uri(state_file: &Path) -> Result<String> {
    let _ = std::fs::remove_file(written_marker(state_file));
    let marker = shell_quote(utf8_path(&written_marker(state_file))?);
    let partial = shell_quote(utf8_path(&partial_file(state_file))?);
    Ok(format!("exec:cat > {partial} && touch {marker}"))
}

/// The `exec:` URI that reads the stream from `state_file`.
pub(crate) fn load_uri(state_file: &Path) -> Result<String> {
    Ok(format!("exec:cat {}", shell_quote(utf8_path(state_file)?)))
}

/// Quotes `text` for `/bin/sh`, which QEMU runs `exec:` commands with.
pub(crate) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Starts the outgoing migration of a (paused) VM to `state_file` and waits until QEMU
/// says it is complete.
pub(crate) async fn save(qmp: &Client, state_file: &Path, timeout: Duration) -> Result<()> {
    let failed = |what: &str, e: qmp::Error| Error::monitor(format!("{what} failed"), e);
    let parameters = json!({ "max-bandwidth": MAX_BANDWIDTH });
    qmp.execute("migrate-set-parameters", parameters)
        .await
        .map_err(|e| failed("migrate-set-parameters", e))?;
    // A restore point interrupted by a crash of the service may have left
    // `background-snapshot` on (see restore.rs): a save must be an ordinary
    // migration of the stopped VM, never resumed by QEMU.
    let capabilities = json!({
        "capabilities": [{ "capability": "background-snapshot", "state": false }]
    });
    qmp.execute("migrate-set-capabilities", capabilities)
        .await
        .map_err(|e| failed("migrate-set-capabilities", e))?;
    let uri = save_uri(state_file)?;
    qmp.execute("migrate", json!({ "uri": uri }))
        .await
        .map_err(|e| failed("migrate", e))?;
    let deadline = Instant::now() + timeout;
    loop {
        let info = qmp
            .execute("query-migrate", json!({}))
            .await
            .map_err(|e| failed("query-migrate", e))?;
        match info["status"].as_str().unwrap_or_default() {
            "completed" => return Ok(()),
            "failed" | "cancelled" => {
                let why = info["error-desc"].as_str().unwrap_or("no reason given");
                return Err(Error::new(
                    ErrorKind::Migration,
                    format!(
                        "saving the memory state to {} failed: {why}",
                        state_file.display()
                    ),
                ));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            let _ = qmp.execute("migrate_cancel", json!({})).await;
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("saving the memory state took more than {timeout:?}"),
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// After QEMU said the migration `completed`: waits until the writer is done
/// (its marker), makes the stream durable and publishes it as `state_file`.
pub(crate) async fn wait_written(state_file: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let marker = written_marker(state_file);
    while !tokio::fs::try_exists(&marker).await.unwrap_or(false) {
        if Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::Migration,
                format!(
                    "the memory state {} was never completed",
                    state_file.display()
                ),
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let partial = partial_file(state_file);
    sync(&partial).await?;
    tokio::fs::rename(&partial, state_file)
        .await
        .map_err(|e| Error::io("cannot publish", state_file, e))?;
    let _ = tokio::fs::remove_file(&marker).await;
    if let Some(parent) = state_file.parent() {
        sync(parent).await?;
    }
    Ok(())
}

async fn sync(path: &Path) -> Result<()> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io("cannot open", path, e))?;
    file.sync_all()
        .await
        .map_err(|e| Error::io("cannot sync", path, e))
}

/// Feeds the stream of `uri` (`exec:…`, see [`load_uri`]) to a QEMU started with
/// `-incoming defer` and waits until it is loaded. Fails with `Disconnected` monitor
/// errors when QEMU exits on a bad stream.
pub(crate) async fn load_from(qmp: &Client, uri: &str, timeout: Duration) -> Result<()> {
    let failed = |what: &str, e: qmp::Error| Error::monitor(format!("{what} failed"), e);
    qmp.execute("migrate-incoming", json!({ "uri": uri }))
        .await
        .map_err(|e| failed("migrate-incoming", e))?;
    let deadline = Instant::now() + timeout;
    loop {
        let status = qmp
            .query_status()
            .await
            .map_err(|e| failed("query-status", e))?;
        if status.status != RunState::Inmigrate {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("loading the memory state took more than {timeout:?}"),
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_uri_when_path_has_quote_then_shell_quoted_with_partial_file() {
        let file = Path::new("/states/it's.mem");

        let uri = save_uri(file).unwrap();

        assert_eq!(
            uri,
            r"exec:cat > '/states/it'\''s.mem.part' && touch '/states/it'\''s.mem.written'"
        );
    }

    #[tokio::test]
    async fn save_uri_when_run_by_sh_then_partial_written_and_published_by_wait_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("odd 'name'.mem");
        let command = save_uri(&file)
            .unwrap()
            .strip_prefix("exec:")
            .unwrap()
            .to_string();

        let mut child = tokio::process::Command::new("/bin/sh")
            .args(["-c", &command])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stdin, b"memory")
            .await
            .unwrap();
        drop(stdin);
        let status = child.wait().await.unwrap();
        let before_publish = file.exists();
        wait_written(&file, Duration::from_secs(5)).await.unwrap();

        assert!(status.success());
        assert!(!before_publish, "the shell never publishes the state");
        assert_eq!(std::fs::read(&file).unwrap(), b"memory");
        assert!(!partial_file(&file).exists());
        assert!(!written_marker(&file).exists());
    }

    #[tokio::test]
    async fn wait_written_when_writer_never_finished_then_no_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cut.mem");
        std::fs::write(partial_file(&file), b"half").unwrap();

        let waited = wait_written(&file, Duration::from_millis(50)).await;

        assert!(waited.is_err());
        assert!(!file.exists());
    }
}
