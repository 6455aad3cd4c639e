//! Snapstack's network data plane on one host: what Neutron's linuxbridge, DHCP and L3
//! agents do, as one idempotent [`NetworkPlane::apply`] of a [`HostPlan`].
//!
//! This crate knows nothing of the database or the API. The layer above computes the
//! whole desired state of this host (networks, their subnets and DHCP, the ports bound
//! here with their resolved security-group rules, routers and floating IPs) and calls
//! `apply`; the plane converges: it creates what is missing, changes what differs and
//! removes what it owns and the plan does not name. Calling it again with the same plan
//! does nothing; calling it with an empty plan leaves nothing behind but the host
//! namespace itself ([`NetworkPlane::teardown`] removes that too).
//!
//! # Layout (everything inside namespaces the plane owns; the host's own interfaces are never touched)
//!
//! ```text
//! netns <ns>                              the host namespace; QEMU runs here (its taps are here)
//!   brq<net[..11]>                        a Linux bridge per network
//!   tap<port[..11]>                       per port, plugged into its network's bridge:
//!                                           a VM port: a persistent tap QEMU opens by name
//!                                           a DHCP or router port: the bridge end of a veth pair
//!   nftables: table bridge snapstack      anti-spoofing (MAC, IP, ARP) per VM port, port marks
//!             table inet snapstack        security groups, stateful (conntrack through br_netfilter)
//! netns <ns>-dhcp-<net>                   per network with a DHCP-enabled subnet
//!   ns-<port[..11]>                       the DHCP port's addresses; dnsmasq serves the subnets
//! netns <ns>-router-<router>              per router; ip_forward on
//!   qr-<port[..11]>                       an interface per subnet it joins
//!   qg-<port[..11]>                       its gateway on an external network; SNAT, floating IPs (DNAT)
//! ```
//!
//! Names derive from the ids, so a plan applied after a crash or a restart of the service
//! finds what an earlier apply made. Device names stay within Linux's 15 characters.
//!
//! [`LinuxPlane`] needs root and `ip` (iproute2), `nft` (nftables), `sysctl` (procps) and
//! `dnsmasq` (dnsmasq-base); the port-security design (why a bridge table *and* an inet
//! table, and the packet marks between them) is in `linux/firewall.rs`. Its tests
//! (`tests/`) run on real namespaces and skip without root.

mod linux;
mod names;
mod plan;

pub use linux::LinuxPlane;
pub use names::{
    bridge_name, dhcp_device_name, router_gateway_name, router_interface_name, tap_name,
};
pub use plan::{
    DhcpHost, DhcpPlan, Firewall, FloatingIpPlan, HostPlan, NetworkPlan, PortPlan, Protocol,
    Remote, RouterGateway, RouterInterface, RouterPlan, Rule, SubnetPlan,
};

use async_trait::async_trait;

/// Errors of the data plane: a command that failed, with what it printed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plan itself is inconsistent (e.g. a port on a network the plan does not have).
    #[error("invalid network plan: {0}")]
    InvalidPlan(String),
    /// A tool (`ip`, `nft`, `dnsmasq`, …) failed or could not be run.
    #[error("{command}: {message}")]
    Command { command: String, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Makes a host's virtual networks real. Implementations: [`LinuxPlane`] and
/// [`FakePlane`].
#[async_trait]
pub trait NetworkPlane: Send + Sync {
    /// Converges this host onto `plan` (see the crate header). Idempotent.
    async fn apply(&self, plan: &HostPlan) -> Result<()>;

    /// Removes everything the plane owns, the host namespace included.
    async fn teardown(&self) -> Result<()>;

    /// The namespace VMs must run in so that QEMU finds their taps by name.
    fn vm_netns(&self) -> &str;
}

/// An in-memory plane for the unit tests of the layers above: it keeps the last plan.
#[derive(Debug, Default)]
pub struct FakePlane {
    applied: std::sync::Mutex<Option<HostPlan>>,
}

impl FakePlane {
    pub fn new() -> Self {
        Self::default()
    }

    /// The plan of the last successful `apply` (`None` before any, or after `teardown`).
    pub fn applied(&self) -> Option<HostPlan> {
        self.applied.lock().unwrap().clone()
    }
}

#[async_trait]
impl NetworkPlane for FakePlane {
    async fn apply(&self, plan: &HostPlan) -> Result<()> {
        plan.validate()?;
        *self.applied.lock().unwrap() = Some(plan.clone());
        Ok(())
    }

    async fn teardown(&self) -> Result<()> {
        *self.applied.lock().unwrap() = None;
        Ok(())
    }

    fn vm_netns(&self) -> &str {
        "fake"
    }
}
