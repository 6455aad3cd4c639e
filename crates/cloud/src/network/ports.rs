//! Ports: MAC and address allocation, security groups, binding.

use std::net::Ipv4Addr;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::network::{
    parse_mac, random_mac, validate_text, DeviceOwner, FixedIp, Network, Port, PortStatus, Subnet,
};
use domain::{Error, PortId, Result, SecurityGroupId, SubnetId};
use ipnet::Ipv4Net;

use super::networks::{admin_only, owner_project};
use super::subnets::free_address;
use crate::Cloud;

/// One `fixed_ips` entry of a request: a subnet, an address, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FixedIpRequest {
    pub subnet_id: Option<String>,
    pub ip_address: Option<Ipv4Addr>,
}

/// What `POST /v2.0/ports` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewPort {
    pub network_id: String,
    pub name: String,
    pub description: String,
    pub admin_state_up: Option<bool>,
    pub mac_address: Option<String>,
    /// `None`: one address from the network's first subnet; `Some(vec![])`: none.
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
    pub device_id: String,
    pub device_owner: String,
    pub port_security_enabled: Option<bool>,
    /// `None`: the project's default group (when port security is on).
    pub security_groups: Option<Vec<String>>,
    pub allowed_address_pairs: Vec<(Ipv4Net, Option<String>)>,
    pub host_id: Option<String>,
    pub project_id: Option<String>,
}

/// What `PUT /v2.0/ports/{id}` changes.
#[derive(Debug, Clone, Default)]
pub struct PortChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub mac_address: Option<String>,
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
    pub device_id: Option<String>,
    pub device_owner: Option<String>,
    pub port_security_enabled: Option<bool>,
    pub security_groups: Option<Vec<String>>,
    pub allowed_address_pairs: Option<Vec<(Ipv4Net, Option<String>)>>,
    pub host_id: Option<String>,
}

impl Cloud {
    /// A port the caller may see: its project's (any for admins), or 404.
    pub async fn port(&self, caller: &Caller, id: &str) -> Result<Port> {
        let not_found = || Error::not_found("Port", id);
        let pid: PortId = id.parse().map_err(|_| not_found())?;
        let port = self.store.port(pid).await.map_err(|_| not_found())?;
        if !caller.can_see_project(port.project_id) {
            return Err(not_found());
        }
        Ok(port)
    }

    pub async fn ports(&self, caller: &Caller) -> Result<Vec<Port>> {
        caller.require(Role::Reader, "list ports")?;
        Ok(self
            .store
            .ports()
            .await?
            .into_iter()
            .filter(|p| caller.can_see_project(p.project_id))
            .collect())
    }

    pub async fn create_port(&self, caller: &Caller, new: NewPort) -> Result<Port> {
        let port = self.record_port(caller, new).await?;
        self.sync_network().await;
        Ok(port)
    }

    /// Checks and stores a new port without applying the plane (the caller applies once
    /// for everything it changes).
    pub(crate) async fn record_port(&self, caller: &Caller, new: NewPort) -> Result<Port> {
        caller.require(Role::Member, "create ports")?;
        let network = self.network(caller, &new.network_id).await?;
        let owns_network = caller.can_see_project(network.project_id);
        admin_only(caller, new.host_id.is_some(), "create_port:binding:host_id")?;
        if new.mac_address.is_some() && !owns_network {
            return Err(Error::forbidden(
                "(rule:create_port:mac_address) is disallowed by policy",
            ));
        }
        if DeviceOwner::of(&new.device_owner).is_network_owned() && !owns_network {
            return Err(Error::forbidden(
                "(rule:create_port:device_owner) is disallowed by policy",
            ));
        }
        validate_text("name", &new.name)?;
        validate_text("description", &new.description)?;
        let project_id = owner_project(caller, new.project_id.as_deref())?;
        let port_security = new
            .port_security_enabled
            .unwrap_or(network.port_security_enabled);
        let security_groups = self
            .port_groups(
                caller,
                project_id,
                port_security,
                &new.device_owner,
                new.security_groups,
            )
            .await?;
        check_pairs(port_security, &new.allowed_address_pairs)?;
        self.check_network_quota(project_id, "port").await?;
        let now = Utc::now();
        let mac_address = match new.mac_address {
            Some(mac) => parse_mac(&mac)?,
            None => random_mac(),
        };
        let mut port = Port {
            id: PortId::new(),
            network_id: network.id,
            project_id,
            name: new.name,
            description: new.description,
            mac_address,
            fixed_ips: vec![],
            device_id: new.device_id,
            device_owner: new.device_owner,
            admin_state_up: new.admin_state_up.unwrap_or(true),
            status: PortStatus::Down,
            port_security_enabled: port_security,
            security_groups,
            allowed_address_pairs: new.allowed_address_pairs,
            host_id: new.host_id.unwrap_or_default(),
            delete_with_device: false,
            revision_number: 1,
            created_at: now,
            updated_at: now,
        };
        {
            let _allocations = self.net_lock.lock().await;
            port.fixed_ips = self.allocate(&network, &port, new.fixed_ips, &[]).await?;
            self.store.insert_port(&port).await?;
        }
        self.store.port(port.id).await
    }

