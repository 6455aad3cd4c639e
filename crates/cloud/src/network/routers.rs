//! Routers: a gateway port on an external network, an interface port per subnet.

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::network::{
    random_mac, validate_text, DeviceOwner, FixedIp, HostRoute, Port, PortStatus, Router,
    RouterGateway, Subnet,
};
use domain::{Error, PortId, Result, RouterId, SubnetId};

use super::networks::{admin_only, owner_project};
use super::FixedIpRequest;
use crate::Cloud;

/// `external_gateway_info` of a request.
#[derive(Debug, Clone, Default)]
pub struct GatewayRequest {
    pub network_id: String,
    pub enable_snat: Option<bool>,
    /// Addresses on the external network (admins only).
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
}

/// What `POST /v2.0/routers` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewRouter {
    pub name: String,
    pub description: String,
    pub admin_state_up: Option<bool>,
    pub gateway: Option<GatewayRequest>,
    pub project_id: Option<String>,
}

/// What `PUT /v2.0/routers/{id}` changes; `gateway: Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct RouterChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub gateway: Option<Option<GatewayRequest>>,
    pub routes: Option<Vec<HostRoute>>,
}

/// `add_router_interface` / `remove_router_interface`: a subnet or a port.
#[derive(Debug, Clone)]
pub enum InterfaceRequest {
    Subnet(String),
    Port(String),
}

/// What an interface call answers.
#[derive(Debug, Clone)]
pub struct RouterInterfaceInfo {
    pub router_id: RouterId,
    pub port_id: PortId,
    pub subnet_id: SubnetId,
    pub network_id: domain::NetworkId,
    pub project_id: domain::ProjectId,
}

impl Cloud {
    pub async fn router(&self, caller: &Caller, id: &str) -> Result<Router> {
        let not_found = || Error::not_found("Router", id);
        let rid: RouterId = id.parse().map_err(|_| not_found())?;
        let router = self.store.router(rid).await.map_err(|_| not_found())?;
        if !caller.can_see_project(router.project_id) {
            return Err(not_found());
        }
        Ok(router)
    }

    pub async fn routers(&self, caller: &Caller) -> Result<Vec<Router>> {
        caller.require(Role::Reader, "list routers")?;
        Ok(self
            .store
            .routers()
            .await?
            .into_iter()
            .filter(|r| caller.can_see_project(r.project_id))
            .collect())
    }

    /// The fixed IPs of a router's gateway port (for its view).
    pub async fn router_gateway_ips(&self, router: &Router) -> Result<Vec<FixedIp>> {
        match router.gateway {
            Some(g) => Ok(self
                .store
                .port(g.port_id)
                .await
                .map(|p| p.fixed_ips)
                .unwrap_or_default()),
            None => Ok(vec![]),
        }
    }

    pub async fn create_router(&self, caller: &Caller, new: NewRouter) -> Result<Router> {
        caller.require(Role::Member, "create routers")?;
        validate_text("name", &new.name)?;
        validate_text("description", &new.description)?;
        let project_id = owner_project(caller, new.project_id.as_deref())?;
        self.check_network_quota(project_id, "router").await?;
        let now = Utc::now();
        let mut router = Router {
            id: RouterId::new(),
            project_id,
            name: new.name,
            description: new.description,
            admin_state_up: new.admin_state_up.unwrap_or(true),
            gateway: None,
            routes: vec![],
            revision_number: 1,
            created_at: now,
            updated_at: now,
        };
        if let Some(request) = new.gateway {
            router.gateway = Some(self.make_gateway(caller, &router, request).await?);
        }
        if let Err(e) = self.store.insert_router(&router).await {
            if let Some(g) = router.gateway {
                let _ = self.store.delete_port(g.port_id).await;
            }
            return Err(e);
        }
        self.sync_network().await;
        Ok(router)
    }

