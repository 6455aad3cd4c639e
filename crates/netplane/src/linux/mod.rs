//! The real data plane: namespaces, bridges, taps and veths (`ip`), DHCP (`dnsmasq`),
//! security groups (`nft`), routers (namespaces with NAT). See the crate header for the
//! layout.
//!
//! `apply` runs in this order, each step idempotent:
//!
//! ```text
//! host namespace + sysctls
//!   → stop DHCP servers and delete namespaces the plan no longer names
//!   → DHCP and router namespaces
//!   → host devices (bridges, taps, veths to DHCP/router namespaces)
//!   → inside: DHCP device + dnsmasq, router devices + routes + NAT
//!   → host firewall (one atomic nft transaction)
//! ```
//!
//! One apply at a time (a lock): two interleaved convergences would fight.

mod cmd;
mod dhcp;
mod firewall;
mod links;
mod namespace;
mod router;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::names::{dhcp_device_name, router_gateway_name, router_interface_name};
use crate::plan::HostPlan;
use crate::{bridge_name, tap_name, NetworkPlane, Result};
use links::{HostDevice, HostDeviceKind, InnerDevice};
use namespace::Role;

/// The network plane of this host on Linux (see the module header).
#[derive(Debug)]
pub struct LinuxPlane {
    ns: String,
    state_dir: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl LinuxPlane {
    /// A plane owning namespace `ns` (and `<ns>-dhcp-…`, `<ns>-router-…`), keeping its
    /// DHCP servers' files in `state_dir`. Nothing happens before [`NetworkPlane::apply`].
    pub fn new(ns: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            ns: ns.into(),
            state_dir: state_dir.into(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The namespace of the DHCP server of `network_id`.
    pub fn dhcp_netns(&self, network_id: &str) -> String {
        format!("{}-dhcp-{network_id}", self.ns)
    }

    /// The namespace of router `router_id`.
    pub fn router_netns(&self, router_id: &str) -> String {
        format!("{}-router-{router_id}", self.ns)
    }

    /// Where the DHCP servers keep their files (`dhcp-<net>.log` among them).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn owns(&self, netns: &str) -> bool {
        netns == self.ns
            || netns.starts_with(&format!("{}-dhcp-", self.ns))
            || netns.starts_with(&format!("{}-router-", self.ns))
    }

    fn host_devices(&self, plan: &HostPlan) -> Vec<HostDevice> {
        let mut devices = Vec::new();
        for network in &plan.networks {
            let bridge = bridge_name(&network.id);
            devices.push(HostDevice {
                name: bridge.clone(),
                mtu: network.mtu,
                kind: HostDeviceKind::Bridge,
            });
            for port in &network.ports {
                devices.push(HostDevice {
                    name: tap_name(&port.id),
                    mtu: network.mtu,
                    kind: HostDeviceKind::Tap {
                        bridge: bridge.clone(),
                    },
                });
            }
            if let Some(dhcp) = &network.dhcp {
                devices.push(HostDevice {
                    name: tap_name(&dhcp.port_id),
                    mtu: network.mtu,
                    kind: HostDeviceKind::Veth {
                        bridge: bridge.clone(),
                        peer_ns: self.dhcp_netns(&network.id),
                        peer: dhcp_device_name(&dhcp.port_id),
                    },
                });
            }
        }
        let mtu = |id: &str| {
            plan.networks
                .iter()
                .find(|n| n.id == id)
                .map_or(1500, |n| n.mtu)
        };
        for router in &plan.routers {
            let joined = router
                .interfaces
                .iter()
                .map(|i| (&i.port_id, &i.network_id, router_interface_name(&i.port_id)))
                .chain(
                    router
                        .gateway
                        .iter()
                        .map(|g| (&g.port_id, &g.network_id, router_gateway_name(&g.port_id))),
                );
            for (port_id, network_id, peer) in joined {
                devices.push(HostDevice {
                    name: tap_name(port_id),
                    mtu: mtu(network_id),
                    kind: HostDeviceKind::Veth {
                        bridge: bridge_name(network_id),
                        peer_ns: self.router_netns(&router.id),
                        peer,
                    },
                });
            }
        }
        devices
    }

    async fn converge(&self, plan: &HostPlan) -> Result<()> {
        tokio::fs::create_dir_all(&self.state_dir).await?;
        let existing = namespace::list().await?;
        namespace::ensure(&self.ns, Role::Host, &existing).await?;

        let dhcp_networks: HashSet<&str> = plan
            .networks
            .iter()
            .filter(|n| n.dhcp.is_some())
            .map(|n| n.id.as_str())
            .collect();
        let mut wanted: HashSet<String> = HashSet::from([self.ns.clone()]);
        wanted.extend(dhcp_networks.iter().map(|id| self.dhcp_netns(id)));
        wanted.extend(plan.routers.iter().map(|r| self.router_netns(&r.id)));
        for id in dhcp::networks_with_servers(&self.state_dir)? {
            if !dhcp_networks.contains(id.as_str()) {
                dhcp::stop(&self.state_dir, &id).await?;
            }
        }
        for netns in existing
            .iter()
            .filter(|n| self.owns(n) && !wanted.contains(*n))
        {
            namespace::delete(netns).await?;
        }
        for id in &dhcp_networks {
            namespace::ensure(&self.dhcp_netns(id), Role::Dhcp, &existing).await?;
        }
        for router in &plan.routers {
            namespace::ensure(&self.router_netns(&router.id), Role::Router, &existing).await?;
        }

        let created = links::converge_host(&self.ns, &self.host_devices(plan)).await?;

        for network in &plan.networks {
            let Some(dhcp) = &network.dhcp else { continue };
            let netns = self.dhcp_netns(&network.id);
            let device = InnerDevice {
                name: dhcp_device_name(&dhcp.port_id),
                mac: dhcp.mac.clone(),
                mtu: network.mtu,
                addresses: dhcp.addresses.clone(),
            };
            links::configure_inner(&netns, &device, &links::list(&netns).await?).await?;
            let restart = created.contains(&tap_name(&dhcp.port_id));
            dhcp::converge(&netns, network, dhcp, &self.state_dir, restart).await?;
        }
        for router in &plan.routers {
            router::converge(&self.router_netns(&router.id), router, plan).await?;
        }
        let ruleset = firewall::host_ruleset(plan);
        cmd::run_in_ns(&self.ns, "nft", &["-f", "-"], Some(&ruleset)).await?;
        Ok(())
    }
}

/// Every MAC of the plan is six hex pairs: they go into `ip` arguments and the nft
/// script as they are.
fn check_macs(plan: &HostPlan) -> Result<()> {
    let mut macs: Vec<&str> = Vec::new();
    for network in &plan.networks {
        macs.extend(network.dhcp.iter().map(|d| d.mac.as_str()));
        macs.extend(
            network
                .dhcp
                .iter()
                .flat_map(|d| d.hosts.iter().map(|h| h.mac.as_str())),
        );
        for port in &network.ports {
            macs.push(&port.mac);
            if let Some(firewall) = &port.firewall {
                macs.extend(
                    firewall
                        .allowed_address_pairs
                        .iter()
                        .map(|(m, _)| m.as_str()),
                );
            }
        }
    }
    for router in &plan.routers {
        macs.extend(router.interfaces.iter().map(|i| i.mac.as_str()));
        macs.extend(router.gateway.iter().map(|g| g.mac.as_str()));
    }
    match macs.into_iter().find(|mac| !is_mac(mac)) {
        Some(bad) => Err(crate::Error::InvalidPlan(format!(
            "{bad:?} is not a MAC address (six hex pairs separated by colons)"
        ))),
        None => Ok(()),
    }
}

fn is_mac(mac: &str) -> bool {
    let octets: Vec<&str> = mac.split(':').collect();
    octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()))
}

