//! Acceptance: volumes attached to servers and servers booted from volumes,
//! on the file pool, on real QEMU (TCG) through the real `openstack` CLI.
//! What must be true:
//!
//! - `server add volume` on a running guest: the guest finds the new disk
//!   and writes its sequence to it (`HOTPLUG`/`DISK`/`RESET` on its
//!   console), the volume is `in-use` with one attachment, `server volume
//!   list` shows it; `server remove volume`: the guest lets go (`UNPLUG`),
//!   the volume is `available`, QEMU no longer has its file open;
//! - a volume attached to a stopped server is there at the next boot;
//! - `server create --volume` and `--block-device` (image, blank, snapshot
//!   sources): the guest boots from the root volume and writes every disk;
//!   the server's `image` is `""`; stop/start, suspend/resume work;
//! - deleting a server releases its volumes and deletes those with
//!   `delete_on_termination`: the pool holds only what records need;
//! - bad requests fail as Nova/Cinder do (404 unknown or foreign volume, 400
//!   in-use volume, root detach, in-use delete, bad mapping; 409 server in
//!   the wrong state).
//!
//! Needs the test guest (`scripts/build-guest.sh`), the CLI
//! (`scripts/install-deps.sh`) and python3. The tests of this file boot
//! their guests one test at a time.

mod cli_volume_attach_support;
mod cli_volumes_support;
mod common;
mod snapshot_support;

use cli_volume_attach_support::*;
use cli_volumes_support::{top_of, volume_files, VolumeApi};
use common::{fails, ok, Server};
use serde_json::json;
use snapshot_support::*;

#[test]
fn volume_when_attached_to_running_guest_then_written_and_when_detached_then_released() {
    let _one = one_at_a_time();
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let (api, volumes) = (Api::new(&server), VolumeApi::new(server.admin()));
    let vm1 = boot(&server, &api, "vm1", "guest", 1, 2);
    let v1 = volume_create(&server, &volumes, &["--size", "1"], "v1");

    ok(server.openstack(&["server", "add", "volume", "vm1", "v1"]));
    let attached = wait_volume_attached(&volumes, &v1, "in-use", 1);
    let at_plug = wait_disk_line(&api, &vm1, "RESET vdb", 0);
    let listed = server_volumes(&server, "vm1");
    let shown = show_server(&server, &vm1);
    let written = api.wait_seq_above(&vm1, at_plug.last().seq + 20);
    ok(server.openstack(&["server", "remove", "volume", "vm1", "v1"]));
    let detached = wait_volume_attached(&volumes, &v1, "available", 0);
    let unplugged = wait_disk_line(&api, &vm1, "UNPLUG vdb", 0);
    let open_after = open_pool_files(qemu_pid(&server, &vm1));
    let on_disk = guest_check(&top_of(&server, &v1));
    let shown_after = api.show(&vm1);

    let a = &attached["attachments"][0];
    assert_eq!(a["server_id"], vm1.as_str());
    assert_eq!(a["volume_id"], v1.as_str());
    assert_eq!(a["device"], "/dev/vdb");
    assert!(a["attachment_id"].is_string());
    let lines = disk_lines(&at_plug);
    assert!(lines.iter().any(|l| l == "HOTPLUG vdb"), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("DISK vdb")), "{lines:?}");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(column(&listed[0], &["Volume ID", "volumeId"]), v1.as_str());
    assert_eq!(column(&listed[0], &["Device", "device"]), "/dev/vdb");
    assert_eq!(
        shown["os-extended-volumes:volumes_attached"],
        json!([{"id": v1, "delete_on_termination": false}])
    );
    assert!(written.last().seq > at_plug.last().seq);
    assert_eq!(detached["attachments"], json!([]));
    assert!(disk_lines(&unplugged).iter().any(|l| l == "UNPLUG vdb"));
    let last_seq = on_disk["last_seq"].as_u64().unwrap();
    assert!(
        last_seq > at_plug.last().seq,
        "the guest wrote up to {last_seq} on v1, it was at {} when it found it",
        at_plug.last().seq
    );
    assert!(
        !open_after.iter().any(|f| f.contains(&v1)),
        "QEMU still has v1 open: {open_after:?}"
    );
    assert_eq!(
        shown_after["os-extended-volumes:volumes_attached"],
        json!([])
    );

    // A stopped server: the attach is recorded, the disk is there at boot.
    let lines_before = disk_lines(&api.console(&vm1)).len();
    ok(server.openstack(&["server", "stop", "vm1"]));
    api.wait_settled(&vm1, &["SHUTOFF"], ACTION);
    ok(server.openstack(&["server", "add", "volume", "vm1", "v1"]));
    wait_volume_attached(&volumes, &v1, "in-use", 1);
    ok(server.openstack(&["server", "start", "vm1"]));
    wait_running(&api, &vm1, 2, 2);
    let rebooted = wait_disk_line(&api, &vm1, "DISK vdb", lines_before);

    let boot2_disk_line = disk_lines(&rebooted)[lines_before..]
        .iter()
        .find(|l| l.starts_with("DISK vdb"))
        .cloned()
        .unwrap();
    assert!(
        !boot2_disk_line.contains("last_seq=0 "),
        "v1 kept what the guest wrote: {boot2_disk_line}"
    );
    server_delete(&server, "vm1");
    let released = wait_volume_attached(&volumes, &v1, "available", 0);
    assert_eq!(released["id"], v1.as_str());
    assert_only_needed_files(&server, "after the server delete");
}