    /// Makes the gateway port on an external network.
    async fn make_gateway(
        &self,
        caller: &Caller,
        router: &Router,
        request: GatewayRequest,
    ) -> Result<RouterGateway> {
        admin_only(
            caller,
            request.enable_snat == Some(false),
            "create_router:external_gateway_info:enable_snat",
        )?;
        admin_only(
            caller,
            request.fixed_ips.is_some(),
            "create_router:external_gateway_info:external_fixed_ips",
        )?;
        let network = self.network(caller, &request.network_id).await?;
        if !network.external {
            return Err(Error::invalid(format!(
                "Bad router request: Network {} is not an external network.",
                network.id
            )));
        }
        let port = self
            .network_owned_port(
                &network,
                "network:router_gateway",
                &router.id.to_string(),
                request.fixed_ips,
            )
            .await?;
        Ok(RouterGateway {
            network_id: network.id,
            port_id: port.id,
            enable_snat: request.enable_snat.unwrap_or(true),
        })
    }

    /// A port the network service owns (gateway, interface, floating IP), with an
    /// address from the network (or the ones asked for).
    pub(crate) async fn network_owned_port(
        &self,
        network: &domain::network::Network,
        device_owner: &str,
        device_id: &str,
        fixed_ips: Option<Vec<FixedIpRequest>>,
    ) -> Result<Port> {
        let now = Utc::now();
        let mut port = Port {
            id: PortId::new(),
            network_id: network.id,
            project_id: network.project_id,
            name: String::new(),
            description: String::new(),
            mac_address: random_mac(),
            fixed_ips: vec![],
            device_id: device_id.into(),
            device_owner: device_owner.into(),
            admin_state_up: true,
            status: PortStatus::Down,
            port_security_enabled: false,
            security_groups: vec![],
            allowed_address_pairs: vec![],
            host_id: self.host.to_string(),
            delete_with_device: true,
            revision_number: 1,
            created_at: now,
            updated_at: now,
        };
        let _allocations = self.net_lock.lock().await;
        port.fixed_ips = self.allocate(network, &port, fixed_ips, &[]).await?;
        if port.fixed_ips.is_empty() {
            return Err(Error::invalid(format!(
                "Bad request: network {} has no subnet to take an address from.",
                network.id
            )));
        }
        self.store.insert_port(&port).await?;
        Ok(port)
    }

    pub async fn update_router(
        &self,
        caller: &Caller,
        id: &str,
        changes: RouterChanges,
    ) -> Result<Router> {
        caller.require(Role::Member, "update routers")?;
        let prev = self.router(caller, id).await?;
        let mut next = prev.clone();
        if let Some(name) = changes.name {
            validate_text("name", &name)?;
            next.name = name;
        }
        if let Some(description) = changes.description {
            validate_text("description", &description)?;
            next.description = description;
        }
        next.admin_state_up = changes.admin_state_up.unwrap_or(next.admin_state_up);
        if let Some(routes) = changes.routes {
            let subnets = self.router_subnets(prev.id).await?;
            for route in &routes {
                if !subnets.iter().any(|s| s.is_host(route.nexthop)) {
                    return Err(Error::invalid(format!(
                        "Invalid format for routes: {}, the nexthop is not connected with router",
                        route.nexthop
                    )));
                }
            }
            next.routes = routes;
        }
        let mut old_gateway_port = None;
        if let Some(gateway) = changes.gateway {
            let same_network = match (&gateway, prev.gateway) {
                (Some(g), Some(p)) => {
                    g.network_id == p.network_id.to_string() && g.fixed_ips.is_none()
                }
                _ => false,
            };
            if same_network {
                let g = gateway.as_ref().expect("same network implies some");
                admin_only(
                    caller,
                    g.enable_snat.is_some(),
                    "update_router:external_gateway_info:enable_snat",
                )?;
                if let (Some(snat), Some(current)) = (g.enable_snat, next.gateway.as_mut()) {
                    current.enable_snat = snat;
                }
            } else {
                if gateway.is_none() && prev.gateway.is_some() {
                    self.check_no_floating_ips(prev.id).await?;
                }
                old_gateway_port = prev.gateway.map(|g| g.port_id);
                next.gateway = match gateway {
                    Some(request) => Some(self.make_gateway(caller, &prev, request).await?),
                    None => None,
                };
            }
        }
        next.updated_at = Utc::now();
        let stored = self.store.update_router(&prev, &next).await?;
        if let Some(port) = old_gateway_port {
            self.store.delete_port(port).await?;
        }
        self.sync_network().await;
        Ok(stored)
    }