#[async_trait]
impl NetworkPlane for LinuxPlane {
    async fn apply(&self, plan: &HostPlan) -> Result<()> {
        plan.validate()?;
        check_macs(plan)?;
        let _one_at_a_time = self.lock.lock().await;
        self.converge(plan).await
    }

    async fn teardown(&self) -> Result<()> {
        let _one_at_a_time = self.lock.lock().await;
        for id in dhcp::networks_with_servers(&self.state_dir)? {
            dhcp::stop(&self.state_dir, &id).await?;
        }
        for netns in namespace::list().await? {
            if self.owns(&netns) {
                namespace::delete(&netns).await?;
            }
        }
        Ok(())
    }

    fn vm_netns(&self) -> &str {
        &self.ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_macs_when_mac_carries_nft_syntax_then_invalid_plan() {
        let mut plan = HostPlan::default();
        plan.networks.push(crate::NetworkPlan {
            id: "n".into(),
            mtu: 1500,
            subnets: vec![],
            dhcp: None,
            ports: vec![crate::PortPlan {
                id: "p".into(),
                mac: "fa:16:3e:00:00:01 accept; flush ruleset".into(),
                ips: vec![],
                admin_state_up: true,
                firewall: None,
            }],
        });

        let error = check_macs(&plan).unwrap_err();

        assert!(matches!(error, crate::Error::InvalidPlan(_)));
    }
}
