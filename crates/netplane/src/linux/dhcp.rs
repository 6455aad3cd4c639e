//! DHCP per network: a `dnsmasq` in `<ns>-dhcp-<net>` serving static leases only (an
//! address goes only to the MAC of the port owning it, as Neutron's DHCP agent does).
//!
//! Its files live in the plane's state directory as `dhcp-<net>.{pid,hosts,opts,args,
//! leases,log}`. Hosts and options are files dnsmasq re-reads on SIGHUP, so a port coming
//! or going costs a signal; the command line (interface, ranges) is kept in `.args`, and
//! a change of it (a subnet added or removed) restarts the process. A pid is trusted only
//! when its command line names our pid file (pids are reused).

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cmd;
use crate::names::dhcp_device_name;
use crate::plan::{DhcpPlan, NetworkPlan};
use crate::{Error, Result};

/// The files of the DHCP server of one network.
pub(crate) struct DhcpFiles {
    pub pid: PathBuf,
    pub hosts: PathBuf,
    pub opts: PathBuf,
    pub args: PathBuf,
    pub leases: PathBuf,
    pub log: PathBuf,
}

impl DhcpFiles {
    pub(crate) fn new(state_dir: &Path, network_id: &str) -> Self {
        let file = |ext: &str| state_dir.join(format!("dhcp-{network_id}.{ext}"));
        Self {
            pid: file("pid"),
            hosts: file("hosts"),
            opts: file("opts"),
            args: file("args"),
            leases: file("leases"),
            log: file("log"),
        }
    }

    fn all(&self) -> [&PathBuf; 6] {
        [
            &self.pid,
            &self.hosts,
            &self.opts,
            &self.args,
            &self.leases,
            &self.log,
        ]
    }
}

