//! Quiescing a guest through the QEMU guest agent (QGA).
//!
//! Every VM has a guest-agent channel (see [`command_line`](super::command_line)): a
//! `virtserialport` named `org.qemu.guest_agent.0` whose host end is the unix socket
//! `qga.sock` in the run directory, served by QEMU. Whether anything answers depends on
//! the guest; QEMU accepts the connection either way, so an absent agent shows only as
//! silence, which the handshake turns into a fast
//! [`ErrorKind::GuestAgentUnavailable`].
//!
//! Protocol: JSON objects, one per line, both ways; one connection per operation, under
//! the VM's agent lock (QEMU serves one client per socket). A connection starts with
//! the handshake: a `0xFF` byte (resets the agent's parser, which may hold half a
//! request of a previous client), then `guest-sync-delimited` with a random id; the
//! agent answers `0xFF` followed by `{"return": id}`. Everything before that `0xFF`
//! and every reply with another id is stale (a reply the previous client timed out on)
//! and is dropped. After the handshake each command's reply is the next object.
//!
//! Kinds: no socket, no handshake reply within [`SYNC_TIMEOUT`], or a paused VM →
//! `GuestAgentUnavailable` (nothing was done in the guest); an error reply, a timeout
//! after the handshake or a lost connection → `GuestAgentFailed`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::QemuHypervisor;
use crate::error::{Error, ErrorKind, Result};
use qmp::RunState;

/// How long the agent may take to answer the handshake (and connecting may take):
/// the time an absent agent costs.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a thaw may take.
pub const THAW_TIMEOUT: Duration = Duration::from_secs(10);
/// Sentinel byte of `guest-sync-delimited`, and the parser reset sent to the agent.
const DELIMITER: u8 = 0xFF;
/// Longest reply line accepted.
const MAX_LINE: usize = 64 << 10;

impl QemuHypervisor {
    /// [`Hypervisor::freeze_filesystems`](crate::Hypervisor::freeze_filesystems).
    pub(super) async fn agent_freeze(&self, name: &str, timeout: Duration) -> Result<u32> {
        let started = Instant::now();
        let frozen = self
            .with_agent(name, "guest-fsfreeze-freeze", |mut agent| async move {
                let reply = agent
                    .execute("guest-fsfreeze-freeze", Value::Null, timeout)
                    .await?;
                agent.count(&reply, "guest-fsfreeze-freeze")
            })
            .await?;
        tracing::info!(
            vm = name,
            frozen,
            elapsed_ms = elapsed_ms(started),
            "guest frozen"
        );
        Ok(frozen)
    }

    /// [`Hypervisor::thaw_filesystems`](crate::Hypervisor::thaw_filesystems).
    pub(super) async fn agent_thaw(&self, name: &str) -> Result<u32> {
        let started = Instant::now();
        let thawed = self
            .with_agent(name, "guest-fsfreeze-thaw", |mut agent| async move {
                let reply = agent
                    .execute("guest-fsfreeze-thaw", Value::Null, THAW_TIMEOUT)
                    .await?;
                agent.count(&reply, "guest-fsfreeze-thaw")
            })
            .await?;
        tracing::info!(
            vm = name,
            thawed,
            elapsed_ms = elapsed_ms(started),
            "guest thawed"
        );
        Ok(thawed)
    }

    /// Whether the guest agent of VM `name` reports its filesystems frozen
    /// (`guest-fsfreeze-status`).
    pub async fn filesystems_frozen(&self, name: &str) -> Result<bool> {
        let command = "guest-fsfreeze-status";
        self.with_agent(name, command, |mut agent| async move {
            let reply = agent.execute(command, Value::Null, SYNC_TIMEOUT).await?;
            match reply.as_str() {
                Some("frozen") => Ok(true),
                Some("thawed") => Ok(false),
                _ => Err(agent.failed(format!("{command} answered {reply}"))),
            }
        })
        .await
    }

