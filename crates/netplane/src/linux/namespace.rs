//! Network namespaces: listing, creating (with the plane's sysctls) and deleting them.

use super::cmd;
use crate::Result;

/// The names of all network namespaces (`ip netns list`).
pub(crate) async fn list() -> Result<Vec<String>> {
    let out = cmd::run("ip", &["netns", "list"]).await?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// What a namespace is for; decides its sysctls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The bridges and taps: bridged IPv4 goes through the inet family (conntrack), no routing.
    Host,
    /// A DHCP server: no routing.
    Dhcp,
    /// A router: forwards IPv4.
    Router,
}

/// Creates `name` unless `existing` has it, and (always) sets its sysctls and `lo` up:
/// IPv6 off on every device, IPv4 forwarding only in routers, bridged IPv4 through
/// netfilter in the host namespace.
pub(crate) async fn ensure(name: &str, role: Role, existing: &[String]) -> Result<()> {
    if !existing.iter().any(|n| n == name) {
        cmd::run("ip", &["netns", "add", name]).await?;
    }
    let forward = if role == Role::Router { "1" } else { "0" };
    let mut settings = vec![
        "net.ipv6.conf.all.disable_ipv6=1".to_string(),
        "net.ipv6.conf.default.disable_ipv6=1".to_string(),
        format!("net.ipv4.ip_forward={forward}"),
    ];
    if role == Role::Host {
        settings.push("net.bridge.bridge-nf-call-iptables=1".to_string());
        settings.push("net.bridge.bridge-nf-call-ip6tables=0".to_string());
        settings.push("net.bridge.bridge-nf-call-arptables=0".to_string());
    }
    let mut args = vec!["-q".to_string(), "-w".to_string()];
    args.extend(settings);
    cmd::in_ns(name, "sysctl", &args).await?;
    cmd::ip(name, &["link", "set", "lo", "up"]).await?;
    Ok(())
}

/// Deletes `name` (its devices go with it).
pub(crate) async fn delete(name: &str) -> Result<()> {
    cmd::run("ip", &["netns", "delete", name]).await.map(drop)
}
