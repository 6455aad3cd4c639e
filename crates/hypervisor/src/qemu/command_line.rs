//! The QEMU command line of a VM: a pure function of the spec and the configuration,
//! so that a VM restored from a memory state gets exactly the devices it was saved with.
//!
//! Choices:
//! - `-nodefaults -display none -machine <type>,graphics=off`: no VGA, no default NIC or
//!   drive; `graphics=off` makes SeaBIOS print on the serial port, so even a guest that
//!   never boots leaves a console log.
//! - `-no-shutdown`: when the guest powers off, QEMU stays in run state `shutdown`
//!   instead of exiting, so the reason survives a service restart; the driver then
//!   records it and quits QEMU. It also makes the soft reboot possible.
//! - each disk is two `-blockdev` nodes, `<id>-storage` (file or rbd) under `<id>`
//!   (qcow2 or raw), and a `virtio-blk-pci` device `<id>-dev` on node `<id>`: block
//!   operations name the disk by its id. Options are given as JSON, which needs no
//!   escaping of commas in paths. Each disk device sits on its own `pcie-root-port`
//!   (the port given in `ports`), so disks can be hot-plugged and unplugged and a VM
//!   started from a memory state gets each disk back where it was (see
//!   `qemu::hotplug`).
//! - every VM gets a guest agent channel: a `virtio-serial-pci` controller and a
//!   `virtserialport` named `org.qemu.guest_agent.0` on the unix socket `qga.sock` of
//!   the run directory (QEMU listens). Always there, whatever the image says, so the
//!   command line does not depend on image properties; a guest without an agent
//!   leaves it silent and the driver says so quickly (see `qemu::agent`). They come
//!   after the disks, which keep their PCI slots.
//! - each NIC is a `-netdev tap` `<id>` on the tap the network plane made (opened by
//!   name: QEMU runs in the plane's namespace, `script=no`, no vhost) and a
//!   `virtio-net-pci` device `<id>-dev` with the port's MAC, on a PCIe port of the
//!   same pool as the disks (key `nic:<id>` in `ports.json`), so NICs hot-plug and a
//!   memory state finds them where they were.

use serde_json::{json, Value};

use super::hotplug::{nic_port_key, port_devices, port_id, Ports};
use super::run_dir::RunDir;
use super::{Accel, QemuConfig};
use crate::error::Result;
use crate::spec::{utf8_path, DiskSource, DiskSpec, NicSpec, VmSpec};

/// Suffix of the protocol node under each disk's format node.
pub const STORAGE_NODE_SUFFIX: &str = "-storage";