    /// Runs `operation` on a synchronised agent connection of a running VM, under the
    /// VM's agent lock.
    async fn with_agent<T, F, Fut>(&self, name: &str, what: &str, operation: F) -> Result<T>
    where
        F: FnOnce(Agent) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let vm = self.vm(name)?;
        let _agent_lock = vm.agent.lock().await;
        let live = self.live(&vm).await?;
        if live.state != RunState::Running {
            return Err(Error::new(
                ErrorKind::GuestAgentUnavailable,
                format!(
                    "VM {name} is {}: its guest agent cannot answer {what}",
                    live.state.as_str()
                ),
            ));
        }
        let agent = Agent::connect(&vm.dir.agent_socket(), name).await?;
        operation(agent).await
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One synchronised connection to a guest agent.
pub(crate) struct Agent {
    vm: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Agent {
    /// Connects to the agent socket and runs the handshake, within [`SYNC_TIMEOUT`].
    pub(crate) async fn connect(socket: &Path, vm: &str) -> Result<Self> {
        let unavailable = |detail: String| {
            Error::new(
                ErrorKind::GuestAgentUnavailable,
                format!("no guest agent in VM {vm}: {detail}"),
            )
        };
        let stream = tokio::time::timeout(SYNC_TIMEOUT, UnixStream::connect(socket))
            .await
            .map_err(|_| unavailable(format!("connecting took over {SYNC_TIMEOUT:?}")))?
            .map_err(|e| {
                unavailable(format!("cannot connect to {}", socket.display())).with_source(e)
            })?;
        let (read, writer) = stream.into_split();
        let mut agent = Self {
            vm: vm.to_string(),
            reader: BufReader::new(read),
            writer,
        };
        let id = rand::random::<u32>() >> 1;
        match tokio::time::timeout(SYNC_TIMEOUT, agent.sync(id)).await {
            Ok(Ok(())) => Ok(agent),
            Ok(Err(error)) => Err(unavailable(format!("the handshake failed: {error}"))),
            Err(_) => Err(unavailable(format!(
                "nothing answered guest-sync-delimited within {SYNC_TIMEOUT:?}"
            ))),
        }
    }

    /// The handshake: parser reset, `guest-sync-delimited`, skip to our reply.
    async fn sync(&mut self, id: u32) -> Result<()> {
        let request = json!({"execute": "guest-sync-delimited", "arguments": {"id": id}});
        let mut bytes = vec![DELIMITER];
        bytes.extend(request.to_string().into_bytes());
        bytes.push(b'\n');
        self.send(&bytes).await?;
        loop {
            let mut skipped = Vec::new();
            let read = (&mut self.reader)
                .take(MAX_LINE as u64)
                .read_until(DELIMITER, &mut skipped)
                .await;
            let read =
                read.map_err(|e| self.failed("cannot read the agent socket").with_source(e))?;
            if read == 0 {
                return Err(self.failed("the agent socket closed"));
            }
            if skipped.last() != Some(&DELIMITER) {
                continue;
            }
            // A sentinel: our reply, or a stale one, follows.
            let reply = self.read_object().await?;
            if reply.get("return").and_then(Value::as_u64) == Some(u64::from(id)) {
                return Ok(());
            }
        }
    }

    /// Runs `command` and returns its `return` member, within `timeout`.
    pub(crate) async fn execute(
        &mut self,
        command: &str,
        arguments: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let mut request = json!({ "execute": command });
        if !arguments.is_null() {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string().into_bytes();
        line.push(b'\n');
        self.send(&line).await?;
        let mut reply = tokio::time::timeout(timeout, self.read_object())
            .await
            .map_err(|_| self.failed(format!("no reply to {command} within {timeout:?}")))??;
        if let Some(error) = reply.get("error") {
            let class = error.get("class").and_then(Value::as_str).unwrap_or("?");
            let desc = error.get("desc").and_then(Value::as_str).unwrap_or("");
            return Err(self.failed(format!("{command} failed: {desc} ({class})")));
        }
        match reply.get_mut("return") {
            Some(value) => Ok(value.take()),
            None => Err(self.failed(format!("{command} got a reply without a result"))),
        }
    }

    /// A count returned by freeze or thaw.
    fn count(&self, reply: &Value, command: &str) -> Result<u32> {
        reply
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.failed(format!("{command} answered {reply}, not a count")))
    }

    /// The next JSON object on the socket, skipping blank and unparsable lines.
    async fn read_object(&mut self) -> Result<Value> {
        loop {
            let mut line = Vec::new();
            let read = (&mut self.reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
                .await;
            let read =
                read.map_err(|e| self.failed("cannot read the agent socket").with_source(e))?;
            if read == 0 {
                return Err(self.failed("the agent socket closed"));
            }
            let text = line.strip_prefix(&[DELIMITER]).unwrap_or(&line);
            match serde_json::from_slice::<Value>(text) {
                Ok(value) if value.is_object() => return Ok(value),
                _ => tracing::debug!(vm = %self.vm, "guest agent sent something else, skipped"),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes).await.map_err(|e| {
            self.failed("cannot write to the agent socket")
                .with_source(e)
        })
    }

    fn failed(&self, detail: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::GuestAgentFailed,
            format!("guest agent of VM {}: {detail}", self.vm),
        )
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixListener;

    use super::*;

    /// A scripted agent: for each request line it receives, writes the next answer
    /// (with the sync id put in where `{id}` is).
    fn serve(listener: UnixListener, answers: Vec<&'static str>) {
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            let mut id = String::new();
            for answer in answers {
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line).await.unwrap() == 0 {
                    return;
                }
                let text = String::from_utf8_lossy(&line)
                    .trim_start_matches('\u{fffd}')
                    .to_string();
                if let Ok(request) = serde_json::from_str::<Value>(&text) {
                    if let Some(n) = request["arguments"]["id"].as_u64() {
                        id = n.to_string();
                    }
                }
                let answer = answer.replace("{id}", &id).replace("<FF>", "\u{ff}");
                let bytes: Vec<u8> = answer
                    .chars()
                    .map(|c| if c == '\u{ff}' { DELIMITER } else { c as u8 })
                    .collect();
                write.write_all(&bytes).await.unwrap();
            }
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest).await;
        });
    }

