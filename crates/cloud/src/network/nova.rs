//! The compute side of networking: a server's `networks` request becomes ports bound
//! to it on this host; its NICs are those ports; deleting it deletes the ports it made
//! and unbinds the ones it was given.

use std::net::Ipv4Addr;

use chrono::Utc;
use domain::identity::Caller;
use domain::network::{DeviceOwner, Network, Port};
use domain::server::Server;
use domain::{Error, Result, ServerId};

use super::{FixedIpRequest, NewPort, COMPUTE_OWNER};
use crate::Cloud;

/// A server's `networks` (Nova's `networks` of `POST /servers`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ServerNetworks {
    /// `auto`, or no `networks` before 2.37: the one network the project can use, none
    /// if it has none; several is a 409 asking to choose.
    #[default]
    Auto,
    /// `none`: no NIC.
    None,
    /// One NIC per entry, in this order.
    Nics(Vec<NicRequest>),
}

/// One entry of `networks`: a network (optionally with an address) or a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicRequest {
    Network {
        id: String,
        fixed_ip: Option<Ipv4Addr>,
    },
    Port(String),
}

/// A server's NIC as QEMU gets it: a device id, the port's MAC, the tap to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerNic {
    pub id: String,
    pub mac: String,
    pub tap: String,
}

/// A NIC about to be made: a network to make a port on, or a port handed over.
#[derive(Debug, Clone)]
pub(crate) enum CheckedNic {
    New {
        network: Network,
        fixed_ip: Option<Ipv4Addr>,
    },
    Given(Port),
}

impl Cloud {
    /// Checks a `networks` request before the server exists: networks visible, ports
    /// the caller's and free. Returns what to make.
    pub(crate) async fn check_server_networks(
        &self,
        caller: &Caller,
        request: &ServerNetworks,
    ) -> Result<Vec<CheckedNic>> {
        let entries =
            match request {
                ServerNetworks::None => return Ok(vec![]),
                ServerNetworks::Auto => {
                    let usable: Vec<Network> = self
                        .networks(caller)
                        .await?
                        .into_iter()
                        .filter(|n| !n.external)
                        .collect();
                    return match usable.len() {
                    0 => Ok(vec![]),
                    1 => Ok(vec![CheckedNic::New { network: usable[0].clone(), fixed_ip: None }]),
                    _ => Err(Error::conflict(
                        "Multiple possible networks found, use a Network ID to be more specific.",
                    )),
                };
                }
                ServerNetworks::Nics(entries) => entries,
            };
        let mut nics = Vec::new();
        for entry in entries {
            nics.push(match entry {
                NicRequest::Network { id, fixed_ip } => {
                    let network = self
                        .network(caller, id)
                        .await
                        .map_err(|_| Error::invalid(format!("Network {id} could not be found.")))?;
                    if self.store.network_subnets(network.id).await?.is_empty() {
                        return Err(Error::invalid(format!(
                            "Network {id} requires a subnet in order to boot instances on."
                        )));
                    }
                    CheckedNic::New {
                        network,
                        fixed_ip: *fixed_ip,
                    }
                }
                NicRequest::Port(id) => {
                    let port = self
                        .port(caller, id)
                        .await
                        .map_err(|_| Error::invalid(format!("Port {id} could not be found.")))?;
                    if !port.device_id.is_empty() {
                        return Err(Error::conflict(format!("Port {id} is still in use.")));
                    }
                    CheckedNic::Given(port)
                }
            });
        }
        Ok(nics)
    }

    /// Makes or binds the ports of a new server (before its row exists: a failure here
    /// is the user's answer). On failure, what was made is undone.
    pub(crate) async fn allocate_server_ports(
        &self,
        caller: &Caller,
        server: ServerId,
        nics: Vec<CheckedNic>,
        security_groups: &[String],
    ) -> Result<Vec<Port>> {
        let mut made: Vec<Port> = Vec::new();
        for nic in nics {
            let result = match nic {
                // Recorded only: the build applies the plane once before QEMU starts.
                CheckedNic::New { network, fixed_ip } => self
                    .record_port(
                        caller,
                        NewPort {
                            network_id: network.id.to_string(),
                            fixed_ips: fixed_ip.map(|ip| {
                                vec![FixedIpRequest {
                                    subnet_id: None,
                                    ip_address: Some(ip),
                                }]
                            }),
                            security_groups: (!security_groups.is_empty())
                                .then(|| security_groups.to_vec()),
                            ..NewPort::default()
                        },
                    )
                    .await
                    .map(|p| (p, true)),
                CheckedNic::Given(port) => Ok((port, false)),
            };
            let bound = match result {
                Ok((port, made_here)) => self.bind_port(port, server, made_here).await,
                Err(e) => Err(e),
            };
            match bound {
                Ok(port) => made.push(port),
                Err(e) => {
                    self.release_ports(&made).await;
                    return Err(e);
                }
            }
        }
        Ok(made)
    }

