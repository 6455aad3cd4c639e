//! A real network plane for the NIC tests and the network bench: one network
//! 10.40.0.0/24 with DHCP in a plane namespace unique to the test, a client namespace on
//! its bridge (10.40.0.200) that talks to the guests' web service, all torn down when
//! dropped.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use hypervisor::{NicSpec, VmSpec};
use netplane::{
    bridge_name, tap_name, DhcpHost, DhcpPlan, Firewall, HostPlan, LinuxPlane, NetworkPlan,
    NetworkPlane, PortPlan, Protocol, Remote, Rule, SubnetPlan,
};

pub const BOOT: Duration = Duration::from_secs(180);

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: the network tests need root (network namespaces)");
    }
    root
}

pub fn sh(command: &str) -> String {
    let out = Command::new("sh").args(["-c", command]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A network plane with its client namespace, torn down when dropped.
pub struct Net {
    /// The namespace the VMs run in (their taps are there).
    pub ns: String,
    /// `None` for a hand-made bridge (see [`Net::bare`]).
    pub plane: Option<LinuxPlane>,
    pub client: String,
    state: tempfile::TempDir,
}

impl Net {
    /// The network made by Snapstack's plane (`LinuxPlane`), ports with a firewall.
    pub async fn new(tag: &str, ports: &[(&str, &str, Ipv4Addr)]) -> Self {
        let ns = format!("hv-{tag}-{}", std::process::id());
        let state = tempfile::tempdir().unwrap();
        let plane = LinuxPlane::new(ns.clone(), state.path());
        plane.apply(&plan(ports)).await.unwrap();
        Self::with_client(ns, Some(plane), state)
    }

    /// The same network made by hand, as one would for two bare QEMUs: a bridge, a
    /// persistent tap per port, dnsmasq on the bridge itself (10.40.0.2) with the same
    /// static leases; no firewall, no netfilter on bridged traffic.
    pub fn bare(tag: &str, ports: &[(&str, &str, Ipv4Addr)]) -> Self {
        let ns = format!("hvb-{tag}-{}", std::process::id());
        let state = tempfile::tempdir().unwrap();
        let bridge = bridge_name("net-hv");
        let mut script = format!(
            "ip netns add {ns} && ip -n {ns} link set lo up && \
             ip netns exec {ns} sysctl -qw net.bridge.bridge-nf-call-iptables=0 && \
             ip -n {ns} link add {bridge} type bridge && ip -n {ns} link set {bridge} up && \
             ip -n {ns} addr add 10.40.0.2/24 dev {bridge}"
        );
        let mut hosts = String::new();
        for (id, mac, ip) in ports {
            let tap = tap_name(id);
            script.push_str(&format!(
                " && ip -n {ns} tuntap add dev {tap} mode tap vnet_hdr && \
                 ip -n {ns} link set {tap} master {bridge} up"
            ));
            hosts.push_str(&format!("{mac},{ip}\n"));
        }
        let dir = state.path().display().to_string();
        std::fs::write(state.path().join("hosts"), hosts).unwrap();
        script.push_str(&format!(
            " && ip netns exec {ns} dnsmasq --conf-file=/dev/null --no-hosts --no-resolv \
             --port=0 --bind-interfaces --interface={bridge} --except-interface=lo \
             --user=root --group=root --pid-file={dir}/dnsmasq.pid \
             --dhcp-hostsfile={dir}/hosts --dhcp-leasefile={dir}/leases \
             --dhcp-range=10.40.0.0,static,255.255.255.0,3600s --dhcp-option=option:router,10.40.0.1"
        ));
        let status = Command::new("sh").args(["-c", &script]).status().unwrap();
        assert!(status.success(), "{script}");
        Self::with_client(ns, None, state)
    }

    fn with_client(ns: String, plane: Option<LinuxPlane>, state: tempfile::TempDir) -> Self {
        let client = format!("{ns}-client");
        sh(&format!(
            "ip netns add {client} && ip -n {client} link set lo up && \
             ip -n {ns} link add xclient type veth peer name eth0 netns {client} && \
             ip -n {ns} link set xclient master {bridge} up && \
             ip -n {client} link set eth0 up && ip -n {client} addr add 10.40.0.200/24 dev eth0",
            bridge = bridge_name("net-hv")
        ));
        Self {
            ns,
            plane,
            client,
            state,
        }
    }

    /// What `http://ip/path` answers to the client (empty when unreachable within 5 s).
    pub fn fetch(&self, ip: &str, path: &str) -> String {
        self.fetch_within(ip, path, 5)
    }

    /// Like [`Net::fetch`], waiting up to `seconds`.
    pub fn fetch_within(&self, ip: &str, path: &str, seconds: u32) -> String {
        sh(&format!(
            "ip netns exec {} curl -s -m {seconds} http://{ip}{path}",
            self.client
        ))
    }

    /// Fetches until the answer contains `needle` (the guest may still be starting).
    pub async fn fetch_until(&self, ip: &str, path: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self.fetch(ip, path);
            if answer.contains(needle) || tokio::time::Instant::now() > deadline {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.client])
            .status();
        let Some(plane) = &self.plane else {
            let pid_file = self.state.path().join("dnsmasq.pid");
            if let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                .filter(|p| *p > 0)
            {
                // SAFETY: kill(2) takes two integers; the pid is our dnsmasq's.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.ns])
                .status();
            return;
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(plane.teardown())
                    .unwrap()
            });
        });
    }
}

