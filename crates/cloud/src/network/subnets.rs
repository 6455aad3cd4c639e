//! Subnets, and the network's DHCP port that follows them: made with the first
//! DHCP-enabled subnet (an address in each such subnet), gone with the last.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::network::{
    first_free, random_mac, DeviceOwner, FixedIp, HostRoute, IpRange, Port, PortStatus, Subnet,
};
use domain::{Error, NetworkId, PortId, Result, SubnetId};

use super::networks::owner_project;
use crate::Cloud;

/// What `POST /v2.0/subnets` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewSubnet {
    pub network_id: String,
    pub name: String,
    pub description: String,
    pub cidr: String,
    /// `None`: the first host address; `Some(None)`: no gateway.
    pub gateway_ip: Option<Option<Ipv4Addr>>,
    pub enable_dhcp: Option<bool>,
    pub allocation_pools: Vec<IpRange>,
    pub dns_nameservers: Vec<Ipv4Addr>,
    pub host_routes: Vec<HostRoute>,
    pub project_id: Option<String>,
}

/// What `PUT /v2.0/subnets/{id}` changes.
#[derive(Debug, Clone, Default)]
pub struct SubnetChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub gateway_ip: Option<Option<Ipv4Addr>>,
    pub enable_dhcp: Option<bool>,
    pub allocation_pools: Option<Vec<IpRange>>,
    pub dns_nameservers: Option<Vec<Ipv4Addr>>,
    pub host_routes: Option<Vec<HostRoute>>,
}

impl Cloud {
    /// A subnet the caller may see (on a network it may see), or 404.
    pub async fn subnet(&self, caller: &Caller, id: &str) -> Result<Subnet> {
        let not_found = || Error::not_found("Subnet", id);
        let sid: SubnetId = id.parse().map_err(|_| not_found())?;
        let subnet = self.store.subnet(sid).await.map_err(|_| not_found())?;
        self.network(caller, &subnet.network_id.to_string())
            .await
            .map_err(|_| not_found())?;
        Ok(subnet)
    }

    pub async fn subnets(&self, caller: &Caller) -> Result<Vec<Subnet>> {
        let visible: HashSet<NetworkId> = self
            .networks(caller)
            .await?
            .into_iter()
            .map(|n| n.id)
            .collect();
        Ok(self
            .store
            .subnets()
            .await?
            .into_iter()
            .filter(|s| visible.contains(&s.network_id))
            .collect())
    }

    pub async fn create_subnet(&self, caller: &Caller, new: NewSubnet) -> Result<Subnet> {
        caller.require(Role::Member, "create subnets")?;
        let network = self
            .owned_network(caller, &new.network_id, "create_subnet")
            .await?;
        let project_id = owner_project(caller, new.project_id.as_deref())?;
        let cidr = Subnet::parse_cidr(&new.cidr)?;
        let gateway_ip = match new.gateway_ip {
            Some(explicit) => explicit,
            None => Some(Ipv4Addr::from(u32::from(cidr.network()) + 1)),
        };
        let now = Utc::now();
        let mut subnet = Subnet {
            id: SubnetId::new(),
            network_id: network.id,
            project_id,
            name: new.name,
            description: new.description,
            cidr,
            gateway_ip,
            enable_dhcp: new.enable_dhcp.unwrap_or(true),
            allocation_pools: new.allocation_pools,
            dns_nameservers: new.dns_nameservers,
            host_routes: new.host_routes,
            revision_number: 1,
            created_at: now,
            updated_at: now,
        };
        subnet.validate()?;
        self.check_network_quota(project_id, "subnet").await?;
        {
            let _allocations = self.net_lock.lock().await;
            let others = self.store.network_subnets(network.id).await?;
            subnet.check_overlap(&others)?;
            self.store.insert_subnet(&subnet).await?;
            if let Err(e) = self.ensure_dhcp_port(network.id).await {
                let _ = self.store.delete_subnet(subnet.id).await;
                return Err(e);
            }
        }
        self.sync_network().await;
        Ok(subnet)
    }

    pub async fn update_subnet(
        &self,
        caller: &Caller,
        id: &str,
        changes: SubnetChanges,
    ) -> Result<Subnet> {
        caller.require(Role::Member, "update subnets")?;
        let prev = self.subnet(caller, id).await?;
        self.owned_network(caller, &prev.network_id.to_string(), "update_subnet")
            .await?;
        let mut next = prev.clone();
        next.name = changes.name.unwrap_or(next.name);
        next.description = changes.description.unwrap_or(next.description);
        if let Some(gateway) = changes.gateway_ip {
            next.gateway_ip = gateway;
        }
        next.enable_dhcp = changes.enable_dhcp.unwrap_or(next.enable_dhcp);
        if let Some(pools) = changes.allocation_pools {
            next.allocation_pools = pools;
            if next.allocation_pools.is_empty() {
                next.allocation_pools = IpRange::hosts_except(next.cidr, next.gateway_ip);
            }
        }
        next.dns_nameservers = changes.dns_nameservers.unwrap_or(next.dns_nameservers);
        next.host_routes = changes.host_routes.unwrap_or(next.host_routes);
        next.updated_at = Utc::now();
        next.validate()?;
        if let Some(gw) = next.gateway_ip.filter(|gw| Some(*gw) != prev.gateway_ip) {
            let taken = self
                .store
                .network_ports(prev.network_id)
                .await?
                .iter()
                .any(|p| p.owner() != DeviceOwner::RouterInterface && p.ips().any(|ip| ip == gw));
            if taken {
                return Err(Error::conflict(format!(
                    "Gateway ip {gw} conflicts with an address in use on subnet {id}."
                )));
            }
        }
        let stored = {
            let _allocations = self.net_lock.lock().await;
            let stored = self.store.update_subnet(&prev, &next).await?;
            self.ensure_dhcp_port(prev.network_id).await?;
            stored
        };
        self.sync_network().await;
        Ok(stored)
    }

