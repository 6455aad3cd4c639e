//! Block-graph work on a live VM: finding a disk's current top node and
//! taking an external snapshot of it with `blockdev-snapshot-sync`.
//!
//! A disk `<id>` is attached as device `<id>-dev`; after snapshots its top
//! node is no longer `<id>` but the newest overlay's node, so the top is
//! always looked up through `query-block` by the device, never assumed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qmp::Client;
use serde_json::{json, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::spec::utf8_path;

/// A disk's current top node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Top {
    pub node: String,
    pub file: PathBuf,
}

pub(crate) async fn run(
    qmp: &Client,
    vm: &str,
    command: &str,
    args: Value,
    timeout: Duration,
) -> Result<Value> {
    tokio::time::timeout(timeout, qmp.execute(command, args))
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!("VM {vm} did not answer {command} within {timeout:?}"),
            )
        })?
        .map_err(|e| Error::monitor(format!("{command} on VM {vm} failed"), e))
}

/// The top node of disk `disk_id` (device `<disk_id>-dev`).
pub(crate) async fn top_of(
    qmp: &Client,
    vm: &str,
    disk_id: &str,
    timeout: Duration,
) -> Result<Top> {
    let blocks = run(qmp, vm, "query-block", Value::Null, timeout).await?;
    let device = format!("/{disk_id}-dev/");
    let entry = blocks
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["qdev"].as_str().is_some_and(|q| q.contains(&device)))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("VM {vm} has no disk {disk_id}"),
            )
        })?;
    let inserted = &entry["inserted"];
    let node = inserted["node-name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let file = inserted["file"].as_str().unwrap_or_default();
    if node.is_empty() || file.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("disk {disk_id} of VM {vm} has no medium"),
        ));
    }
    Ok(Top {
        node,
        file: PathBuf::from(file),
    })
}

/// `blockdev-snapshot-sync` of disk `disk_id` onto a new qcow2 at `overlay`.
pub(crate) async fn snapshot_sync(
    qmp: &Client,
    vm: &str,
    disk_id: &str,
    overlay: &Path,
    timeout: Duration,
) -> Result<()> {
    let top = top_of(qmp, vm, disk_id, timeout).await?;
    let args = snapshot_sync_args(&top, disk_id, overlay)?;
    run(qmp, vm, "blockdev-snapshot-sync", args, timeout)
        .await
        .map(drop)
}

/// The arguments of `blockdev-snapshot-sync` putting a new qcow2 at
/// `overlay` over `top`, the current top of disk `disk_id` (also usable as a
/// `transaction` action's data).
pub(crate) fn snapshot_sync_args(top: &Top, disk_id: &str, overlay: &Path) -> Result<Value> {
    let stem = overlay
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("snap");
    // Node names must be unique within the VM. The unique part of an
    // overlay's name is its end (`<server id>-<random>`): a second snapshot
    // of the same disk would otherwise reuse the first one's node name.
    let alnum: Vec<char> = stem.chars().filter(char::is_ascii_alphanumeric).collect();
    let suffix: String = alnum[alnum.len().saturating_sub(12)..].iter().collect();
    Ok(json!({
        "node-name": top.node,
        "snapshot-file": utf8_path(overlay)?,
        "snapshot-node-name": format!("{disk_id}-{suffix}"),
        "format": "qcow2",
        "mode": "absolute-paths",
    }))
}
