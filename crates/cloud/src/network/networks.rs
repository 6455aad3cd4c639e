//! Network create, update and delete.

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::network::{validate_text, DeviceOwner, Network, DEFAULT_MTU};
use domain::{Error, NetworkId, ProjectId, Result};

use crate::Cloud;

/// What `POST /v2.0/networks` asks for (absent fields take Neutron's defaults).
#[derive(Debug, Clone, Default)]
pub struct NewNetwork {
    pub name: String,
    pub description: String,
    pub admin_state_up: Option<bool>,
    pub shared: Option<bool>,
    pub external: Option<bool>,
    pub mtu: Option<u32>,
    pub port_security_enabled: Option<bool>,
    /// Another project (admins only).
    pub project_id: Option<String>,
}

/// What `PUT /v2.0/networks/{id}` changes.
#[derive(Debug, Clone, Default)]
pub struct NetworkChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub shared: Option<bool>,
    pub external: Option<bool>,
    pub mtu: Option<u32>,
    pub port_security_enabled: Option<bool>,
}

/// Refuses an admin-only attribute to a non-admin (Neutron's 403 for `shared`,
/// `router:external`).
pub(crate) fn admin_only(caller: &Caller, set: bool, rule: &str) -> Result<()> {
    if set && !caller.is_admin() {
        return Err(Error::forbidden(format!(
            "(rule:{rule}) is disallowed by policy"
        )));
    }
    Ok(())
}

/// The project a new resource belongs to: the caller's, or (admins) the one named.
pub(crate) fn owner_project(caller: &Caller, project_id: Option<&str>) -> Result<ProjectId> {
    match project_id {
        Some(p) if Some(p) != caller.project_id.map(|c| c.to_string()).as_deref() => {
            if !caller.is_admin() {
                return Err(Error::forbidden(
                    "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin privileges",
                ));
            }
            p.parse().map_err(|_| {
                Error::invalid(format!(
                    "Invalid input for project_id: '{p}' is not a valid project id."
                ))
            })
        }
        _ => caller.project(),
    }
}

fn check_mtu(mtu: u32) -> Result<()> {
    if !(68..=DEFAULT_MTU).contains(&mtu) {
        return Err(Error::invalid(format!(
            "Invalid input for operation: Requested MTU {mtu} is not within 68 and the maximum {DEFAULT_MTU} this host's networks carry."
        )));
    }
    Ok(())
}

impl Cloud {
    pub async fn create_network(&self, caller: &Caller, new: NewNetwork) -> Result<Network> {
        caller.require(Role::Member, "create networks")?;
        admin_only(caller, new.shared == Some(true), "create_network:shared")?;
        admin_only(
            caller,
            new.external.is_some(),
            "create_network:router:external",
        )?;
        validate_text("name", &new.name)?;
        validate_text("description", &new.description)?;
        let mtu = new.mtu.unwrap_or(DEFAULT_MTU);
        check_mtu(mtu)?;
        let project_id = owner_project(caller, new.project_id.as_deref())?;
        self.check_network_quota(project_id, "network").await?;
        let now = Utc::now();
        let network = Network {
            id: NetworkId::new(),
            project_id,
            name: new.name,
            description: new.description,
            admin_state_up: new.admin_state_up.unwrap_or(true),
            shared: new.shared.unwrap_or(false),
            external: new.external.unwrap_or(false),
            mtu,
            port_security_enabled: new.port_security_enabled.unwrap_or(true),
            revision_number: 1,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_network(&network).await?;
        self.sync_network().await;
        Ok(network)
    }

    pub async fn update_network(
        &self,
        caller: &Caller,
        id: &str,
        changes: NetworkChanges,
    ) -> Result<Network> {
        caller.require(Role::Member, "update networks")?;
        let prev = self.owned_network(caller, id, "update_network").await?;
        admin_only(caller, changes.shared.is_some(), "update_network:shared")?;
        admin_only(
            caller,
            changes.external.is_some(),
            "update_network:router:external",
        )?;
        let mut next = prev.clone();
        if let Some(name) = changes.name {
            validate_text("name", &name)?;
            next.name = name;
        }
        if let Some(description) = changes.description {
            validate_text("description", &description)?;
            next.description = description;
        }
        if let Some(mtu) = changes.mtu {
            check_mtu(mtu)?;
            next.mtu = mtu;
        }
        if changes.shared == Some(false) && prev.shared {
            let others = self
                .store
                .network_ports(prev.id)
                .await?
                .into_iter()
                .any(|p| p.project_id != prev.project_id && !p.owner().is_network_owned());
            if others {
                return Err(Error::conflict(format!(
                    "Unable to reconfigure sharing settings for network {id}. Multiple tenants are using it."
                )));
            }
        }
        next.admin_state_up = changes.admin_state_up.unwrap_or(next.admin_state_up);
        next.shared = changes.shared.unwrap_or(next.shared);
        next.external = changes.external.unwrap_or(next.external);
        next.port_security_enabled = changes
            .port_security_enabled
            .unwrap_or(next.port_security_enabled);
        next.updated_at = Utc::now();
        let stored = self.store.update_network(&prev, &next).await?;
        self.sync_network().await;
        Ok(stored)
    }

    /// Deletes a network with its subnets and DHCP port; a port of anyone else's
    /// on it is a 409 (NetworkInUse).
    pub async fn delete_network(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(Role::Member, "delete networks")?;
        let network = self.owned_network(caller, id, "delete_network").await?;
        let ports = self.store.network_ports(network.id).await?;
        if ports.iter().any(|p| p.owner() != DeviceOwner::Dhcp) {
            return Err(Error::conflict(format!(
                "Unable to complete operation on network {id}. There are one or more ports still in use on the network."
            )));
        }
        for port in ports {
            self.store.delete_port(port.id).await?;
        }
        self.store.delete_network(network.id).await?;
        self.sync_network().await;
        Ok(())
    }
}
