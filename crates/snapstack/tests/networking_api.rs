//! Neutron's API against the real `snapstack serve`, through HTTP and the real
//! `openstack` CLI: networks, subnets and ports with address management, security
//! groups, routers and floating IPs, project isolation and Neutron's answers to bad
//! input. (The data plane behind them is exercised by `networking_guests.rs`.)

mod common;

use common::{fails, ok, Client, Server};
use serde_json::{json, Value};

fn create(client: &Client, collection: &str, key: &str, body: Value) -> Value {
    let reply = client.post(
        &format!("/networking/v2.0/{collection}"),
        json!({key: body}),
    );
    assert_eq!(
        reply.status,
        201,
        "{collection}: {}",
        String::from_utf8_lossy(&reply.raw)
    );
    reply.body[key].clone()
}

fn network_with_subnet(client: &Client, name: &str, cidr: &str) -> (String, String) {
    let net = create(client, "networks", "network", json!({"name": name}));
    let subnet = create(
        client,
        "subnets",
        "subnet",
        json!({"network_id": net["id"], "cidr": cidr, "ip_version": 4, "name": format!("{name}-sub")}),
    );
    (
        net["id"].as_str().unwrap().into(),
        subnet["id"].as_str().unwrap().into(),
    )
}

#[test]
fn cli_when_network_subnet_port_then_addresses_from_the_pool_and_neutron_errors() {
    let server = Server::start();

    ok(server.openstack(&["network", "create", "net1"]));
    let subnet = ok(server.openstack(&[
        "subnet",
        "create",
        "--network",
        "net1",
        "--subnet-range",
        "10.20.0.0/24",
        "-f",
        "json",
        "sub1",
    ]));
    let overlap = fails(server.openstack(&[
        "subnet",
        "create",
        "--network",
        "net1",
        "--subnet-range",
        "10.20.0.128/25",
        "sub2",
    ]));
    let port = ok(server.openstack(&["port", "create", "--network", "net1", "-f", "json", "p1"]));
    let taken = fails(server.openstack(&[
        "port",
        "create",
        "--network",
        "net1",
        "--fixed-ip",
        "ip-address=10.20.0.1",
        "p2",
    ]));
    let outside = fails(server.openstack(&[
        "port",
        "create",
        "--network",
        "net1",
        "--fixed-ip",
        "ip-address=10.99.0.5",
        "p3",
    ]));
    let in_use = fails(server.openstack(&["network", "delete", "net1"]));
    ok(server.openstack(&["port", "delete", "p1"]));
    ok(server.openstack(&["network", "delete", "net1"]));
    let listed = ok(server.openstack(&["network", "list", "-f", "value", "-c", "Name"]));

    let subnet: Value = serde_json::from_str(&subnet).unwrap();
    assert_eq!(subnet["gateway_ip"], "10.20.0.1");
    let port: Value = serde_json::from_str(&port).unwrap();
    let ip = port["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ip.starts_with("10.20.0.") && ip != "10.20.0.1", "{ip}");
    assert!(port["mac_address"]
        .as_str()
        .unwrap()
        .starts_with("fa:16:3e:"));
    assert!(
        overlap.contains("400") && overlap.contains("overlaps"),
        "{overlap}"
    );
    assert!(
        taken.contains("409") && taken.contains("already allocated"),
        "{taken}"
    );
    assert!(outside.contains("400"), "{outside}");
    assert!(
        in_use.contains("409") && in_use.contains("ports still in use"),
        "{in_use}"
    );
    assert!(!listed.contains("net1"), "{listed}");
}

#[test]
fn http_when_other_project_then_private_network_and_port_are_404_and_shared_usable() {
    let server = Server::start();
    let admin = server.admin();
    let alice = server.user_with_role("alice", "member");
    let (net, _) = network_with_subnet(&admin, "private", "10.30.0.0/24");
    let port = create(&admin, "ports", "port", json!({"network_id": net}));
    let shared = create(
        &admin,
        "networks",
        "network",
        json!({"name": "pub", "shared": true}),
    );
    create(
        &admin,
        "subnets",
        "subnet",
        json!({"network_id": shared["id"], "cidr": "10.31.0.0/24", "ip_version": 4}),
    );

    let net_reply = alice.get(&format!("/networking/v2.0/networks/{net}"));
    let port_reply = alice.get(&format!(
        "/networking/v2.0/ports/{}",
        port["id"].as_str().unwrap()
    ));
    let listed = alice.get("/networking/v2.0/networks").expect_status(200);
    let on_private = alice.post(
        "/networking/v2.0/ports",
        json!({"port": {"network_id": net}}),
    );
    let on_shared = alice.post(
        "/networking/v2.0/ports",
        json!({"port": {"network_id": shared["id"]}}),
    );
    let shared_by_member = alice.post(
        "/networking/v2.0/networks",
        json!({"network": {"name": "x", "shared": true}}),
    );

    assert_eq!(net_reply.status, 404);
    assert!(net_reply.body["NeutronError"]["message"].is_string());
    assert_eq!(port_reply.status, 404);
    let names: Vec<&str> = listed.body["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["pub"]);
    assert_eq!(on_private.status, 404);
    assert_eq!(on_shared.status, 201, "{:?}", on_shared.body);
    assert_eq!(shared_by_member.status, 403);
}

#[test]
fn http_when_malformed_or_wrong_then_neutron_status_codes() {
    let server = Server::start();
    let admin = server.admin();
    let (net, subnet) = network_with_subnet(&admin, "n", "10.40.0.0/24");

    let not_json = common::reply(
        admin
            .request("POST", "/networking/v2.0/networks")
            .set("Content-Type", "application/json")
            .send_string("{nope"),
    );
    let unknown_attr = admin.post(
        "/networking/v2.0/networks",
        json!({"network": {"colour": "red"}}),
    );
    let host_bits = admin.post(
        "/networking/v2.0/subnets",
        json!({"subnet": {"network_id": net, "cidr": "10.41.0.1/24", "ip_version": 4}}),
    );
    let pool_outside = admin.post(
        "/networking/v2.0/subnets",
        json!({"subnet": {"network_id": net, "cidr": "10.42.0.0/24", "ip_version": 4,
                          "allocation_pools": [{"start": "10.43.0.2", "end": "10.43.0.9"}]}}),
    );
    let bad_mac = admin.post(
        "/networking/v2.0/ports",
        json!({"port": {"network_id": net, "mac_address": "01:00:5e:00:00:01"}}),
    );
    let unknown_subnet_ip = admin.post(
        "/networking/v2.0/ports",
        json!({"port": {"network_id": net, "fixed_ips": [{"subnet_id": subnet, "ip_address": "10.40.0.255"}]}}),
    );
    let missing = admin.get("/networking/v2.0/networks/6f1c0a52-3b0e-4c8e-9a43-2f7d9b1e0c11");
    let bad_sort = admin.get("/networking/v2.0/networks?sort_key=colour&sort_dir=asc");

    assert_eq!(not_json.status, 400);
    assert_eq!(unknown_attr.status, 400);
    assert_eq!(host_bits.status, 400);
    assert!(host_bits.body["NeutronError"]["message"]
        .as_str()
        .unwrap()
        .contains("10.41.0.0/24"));
    assert_eq!(pool_outside.status, 400);
    assert_eq!(bad_mac.status, 400);
    assert_eq!(
        unknown_subnet_ip.status, 400,
        "broadcast address: {:?}",
        unknown_subnet_ip.body
    );
    assert_eq!(missing.status, 404);
    assert_eq!(bad_sort.status, 400);
}

#[test]
fn cli_when_security_groups_then_default_made_rules_deduplicated_and_in_use_refused() {
    let server = Server::start();
    let admin = server.admin();
    let (net, _) = network_with_subnet(&admin, "n", "10.50.0.0/24");

    let groups = ok(server.openstack(&["security", "group", "list", "-f", "value", "-c", "Name"]));
    let default_rules =
        ok(server.openstack(&["security", "group", "rule", "list", "default", "-f", "json"]));
    ok(server.openstack(&["security", "group", "create", "web"]));
    ok(server.openstack(&[
        "security",
        "group",
        "rule",
        "create",
        "--protocol",
        "tcp",
        "--dst-port",
        "80",
        "web",
    ]));
    let duplicate = fails(server.openstack(&[
        "security",
        "group",
        "rule",
        "create",
        "--protocol",
        "tcp",
        "--dst-port",
        "80",
        "web",
    ]));
    let web = admin
        .get("/networking/v2.0/security-groups?name=web")
        .expect_status(200);
    let web_id = web.body["security_groups"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let port = create(
        &admin,
        "ports",
        "port",
        json!({"network_id": net, "security_groups": [web_id]}),
    );
    let in_use = fails(server.openstack(&["security", "group", "delete", "web"]));
    let default_delete = server.user_with_role("bob", "member");
    let bobs = default_delete
        .get("/networking/v2.0/security-groups")
        .expect_status(200);
    let bobs_default = bobs.body["security_groups"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let refused =
        default_delete.delete(&format!("/networking/v2.0/security-groups/{bobs_default}"));

    assert!(groups.contains("default"), "{groups}");
    let rules: Vec<Value> = serde_json::from_str(&default_rules).unwrap();
    assert_eq!(rules.len(), 4, "{rules:?}");
    assert_eq!(
        port["security_groups"][0],
        web.body["security_groups"][0]["id"]
    );
    assert!(duplicate.contains("409"), "{duplicate}");
    assert!(
        in_use.contains("409") || in_use.contains("in use"),
        "{in_use}"
    );
    assert_eq!(refused.status, 409);
}

#[test]
fn http_when_router_and_floating_ip_then_associated_through_the_router() {
    let server = Server::start();
    let admin = server.admin();
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
        json!({"network_id": ext["id"], "cidr": "172.24.4.0/24", "ip_version": 4, "enable_dhcp": false}),
    );
    let (_, subnet) = network_with_subnet(&admin, "inner", "10.60.0.0/24");
    let (other_net, _) = network_with_subnet(&admin, "unrouted", "10.61.0.0/24");
    let router = create(
        &admin,
        "routers",
        "router",
        json!({"name": "r1", "external_gateway_info": {"network_id": ext["id"]}}),
    );
    let rid = router["id"].as_str().unwrap().to_string();
    let added = admin
        .request(
            "PUT",
            &format!("/networking/v2.0/routers/{rid}/add_router_interface"),
        )
        .send_json(json!({"subnet_id": subnet}));
    let added = common::reply(added).expect_status(200);
    let inner_net = added.body["network_id"].as_str().unwrap().to_string();
    let port = create(&admin, "ports", "port", json!({"network_id": inner_net}));
    let stray = create(&admin, "ports", "port", json!({"network_id": other_net}));
    let fip = create(
        &admin,
        "floatingips",
        "floatingip",
        json!({"floating_network_id": ext["id"], "port_id": port["id"]}),
    );
    let unreachable = admin.post(
        "/networking/v2.0/floatingips",
        json!({"floatingip": {"floating_network_id": ext["id"], "port_id": stray["id"]}}),
    );
    let router_busy = admin.delete(&format!("/networking/v2.0/routers/{rid}"));
    let fid = fip["id"].as_str().unwrap();
    let disassociated = common::reply(
        admin
            .request("PUT", &format!("/networking/v2.0/floatingips/{fid}"))
            .send_json(json!({"floatingip": {"port_id": null}})),
    )
    .expect_status(200);

    assert!(
        router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
            .as_str()
            .unwrap()
            .starts_with("172.24.4.")
    );
    assert_eq!(fip["router_id"], rid.as_str());
    assert_eq!(fip["fixed_ip_address"], port["fixed_ips"][0]["ip_address"]);
    assert_eq!(fip["status"], "ACTIVE");
    assert_eq!(unreachable.status, 404, "{:?}", unreachable.body);
    assert_eq!(router_busy.status, 409);
    assert_eq!(disassociated.body["floatingip"]["port_id"], Value::Null);
    assert_eq!(disassociated.body["floatingip"]["status"], "DOWN");
}