#[test]
fn server_when_booted_from_volumes_then_runs_on_them_and_when_deleted_then_releases_them() {
    let _one = one_at_a_time();
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    let image = server.add_guest_image_and_flavor();
    let (api, volumes) = (Api::new(&server), VolumeApi::new(server.admin()));
    let boot1 = volume_create(
        &server,
        &volumes,
        &["--image", "guest", "--size", "2"],
        "boot1",
    );
    let v0 = volume_create(&server, &volumes, &["--size", "1"], "v0");
    let s0 = volumes.snapshot(&v0, "s0");

    let vm = server_create(
        &server,
        &[
            "--volume",
            "boot1",
            "--block-device",
            "source_type=blank,destination_type=volume,volume_size=1,delete_on_termination=true",
            "--block-device",
            &format!(
                "source_type=snapshot,uuid={s0},destination_type=volume,delete_on_termination=true"
            ),
        ],
        "bfv1",
    );
    let vm = id_of(&vm);
    let console = wait_running(&api, &vm, 1, 2);
    let shown = show_server(&server, &vm);
    let root = volumes.get(&format!("/volumes/{boot1}")).body["volume"].clone();
    let attached = shown["os-extended-volumes:volumes_attached"]
        .as_array()
        .unwrap()
        .clone();

    assert_eq!(shown["image"], "");
    assert_eq!(attached.len(), 3, "{shown}");
    assert_eq!(
        attached[0],
        json!({"id": boot1, "delete_on_termination": false})
    );
    assert!(attached[1..]
        .iter()
        .all(|a| a["delete_on_termination"] == true));
    assert_eq!(root["status"], "in-use");
    assert_eq!(root["attachments"][0]["device"], "/dev/vda");
    let lines = disk_lines(&console);
    assert!(lines.iter().any(|l| l.starts_with("DISK vdb")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("DISK vdc")), "{lines:?}");
    let extra: Vec<String> = attached[1..].iter().map(id_of).collect();

    // A server whose root volume Snapstack makes from the image.
    let vm2 = id_of(&server_create(
        &server,
        &[
            "--block-device",
            &format!("source_type=image,uuid={image},destination_type=volume,volume_size=2,boot_index=0,delete_on_termination=true"),
        ],
        "bfv2",
    ));
    wait_running(&api, &vm2, 1, 2);
    let shown2 = show_server(&server, &vm2);
    let vol2 = id_of(&shown2["os-extended-volumes:volumes_attached"][0]);
    assert_eq!(shown2["image"], "");
    assert_eq!(
        shown2["os-extended-volumes:volumes_attached"][0]["delete_on_termination"],
        true
    );

    // Refusals.
    fails_with(
        server.openstack(&["server", "remove", "volume", "bfv1", "boot1"]),
        400,
    );
    fails_with(server.openstack(&["volume", "delete", "boot1"]), 400);
    fails_with(
        server.openstack(&["server", "add", "volume", "bfv2", "boot1"]),
        400,
    );
    let unknown = server.admin().post(
        &format!("/compute/v2.1/servers/{vm2}/os-volume_attachments"),
        json!({"volumeAttachment": {"volumeId": "0b7c3e0e-5b1c-4a4e-9a43-2f7d9b1e0c11"}}),
    );
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    let bob = server.user_with_role("bob", "member");
    let bobs = VolumeApi::new(bob).blank_volume("bobs", 1);
    let admin_project = server.admin().project_id();
    let carol = server.user_in_project("carol", &admin_project, "admin", "member");
    let foreign = carol.post(
        &format!("/compute/v2.1/servers/{vm2}/os-volume_attachments"),
        json!({"volumeAttachment": {"volumeId": bobs}}),
    );
    assert_eq!(foreign.status, 404, "{:?}", foreign.body);
    let bad = fails(server.openstack(&[
        "server",
        "create",
        "--flavor",
        "tiny",
        "--no-network",
        "--block-device",
        "source_type=blank,destination_type=volume,boot_index=0",
        "bad",
    ]));
    assert!(bad.contains("volume_size"), "{bad}");
    volume_create(&server, &volumes, &["--size", "1"], "v9");
    ok(server.openstack(&["server", "suspend", "bfv2"]));
    api.wait_settled(&vm2, &["SUSPENDED"], ACTION);
    fails_with(
        server.openstack(&["server", "add", "volume", "bfv2", "v9"]),
        409,
    );
    ok(server.openstack(&["server", "resume", "bfv2"]));
    api.wait_settled(&vm2, &["ACTIVE"], ACTION);
    let resumed = api.wait_seq_above(&vm2, api.console(&vm2).last().seq);
    assert_eq!(resumed.banners.len(), 1, "resume is not a reboot");

    // Stop and start of a server booted from a volume.
    ok(server.openstack(&["server", "stop", "bfv1"]));
    api.wait_settled(&vm, &["SHUTOFF"], ACTION);
    ok(server.openstack(&["server", "start", "bfv1"]));
    wait_running(&api, &vm, 2, 1);

    // Deletes: what had delete_on_termination goes, the rest is available.
    server_delete(&server, "bfv2");
    volumes.wait_volume_gone(&vol2);
    server_delete(&server, "bfv1");
    for id in &extra {
        volumes.wait_volume_gone(id);
    }
    let kept = wait_volume_attached(&volumes, &boot1, "available", 0);
    assert_eq!(kept["id"], boot1.as_str());
    assert!(volume_files(&server, &vol2).is_empty());
    assert_only_needed_files(&server, "after the server deletes");
    ok(server.openstack(&["volume", "delete", "boot1", "v9"]));
    volumes.wait_volume_gone(&boot1);
    assert_only_needed_files(&server, "after the volume deletes");
}

