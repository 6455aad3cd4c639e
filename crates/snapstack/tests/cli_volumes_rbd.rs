//! Acceptance: volumes on the `rbd` pool of the Ceph dev cluster that
//! `CEPH_CONF` names (`scripts/ceph-dev.sh start && eval "$(scripts/ceph-dev.sh env)"`),
//! driven with the real `openstack` CLI and checked with the real `rbd` CLI
//! and `qemu-img`/`qemu-io` through QEMU's rbd driver. A missing cluster
//! fails these tests; it never skips them.
//!
//! The service runs on pools of its own (`cv-images`, `cv-vms`,
//! `cv-volumes`, made here if missing): its garbage collection deletes RBD
//! images its database does not know, so it must not share pools with the
//! other RBD tests. Everything in them is purged at the end, also on panic.

mod cli_volumes_support;
mod common;
mod rbd_pools_support;
mod rbd_support;

use std::path::{Path, PathBuf};

use cli_volumes_support::*;
use common::{ok, run, Server};
use rbd_pools_support::PrivateRbd;
use rbd_support::{ceph_conf, rbd, rbd_ls, rbd_snaps};
use serde_json::{json, Value};

fn rbd_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    serde_json::from_str(&rbd(&all)).unwrap()
}

/// `pool/image@snap` of the parent of `spec`, if it is a clone.
fn rbd_parent(spec: &str) -> Option<String> {
    let info = rbd_json(&["info", spec]);
    let parent = info.get("parent")?;
    Some(format!(
        "{}/{}@{}",
        parent["pool"].as_str()?,
        parent["image"].as_str()?,
        parent["snapshot"].as_str()?
    ))
}

/// QEMU's name for an RBD image (or snapshot) of the dev cluster.
fn qemu_rbd(spec: &str) -> String {
    format!("rbd:{spec}:conf={}", ceph_conf().display())
}

fn raw_image(dir: &Path) -> PathBuf {
    let path = dir.join("guest.raw");
    let mut data = vec![0u8; 8 << 20];
    data[..1 << 20].fill(0x5a);
    std::fs::write(&path, data).unwrap();
    path
}

fn cli_id(server: &Server, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["-f", "value", "-c", "id"]);
    ok(server.openstack(&all))
}

#[test]
fn volumes_on_rbd_when_cloned_snapshotted_and_deleted_then_same_data_bounded_depth_and_nothing_left(
) {
    let rbd_volumes = PrivateRbd::start("cv");
    let server = &rbd_volumes.server;
    let api = VolumeApi::new(server.admin());
    let raw = raw_image(server.dir.path());
    let image = cli_id(
        server,
        &[
            "image",
            "create",
            "--disk-format",
            "raw",
            "--file",
            raw.to_str().unwrap(),
            "guest",
        ],
    );

    let boot1 = cli_id(
        server,
        &[
            "volume", "create", "--image", "guest", "--size", "1", "boot1",
        ],
    );
    api.wait_volume(&boot1, "available");
    let boot1_rbd = format!("cv-volumes/volume-{boot1}");
    write_raw_pattern(&qemu_rbd(&boot1_rbd), 0x11, 1 << 20);
    let snap = cli_id(
        server,
        &["volume", "snapshot", "create", "--volume", "boot1", "s"],
    );
    api.wait_snapshot(&snap, "available");
    write_raw_pattern(&qemu_rbd(&boot1_rbd), 0x22, 1 << 20);
    let v2 = cli_id(server, &["volume", "create", "--snapshot", "s", "v2"]);
    api.wait_volume(&v2, "available");
    let v3 = cli_id(server, &["volume", "create", "--source", "boot1", "v3"]);
    api.wait_volume(&v3, "available");
    ok(server.openstack(&["volume", "set", "--size", "2", "v3"]));
    api.wait_volume(&v3, "available");
    // Generations of snapshot → volume from v2 until past the clone depth (5).
    let mut chain = vec![v2.clone()];
    let mut chain_snaps = Vec::new();
    for generation in 0..4 {
        let parent = chain.last().unwrap().clone();
        let s = api.snapshot(&parent, &format!("g{generation}"));
        let v = api.create_volume(json!({"snapshot_id": s, "name": format!("g{generation}")}));
        let v = v["id"].as_str().unwrap().to_string();
        api.wait_volume(&v, "available");
        chain_snaps.push(s);
        chain.push(v);
    }
    let last = format!("cv-volumes/volume-{}", chain.last().unwrap());

    let snap_spec = format!("{boot1_rbd}@snapshot-{snap}");
    assert_eq!(
        rbd_parent(&boot1_rbd).as_deref(),
        Some(format!("cv-images/{image}@snap").as_str())
    );
    assert!(rbd_snaps(&boot1_rbd).contains(&(format!("snapshot-{snap}"), "true".to_string())));
    assert_eq!(
        rbd_parent(&format!("cv-volumes/volume-{v2}")).as_deref(),
        Some(snap_spec.as_str())
    );
    let v2_rbd = qemu_rbd(&format!("cv-volumes/volume-{v2}"));
    assert!(same_content(&v2_rbd, "raw", &qemu_rbd(&snap_spec), "raw"));
    assert!(holds_pattern(&v2_rbd, "raw", 0x11, 1 << 20));
    assert!(holds_pattern(&v2_rbd, "raw", 0x5a, 0));
    let v3_rbd = qemu_rbd(&format!("cv-volumes/volume-{v3}"));
    assert!(same_content(&v3_rbd, "raw", &qemu_rbd(&boot1_rbd), "raw"));
    assert!(holds_pattern(&v3_rbd, "raw", 0x22, 1 << 20));
    assert_eq!(
        rbd_json(&["info", &format!("cv-volumes/volume-{v3}")])["size"],
        2u64 << 30
    );
    assert_eq!(
        rbd_parent(&last),
        None,
        "past the clone depth a volume is flattened"
    );
    assert!(same_content(&qemu_rbd(&last), "raw", &v2_rbd, "raw"));

    // Delete in the order that leaves parents with clones longest.
    ok(server.openstack(&["volume", "snapshot", "delete", "s"]));
    for s in &chain_snaps {
        api.delete(&format!("/snapshots/{s}")).expect_status(202);
    }
    for s in chain_snaps.iter().chain([&snap]) {
        api.wait_snapshot_gone(s);
    }
    ok(server.openstack(&["volume", "delete", "boot1"]));
    api.wait_volume_gone(&boot1);
    let boot1_kept_for_its_clone = rbd_ls("cv-volumes").contains(&format!("volume-{boot1}"));
    let v2_still_reads = holds_pattern(&v2_rbd, "raw", 0x11, 1 << 20);
    for v in chain.iter().chain([&v3]) {
        api.delete(&format!("/volumes/{v}")).expect_status(202);
        api.wait_volume_gone(v);
    }
    ok(server.openstack(&["image", "delete", "guest"]));

    assert!(boot1_kept_for_its_clone);
    assert!(v2_still_reads);
    assert_eq!(rbd_ls("cv-volumes"), Vec::<String>::new());
    assert_eq!(rbd_ls("cv-images"), Vec::<String>::new());
}

