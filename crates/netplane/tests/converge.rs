//! Convergence on the real plane: a second apply changes nothing; an empty plan and a
//! teardown leave nothing behind.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;

use common::*;
use netplane::{HostPlan, NetworkPlane};

fn sh(command: &str) -> String {
    let out = Command::new("sh").args(["-c", command]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn one_network() -> HostPlan {
    plan(vec![network(
        "net-cv",
        "10.30.0.0/24",
        vec![port(
            "port-cv",
            "fa:16:3e:30:00:0b",
            Ipv4Addr::new(10, 30, 0, 11),
            Some(firewall(&[22])),
        )],
    )])
}

/// What a second apply must not change: devices with their indexes, the DHCP server's
/// pid, the ruleset.
fn snapshot(t: &TestPlane) -> String {
    let ns = &t.ns;
    format!(
        "{}{}",
        sh(&format!(
            "ip -n {ns} -o link show | cut -d' ' -f1-2; ip netns exec {ns} nft list ruleset; \
             ip -n {ns}-dhcp-net-cv -o addr show"
        )),
        dnsmasq(t)
    )
}

/// The pids of the plane's DHCP servers.
fn dnsmasq(t: &TestPlane) -> String {
    sh(&format!(
        "pgrep -f -- '[-]-pid-file={}/'",
        t.plane.state_dir().display()
    ))
}

#[tokio::test]
async fn apply_when_repeated_then_nothing_changes() {
    if !is_root() {
        return;
    }
    let t = TestPlane::new("cv-twice");
    t.plane.apply(&one_network()).await.unwrap();
    let first = snapshot(&t);

    t.plane.apply(&one_network()).await.unwrap();
    let second = snapshot(&t);

    assert!(first.contains("tapport-cv"), "{first}");
    assert!(!dnsmasq(&t).is_empty());
    assert_eq!(first, second);
}

#[tokio::test]
async fn apply_when_leftover_device_then_removed_and_missing_recreated() {
    if !is_root() {
        return;
    }
    let t = TestPlane::new("cv-fix");
    t.plane.apply(&one_network()).await.unwrap();
    sh(&format!(
        "ip -n {ns} link add tapstale type dummy; ip -n {ns} link delete tapport-cv",
        ns = t.ns
    ));

    t.plane.apply(&one_network()).await.unwrap();
    let links = sh(&format!("ip -n {} -o link show", t.ns));

    assert!(!links.contains("tapstale"), "{links}");
    assert!(links.contains("tapport-cv"), "{links}");
}

#[tokio::test]
async fn empty_plan_then_teardown_leaves_no_namespace_device_dnsmasq_or_rule() {
    if !is_root() {
        return;
    }
    let t = TestPlane::new("cv-empty");
    t.plane.apply(&one_network()).await.unwrap();

    t.plane.apply(&HostPlan::default()).await.unwrap();
    let links = sh(&format!("ip -n {} -o link show | cut -d' ' -f2", t.ns));
    let rules = sh(&format!("ip netns exec {} nft list ruleset", t.ns));
    t.plane.teardown().await.unwrap();
    let namespaces = sh(&format!("ip netns list | grep {} || true", t.ns));
    let dnsmasq = dnsmasq(&t);

    assert_eq!(links, "lo:\n");
    assert_eq!(rules, "");
    assert_eq!(namespaces, "");
    assert_eq!(dnsmasq, "");
}

#[tokio::test]
async fn apply_when_network_removed_and_added_back_at_once_then_it_serves_again() {
    if !is_root() {
        return;
    }
    let t = TestPlane::new("cv-back");
    let dir = tempfile::tempdir().unwrap();
    t.plane.apply(&one_network()).await.unwrap();
    let vm = t.vm("vm", "port-cv", "fa:16:3e:30:00:0b");

    t.plane.apply(&HostPlan::default()).await.unwrap();
    t.plane.apply(&one_network()).await.unwrap();
    let vm_again = t.vm("vm2", "port-cv", "fa:16:3e:30:00:0b");
    let lease = vm_again.dhcp(dir.path());

    drop(vm);
    assert_eq!(lease.as_deref(), Some("10.30.0.11/24"));
}
