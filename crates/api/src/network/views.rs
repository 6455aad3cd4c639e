//! What Neutron shows of each resource (typed views, serialized as Neutron names
//! them; `tenant_id` is kept beside `project_id` for older clients).

use chrono::{DateTime, Utc};
use domain::identity::Caller;
use domain::network::{Network, Port, SecurityGroup, SecurityGroupRule, Subnet};
use serde::Serialize;
use serde_json::Value;

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[derive(Serialize)]
pub(crate) struct NetworkView {
    id: String,
    name: String,
    description: String,
    admin_state_up: bool,
    status: &'static str,
    subnets: Vec<String>,
    shared: bool,
    #[serde(rename = "router:external")]
    router_external: bool,
    mtu: u32,
    port_security_enabled: bool,
    project_id: String,
    tenant_id: String,
    availability_zone_hints: Vec<String>,
    availability_zones: Vec<String>,
    ipv4_address_scope: Option<String>,
    ipv6_address_scope: Option<String>,
    is_default: bool,
    l2_adjacency: bool,
    tags: Vec<String>,
    revision_number: i64,
    created_at: String,
    updated_at: String,
}

impl NetworkView {
    pub fn new(n: &Network, subnets: &[Subnet]) -> Self {
        NetworkView {
            id: n.id.to_string(),
            name: n.name.clone(),
            description: n.description.clone(),
            admin_state_up: n.admin_state_up,
            status: "ACTIVE",
            subnets: subnets
                .iter()
                .filter(|s| s.network_id == n.id)
                .map(|s| s.id.to_string())
                .collect(),
            shared: n.shared,
            router_external: n.external,
            mtu: n.mtu,
            port_security_enabled: n.port_security_enabled,
            project_id: n.project_id.to_string(),
            tenant_id: n.project_id.to_string(),
            availability_zone_hints: vec![],
            availability_zones: vec!["nova".into()],
            ipv4_address_scope: None,
            ipv6_address_scope: None,
            is_default: false,
            l2_adjacency: true,
            tags: vec![],
            revision_number: n.revision_number,
            created_at: ts(n.created_at),
            updated_at: ts(n.updated_at),
        }
    }
}

#[derive(Serialize)]
struct Pool {
    start: String,
    end: String,
}

#[derive(Serialize)]
struct Route {
    destination: String,
    nexthop: String,
}

#[derive(Serialize)]
pub(crate) struct SubnetView {
    id: String,
    name: String,
    description: String,
    network_id: String,
    ip_version: u8,
    cidr: String,
    gateway_ip: Option<String>,
    enable_dhcp: bool,
    allocation_pools: Vec<Pool>,
    dns_nameservers: Vec<String>,
    host_routes: Vec<Route>,
    ipv6_address_mode: Option<String>,
    ipv6_ra_mode: Option<String>,
    subnetpool_id: Option<String>,
    segment_id: Option<String>,
    service_types: Vec<String>,
    dns_publish_fixed_ip: bool,
    project_id: String,
    tenant_id: String,
    tags: Vec<String>,
    revision_number: i64,
    created_at: String,
    updated_at: String,
}

impl SubnetView {
    pub fn new(s: &Subnet) -> Self {
        SubnetView {
            id: s.id.to_string(),
            name: s.name.clone(),
            description: s.description.clone(),
            network_id: s.network_id.to_string(),
            ip_version: 4,
            cidr: s.cidr.to_string(),
            gateway_ip: s.gateway_ip.map(|g| g.to_string()),
            enable_dhcp: s.enable_dhcp,
            allocation_pools: s
                .allocation_pools
                .iter()
                .map(|p| Pool {
                    start: p.start.to_string(),
                    end: p.end.to_string(),
                })
                .collect(),
            dns_nameservers: s.dns_nameservers.iter().map(|d| d.to_string()).collect(),
            host_routes: s
                .host_routes
                .iter()
                .map(|r| Route {
                    destination: r.destination.to_string(),
                    nexthop: r.nexthop.to_string(),
                })
                .collect(),
            ipv6_address_mode: None,
            ipv6_ra_mode: None,
            subnetpool_id: None,
            segment_id: None,
            service_types: vec![],
            dns_publish_fixed_ip: false,
            project_id: s.project_id.to_string(),
            tenant_id: s.project_id.to_string(),
            tags: vec![],
            revision_number: s.revision_number,
            created_at: ts(s.created_at),
            updated_at: ts(s.updated_at),
        }
    }
}

#[derive(Serialize)]
struct FixedIpView {
    subnet_id: String,
    ip_address: String,
}

