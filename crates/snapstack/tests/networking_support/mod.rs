//! Helpers of the networking tests: Neutron resources over HTTP, servers on networks,
//! and client namespaces (made by the test, plugged into a network's bridge inside
//! Snapstack's namespace) to talk to guests as a user's machine would.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{reply, Client, Server};

/// Creates a Neutron resource; its view.
pub fn create(client: &Client, collection: &str, key: &str, body: Value) -> Value {
    let r = client.post(
        &format!("/networking/v2.0/{collection}"),
        json!({key: body}),
    );
    assert_eq!(
        r.status,
        201,
        "{collection}: {}",
        String::from_utf8_lossy(&r.raw)
    );
    r.body[key].clone()
}

/// A network with one IPv4 subnet (DHCP on); (network id, subnet id).
pub fn network_with_subnet(client: &Client, name: &str, cidr: &str) -> (String, String) {
    let net = create(client, "networks", "network", json!({"name": name}));
    let subnet = create(
        client,
        "subnets",
        "subnet",
        json!({"network_id": net["id"], "cidr": cidr, "ip_version": 4, "name": format!("{name}-sub")}),
    );
    (id(&net), id(&subnet))
}

pub fn id(view: &Value) -> String {
    view["id"].as_str().unwrap().to_string()
}

pub fn put(client: &Client, path: &str, body: Value) -> Value {
    let r = reply(client.request("PUT", path).send_json(body));
    assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.raw));
    r.body
}

/// Boots a server of the test guest on `networks` with `groups`; its id.
pub fn boot(client: &Client, name: &str, networks: Value, groups: &[&str]) -> String {
    let groups: Vec<Value> = groups.iter().map(|g| json!({"name": g})).collect();
    let mut body = json!({"server": {"name": name, "imageRef": "guest-image", "flavorRef": "tiny",
                                     "networks": networks}});
    if !groups.is_empty() {
        body["server"]["security_groups"] = json!(groups);
    }
    let image = client.get("/image/v2/images?name=guest").body["images"][0]["id"].clone();
    body["server"]["imageRef"] = image;
    let r = client.post("/compute/v2.1/servers", body);
    assert_eq!(
        r.status,
        202,
        "boot {name}: {}",
        String::from_utf8_lossy(&r.raw)
    );
    r.body["server"]["id"].as_str().unwrap().to_string()
}

/// Waits for a server to be ACTIVE; its view.
pub fn wait_active(client: &Client, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = client.get(&format!("/compute/v2.1/servers/{id}")).body["server"].clone();
        match s["status"].as_str() {
            Some("ACTIVE") => return s,
            Some("ERROR") => panic!("server {id} failed: {s}"),
            _ if Instant::now() > deadline => panic!("server {id} not active: {s}"),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The fixed address of a server on network `net` (by name), from its view.
pub fn address(server: &Value, net: &str) -> String {
    server["addresses"][net][0]["addr"]
        .as_str()
        .unwrap_or_else(|| panic!("no address on {net}: {server}"))
        .to_string()
}

/// Waits until the guest's console says it bound a DHCP lease: the address it got.
pub fn wait_lease(server: &Server, id: &str) -> String {
    let console = server
        .data_dir()
        .join("instances")
        .join(id)
        .join("console.log");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("NET ") && l.contains(" ip="))
        {
            let ip = line
                .split(" ip=")
                .nth(1)
                .unwrap()
                .split(['/', ' '])
                .next()
                .unwrap();
            return ip.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no DHCP lease on {id}'s console:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn sh(command: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", command]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A namespace the test makes, with one interface on a network's bridge inside
/// Snapstack's namespace; removed when dropped.
pub struct ClientNs {
    pub name: String,
}

impl ClientNs {
    /// `address` (`a.b.c.d/len`) on the bridge of `network_id` in `plane_ns`, with a
    /// default route through `gateway` if given.
    pub fn new(
        tag: &str,
        plane_ns: &str,
        network_id: &str,
        address: &str,
        gateway: Option<&str>,
    ) -> Self {
        let name = format!("sst-{tag}-{}", std::process::id());
        let host_end = format!(
            "tc{}{}",
            &tag[..tag.len().min(4)],
            std::process::id() % 100_000
        );
        let bridge = netplane_bridge(network_id);
        let mut script = format!(
            "set -e; ip netns add {name}; ip -n {name} link set lo up; \
             ip link add {host_end} type veth peer name eth0 netns {name}; \
             ip link set {host_end} netns {plane_ns}; \
             ip -n {plane_ns} link set {host_end} master {bridge} up; \
             ip -n {name} addr add {address} dev eth0; ip -n {name} link set eth0 up"
        );
        if let Some(gw) = gateway {
            script.push_str(&format!("; ip -n {name} route add default via {gw}"));
        }
        let (ok, out) = sh(&script);
        assert!(ok, "cannot make client namespace: {out}");
        ClientNs { name }
    }

    /// `GET http://<ip><path>` from this namespace with curl (5 s timeout):
    /// the body, or `None` when unreachable.
    pub fn get(&self, ip: &str, path: &str) -> Option<String> {
        let (ok, out) = sh(&format!(
            "ip netns exec {} curl -sf -m 5 http://{ip}{path}",
            self.name
        ));
        ok.then_some(out)
    }

    /// Polls `get` until it answers (true) or `within` passes (false).
    pub fn reaches(&self, ip: &str, path: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.get(ip, path).is_some() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for ClientNs {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns del {}", self.name));
    }
}

/// `brq` + 11 characters of the network id (Snapstack's bridge name).
pub fn netplane_bridge(network_id: &str) -> String {
    format!("brq{}", &network_id[..11])
}

/// What a guest's `/cgi-bin/peer?<ip>` answers: the peer's state, or "" when the peer
/// is unreachable from it.
pub fn peer(client: &ClientNs, via: &str, target: &str) -> String {
    client
        .get(via, &format!("/cgi-bin/peer?{target}"))
        .unwrap_or_default()
        .trim()
        .to_string()
}
