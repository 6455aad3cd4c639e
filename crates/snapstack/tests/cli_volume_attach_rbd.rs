//! Acceptance: attach/detach and boot from volume on the `rbd` pool of the
//! Ceph dev cluster that `CEPH_CONF` names (`scripts/ceph-dev.sh start &&
//! eval "$(scripts/ceph-dev.sh env)"`), on real QEMU (TCG, QEMU's rbd
//! driver) through the real `openstack` CLI, checked with the real `rbd`
//! CLI and `scripts/guest-check.py`. A missing cluster fails these tests.
//!
//! The service runs on pools of its own (`va-images`, `va-vms`,
//! `va-volumes`, made here if missing): its garbage collection deletes RBD
//! images its database does not know, so it must not share pools with the
//! other RBD tests. Everything in them is purged at the end, also on panic.

mod cli_volume_attach_support;
mod cli_volumes_support;
mod common;
mod rbd_pools_support;
mod rbd_support;
mod snapshot_support;

use cli_volume_attach_support::*;
use cli_volumes_support::VolumeApi;
use common::{ok, run};
use rbd_pools_support::PrivateRbd;
use rbd_support::{ceph_conf, rbd_ls};
use serde_json::Value;
use snapshot_support::*;

/// The guest's log on an RBD volume (`scripts/guest-check.py` through
/// QEMU's rbd driver).
fn guest_check_rbd(volume_id: &str) -> Value {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/guest-check.py");
    let spec = format!(
        "rbd:va-volumes/volume-{volume_id}:conf={}",
        ceph_conf().display()
    );
    let out = run(
        "python3",
        &[script.to_str().unwrap(), "--format", "raw", &spec],
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn rbd_volumes_when_attached_detached_and_booted_from_then_guest_writes_them_and_nothing_left() {
    let rbd_attach = PrivateRbd::start("va");
    let server = &rbd_attach.server;
    let _log = LogOnFailure::new(server);
    let image = server.add_guest_image_and_flavor();
    let (api, volumes) = (Api::new(server), VolumeApi::new(server.admin()));
    let vm1 = boot(server, &api, "vm1", "guest", 1, 2);
    let v1 = volume_create(server, &volumes, &["--size", "1"], "v1");

    // Hot-plug and unplug on a running guest.
    ok(server.openstack(&["server", "add", "volume", "vm1", "v1"]));
    let attached = wait_volume_attached(&volumes, &v1, "in-use", 1);
    let at_plug = wait_disk_line(&api, &vm1, "RESET vdb", 0);
    let listed = server_volumes(server, "vm1");
    api.wait_seq_above(&vm1, at_plug.last().seq + 20);
    ok(server.openstack(&["server", "remove", "volume", "vm1", "v1"]));
    wait_volume_attached(&volumes, &v1, "available", 0);
    wait_disk_line(&api, &vm1, "UNPLUG vdb", 0);
    let on_disk = guest_check_rbd(&v1);

    assert_eq!(attached["attachments"][0]["server_id"], vm1.as_str());
    assert_eq!(attached["attachments"][0]["device"], "/dev/vdb");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        on_disk["last_seq"].as_u64().unwrap() > at_plug.last().seq,
        "{on_disk}"
    );

    // Boot from a volume Snapstack clones from the image.
    let bfv = id_of(&server_create(
        server,
        &[
            "--block-device",
            &format!("source_type=image,uuid={image},destination_type=volume,volume_size=2,boot_index=0,delete_on_termination=true"),
        ],
        "bfv",
    ));
    wait_running(&api, &bfv, 1, 2);
    let shown = show_server(server, &bfv);
    let root = id_of(&shown["os-extended-volumes:volumes_attached"][0]);
    let in_pool = rbd_ls("va-volumes");

    assert_eq!(shown["image"], "");
    assert!(in_pool.contains(&format!("volume-{root}")), "{in_pool:?}");
    assert!(rbd_ls("va-vms").iter().all(|d| !d.contains(&bfv)));
    fails_with(
        server.openstack(&["server", "add", "volume", "vm1", &root]),
        400,
    );
    fails_with(
        server.openstack(&["server", "remove", "volume", "bfv", &root]),
        400,
    );

    // Stop and start on the root volume.
    ok(server.openstack(&["server", "stop", "bfv"]));
    api.wait_settled(&bfv, &["SHUTOFF"], ACTION);
    ok(server.openstack(&["server", "start", "bfv"]));
    wait_running(&api, &bfv, 2, 1);

    // Deletes leave nothing behind.
    server_delete(server, "bfv");
    volumes.wait_volume_gone(&root);
    server_delete(server, "vm1");
    ok(server.openstack(&["volume", "delete", "v1"]));
    volumes.wait_volume_gone(&v1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(rbd_ls("va-volumes").is_empty() && rbd_ls("va-vms").is_empty()) {
        assert!(
            std::time::Instant::now() < deadline,
            "left in Ceph: volumes {:?}, vms {:?}",
            rbd_ls("va-volumes"),
            rbd_ls("va-vms")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
