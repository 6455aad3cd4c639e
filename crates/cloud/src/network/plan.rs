//! This host's [`netplane::HostPlan`], computed from the records.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use domain::network::{DeviceOwner, Ethertype, Port, RuleProtocol, SecurityGroupRule, Subnet};
use domain::{Result, SecurityGroupId};
use ipnet::{IpNet, Ipv4Net};
use netplane::{
    DhcpHost, DhcpPlan, Firewall, FloatingIpPlan, HostPlan, NetworkPlan, PortPlan, Protocol,
    Remote, RouterGateway, RouterInterface, RouterPlan, Rule, SubnetPlan,
};

use crate::Cloud;

/// How long a DHCP lease lasts (Neutron's `dhcp_lease_duration`).
const LEASE_SECONDS: u32 = 86400;

impl Cloud {
    pub(crate) async fn network_plan(&self) -> Result<HostPlan> {
        let networks = self.store.networks().await?;
        let subnets = self.store.subnets().await?;
        let ports = self.store.ports().await?;
        let rules = self.store.security_group_rules().await?;
        let mut members: HashMap<SecurityGroupId, Vec<Ipv4Net>> = HashMap::new();
        for port in &ports {
            for group in &port.security_groups {
                members
                    .entry(*group)
                    .or_default()
                    .extend(port.ips().map(Ipv4Net::from));
            }
        }
        let mut plan = HostPlan::default();
        for network in networks {
            let subnets: Vec<&Subnet> = subnets
                .iter()
                .filter(|s| s.network_id == network.id)
                .collect();
            let on_network: Vec<&Port> = ports
                .iter()
                .filter(|p| p.network_id == network.id)
                .collect();
            let dhcp = on_network
                .iter()
                .find(|p| p.owner() == DeviceOwner::Dhcp)
                .map(|dhcp| dhcp_plan(dhcp, &subnets, &on_network));
            let vm_ports = on_network
                .iter()
                .filter(|p| p.owner() == DeviceOwner::Compute && p.host_id == *self.host)
                .map(|p| port_plan(p, &rules, &members))
                .collect();
            plan.networks.push(NetworkPlan {
                id: network.id.to_string(),
                mtu: network.mtu,
                subnets: subnets.iter().map(|s| subnet_plan(s)).collect(),
                dhcp,
                ports: vm_ports,
            });
        }
        let floating_ips = self.store.floating_ips().await?;
        for router in self.store.routers().await? {
            let id = router.id.to_string();
            let address = |port: &Port| -> Option<Ipv4Net> {
                let ip = port.ips().next()?;
                let prefix = subnets
                    .iter()
                    .find(|s| s.cidr.contains(&ip))?
                    .cidr
                    .prefix_len();
                Ipv4Net::new(ip, prefix).ok()
            };
            let gateway = router.gateway.and_then(|g| {
                let port = ports.iter().find(|p| p.id == g.port_id)?;
                let ip = port.ips().next()?;
                let nexthop = subnets.iter().find(|s| s.cidr.contains(&ip))?.gateway_ip;
                Some(RouterGateway {
                    port_id: port.id.to_string(),
                    network_id: g.network_id.to_string(),
                    mac: port.mac_address.clone(),
                    address: address(port)?,
                    nexthop,
                    snat: g.enable_snat,
                })
            });
            let interfaces = ports
                .iter()
                .filter(|p| p.owner() == DeviceOwner::RouterInterface && p.device_id == id)
                .filter_map(|p| {
                    Some(RouterInterface {
                        port_id: p.id.to_string(),
                        network_id: p.network_id.to_string(),
                        mac: p.mac_address.clone(),
                        address: address(p)?,
                    })
                })
                .collect();
            let floating = floating_ips
                .iter()
                .filter(|f| f.router_id == Some(router.id) && gateway.is_some())
                .filter_map(|f| {
                    Some(FloatingIpPlan {
                        floating_ip: f.floating_ip_address,
                        fixed_ip: f.fixed_ip_address?,
                    })
                })
                .collect();
            plan.routers.push(RouterPlan {
                id,
                gateway,
                interfaces,
                floating_ips: floating,
                routes: router
                    .routes
                    .iter()
                    .map(|r| (r.destination, r.nexthop))
                    .collect(),
            });
        }
        Ok(plan)
    }
}

