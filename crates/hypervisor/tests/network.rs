//! NICs on real networks: the project's test guest under QEMU (TCG) in the namespace of
//! a real network plane (netplane's `LinuxPlane`), DHCP from the plane's dnsmasq, and
//! the guest's web service (`/cgi-bin/state`, `/cgi-bin/peer?<ip>`) reached from a
//! client namespace on the network's bridge. Needs root; skipped otherwise.

mod common;

use common::net::{is_root, nic, with_nic, Net, A, B, BOOT};
use hypervisor::Hypervisor;
use netplane::tap_name;

#[tokio::test]
async fn two_guests_when_on_one_network_then_leases_and_each_reaches_the_other() {
    if !is_root() {
        return;
    }
    let net = Net::new("two", &[A, B]).await;
    let harness = common::Harness::with_netns(&net.ns);
    let a = with_nic(harness.guest_spec("vm-a"), A.0, A.1);
    let b = with_nic(harness.guest_spec("vm-b"), B.0, B.1);

    harness.driver.start(&a).await.unwrap();
    harness.driver.start(&b).await.unwrap();
    harness
        .wait_console_for("vm-a", "NET eth0 ip=10.40.0.11/24 router=10.40.0.1", BOOT)
        .await;
    harness
        .wait_console_for("vm-b", "NET eth0 ip=10.40.0.12/24 router=10.40.0.1", BOOT)
        .await;
    let a_state = net
        .fetch_until("10.40.0.11", "/cgi-bin/state", "ram=")
        .await;
    let a_to_b = net
        .fetch_until("10.40.0.11", "/cgi-bin/peer?10.40.0.12", "ram=")
        .await;
    let b_to_a = net
        .fetch_until("10.40.0.12", "/cgi-bin/peer?10.40.0.11", "ram=")
        .await;

    assert!(a_state.starts_with("boot=1 last_seq="), "{a_state}");
    assert!(a_to_b.starts_with("boot=1 last_seq="), "{a_to_b}");
    assert!(b_to_a.starts_with("boot=1 last_seq="), "{b_to_a}");
}

#[tokio::test]
async fn nic_when_hot_plugged_then_guest_gets_lease_and_when_unplugged_then_gone() {
    if !is_root() {
        return;
    }
    let net = Net::new("plug", &[A]).await;
    let harness = common::Harness::with_netns(&net.ns);
    let spec = harness.guest_spec("vm-a");
    harness.driver.start(&spec).await.unwrap();
    harness
        .wait_console_for("vm-a", "SNAPSTACK-GUEST boot=1", BOOT)
        .await;

    harness
        .driver
        .attach_nic("vm-a", &nic(A.0, A.1))
        .await
        .unwrap();
    harness
        .wait_console_for("vm-a", "NET eth0 ip=10.40.0.11/24", BOOT)
        .await;
    let plugged = net
        .fetch_until("10.40.0.11", "/cgi-bin/state", "ram=")
        .await;
    let recorded = std::fs::read_to_string(harness.run_dir().join("vm-a/spec.json")).unwrap();
    harness.driver.detach_nic("vm-a", "net0").await.unwrap();
    harness.driver.detach_nic("vm-a", "net0").await.unwrap();
    let unplugged = net.fetch("10.40.0.11", "/cgi-bin/state");
    let after = std::fs::read_to_string(harness.run_dir().join("vm-a/spec.json")).unwrap();

    assert!(plugged.contains("ram="), "{plugged}");
    assert!(
        recorded.contains("port-hv-a") || recorded.contains(&tap_name(A.0)),
        "{recorded}"
    );
    assert_eq!(unplugged, "");
    assert!(!after.contains(&tap_name(A.0)), "{after}");
}

#[tokio::test]
async fn nic_when_memory_saved_and_restored_then_guest_answers_on_its_address_again() {
    if !is_root() {
        return;
    }
    let net = Net::new("mem", &[A]).await;
    let harness = common::Harness::with_netns(&net.ns);
    let spec = with_nic(harness.guest_spec("vm-a"), A.0, A.1);
    harness.driver.start(&spec).await.unwrap();
    harness
        .wait_console_for("vm-a", "NET eth0 ip=10.40.0.11/24", BOOT)
        .await;
    let before = net
        .fetch_until("10.40.0.11", "/cgi-bin/state", "ram=")
        .await;
    let state_file = harness.root.path().join("vm-a.mem");

    harness
        .driver
        .save_memory("vm-a", &state_file)
        .await
        .unwrap();
    let while_saved = net.fetch("10.40.0.11", "/cgi-bin/state");
    harness
        .driver
        .start_incoming(&spec, &state_file)
        .await
        .unwrap();
    let after = net
        .fetch_until("10.40.0.11", "/cgi-bin/state", "ram=")
        .await;

    assert!(before.starts_with("boot=1 "), "{before}");
    assert_eq!(while_saved, "");
    assert!(after.starts_with("boot=1 "), "{after}");
}

#[tokio::test]
async fn nic_link_when_set_down_and_up_then_ok_and_unknown_nic_not_found() {
    if !is_root() {
        return;
    }
    let net = Net::new("link", &[A]).await;
    let harness = common::Harness::with_netns(&net.ns);
    let spec = with_nic(harness.spec("vm-a"), A.0, A.1);
    harness.driver.start(&spec).await.unwrap();

    let down = harness.driver.set_nic_link("vm-a", "net0", false).await;
    let up = harness.driver.set_nic_link("vm-a", "net0", true).await;
    let unknown = harness.driver.set_nic_link("vm-a", "net9", true).await;

    assert!(down.is_ok(), "{down:?}");
    assert!(up.is_ok(), "{up:?}");
    assert_eq!(unknown.unwrap_err().kind(), hypervisor::ErrorKind::NotFound);
}
