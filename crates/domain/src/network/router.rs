//! Routers (forwarding between the subnets they join, with a gateway on an external
//! network) and floating IPs (an external address translated to a port's fixed one).

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::HostRoute;
use crate::{FloatingIpId, NetworkId, PortId, ProjectId, RouterId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Router {
    pub id: RouterId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    pub admin_state_up: bool,
    /// The external network of its gateway, with the gateway port.
    pub gateway: Option<RouterGateway>,
    pub routes: Vec<HostRoute>,
    pub revision_number: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterGateway {
    pub network_id: NetworkId,
    pub port_id: PortId,
    pub enable_snat: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIp {
    pub id: FloatingIpId,
    pub project_id: ProjectId,
    pub description: String,
    pub floating_network_id: NetworkId,
    pub floating_ip_address: Ipv4Addr,
    /// The `network:floatingip` port holding the address on the external network.
    pub floating_port_id: PortId,
    /// The port it translates to, with which of its addresses, through which router.
    pub port_id: Option<PortId>,
    pub fixed_ip_address: Option<Ipv4Addr>,
    pub router_id: Option<RouterId>,
    pub revision_number: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl FloatingIp {
    /// Neutron's status: `ACTIVE` while associated, else `DOWN`.
    pub fn status(&self) -> &'static str {
        if self.port_id.is_some() {
            "ACTIVE"
        } else {
            "DOWN"
        }
    }
}
