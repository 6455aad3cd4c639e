//! Routers: a namespace `<ns>-router-<router>` with IPv4 forwarding, an interface `qr-…`
//! per internal subnet and a gateway `qg-…` on the external network, which carries the
//! gateway address and each floating IP as a /32. NAT in `table ip snapstack` there:
//! a floating IP is DNAT to its fixed IP and the fixed IP leaves as the floating IP; the
//! rest of the internal subnets leave behind the gateway address (SNAT), when enabled.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::Value;

use super::cmd;
use super::links::{self, InnerDevice};
use crate::names::{router_gateway_name, router_interface_name};
use crate::plan::{HostPlan, RouterPlan};
use crate::Result;

/// The NAT ruleset of `router` (deletes the previous table in the same transaction).
pub(crate) fn nat_ruleset(router: &RouterPlan) -> String {
    let mut out = String::from("add table ip snapstack\ndelete table ip snapstack\n");
    let Some(gateway) = &router.gateway else {
        return out;
    };
    let qg = router_gateway_name(&gateway.port_id);
    out.push_str("table ip snapstack {\n");
    out.push_str(
        "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n",
    );
    for fip in &router.floating_ips {
        let _ = writeln!(
            out,
            "    ip daddr {} dnat to {}",
            fip.floating_ip, fip.fixed_ip
        );
    }
    out.push_str("  }\n");
    out.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    for fip in &router.floating_ips {
        let _ = writeln!(
            out,
            "    oifname \"{qg}\" ip saddr {} snat to {}",
            fip.fixed_ip, fip.floating_ip
        );
    }
    let internal: Vec<String> = router
        .interfaces
        .iter()
        .map(|i| i.address.trunc().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if gateway.snat && !internal.is_empty() {
        let _ = writeln!(
            out,
            "    oifname \"{qg}\" ip saddr {{ {} }} snat to {}",
            internal.join(", "),
            gateway.address.addr()
        );
    }
    out.push_str("  }\n}\n");
    out
}

/// Configures the devices, routes and NAT of `router` inside `netns` (the veths exist).
pub(crate) async fn converge(netns: &str, router: &RouterPlan, plan: &HostPlan) -> Result<()> {
    let current = links::list(netns).await?;
    let mtu = |network_id: &str| {
        plan.networks
            .iter()
            .find(|n| n.id == network_id)
            .map_or(1500, |n| n.mtu)
    };
    for interface in &router.interfaces {
        let device = InnerDevice {
            name: router_interface_name(&interface.port_id),
            mac: interface.mac.clone(),
            mtu: mtu(&interface.network_id),
            addresses: vec![interface.address],
        };
        links::configure_inner(netns, &device, &current).await?;
    }
    if let Some(gateway) = &router.gateway {
        let mut addresses = vec![gateway.address];
        addresses.extend(
            router
                .floating_ips
                .iter()
                .map(|f| Ipv4Net::from(f.floating_ip)),
        );
        let device = InnerDevice {
            name: router_gateway_name(&gateway.port_id),
            mac: gateway.mac.clone(),
            mtu: mtu(&gateway.network_id),
            addresses,
        };
        links::configure_inner(netns, &device, &current).await?;
    }
    converge_routes(netns, router).await?;
    cmd::run_in_ns(netns, "nft", &["-f", "-"], Some(&nat_ruleset(router)))
        .await
        .map(drop)
}

/// Routes other than the kernel's own: the default route via the external gateway and
/// the static routes, exactly.
async fn converge_routes(netns: &str, router: &RouterPlan) -> Result<()> {
    let mut wanted: Vec<(Ipv4Net, Ipv4Addr)> = router.routes.clone();
    if let Some(nexthop) = router.gateway.as_ref().and_then(|g| g.nexthop) {
        wanted.push((Ipv4Net::default(), nexthop));
    }
    let wanted: BTreeSet<(Ipv4Net, Ipv4Addr)> = wanted.into_iter().collect();
    let current: BTreeSet<(Ipv4Net, Ipv4Addr)> = cmd::ip_json(netns, &["-4", "route", "show"])
        .await?
        .iter()
        .filter(|r| r.get("protocol").and_then(Value::as_str) != Some("kernel"))
        .filter_map(parse_route)
        .collect();
    for (dest, hop) in current.difference(&wanted) {
        cmd::ip(
            netns,
            &[
                "route",
                "delete",
                &dest.to_string(),
                "via",
                &hop.to_string(),
            ],
        )
        .await?;
    }
    for (dest, hop) in wanted.difference(&current) {
        cmd::ip(
            netns,
            &[
                "route",
                "replace",
                &dest.to_string(),
                "via",
                &hop.to_string(),
            ],
        )
        .await?;
    }
    Ok(())
}

fn parse_route(route: &Value) -> Option<(Ipv4Net, Ipv4Addr)> {
    let dst = route.get("dst")?.as_str()?;
    let dest = if dst == "default" {
        Ipv4Net::default()
    } else if dst.contains('/') {
        dst.parse().ok()?
    } else {
        Ipv4Net::from(dst.parse::<Ipv4Addr>().ok()?)
    };
    let hop = route.get("gateway")?.as_str()?.parse().ok()?;
    Some((dest, hop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FloatingIpPlan, RouterGateway, RouterInterface};

    #[test]
    fn nat_ruleset_when_floating_ip_and_snat_then_dnat_and_both_snats() {
        let router = RouterPlan {
            id: "r".into(),
            gateway: Some(RouterGateway {
                port_id: "gw".into(),
                network_id: "ext".into(),
                mac: "fa:16:3e:00:00:10".into(),
                address: "172.24.4.10/24".parse().unwrap(),
                nexthop: Some(Ipv4Addr::new(172, 24, 4, 1)),
                snat: true,
            }),
            interfaces: vec![RouterInterface {
                port_id: "in".into(),
                network_id: "int".into(),
                mac: "fa:16:3e:00:00:11".into(),
                address: "10.0.0.1/24".parse().unwrap(),
            }],
            floating_ips: vec![FloatingIpPlan {
                floating_ip: Ipv4Addr::new(172, 24, 4, 20),
                fixed_ip: Ipv4Addr::new(10, 0, 0, 5),
            }],
            routes: vec![],
        };

        let script = nat_ruleset(&router);

        assert!(
            script.contains("ip daddr 172.24.4.20 dnat to 10.0.0.5"),
            "{script}"
        );
        assert!(
            script.contains("oifname \"qg-gw\" ip saddr 10.0.0.5 snat to 172.24.4.20"),
            "{script}"
        );
        assert!(
            script.contains("oifname \"qg-gw\" ip saddr { 10.0.0.0/24 } snat to 172.24.4.10"),
            "{script}"
        );
    }

    #[test]
    fn parse_route_when_default_then_zero_prefix() {
        let route = serde_json::json!({"dst": "default", "gateway": "172.24.4.1", "dev": "qg-x"});

        let parsed = parse_route(&route);

        assert_eq!(
            parsed,
            Some((Ipv4Net::default(), Ipv4Addr::new(172, 24, 4, 1)))
        );
    }
}
