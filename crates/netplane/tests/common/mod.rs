//! Shared by the data-plane tests: a plane in a namespace unique to the test, removed by
//! a guard; "VMs" as test namespaces whose `eth0` is cabled to the port's persistent tap
//! by this process (it opens the tap by name in the plane's namespace, as QEMU does, and
//! copies frames both ways); an external client on a network's bridge.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use netplane::{
    bridge_name, tap_name, DhcpHost, DhcpPlan, Firewall, HostPlan, LinuxPlane, NetworkPlan,
    NetworkPlane, PortPlan, Protocol, Remote, Rule, SubnetPlan,
};

/// True when the test can run (root); else prints why it is skipped.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: the data-plane tests need root (network namespaces)");
    }
    root
}

/// A plane in namespace `np-<tag>-<pid>`; dropping it tears everything down, the test's
/// own namespaces included.
pub struct TestPlane {
    pub plane: Arc<LinuxPlane>,
    pub ns: String,
    _state: tempfile::TempDir,
    extra_ns: std::sync::Mutex<Vec<String>>,
}

impl TestPlane {
    pub fn new(tag: &str) -> Self {
        let ns = format!("np-{tag}-{}", std::process::id());
        let state = tempfile::tempdir().unwrap();
        let plane = Arc::new(LinuxPlane::new(ns.clone(), state.path()));
        Self {
            plane,
            ns,
            _state: state,
            extra_ns: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn own_ns(&self, suffix: &str) -> String {
        let name = format!("{}-t-{suffix}", self.ns);
        sh(&format!(
            "ip netns add {name} && ip -n {name} link set lo up"
        ));
        self.extra_ns.lock().unwrap().push(name.clone());
        name
    }

    /// A VM on port `port_id`: namespace with `eth0` (MAC `mac`) cabled to the port's tap.
    pub fn vm(&self, name: &str, port_id: &str, mac: &str) -> Vm {
        let ns = self.own_ns(name);
        cable(&self.ns, &tap_name(port_id), &ns, "eth0");
        sh(&format!("ip -n {ns} link set eth0 address {mac} up"));
        Vm {
            ns,
            servers: Vec::new(),
        }
    }

    /// A client on the bridge of `network_id` with `address` (e.g. the external network's
    /// gateway), through a veth the plane does not own (`x…`).
    pub fn client(&self, name: &str, network_id: &str, address: &str) -> Vm {
        let ns = self.own_ns(name);
        let outer = format!("x{name}");
        sh(&format!(
            "ip -n {plane} link add {outer} type veth peer name eth0 netns {ns} && \
             ip -n {plane} link set {outer} master {bridge} up && \
             ip -n {ns} link set eth0 up && ip -n {ns} addr add {address} dev eth0",
            plane = self.ns,
            bridge = bridge_name(network_id)
        ));
        Vm {
            ns,
            servers: Vec::new(),
        }
    }
}

impl Drop for TestPlane {
    fn drop(&mut self) {
        let plane = self.plane.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(plane.teardown())
        })
        .join()
        .unwrap()
        .unwrap();
        for ns in self.extra_ns.lock().unwrap().iter() {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

/// A test namespace standing in for a VM (or an external client).
pub struct Vm {
    pub ns: String,
    servers: Vec<Child>,
}

impl Vm {
    /// Runs `command` in the namespace; its success.
    pub fn run(&self, command: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "sh", "-c", command])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Runs `command` in the namespace; its stdout (empty on failure).
    pub fn output(&self, command: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "sh", "-c", command])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Asks for a DHCP lease on eth0 (busybox udhcpc) and configures it; the address.
    pub fn dhcp(&self, scripts: &Path) -> Option<String> {
        let script = scripts.join("udhcpc.sh");
        if !script.exists() {
            std::fs::write(
                &script,
                "#!/bin/sh\ncase \"$1\" in bound|renew)\n  ip addr flush dev \"$interface\"\n  \
                 ip addr add \"$ip/$mask\" dev \"$interface\"\n  \
                 [ -n \"$router\" ] && ip route replace default via \"${router%% *}\" dev \"$interface\"\n;;\nesac\nexit 0\n",
            )
            .unwrap();
            sh(&format!("chmod 755 {}", script.display()));
        }
        let ok = self.run(&format!(
            "busybox udhcpc -i eth0 -n -q -t 10 -T 1 -s {}",
            script.display()
        ));
        ok.then(|| self.output("ip -4 -o addr show dev eth0 | awk '{print $4}'"))
    }

    pub fn set_address(&self, address: &str, gateway: Option<&str>) {
        assert!(self.run(&format!("ip addr add {address} dev eth0")));
        if let Some(gw) = gateway {
            assert!(self.run(&format!("ip route replace default via {gw}")));
        }
    }

    /// A web server on port `port` answering `/` with `body`.
    pub fn serve(&mut self, port: u16, body: &str, dir: &Path) {
        let root = dir.join(format!("{}-{port}", self.ns));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), body).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "busybox", "httpd", "-f", "-p"])
            .arg(port.to_string())
            .arg("-h")
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(child);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    /// What `http://ip:port/` answers (empty when unreachable within 3 s).
    pub fn fetch(&self, ip: &str, port: u16) -> String {
        self.output(&format!("curl -s -m 3 http://{ip}:{port}/"))
    }

    pub fn ping(&self, ip: &str) -> bool {
        self.run(&format!("ping -c 1 -W 2 {ip}"))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        for child in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn sh(command: &str) {
    let status = Command::new("sh").args(["-c", command]).status().unwrap();
    assert!(status.success(), "{command}");
}

/// Opens tap `name` in namespace `ns` (creating it when absent, as a non-persistent tap).
fn open_tap(ns: &str, name: &str) -> OwnedFd {
    let netns = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: setns(2) on this thread only, with a namespace fd we hold open.
    assert_eq!(
        unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) },
        0
    );
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap();
    let mut ifreq = [0u8; 40];
    ifreq[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as u16;
    ifreq[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (40 bytes) we own.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, ifreq.as_mut_ptr()) };
    assert_eq!(
        rc,
        0,
        "TUNSETIFF {name} in {ns}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: into_raw_fd gives up ownership of a valid fd, taken over once.
    unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(tun)) }
}

