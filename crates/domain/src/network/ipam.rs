//! IP address management: allocation pools and the first free address in them.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// An inclusive range of addresses (Neutron's `allocation_pools` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl IpRange {
    pub fn new(start: Ipv4Addr, end: Ipv4Addr) -> Self {
        Self { start, end }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }

    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// Every host address of `net` except `gateway`, as at most two ranges.
    pub fn hosts_except(net: Ipv4Net, gateway: Option<Ipv4Addr>) -> Vec<IpRange> {
        let first = u32::from(net.network()) + 1;
        let last = u32::from(net.broadcast()) - 1;
        if first > last {
            return vec![];
        }
        let whole = IpRange::new(first.into(), last.into());
        match gateway.filter(|gw| whole.contains(*gw)).map(u32::from) {
            None => vec![whole],
            Some(gw) => {
                let mut out = vec![];
                if gw > first {
                    out.push(IpRange::new(first.into(), (gw - 1).into()));
                }
                if gw < last {
                    out.push(IpRange::new((gw + 1).into(), last.into()));
                }
                out
            }
        }
    }
}

/// The lowest address of `pools` not in `used`.
pub fn first_free(pools: &[IpRange], used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    pools.iter().find_map(|pool| {
        (u32::from(pool.start)..=u32::from(pool.end))
            .map(Ipv4Addr::from)
            .find(|ip| !used.contains(ip))
    })
}

/// A random MAC under Neutron's default base `fa:16:3e` (locally administered, unicast).
pub fn random_mac() -> String {
    let mut rng = rand::thread_rng();
    format!(
        "fa:16:3e:{:02x}:{:02x}:{:02x}",
        rng.gen::<u8>(),
        rng.gen::<u8>(),
        rng.gen::<u8>()
    )
}

/// Checks and normalises a MAC address given by a user (lower case, colons).
pub fn parse_mac(text: &str) -> crate::Result<String> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    let valid = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    let first = parts.first().and_then(|p| u8::from_str_radix(p, 16).ok());
    match (valid, first) {
        (true, Some(b)) if b & 1 == 0 && text != "00:00:00:00:00:00" => {
            Ok(parts.join(":").to_ascii_lowercase())
        }
        _ => Err(crate::Error::invalid(format!(
            "Invalid input for mac_address. Reason: '{text}' is not a valid unicast MAC address."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_free_when_start_used_then_next() {
        let pools = [IpRange::new(
            "10.0.0.2".parse().unwrap(),
            "10.0.0.4".parse().unwrap(),
        )];
        let used: HashSet<Ipv4Addr> = ["10.0.0.2".parse().unwrap()].into();

        assert_eq!(first_free(&pools, &used), Some("10.0.0.3".parse().unwrap()));
    }

    #[test]
    fn parse_mac_when_multicast_then_invalid() {
        assert!(parse_mac("01:00:5e:00:00:01").is_err());
        assert_eq!(parse_mac("FA:16:3E:00:00:01").unwrap(), "fa:16:3e:00:00:01");
    }
}