    pub async fn update_port(
        &self,
        caller: &Caller,
        id: &str,
        changes: PortChanges,
    ) -> Result<Port> {
        caller.require(Role::Member, "update ports")?;
        let prev = self.port(caller, id).await?;
        let network = self.store.network(prev.network_id).await?;
        admin_only(
            caller,
            changes.host_id.is_some(),
            "update_port:binding:host_id",
        )?;
        admin_only(
            caller,
            changes.mac_address.is_some(),
            "update_port:mac_address",
        )?;
        let mut next = prev.clone();
        if let Some(name) = changes.name {
            validate_text("name", &name)?;
            next.name = name;
        }
        if let Some(description) = changes.description {
            validate_text("description", &description)?;
            next.description = description;
        }
        if let Some(mac) = changes.mac_address {
            next.mac_address = parse_mac(&mac)?;
        }
        next.admin_state_up = changes.admin_state_up.unwrap_or(next.admin_state_up);
        next.device_id = changes.device_id.unwrap_or(next.device_id);
        next.device_owner = changes.device_owner.unwrap_or(next.device_owner);
        next.host_id = changes.host_id.unwrap_or(next.host_id);
        next.port_security_enabled = changes
            .port_security_enabled
            .unwrap_or(next.port_security_enabled);
        if let Some(pairs) = changes.allowed_address_pairs {
            next.allowed_address_pairs = pairs;
        }
        if changes.security_groups.is_some() || !next.port_security_enabled {
            let requested = changes.security_groups.or_else(|| Some(vec![]));
            next.security_groups = self
                .port_groups(
                    caller,
                    prev.project_id,
                    next.port_security_enabled,
                    &next.device_owner,
                    requested,
                )
                .await?;
        }
        check_pairs(next.port_security_enabled, &next.allowed_address_pairs)?;
        next.updated_at = Utc::now();
        let stored = {
            let _allocations = self.net_lock.lock().await;
            if let Some(wanted) = changes.fixed_ips {
                next.fixed_ips = self
                    .allocate(&network, &next, Some(wanted), &prev.fixed_ips)
                    .await?;
            }
            self.store.update_port(&prev, &next).await?
        };
        self.sync_network().await;
        Ok(stored)
    }

    pub async fn delete_port(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(Role::Member, "delete ports")?;
        let port = self.port(caller, id).await?;
        if port.owner().is_network_owned()
            && port.owner() != domain::network::DeviceOwner::Dhcp
            && !caller.is_admin()
        {
            return Err(Error::conflict(format!(
                "Port {id} cannot be deleted directly via the port API: has device owner {}.",
                port.device_owner
            )));
        }
        self.disassociate_port(port.id).await?;
        self.store.delete_port(port.id).await?;
        self.sync_network().await;
        Ok(())
    }

