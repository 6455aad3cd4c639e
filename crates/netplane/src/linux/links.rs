//! Devices: the bridges and port devices of the host namespace, and the configured end
//! (MAC, MTU, addresses) of a veth inside a DHCP or router namespace.
//!
//! Convergence compares what `ip -d -j link` reports with what the plan wants, by name:
//! a device with an owned prefix (`brq`, `tap`) that the plan does not want, or of the
//! wrong kind, is deleted; a missing one is created; master, MTU and state are fixed in
//! place, so a tap QEMU holds open is never recreated.

use std::collections::{BTreeSet, HashMap};

use ipnet::Ipv4Net;
use serde_json::Value;

use super::cmd;
use crate::Result;

/// Name prefixes of the devices the plane owns in the host namespace.
pub(crate) const OWNED_PREFIXES: [&str; 2] = ["brq", "tap"];

/// A device as `ip -d -j link` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub name: String,
    /// `bridge`, `tun`, `veth`, … (empty for a plain device such as `lo`).
    pub kind: String,
    pub master: Option<String>,
    pub mac: String,
    pub mtu: u32,
    pub up: bool,
}

/// The devices of namespace `ns`.
pub(crate) async fn list(ns: &str) -> Result<Vec<Link>> {
    let links = cmd::ip_json(ns, &["-d", "link", "show"]).await?;
    Ok(links.iter().map(parse_link).collect())
}

fn parse_link(v: &Value) -> Link {
    let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    Link {
        name: text("ifname").unwrap_or_default(),
        kind: v
            .pointer("/linkinfo/info_kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        master: text("master"),
        mac: text("address").unwrap_or_default(),
        mtu: v
            .get("mtu")
            .and_then(Value::as_u64)
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or(0),
        up: v
            .get("flags")
            .and_then(Value::as_array)
            .is_some_and(|flags| flags.iter().any(|f| f == "UP")),
    }
}

/// A device the host namespace must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostDevice {
    pub name: String,
    pub mtu: u32,
    pub kind: HostDeviceKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostDeviceKind {
    Bridge,
    /// A persistent tap QEMU opens by name, a port of `bridge`.
    Tap {
        bridge: String,
    },
    /// A veth whose other end, `peer`, lives in namespace `peer_ns`.
    Veth {
        bridge: String,
        peer_ns: String,
        peer: String,
    },
}

impl HostDeviceKind {
    fn link_kind(&self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Tap { .. } => "tun",
            Self::Veth { .. } => "veth",
        }
    }

    fn bridge(&self) -> Option<&str> {
        match self {
            Self::Bridge => None,
            Self::Tap { bridge } | Self::Veth { bridge, .. } => Some(bridge),
        }
    }
}

/// Converges the owned devices of the host namespace `ns` onto `wanted` (bridges before
/// their ports; see the module header). Returns the names of the devices it created.
pub(crate) async fn converge_host(ns: &str, wanted: &[HostDevice]) -> Result<Vec<String>> {
    let existing: HashMap<String, Link> = list(ns)
        .await?
        .into_iter()
        .map(|l| (l.name.clone(), l))
        .collect();
    let by_name: HashMap<&str, &HostDevice> = wanted.iter().map(|d| (d.name.as_str(), d)).collect();
    // Ports first, so a bridge goes empty.
    let mut stale: Vec<&Link> = existing
        .values()
        .filter(|l| OWNED_PREFIXES.iter().any(|p| l.name.starts_with(p)))
        .filter(|l| {
            by_name
                .get(l.name.as_str())
                .is_none_or(|d| d.kind.link_kind() != l.kind)
        })
        .collect();
    stale.sort_by_key(|l| l.kind == "bridge");
    for link in stale {
        delete(ns, &link.name).await?;
    }
    let mut created = Vec::new();
    let mut ordered: Vec<&HostDevice> = wanted.iter().collect();
    ordered.sort_by_key(|d| d.kind != HostDeviceKind::Bridge);
    for device in ordered {
        let current = existing
            .get(&device.name)
            .filter(|l| l.kind == device.kind.link_kind());
        let current = match (current, &device.kind) {
            (Some(link), HostDeviceKind::Veth { peer_ns, peer, .. }) => {
                if peer_exists(peer_ns, peer).await {
                    Some(link)
                } else {
                    delete(ns, &device.name).await?;
                    None
                }
            }
            (link, _) => link,
        };
        match current {
            Some(link) => fix_host_device(ns, device, link).await?,
            None => {
                create_host_device(ns, device).await?;
                created.push(device.name.clone());
            }
        }
    }
    Ok(created)
}

