//! Acceptance: snapshots of volume-backed servers on the file pool, on real
//! QEMU (TCG) through the real `openstack` CLI. What must be true:
//!
//! - `server image create` of a server booted from a volume, with a second
//!   volume attached, gives an image of size 0 whose `block_device_mapping`
//!   names two volume snapshots taken at one instant: the test guest writes
//!   its record log to both disks in lockstep, and both snapshots end at the
//!   same record;
//! - `server create --image` of that image makes a volume of each snapshot
//!   and attaches it where it was: the new guest continues both logs from
//!   exactly that record;
//! - `volume snapshot create --force` of an attached volume holds exactly
//!   the volume's data at that instant, and a volume made from it too;
//! - `image delete` deletes the image's volume snapshots; after deleting
//!   everything, the pool holds only what records need (nothing).
//!
//! Evidence is what a user can see: the CLI's output, the guest's console,
//! the volumes' files read with `scripts/guest-check.py` and `qemu-img`.
//! Run with `-- --test-threads=1` (2 cores, TCG). Needs the test guest
//! (`scripts/build-guest.sh`) and the CLI (`scripts/install-deps.sh`).

mod cli_volumes_support;
mod common;
mod snapshot_support;

use std::time::{Duration, Instant};

use cli_volumes_support::{frozen_of, top_of, VolumeApi};
use common::{fails, ok, Server};
use serde_json::Value;
use snapshot_support::*;

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// The guest image, with the guest agent property so that snapshots
/// quiesce it (the writer stops between two records, on every disk).
fn guest_image(server: &Server) {
    server.add_guest_image_and_flavor();
    ok(server.openstack(&[
        "image",
        "set",
        "--property",
        "hw_qemu_guest_agent=yes",
        "guest",
    ]));
}

/// `DISK <vdX> last_seq=<m>` lines of the console: (device, last_seq).
fn disk_lines(console: &Console) -> Vec<(String, u64)> {
    console
        .text
        .lines()
        .filter_map(|line| {
            let at = line.find("DISK vd")?;
            let rest = &line[at + 5..];
            let dev = rest.split_whitespace().next()?.to_string();
            Some((dev, field(rest, "last_seq")?))
        })
        .collect()
}

/// The image's `block_device_mapping` property, parsed.
fn mappings(image: &Value) -> Vec<Value> {
    let text = image["properties"]["block_device_mapping"]
        .as_str()
        .unwrap_or_else(|| panic!("no block_device_mapping: {image}"));
    serde_json::from_str(text).unwrap()
}