fn subnet_plan(s: &Subnet) -> SubnetPlan {
    SubnetPlan {
        id: s.id.to_string(),
        cidr: s.cidr,
        gateway_ip: s.gateway_ip,
        enable_dhcp: s.enable_dhcp,
        dns_nameservers: s.dns_nameservers.clone(),
        host_routes: s
            .host_routes
            .iter()
            .map(|r| (r.destination, r.nexthop))
            .collect(),
    }
}

fn dhcp_plan(dhcp: &Port, subnets: &[&Subnet], ports: &[&Port]) -> DhcpPlan {
    let prefix = |ip: Ipv4Addr| {
        subnets
            .iter()
            .find(|s| s.cidr.contains(&ip))
            .map_or(32, |s| s.cidr.prefix_len())
    };
    let served = |ip: &Ipv4Addr| subnets.iter().any(|s| s.enable_dhcp && s.cidr.contains(ip));
    DhcpPlan {
        port_id: dhcp.id.to_string(),
        mac: dhcp.mac_address.clone(),
        addresses: dhcp
            .ips()
            .filter_map(|ip| Ipv4Net::new(ip, prefix(ip)).ok())
            .collect(),
        hosts: ports
            .iter()
            .filter(|p| p.id != dhcp.id)
            .flat_map(|p| {
                p.ips().filter(served).map(|ip| DhcpHost {
                    mac: p.mac_address.clone(),
                    ip,
                    hostname: format!("host-{}", ip.to_string().replace('.', "-")),
                })
            })
            .collect(),
        lease_seconds: LEASE_SECONDS,
    }
}

fn port_plan(
    port: &Port,
    rules: &[SecurityGroupRule],
    members: &HashMap<SecurityGroupId, Vec<Ipv4Net>>,
) -> PortPlan {
    let firewall = port.port_security_enabled.then(|| {
        let mine = rules.iter().filter(|r| {
            r.ethertype == Ethertype::IPv4 && port.security_groups.contains(&r.security_group_id)
        });
        let mut firewall = Firewall {
            allowed_address_pairs: port
                .allowed_address_pairs
                .iter()
                .map(|(prefix, mac)| {
                    (
                        mac.clone().unwrap_or_else(|| port.mac_address.clone()),
                        *prefix,
                    )
                })
                .collect(),
            ..Firewall::default()
        };
        for rule in mine {
            let planned = rule_plan(rule, members);
            match rule.direction {
                domain::network::Direction::Ingress => firewall.ingress.push(planned),
                domain::network::Direction::Egress => firewall.egress.push(planned),
            }
        }
        firewall
    });
    PortPlan {
        id: port.id.to_string(),
        mac: port.mac_address.clone(),
        ips: port.ips().collect(),
        admin_state_up: port.admin_state_up,
        firewall,
    }
}

fn rule_plan(rule: &SecurityGroupRule, members: &HashMap<SecurityGroupId, Vec<Ipv4Net>>) -> Rule {
    let remote = match (rule.remote_ip_prefix, rule.remote_group_id) {
        (Some(IpNet::V4(prefix)), _) => Remote::Prefixes(vec![prefix]),
        (Some(IpNet::V6(_)), _) => Remote::Prefixes(vec![]),
        (None, Some(group)) => Remote::Prefixes(members.get(&group).cloned().unwrap_or_default()),
        (None, None) => Remote::Any,
    };
    let protocol = match rule.protocol {
        None => Protocol::Any,
        Some(RuleProtocol::Tcp) => Protocol::Tcp,
        Some(RuleProtocol::Udp) => Protocol::Udp,
        Some(RuleProtocol::Icmp) => Protocol::Icmp,
        Some(RuleProtocol::Number(n)) => Protocol::Number(n),
    };
    let is_icmp = protocol == Protocol::Icmp;
    let ports = match (protocol, rule.port_range_min, rule.port_range_max) {
        (Protocol::Tcp | Protocol::Udp | Protocol::Number(_), Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    Rule {
        protocol,
        ports,
        icmp_type: rule.port_range_min.filter(|_| is_icmp).map(|v| v as u8),
        icmp_code: rule.port_range_max.filter(|_| is_icmp).map(|v| v as u8),
        remote,
    }
}
