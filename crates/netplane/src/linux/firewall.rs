//! Port security as one nftables script, generated from the plan by a pure function and
//! loaded atomically (`nft -f -`: the old tables are deleted and the new ones defined in
//! one transaction, so no packet ever sees a half-built ruleset).
//!
//! The bridge family has no conntrack here, and the inet family sees only the bridge
//! (not the port) of bridged IPv4 (via br_netfilter). So the work is split:
//!
//! ```text
//! table bridge snapstack   (priority -200: before br_netfilter hands IPv4 to inet)
//!   prerouting: from a VM port → from_<n>: anti-spoofing (MAC, IPv4, ARP; DHCP discover
//!               from 0.0.0.0), mark low 16 bits = n
//!   forward:    to a VM port   → to_<n>: no IPv6, mark high 16 bits = n
//!   an administratively down port: everything from and to it dropped
//! table inet snapstack     (forward hook, stateful)
//!   established/related accept, invalid drop,
//!   egress_<in-port> then ingress_<out-port>: each `return`s on a matching rule and
//!   drops at its end, so a packet passes only if both ports allow it
//! ```
//!
//! DHCP is always allowed as Neutron does (client → server from the port, server →
//! client to it; a VM answering as a DHCP server is dropped). Ports without port
//! security get no chain, no mark, no filtering.

use std::fmt::Write;

use ipnet::Ipv4Net;

use crate::plan::{HostPlan, PortPlan, Protocol, Remote, Rule};
use crate::tap_name;

/// The ruleset of the host namespace for `plan`: always deletes the previous tables, and
/// defines new ones when some port needs filtering.
pub(crate) fn host_ruleset(plan: &HostPlan) -> String {
    let mut out = String::new();
    for family in ["bridge", "inet"] {
        let _ = writeln!(out, "add table {family} snapstack");
        let _ = writeln!(out, "delete table {family} snapstack");
    }
    let ports: Vec<(u32, &PortPlan)> = plan
        .networks
        .iter()
        .flat_map(|n| &n.ports)
        .filter(|p| p.firewall.is_some() || !p.admin_state_up)
        .zip(1u32..)
        .map(|(p, n)| (n, p))
        .collect();
    if ports.is_empty() {
        return out;
    }
    bridge_table(&mut out, &ports);
    inet_table(&mut out, &ports);
    out
}

fn bridge_table(out: &mut String, ports: &[(u32, &PortPlan)]) {
    out.push_str("table bridge snapstack {\n");
    out.push_str(
        "  chain prerouting {\n    type filter hook prerouting priority -200; policy accept;\n",
    );
    for (n, port) in ports {
        let _ = writeln!(out, "    iifname \"{}\" jump from_{n}", tap_name(&port.id));
    }
    out.push_str("  }\n");
    out.push_str("  chain forward {\n    type filter hook forward priority -200; policy accept;\n");
    for (n, port) in ports {
        let _ = writeln!(out, "    oifname \"{}\" jump to_{n}", tap_name(&port.id));
    }
    out.push_str("  }\n");
    for (n, port) in ports {
        let _ = writeln!(out, "  chain from_{n} {{");
        from_port(out, *n, port);
        let _ = writeln!(out, "  }}\n  chain to_{n} {{");
        to_port(out, *n, port);
        out.push_str("  }\n");
    }
    out.push_str("}\n");
}

/// Frames from the VM: only its own (MAC, address) pairs, DHCP discovery, ARP about itself.
fn from_port(out: &mut String, n: u32, port: &PortPlan) {
    let Some(firewall) = port.firewall.as_ref().filter(|_| port.admin_state_up) else {
        out.push_str("    drop\n");
        return;
    };
    let _ = writeln!(out, "    meta mark set {n:#x}");
    let mac = port.mac.to_ascii_lowercase();
    let mut pairs: Vec<(String, String)> = Vec::new();
    if !port.ips.is_empty() {
        let ips: Vec<String> = port.ips.iter().map(ToString::to_string).collect();
        pairs.push((mac.clone(), set(&ips)));
    }
    for (pair_mac, prefix) in &firewall.allowed_address_pairs {
        pairs.push((pair_mac.to_ascii_lowercase(), prefix.to_string()));
    }
    for (mac, ips) in &pairs {
        let _ = writeln!(out, "    ether saddr {mac} ip saddr {ips} accept");
        let _ = writeln!(
            out,
            "    ether saddr {mac} arp saddr ether {mac} arp saddr ip {ips} accept"
        );
    }
    let _ = writeln!(
        out,
        "    ether saddr {mac} ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept"
    );
    let _ = writeln!(
        out,
        "    ether saddr {mac} arp saddr ether {mac} arp saddr ip 0.0.0.0 accept"
    );
    out.push_str("    drop\n");
}

