//! Neutron's core resources: networks, subnets, ports, security groups, routers and
//! floating IPs, their validation and IP address management. IPv4 only (an IPv6 subnet
//! is refused with a clear message).

mod ipam;
mod port;
mod router;
mod security_group;
mod subnet;

pub use ipam::{first_free, parse_mac, random_mac, IpRange};
pub use port::{AddressPair, DeviceOwner, FixedIp, Port, PortStatus};
pub use router::{FloatingIp, Router, RouterGateway};
pub use security_group::{
    default_group_rules, new_group_rules, Direction, Ethertype, RuleProtocol, SecurityGroup,
    SecurityGroupRule,
};
pub use subnet::{HostRoute, Subnet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, NetworkId, ProjectId, Result};

/// The MTU of a network on one host (a Linux bridge; VXLAN between hosts will take 50).
pub const DEFAULT_MTU: u32 = 1500;

/// Longest name or description Neutron accepts.
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: NetworkId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    pub admin_state_up: bool,
    /// Usable by every project (admin-only to set).
    pub shared: bool,
    /// `router:external`: a network routers may use as their gateway (admin-only).
    pub external: bool,
    pub mtu: u32,
    pub port_security_enabled: bool,
    pub revision_number: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Network {
    /// Whether a project may see (and use) this network: its own, shared or external.
    pub fn visible_to(&self, project: Option<ProjectId>) -> bool {
        self.shared || self.external || project == Some(self.project_id)
    }
}

/// Checks a name or description: at most [`MAX_NAME_LEN`] characters.
pub fn validate_text(field: &str, value: &str) -> Result<()> {
    if value.chars().count() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "Invalid input for {field}. Reason: '{}…' exceeds maximum length of {MAX_NAME_LEN}.",
            value.chars().take(16).collect::<String>()
        )));
    }
    Ok(())
}