/// The arguments (without the binary) that start `spec` in `dir`; with `incoming`, QEMU
/// waits paused for `migrate-incoming` (`-incoming defer -S`).
pub(crate) fn build(
    config: &QemuConfig,
    dir: &RunDir,
    spec: &VmSpec,
    incoming: bool,
    ports: &Ports,
) -> Result<Vec<String>> {
    let socket = utf8_path(&dir.qmp_socket())?.to_string();
    let console = utf8_path(&dir.console_log())?.to_string();
    let pid_file = utf8_path(&dir.pid_file())?.to_string();
    let mut args: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));

    push(&["-name", &format!("guest={},debug-threads=on", spec.name)]);
    push(&["-no-user-config", "-nodefaults", "-display", "none"]);
    push(&["-machine", &format!("{},graphics=off", config.machine)]);
    match config.accel {
        Accel::Tcg => push(&["-accel", "tcg"]),
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
    }
    push(&[
        "-m",
        &spec.memory_mib.to_string(),
        "-smp",
        &spec.vcpus.to_string(),
    ]);
    push(&["-msg", "timestamp=on", "-no-shutdown"]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=qmp,path={},server=on,wait=off",
            escape_opt(&socket)
        ),
        "-mon",
        "chardev=qmp,mode=control",
    ]);
    push(&[
        "-chardev",
        &format!("file,id=serial0,path={},append=on", escape_opt(&console)),
        "-serial",
        "chardev:serial0",
    ]);
    push(&["-pidfile", &pid_file]);
    for port in port_devices() {
        push(&["-device", &port.to_string()]);
    }
    for disk in &spec.disks {
        let [storage, format, mut device] = disk_options(disk)?;
        let port = ports.get(&disk.id).ok_or_else(|| {
            crate::error::Error::new(
                crate::error::ErrorKind::InvalidArgument,
                format!("disk {} has no PCIe port", disk.id),
            )
        })?;
        device["bus"] = json!(port_id(*port));
        push(&["-blockdev", &storage.to_string()]);
        push(&["-blockdev", &format.to_string()]);
        push(&["-device", &device.to_string()]);
    }
    for nic in &spec.nics {
        let port = ports.get(&nic_port_key(&nic.id)).ok_or_else(|| {
            crate::error::Error::new(
                crate::error::ErrorKind::InvalidArgument,
                format!("NIC {} has no PCIe port", nic.id),
            )
        })?;
        let mut device = nic_device(nic);
        device["bus"] = json!(port_id(*port));
        push(&["-netdev", &nic_netdev_option(nic)]);
        push(&["-device", &device.to_string()]);
    }
    let agent_socket = utf8_path(&dir.agent_socket())?.to_string();
    for option in agent_options(&agent_socket) {
        push(&[option.0, &option.1]);
    }
    if let Some(kernel) = &spec.kernel {
        push(&["-kernel", utf8_path(kernel)?]);
    }
    if let Some(initrd) = &spec.initrd {
        push(&["-initrd", utf8_path(initrd)?]);
    }
    if let Some(cmdline) = &spec.cmdline {
        push(&["-append", cmdline]);
    }
    if incoming {
        push(&["-incoming", "defer", "-S"]);
    }
    Ok(args)
}

/// The storage node, format node and device of one disk, as QEMU JSON options
/// (the device without its bus).
pub(crate) fn disk_options(disk: &DiskSpec) -> Result<[Value; 3]> {
    let storage_node = format!("{}{STORAGE_NODE_SUFFIX}", disk.id);
    let mut storage = match &disk.source {
        DiskSource::File(path) => json!({ "driver": "file", "filename": utf8_path(path)? }),
        DiskSource::Rbd {
            pool,
            image,
            snapshot,
            conf,
            user,
        } => {
            let mut rbd = json!({ "driver": "rbd", "pool": pool, "image": image });
            if let Some(snapshot) = snapshot {
                rbd["snapshot"] = json!(snapshot);
            }
            if let Some(conf) = conf {
                rbd["conf"] = json!(utf8_path(conf)?);
            }
            if let Some(user) = user {
                rbd["user"] = json!(user);
            }
            rbd
        }
    };
    storage["node-name"] = json!(storage_node);
    storage["read-only"] = json!(disk.read_only);
    let format = json!({
        "driver": disk.format.driver(),
        "file": storage_node,
        "node-name": disk.id,
        "read-only": disk.read_only,
    });
    let device = json!({
        "driver": "virtio-blk-pci",
        "drive": disk.id,
        "id": format!("{}-dev", disk.id),
    });
    Ok([storage, format, device])
}

/// The `-netdev` option of a NIC (its tap, opened by name).
fn nic_netdev_option(nic: &NicSpec) -> String {
    format!(
        "tap,id={},ifname={},script=no,downscript=no,vhost=off",
        nic.id, nic.tap
    )
}

/// The same netdev as `netdev_add` arguments (hot-plug).
pub(crate) fn nic_netdev(nic: &NicSpec) -> Value {
    json!({
        "type": "tap",
        "id": nic.id,
        "ifname": nic.tap,
        "script": "no",
        "downscript": "no",
        "vhost": false,
    })
}

