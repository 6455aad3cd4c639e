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
mod rbd_support;
mod snapshot_support;
mod volume_backed_support;

use cli_volumes_support::VolumeApi;
use common::{fails, ok, Server};
use snapshot_support::*;
use volume_backed_support::*;

#[test]
fn snapshot_of_volume_backed_server_when_two_volumes_then_one_instant_boot_again_and_nothing_leaked(
) {
    let server = Server::start();
    let _log = LogOnFailure::new(&server);

    let pause = snapshot_boot_and_delete(&server, &Backend::File);

    assert_eq!(pause, 0.0, "the file pool's cut never stops the guest");
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
        "--no-network",
        "--wait",
        "vm",
    ]));
    ok(server.openstack(&["server", "add", "volume", "vm", "v1"]));
    volumes.wait_volume(&v1, "in-use");

    let unforced =
        fails(server.openstack(&["volume", "snapshot", "create", "--volume", "v1", "s"]));
    let unknown_id = "0c1f4a52-7a7c-4c1e-9d9a-6d7c3d0b0e11";
    let unknown =
        fails(server.openstack(&["volume", "snapshot", "create", "--volume", unknown_id, "s"]));
    let unknown_api = volumes
        .post(
            "/snapshots",
            serde_json::json!({"snapshot": {"volume_id": unknown_id, "force": true}}),
        )
        .status;
    let attach_again = fails(server.openstack(&["server", "add", "volume", "vm", "v1"]));
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
    assert!(unknown.contains("No Volume found"), "{unknown}");
    assert_eq!(unknown_api, 404);
    assert!(attach_again.contains("400"), "{attach_again}");
    assert_eq!(smaller, 400);
    let listed = cli_json(&server, &["volume", "snapshot", "list", "-f", "json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}