pub fn allow(protocol: Protocol, port: Option<u16>) -> Rule {
    Rule {
        protocol,
        ports: port.map(|p| (p, p)),
        icmp_type: None,
        icmp_code: None,
        remote: Remote::Any,
    }
}

/// One network 10.40.0.0/24 with DHCP and these (port id, MAC, address) ports, each with
/// a firewall letting in ICMP, TCP 80 (the guest's web service) and 5001 (its sink).
pub fn plan(ports: &[(&str, &str, Ipv4Addr)]) -> HostPlan {
    let firewall = Firewall {
        allowed_address_pairs: vec![],
        ingress: vec![
            allow(Protocol::Icmp, None),
            allow(Protocol::Tcp, Some(80)),
            allow(Protocol::Tcp, Some(5001)),
        ],
        egress: vec![allow(Protocol::Any, None)],
    };
    HostPlan {
        networks: vec![NetworkPlan {
            id: "net-hv".into(),
            mtu: 1500,
            subnets: vec![SubnetPlan {
                id: "sub-hv".into(),
                cidr: "10.40.0.0/24".parse().unwrap(),
                gateway_ip: Some(Ipv4Addr::new(10, 40, 0, 1)),
                enable_dhcp: true,
                dns_nameservers: vec![],
                host_routes: vec![],
            }],
            dhcp: Some(DhcpPlan {
                port_id: "dhcp-hv".into(),
                mac: "fa:16:3e:40:00:02".into(),
                addresses: vec!["10.40.0.2/24".parse().unwrap()],
                hosts: ports
                    .iter()
                    .map(|(id, mac, ip)| DhcpHost {
                        mac: mac.to_string(),
                        ip: *ip,
                        hostname: id.to_string(),
                    })
                    .collect(),
                lease_seconds: 3600,
            }),
            ports: ports
                .iter()
                .map(|(id, mac, ip)| PortPlan {
                    id: id.to_string(),
                    mac: mac.to_string(),
                    ips: vec![*ip],
                    admin_state_up: true,
                    firewall: Some(firewall.clone()),
                })
                .collect(),
        }],
        routers: vec![],
    }
}

pub fn nic(port_id: &str, mac: &str) -> NicSpec {
    NicSpec {
        id: "net0".into(),
        mac: mac.into(),
        tap: tap_name(port_id),
    }
}

pub fn with_nic(mut spec: VmSpec, port_id: &str, mac: &str) -> VmSpec {
    spec.nics.push(nic(port_id, mac));
    spec
}

pub const A: (&str, &str, Ipv4Addr) = (
    "port-hv-a",
    "fa:16:3e:40:00:0b",
    Ipv4Addr::new(10, 40, 0, 11),
);
pub const B: (&str, &str, Ipv4Addr) = (
    "port-hv-b",
    "fa:16:3e:40:00:0c",
    Ipv4Addr::new(10, 40, 0, 12),
);