/// `ip -n ns args…` that creates a device, retried for up to 2 s while the name is
/// still taken: a device of a namespace deleted just before (a network removed and
/// added back) goes away asynchronously.
async fn add(ns: &str, args: &[&str]) -> Result<()> {
    let mut tries = 0;
    loop {
        match cmd::ip(ns, args).await {
            Err(crate::Error::Command { message, .. })
                if message.contains("File exists") && tries < 40 =>
            {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other.map(drop),
        }
    }
}

/// Deletes device `name`; one already gone counts as deleted (the end of a veth whose
/// other namespace was just deleted goes away asynchronously).
async fn delete(ns: &str, name: &str) -> Result<()> {
    match cmd::ip(ns, &["link", "delete", "dev", name]).await {
        Err(crate::Error::Command { message, .. }) if message.contains("Cannot find device") => {
            Ok(())
        }
        other => other.map(drop),
    }
}

async fn peer_exists(peer_ns: &str, peer: &str) -> bool {
    cmd::ip(peer_ns, &["link", "show", "dev", peer])
        .await
        .is_ok()
}

async fn create_host_device(ns: &str, device: &HostDevice) -> Result<()> {
    let name = device.name.as_str();
    match &device.kind {
        HostDeviceKind::Bridge => add(ns, &["link", "add", name, "type", "bridge"]).await?,
        HostDeviceKind::Tap { .. } => {
            add(
                ns,
                &["tuntap", "add", "dev", name, "mode", "tap", "vnet_hdr"],
            )
            .await?;
        }
        HostDeviceKind::Veth { peer_ns, peer, .. } => {
            // A peer left behind (its host end deleted by hand) would block the name.
            let _ = cmd::ip(peer_ns, &["link", "delete", "dev", peer]).await;
            add(
                ns,
                &[
                    "link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_ns,
                ],
            )
            .await?;
        }
    }
    let mtu = device.mtu.to_string();
    let mut args = vec!["link", "set", "dev", name, "mtu", &mtu];
    if let Some(bridge) = device.kind.bridge() {
        args.extend(["master", bridge]);
    }
    args.push("up");
    cmd::ip(ns, &args).await.map(drop)
}

async fn fix_host_device(ns: &str, device: &HostDevice, link: &Link) -> Result<()> {
    let mtu = device.mtu.to_string();
    let mut args = vec!["link", "set", "dev", device.name.as_str()];
    if link.mtu != device.mtu {
        args.extend(["mtu", &mtu]);
    }
    if let Some(bridge) = device.kind.bridge() {
        if link.master.as_deref() != Some(bridge) {
            args.extend(["master", bridge]);
        }
    }
    if !link.up {
        args.push("up");
    }
    if args.len() > 4 {
        cmd::ip(ns, &args).await?;
    }
    Ok(())
}

/// The inner end of a veth (`ns-…`, `qr-…`, `qg-…`): its MAC, MTU, state and exactly
/// these addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InnerDevice {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    pub addresses: Vec<Ipv4Net>,
}

/// Configures `device` in `ns` (which holds it already, see [`converge_host`]).
pub(crate) async fn configure_inner(
    ns: &str,
    device: &InnerDevice,
    current: &[Link],
) -> Result<()> {
    let name = device.name.as_str();
    let link = current.iter().find(|l| l.name == device.name);
    let mut args = vec!["link", "set", "dev", name];
    let mtu = device.mtu.to_string();
    if link.is_none_or(|l| !l.mac.eq_ignore_ascii_case(&device.mac)) {
        args.extend(["address", device.mac.as_str()]);
    }
    if link.is_none_or(|l| l.mtu != device.mtu) {
        args.extend(["mtu", &mtu]);
    }
    if link.is_none_or(|l| !l.up) {
        args.push("up");
    }
    if args.len() > 4 {
        cmd::ip(ns, &args).await?;
    }
    converge_addresses(ns, name, &device.addresses).await
}

/// Makes the IPv4 addresses of `device` exactly `wanted`.
pub(crate) async fn converge_addresses(ns: &str, device: &str, wanted: &[Ipv4Net]) -> Result<()> {
    let current = addresses(ns, device).await?;
    let wanted: BTreeSet<Ipv4Net> = wanted.iter().copied().collect();
    for stale in current.difference(&wanted) {
        cmd::ip(
            ns,
            &["address", "delete", &stale.to_string(), "dev", device],
        )
        .await?;
    }
    for missing in wanted.difference(&current) {
        cmd::ip(ns, &["address", "add", &missing.to_string(), "dev", device]).await?;
    }
    Ok(())
}

async fn addresses(ns: &str, device: &str) -> Result<BTreeSet<Ipv4Net>> {
    let out = cmd::ip_json(ns, &["-4", "address", "show", "dev", device]).await?;
    Ok(out
        .iter()
        .filter_map(|d| d.get("addr_info").and_then(Value::as_array))
        .flatten()
        .filter_map(|a| {
            let local = a.get("local")?.as_str()?.parse().ok()?;
            let prefix = u8::try_from(a.get("prefixlen")?.as_u64()?).ok()?;
            Ipv4Net::new(local, prefix).ok()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_link_when_tap_in_bridge_then_kind_master_and_state() {
        let json = serde_json::json!({
            "ifname": "tapabc", "mtu": 1450, "flags": ["BROADCAST", "UP"],
            "master": "brqabc", "address": "fe:16:3e:00:00:01",
            "linkinfo": {"info_kind": "tun"}
        });

        let link = parse_link(&json);

        assert_eq!(
            link,
            Link {
                name: "tapabc".into(),
                kind: "tun".into(),
                master: Some("brqabc".into()),
                mac: "fe:16:3e:00:00:01".into(),
                mtu: 1450,
                up: true,
            }
        );
    }
}
