//! Networking (Neutron semantics): networks, subnets, ports and security groups in the
//! store, made real on this host by a [`netplane::NetworkPlane`].
//!
//! Every change is written to the store first; then the whole host plan is computed
//! from the records ([`plan`]) and applied, one apply at a time (`net_lock`). The plane
//! converges, so an apply that failed or was cut short by a crash is repaired by the
//! next one — at start-up ([`Cloud::reconcile`]) at the latest — and a record deleted
//! takes its bridge, tap, DHCP server and rules with it.

mod floating_ips;
mod networks;
pub(crate) mod nova;
mod plan;
mod ports;
mod routers;
mod security_groups;
mod subnets;

use domain::identity::Caller;
use domain::network::{Network, Port};
use domain::{Error, NetworkId, Result};

pub use floating_ips::NewFloatingIp;
pub use networks::{NetworkChanges, NewNetwork};
pub use nova::{NicRequest, ServerAddress, ServerNetworks};
pub use ports::{FixedIpRequest, NewPort, PortChanges};
pub use routers::{
    GatewayRequest, InterfaceRequest, NewRouter, RouterChanges, RouterInterfaceInfo,
};
pub use security_groups::{NewSecurityGroup, NewSecurityGroupRule};
pub use subnets::{NewSubnet, SubnetChanges};

use crate::Cloud;

/// The `device_owner` of a server's ports.
pub const COMPUTE_OWNER: &str = "compute:nova";

impl Cloud {
    /// A network the caller may see (own, shared or external; any for admins), or 404.
    pub async fn network(&self, caller: &Caller, id: &str) -> Result<Network> {
        let nid: NetworkId = id.parse().map_err(|_| network_not_found(id))?;
        let network = self
            .store
            .network(nid)
            .await
            .map_err(|_| network_not_found(id))?;
        if caller.is_admin() || network.visible_to(caller.project_id) {
            Ok(network)
        } else {
            Err(network_not_found(id))
        }
    }

    /// Networks the caller may see.
    pub async fn networks(&self, caller: &Caller) -> Result<Vec<Network>> {
        caller.require(domain::identity::Role::Reader, "list networks")?;
        let all = self.store.networks().await?;
        Ok(all
            .into_iter()
            .filter(|n| caller.is_admin() || n.visible_to(caller.project_id))
            .collect())
    }

    /// A network the caller may change: its own (any for admins). Visible but not
    /// owned: 403, as Neutron's `admin_or_owner`.
    async fn owned_network(&self, caller: &Caller, id: &str, action: &str) -> Result<Network> {
        let network = self.network(caller, id).await?;
        if !caller.can_see_project(network.project_id) {
            return Err(Error::forbidden(format!(
                "(rule:{action}) is disallowed by policy: network {id} belongs to another project."
            )));
        }
        Ok(network)
    }

    /// Recomputes this host's network plan from the records and applies it. Failures
    /// are logged, not returned: the records stand, and the next apply (at the latest
    /// at start-up) converges.
    pub async fn sync_network(&self) {
        if let Err(e) = self.apply_network_plan().await {
            tracing::warn!(error = %e, "the network data plane did not converge; the next change or restart retries");
        }
    }

    /// Like [`sync_network`](Cloud::sync_network), returning the failure (a server
    /// about to start needs its taps).
    pub(crate) async fn apply_network_plan(&self) -> Result<()> {
        let _one_at_a_time = self.net_lock.lock().await;
        let plan = self.network_plan().await?;
        // Nothing to carry: nothing stays (no namespace is made for a cloud without
        // networks, and the last network takes everything with it).
        let applied = if plan.networks.is_empty() && plan.routers.is_empty() {
            self.plane.teardown().await
        } else {
            self.plane.apply(&plan).await
        };
        applied.map_err(|e| Error::unavailable(format!("The network data plane failed: {e}")))?;
        self.mark_ports_active(&plan).await
    }