#[derive(Serialize)]
struct PairView {
    ip_address: String,
    mac_address: String,
}

#[derive(Serialize)]
pub(crate) struct PortView {
    id: String,
    name: String,
    description: String,
    network_id: String,
    mac_address: String,
    fixed_ips: Vec<FixedIpView>,
    device_id: String,
    device_owner: String,
    admin_state_up: bool,
    status: &'static str,
    port_security_enabled: bool,
    security_groups: Vec<String>,
    allowed_address_pairs: Vec<PairView>,
    extra_dhcp_opts: Vec<Value>,
    #[serde(rename = "binding:vnic_type")]
    vnic_type: &'static str,
    #[serde(rename = "binding:host_id", skip_serializing_if = "Option::is_none")]
    host_id: Option<String>,
    #[serde(rename = "binding:vif_type", skip_serializing_if = "Option::is_none")]
    vif_type: Option<&'static str>,
    #[serde(
        rename = "binding:vif_details",
        skip_serializing_if = "Option::is_none"
    )]
    vif_details: Option<Value>,
    #[serde(rename = "binding:profile", skip_serializing_if = "Option::is_none")]
    profile: Option<Value>,
    project_id: String,
    tenant_id: String,
    tags: Vec<String>,
    revision_number: i64,
    created_at: String,
    updated_at: String,
}