    /// Deletes a subnet; addresses of ports other than the DHCP port on it are a 409
    /// (SubnetInUse).
    pub async fn delete_subnet(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(Role::Member, "delete subnets")?;
        let subnet = self.subnet(caller, id).await?;
        self.owned_network(caller, &subnet.network_id.to_string(), "delete_subnet")
            .await?;
        {
            let _allocations = self.net_lock.lock().await;
            let in_use = self
                .store
                .network_ports(subnet.network_id)
                .await?
                .iter()
                .any(|p| {
                    p.owner() != DeviceOwner::Dhcp
                        && p.fixed_ips.iter().any(|f| f.subnet_id == subnet.id)
                });
            if in_use {
                return Err(Error::conflict(format!(
                    "Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."
                )));
            }
            // The DHCP port lets go of its address here first.
            let mut remaining = self.store.network_subnets(subnet.network_id).await?;
            remaining.retain(|s| s.id != subnet.id);
            self.ensure_dhcp_port_for(subnet.network_id, &remaining)
                .await?;
            self.store.delete_subnet(subnet.id).await?;
        }
        self.sync_network().await;
        Ok(())
    }

    /// Makes the network's DHCP port match its subnets (call with `net_lock` held).
    pub(crate) async fn ensure_dhcp_port(&self, network: NetworkId) -> Result<()> {
        let subnets = self.store.network_subnets(network).await?;
        self.ensure_dhcp_port_for(network, &subnets).await
    }

    async fn ensure_dhcp_port_for(&self, network_id: NetworkId, subnets: &[Subnet]) -> Result<()> {
        let network = self.store.network(network_id).await?;
        let ports = self.store.network_ports(network_id).await?;
        let existing = ports.iter().find(|p| p.owner() == DeviceOwner::Dhcp);
        let dhcp_subnets: Vec<&Subnet> = subnets.iter().filter(|s| s.enable_dhcp).collect();
        let Some(first) = dhcp_subnets.first() else {
            if let Some(port) = existing {
                self.store.delete_port(port.id).await?;
            }
            return Ok(());
        };
        let mut fixed_ips = Vec::new();
        for subnet in &dhcp_subnets {
            let kept = existing.and_then(|p| p.fixed_ips.iter().find(|f| f.subnet_id == subnet.id));
            match kept {
                Some(f) => fixed_ips.push(*f),
                None => fixed_ips.push(FixedIp {
                    subnet_id: subnet.id,
                    ip_address: free_address(subnet, &ports)?,
                }),
            }
        }
        match existing {
            Some(port) if port.fixed_ips == fixed_ips => Ok(()),
            Some(port) => {
                let next = Port {
                    fixed_ips,
                    updated_at: Utc::now(),
                    ..port.clone()
                };
                self.store.update_port(port, &next).await.map(drop)
            }
            None => {
                let now = Utc::now();
                let port = Port {
                    id: PortId::new(),
                    network_id,
                    project_id: network.project_id,
                    name: String::new(),
                    description: String::new(),
                    mac_address: random_mac(),
                    fixed_ips,
                    device_id: format!("dhcp-{}", first.network_id),
                    device_owner: "network:dhcp".into(),
                    admin_state_up: true,
                    status: PortStatus::Down,
                    port_security_enabled: false,
                    security_groups: vec![],
                    allowed_address_pairs: vec![],
                    host_id: self.host.to_string(),
                    delete_with_device: false,
                    revision_number: 1,
                    created_at: now,
                    updated_at: now,
                };
                self.store.insert_port(&port).await
            }
        }
    }
}

/// The first address of the subnet's pools that no port holds (call with `net_lock`).
pub(crate) fn free_address(subnet: &Subnet, ports: &[Port]) -> Result<Ipv4Addr> {
    let used: HashSet<Ipv4Addr> = ports
        .iter()
        .flat_map(|p| p.fixed_ips.iter())
        .filter(|f| f.subnet_id == subnet.id)
        .map(|f| f.ip_address)
        .collect();
    first_free(&subnet.allocation_pools, &used).ok_or_else(|| {
        Error::conflict(format!(
            "No more IP addresses available on network {}.",
            subnet.network_id
        ))
    })
}