/// The service killed at a step of an attach or detach (a debug build's
/// fault point), then started again: the step is settled from what QEMU
/// shows — the attach goes forward (the disk is hot-plugged once), the
/// detach too — and no volume stays reserved, attaching or detaching.
#[test]
fn attach_and_detach_when_service_killed_at_each_step_then_restart_settles_them() {
    let _one = one_at_a_time();
    let mut server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let vm = boot(&server, &api, "vm1", "guest", 1, 2);
    let v1 = volume_create(
        &server,
        &VolumeApi::new(server.admin()),
        &["--size", "1"],
        "v1",
    );
    let pid = qemu_pid(&server, &vm);
    let steps = [
        ("attach-reserved", "add", "in-use", 1),
        ("detach-detaching", "remove", "available", 0),
        ("attach-plugged", "add", "in-use", 1),
        ("detach-unplugged", "remove", "available", 0),
        ("attach-attaching", "add", "in-use", 1),
        ("detach-row-removed", "remove", "available", 0),
    ];

    for (point, verb, status, attachments) in steps {
        let before = disk_lines(&api.console(&vm)).len();
        server.restart_with_env(&[("SNAPSTACK_FAULT_INJECT", point)]);
        let _ = server.openstack(&["server", verb, "volume", "vm1", "v1"]);
        assert!(
            server
                .wait_exit(std::time::Duration::from_secs(30))
                .is_some(),
            "the service did not die at {point}"
        );
        server.restart_with_env(&[]);
        let volumes = VolumeApi::new(server.admin());
        let settled = wait_volume_attached(&volumes, &v1, status, attachments);
        let shown = api.wait_settled(&vm, &["ACTIVE"], ACTION);
        let line = if verb == "add" {
            "HOTPLUG vdb"
        } else {
            "UNPLUG vdb"
        };
        wait_disk_line(&api, &vm, line, before);

        assert_eq!(settled["status"], status, "after {point}");
        assert!(shown["OS-EXT-STS:task_state"].is_null(), "after {point}");
    }
    let console = api.console(&vm);

    assert_eq!(qemu_pid(&server, &vm), pid, "QEMU kept running throughout");
    assert_eq!(
        disk_lines(&console)
            .iter()
            .filter(|l| *l == "HOTPLUG vdb")
            .count(),
        3,
        "one hot-plug per attach: {:?}",
        disk_lines(&console)
    );
    assert_only_needed_files(&server, "after the crashes");
}
