//! Acceptance: snapshot rotation on the `rbd` pool of the Ceph dev cluster
//! that `CEPH_CONF` names, over HTTP: a line of 20 generations (write a
//! pattern into the newest volume, snapshot it, clone a volume from the
//! snapshot), the snapshots then deleted oldest first (10), the rest newest
//! first, then every volume newest first: the newest volume holds every
//! generation's pattern, no clone is ever deeper than the pool's clone depth
//! (5, Cinder's `rbd_max_clone_depth`), and nothing is left in the pools.
//! 20 generations rather than 70: each one is an RBD snapshot, a protect, a
//! clone and, every fifth, a flatten over librbd on a memstore OSD sharing
//! two cores, several seconds a generation; the bound is reached four times
//! over, which is what the test is about. A missing cluster fails the test.

mod cli_volumes_support;
mod common;
mod rbd_pools_support;
mod rbd_support;

use std::time::Instant;

use cli_volumes_support::{holds_pattern, VolumeApi};
use common::run;
use rbd_pools_support::PrivateRbd;
use rbd_support::{ceph_conf, rbd, rbd_ls};
use serde_json::{json, Value};

const GENERATIONS: u64 = 20;
const MAX_CLONE_DEPTH: usize = 5;

fn qemu_rbd(spec: &str) -> String {
    format!("rbd:{spec}:conf={}", ceph_conf().display())
}

fn write_raw_pattern(image: &str, pattern: u8, offset: u64) {
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            &format!("write -P {pattern} {offset} 64k"),
            image,
        ],
    );
}

/// How many clone generations `spec` stands on.
fn clone_depth(spec: &str) -> usize {
    let mut depth = 0;
    let mut at = spec.to_string();
    loop {
        let info: Value = serde_json::from_str(&rbd(&["info", &at, "--format", "json"])).unwrap();
        let Some(parent) = info.get("parent") else {
            return depth;
        };
        depth += 1;
        at = format!(
            "{}/{}",
            parent["pool"].as_str().unwrap(),
            parent["image"].as_str().unwrap()
        );
    }
}

fn pattern(n: u64) -> u8 {
    (n % 250 + 1) as u8
}

#[test]
fn rbd_volumes_when_20_generations_rotated_then_data_exact_depth_bounded_and_nothing_left() {
    let started = Instant::now();
    let rbd_volumes = PrivateRbd::start("cr");
    let server = &rbd_volumes.server;
    server.admin().unlimited_quotas();
    let api = VolumeApi::new(server.admin());
    let spec = |v: &str| format!("cr-volumes/volume-{v}");

    let mut volumes = vec![api.blank_volume("g0", 1)];
    let mut snaps = Vec::new();
    let mut deepest = 0;
    for n in 0..GENERATIONS {
        let newest = volumes.last().unwrap().clone();
        write_raw_pattern(&qemu_rbd(&spec(&newest)), pattern(n), n * 65536);
        let snap = api.snapshot(&newest, &format!("s{n}"));
        let next = api.create_volume(json!({"snapshot_id": snap, "name": format!("g{}", n + 1)}));
        let next = next["id"].as_str().unwrap().to_string();
        api.wait_volume(&next, "available");
        deepest = deepest.max(clone_depth(&spec(&next)));
        snaps.push(snap);
        volumes.push(next);
    }
    let (oldest, rest) = snaps.split_at(snaps.len() / 2);
    for snap in oldest.iter().chain(rest.iter().rev()) {
        api.delete(&format!("/snapshots/{snap}")).expect_status(202);
        api.wait_snapshot_gone(snap);
    }
    let newest = spec(volumes.last().unwrap());
    let all_kept =
        (0..GENERATIONS).all(|n| holds_pattern(&qemu_rbd(&newest), "raw", pattern(n), n * 65536));
    for v in volumes.iter().rev() {
        api.delete(&format!("/volumes/{v}")).expect_status(202);
        api.wait_volume_gone(v);
    }

    assert!(all_kept, "the newest volume lost a generation's data");
    assert!(
        deepest <= MAX_CLONE_DEPTH,
        "a clone {deepest} generations deep"
    );
    assert_eq!(rbd_ls("cr-volumes"), Vec::<String>::new());
    assert_eq!(rbd_ls("cr-images"), Vec::<String>::new());
    assert_eq!(rbd_ls("cr-vms"), Vec::<String>::new());
    eprintln!("rbd rotation took {:?}", started.elapsed());
}
