//! Subnets: a CIDR on a network, its gateway, allocation pools, DNS servers and routes.

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::ipam::IpRange;
use crate::{Error, NetworkId, ProjectId, Result, SubnetId};

/// Most DNS servers a subnet may hand out (Neutron's `max_dns_nameservers`).
pub const MAX_DNS_NAMESERVERS: usize = 5;
/// Most host routes a subnet may hand out (Neutron's `max_subnet_host_routes`).
pub const MAX_HOST_ROUTES: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub destination: Ipv4Net,
    pub nexthop: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub id: SubnetId,
    pub network_id: NetworkId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    pub cidr: Ipv4Net,
    pub gateway_ip: Option<Ipv4Addr>,
    pub enable_dhcp: bool,
    pub allocation_pools: Vec<IpRange>,
    pub dns_nameservers: Vec<Ipv4Addr>,
    pub host_routes: Vec<HostRoute>,
    pub revision_number: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Subnet {
    /// Parses a CIDR as Neutron does: IPv4 only, no host bits set.
    pub fn parse_cidr(text: &str) -> Result<Ipv4Net> {
        if text.contains(':') {
            return Err(Error::invalid(format!(
                "Invalid input for operation: IPv6 subnets are not supported (cidr {text})."
            )));
        }
        let net: Ipv4Net = text.parse().map_err(|_| {
            Error::invalid(format!(
                "Invalid input for cidr. Reason: '{text}' is not a valid IP subnet."
            ))
        })?;
        if net.trunc() != net {
            return Err(Error::invalid(format!(
                "Invalid input for cidr. Reason: '{text}' isn't a recognized IP subnet cidr, '{}' is recommended.",
                net.trunc()
            )));
        }
        if net.prefix_len() > 30 {
            return Err(Error::invalid(format!(
                "Invalid input for cidr. Reason: '{text}' is too small: a subnet needs a prefix of /30 or shorter."
            )));
        }
        Ok(net)
    }

    /// Whether `ip` is a host address of this subnet (not its network or broadcast address).
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        is_host(self.cidr, ip)
    }

    /// Checks everything that depends only on the subnet itself, and fills the
    /// allocation pools when none were given (every host address but the gateway).
    pub fn validate(&mut self) -> Result<()> {
        super::validate_text("name", &self.name)?;
        super::validate_text("description", &self.description)?;
        if let Some(gw) = self.gateway_ip {
            if !self.cidr.contains(&gw) || !self.is_host(gw) {
                return Err(Error::invalid(format!(
                    "Invalid input for operation: Gateway IP {gw} is not a host address of subnet {}.",
                    self.cidr
                )));
            }
        }
        if self.allocation_pools.is_empty() {
            self.allocation_pools = IpRange::hosts_except(self.cidr, self.gateway_ip);
        }
        for (i, pool) in self.allocation_pools.iter().enumerate() {
            if !self.is_host(pool.start) || !self.is_host(pool.end) || pool.start > pool.end {
                return Err(Error::invalid(format!(
                    "The allocation pool {}-{} spans beyond the subnet cidr {}.",
                    pool.start, pool.end, self.cidr
                )));
            }
            if let Some(gw) = self.gateway_ip.filter(|gw| pool.contains(*gw)) {
                return Err(Error::conflict(format!(
                    "Gateway ip {gw} conflicts with allocation pool {}-{}.",
                    pool.start, pool.end
                )));
            }
            if let Some(other) = self.allocation_pools[..i].iter().find(|o| o.overlaps(pool)) {
                return Err(Error::invalid(format!(
                    "Found overlapping allocation pools: {}-{} and {}-{}.",
                    other.start, other.end, pool.start, pool.end
                )));
            }
        }
        if self.dns_nameservers.len() > MAX_DNS_NAMESERVERS {
            return Err(Error::invalid(format!(
                "Number of DNS nameservers exceeds the limit {MAX_DNS_NAMESERVERS}."
            )));
        }
        for (i, dns) in self.dns_nameservers.iter().enumerate() {
            if self.dns_nameservers[..i].contains(dns) {
                return Err(Error::invalid(format!(
                    "Invalid input for dns_nameservers. Reason: Duplicate nameserver '{dns}'."
                )));
            }
        }
        if self.host_routes.len() > MAX_HOST_ROUTES {
            return Err(Error::invalid(format!(
                "Number of host routes exceeds the limit {MAX_HOST_ROUTES}."
            )));
        }
        Ok(())
    }

    /// Refuses a subnet whose CIDR overlaps one of `others` (the network's other subnets).
    pub fn check_overlap(&self, others: &[Subnet]) -> Result<()> {
        for other in others.iter().filter(|o| o.id != self.id) {
            if other.cidr.contains(&self.cidr.network())
                || self.cidr.contains(&other.cidr.network())
            {
                return Err(Error::invalid(format!(
                    "Invalid input for operation: Requested subnet with cidr: {} for network: {} overlaps with another subnet.",
                    self.cidr, self.network_id
                )));
            }
        }
        Ok(())
    }
}

/// Whether `ip` is in `net` and neither its network nor its broadcast address.
pub(crate) fn is_host(net: Ipv4Net, ip: Ipv4Addr) -> bool {
    net.contains(&ip) && ip != net.network() && ip != net.broadcast()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(cidr: &str) -> Subnet {
        let now = Utc::now();
        Subnet {
            id: SubnetId::new(),
            network_id: NetworkId::new(),
            project_id: ProjectId::new(),
            name: String::new(),
            description: String::new(),
            cidr: Subnet::parse_cidr(cidr).unwrap(),
            gateway_ip: Some("10.0.0.1".parse().unwrap()),
            enable_dhcp: true,
            allocation_pools: vec![],
            dns_nameservers: vec![],
            host_routes: vec![],
            revision_number: 1,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn validate_when_no_pools_then_every_host_but_the_gateway() {
        let mut s = subnet("10.0.0.0/29");

        s.validate().unwrap();

        assert_eq!(
            s.allocation_pools,
            vec![IpRange::new(
                "10.0.0.2".parse().unwrap(),
                "10.0.0.6".parse().unwrap()
            )]
        );
    }

    #[test]
    fn parse_cidr_when_host_bits_then_invalid() {
        let err = Subnet::parse_cidr("10.0.0.1/24").unwrap_err();

        assert!(err.to_string().contains("10.0.0.0/24"), "{err}");
    }

    #[test]
    fn check_overlap_when_inside_another_then_invalid() {
        let a = subnet("10.0.0.0/24");
        let mut b = subnet("10.0.0.128/25");
        b.network_id = a.network_id;

        let err = b.check_overlap(std::slice::from_ref(&a)).unwrap_err();

        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    }

    #[test]
    fn validate_when_gateway_in_pool_then_conflict() {
        let mut s = subnet("10.0.0.0/24");
        s.allocation_pools = vec![IpRange::new(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.9".parse().unwrap(),
        )];

        let err = s.validate().unwrap_err();

        assert_eq!(err.kind(), crate::ErrorKind::Conflict);
    }
}
