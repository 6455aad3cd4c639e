//! Ports: a MAC and fixed IPs on a network, owned by a device (a server's NIC, the
//! network's DHCP server, a router interface or gateway, a floating IP).

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{NetworkId, PortId, ProjectId, SecurityGroupId, SubnetId};

/// An allowed address pair: a prefix, and a MAC (`None`: the port's own).
pub type AddressPair = (Ipv4Net, Option<String>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    pub subnet_id: SubnetId,
    pub ip_address: Ipv4Addr,
}

/// Neutron's port status: `DOWN` until the port is wired on a host, then `ACTIVE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortStatus {
    Down,
    Active,
    Build,
}

impl PortStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Down => "DOWN",
            Self::Active => "ACTIVE",
            Self::Build => "BUILD",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "ACTIVE" => Self::Active,
            "BUILD" => Self::Build,
            _ => Self::Down,
        }
    }
}

/// What a `device_owner` says about a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceOwner {
    /// `compute:*`: a server's NIC.
    Compute,
    /// `network:dhcp`.
    Dhcp,
    /// `network:router_interface`.
    RouterInterface,
    /// `network:router_gateway`.
    RouterGateway,
    /// `network:floatingip`.
    FloatingIp,
    /// Anything else, or none: a port the user manages.
    Other,
}

impl DeviceOwner {
    pub fn of(device_owner: &str) -> Self {
        match device_owner {
            "network:dhcp" => Self::Dhcp,
            "network:router_interface" => Self::RouterInterface,
            "network:router_gateway" => Self::RouterGateway,
            "network:floatingip" => Self::FloatingIp,
            o if o.starts_with("compute:") => Self::Compute,
            _ => Self::Other,
        }
    }

    /// Ports the network service makes and deletes itself (`network:*`).
    pub fn is_network_owned(self) -> bool {
        matches!(
            self,
            Self::Dhcp | Self::RouterInterface | Self::RouterGateway | Self::FloatingIp
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub id: PortId,
    pub network_id: NetworkId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    pub mac_address: String,
    pub fixed_ips: Vec<FixedIp>,
    pub device_id: String,
    pub device_owner: String,
    pub admin_state_up: bool,
    pub status: PortStatus,
    pub port_security_enabled: bool,
    pub security_groups: Vec<SecurityGroupId>,
    /// `allowed_address_pairs`: (ip or prefix, MAC or `None` for the port's own).
    pub allowed_address_pairs: Vec<AddressPair>,
    /// `binding:host_id`: the host the port is wired on ("" when unbound).
    pub host_id: String,
    /// Made by the compute service for a server (`networks: [{uuid}]`): deleted with
    /// the server. A port the user made and handed over is only unbound.
    pub delete_with_device: bool,
    pub revision_number: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Port {
    pub fn owner(&self) -> DeviceOwner {
        DeviceOwner::of(&self.device_owner)
    }

    pub fn ips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.fixed_ips.iter().map(|f| f.ip_address)
    }
}
