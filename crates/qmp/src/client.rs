//! One QMP connection: greeting, capabilities negotiation, and command/reply matching.
//!
//! ```text
//!  execute() ──line──▶ writer task ──▶ socket ──▶ QEMU
//!     ▲ oneshot                                    │
//!     └──── pending[id] ◀── reader task ◀──────────┘
//!                               └──▶ broadcast ──▶ EventStream(s)
//! ```
//!
//! Every command carries a unique numeric `id`; the reader task routes each reply to the
//! caller waiting for that id, so any number of tasks may call [`Client::execute`] at the
//! same time. Lines are written by a single writer task, so a caller that gives up
//! (drops its future) never leaves half a command on the socket.
//!
//! When the connection ends (QEMU exits, socket error) every pending call fails with
//! [`ErrorKind::Disconnected`](crate::ErrorKind::Disconnected), as does every later call,
//! and event streams end after the events already received. Dropping the last clone of
//! a [`Client`] stops both tasks and closes the socket (QEMU serves one QMP client per
//! socket at a time, so this matters).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventStream};

/// How long [`Client::connect`] waits for the greeting and the capabilities reply.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many events a slow [`EventStream`] may fall behind before it loses some.
const EVENT_BUFFER: usize = 256;

/// QEMU's version, from the QMP greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
    /// Distribution package string, e.g. `Debian 1:7.2+dfsg-7+deb12u18+b3`.
    pub package: String,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// A connected, negotiated QMP client. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("version", &self.inner.version)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

struct Inner {
    version: Version,
    capabilities: Vec<String>,
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    next_id: AtomicU64,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.shared.close("the client was dropped");
    }
}

/// State shared by the client and its reader and writer tasks.
struct Shared {
    state: Mutex<State>,
    closed: watch::Sender<bool>,
}

struct State {
    pending: HashMap<u64, PendingCall>,
    /// `None` once closed, so that event streams end.
    events: Option<broadcast::Sender<Event>>,
    /// Why the connection closed, once it has.
    closed: Option<String>,
}

struct PendingCall {
    command: String,
    reply: oneshot::Sender<Result<Value>>,
}