/// Frames to the VM: IPv4 and ARP only; the mark tells the inet table the destination.
fn to_port(out: &mut String, n: u32, port: &PortPlan) {
    if port.firewall.is_none() || !port.admin_state_up {
        out.push_str("    drop\n");
        return;
    }
    out.push_str("    ether type ip6 drop\n");
    let _ = writeln!(
        out,
        "    meta mark set meta mark and 0xffff or {:#x}",
        n << 16
    );
}

fn inet_table(out: &mut String, ports: &[(u32, &PortPlan)]) {
    let filtered: Vec<(u32, &PortPlan)> = ports
        .iter()
        .filter(|(_, p)| p.firewall.is_some() && p.admin_state_up)
        .copied()
        .collect();
    if filtered.is_empty() {
        return;
    }
    out.push_str("table inet snapstack {\n");
    out.push_str("  chain forward {\n    type filter hook forward priority 0; policy accept;\n");
    out.push_str("    meta mark 0 accept\n");
    out.push_str("    ct state established,related accept\n");
    out.push_str("    ct state invalid drop\n");
    let egress: Vec<String> = filtered
        .iter()
        .map(|(n, _)| format!("{n:#x} : jump egress_{n}"))
        .collect();
    let ingress: Vec<String> = filtered
        .iter()
        .map(|(n, _)| format!("{:#x} : jump ingress_{n}", n << 16))
        .collect();
    let _ = writeln!(
        out,
        "    meta mark and 0xffff vmap {{ {} }}",
        egress.join(", ")
    );
    let _ = writeln!(
        out,
        "    meta mark and 0xffff0000 vmap {{ {} }}",
        ingress.join(", ")
    );
    out.push_str("  }\n");
    for (n, port) in filtered {
        let firewall = port.firewall.as_ref().expect("filtered ports have one");
        let _ = writeln!(out, "  chain egress_{n} {{");
        out.push_str("    udp sport 68 udp dport 67 return\n");
        out.push_str("    udp sport 67 udp dport 68 drop\n");
        for rule in &firewall.egress {
            if let Some(m) = rule_match(rule, "daddr") {
                let _ = writeln!(out, "    {m}return");
            }
        }
        out.push_str("    drop\n  }\n");
        let _ = writeln!(out, "  chain ingress_{n} {{");
        out.push_str("    udp sport 67 udp dport 68 return\n");
        for rule in &firewall.ingress {
            if let Some(m) = rule_match(rule, "saddr") {
                let _ = writeln!(out, "    {m}return");
            }
        }
        out.push_str("    drop\n  }\n");
    }
    out.push_str("}\n");
}

/// The match of one rule (ending in a space, or empty for "everything"); `None` when it
/// matches nothing (a remote group without members). `field`: `saddr` for ingress (the
/// remote is the source), `daddr` for egress.
fn rule_match(rule: &Rule, field: &str) -> Option<String> {
    let mut m = String::new();
    match &rule.remote {
        Remote::Any => {}
        Remote::Prefixes(prefixes) if prefixes.is_empty() => return None,
        Remote::Prefixes(prefixes) => {
            let prefixes: Vec<String> = prefixes.iter().map(Ipv4Net::to_string).collect();
            let _ = write!(m, "ip {field} {} ", set(&prefixes));
        }
    }
    let ports = |proto: &str| match rule.ports {
        Some((lo, hi)) if lo == hi => format!("{proto} dport {lo} "),
        Some((lo, hi)) => format!("{proto} dport {lo}-{hi} "),
        None => format!("meta l4proto {proto} "),
    };
    match rule.protocol {
        Protocol::Any => {}
        Protocol::Tcp => m.push_str(&ports("tcp")),
        Protocol::Udp => m.push_str(&ports("udp")),
        Protocol::Icmp => match (rule.icmp_type, rule.icmp_code) {
            (Some(t), Some(c)) => {
                let _ = write!(m, "icmp type {t} icmp code {c} ");
            }
            (Some(t), None) => {
                let _ = write!(m, "icmp type {t} ");
            }
            _ => m.push_str("meta l4proto icmp "),
        },
        Protocol::Number(p) => {
            let _ = write!(m, "meta l4proto {p} ");
        }
    }
    Some(m)
}

fn set(items: &[String]) -> String {
    if items.len() == 1 {
        items[0].clone()
    } else {
        format!("{{ {} }}", items.join(", "))
    }
}

#[cfg(test)]
mod tests;
