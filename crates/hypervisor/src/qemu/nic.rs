//! NICs hot-plugged into and unplugged from a live VM.
//!
//! ```text
//!  attach_nic   netdev_add tap <id> (QEMU opens the tap by name in its namespace);
//!               device_add virtio-net-pci <id>-dev on the lowest free PCIe port
//!               (recorded in ports.json before); the NIC added to spec.json
//!  detach_nic   device_del <id>-dev, wait for DEVICE_DELETED; netdev_del <id>;
//!               port freed; the NIC removed from spec.json
//!  set_nic_link set_link <id>-dev up/down: the guest sees its carrier change
//! ```
//!
//! spec.json keeps the NICs a VM has now, so a memory state saved after a hot-plug is
//! restored with the same devices by the layer above, which reads them back with the
//! VM's spec.

use qmp::Client;
use serde_json::json;

use super::block::run;
use super::command_line::{nic_device, nic_netdev};
use super::hotplug::{nic_port_key, port_id};
use super::QemuHypervisor;
use crate::error::{Error, ErrorKind, Result};
use crate::spec::NicSpec;

/// Whether the VM has a netdev called `id`.
async fn has_netdev(
    qmp: &Client,
    vm: &str,
    id: &str,
    timeout: std::time::Duration,
) -> Result<bool> {
    let netdevs = run(qmp, vm, "query-netdev", serde_json::Value::Null, timeout)
        .await
        .unwrap_or_default();
    Ok(netdevs
        .as_array()
        .into_iter()
        .flatten()
        .any(|n| n["id"] == id))
}

impl QemuHypervisor {
    /// [`Hypervisor::attach_nic`](crate::Hypervisor::attach_nic).
    pub(super) async fn hotplug_nic(&self, name: &str, nic: &NicSpec) -> Result<()> {
        nic.validate()?;
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let live = self.live(&vm).await?;
        let qmp = &live.qmp;
        let timeout = self.config.monitor_timeout;
        let device_id = format!("{}-dev", nic.id);
        if super::hotplug::has_device(qmp, name, &device_id, timeout).await? {
            return self.record_nic(&vm, Some(nic), &nic.id).await;
        }
        // What an interrupted attempt left: a netdev without a device.
        if has_netdev(qmp, name, &nic.id, timeout).await? {
            run(qmp, name, "netdev_del", json!({"id": nic.id}), timeout).await?;
        }
        let key = nic_port_key(&nic.id);
        let mut ports = vm.dir.read_ports().await?.unwrap_or_default();
        ports.remove(&key);
        let port = super::hotplug::free_port(&ports, name)?;
        ports.insert(key, port);
        vm.dir.write_ports(&ports).await?;

        let mut device = nic_device(nic);
        device["bus"] = json!(port_id(port));
        let added = async {
            run(qmp, name, "netdev_add", nic_netdev(nic), timeout).await?;
            run(qmp, name, "device_add", device, timeout).await
        }
        .await;
        if let Err(e) = added {
            let _ = run(qmp, name, "netdev_del", json!({"id": nic.id}), timeout).await;
            return Err(e);
        }
        self.record_nic(&vm, Some(nic), &nic.id).await?;
        tracing::info!(vm = name, nic = %nic.id, tap = %nic.tap, port, "NIC hot-plugged");
        Ok(())
    }

    /// [`Hypervisor::detach_nic`](crate::Hypervisor::detach_nic).
    pub(super) async fn unplug_nic(&self, name: &str, nic_id: &str) -> Result<()> {
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let live = self.live(&vm).await?;
        let qmp = &live.qmp;
        let timeout = self.config.monitor_timeout;
        let guest_timeout = self.config.nic_unplug_timeout;
        let device_id = format!("{nic_id}-dev");
        if super::hotplug::has_device(qmp, name, &device_id, timeout).await? {
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
                            "the guest of VM {name} did not release NIC {nic_id} within {guest_timeout:?}"
                        ),
                    )
                })?;
        }
        if has_netdev(qmp, name, nic_id, timeout).await? {
            run(qmp, name, "netdev_del", json!({"id": nic_id}), timeout).await?;
        }
        let mut ports = vm.dir.read_ports().await?.unwrap_or_default();
        if ports.remove(&nic_port_key(nic_id)).is_some() {
            vm.dir.write_ports(&ports).await?;
        }
        self.record_nic(&vm, None, nic_id).await?;
        tracing::info!(vm = name, nic = nic_id, "NIC unplugged");
        Ok(())
    }

    /// [`Hypervisor::set_nic_link`](crate::Hypervisor::set_nic_link).
    pub(super) async fn nic_link(&self, name: &str, nic_id: &str, up: bool) -> Result<()> {
        let vm = self.vm(name)?;
        let _op = vm.op.lock().await;
        let live = self.live(&vm).await?;
        let qmp = &live.qmp;
        let timeout = self.config.monitor_timeout;
        let device_id = format!("{nic_id}-dev");
        if !super::hotplug::has_device(qmp, name, &device_id, timeout).await? {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("VM {name} has no NIC {nic_id}"),
            ));
        }
        run(
            qmp,
            name,
            "set_link",
            json!({"name": device_id, "up": up}),
            timeout,
        )
        .await?;
        tracing::info!(vm = name, nic = nic_id, up, "NIC link set");
        Ok(())
    }

    /// Puts `nic` (or, with `None`, no NIC) under `nic_id` in the VM's spec.json.
    async fn record_nic(&self, vm: &super::Vm, nic: Option<&NicSpec>, nic_id: &str) -> Result<()> {
        let Some(mut spec) = vm.dir.read_spec().await? else {
            return Ok(());
        };
        let before = spec.nics.clone();
        spec.nics.retain(|n| n.id != nic_id);
        spec.nics.extend(nic.cloned());
        if spec.nics != before {
            vm.dir.write_spec(&spec).await?;
        }
        Ok(())
    }
}