    async fn check_no_floating_ips(&self, router: RouterId) -> Result<()> {
        let used = self
            .store
            .floating_ips()
            .await?
            .iter()
            .any(|f| f.router_id == Some(router));
        if used {
            return Err(Error::conflict(format!(
                "Router {router} still has floating IPs associated through it."
            )));
        }
        Ok(())
    }

    pub async fn delete_router(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(Role::Member, "delete routers")?;
        let router = self.router(caller, id).await?;
        if !self.router_interfaces(router.id).await?.is_empty() {
            return Err(Error::conflict(format!("Router {id} still has ports")));
        }
        self.check_no_floating_ips(router.id).await?;
        self.store.delete_router(router.id).await?;
        if let Some(g) = router.gateway {
            self.store.delete_port(g.port_id).await?;
        }
        self.sync_network().await;
        Ok(())
    }

    /// A router's interface ports.
    pub(crate) async fn router_interfaces(&self, router: RouterId) -> Result<Vec<Port>> {
        let id = router.to_string();
        Ok(self
            .store
            .ports()
            .await?
            .into_iter()
            .filter(|p| p.owner() == DeviceOwner::RouterInterface && p.device_id == id)
            .collect())
    }

    async fn router_subnets(&self, router: RouterId) -> Result<Vec<Subnet>> {
        let ports = self.router_interfaces(router).await?;
        Ok(self
            .store
            .subnets()
            .await?
            .into_iter()
            .filter(|s| {
                ports
                    .iter()
                    .any(|p| p.fixed_ips.iter().any(|f| f.subnet_id == s.id))
            })
            .collect())
    }

    pub async fn add_router_interface(
        &self,
        caller: &Caller,
        id: &str,
        request: InterfaceRequest,
    ) -> Result<RouterInterfaceInfo> {
        caller.require(Role::Member, "add router interfaces")?;
        let router = self.router(caller, id).await?;
        let attached = self.router_subnets(router.id).await?;
        let port = match request {
            InterfaceRequest::Subnet(subnet_id) => {
                let subnet = self.subnet(caller, &subnet_id).await?;
                self.owned_network(
                    caller,
                    &subnet.network_id.to_string(),
                    "add_router_interface",
                )
                .await?;
                if attached.iter().any(|s| s.id == subnet.id) {
                    return Err(Error::invalid(format!(
                        "Bad router request: Router already has a port on subnet {subnet_id}."
                    )));
                }
                check_overlap(&attached, &subnet)?;
                let gateway = subnet.gateway_ip.ok_or_else(|| {
                    Error::invalid(format!(
                        "Bad router request: Subnet {subnet_id} does not have a gateway IP."
                    ))
                })?;
                let network = self.store.network(subnet.network_id).await?;
                self.network_owned_port(
                    &network,
                    "network:router_interface",
                    &router.id.to_string(),
                    Some(vec![FixedIpRequest {
                        subnet_id: Some(subnet.id.to_string()),
                        ip_address: Some(gateway),
                    }]),
                )
                .await?
            }
            InterfaceRequest::Port(port_id) => {
                let port = self.port(caller, &port_id).await?;
                if !port.device_id.is_empty() || !port.device_owner.is_empty() {
                    return Err(Error::conflict(format!("Port {port_id} is still in use.")));
                }
                let fixed = *port.fixed_ips.first().ok_or_else(|| {
                    Error::invalid(format!(
                        "Bad router request: Router port {port_id} must have an IP address."
                    ))
                })?;
                let subnet = self.store.subnet(fixed.subnet_id).await?;
                if attached.iter().any(|s| s.id == subnet.id) {
                    return Err(Error::invalid(format!(
                        "Bad router request: Router already has a port on subnet {}.",
                        subnet.id
                    )));
                }
                check_overlap(&attached, &subnet)?;
                let next = Port {
                    device_id: router.id.to_string(),
                    device_owner: "network:router_interface".into(),
                    host_id: self.host.to_string(),
                    security_groups: vec![],
                    port_security_enabled: false,
                    updated_at: Utc::now(),
                    ..port.clone()
                };
                self.store.update_port(&port, &next).await?
            }
        };
        self.sync_network().await;
        interface_info(&router, &port)
    }

