//! The desired state of one host's virtual networks: plain data, computed by the layer
//! above from its records and handed whole to [`crate::NetworkPlane::apply`].
//!
//! IPv4 only. Security-group rules arrive resolved: a rule whose remote is a security
//! group carries the addresses of that group's ports ([`Remote::Prefixes`]), so the plane
//! never needs to know about groups.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Everything this host must carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPlan {
    pub networks: Vec<NetworkPlan>,
    pub routers: Vec<RouterPlan>,
}

/// One network: a bridge, its DHCP server, the VM ports bound to this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPlan {
    pub id: String,
    pub mtu: u32,
    pub subnets: Vec<SubnetPlan>,
    /// The network's DHCP port, when one of its subnets has DHCP enabled.
    pub dhcp: Option<DhcpPlan>,
    /// VM ports: each a tap that QEMU opens by name ([`crate::tap_name`]).
    pub ports: Vec<PortPlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetPlan {
    pub id: String,
    pub cidr: Ipv4Net,
    pub gateway_ip: Option<Ipv4Addr>,
    pub enable_dhcp: bool,
    pub dns_nameservers: Vec<Ipv4Addr>,
    /// Extra routes DHCP hands out (option 121), destination and next hop.
    pub host_routes: Vec<(Ipv4Net, Ipv4Addr)>,
}

/// The DHCP server of a network (dnsmasq in `<ns>-dhcp-<net>`): static leases only, as
/// Neutron's DHCP agent: an address goes only to the MAC of the port that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpPlan {
    pub port_id: String,
    pub mac: String,
    /// One address per DHCP-enabled subnet, with the subnet's prefix length.
    pub addresses: Vec<Ipv4Net>,
    pub hosts: Vec<DhcpHost>,
    pub lease_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpHost {
    pub mac: String,
    pub ip: Ipv4Addr,
    pub hostname: String,
}

/// A VM's port on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPlan {
    pub id: String,
    pub mac: String,
    pub ips: Vec<Ipv4Addr>,
    /// Down: the tap exists (QEMU can open it) but passes nothing.
    pub admin_state_up: bool,
    /// `None`: port security off (no anti-spoofing, no filtering).
    pub firewall: Option<Firewall>,
}

/// Port security: anti-spoofing plus the port's security-group rules, stateful, default
/// deny (a reply to an allowed connection is always let through).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firewall {
    /// Extra (MAC, prefix) pairs the port may send from (Neutron's allowed address pairs).
    pub allowed_address_pairs: Vec<(String, Ipv4Net)>,
    /// Traffic to the VM; a rule's remote is the source.
    pub ingress: Vec<Rule>,
    /// Traffic from the VM; a rule's remote is the destination.
    pub egress: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub protocol: Protocol,
    /// TCP/UDP destination ports, inclusive; `None`: all.
    pub ports: Option<(u16, u16)>,
    /// ICMP type and code (`port_range_min`/`max` of an ICMP rule in Neutron).
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub remote: Remote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    Any,
    Tcp,
    Udp,
    Icmp,
    /// Any other IP protocol by number.
    Number(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Remote {
    Any,
    /// These prefixes only (a remote group's member addresses; empty matches nothing).
    Prefixes(Vec<Ipv4Net>),
}

/// A router: a namespace forwarding between the subnets it joins, with SNAT and
/// floating IPs on its gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterPlan {
    pub id: String,
    pub gateway: Option<RouterGateway>,
    pub interfaces: Vec<RouterInterface>,
    pub floating_ips: Vec<FloatingIpPlan>,
    /// Static routes (destination, next hop).
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterGateway {
    pub port_id: String,
    /// The external network (a network of this plan).
    pub network_id: String,
    pub mac: String,
    /// The gateway port's address with its subnet's prefix length.
    pub address: Ipv4Net,
    /// The external subnet's gateway: the router's default route.
    pub nexthop: Option<Ipv4Addr>,
    /// Source NAT of the internal subnets behind the gateway address.
    pub snat: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterInterface {
    pub port_id: String,
    pub network_id: String,
    pub mac: String,
    /// The interface's address (usually the subnet's gateway) with the prefix length.
    pub address: Ipv4Net,
}

/// A floating IP on the router's gateway, translated to a fixed IP behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIpPlan {
    pub floating_ip: Ipv4Addr,
    pub fixed_ip: Ipv4Addr,
}

impl HostPlan {
    /// Checks what the plane relies on: unique ids, routers only on networks of the plan,
    /// floating IPs only on routers with a gateway.
    pub fn validate(&self) -> Result<()> {
        let mut networks = HashSet::new();
        let mut ports = HashSet::new();
        let mut port = |id: &str| {
            if ports.insert(id.to_string()) {
                Ok(())
            } else {
                Err(Error::InvalidPlan(format!("port {id} appears twice")))
            }
        };
        for network in &self.networks {
            if !networks.insert(network.id.as_str()) {
                return Err(Error::InvalidPlan(format!(
                    "network {} appears twice",
                    network.id
                )));
            }
            if let Some(dhcp) = &network.dhcp {
                port(&dhcp.port_id)?;
            }
            for p in &network.ports {
                port(&p.id)?;
            }
        }
        let mut routers = HashSet::new();
        for router in &self.routers {
            if !routers.insert(router.id.as_str()) {
                return Err(Error::InvalidPlan(format!(
                    "router {} appears twice",
                    router.id
                )));
            }
            let joined = router
                .interfaces
                .iter()
                .map(|i| (i.port_id.as_str(), i.network_id.as_str()))
                .chain(
                    router
                        .gateway
                        .iter()
                        .map(|g| (g.port_id.as_str(), g.network_id.as_str())),
                );
            for (port_id, network_id) in joined {
                port(port_id)?;
                if !networks.contains(network_id) {
                    return Err(Error::InvalidPlan(format!(
                        "router {} joins network {network_id}, which the plan does not have",
                        router.id
                    )));
                }
            }
            if router.gateway.is_none() && !router.floating_ips.is_empty() {
                return Err(Error::InvalidPlan(format!(
                    "router {} has floating IPs but no gateway",
                    router.id
                )));
            }
        }
        Ok(())
    }
}
