//! One network on the real plane: DHCP leases, traffic between ports, security groups and
//! anti-spoofing, observed from the "VMs" (test namespaces cabled to the ports' taps).

mod common;

use std::net::Ipv4Addr;

use common::*;
use netplane::NetworkPlane;

const A_MAC: &str = "fa:16:3e:0a:00:0b";
const B_MAC: &str = "fa:16:3e:0a:00:0c";

fn two_ports(a_firewall: &[u16], b_firewall: &[u16]) -> netplane::HostPlan {
    plan(vec![network(
        "net-sw",
        "10.10.0.0/24",
        vec![
            port(
                "port-a",
                A_MAC,
                Ipv4Addr::new(10, 10, 0, 11),
                Some(firewall(a_firewall)),
            ),
            port(
                "port-b",
                B_MAC,
                Ipv4Addr::new(10, 10, 0, 12),
                Some(firewall(b_firewall)),
            ),
        ],
    )])
}

#[tokio::test]
async fn two_ports_when_dhcp_then_leases_from_subnet_and_tcp_between_them() {
    if !is_root() {
        return;
    }
    let t = TestPlane::new("sw-dhcp");
    let dir = tempfile::tempdir().unwrap();
    t.plane.apply(&two_ports(&[80], &[80])).await.unwrap();
    let a = t.vm("a", "port-a", A_MAC);
    let mut b = t.vm("b", "port-b", B_MAC);

    let a_lease = a.dhcp(dir.path());
    let b_lease = b.dhcp(dir.path());
    b.serve(80, "hello from b", dir.path());

    assert_eq!(a_lease.as_deref(), Some("10.10.0.11/24"));
    assert_eq!(b_lease.as_deref(), Some("10.10.0.12/24"));
    assert!(a.ping("10.10.0.12"));
    assert_eq!(a.fetch("10.10.0.12", 80), "hello from b");
    assert_eq!(
        a.output("ip route show default"),
        "default via 10.10.0.1 dev eth0"
    );
}

#[tokio::test]
async fn security_group_rule_when_removed_then_port_closed_and_when_added_again_open() {
    if !is_root() {
        return;
    }
    let t = TestPlane::new("sw-sg");
    let dir = tempfile::tempdir().unwrap();
    t.plane.apply(&two_ports(&[], &[80])).await.unwrap();
    let a = t.vm("a", "port-a", A_MAC);
    let mut b = t.vm("b", "port-b", B_MAC);
    a.set_address("10.10.0.11/24", None);
    b.set_address("10.10.0.12/24", None);
    b.serve(80, "open", dir.path());
    b.serve(81, "never", dir.path());
    let open = a.fetch("10.10.0.12", 80);
    let other_port = a.fetch("10.10.0.12", 81);

    t.plane.apply(&two_ports(&[], &[])).await.unwrap();
    let closed = a.fetch("10.10.0.12", 80);
    let still_pings = a.ping("10.10.0.12");
    t.plane.apply(&two_ports(&[], &[80])).await.unwrap();
    let reopened = a.fetch("10.10.0.12", 80);

    assert_eq!(open, "open");
    assert_eq!(other_port, "");
    assert_eq!(closed, "");
    assert!(still_pings);
    assert_eq!(reopened, "open");
}

#[tokio::test]
async fn forged_source_when_port_has_firewall_then_dropped_and_own_address_passes() {
    if !is_root() {
        return;
    }
    let t = TestPlane::new("sw-spoof");
    t.plane.apply(&two_ports(&[], &[])).await.unwrap();
    let a = t.vm("a", "port-a", A_MAC);
    let b = t.vm("b", "port-b", B_MAC);
    a.set_address("10.10.0.11/24", None);
    a.set_address("10.10.0.99/24", None);
    b.set_address("10.10.0.12/24", None);

    let own = a.run("ping -c 1 -W 2 -I 10.10.0.11 10.10.0.12");
    let forged_ip = a.run("ping -c 1 -W 2 -I 10.10.0.99 10.10.0.12");
    assert!(a.run("ip link set eth0 address fa:16:3e:66:66:66"));
    let forged_mac = a.run("ping -c 1 -W 2 -I 10.10.0.11 10.10.0.12");

    assert!(own);
    assert!(!forged_ip);
    assert!(!forged_mac);
}

#[tokio::test]
async fn port_when_admin_down_then_passes_nothing() {
    if !is_root() {
        return;
    }
    let t = TestPlane::new("sw-down");
    let mut plan = two_ports(&[], &[]);
    t.plane.apply(&plan).await.unwrap();
    let a = t.vm("a", "port-a", A_MAC);
    let b = t.vm("b", "port-b", B_MAC);
    a.set_address("10.10.0.11/24", None);
    b.set_address("10.10.0.12/24", None);
    let before = a.ping("10.10.0.12");

    plan.networks[0].ports[1].admin_state_up = false;
    t.plane.apply(&plan).await.unwrap();
    let after = a.ping("10.10.0.12");

    assert!(before);
    assert!(!after);
}