    pub async fn remove_router_interface(
        &self,
        caller: &Caller,
        id: &str,
        request: InterfaceRequest,
    ) -> Result<RouterInterfaceInfo> {
        caller.require(Role::Member, "remove router interfaces")?;
        let router = self.router(caller, id).await?;
        let interfaces = self.router_interfaces(router.id).await?;
        let port = match &request {
            InterfaceRequest::Port(port_id) => interfaces
                .iter()
                .find(|p| p.id.to_string() == *port_id)
                .ok_or_else(|| {
                    Error::not_found_message(format!(
                        "Router {id} does not have an interface with id {port_id}"
                    ))
                })?,
            InterfaceRequest::Subnet(subnet_id) => interfaces
                .iter()
                .find(|p| {
                    p.fixed_ips
                        .iter()
                        .any(|f| f.subnet_id.to_string() == *subnet_id)
                })
                .ok_or_else(|| {
                    Error::not_found_message(format!(
                        "Router {id} has no interface on subnet {subnet_id}"
                    ))
                })?,
        };
        let subnets: Vec<SubnetId> = port.fixed_ips.iter().map(|f| f.subnet_id).collect();
        let fips = self.store.floating_ips().await?;
        let ports = self.store.ports().await?;
        let in_use = fips
            .iter()
            .filter(|f| f.router_id == Some(router.id))
            .any(|f| {
                ports
                    .iter()
                    .find(|p| Some(p.id) == f.port_id)
                    .is_some_and(|p| p.fixed_ips.iter().any(|x| subnets.contains(&x.subnet_id)))
            });
        if in_use {
            return Err(Error::conflict(format!(
                "Router interface for subnet {} on router {id} cannot be deleted, as it is required by one or more floating IPs.",
                subnets.first().map(|s| s.to_string()).unwrap_or_default()
            )));
        }
        let info = interface_info(&router, port)?;
        self.store.delete_port(port.id).await?;
        self.sync_network().await;
        Ok(info)
    }

    /// The router through which `ip` (an address on a subnet) reaches `external`.
    pub(crate) async fn router_for(
        &self,
        external: domain::NetworkId,
        subnet: SubnetId,
    ) -> Result<Option<RouterId>> {
        for router in self.store.routers().await? {
            if router.gateway.map(|g| g.network_id) != Some(external) {
                continue;
            }
            let joins = self
                .router_interfaces(router.id)
                .await?
                .iter()
                .any(|p| p.fixed_ips.iter().any(|f| f.subnet_id == subnet));
            if joins {
                return Ok(Some(router.id));
            }
        }
        Ok(None)
    }
}

fn check_overlap(attached: &[Subnet], subnet: &Subnet) -> Result<()> {
    if let Some(other) = attached.iter().find(|s| {
        s.cidr.contains(&subnet.cidr.network()) || subnet.cidr.contains(&s.cidr.network())
    }) {
        return Err(Error::invalid(format!(
            "Bad router request: Cidr {} of subnet {} overlaps with cidr {} of subnet {}.",
            subnet.cidr, subnet.id, other.cidr, other.id
        )));
    }
    Ok(())
}

fn interface_info(router: &Router, port: &Port) -> Result<RouterInterfaceInfo> {
    let fixed = port
        .fixed_ips
        .first()
        .ok_or_else(|| Error::internal(format!("Router port {} has no address.", port.id)))?;
    Ok(RouterInterfaceInfo {
        router_id: router.id,
        port_id: port.id,
        subnet_id: fixed.subnet_id,
        network_id: port.network_id,
        project_id: router.project_id,
    })
}
