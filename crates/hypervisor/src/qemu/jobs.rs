//! qcow2 internal snapshots of a live VM through QMP jobs (QEMU ≥ 6.0):
//! `snapshot-save` / `snapshot-load` / `snapshot-delete`, each named by a
//! tag, on the current top node of every listed disk; the VM state goes
//! into the first disk's top (`vmstate`). QEMU stops the vCPUs for the
//! whole save or load (the pause is inherent; it is measured from the
//! `STOP`/`RESUME` events); on QEMU 7.2 `snapshot-save` also blocks the
//! monitor while it runs. The jobs are created with manual dismiss, so
//! their error can be read when they conclude.

use qmp::RunState;
use serde_json::json;
use tokio::time::Instant;

use super::{block, QemuHypervisor};
use crate::error::{Error, ErrorKind, Result};
use crate::restore::{InternalSnapshot, PointTaken};

impl QemuHypervisor {
    /// See [`Hypervisor::internal_snapshot`](crate::Hypervisor::internal_snapshot).
    pub(super) async fn run_internal_snapshot(
        &self,
        name: &str,
        disk_ids: &[String],
        op: InternalSnapshot,
        tag: &str,
    ) -> Result<PointTaken> {
        let started = Instant::now();
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let live = self.live(&vm).await?;
        let timeout = self.config.monitor_timeout;
        let mut nodes = Vec::with_capacity(disk_ids.len());
        for disk in disk_ids {
            nodes.push(block::top_of(&live.qmp, name, disk, timeout).await?.node);
        }
        let Some(vmstate) = nodes.first().cloned() else {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("an internal snapshot of VM {name} needs a disk"),
            ));
        };
        let was_running = live.state == RunState::Running;
        let job_id = format!("snapshot-{}", &tag[..tag.len().min(20)]);
        let (command, args) = match op {
            InternalSnapshot::Save => (
                "snapshot-save",
                json!({"job-id": job_id, "tag": tag, "vmstate": vmstate, "devices": nodes}),
            ),
            InternalSnapshot::Load => (
                "snapshot-load",
                json!({"job-id": job_id, "tag": tag, "vmstate": vmstate, "devices": nodes}),
            ),
            InternalSnapshot::Delete => (
                "snapshot-delete",
                json!({"job-id": job_id, "tag": tag, "devices": nodes}),
            ),
        };
        let mut events = live.qmp.events();
        block::run(&live.qmp, name, command, args, timeout).await?;
        live.qmp
            .wait_job(&job_id, self.config.migration_timeout)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Monitor,
                    format!("{command} {tag} on VM {name} failed"),
                )
                .with_source(e)
            })?;
        let status = live
            .qmp
            .query_status()
            .await
            .map_err(|e| Error::monitor(format!("query-status on VM {name} failed"), e))?;
        if was_running && status.status != RunState::Running {
            self.execute(&vm, &live.qmp, "cont").await?;
        }
        let (guest_pause, stopped) = super::restore::pause_from_events(&mut events);
        Ok(PointTaken {
            guest_pause,
            stopped,
            total: started.elapsed(),
        })
    }
}

impl QemuHypervisor {
    /// See [`Hypervisor::stream_into`](crate::Hypervisor::stream_into).
    pub(super) async fn run_stream_into(
        &self,
        name: &str,
        into: &std::path::Path,
        base: &std::path::Path,
    ) -> Result<()> {
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let live = self.live(&vm).await?;
        let timeout = self.config.monitor_timeout;
        let nodes = block::run(
            &live.qmp,
            name,
            "query-named-block-nodes",
            json!({ "flat": true }),
            timeout,
        )
        .await?;
        let canonical =
            |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let node_of = |file: &std::path::Path| {
            let wanted = canonical(file);
            nodes
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| {
                    n["drv"] != "file"
                        && n["file"]
                            .as_str()
                            .is_some_and(|f| canonical(std::path::Path::new(f)) == wanted)
                })
                .and_then(|n| n["node-name"].as_str().map(str::to_string))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidArgument,
                        format!("VM {name} has no node on {}", file.display()),
                    )
                })
        };
        let (device, base_node) = (node_of(into)?, node_of(base)?);
        let dropped = files_between(&nodes, into, base);
        // A job id is an identifier: an implicit node's name (`#block123`,
        // an inner file of a chain) is not.
        let job_id = format!(
            "stream-{}",
            device.replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                ""
            )
        );
        let args = json!({
            "job-id": job_id, "device": device, "base-node": base_node, "auto-dismiss": false,
        });
        block::run(&live.qmp, name, "block-stream", args, timeout).await?;
        live.qmp
            .wait_job(&job_id, self.config.migration_timeout)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Monitor,
                    format!("block-stream into {} on VM {name} failed", into.display()),
                )
                .with_source(e)
            })?;
        // Nodes made by `-blockdev` (the disk as the VM started) stay open
        // after the stream dropped them from the chain: delete them, format
        // node first. Implicit nodes went with the chain; a node still in
        // use elsewhere refuses, which is fine.
        let after = block::run(
            &live.qmp,
            name,
            "query-named-block-nodes",
            json!({ "flat": true }),
            timeout,
        )
        .await?;
        let mut doomed: Vec<(bool, String)> = after
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| {
                n["file"]
                    .as_str()
                    .is_some_and(|f| dropped.contains(&canonical(std::path::Path::new(f))))
            })
            .filter_map(|n| Some((n["drv"] == "file", n["node-name"].as_str()?.to_string())))
            .collect();
        doomed.sort();
        for (_, node) in doomed {
            let deleted = block::run(
                &live.qmp,
                name,
                "blockdev-del",
                json!({ "node-name": node }),
                timeout,
            )
            .await;
            tracing::debug!(
                vm = name,
                node,
                ok = deleted.is_ok(),
                "node dropped by a stream deleted"
            );
        }
        Ok(())
    }
}

/// The files strictly between `into` and `base` in the backing chain that
/// `nodes` (`query-named-block-nodes`) describe, canonicalised.
fn files_between(
    nodes: &serde_json::Value,
    into: &std::path::Path,
    base: &std::path::Path,
) -> Vec<std::path::PathBuf> {
    let canonical =
        |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let backing_of = |file: &std::path::Path| {
        nodes
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| {
                n["drv"] != "file"
                    && n["file"]
                        .as_str()
                        .is_some_and(|f| canonical(std::path::Path::new(f)) == file)
            })
            .and_then(|n| n["backing_file"].as_str())
            .map(|b| canonical(std::path::Path::new(b)))
    };
    let (mut at, base) = (canonical(into), canonical(base));
    let mut between = Vec::new();
    while let Some(next) = backing_of(&at) {
        if next == base || between.contains(&next) || between.len() > 64 {
            break;
        }
        between.push(next.clone());
        at = next;
    }
    between
}
