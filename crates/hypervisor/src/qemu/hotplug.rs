//! Disks hot-plugged into and unplugged from a live VM, and the PCIe ports every
//! disk device sits on.
//!
//! q35's root complex takes no hot-plugged device, so every VM gets [`PORTS`]
//! `pcie-root-port`s (`disk-port0` …, eight functions of two slots) and each disk
//! device sits alone on one of them, at start as when hot-plugged. Which disk is on
//! which port is recorded in the run directory (`ports.json`):
//!
//! ```text
//!  cold start          disks on ports 0, 1, … in spec order (the first one boots)
//!  attach_disk         blockdev-add <id>-storage, <id>; device_add <id>-dev on the
//!                      lowest free port (recorded before the device_add)
//!  detach_disk         device_del <id>-dev, wait for DEVICE_DELETED (the guest lets
//!                      go), blockdev-del every node of the disk left; port freed
//!  start from memory   each disk back on the port it had when the state was saved:
//!                      the devices must match the saved ones exactly
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use qmp::Client;
use serde_json::{json, Value};

use super::block::run;
use super::command_line::disk_options;
use super::run_dir::RunDir;
use super::QemuHypervisor;
use crate::error::{Error, ErrorKind, Result};
use crate::spec::{DiskSpec, VmSpec};

/// How many disks a VM can have at once.
pub(crate) const PORTS: usize = 16;

/// Disk id (or [`nic_port_key`] of a NIC) → port index.
pub(crate) type Ports = BTreeMap<String, usize>;

/// The key of NIC `nic_id` in [`Ports`] (a disk id has no colon).
pub(crate) fn nic_port_key(nic_id: &str) -> String {
    format!("nic:{nic_id}")
}

/// The QEMU id of port `index`.
pub(crate) fn port_id(index: usize) -> String {
    format!("disk-port{index}")
}

/// The `pcie-root-port` devices every VM gets, as QEMU JSON options.
pub(crate) fn port_devices() -> Vec<Value> {
    (0..PORTS)
        .map(|i| {
            json!({
                "driver": "pcie-root-port",
                "id": port_id(i),
                "bus": "pcie.0",
                "chassis": i + 1,
                "port": 0x10 + i,
                "addr": format!("0x{:x}.0x{:x}", 2 + i / 8, i % 8),
                "multifunction": i % 8 == 0,
            })
        })
        .collect()
}

/// The ports of `spec`'s disks for a start, recorded: from a memory state, each disk
/// keeps the port it had; any other disk takes the lowest free one.
pub(crate) async fn ports_for_launch(dir: &RunDir, spec: &VmSpec, incoming: bool) -> Result<Ports> {
    let recorded = if incoming {
        dir.read_ports().await?.unwrap_or_default()
    } else {
        Ports::new()
    };
    let keys: Vec<String> = spec
        .disks
        .iter()
        .map(|d| d.id.clone())
        .chain(spec.nics.iter().map(|n| nic_port_key(&n.id)))
        .collect();
    let mut ports: Ports = keys
        .iter()
        .filter_map(|k| recorded.get(k).map(|p| (k.clone(), *p)))
        .collect();
    for key in keys {
        if !ports.contains_key(&key) {
            let free = free_port(&ports, &spec.name)?;
            ports.insert(key, free);
        }
    }
    dir.write_ports(&ports).await?;
    Ok(ports)
}

pub(crate) fn free_port(ports: &Ports, vm: &str) -> Result<usize> {
    (0..PORTS)
        .find(|p| !ports.values().any(|used| used == p))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("VM {vm} already has {PORTS} disks and NICs"),
            )
        })
}

/// Whether the VM has a device called `id`.
pub(crate) async fn has_device(
    qmp: &Client,
    vm: &str,
    id: &str,
    timeout: Duration,
) -> Result<bool> {
    let children = run(
        qmp,
        vm,
        "qom-list",
        json!({"path": "/machine/peripheral"}),
        timeout,
    )
    .await?;
    Ok(children
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == id))
}

/// The names of the VM's named block nodes that belong to disk `disk_id`.
async fn nodes_of(qmp: &Client, vm: &str, disk_id: &str, timeout: Duration) -> Result<Vec<String>> {
    let nodes = run(
        qmp,
        vm,
        "query-named-block-nodes",
        json!({"flat": true}),
        timeout,
    )
    .await?;
    let prefix = format!("{disk_id}-");
    let mut names: Vec<String> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["node-name"].as_str())
        .filter(|n| *n == disk_id || n.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    names.dedup();
    Ok(names)
}

/// Deletes the disk's nodes left after its device went: tops first (a node
/// still used as a backing file cannot go yet), until none is left.
async fn delete_nodes(qmp: &Client, vm: &str, disk_id: &str, timeout: Duration) -> Result<()> {
    let mut left = nodes_of(qmp, vm, disk_id, timeout).await?;
    while !left.is_empty() {
        let mut last_error = None;
        for node in &left {
            if let Err(e) = run(qmp, vm, "blockdev-del", json!({"node-name": node}), timeout).await
            {
                last_error = Some(e);
            }
        }
        let now = nodes_of(qmp, vm, disk_id, timeout).await?;
        if now.len() == left.len() {
            return Err(last_error.unwrap_or_else(|| {
                Error::new(
                    ErrorKind::Monitor,
                    format!("the nodes {now:?} of VM {vm} cannot be removed"),
                )
            }));
        }
        left = now;
    }
    Ok(())
}