/// Connects tap `plane_tap` (in `plane_ns`) and a new tap `vm_dev` (in `vm_ns`): frames
/// are copied both ways by two threads, until a device goes away.
fn cable(plane_ns: &str, plane_tap: &str, vm_ns: &str, vm_dev: &str) {
    let (plane_ns, plane_tap, vm_ns, vm_dev) = (
        plane_ns.to_string(),
        plane_tap.to_string(),
        vm_ns.to_string(),
        vm_dev.to_string(),
    );
    let (a, b) =
        std::thread::spawn(move || (open_tap(&plane_ns, &plane_tap), open_tap(&vm_ns, &vm_dev)))
            .join()
            .unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    for (from, to) in [(a.clone(), b.clone()), (b, a)] {
        std::thread::spawn(move || {
            let mut frame = vec![0u8; 65536];
            loop {
                // SAFETY: read/write into and from a buffer we own, on fds kept alive by the Arcs.
                let n =
                    unsafe { libc::read(from.as_raw_fd(), frame.as_mut_ptr().cast(), frame.len()) };
                if n <= 0 {
                    return;
                }
                // SAFETY: as above; `n` bytes of `frame` are initialised.
                let _ = unsafe { libc::write(to.as_raw_fd(), frame.as_ptr().cast(), n as usize) };
            }
        });
    }
}

// ---- plans ----

pub fn subnet(id: &str, cidr: &str, gateway: Option<Ipv4Addr>) -> SubnetPlan {
    SubnetPlan {
        id: id.into(),
        cidr: cidr.parse().unwrap(),
        gateway_ip: gateway,
        enable_dhcp: true,
        dns_nameservers: vec![],
        host_routes: vec![],
    }
}

pub fn port(id: &str, mac: &str, ip: Ipv4Addr, firewall: Option<Firewall>) -> PortPlan {
    PortPlan {
        id: id.into(),
        mac: mac.into(),
        ips: vec![ip],
        admin_state_up: true,
        firewall,
    }
}

/// A network with one subnet, DHCP at `.2` and `ports`, whose leases DHCP hands out.
pub fn network(id: &str, cidr: &str, ports: Vec<PortPlan>) -> NetworkPlan {
    let net: ipnet::Ipv4Net = cidr.parse().unwrap();
    let base = u32::from(net.network());
    let gateway = Ipv4Addr::from(base + 1);
    let dhcp_ip = Ipv4Addr::from(base + 2);
    NetworkPlan {
        id: id.into(),
        mtu: 1500,
        subnets: vec![subnet(&format!("{id}-sub"), cidr, Some(gateway))],
        dhcp: Some(DhcpPlan {
            port_id: format!("d{id}"),
            mac: format!("fa:16:3e:00:{:02x}:02", base >> 8 & 0xff),
            addresses: vec![ipnet::Ipv4Net::new(dhcp_ip, net.prefix_len()).unwrap()],
            hosts: ports
                .iter()
                .map(|p| DhcpHost {
                    mac: p.mac.clone(),
                    ip: p.ips[0],
                    hostname: p.id.clone(),
                })
                .collect(),
            lease_seconds: 3600,
        }),
        ports,
    }
}

pub fn plan(networks: Vec<NetworkPlan>) -> HostPlan {
    HostPlan {
        networks,
        routers: vec![],
    }
}

/// A rule allowing `protocol` (TCP/UDP destination `port`) from or to anywhere.
pub fn allow(protocol: Protocol, port: Option<u16>) -> Rule {
    Rule {
        protocol,
        ports: port.map(|p| (p, p)),
        icmp_type: None,
        icmp_code: None,
        remote: Remote::Any,
    }
}

/// Neutron's default-like group: everything out, ICMP and `tcp` in.
pub fn firewall(tcp: &[u16]) -> Firewall {
    let mut ingress = vec![allow(Protocol::Icmp, None)];
    ingress.extend(tcp.iter().map(|p| allow(Protocol::Tcp, Some(*p))));
    Firewall {
        allowed_address_pairs: vec![],
        ingress,
        egress: vec![allow(Protocol::Any, None)],
    }
}
