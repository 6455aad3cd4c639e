//! Request bodies, typed. Unknown attributes are refused (400), as Neutron does.

use std::net::Ipv4Addr;

use domain::network::{HostRoute, IpRange};
use domain::Error;
use ipnet::Ipv4Net;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use cloud::network::FixedIpRequest;

/// The object under `key` of a request body, as `T`.
pub(crate) fn resource<T: DeserializeOwned>(body: Value, key: &str) -> Result<T, Error> {
    let Value::Object(mut map) = body else {
        return Err(Error::invalid("The request body must be a JSON object."));
    };
    let inner = map
        .remove(key)
        .ok_or_else(|| Error::invalid(format!("Resource body required: '{key}' is missing.")))?;
    if !inner.is_object() {
        return Err(Error::invalid(format!("'{key}' must be an object.")));
    }
    serde_json::from_value(inner)
        .map_err(|e| Error::invalid(format!("Invalid input for operation: {e}.")))
}

/// Present (even as `null`) → `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkBody {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub shared: Option<bool>,
    #[serde(rename = "router:external")]
    pub external: Option<bool>,
    pub mtu: Option<u32>,
    pub port_security_enabled: Option<bool>,
    pub project_id: Option<String>,
    pub tenant_id: Option<String>,
    /// Accepted and ignored: one availability zone.
    #[allow(dead_code)]
    pub availability_zone_hints: Option<Vec<String>>,
}

#[derive(Deserialize)]
pub(crate) struct PoolBody {
    start: Ipv4Addr,
    end: Ipv4Addr,
}

#[derive(Deserialize)]
pub(crate) struct RouteBody {
    destination: Ipv4Net,
    nexthop: Ipv4Addr,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubnetBody {
    pub network_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub cidr: Option<String>,
    pub ip_version: Option<u8>,
    #[serde(default, deserialize_with = "present")]
    pub gateway_ip: Option<Option<String>>,
    pub enable_dhcp: Option<bool>,
    pub allocation_pools: Option<Vec<PoolBody>>,
    pub dns_nameservers: Option<Vec<String>>,
    pub host_routes: Option<Vec<RouteBody>>,
    pub project_id: Option<String>,
    pub tenant_id: Option<String>,
    #[allow(dead_code)]
    pub service_types: Option<Vec<String>>,
}

impl SubnetBody {
    pub fn pools(&self) -> Option<Vec<IpRange>> {
        self.allocation_pools
            .as_ref()
            .map(|p| p.iter().map(|p| IpRange::new(p.start, p.end)).collect())
    }

    pub fn routes(&self) -> Option<Vec<HostRoute>> {
        self.host_routes.as_ref().map(|r| {
            r.iter()
                .map(|r| HostRoute {
                    destination: r.destination,
                    nexthop: r.nexthop,
                })
                .collect()
        })
    }

    pub fn dns(&self) -> Result<Option<Vec<Ipv4Addr>>, Error> {
        self.dns_nameservers
            .as_ref()
            .map(|list| {
                list.iter()
                    .map(|d| {
                        d.parse().map_err(|_| {
                            Error::invalid(format!(
                                "Invalid input for dns_nameservers. Reason: '{d}' is not a valid nameserver."
                            ))
                        })
                    })
                    .collect()
            })
            .transpose()
    }

