//! Device names derived from ids (see the crate header). Linux allows 15 characters.

/// First 11 characters of an id (a UUID's first 11 are unique enough in one host, as in
/// Neutron's linuxbridge agent).
fn short(id: &str) -> &str {
    let end = id.char_indices().nth(11).map_or(id.len(), |(i, _)| i);
    &id[..end]
}

/// The bridge of a network: `brq` + 11 characters of its id.
pub fn bridge_name(network_id: &str) -> String {
    format!("brq{}", short(network_id))
}

/// The bridge-side device of a port (a VM's tap, or a veth end): `tap` + 11 characters.
pub fn tap_name(port_id: &str) -> String {
    format!("tap{}", short(port_id))
}

/// A DHCP server's device in its namespace (the other end of the veth `tap…`).
pub fn dhcp_device_name(port_id: &str) -> String {
    format!("ns-{}", short(port_id))
}

/// A router's interface on an internal subnet (the other end of the veth `tap…`).
pub fn router_interface_name(port_id: &str) -> String {
    format!("qr-{}", short(port_id))
}

/// A router's gateway on its external network (the other end of the veth `tap…`).
pub fn router_gateway_name(port_id: &str) -> String {
    format!("qg-{}", short(port_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_when_uuid_then_within_linux_limit() {
        let id = "6f1c0a52-3b0e-4c8e-9a43-2f7d9b1e0c11";

        assert_eq!(bridge_name(id), "brq6f1c0a52-3b");
        assert_eq!(tap_name(id), "tap6f1c0a52-3b");
        assert!(tap_name(id).len() <= 15);
    }
}
