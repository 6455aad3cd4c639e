//! Routers on the real plane: joining two networks, floating IPs from an external client.

mod common;

use std::net::Ipv4Addr;

use common::*;
use netplane::{
    FloatingIpPlan, HostPlan, NetworkPlane, RouterGateway, RouterInterface, RouterPlan,
};

const A_MAC: &str = "fa:16:3e:01:00:0b";
const B_MAC: &str = "fa:16:3e:02:00:0b";

/// net-one 10.1.0.0/24 (port a .11), net-two 10.2.0.0/24 (port b .11), external
/// 172.24.4.0/24; a router joining `joined` of them.
fn topology(router: Option<RouterPlan>) -> HostPlan {
    let one = network(
        "net-one",
        "10.1.0.0/24",
        vec![port(
            "port-a",
            A_MAC,
            Ipv4Addr::new(10, 1, 0, 11),
            Some(firewall(&[80])),
        )],
    );
    let two = network(
        "net-two",
        "10.2.0.0/24",
        vec![port(
            "port-b",
            B_MAC,
            Ipv4Addr::new(10, 2, 0, 11),
            Some(firewall(&[80])),
        )],
    );
    let mut ext = network("net-ext", "172.24.4.0/24", vec![]);
    ext.dhcp = None;
    HostPlan {
        networks: vec![one, two, ext],
        routers: router.into_iter().collect(),
    }
}

fn interface(port_id: &str, network_id: &str, mac: &str, address: &str) -> RouterInterface {
    RouterInterface {
        port_id: port_id.into(),
        network_id: network_id.into(),
        mac: mac.into(),
        address: address.parse().unwrap(),
    }
}

fn router(networks: &[(&str, &str)], floating_ips: Vec<FloatingIpPlan>) -> RouterPlan {
    RouterPlan {
        id: "router-1".into(),
        gateway: Some(RouterGateway {
            port_id: "gw-port".into(),
            network_id: "net-ext".into(),
            mac: "fa:16:3e:ff:00:01".into(),
            address: "172.24.4.10/24".parse().unwrap(),
            nexthop: Some(Ipv4Addr::new(172, 24, 4, 1)),
            snat: true,
        }),
        interfaces: networks
            .iter()
            .enumerate()
            .map(|(i, (net, gw))| {
                interface(
                    &format!("rif-{net}"),
                    net,
                    &format!("fa:16:3e:ff:01:{i:02x}"),
                    gw,
                )
            })
            .collect(),
        floating_ips,
        routes: vec![],
    }
}

#[tokio::test]
async fn router_when_joining_two_networks_then_ports_reach_each_other_and_not_after() {
    if !is_root() {
        return;
    }
    let t = TestPlane::new("rt-join");
    let dir = tempfile::tempdir().unwrap();
    t.plane.apply(&topology(None)).await.unwrap();
    let a = t.vm("a", "port-a", A_MAC);
    let mut b = t.vm("b", "port-b", B_MAC);
    a.dhcp(dir.path()).unwrap();
    b.dhcp(dir.path()).unwrap();
    b.serve(80, "b on net-two", dir.path());
    let before = a.fetch("10.2.0.11", 80);

    let joined = router(
        &[("net-one", "10.1.0.1/24"), ("net-two", "10.2.0.1/24")],
        vec![],
    );
    t.plane.apply(&topology(Some(joined))).await.unwrap();
    let routed = a.fetch("10.2.0.11", 80);
    let only_one = router(&[("net-one", "10.1.0.1/24")], vec![]);
    t.plane.apply(&topology(Some(only_one))).await.unwrap();
    let after = a.fetch("10.2.0.11", 80);

    assert_eq!(before, "");
    assert_eq!(routed, "b on net-two");
    assert_eq!(after, "");
}

#[tokio::test]
async fn floating_ip_when_associated_then_reachable_from_external_client_and_not_after() {
    if !is_root() {
        return;
    }
    let t = TestPlane::new("rt-fip");
    let dir = tempfile::tempdir().unwrap();
    let fip = FloatingIpPlan {
        floating_ip: Ipv4Addr::new(172, 24, 4, 20),
        fixed_ip: Ipv4Addr::new(10, 1, 0, 11),
    };
    let with_fip = router(&[("net-one", "10.1.0.1/24")], vec![fip]);
    t.plane.apply(&topology(Some(with_fip))).await.unwrap();
    let mut a = t.vm("a", "port-a", A_MAC);
    a.dhcp(dir.path()).unwrap();
    a.serve(80, "a via floating ip", dir.path());
    let mut client = t.client("ext", "net-ext", "172.24.4.1/24");
    client.serve(8080, "external", dir.path());

    let inbound = client.fetch("172.24.4.20", 80);
    let outbound_source = a.fetch("172.24.4.1", 8080);
    t.plane
        .apply(&topology(Some(router(
            &[("net-one", "10.1.0.1/24")],
            vec![],
        ))))
        .await
        .unwrap();
    let after = client.fetch("172.24.4.20", 80);
    let snat_still = a.fetch("172.24.4.1", 8080);

    assert_eq!(inbound, "a via floating ip");
    assert_eq!(outbound_source, "external");
    assert_eq!(after, "");
    assert_eq!(snat_still, "external");
}