    /// The addresses a port gets (call with `net_lock` held). `keep`: what the port
    /// holds now, which it may keep.
    pub(crate) async fn allocate(
        &self,
        network: &Network,
        port: &Port,
        wanted: Option<Vec<FixedIpRequest>>,
        keep: &[FixedIp],
    ) -> Result<Vec<FixedIp>> {
        let subnets = self.store.network_subnets(network.id).await?;
        let mut ports = self.store.network_ports(network.id).await?;
        ports.retain(|p| p.id != port.id);
        let wanted = match wanted {
            Some(w) => w,
            None => match subnets.first() {
                Some(s) => vec![FixedIpRequest {
                    subnet_id: Some(s.id.to_string()),
                    ip_address: None,
                }],
                None => vec![],
            },
        };
        let mut out: Vec<FixedIp> = Vec::new();
        for request in wanted {
            let subnet = find_subnet(network, &subnets, &request)?;
            let ip_address = match request.ip_address {
                Some(ip) => {
                    if !subnet.is_host(ip) {
                        return Err(Error::invalid(format!(
                            "IP address {ip} is not a valid IP for the specified subnet."
                        )));
                    }
                    let gateway = subnet.gateway_ip == Some(ip)
                        && port.owner() != DeviceOwner::RouterInterface
                        && !keep.iter().any(|k| k.ip_address == ip);
                    let taken = ports.iter().any(|p| p.ips().any(|i| i == ip))
                        || out.iter().any(|f| f.ip_address == ip);
                    if gateway || taken {
                        return Err(Error::conflict(format!(
                            "IP address {ip} already allocated in subnet {}",
                            subnet.id
                        )));
                    }
                    ip
                }
                None => match keep
                    .iter()
                    .find(|k| k.subnet_id == subnet.id && !out.contains(k))
                {
                    Some(kept) => kept.ip_address,
                    None => {
                        let mut holders = ports.clone();
                        holders.push(Port {
                            fixed_ips: out.clone(),
                            ..port.clone()
                        });
                        free_address(subnet, &holders)?
                    }
                },
            };
            out.push(FixedIp {
                subnet_id: subnet.id,
                ip_address,
            });
        }
        Ok(out)
    }

    /// The groups of a port: those named (the project's own, or any for admins), the
    /// project's default when none are named, none without port security or for a
    /// network-owned port.
    async fn port_groups(
        &self,
        caller: &Caller,
        project: domain::ProjectId,
        port_security: bool,
        device_owner: &str,
        requested: Option<Vec<String>>,
    ) -> Result<Vec<SecurityGroupId>> {
        if DeviceOwner::of(device_owner).is_network_owned() {
            return Ok(vec![]);
        }
        match requested {
            Some(named) if !named.is_empty() => {
                if !port_security {
                    return Err(Error::conflict(
                        "Port has security group associated. Cannot disable port security or IP address until security group is removed.",
                    ));
                }
                let mut ids = Vec::new();
                for name in named {
                    let group = self.security_group(caller, &name).await?;
                    if !ids.contains(&group.id) {
                        ids.push(group.id);
                    }
                }
                Ok(ids)
            }
            Some(_) => Ok(vec![]),
            None if port_security => Ok(vec![self.default_security_group(project).await?.id]),
            None => Ok(vec![]),
        }
    }
}

fn find_subnet<'a>(
    network: &Network,
    subnets: &'a [Subnet],
    request: &FixedIpRequest,
) -> Result<&'a Subnet> {
    match (&request.subnet_id, request.ip_address) {
        (Some(id), _) => {
            let sid: Option<SubnetId> = id.parse().ok();
            subnets.iter().find(|s| Some(s.id) == sid).ok_or_else(|| {
                Error::invalid(format!(
                    "Invalid input for operation: Failed to create port on network {}, because fixed_ips included invalid subnet {id}.",
                    network.id
                ))
            })
        }
        (None, Some(ip)) => subnets.iter().find(|s| s.cidr.contains(&ip)).ok_or_else(|| {
            Error::invalid(format!(
                "Invalid input for operation: IP address {ip} is not a valid IP for any of the subnets on the specified network."
            ))
        }),
        (None, None) => Err(Error::invalid(
            "Invalid input for fixed_ips: an entry needs a subnet_id or an ip_address.",
        )),
    }
}

fn check_pairs(port_security: bool, pairs: &[(Ipv4Net, Option<String>)]) -> Result<()> {
    if !port_security && !pairs.is_empty() {
        return Err(Error::conflict(
            "Port Security must be enabled in order to have allowed address pairs on a port.",
        ));
    }
    Ok(())
}