    /// `Some(None)`: `gateway_ip: null`.
    pub fn gateway(&self) -> Result<Option<Option<Ipv4Addr>>, Error> {
        match &self.gateway_ip {
            None => Ok(None),
            Some(None) => Ok(Some(None)),
            Some(Some(g)) => g.parse().map(|ip| Some(Some(ip))).map_err(|_| {
                Error::invalid(format!(
                    "Invalid input for gateway_ip. Reason: '{g}' is not a valid IP address."
                ))
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FixedIpBody {
    subnet_id: Option<String>,
    ip_address: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PairBody {
    ip_address: String,
    mac_address: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortBody {
    pub network_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub mac_address: Option<String>,
    pub fixed_ips: Option<Vec<FixedIpBody>>,
    pub device_id: Option<String>,
    pub device_owner: Option<String>,
    pub port_security_enabled: Option<bool>,
    pub security_groups: Option<Vec<String>>,
    pub allowed_address_pairs: Option<Vec<PairBody>>,
    #[serde(rename = "binding:host_id")]
    pub host_id: Option<String>,
    #[serde(rename = "binding:vnic_type")]
    pub vnic_type: Option<String>,
    #[allow(dead_code)]
    #[serde(rename = "binding:profile")]
    pub profile: Option<Value>,
    pub project_id: Option<String>,
    pub tenant_id: Option<String>,
}

impl PortBody {
    pub fn fixed_ips(&self) -> Result<Option<Vec<FixedIpRequest>>, Error> {
        self.fixed_ips.as_deref().map(fixed_ip_requests).transpose()
    }

    pub fn pairs(&self) -> Result<Option<Vec<domain::network::AddressPair>>, Error> {
        self.allowed_address_pairs
            .as_ref()
            .map(|list| {
                list.iter()
                    .map(|p| {
                        let prefix = p
                            .ip_address
                            .parse::<Ipv4Net>()
                            .or_else(|_| p.ip_address.parse::<Ipv4Addr>().map(Ipv4Net::from))
                            .map_err(|_| {
                                Error::invalid(format!(
                                    "Invalid input for allowed_address_pairs. Reason: '{}' is not a valid IPv4 address or prefix.",
                                    p.ip_address
                                ))
                            })?;
                        let mac = p
                            .mac_address
                            .as_deref()
                            .map(domain::network::parse_mac)
                            .transpose()?;
                        Ok((prefix, mac))
                    })
                    .collect()
            })
            .transpose()
    }

    pub fn check_vnic(&self) -> Result<(), Error> {
        match self.vnic_type.as_deref() {
            None | Some("normal") => Ok(()),
            Some(other) => Err(Error::invalid(format!(
                "Invalid input for binding:vnic_type. Reason: '{other}' is not supported: only 'normal'."
            ))),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecurityGroupBody {
    pub name: Option<String>,
    pub description: Option<String>,
    pub stateful: Option<bool>,
    pub project_id: Option<String>,
    pub tenant_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleBody {
    pub security_group_id: Option<String>,
    pub direction: Option<String>,
    pub ethertype: Option<String>,
    pub protocol: Option<Value>,
    pub port_range_min: Option<Value>,
    pub port_range_max: Option<Value>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub description: Option<String>,
    pub project_id: Option<String>,
    pub tenant_id: Option<String>,
}

/// A port number given as a number or a numeric string (0–65535).
pub(crate) fn port_number(value: &Option<Value>, field: &str) -> Result<Option<u16>, Error> {
    let bad = || {
        Error::invalid(format!(
            "Invalid value for port {field}: it must be an integer from 0 to 65535."
        ))
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .map(Some)
            .ok_or_else(bad),
        Some(Value::String(s)) => s.parse::<u16>().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// A protocol given as a name, a number or a numeric string.
pub(crate) fn protocol(value: &Option<Value>) -> Result<Option<String>, Error> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(Error::invalid(format!("Invalid protocol {other}."))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayBody {
    pub network_id: Option<String>,
    pub enable_snat: Option<bool>,
    pub external_fixed_ips: Option<Vec<FixedIpBody>>,
}

impl GatewayBody {
    /// `None`: the gateway is cleared (`{}` or `null`).
    pub fn request(&self) -> Result<Option<cloud::network::GatewayRequest>, Error> {
        let Some(network_id) = self.network_id.clone() else {
            return Ok(None);
        };
        let fixed_ips = self
            .external_fixed_ips
            .as_ref()
            .map(|list| fixed_ip_requests(list))
            .transpose()?;
        Ok(Some(cloud::network::GatewayRequest {
            network_id,
            enable_snat: self.enable_snat,
            fixed_ips,
        }))
    }
}

fn fixed_ip_requests(list: &[FixedIpBody]) -> Result<Vec<FixedIpRequest>, Error> {
    list.iter()
        .map(|f| {
            let ip_address = f
                .ip_address
                .as_deref()
                .map(|ip| {
                    ip.parse().map_err(|_| {
                        Error::invalid(format!("Invalid input for fixed_ips. Reason: '{ip}' is not a valid IPv4 address."))
                    })
                })
                .transpose()?;
            Ok(FixedIpRequest { subnet_id: f.subnet_id.clone(), ip_address })
        })
        .collect()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouterBody {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub external_gateway_info: Option<Option<GatewayBody>>,
    pub routes: Option<Vec<RouteBody>>,
    pub project_id: Option<String>,
    pub tenant_id: Option<String>,
    #[allow(dead_code)]
    pub availability_zone_hints: Option<Vec<String>>,
}

impl RouterBody {
    pub fn routes(&self) -> Option<Vec<HostRoute>> {
        self.routes.as_ref().map(|r| {
            r.iter()
                .map(|r| HostRoute {
                    destination: r.destination,
                    nexthop: r.nexthop,
                })
                .collect()
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct InterfaceBody {
    pub subnet_id: Option<String>,
    pub port_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct FloatingIpBody {
    pub floating_network_id: Option<String>,
    pub floating_ip_address: Option<Ipv4Addr>,
    pub subnet_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub port_id: Option<Option<String>>,
    pub fixed_ip_address: Option<Ipv4Addr>,
    pub description: Option<String>,
    pub project_id: Option<String>,
    pub tenant_id: Option<String>,
}
