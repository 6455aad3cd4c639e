//! Security groups and their rules. A group's rules are allow rules; what no rule allows
//! is dropped (ingress), and a new group allows all egress.

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Error, ProjectId, Result, SecurityGroupId, SecurityGroupRuleId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: SecurityGroupId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    pub stateful: bool,
    /// The project's `default` group (made on first use, never deleted by a member).
    pub is_default: bool,
    pub revision_number: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "ingress" => Ok(Self::Ingress),
            "egress" => Ok(Self::Egress),
            other => Err(Error::invalid(format!(
                "Invalid input for direction. Reason: {other} is not in valid_values ['ingress', 'egress']."
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ethertype {
    IPv4,
    IPv6,
}

impl Ethertype {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IPv4 => "IPv4",
            Self::IPv6 => "IPv6",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        match text.to_ascii_lowercase().as_str() {
            "ipv4" => Ok(Self::IPv4),
            "ipv6" => Ok(Self::IPv6),
            _ => Err(Error::invalid(format!(
                "Invalid input for ethertype. Reason: {text} is not in valid_values ['IPv4', 'IPv6']."
            ))),
        }
    }
}

/// A rule's protocol, as Neutron accepts it: a name or an IP protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleProtocol {
    Tcp,
    Udp,
    Icmp,
    /// Any other protocol, by number (0–255).
    Number(u8),
}

impl RuleProtocol {
    /// `None` for "any" (null, "any" or absent).
    pub fn parse(text: &str) -> Result<Option<Self>> {
        Ok(Some(match text.to_ascii_lowercase().as_str() {
            "any" | "" => return Ok(None),
            "tcp" | "6" => Self::Tcp,
            "udp" | "17" => Self::Udp,
            "icmp" | "1" => Self::Icmp,
            other => match other.parse::<u8>() {
                Ok(n) => Self::Number(n),
                Err(_) => {
                    return Err(Error::invalid(format!(
                        "Security group rule protocol {text} not supported. Only protocol values [None, 'tcp', 'udp', 'icmp'] and integer representations [0 to 255] are supported."
                    )))
                }
            },
        }))
    }

    /// As Neutron shows it (the name the user gave for named ones).
    pub fn as_string(self) -> String {
        match self {
            Self::Tcp => "tcp".into(),
            Self::Udp => "udp".into(),
            Self::Icmp => "icmp".into(),
            Self::Number(n) => n.to_string(),
        }
    }

    fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp) || matches!(self, Self::Number(132 | 33 | 136))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupRule {
    pub id: SecurityGroupRuleId,
    pub security_group_id: SecurityGroupId,
    pub project_id: ProjectId,
    pub direction: Direction,
    pub ethertype: Ethertype,
    pub protocol: Option<RuleProtocol>,
    pub port_range_min: Option<u16>,
    pub port_range_max: Option<u16>,
    pub remote_ip_prefix: Option<IpNet>,
    pub remote_group_id: Option<SecurityGroupId>,
    pub description: String,
    pub revision_number: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SecurityGroupRule {
    /// Checks a rule as Neutron does before storing it.
    pub fn validate(&self) -> Result<()> {
        if self.remote_ip_prefix.is_some() && self.remote_group_id.is_some() {
            return Err(Error::invalid(
                "Only remote_ip_prefix or remote_group_id may be provided.",
            ));
        }
        if let Some(prefix) = self.remote_ip_prefix {
            let v4 = matches!(prefix, IpNet::V4(_));
            if v4 != (self.ethertype == Ethertype::IPv4) {
                return Err(Error::invalid(format!(
                    "Conflicting value ethertype {} for CIDR {prefix}",
                    self.ethertype.as_str()
                )));
            }
        }
        let (min, max) = (self.port_range_min, self.port_range_max);
        match self.protocol {
            Some(RuleProtocol::Icmp) => {
                if min.is_none() && max.is_some() {
                    return Err(Error::invalid(
                        "ICMP code (port-range-max) 0 is provided but ICMP type (port-range-min) is missing.",
                    ));
                }
                for (what, v) in [("type", min), ("code", max)] {
                    if v.is_some_and(|v| v > 255) {
                        return Err(Error::invalid(format!(
                            "Invalid value for ICMP {what} (port-range-{}): {}",
                            if what == "type" { "min" } else { "max" },
                            v.unwrap_or_default()
                        )));
                    }
                }
            }
            Some(p) if p.has_ports() => {
                if let (Some(a), Some(b)) = (min, max) {
                    if a == 0 || a > b {
                        return Err(Error::invalid(
                            "For TCP/UDP protocols, port_range_min must be <= port_range_max",
                        ));
                    }
                } else if min.is_some() || max.is_some() {
                    return Err(Error::invalid(
                        "For TCP/UDP protocols, port_range_min and port_range_max must both be given.",
                    ));
                }
            }
            _ => {
                if min.is_some() || max.is_some() {
                    return Err(Error::invalid(
                        "Invalid input for operation: Port range is only valid with protocols tcp, udp, sctp, dccp, udplite and icmp.",
                    ));
                }
            }
        }
        validate_description(&self.description)
    }

    /// Two rules that allow the same traffic (Neutron refuses the second: 409).
    pub fn same_as(&self, other: &SecurityGroupRule) -> bool {
        self.security_group_id == other.security_group_id
            && self.direction == other.direction
            && self.ethertype == other.ethertype
            && self.protocol == other.protocol
            && self.port_range_min == other.port_range_min
            && self.port_range_max == other.port_range_max
            && self.remote_ip_prefix.map(|p| p.trunc()) == other.remote_ip_prefix.map(|p| p.trunc())
            && self.remote_group_id == other.remote_group_id
    }
}

fn validate_description(text: &str) -> Result<()> {
    super::validate_text("description", text)
}

fn rule(
    group: &SecurityGroup,
    direction: Direction,
    ethertype: Ethertype,
    remote_group_id: Option<SecurityGroupId>,
) -> SecurityGroupRule {
    SecurityGroupRule {
        id: SecurityGroupRuleId::new(),
        security_group_id: group.id,
        project_id: group.project_id,
        direction,
        ethertype,
        protocol: None,
        port_range_min: None,
        port_range_max: None,
        remote_ip_prefix: None,
        remote_group_id,
        description: String::new(),
        revision_number: 0,
        created_at: group.created_at,
        updated_at: group.created_at,
    }
}

/// The rules of a new group: all egress, IPv4 and IPv6.
pub fn new_group_rules(group: &SecurityGroup) -> Vec<SecurityGroupRule> {
    [Ethertype::IPv4, Ethertype::IPv6]
        .into_iter()
        .map(|e| rule(group, Direction::Egress, e, None))
        .collect()
}

/// The rules of a project's `default` group: all egress, and ingress from the group's
/// own members, IPv4 and IPv6 (as Neutron makes it).
pub fn default_group_rules(group: &SecurityGroup) -> Vec<SecurityGroupRule> {
    let mut rules = new_group_rules(group);
    rules.extend(
        [Ethertype::IPv4, Ethertype::IPv6]
            .into_iter()
            .map(|e| rule(group, Direction::Ingress, e, Some(group.id))),
    );
    rules
}