impl Client {
    /// Connects to a QMP unix socket, reads the greeting and negotiates capabilities.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self> {
        Self::connect_with_timeout(path, DEFAULT_CONNECT_TIMEOUT).await
    }

    /// Like [`Client::connect`], waiting at most `timeout` for the greeting and for the
    /// capabilities reply. QEMU only greets one client at a time: if another client holds
    /// the socket, this fails with [`ErrorKind::Connect`] after `timeout`.
    pub async fn connect_with_timeout(path: impl AsRef<Path>, timeout: Duration) -> Result<Self> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).await.map_err(|e| {
            Error::new(
                ErrorKind::Connect,
                format!("cannot connect to the QMP socket {}", path.display()),
            )
            .with_source(e)
        })?;
        let (read, write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let greeting = tokio::time::timeout(timeout, read_greeting(&mut reader))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Connect,
                    format!(
                        "QEMU sent no QMP greeting on {} within {timeout:?} (is another client connected?)",
                        path.display()
                    ),
                )
            })??;
        let client = Self::start(greeting, reader, write);
        tokio::time::timeout(timeout, client.execute("qmp_capabilities", Value::Null))
            .await
            .map_err(|_| Error::timeout("the qmp_capabilities reply"))??;
        tracing::debug!(socket = %path.display(), version = %client.version(), "QMP connected");
        Ok(client)
    }

    fn start(greeting: Greeting, reader: BufReader<OwnedReadHalf>, writer: OwnedWriteHalf) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: HashMap::new(),
                events: Some(events),
                closed: None,
            }),
            closed: watch::Sender::new(false),
        });
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let tasks = [
            tokio::spawn(read_loop(reader, Arc::clone(&shared))),
            tokio::spawn(write_loop(writer, outgoing_rx, Arc::clone(&shared))),
        ];
        Self {
            inner: Arc::new(Inner {
                version: greeting.version,
                capabilities: greeting.capabilities,
                shared,
                outgoing,
                next_id: AtomicU64::new(1),
                tasks,
            }),
        }
    }

    /// QEMU's version, as announced in the greeting.
    pub fn version(&self) -> &Version {
        &self.inner.version
    }

    /// The capabilities QEMU offered in the greeting (none are enabled).
    pub fn capabilities(&self) -> &[String] {
        &self.inner.capabilities
    }

    /// True until the connection is lost or closed.
    pub fn is_connected(&self) -> bool {
        !*self.inner.shared.closed.borrow()
    }

    /// Resolves when the connection is lost (QEMU exited, socket error).
    pub async fn disconnected(&self) {
        let mut closed = self.inner.shared.closed.subscribe();
        // The sender lives in `self`, so `wait_for` only returns once the value is true.
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Runs `command` with `arguments` (`Value::Null` or `{}` for none) and returns the
    /// `return` member of QEMU's reply.
    pub async fn execute(&self, command: &str, arguments: Value) -> Result<Value> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({ "execute": command, "id": id });
        if !is_empty_arguments(&arguments) {
            message["arguments"] = arguments;
        }
        let mut line = message.to_string().into_bytes();
        line.push(b'\n');

        let reply = self.inner.shared.register(id, command)?;
        tracing::trace!(command, id, "QMP execute");
        if self.inner.outgoing.send(line).is_err() {
            self.inner.shared.forget(id);
            return Err(Error::disconnected("the writer stopped"));
        }
        reply
            .await
            .unwrap_or_else(|_| Err(Error::disconnected("the reader stopped")))
    }

    /// Like [`Client::execute`], deserializing the `return` member into `T`.
    pub async fn execute_as<T: DeserializeOwned>(
        &self,
        command: &str,
        arguments: Value,
    ) -> Result<T> {
        let value = self.execute(command, arguments).await?;
        serde_json::from_value(value).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("the reply to `{command}` has an unexpected shape"),
            )
            .with_source(e)
        })
    }

    /// The events that arrive from now on. Create the stream *before* running the
    /// command whose event you wait for: QEMU often sends the event before the reply.
    pub fn events(&self) -> EventStream {
        let state = self.inner.shared.lock();
        let receiver = match &state.events {
            Some(sender) => sender.subscribe(),
            // Closed: a stream that ends at once.
            None => broadcast::channel(1).1,
        };
        EventStream::new(receiver)
    }

    /// Waits for an event called `name` satisfying `predicate`, among the events that
    /// arrive from now on (see [`Client::events`] to avoid missing an early one).
    pub async fn wait_event(
        &self,
        name: &str,
        predicate: impl FnMut(&Event) -> bool,
        timeout: Duration,
    ) -> Result<Event> {
        self.events().wait_for(name, predicate, timeout).await
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the maps consistent: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(&self, id: u64, command: &str) -> Result<oneshot::Receiver<Result<Value>>> {
        let mut state = self.lock();
        if let Some(why) = &state.closed {
            return Err(Error::disconnected(why));
        }
        let (reply, receiver) = oneshot::channel();
        let command = command.to_string();
        state.pending.insert(id, PendingCall { command, reply });
        Ok(receiver)
    }

    fn forget(&self, id: u64) {
        self.lock().pending.remove(&id);
    }

    /// Fails every pending call and ends every event stream. Idempotent.
    fn close(&self, why: &str) {
        let mut state = self.lock();
        if state.closed.is_some() {
            return;
        }
        tracing::debug!(why, "QMP connection closed");
        state.closed = Some(why.to_string());
        state.events = None;
        for (_, call) in state.pending.drain() {
            let _ = call.reply.send(Err(Error::disconnected(why)));
        }
        drop(state);
        self.closed.send_replace(true);
    }

    /// Handles one line from QEMU: an event, or the reply to a pending call.
    fn dispatch(&self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let mut message: Value = match serde_json::from_str(line) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, line, "QEMU sent a line that is not JSON, ignored");
                return;
            }
        };
        if let Some(event) = Event::from_message(&mut message) {
            tracing::trace!(event = %event.name, "QMP event");
            if let Some(events) = &self.lock().events {
                // No subscriber is fine: events are dropped.
                let _ = events.send(event);
            }
            return;
        }
        let Some(id) = message.get("id").and_then(Value::as_u64) else {
            tracing::warn!(line, "QEMU sent a reply without our id, ignored");
            return;
        };
        let Some(call) = self.lock().pending.remove(&id) else {
            tracing::debug!(id, "reply to a call nobody waits for any more");
            return;
        };
        let result = reply_result(&call.command, &mut message);
        let _ = call.reply.send(result);
    }
}