#[test]
fn snapshot_of_volume_backed_server_when_two_volumes_then_one_instant_boot_again_and_nothing_leaked(
) {
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    let api = Api::new(&server);
    let volumes = VolumeApi::new(server.admin());
    guest_image(&server);
    let v1 = id_of(&cli_json(
        &server,
        &["volume", "create", "--size", "1", "-f", "json", "v1"],
    ));
    let boot1 = id_of(&cli_json(
        &server,
        &[
            "volume", "create", "--image", "guest", "--size", "2", "-f", "json", "boot1",
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
            "--network",
            "none",
            "--wait",
            "-f",
            "json",
            "vm",
        ],
    ));
    api.wait_booted(&vm, 1, 2);
    ok(server.openstack(&["server", "add", "volume", "vm", "v1"]));
    volumes.wait_volume(&v1, "in-use");
    let hot = api.wait_console(&vm, "the hot-plugged disk written", ACTION, |c| {
        c.text.contains("HOTPLUG vdb") && c.seqs.len() >= 6
    });
    let written = hot.last().seq;
    api.wait_seq_above(&vm, written + 10);

    // Act: the snapshot of the running server.
    let image = snapshot(&server, "vm", "bs1");

    // Assert: an empty image naming two snapshots, taken at one instant.
    assert_eq!(image["status"], "active");
    assert_eq!(image["size"], 0);
    assert_eq!(image["properties"]["bdm_v2"], "True");
    assert_eq!(image["properties"]["root_device_name"], "/dev/vda");
    let maps = mappings(&image);
    assert_eq!(maps.len(), 2, "{maps:?}");
    assert_eq!(maps[0]["boot_index"], 0);
    assert_eq!(maps[0]["device_name"], "/dev/vda");
    assert_eq!(maps[1]["device_name"], "/dev/vdb");
    for m in &maps {
        assert_eq!(m["source_type"], "snapshot");
        assert_eq!(m["destination_type"], "volume");
        let snap = m["snapshot_id"].as_str().unwrap();
        assert_eq!(
            volumes.wait_snapshot(snap, "available")["status"],
            "available"
        );
    }
    assert_eq!(maps[0]["volume_size"], 2);
    assert_eq!(maps[1]["volume_size"], 1);
    let (boot_frozen, v1_frozen) = (frozen_of(&server, &boot1), frozen_of(&server, &v1));
    assert_eq!((boot_frozen.len(), v1_frozen.len()), (1, 1));
    let (boot_log, v1_log) = (log_of(&boot_frozen[0]), log_of(&v1_frozen[0]));
    assert!(boot_log.1 > written, "{boot_log:?} after {written}");
    assert_eq!(boot_log.1, v1_log.1, "both disks end at one record");
    assert_eq!((boot_log.2, v1_log.2), (0, 0), "no corrupt record");
    assert!(
        server
            .log()
            .contains("guest pause during the snapshot paused_ms=0"),
        "the file pool's cut never pauses the guest"
    );
    let after = api.wait_seq_above(&vm, boot_log.1 + 10);
    assert_seqs_continuous(&after.seqs_since_last_boot(), &after);

    // Act: boot a new server from the image.
    let vm2 = id_of(&cli_json(
        &server,
        &[
            "server",
            "create",
            "--image",
            "bs1",
            "--flavor",
            "tiny",
            "--network",
            "none",
            "--wait",
            "-f",
            "json",
            "vm2",
        ],
    ));
    let booted = api.wait_booted(&vm2, boot_log.0 + 1, 1);

    // Assert: two new volumes holding exactly the snapshots' data.
    assert_eq!(booted.banners.last().unwrap().last_seq, boot_log.1);
    assert_eq!(
        disk_lines(&booted),
        vec![("vdb".to_string(), v1_log.1)],
        "{}",
        booted.text
    );
    assert!(!booted.text.contains("RESET"), "{}", booted.text);
    let shown = cli_json(&server, &["server", "show", "-f", "json", "vm2"]);
    assert_eq!(shown["image"], "", "a volume-backed server has no image");
    let attached = cli_json(&server, &["server", "volume", "list", "-f", "json", "vm2"]);
    assert_eq!(attached.as_array().unwrap().len(), 2, "{attached}");
    for a in attached.as_array().unwrap() {
        let vid = a["Volume ID"].as_str().unwrap();
        assert!(vid != v1 && vid != boot1, "new volumes, not the old ones");
    }

    // Act: a forced snapshot of the attached v1, and a volume made from it.
    let s = id_of(&cli_json(
        &server,
        &[
            "volume", "snapshot", "create", "--volume", "v1", "--force", "-f", "json", "s",
        ],
    ));
    volumes.wait_snapshot(&s, "available");
    let v2 = id_of(&cli_json(
        &server,
        &["volume", "create", "--snapshot", "s", "-f", "json", "v2"],
    ));
    volumes.wait_volume(&v2, "available");

    // Assert: v2 holds v1's data at `s`, and v1 went on being written.
    let s_file = frozen_of(&server, &v1)
        .into_iter()
        .find(|f| *f != v1_frozen[0])
        .expect("a second frozen layer of v1");
    let v2_top = top_of(&server, &v2);
    let compare = std::process::Command::new("qemu-img")
        .args(["compare", "-U"])
        .arg(&s_file)
        .arg(&v2_top)
        .output()
        .unwrap();
    assert!(compare.status.success(), "{compare:?}");
    let s_log = log_of(&s_file);
    assert!(s_log.1 > v1_log.1, "{s_log:?}");
    assert_eq!(log_of(&v2_top).1, s_log.1);
    let later = api.wait_seq_above(&vm, s_log.1 + 10);
    assert_seqs_continuous(&later.seqs_since_last_boot(), &later);

    // Act: delete the image, then everything.
    let image_snaps: Vec<String> = maps
        .iter()
        .map(|m| m["snapshot_id"].as_str().unwrap().to_string())
        .collect();
    ok(server.openstack(&["image", "delete", "bs1"]));

    // Assert: its snapshots go with it (vm2's volumes keep their data).
    for snap in &image_snaps {
        volumes.wait_snapshot_gone(snap);
    }
    assert_only_needed_files(&server, "after the image delete");
    ok(server.openstack(&["server", "delete", "--wait", "vm", "vm2"]));
    ok(server.openstack(&["volume", "snapshot", "delete", "s"]));
    volumes.wait_snapshot_gone(&s);
    let left: Vec<String> = cli_json(&server, &["volume", "list", "-f", "json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["ID"].as_str().unwrap().to_string())
        .collect();
    for vid in &left {
        ok(server.openstack(&["volume", "delete", vid]));
        volumes.wait_volume_gone(vid);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !names_in_pool(&server, "disks").is_empty() && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    assert_eq!(names_in_pool(&server, "disks"), Vec::<String>::new());
    assert_only_needed_files(&server, "at the end");
}

#[test]
fn snapshot_requests_when_wrong_then_clear_errors_and_nothing_made() {
    let server = Server::start();
    let volumes = VolumeApi::new(server.admin());
    guest_image(&server);
    let v1 = id_of(&cli_json(
        &server,
        &["volume", "create", "--size", "2", "-f", "json", "v1"],
    ));
    volumes.wait_volume(&v1, "available");
    let boot1 = id_of(&cli_json(
        &server,
        &[
            "volume", "create", "--image", "guest", "--size", "2", "-f", "json", "boot1",
        ],
    ));
    volumes.wait_volume(&boot1, "available");
    ok(server.openstack(&[
        "server",
        "create",
        "--volume",
        "boot1",
        "--flavor",
        "tiny",
        "--network",
        "none",
        "--wait",
        "vm",
    ]));
    ok(server.openstack(&["server", "add", "volume", "vm", "v1"]));
    volumes.wait_volume(&v1, "in-use");

    let unforced =
        fails(server.openstack(&["volume", "snapshot", "create", "--volume", "v1", "s"]));
    let unknown = fails(server.openstack(&[
        "volume",
        "snapshot",
        "create",
        "--volume",
        "0c1f4a52-7a7c-4c1e-9d9a-6d7c3d0b0e11",
        "s",
    ]));
    let s = id_of(&cli_json(
        &server,
        &[
            "volume", "snapshot", "create", "--volume", "v1", "--force", "-f", "json", "s",
        ],
    ));
    volumes.wait_snapshot(&s, "available");
    let smaller = volumes
        .post(
            "/volumes",
            serde_json::json!({"volume": {"snapshot_id": s, "size": 1, "name": "small"}}),
        )
        .status;

    assert!(unforced.contains("400"), "{unforced}");
    assert!(
        unknown.contains("No volume with a name or ID") || unknown.contains("404"),
        "{unknown}"
    );
    assert_eq!(smaller, 400);
    let listed = cli_json(&server, &["volume", "snapshot", "list", "-f", "json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}