/// The networks whose DHCP server has a pid file in `state_dir`.
pub(crate) fn networks_with_servers(state_dir: &Path) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let entries = match std::fs::read_dir(state_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_prefix("dhcp-")
            .and_then(|n| n.strip_suffix(".pid"))
        {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

/// `--dhcp-hostsfile`: `mac,address,hostname` per port.
pub(crate) fn hosts_file(dhcp: &DhcpPlan) -> String {
    let mut out = String::new();
    for host in &dhcp.hosts {
        let _ = writeln!(
            out,
            "{},{},{}",
            host.mac.to_ascii_lowercase(),
            host.ip,
            hostname(&host.hostname, &host.ip.to_string())
        );
    }
    out
}

/// A valid DNS label from `name` (Neutron's `host-<ip>` when nothing is left).
fn hostname(name: &str, ip: &str) -> String {
    let label: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(63)
        .collect();
    let label = label.trim_end_matches('-').to_string();
    if label.is_empty() {
        format!("host-{}", ip.replace('.', "-"))
    } else {
        label
    }
}

/// `--dhcp-optsfile`: per subnet (tagged by its range) the router, DNS servers and the
/// classless routes (option 121, with the default route in it: a client that gets 121
/// ignores the router option).
pub(crate) fn opts_file(network: &NetworkPlan) -> String {
    let mut out = String::new();
    for subnet in network.subnets.iter().filter(|s| s.enable_dhcp) {
        let tag = format!("tag:{}", subnet_tag(&subnet.id));
        match subnet.gateway_ip {
            Some(gw) => {
                let _ = writeln!(out, "{tag},option:router,{gw}");
            }
            None => {
                let _ = writeln!(out, "{tag},option:router");
            }
        }
        if !subnet.dns_nameservers.is_empty() {
            let servers: Vec<String> = subnet
                .dns_nameservers
                .iter()
                .map(ToString::to_string)
                .collect();
            let _ = writeln!(out, "{tag},option:dns-server,{}", servers.join(","));
        }
        if !subnet.host_routes.is_empty() {
            let mut routes: Vec<String> = subnet
                .host_routes
                .iter()
                .map(|(dest, hop)| format!("{dest},{hop}"))
                .collect();
            if let Some(gw) = subnet.gateway_ip {
                routes.push(format!("0.0.0.0/0,{gw}"));
            }
            let _ = writeln!(
                out,
                "{tag},option:classless-static-route,{}",
                routes.join(",")
            );
        }
    }
    out
}

fn subnet_tag(subnet_id: &str) -> String {
    let id: String = subnet_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("subnet-{id}")
}

/// dnsmasq's command line for `network` (whose `dhcp` is set).
pub(crate) fn arguments(network: &NetworkPlan, dhcp: &DhcpPlan, files: &DhcpFiles) -> Vec<String> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut args = vec![
        "--conf-file=/dev/null".to_string(),
        "--no-hosts".to_string(),
        "--no-resolv".to_string(),
        "--port=0".to_string(),
        "--bind-interfaces".to_string(),
        format!("--interface={}", dhcp_device_name(&dhcp.port_id)),
        "--except-interface=lo".to_string(),
        "--user=root".to_string(),
        "--group=root".to_string(),
        format!("--pid-file={}", path(&files.pid)),
        format!("--dhcp-hostsfile={}", path(&files.hosts)),
        format!("--dhcp-optsfile={}", path(&files.opts)),
        format!("--dhcp-leasefile={}", path(&files.leases)),
        format!("--log-facility={}", path(&files.log)),
        "--log-dhcp".to_string(),
        "--dhcp-authoritative".to_string(),
    ];
    for subnet in network.subnets.iter().filter(|s| s.enable_dhcp) {
        args.push(format!(
            "--dhcp-range=set:{},{},static,{},{}s",
            subnet_tag(&subnet.id),
            subnet.cidr.network(),
            subnet.cidr.netmask(),
            dhcp.lease_seconds.max(120)
        ));
    }
    args
}

/// Starts, signals or restarts the DHCP server of `network` so that it serves the plan;
/// `restart`: its device was recreated, so a running server is bound to a device gone.
pub(crate) async fn converge(
    netns: &str,
    network: &NetworkPlan,
    dhcp: &DhcpPlan,
    state_dir: &Path,
    restart: bool,
) -> Result<()> {
    let files = DhcpFiles::new(state_dir, &network.id);
    let args = arguments(network, dhcp, &files);
    let args_text = args.join("\n");
    let hosts_changed = write_if_changed(&files.hosts, &hosts_file(dhcp)).await?;
    let opts_changed = write_if_changed(&files.opts, &opts_file(network)).await?;
    let args_changed = write_if_changed(&files.args, &args_text).await?;
    match running_pid(&files).await {
        Some(pid) if !args_changed && !restart => {
            if hosts_changed || opts_changed {
                signal(pid, libc::SIGHUP)?;
            }
            Ok(())
        }
        Some(pid) => {
            terminate(pid, &files).await?;
            start(netns, &args).await
        }
        None => start(netns, &args).await,
    }
}

/// Stops the DHCP server of `network_id` (if running) and removes its files.
pub(crate) async fn stop(state_dir: &Path, network_id: &str) -> Result<()> {
    let files = DhcpFiles::new(state_dir, network_id);
    if let Some(pid) = running_pid(&files).await {
        terminate(pid, &files).await?;
    }
    for file in files.all() {
        match tokio::fs::remove_file(file).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

async fn start(netns: &str, args: &[String]) -> Result<()> {
    // dnsmasq daemonizes once it is ready; the foreground process reports start-up errors.
    cmd::in_ns(netns, "dnsmasq", args).await.map(drop)
}

/// The pid in the pid file, when that process is our dnsmasq.
pub(crate) async fn running_pid(files: &DhcpFiles) -> Option<i32> {
    let pid: i32 = tokio::fs::read_to_string(&files.pid)
        .await
        .ok()?
        .trim()
        .parse()
        .ok()?;
    is_ours(pid, files).await.then_some(pid)
}

async fn is_ours(pid: i32, files: &DhcpFiles) -> bool {
    let Ok(cmdline) = tokio::fs::read(format!("/proc/{pid}/cmdline")).await else {
        return false;
    };
    let wanted = format!("--pid-file={}", files.pid.to_string_lossy());
    cmdline
        .split(|&b| b == 0)
        .any(|arg| arg == wanted.as_bytes())
}

async fn terminate(pid: i32, files: &DhcpFiles) -> Result<()> {
    signal(pid, libc::SIGTERM)?;
    for _ in 0..250 {
        if !is_ours(pid, files).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(Error::Command {
        command: format!("kill -TERM {pid}"),
        message: "dnsmasq did not exit within 5 s".to_string(),
    })
}

fn signal(pid: i32, signal: libc::c_int) -> Result<()> {
    if pid <= 0 {
        return Err(Error::Command {
            command: format!("kill {pid}"),
            message: "refusing to signal a process group".to_string(),
        });
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().into())
    }
}

/// Writes `content` to `path` unless it holds it already; true when written.
async fn write_if_changed(path: &Path, content: &str) -> Result<bool> {
    if tokio::fs::read_to_string(path).await.ok().as_deref() == Some(content) {
        return Ok(false);
    }
    tokio::fs::write(path, content).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::plan::{DhcpHost, SubnetPlan};

    fn network() -> NetworkPlan {
        NetworkPlan {
            id: "net".into(),
            mtu: 1500,
            subnets: vec![SubnetPlan {
                id: "sub".into(),
                cidr: "10.1.0.0/24".parse().unwrap(),
                gateway_ip: Some(Ipv4Addr::new(10, 1, 0, 1)),
                enable_dhcp: true,
                dns_nameservers: vec![Ipv4Addr::new(10, 1, 0, 53)],
                host_routes: vec![(
                    "192.168.0.0/16".parse().unwrap(),
                    Ipv4Addr::new(10, 1, 0, 9),
                )],
            }],
            dhcp: None,
            ports: vec![],
        }
    }

    #[test]
    fn opts_file_when_host_routes_then_default_route_among_classless_routes() {
        let network = network();

        let opts = opts_file(&network);

        assert_eq!(
            opts,
            "tag:subnet-sub,option:router,10.1.0.1\n\
             tag:subnet-sub,option:dns-server,10.1.0.53\n\
             tag:subnet-sub,option:classless-static-route,192.168.0.0/16,10.1.0.9,0.0.0.0/0,10.1.0.1\n"
        );
    }

    #[test]
    fn hosts_file_when_name_has_spaces_then_valid_label() {
        let dhcp = DhcpPlan {
            port_id: "p".into(),
            mac: "fa:16:3e:00:00:02".into(),
            addresses: vec![],
            hosts: vec![DhcpHost {
                mac: "FA:16:3E:00:00:07".into(),
                ip: Ipv4Addr::new(10, 1, 0, 7),
                hostname: "my vm_1".into(),
            }],
            lease_seconds: 86400,
        };

        let hosts = hosts_file(&dhcp);

        assert_eq!(hosts, "fa:16:3e:00:00:07,10.1.0.7,my-vm-1\n");
    }

    #[test]
    fn arguments_when_subnet_has_dhcp_then_static_range_with_mask() {
        let network = network();
        let dhcp = DhcpPlan {
            port_id: "port".into(),
            mac: "fa:16:3e:00:00:02".into(),
            addresses: vec![],
            hosts: vec![],
            lease_seconds: 600,
        };
        let files = DhcpFiles::new(Path::new("/state"), "net");

        let args = arguments(&network, &dhcp, &files);

        assert!(args.contains(
            &"--dhcp-range=set:subnet-sub,10.1.0.0,static,255.255.255.0,600s".to_string()
        ));
        assert!(args.contains(&"--interface=ns-port".to_string()));
    }
}