impl QemuHypervisor {
    /// [`Hypervisor::attach_disk`](crate::Hypervisor::attach_disk).
    pub(super) async fn hotplug_disk(&self, name: &str, disk: &DiskSpec) -> Result<()> {
        disk.validate()?;
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let live = self.live(&vm).await?;
        let qmp = &live.qmp;
        let timeout = self.config.monitor_timeout;
        let device_id = format!("{}-dev", disk.id);
        if has_device(qmp, name, &device_id, timeout).await? {
            return Ok(());
        }
        // What an interrupted attempt left: nodes without a device.
        delete_nodes(qmp, name, &disk.id, timeout).await?;
        let mut ports = vm.dir.read_ports().await?.unwrap_or_default();
        ports.remove(&disk.id);
        let port = free_port(&ports, name)?;
        ports.insert(disk.id.clone(), port);
        vm.dir.write_ports(&ports).await?;

        let [storage, format, mut device] = disk_options(disk)?;
        device["bus"] = json!(port_id(port));
        let added = async {
            run(qmp, name, "blockdev-add", storage, timeout).await?;
            run(qmp, name, "blockdev-add", format, timeout).await?;
            run(qmp, name, "device_add", device, timeout).await
        }
        .await;
        if let Err(e) = added {
            let _ = delete_nodes(qmp, name, &disk.id, timeout).await;
            return Err(e);
        }
        tracing::info!(vm = name, disk = %disk.id, port, "disk hot-plugged");
        Ok(())
    }

    /// [`Hypervisor::detach_disk`](crate::Hypervisor::detach_disk).
    pub(super) async fn unplug_disk(
        &self,
        name: &str,
        disk_id: &str,
        guest_timeout: Duration,
    ) -> Result<()> {
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let live = self.live(&vm).await?;
        let qmp = &live.qmp;
        let timeout = self.config.monitor_timeout;
        let device_id = format!("{disk_id}-dev");
        if has_device(qmp, name, &device_id, timeout).await? {
            let mut events = qmp.events();
            run(qmp, name, "device_del", json!({"id": device_id}), timeout).await?;
            events
                .wait_for(
                    "DEVICE_DELETED",
                    |e| e.data["device"] == device_id.as_str(),
                    guest_timeout,
                )
                .await
                .map_err(|_| {
                    Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "the guest of VM {name} did not release disk {disk_id} within {guest_timeout:?}"
                        ),
                    )
                })?;
        }
        delete_nodes(qmp, name, disk_id, timeout).await?;
        let mut ports = vm.dir.read_ports().await?.unwrap_or_default();
        if ports.remove(disk_id).is_some() {
            vm.dir.write_ports(&ports).await?;
        }
        tracing::info!(vm = name, disk = disk_id, "disk unplugged");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::spec::{DiskFormat, DiskSource};

    fn spec(ids: &[&str]) -> VmSpec {
        VmSpec {
            name: "vm1".into(),
            memory_mib: 64,
            vcpus: 1,
            disks: ids
                .iter()
                .map(|id| DiskSpec {
                    id: id.to_string(),
                    source: DiskSource::File(PathBuf::from(format!("/d/{id}.qcow2"))),
                    format: DiskFormat::Qcow2,
                    read_only: false,
                })
                .collect(),
            nics: Vec::new(),
            kernel: None,
            initrd: None,
            cmdline: None,
        }
    }

    #[tokio::test]
    async fn ports_when_cold_start_then_spec_order_from_zero() {
        let root = tempfile::tempdir().unwrap();
        let dir = RunDir::new(root.path(), "vm1");
        tokio::fs::create_dir_all(dir.path()).await.unwrap();
        dir.write_ports(&Ports::from([("b".to_string(), 5)]))
            .await
            .unwrap();

        let ports = ports_for_launch(&dir, &spec(&["a", "b"]), false)
            .await
            .unwrap();

        assert_eq!(ports, Ports::from([("a".into(), 0), ("b".into(), 1)]));
    }

    #[tokio::test]
    async fn ports_when_incoming_then_recorded_ports_kept_and_new_disk_on_a_free_one() {
        let root = tempfile::tempdir().unwrap();
        let dir = RunDir::new(root.path(), "vm1");
        tokio::fs::create_dir_all(dir.path()).await.unwrap();
        dir.write_ports(&Ports::from([("a".to_string(), 0), ("c".to_string(), 2)]))
            .await
            .unwrap();

        let ports = ports_for_launch(&dir, &spec(&["a", "b", "c"]), true)
            .await
            .unwrap();

        assert_eq!(
            ports,
            Ports::from([("a".into(), 0), ("b".into(), 1), ("c".into(), 2)])
        );
        assert_eq!(dir.read_ports().await.unwrap(), Some(ports));
    }

    #[test]
    fn port_devices_when_listed_then_distinct_addresses_and_chassis() {
        let ports = port_devices();

        let addrs: std::collections::BTreeSet<_> =
            ports.iter().map(|p| p["addr"].to_string()).collect();
        assert_eq!(addrs.len(), PORTS);
        assert_eq!(ports[0]["multifunction"], true);
        assert_eq!(ports[1]["multifunction"], false);
    }
}