    fn socket() -> (tempfile::TempDir, std::path::PathBuf, UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&path).unwrap();
        (dir, path, listener)
    }

    #[tokio::test]
    async fn connect_when_stale_replies_before_and_after_sentinel_then_synced_on_our_id() {
        let (_dir, path, listener) = socket();
        serve(
            listener,
            vec![
                "{\"return\": 3}\n<FF>{\"return\": 7}\n<FF>{\"return\": {id}}\n",
                "{\"return\": 2}\n",
            ],
        );

        let mut agent = Agent::connect(&path, "vm1").await.unwrap();
        let reply = agent
            .execute("guest-fsfreeze-freeze", Value::Null, SYNC_TIMEOUT)
            .await
            .unwrap();

        assert_eq!(agent.count(&reply, "freeze").unwrap(), 2);
    }

    #[tokio::test]
    async fn connect_when_nothing_answers_then_unavailable_within_the_sync_timeout() {
        let (_dir, path, listener) = socket();
        serve(listener, Vec::new());
        let started = Instant::now();

        let error = Agent::connect(&path, "vm1").await.err().unwrap();

        assert_eq!(error.kind(), ErrorKind::GuestAgentUnavailable);
        assert!(started.elapsed() < SYNC_TIMEOUT + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn connect_when_no_socket_then_unavailable() {
        let dir = tempfile::tempdir().unwrap();

        let error = Agent::connect(&dir.path().join("qga.sock"), "vm1")
            .await
            .err()
            .unwrap();

        assert_eq!(error.kind(), ErrorKind::GuestAgentUnavailable);
    }

    #[tokio::test]
    async fn execute_when_error_reply_then_failed_with_class_and_desc() {
        let (_dir, path, listener) = socket();
        serve(
            listener,
            vec![
                "<FF>{\"return\": {id}}\n",
                "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"nope\"}}\n",
            ],
        );
        let mut agent = Agent::connect(&path, "vm1").await.unwrap();

        let error = agent
            .execute("guest-exec", Value::Null, SYNC_TIMEOUT)
            .await
            .unwrap_err();

        assert_eq!(error.kind(), ErrorKind::GuestAgentFailed);
        assert!(
            error.to_string().contains("nope (CommandNotFound)"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn execute_when_no_reply_then_failed_after_the_timeout() {
        let (_dir, path, listener) = socket();
        serve(listener, vec!["<FF>{\"return\": {id}}\n"]);
        let mut agent = Agent::connect(&path, "vm1").await.unwrap();

        let error = agent
            .execute(
                "guest-fsfreeze-freeze",
                Value::Null,
                Duration::from_millis(100),
            )
            .await
            .unwrap_err();

        assert_eq!(error.kind(), ErrorKind::GuestAgentFailed);
    }
}