    async fn bind_port(&self, port: Port, server: ServerId, made_here: bool) -> Result<Port> {
        let next = Port {
            device_id: server.to_string(),
            device_owner: COMPUTE_OWNER.into(),
            host_id: self.host.to_string(),
            delete_with_device: made_here,
            updated_at: Utc::now(),
            ..port.clone()
        };
        self.store.update_port(&port, &next).await
    }

    /// Start-up repair: ports made for a server whose row never got written (the
    /// service stopped between the two) or that is gone are deleted; ports handed to
    /// such a server are released. Returns a line per port.
    pub(crate) async fn release_orphan_ports(&self) -> Result<Vec<String>> {
        let mut orphans = Vec::new();
        for port in self.store.ports().await? {
            if port.owner() != DeviceOwner::Compute {
                continue;
            }
            let Ok(server) = port.device_id.parse::<ServerId>() else {
                continue;
            };
            let live = match self.store.server(server).await {
                Ok(s) => s.vm_state != domain::server::VmState::Deleted,
                Err(e) if e.kind() == domain::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            if !live {
                orphans.push(port);
            }
        }
        let lines = orphans
            .iter()
            .map(|p| format!("port {} of missing server {} released", p.id, p.device_id))
            .collect();
        if !orphans.is_empty() {
            self.release_ports(&orphans).await;
        }
        Ok(lines)
    }

    /// The server's ports, in the order they were made (its NICs' order).
    pub(crate) async fn server_ports(&self, server: ServerId) -> Result<Vec<Port>> {
        let id = server.to_string();
        Ok(self
            .store
            .ports()
            .await?
            .into_iter()
            .filter(|p| p.device_id == id && p.owner() == DeviceOwner::Compute)
            .collect())
    }

    /// Deletes the ports a server made, unbinds those it was given, and applies.
    pub(crate) async fn release_server_ports(&self, server: ServerId) -> Result<()> {
        let ports = self.server_ports(server).await?;
        self.release_ports(&ports).await;
        Ok(())
    }

    async fn release_ports(&self, ports: &[Port]) {
        for port in ports {
            let result = if port.delete_with_device {
                match self.disassociate_port(port.id).await {
                    Ok(()) => self.store.delete_port(port.id).await,
                    Err(e) => Err(e),
                }
            } else {
                let next = Port {
                    device_id: String::new(),
                    device_owner: String::new(),
                    host_id: String::new(),
                    updated_at: Utc::now(),
                    ..port.clone()
                };
                self.store.update_port(port, &next).await.map(drop)
            };
            if let Err(e) = result {
                tracing::warn!(port = %port.id, error = %e, "could not release a server's port");
            }
        }
        self.sync_network().await;
    }

    /// The NICs QEMU gets for a server: one per port, named after it.
    pub(crate) async fn server_nics(&self, server: &Server) -> Result<Vec<ServerNic>> {
        Ok(self
            .server_ports(server.id)
            .await?
            .iter()
            .map(|p| ServerNic {
                id: format!("nic{}", &p.id.uuid().simple().to_string()[..8]),
                mac: p.mac_address.clone(),
                tap: netplane::tap_name(&p.id.to_string()),
            })
            .collect())
    }

    /// A server's addresses for the compute API's `addresses`, in NIC order: fixed
    /// ones, then the floating IPs translated to them.
    pub async fn server_addresses(&self, server: ServerId) -> Result<Vec<ServerAddress>> {
        let ports = self.server_ports(server).await?;
        if ports.is_empty() {
            return Ok(vec![]);
        }
        let networks = self.store.networks().await?;
        let fips = self.store.floating_ips().await?;
        let mut out = Vec::new();
        for port in &ports {
            let network = networks
                .iter()
                .find(|n| n.id == port.network_id)
                .map(|n| n.name.clone())
                .unwrap_or_default();
            for ip in port.ips() {
                out.push(ServerAddress {
                    network: network.clone(),
                    addr: ip,
                    mac: port.mac_address.clone(),
                    floating: false,
                });
                for fip in fips
                    .iter()
                    .filter(|f| f.port_id == Some(port.id) && f.fixed_ip_address == Some(ip))
                {
                    out.push(ServerAddress {
                        network: network.clone(),
                        addr: fip.floating_ip_address,
                        mac: port.mac_address.clone(),
                        floating: true,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The names of the security groups of a server's ports.
    pub async fn server_security_groups(&self, server: ServerId) -> Result<Vec<String>> {
        let ports = self.server_ports(server).await?;
        let groups = self.store.security_groups().await?;
        let mut names: Vec<String> = Vec::new();
        for port in &ports {
            for g in groups
                .iter()
                .filter(|g| port.security_groups.contains(&g.id))
            {
                if !names.contains(&g.name) {
                    names.push(g.name.clone());
                }
            }
        }
        Ok(names)
    }
}

/// One entry of a server's `addresses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub network: String,
    pub addr: Ipv4Addr,
    pub mac: String,
    /// A floating IP (`OS-EXT-IPS:type` floating), else fixed.
    pub floating: bool,
}
