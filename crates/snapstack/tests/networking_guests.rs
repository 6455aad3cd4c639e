//! Guests on real virtual networks, end to end on real QEMU (the project's test guest,
//! which takes a DHCP lease on every NIC and serves its state on port 80): DHCP,
//! guest-to-guest traffic, security groups opening and closing a port, a router joining
//! two networks, a floating IP reached from an "external" client, and nothing left
//! behind once everything is deleted. Every address lives in namespaces the test or
//! Snapstack made. Needs root (network namespaces); skipped otherwise.

mod common;
mod networking_support;

use std::time::Duration;

use common::Server;
use networking_support::{
    address, boot, create, id, network_with_subnet, peer, put, sh, wait_active, wait_lease,
    ClientNs,
};
use serde_json::json;

fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no argument and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: networking needs root (network namespaces)");
    }
    root
}

#[test]
fn guests_when_networked_then_dhcp_groups_routers_floating_ips_work_and_nothing_is_left() {
    if !is_root() {
        return;
    }
    let ns = format!("sst{}", std::process::id() % 100_000);
    let server = Server::start_with(&["--netns", &ns]);
    server.add_guest_image_and_flavor();
    let admin = server.admin();
    admin.unlimited_quotas();
    let (net_a, sub_a) = network_with_subnet(&admin, "a", "10.70.0.0/24");
    let (net_b, sub_b) = network_with_subnet(&admin, "b", "10.71.0.0/24");
    let web = id(&create(
        &admin,
        "security-groups",
        "security_group",
        json!({"name": "web"}),
    ));
    create(
        &admin,
        "security-group-rules",
        "security_group_rule",
        json!({"security_group_id": web, "direction": "ingress", "protocol": "tcp",
               "port_range_min": 80, "port_range_max": 80}),
    );
    let closed = id(&create(
        &admin,
        "security-groups",
        "security_group",
        json!({"name": "closed"}),
    ));

    let vm1 = boot(&admin, "vm1", json!([{"uuid": net_a}]), &["default", "web"]);
    let vm2 = boot(&admin, "vm2", json!([{"uuid": net_a}]), &["closed"]);
    let vm3 = boot(&admin, "vm3", json!([{"uuid": net_b}]), &["web"]);
    let ip1 = address(&wait_active(&admin, &vm1), "a");
    let ip2 = address(&wait_active(&admin, &vm2), "a");
    let ip3 = address(&wait_active(&admin, &vm3), "b");

    // Each guest's DHCP lease is the address Neutron gave its port.
    assert_eq!(wait_lease(&server, &vm1), ip1);
    assert_eq!(wait_lease(&server, &vm2), ip2);
    assert_eq!(wait_lease(&server, &vm3), ip3);
    assert!(
        ip1.starts_with("10.70.0.") && ip3.starts_with("10.71.0."),
        "{ip1} {ip3}"
    );

    // A client on network a: `web` opens port 80 of vm1; vm2 (`closed`) stays shut.
    let client = ClientNs::new("a", &ns, &net_a, "10.70.0.250/24", None);
    assert!(client.reaches(&ip1, "/cgi-bin/state", Duration::from_secs(60)));
    assert!(client
        .get(&ip1, "/cgi-bin/state")
        .unwrap()
        .contains("boot="));
    assert_eq!(client.get(&ip2, "/cgi-bin/state"), None);

    // Observed from a peer guest: a rule opens vm2's port 80 to the members of `web`,
    // and deleting it closes it again.
    assert_eq!(peer(&client, &ip1, &ip2), "");
    let rule = create(
        &admin,
        "security-group-rules",
        "security_group_rule",
        json!({"security_group_id": closed, "direction": "ingress", "protocol": "tcp",
               "port_range_min": 80, "port_range_max": 80, "remote_group_id": web}),
    );
    let opened = peer(&client, &ip1, &ip2);
    admin
        .delete(&format!(
            "/networking/v2.0/security-group-rules/{}",
            id(&rule)
        ))
        .expect_status(204);
    let closed_again = peer(&client, &ip1, &ip2);
    assert!(
        opened.contains("boot="),
        "vm1 → vm2 with the rule: {opened:?}"
    );
    assert_eq!(closed_again, "");

    // Another network is unreachable until a router joins the two.
    assert_eq!(peer(&client, &ip1, &ip3), "");
    let router = id(&create(&admin, "routers", "router", json!({"name": "r1"})));
    for subnet in [&sub_a, &sub_b] {
        put(
            &admin,
            &format!("/networking/v2.0/routers/{router}/add_router_interface"),
            json!({"subnet_id": subnet}),
        );
    }
    let routed = peer(&client, &ip1, &ip3);
    assert!(
        routed.contains("boot="),
        "vm1 → vm3 through the router: {routed:?}"
    );

    // A floating IP on an external network reaches vm1 from a client out there, and
    // stops when disassociated.
    let ext = create(
        &admin,
        "networks",
        "network",
        json!({"name": "ext", "router:external": true}),
    );
    create(
        &admin,
        "subnets",
        "subnet",
        json!({"network_id": ext["id"], "cidr": "172.24.40.0/24", "ip_version": 4,
               "enable_dhcp": false, "gateway_ip": "172.24.40.1"}),
    );
    put(
        &admin,
        &format!("/networking/v2.0/routers/{router}"),
        json!({"router": {"external_gateway_info": {"network_id": ext["id"]}}}),
    );
    let outside = ClientNs::new("ext", &ns, &id(&ext), "172.24.40.1/24", None);
    let vm1_port = admin
        .get(&format!("/networking/v2.0/ports?device_id={vm1}"))
        .body["ports"][0]["id"]
        .clone();
    let fip = create(
        &admin,
        "floatingips",
        "floatingip",
        json!({"floating_network_id": ext["id"], "port_id": vm1_port}),
    );
    let fip_addr = fip["floating_ip_address"].as_str().unwrap().to_string();
    assert!(outside.reaches(&fip_addr, "/cgi-bin/state", Duration::from_secs(30)));
    let shown = admin.get(&format!("/compute/v2.1/servers/{vm1}")).body["server"].clone();
    assert_eq!(shown["addresses"]["a"][1]["addr"], fip_addr.as_str());
    assert_eq!(shown["addresses"]["a"][1]["OS-EXT-IPS:type"], "floating");
    put(
        &admin,
        &format!("/networking/v2.0/floatingips/{}", id(&fip)),
        json!({"floatingip": {"port_id": null}}),
    );
    assert_eq!(outside.get(&fip_addr, "/cgi-bin/state"), None);

    // Delete everything: no namespace, DHCP server or device of this cloud is left.
    drop(outside);
    drop(client);
    admin
        .delete(&format!("/networking/v2.0/floatingips/{}", id(&fip)))
        .expect_status(204);
    for vm in [&vm1, &vm2, &vm3] {
        admin
            .delete(&format!("/compute/v2.1/servers/{vm}"))
            .expect_status(204);
    }
    for vm in [&vm1, &vm2, &vm3] {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while admin.get(&format!("/compute/v2.1/servers/{vm}")).status != 404 {
            assert!(
                std::time::Instant::now() < deadline,
                "server {vm} not deleted"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    for subnet in [&sub_a, &sub_b] {
        put(
            &admin,
            &format!("/networking/v2.0/routers/{router}/remove_router_interface"),
            json!({"subnet_id": subnet}),
        );
    }
    admin
        .delete(&format!("/networking/v2.0/routers/{router}"))
        .expect_status(204);
    for net in [&net_a, &net_b, &id(&ext)] {
        admin
            .delete(&format!("/networking/v2.0/networks/{net}"))
            .expect_status(204);
    }
    let (_, namespaces) = sh("ip netns list");
    let (_, dnsmasq) = sh("pgrep -a dnsmasq || true");
    let data_dir = server.data_dir().canonicalize().unwrap();
    assert!(
        !namespaces.lines().any(|l| l.starts_with(&ns)),
        "left: {namespaces}"
    );
    assert!(
        !dnsmasq.contains(&data_dir.display().to_string()),
        "left: {dnsmasq}"
    );
}
