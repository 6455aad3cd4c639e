//! Acceptance: crash safety of snapshots of volume-backed servers on the
//! file pool, on real QEMU through the real `openstack` CLI. The service dies
//! (fault points, debug builds only) at every step of the saga while the
//! guest is frozen through its agent; after a restart the image is active
//! with every snapshot usable or gone with all of them, the guest is thawed
//! and writing, the server has no task, and the pool holds only what records
//! need. One guest serves every step (a restart leaves QEMU running).
//! Run with `-- --test-threads=1`.

mod cli_volumes_support;
mod common;
mod snapshot_support;

use std::time::Duration;

use cli_volumes_support::VolumeApi;
use common::{ok, Server};
use serde_json::Value;
use snapshot_support::*;

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn volume_backed_snapshot_crash_when_dying_at_each_step_then_image_whole_or_gone_and_guest_thawed()
{
    let mut server = Server::start();
    let _log = LogOnFailure::new(&server);
    let volumes = VolumeApi::new(server.admin());
    server.add_guest_image_and_flavor();
    ok(server.openstack(&[
        "image",
        "set",
        "--property",
        "hw_qemu_guest_agent=yes",
        "guest",
    ]));
    let v1 = id_of(&cli_json(
        &server,
        &["volume", "create", "--size", "1", "-f", "json", "v1"],
    ));
    let boot1 = id_of(&cli_json(
        &server,
        &[
            "volume", "create", "--image", "guest", "--size", "1", "-f", "json", "boot1",
        ],
    ));
    volumes.wait_volume(&v1, "available");
    volumes.wait_volume(&boot1, "available");
    let vm = id_of(&cli_json(
        &server,
        &[
            "server",
            "create",
            "--volume",
            "boot1",
            "--flavor",
            "tiny",
            "--no-network",
            "--wait",
            "-f",
            "json",
            "vm",
        ],
    ));
    let api = Api::new(&server);
    api.wait_booted(&vm, 1, 1);
    ok(server.openstack(&["server", "add", "volume", "vm", "v1"]));
    volumes.wait_volume(&v1, "in-use");
    api.wait_console(&vm, "the hot-plugged disk written", ACTION, |c| {
        c.text.contains("HOTPLUG vdb")
    });
    let pid = qemu_pid(&server, &vm);

    for (n, point) in [
        // One representative step (the cut QEMU made, found by the probe);
        // every step of every saga kind is crashed in cloud's saga_crash_fakes.
        "server-volume-image:cut",
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("crash{n}");
        server.restart_with_env(&[("SNAPSTACK_FAULT_INJECT", point)]);
        let api = Api::new(&server);
        let before = api.console(&vm).last();

        // The reply may or may not come: the service dies meanwhile.
        let _ = server.openstack(&["server", "image", "create", "--name", &name, "vm"]);
        let died = server.wait_exit(Duration::from_secs(60));
        let dying_log = server.log();
        server.restart_with_env(&[]);
        let api = Api::new(&server);
        let after = api.wait_seq_above(&vm, before.seq + 20);
        let shown = api.show(&vm);
        let listed = cli_json(&server, &["image", "list", "--name", &name, "-f", "json"]);
        let snaps = cli_json(&server, &["volume", "snapshot", "list", "-f", "json"]);
        assert_only_needed_files(&server, point);

        assert!(died.is_some_and(|s| !s.success()), "{point}: did not die");
        assert!(
            dying_log.contains(&format!("fault injection: dying at {point}")),
            "{point}: log:\n{dying_log}"
        );
        assert_eq!(shown["status"], "ACTIVE", "{point}: {shown}");
        assert!(shown["OS-EXT-STS:task_state"].is_null(), "{point}: {shown}");
        assert!(alive(pid), "{point}: QEMU died with the service");
        assert_seqs_continuous(&after.seqs_since_last_boot(), &after);
        let listed = listed.as_array().unwrap();
        assert_eq!(listed.len(), 1, "{point}: {listed:?}");
        assert_eq!(listed[0]["Status"], "active", "{point}");
        let image = image_show(&server, &name);
        let text = image["properties"]["block_device_mapping"]
            .as_str()
            .unwrap();
        let maps: Vec<Value> = serde_json::from_str(text).unwrap();
        assert_eq!(maps.len(), 2, "{point}: {maps:?}");
        for m in &maps {
            let snap = m["snapshot_id"].as_str().unwrap();
            assert_eq!(
                volumes.wait_snapshot(snap, "available")["status"],
                "available",
                "{point}"
            );
        }
        // Every snapshot left belongs to an image that finished: two each,
        // none half-made.
        let finished = n + 1;
        let snaps = snaps.as_array().unwrap();
        assert_eq!(snaps.len(), 2 * finished, "{point}: {snaps:?}");
        assert!(
            snaps.iter().all(|s| s["Status"] == "available"),
            "{point}: {snaps:?}"
        );
    }
    assert_pool_files_check_clean(&server);
}