/// `Ok(return)` or the mapped error of a reply message.
fn reply_result(command: &str, message: &mut Value) -> Result<Value> {
    if let Some(value) = message.get_mut("return") {
        return Ok(value.take());
    }
    if let Some(error) = message.get("error") {
        let field = |key: &str| {
            error
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        return Err(Error::reply(command, field("class"), field("desc")));
    }
    Err(Error::new(
        ErrorKind::Protocol,
        format!("the reply to `{command}` has neither `return` nor `error`"),
    ))
}

fn is_empty_arguments(arguments: &Value) -> bool {
    match arguments {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

struct Greeting {
    version: Version,
    capabilities: Vec<String>,
}

async fn read_greeting(reader: &mut BufReader<OwnedReadHalf>) -> Result<Greeting> {
    let mut line = String::new();
    let read = reader.read_line(&mut line).await.map_err(|e| {
        Error::new(ErrorKind::Connect, "reading the QMP greeting failed").with_source(e)
    })?;
    if read == 0 {
        return Err(Error::new(
            ErrorKind::Connect,
            "QEMU closed the QMP socket before greeting",
        ));
    }
    parse_greeting(&line)
}

fn parse_greeting(line: &str) -> Result<Greeting> {
    let bad = || {
        Error::new(
            ErrorKind::Protocol,
            format!("not a QMP greeting: {}", line.trim()),
        )
    };
    let message: Value = serde_json::from_str(line).map_err(|e| bad().with_source(e))?;
    let qmp = message.get("QMP").ok_or_else(bad)?;
    let qemu = qmp.pointer("/version/qemu").ok_or_else(bad)?;
    let number = |key: &str| {
        qemu.get(key)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(bad)
    };
    let version = Version {
        major: number("major")?,
        minor: number("minor")?,
        micro: number("micro")?,
        package: qmp
            .pointer("/version/package")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    let capabilities = qmp
        .get("capabilities")
        .and_then(Value::as_array)
        .map(|caps| {
            caps.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(Greeting {
        version,
        capabilities,
    })
}

async fn read_loop(mut reader: BufReader<OwnedReadHalf>, shared: Arc<Shared>) {
    let mut line = String::new();
    let why = loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) => break "QEMU closed the connection".to_string(),
            Ok(_) => shared.dispatch(&line),
            Err(error) => break format!("reading from QEMU failed: {error}"),
        }
    };
    shared.close(&why);
}

async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    while let Some(line) = outgoing.recv().await {
        if let Err(error) = writer.write_all(&line).await {
            shared.close(&format!("writing to QEMU failed: {error}"));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_greeting_when_qemu_7_2_then_reads_version_and_capabilities() {
        let line = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2"}, "capabilities": ["oob"]}}"#;

        let greeting = parse_greeting(line).unwrap();

        assert_eq!(greeting.version.to_string(), "7.2.22");
        assert_eq!(greeting.version.package, "Debian 1:7.2");
        assert_eq!(greeting.capabilities, ["oob"]);
    }

    #[test]
    fn parse_greeting_when_not_qmp_then_protocol_error() {
        let line = r#"{"hello": 1}"#;

        let error = parse_greeting(line).err().unwrap();

        assert_eq!(error.kind(), ErrorKind::Protocol);
    }

    #[test]
    fn reply_result_when_error_reply_then_class_and_desc_kept() {
        let mut message = json!({"id": 3, "error": {"class": "GenericError", "desc": "boom"}});

        let error = reply_result("stop", &mut message).err().unwrap();

        assert_eq!(error.kind(), ErrorKind::Command);
        assert_eq!(error.class(), Some("GenericError"));
        assert_eq!(error.desc(), Some("boom"));
    }

    #[test]
    fn reply_result_when_return_then_value() {
        let mut message = json!({"id": 3, "return": {"running": true}});

        let value = reply_result("query-status", &mut message).unwrap();

        assert_eq!(value, json!({"running": true}));
    }
}
