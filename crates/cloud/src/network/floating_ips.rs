//! Floating IPs: an address on an external network (held by a `network:floatingip`
//! port), translated by a router to a fixed address of a port behind it.

use std::net::Ipv4Addr;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::network::{validate_text, FloatingIp, Port};
use domain::{Error, FloatingIpId, PortId, Result};

use super::networks::{admin_only, owner_project};
use super::FixedIpRequest;
use crate::Cloud;

/// What `POST /v2.0/floatingips` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewFloatingIp {
    pub floating_network_id: String,
    pub floating_ip_address: Option<Ipv4Addr>,
    pub subnet_id: Option<String>,
    pub port_id: Option<String>,
    pub fixed_ip_address: Option<Ipv4Addr>,
    pub description: String,
    pub project_id: Option<String>,
}

impl Cloud {
    pub async fn floating_ip(&self, caller: &Caller, id: &str) -> Result<FloatingIp> {
        let not_found = || Error::not_found("Floating IP", id);
        let fid: FloatingIpId = id.parse().map_err(|_| not_found())?;
        let fip = self.store.floating_ip(fid).await.map_err(|_| not_found())?;
        if !caller.can_see_project(fip.project_id) {
            return Err(not_found());
        }
        Ok(fip)
    }

    pub async fn floating_ips(&self, caller: &Caller) -> Result<Vec<FloatingIp>> {
        caller.require(Role::Reader, "list floating IPs")?;
        Ok(self
            .store
            .floating_ips()
            .await?
            .into_iter()
            .filter(|f| caller.can_see_project(f.project_id))
            .collect())
    }

    pub async fn create_floating_ip(
        &self,
        caller: &Caller,
        new: NewFloatingIp,
    ) -> Result<FloatingIp> {
        caller.require(Role::Member, "create floating IPs")?;
        admin_only(
            caller,
            new.floating_ip_address.is_some(),
            "create_floatingip:floating_ip_address",
        )?;
        validate_text("description", &new.description)?;
        let project_id = owner_project(caller, new.project_id.as_deref())?;
        let network = self.network(caller, &new.floating_network_id).await?;
        if !network.external {
            return Err(Error::invalid(format!(
                "Bad floatingip request: Network {} is not a valid external network.",
                network.id
            )));
        }
        self.check_network_quota(project_id, "floatingip").await?;
        let id = FloatingIpId::new();
        let wanted = match (new.subnet_id, new.floating_ip_address) {
            (None, None) => None,
            (subnet_id, ip_address) => Some(vec![FixedIpRequest {
                subnet_id,
                ip_address,
            }]),
        };
        let port = self
            .network_owned_port(&network, "network:floatingip", &id.to_string(), wanted)
            .await?;
        let now = Utc::now();
        let mut fip = FloatingIp {
            id,
            project_id,
            description: new.description,
            floating_network_id: network.id,
            floating_ip_address: port.fixed_ips[0].ip_address,
            floating_port_id: port.id,
            port_id: None,
            fixed_ip_address: None,
            router_id: None,
            revision_number: 1,
            created_at: now,
            updated_at: now,
        };
        if let Some(port_id) = new.port_id {
            if let Err(e) = self
                .associate(caller, &mut fip, &port_id, new.fixed_ip_address)
                .await
            {
                let _ = self.store.delete_port(port.id).await;
                return Err(e);
            }
        }
        if let Err(e) = self.store.insert_floating_ip(&fip).await {
            let _ = self.store.delete_port(port.id).await;
            return Err(e);
        }
        self.sync_network().await;
        Ok(fip)
    }

    /// Fills `fip`'s association with `port_id` (and which of its addresses) and the
    /// router that joins them.
    async fn associate(
        &self,
        caller: &Caller,
        fip: &mut FloatingIp,
        port_id: &str,
        fixed_ip: Option<Ipv4Addr>,
    ) -> Result<()> {
        let port: Port = self.port(caller, port_id).await?;
        let fixed = match fixed_ip {
            Some(ip) => port
                .fixed_ips
                .iter()
                .find(|f| f.ip_address == ip)
                .copied()
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "Bad floatingip request: Port {port_id} does not have fixed ip {ip}."
                    ))
                })?,
            None => *port.fixed_ips.first().ok_or_else(|| {
                Error::invalid(format!(
                    "Bad floatingip request: Port {port_id} does not have any IPv4 address."
                ))
            })?,
        };
        let router = self
            .router_for(fip.floating_network_id, fixed.subnet_id)
            .await?
            .ok_or_else(|| {
                Error::not_found_message(format!(
                    "External network {} is not reachable from subnet {}.  Therefore, cannot associate Port {port_id} with a Floating IP.",
                    fip.floating_network_id, fixed.subnet_id
                ))
            })?;
        fip.port_id = Some(port.id);
        fip.fixed_ip_address = Some(fixed.ip_address);
        fip.router_id = Some(router);
        Ok(())
    }

    /// `port_id: Some(Some(p))` associates, `Some(None)` disassociates.
    pub async fn update_floating_ip(
        &self,
        caller: &Caller,
        id: &str,
        port_id: Option<Option<String>>,
        fixed_ip: Option<Ipv4Addr>,
        description: Option<String>,
    ) -> Result<FloatingIp> {
        caller.require(Role::Member, "update floating IPs")?;
        let prev = self.floating_ip(caller, id).await?;
        let mut next = prev.clone();
        if let Some(description) = description {
            validate_text("description", &description)?;
            next.description = description;
        }
        match port_id {
            Some(Some(port)) => self.associate(caller, &mut next, &port, fixed_ip).await?,
            Some(None) => {
                next.port_id = None;
                next.fixed_ip_address = None;
                next.router_id = None;
            }
            None => {}
        }
        next.updated_at = Utc::now();
        let stored = self.store.update_floating_ip(&prev, &next).await?;
        self.sync_network().await;
        Ok(stored)
    }

    pub async fn delete_floating_ip(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(Role::Member, "delete floating IPs")?;
        let fip = self.floating_ip(caller, id).await?;
        self.store.delete_floating_ip(fip.id).await?;
        let _ = self.store.delete_port(fip.floating_port_id).await;
        self.sync_network().await;
        Ok(())
    }

    /// Disassociates the floating IPs of a port about to go (Neutron does so on port delete).
    pub(crate) async fn disassociate_port(&self, port: PortId) -> Result<()> {
        for fip in self.store.floating_ips().await? {
            if fip.port_id == Some(port) {
                let next = FloatingIp {
                    port_id: None,
                    fixed_ip_address: None,
                    router_id: None,
                    updated_at: Utc::now(),
                    ..fip.clone()
                };
                self.store.update_floating_ip(&fip, &next).await?;
            }
        }
        Ok(())
    }
}
