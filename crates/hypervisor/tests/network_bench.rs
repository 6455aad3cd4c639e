//! The network bench (`bench/network.sh` runs it; ignored by default): guest-to-guest
//! TCP throughput and ping latency between two test guests on a network made by
//! Snapstack's plane (bridge, nft port security through br_netfilter, dnsmasq in its
//! namespace) against the same two guests, same QEMU options, on a hand-made bridge with
//! no filtering, in one run; and the time from a port's creation (plan applied) to a
//! lease in a guest the NIC is hot-plugged into. Prints markdown table rows.

mod common;

use std::time::{Duration, Instant};

use common::net::{nic, plan, with_nic, Net, A, B, BOOT};
use hypervisor::{Hypervisor, QemuHypervisor};
use netplane::NetworkPlane;

/// MiB per transfer, and transfers per setup (the median is kept).
const MIB: u32 = 32;
const ROUNDS: usize = 3;
const PINGS: u32 = 20;

/// The two guests of one setup: they boot, get their leases, answer.
async fn boot_pair(harness: &common::Harness, driver: &QemuHypervisor, net: &Net, prefix: &str) {
    for (name, port) in [("a", A), ("b", B)] {
        let name = format!("{prefix}-{name}");
        let spec = with_nic(harness.guest_spec(&name), port.0, port.1);
        driver.start(&spec).await.unwrap();
    }
    for name in ["a", "b"] {
        harness
            .wait_console_for(&format!("{prefix}-{name}"), "NET eth0 ip=", BOOT)
            .await;
    }
    // The web service and the sink start together, after the lease.
    net.fetch_until("10.40.0.12", "/cgi-bin/state", "ram=")
        .await;
    net.fetch_until("10.40.0.11", "/cgi-bin/state", "ram=")
        .await;
    // Warm-up: ARP, TCP slow start, the guests' page cache.
    send(net, 8);
}

/// One transfer of `mib` MiB from guest a to guest b: MiB/s.
fn send(net: &Net, mib: u32) -> f64 {
    let answer = net.fetch_within(
        "10.40.0.11",
        &format!("/cgi-bin/send?10.40.0.12+{mib}"),
        600,
    );
    assert_eq!(field(&answer, "nc_exit="), Some(0.0), "{answer}");
    let centiseconds = field(&answer, "centiseconds=").unwrap_or_else(|| panic!("{answer}"));
    f64::from(mib) / (centiseconds / 100.0)
}

/// Average round trip of `PINGS` pings from guest a to guest b, in ms.
fn ping(net: &Net) -> f64 {
    let ping = net.fetch_within(
        "10.40.0.11",
        &format!("/cgi-bin/ping?10.40.0.12+{PINGS}"),
        60,
    );
    // busybox: "round-trip min/avg/max = 0.398/0.575/0.939 ms"
    ping.split(" = ")
        .nth(1)
        .and_then(|v| v.split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{ping}"))
}

fn field(text: &str, key: &str) -> Option<f64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

/// Port created (plan applied with it) → NIC hot-plugged → lease in the guest.
async fn port_to_lease() -> (Duration, Duration, Duration) {
    let net = Net::new("bench-lease", &[A]).await;
    let harness = common::Harness::with_netns(&net.ns);
    let spec = harness.guest_spec("vm-b");
    harness.driver.start(&spec).await.unwrap();
    harness
        .wait_console_for("vm-b", "SNAPSTACK-GUEST boot=1", BOOT)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let start = Instant::now();
    net.plane
        .as_ref()
        .unwrap()
        .apply(&plan(&[A, B]))
        .await
        .unwrap();
    let applied = start.elapsed();
    harness
        .driver
        .attach_nic("vm-b", &nic(B.0, B.1))
        .await
        .unwrap();
    let attached = start.elapsed();
    loop {
        let log = harness.driver.console_log("vm-b", Some(20)).await.unwrap();
        if log.contains("NET eth0 ip=10.40.0.12/24") {
            break;
        }
        assert!(start.elapsed() < BOOT, "no lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (applied, attached, start.elapsed())
}

#[tokio::test]
#[ignore = "a benchmark: bench/network.sh (root, test guest, ~5 min)"]
async fn network_bench() {
    if !common::net::is_root() {
        return;
    }
    let (applied, attached, leased) = port_to_lease().await;
    let ours = Net::new("bench", &[A, B]).await;
    let bare = Net::bare("bench", &[A, B]);
    let harness = common::Harness::new();
    let in_ours = harness.driver_in(&ours.ns);
    let in_bare = harness.driver_in(&bare.ns);
    boot_pair(&harness, &in_ours, &ours, "ours").await;
    boot_pair(&harness, &in_bare, &bare, "bare").await;

    // Alternated, so that load from elsewhere on the machine hits both alike.
    let (mut ours_rates, mut bare_rates, mut ours_rtt, mut bare_rtt) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        ours_rates.push(send(&ours, MIB));
        bare_rates.push(send(&bare, MIB));
        ours_rtt.push(ping(&ours));
        bare_rtt.push(ping(&bare));
    }

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let spread = |v: &[f64]| format!("{:.2}–{:.2}", v[0], v[v.len() - 1]);
    let (ours_rate, bare_rate) = (median(&mut ours_rates), median(&mut bare_rates));
    let (ours_ms, bare_ms) = (median(&mut ours_rtt), median(&mut bare_rtt));
    println!("| measure | Snapstack network | bare bridge | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| TCP guest → guest, {MIB} MiB, MiB/s (median of {ROUNDS}, min–max) | {ours_rate:.2} ({}) | {bare_rate:.2} ({}) | {:.2} (Snapstack / bare) |",
        spread(&ours_rates),
        spread(&bare_rates),
        ours_rate / bare_rate
    );
    println!(
        "| ping guest → guest, ms (median of {ROUNDS} averages of {PINGS}) | {ours_ms:.3} ({}) | {bare_ms:.3} ({}) | {:.2} (bare / Snapstack) |",
        spread(&ours_rtt),
        spread(&bare_rtt),
        bare_ms / ours_ms
    );
    println!(
        "| port created → lease in a running guest, s | {:.2} (plan applied {:.2}, NIC plugged {:.2}) | — | — |",
        leased.as_secs_f64(),
        applied.as_secs_f64(),
        attached.as_secs_f64()
    );
}