/// The virtio-net device of a NIC (without its bus).
pub(crate) fn nic_device(nic: &NicSpec) -> Value {
    json!({
        "driver": "virtio-net-pci",
        "netdev": nic.id,
        "mac": nic.mac.to_ascii_lowercase(),
        "id": format!("{}-dev", nic.id),
    })
}

/// Name of the guest agent's port, which the agent looks for in the guest.
pub const GUEST_AGENT_PORT: &str = "org.qemu.guest_agent.0";

/// The chardev and devices of the guest agent channel on `socket`.
fn agent_options(socket: &str) -> [(&'static str, String); 3] {
    let chardev = format!(
        "socket,id=qga0,path={},server=on,wait=off",
        escape_opt(socket)
    );
    let controller = json!({"driver": "virtio-serial-pci", "id": "virtio-serial0"});
    let port = json!({
        "driver": "virtserialport",
        "bus": "virtio-serial0.0",
        "chardev": "qga0",
        "name": GUEST_AGENT_PORT,
        "id": "qga0-port",
    });
    [
        ("-chardev", chardev),
        ("-device", controller.to_string()),
        ("-device", port.to_string()),
    ]
}

/// Escapes a value inside QEMU's `key=value,…` option syntax (`,` is written `,,`).
fn escape_opt(value: &str) -> String {
    value.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::spec::DiskFormat;

    fn spec(disks: Vec<DiskSpec>) -> VmSpec {
        VmSpec {
            name: "vm1".to_string(),
            memory_mib: 256,
            vcpus: 2,
            disks,
            nics: Vec::new(),
            kernel: Some(PathBuf::from("/boot/vmlinuz")),
            initrd: None,
            cmdline: Some("console=ttyS0 quiet".to_string()),
        }
    }

    fn file_disk() -> DiskSpec {
        DiskSpec {
            id: "disk0".to_string(),
            source: DiskSource::File(PathBuf::from("/data/a,b.qcow2")),
            format: DiskFormat::Qcow2,
            read_only: false,
        }
    }

    fn ports() -> Ports {
        Ports::from([("disk0".to_string(), 3)])
    }

    fn args_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn build_when_file_disk_then_two_nodes_named_after_the_disk_and_a_device() {
        let config = QemuConfig::new("/run/snapstack");
        let dir = RunDir::new(Path::new("/run/snapstack"), "vm1");

        let args = build(&config, &dir, &spec(vec![file_disk()]), false, &ports()).unwrap();

        let blockdevs: Vec<Value> = args_after(&args, "-blockdev")
            .iter()
            .map(|a| serde_json::from_str(a).unwrap())
            .collect();
        assert_eq!(blockdevs[0]["node-name"], "disk0-storage");
        assert_eq!(blockdevs[0]["filename"], "/data/a,b.qcow2");
        assert_eq!(blockdevs[1]["node-name"], "disk0");
        assert_eq!(blockdevs[1]["file"], "disk0-storage");
        let device: Value = args_after(&args, "-device")
            .iter()
            .map(|a| serde_json::from_str::<Value>(a).unwrap())
            .find(|d| d["driver"] == "virtio-blk-pci")
            .unwrap();
        assert_eq!(device["drive"], "disk0");
    }

    #[test]
    fn build_when_tcg_then_no_kvm_and_monitor_console_pidfile_in_run_dir() {
        let config = QemuConfig::new("/run/s,s");
        let dir = RunDir::new(Path::new("/run/s,s"), "vm1");

        let args = build(&config, &dir, &spec(Vec::new()), false, &ports()).unwrap();

        assert_eq!(args_after(&args, "-accel"), ["tcg"]);
        assert_eq!(
            args_after(&args, "-chardev"),
            [
                "socket,id=qmp,path=/run/s,,s/vm1/qmp.sock,server=on,wait=off",
                "file,id=serial0,path=/run/s,,s/vm1/console.log,append=on",
                "socket,id=qga0,path=/run/s,,s/vm1/qga.sock,server=on,wait=off",
            ]
        );
        assert_eq!(args_after(&args, "-pidfile"), ["/run/s,s/vm1/qemu.pid"]);
        assert_eq!(args_after(&args, "-append"), ["console=ttyS0 quiet"]);
        assert!(!args.iter().any(|a| a == "-incoming"));
    }

    #[test]
    fn build_when_disks_then_guest_agent_port_after_them_on_its_socket() {
        let config = QemuConfig::new("/run/snapstack");
        let dir = RunDir::new(Path::new("/run/snapstack"), "vm1");

        let args = build(&config, &dir, &spec(vec![file_disk()]), false, &ports()).unwrap();

        let devices: Vec<Value> = args_after(&args, "-device")
            .iter()
            .map(|a| serde_json::from_str::<Value>(a).unwrap())
            .filter(|d| d["driver"] != "pcie-root-port")
            .collect();
        assert_eq!(devices[0]["driver"], "virtio-blk-pci");
        assert_eq!(devices[0]["bus"], "disk-port3");
        assert_eq!(devices[1]["driver"], "virtio-serial-pci");
        assert_eq!(devices[2]["name"], GUEST_AGENT_PORT);
        assert_eq!(devices[2]["chardev"], "qga0");
        assert_eq!(devices[2]["bus"], "virtio-serial0.0");
    }

    #[test]
    fn build_when_nic_then_tap_netdev_and_virtio_net_on_its_port() {
        let config = QemuConfig::new("/run/snapstack");
        let dir = RunDir::new(Path::new("/run/snapstack"), "vm1");
        let mut spec = spec(vec![file_disk()]);
        spec.nics.push(NicSpec {
            id: "net0".into(),
            mac: "FA:16:3E:00:00:01".into(),
            tap: "tap6f1c0a52-3b".into(),
        });
        let mut ports = ports();
        ports.insert("nic:net0".into(), 4);

        let args = build(&config, &dir, &spec, false, &ports).unwrap();

        assert_eq!(
            args_after(&args, "-netdev"),
            ["tap,id=net0,ifname=tap6f1c0a52-3b,script=no,downscript=no,vhost=off"]
        );
        let nic: Value = args_after(&args, "-device")
            .iter()
            .map(|a| serde_json::from_str::<Value>(a).unwrap())
            .find(|d| d["driver"] == "virtio-net-pci")
            .unwrap();
        assert_eq!(
            nic,
            json!({"driver": "virtio-net-pci", "netdev": "net0", "mac": "fa:16:3e:00:00:01",
                   "id": "net0-dev", "bus": "disk-port4"})
        );
    }

    #[test]
    fn build_when_incoming_then_deferred_and_paused() {
        let config = QemuConfig::new("/run/snapstack");
        let dir = RunDir::new(Path::new("/run/snapstack"), "vm1");

        let args = build(&config, &dir, &spec(Vec::new()), true, &ports()).unwrap();

        assert_eq!(args_after(&args, "-incoming"), ["defer"]);
        assert!(args.iter().any(|a| a == "-S"));
    }

    #[test]
    fn disk_options_when_rbd_read_only_then_rbd_node_with_conf_and_both_nodes_read_only() {
        let disk = DiskSpec {
            id: "disk1".to_string(),
            source: DiskSource::Rbd {
                pool: "vms".to_string(),
                image: "server-disk".to_string(),
                snapshot: Some("snap".to_string()),
                conf: Some(PathBuf::from("/etc/ceph/test.conf")),
                user: None,
            },
            format: DiskFormat::Raw,
            read_only: true,
        };

        let [storage, format, _device] = disk_options(&disk).unwrap();

        assert_eq!(
            storage,
            json!({"driver": "rbd", "pool": "vms", "image": "server-disk", "snapshot": "snap",
                   "conf": "/etc/ceph/test.conf", "node-name": "disk1-storage", "read-only": true})
        );
        assert_eq!(format["driver"], "raw");
        assert_eq!(format["read-only"], true);
    }
}