/// Writes `pattern` over 64 KiB at `offset` of a raw image (an `rbd:` spec).
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

#[test]
fn volume_sagas_on_rbd_when_killed_at_each_step_then_restart_finishes_them_and_leaves_only_what_records_name(
) {
    // One representative step per kind (every step of every kind is
    // crashed on fakes in cloud's saga_crash_fakes).
    for point in ["volume-create:freeze", "volume-snapshot:freeze"] {
        let mut rbd_volumes = PrivateRbd::start_with_env("cv", &[]);
        let api = VolumeApi::new(rbd_volumes.server.admin());
        let source = (point != "volume-create:make").then(|| api.blank_volume("source", 1));
        // Armed only now: every volume creation passes every step.
        rbd_volumes
            .server
            .restart_with_env(&[("SNAPSTACK_FAULT_INJECT", point)]);
        let api = VolumeApi::new(rbd_volumes.server.admin());
        let made = match (point, &source) {
            ("volume-create:freeze", Some(src)) => api.try_post(
                "/volumes",
                json!({"volume": {"source_volid": src, "name": "clone"}}),
            ),
            ("volume-snapshot:freeze", Some(src)) => api.try_post(
                "/snapshots",
                json!({"snapshot": {"volume_id": src, "name": "s"}}),
            ),
            _ => api.try_post("/volumes", json!({"volume": {"size": 1, "name": "v"}})),
        };
        let exited = rbd_volumes
            .server
            .wait_exit(std::time::Duration::from_secs(15));
        rbd_volumes.server.restart_with_env(&[]);
        let api = VolumeApi::new(rbd_volumes.server.admin());

        assert!(exited.is_some(), "{point}: the service did not die");
        let made = made.expect("answered before dying").body;
        let id = made.as_object().and_then(|o| o.values().next()).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut expected: Vec<String> = source.iter().map(|s| format!("volume-{s}")).collect();
        if point.starts_with("volume-snapshot") {
            api.wait_snapshot(&id, "available");
            let src = source.as_ref().unwrap();
            assert_eq!(
                rbd_snaps(&format!("cv-volumes/volume-{src}")),
                vec![(format!("snapshot-{id}"), "true".to_string())],
                "{point}"
            );
        } else {
            api.wait_volume(&id, "available");
            expected.push(format!("volume-{id}"));
        }
        expected.sort();
        let mut listed = rbd_ls("cv-volumes");
        listed.sort();
        assert_eq!(listed, expected, "{point}");
    }
}