impl PortView {
    /// Binding details are for admins only, as Neutron's policy has them.
    pub fn new(p: &Port, caller: &Caller) -> Self {
        let admin = caller.is_admin();
        PortView {
            id: p.id.to_string(),
            name: p.name.clone(),
            description: p.description.clone(),
            network_id: p.network_id.to_string(),
            mac_address: p.mac_address.clone(),
            fixed_ips: p
                .fixed_ips
                .iter()
                .map(|f| FixedIpView {
                    subnet_id: f.subnet_id.to_string(),
                    ip_address: f.ip_address.to_string(),
                })
                .collect(),
            device_id: p.device_id.clone(),
            device_owner: p.device_owner.clone(),
            admin_state_up: p.admin_state_up,
            status: p.status.as_str(),
            port_security_enabled: p.port_security_enabled,
            security_groups: p.security_groups.iter().map(|g| g.to_string()).collect(),
            allowed_address_pairs: p
                .allowed_address_pairs
                .iter()
                .map(|(prefix, mac)| PairView {
                    ip_address: if prefix.prefix_len() == 32 {
                        prefix.addr().to_string()
                    } else {
                        prefix.to_string()
                    },
                    mac_address: mac.clone().unwrap_or_else(|| p.mac_address.clone()),
                })
                .collect(),
            extra_dhcp_opts: vec![],
            vnic_type: "normal",
            host_id: admin.then(|| p.host_id.clone()),
            vif_type: admin.then_some(if p.host_id.is_empty() {
                "unbound"
            } else {
                "tap"
            }),
            vif_details: admin.then(|| serde_json::json!({})),
            profile: admin.then(|| serde_json::json!({})),
            project_id: p.project_id.to_string(),
            tenant_id: p.project_id.to_string(),
            tags: vec![],
            revision_number: p.revision_number,
            created_at: ts(p.created_at),
            updated_at: ts(p.updated_at),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct RuleView {
    id: String,
    security_group_id: String,
    direction: &'static str,
    ethertype: &'static str,
    protocol: Option<String>,
    port_range_min: Option<u16>,
    port_range_max: Option<u16>,
    remote_ip_prefix: Option<String>,
    remote_group_id: Option<String>,
    remote_address_group_id: Option<String>,
    normalized_cidr: Option<String>,
    description: String,
    belongs_to_default_sg: bool,
    project_id: String,
    tenant_id: String,
    revision_number: i64,
    created_at: String,
    updated_at: String,
}

impl RuleView {
    pub fn new(r: &SecurityGroupRule, default_groups: &[domain::SecurityGroupId]) -> Self {
        RuleView {
            id: r.id.to_string(),
            security_group_id: r.security_group_id.to_string(),
            direction: r.direction.as_str(),
            ethertype: r.ethertype.as_str(),
            protocol: r.protocol.map(|p| p.as_string()),
            port_range_min: r.port_range_min,
            port_range_max: r.port_range_max,
            remote_ip_prefix: r.remote_ip_prefix.map(|p| p.to_string()),
            remote_group_id: r.remote_group_id.map(|g| g.to_string()),
            remote_address_group_id: None,
            normalized_cidr: r.remote_ip_prefix.map(|p| p.trunc().to_string()),
            description: r.description.clone(),
            belongs_to_default_sg: default_groups.contains(&r.security_group_id),
            project_id: r.project_id.to_string(),
            tenant_id: r.project_id.to_string(),
            revision_number: r.revision_number,
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct SecurityGroupView {
    id: String,
    name: String,
    description: String,
    stateful: bool,
    shared: bool,
    security_group_rules: Vec<RuleView>,
    project_id: String,
    tenant_id: String,
    tags: Vec<String>,
    revision_number: i64,
    created_at: String,
    updated_at: String,
}

impl SecurityGroupView {
    pub fn new(g: &SecurityGroup, rules: &[SecurityGroupRule]) -> Self {
        let defaults = if g.is_default { vec![g.id] } else { vec![] };
        SecurityGroupView {
            id: g.id.to_string(),
            name: g.name.clone(),
            description: g.description.clone(),
            stateful: g.stateful,
            shared: false,
            security_group_rules: rules
                .iter()
                .filter(|r| r.security_group_id == g.id)
                .map(|r| RuleView::new(r, &defaults))
                .collect(),
            project_id: g.project_id.to_string(),
            tenant_id: g.project_id.to_string(),
            tags: vec![],
            revision_number: g.revision_number,
            created_at: ts(g.created_at),
            updated_at: ts(g.updated_at),
        }
    }
}

/// A view as JSON (for the list machinery).
pub(crate) fn to_value<T: Serialize>(view: T) -> Value {
    serde_json::to_value(view).expect("views serialize")
}

#[derive(Serialize)]
pub(crate) struct GatewayInfoView {
    network_id: String,
    enable_snat: bool,
    external_fixed_ips: Vec<FixedIpView>,
}

#[derive(Serialize)]
pub(crate) struct RouterView {
    id: String,
    name: String,
    description: String,
    admin_state_up: bool,
    status: &'static str,
    external_gateway_info: Option<GatewayInfoView>,
    routes: Vec<Route>,
    availability_zone_hints: Vec<String>,
    availability_zones: Vec<String>,
    project_id: String,
    tenant_id: String,
    tags: Vec<String>,
    revision_number: i64,
    created_at: String,
    updated_at: String,
}

impl RouterView {
    pub fn new(r: &domain::network::Router, gateway_ips: &[domain::network::FixedIp]) -> Self {
        RouterView {
            id: r.id.to_string(),
            name: r.name.clone(),
            description: r.description.clone(),
            admin_state_up: r.admin_state_up,
            status: "ACTIVE",
            external_gateway_info: r.gateway.map(|g| GatewayInfoView {
                network_id: g.network_id.to_string(),
                enable_snat: g.enable_snat,
                external_fixed_ips: gateway_ips
                    .iter()
                    .map(|f| FixedIpView {
                        subnet_id: f.subnet_id.to_string(),
                        ip_address: f.ip_address.to_string(),
                    })
                    .collect(),
            }),
            routes: r
                .routes
                .iter()
                .map(|x| Route {
                    destination: x.destination.to_string(),
                    nexthop: x.nexthop.to_string(),
                })
                .collect(),
            availability_zone_hints: vec![],
            availability_zones: vec!["nova".into()],
            project_id: r.project_id.to_string(),
            tenant_id: r.project_id.to_string(),
            tags: vec![],
            revision_number: r.revision_number,
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct FloatingIpView {
    id: String,
    floating_ip_address: String,
    floating_network_id: String,
    router_id: Option<String>,
    port_id: Option<String>,
    fixed_ip_address: Option<String>,
    status: &'static str,
    description: String,
    port_forwardings: Vec<Value>,
    project_id: String,
    tenant_id: String,
    tags: Vec<String>,
    revision_number: i64,
    created_at: String,
    updated_at: String,
}

impl FloatingIpView {
    pub fn new(f: &domain::network::FloatingIp) -> Self {
        FloatingIpView {
            id: f.id.to_string(),
            floating_ip_address: f.floating_ip_address.to_string(),
            floating_network_id: f.floating_network_id.to_string(),
            router_id: f.router_id.map(|r| r.to_string()),
            port_id: f.port_id.map(|p| p.to_string()),
            fixed_ip_address: f.fixed_ip_address.map(|i| i.to_string()),
            status: f.status(),
            description: f.description.clone(),
            port_forwardings: vec![],
            project_id: f.project_id.to_string(),
            tenant_id: f.project_id.to_string(),
            tags: vec![],
            revision_number: f.revision_number,
            created_at: ts(f.created_at),
            updated_at: ts(f.updated_at),
        }
    }
}