    /// Ports wired by the last apply are `ACTIVE`, as Neutron's agents report them.
    async fn mark_ports_active(&self, plan: &netplane::HostPlan) -> Result<()> {
        let wired: std::collections::HashSet<&str> = plan
            .networks
            .iter()
            .flat_map(|n| {
                n.ports
                    .iter()
                    .map(|p| p.id.as_str())
                    .chain(n.dhcp.iter().map(|d| d.port_id.as_str()))
            })
            .chain(plan.routers.iter().flat_map(|r| {
                r.interfaces
                    .iter()
                    .map(|i| i.port_id.as_str())
                    .chain(r.gateway.iter().map(|g| g.port_id.as_str()))
            }))
            .collect();
        for port in self.store.ports().await? {
            let want = if wired.contains(port.id.to_string().as_str()) && port.admin_state_up {
                domain::network::PortStatus::Active
            } else {
                domain::network::PortStatus::Down
            };
            if port.status != want {
                let next = Port {
                    status: want,
                    ..port.clone()
                };
                // A concurrent change wins; the next apply sets the status again.
                let _ = self.store.update_port(&port, &next).await;
            }
        }
        Ok(())
    }
}

fn network_not_found(id: &str) -> Error {
    Error::not_found("Network", id)
}

/// The resources with Neutron quotas, as Neutron names them.
pub const QUOTA_RESOURCES: [&str; 7] = [
    "network",
    "subnet",
    "port",
    "router",
    "floatingip",
    "security_group",
    "security_group_rule",
];

/// Neutron's default quotas (`[quotas]` of neutron.conf).
pub fn default_quota(resource: &str) -> usize {
    match resource {
        "network" | "subnet" => 100,
        "port" => 500,
        "security_group" => 10,
        "security_group_rule" => 100,
        "router" => 10,
        "floatingip" => 50,
        _ => usize::MAX,
    }
}

impl Cloud {
    /// Refuses a new `resource` of `project` over Neutron's default quota (409
    /// OverQuota, as Neutron answers).
    pub(crate) async fn check_network_quota(
        &self,
        project: domain::ProjectId,
        resource: &str,
    ) -> Result<()> {
        let used = self.network_usage(project, resource).await?;
        if used >= default_quota(resource) {
            return Err(Error::conflict(format!(
                "Quota exceeded for resources: ['{resource}']."
            )));
        }
        Ok(())
    }

    /// Neutron's quota of a project: (resource, limit, used). Its own project's for a
    /// member, any for an admin (403 otherwise, as Neutron's `get_quota` policy).
    pub async fn network_quota(
        &self,
        caller: &Caller,
        project: &str,
    ) -> Result<Vec<(&'static str, usize, usize)>> {
        let pid: domain::ProjectId = project
            .parse()
            .map_err(|_| Error::not_found("Project", project))?;
        if !caller.can_see_project(pid) {
            return Err(Error::forbidden("(rule:get_quota) is disallowed by policy"));
        }
        let mut out = Vec::new();
        for resource in QUOTA_RESOURCES {
            out.push((
                resource,
                default_quota(resource),
                self.network_usage(pid, resource).await?,
            ));
        }
        Ok(out)
    }

    async fn network_usage(&self, project: domain::ProjectId, resource: &str) -> Result<usize> {
        let used = match resource {
            "network" => self
                .store
                .networks()
                .await?
                .iter()
                .filter(|n| n.project_id == project)
                .count(),
            "subnet" => self
                .store
                .subnets()
                .await?
                .iter()
                .filter(|s| s.project_id == project)
                .count(),
            "port" => self
                .store
                .ports()
                .await?
                .iter()
                .filter(|p| p.project_id == project)
                .count(),
            "security_group" => self
                .store
                .security_groups()
                .await?
                .iter()
                .filter(|g| g.project_id == project)
                .count(),
            "router" => self
                .store
                .routers()
                .await?
                .iter()
                .filter(|r| r.project_id == project)
                .count(),
            "floatingip" => self
                .store
                .floating_ips()
                .await?
                .iter()
                .filter(|f| f.project_id == project)
                .count(),
            "security_group_rule" => self
                .store
                .security_group_rules()
                .await?
                .iter()
                .filter(|r| r.project_id == project)
                .count(),
            _ => 0,
        };
        Ok(used)
    }
}
