use std::net::Ipv4Addr;

use super::*;
use crate::plan::{Firewall, NetworkPlan};

fn port(id: &str, firewall: Option<Firewall>) -> PortPlan {
    PortPlan {
        id: id.into(),
        mac: "FA:16:3E:00:00:01".into(),
        ips: vec![Ipv4Addr::new(10, 0, 0, 5)],
        admin_state_up: true,
        firewall,
    }
}

fn plan(ports: Vec<PortPlan>) -> HostPlan {
    HostPlan {
        networks: vec![NetworkPlan {
            id: "net-1".into(),
            mtu: 1500,
            subnets: vec![],
            dhcp: None,
            ports,
        }],
        routers: vec![],
    }
}

fn tcp(port: u16, remote: Remote) -> Rule {
    Rule {
        protocol: Protocol::Tcp,
        ports: Some((port, port)),
        icmp_type: None,
        icmp_code: None,
        remote,
    }
}

#[test]
fn host_ruleset_when_no_port_needs_filtering_then_only_deletes_tables() {
    let plan = plan(vec![port("p-open", None)]);

    let script = host_ruleset(&plan);

    assert_eq!(
        script,
        "add table bridge snapstack\ndelete table bridge snapstack\n\
         add table inet snapstack\ndelete table inet snapstack\n"
    );
}

#[test]
fn host_ruleset_when_port_has_firewall_then_antispoofing_and_marks() {
    let plan = plan(vec![port("p-secure", Some(Firewall::default()))]);

    let script = host_ruleset(&plan);

    assert!(
        script.contains("iifname \"tapp-secure\" jump from_1"),
        "{script}"
    );
    assert!(script.contains("meta mark set 0x1\n"), "{script}");
    assert!(
        script.contains("ether saddr fa:16:3e:00:00:01 ip saddr 10.0.0.5 accept"),
        "{script}"
    );
    assert!(
        script.contains("meta mark set meta mark and 0xffff or 0x10000"),
        "{script}"
    );
    assert!(script.contains("0x1 : jump egress_1"), "{script}");
    assert!(script.contains("0x10000 : jump ingress_1"), "{script}");
}

#[test]
fn host_ruleset_when_ingress_rule_from_prefix_then_source_matched_and_returns() {
    let firewall = Firewall {
        ingress: vec![tcp(
            22,
            Remote::Prefixes(vec!["10.0.0.0/24".parse().unwrap()]),
        )],
        ..Firewall::default()
    };
    let plan = plan(vec![port("p", Some(firewall))]);

    let script = host_ruleset(&plan);

    assert!(
        script.contains("    ip saddr 10.0.0.0/24 tcp dport 22 return\n"),
        "{script}"
    );
}

#[test]
fn host_ruleset_when_remote_group_empty_then_rule_left_out() {
    let firewall = Firewall {
        egress: vec![tcp(80, Remote::Prefixes(vec![]))],
        ..Firewall::default()
    };
    let plan = plan(vec![port("p", Some(firewall))]);

    let script = host_ruleset(&plan);

    assert!(!script.contains("dport 80"), "{script}");
}

#[test]
fn host_ruleset_when_port_down_then_everything_dropped_without_inet_chains() {
    let mut down = port("p-down", None);
    down.admin_state_up = false;
    let plan = plan(vec![down]);

    let script = host_ruleset(&plan);

    assert!(script.contains("chain from_1 {\n    drop\n  }"), "{script}");
    assert!(script.contains("chain to_1 {\n    drop\n  }"), "{script}");
    assert!(!script.contains("table inet snapstack {"), "{script}");
}

#[test]
fn rule_match_when_icmp_type_and_any_remote_then_type_only() {
    let rule = Rule {
        protocol: Protocol::Icmp,
        ports: None,
        icmp_type: Some(8),
        icmp_code: None,
        remote: Remote::Any,
    };

    let m = rule_match(&rule, "saddr");

    assert_eq!(m.as_deref(), Some("icmp type 8 "));
}
