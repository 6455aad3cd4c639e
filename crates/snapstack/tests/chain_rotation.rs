//! Acceptance: snapshot rotation never loses data and never lets a backing
//! chain grow past `--max-chain-depth` (file pool, real QEMU under TCG),
//! driven over HTTP (70 CLI calls would take minutes):
//!
//! - 70 snapshots of a volume attached to a running guest that writes its
//!   sequence to it, deleted oldest first (35), then the rest newest first:
//!   the guest's log on the volume is exact (no corrupt record, up to date),
//!   `qemu-img check` is clean on every pool file, no chain is ever longer
//!   than the cap once the snapshot call settled, and nothing of the volume
//!   is left after it is deleted;
//! - the same with the volume detached (patterns written with `qemu-io`
//!   between snapshots, every one read back at the end);
//! - a stopped server, 66 `createImage` then every image deleted: it
//!   starts on its own data (boot 2 finds boot 1's log);
//! - 50 volumes created from a source volume while 50 other volumes are
//!   deleted in parallel: every new volume is `available` on a file that
//!   holds its source's data.
//!
//! Needs the test guest (`scripts/build-guest.sh`) and python3.

mod cli_volume_attach_support;
mod cli_volumes_support;
mod common;
mod snapshot_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cli_volume_attach_support::*;
use cli_volumes_support::{holds_pattern, write_pattern, VolumeApi};
use common::{ok, run, Server};
use serde_json::{json, Value};
use snapshot_support::*;

const CAP: usize = 8;
const CAP_FLAG: &str = "8";

fn start() -> Server {
    let server = Server::start_with(&["--max-chain-depth", CAP_FLAG]);
    // 70 snapshots, 66 images, 100 volumes: past OpenStack's default quotas.
    server.admin().unlimited_quotas();
    server
}

/// The file a record's location names, read from the service's database.
fn location_of(server: &Server, table: &str, id: &str) -> PathBuf {
    file_in_column(server, table, "location", id)
}

/// The file named in `column` of row `id` of `table`.
fn file_in_column(server: &Server, table: &str, column: &str, id: &str) -> PathBuf {
    let query = format!(
        "import sqlite3, sys\n\
         db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
         print(db.execute(\"SELECT {column} FROM {table} WHERE id = ?\", (sys.argv[2],)).fetchone()[0])\n"
    );
    let db = server.data_dir().join("snapstack.db");
    let out = run("python3", &["-c", &query, db.to_str().unwrap(), id]);
    PathBuf::from(out.trim().trim_start_matches("file://"))
}

/// How many files the chain of `file` has (itself included).
fn chain_len(file: &Path) -> usize {
    let out = run(
        "qemu-img",
        &[
            "info",
            "-U",
            "--backing-chain",
            "--output=json",
            file.to_str().unwrap(),
        ],
    );
    let chain: Value = serde_json::from_str(&out).unwrap();
    chain.as_array().unwrap().len()
}

/// The longest chain of any file of the pool.
fn longest_chain(server: &Server) -> usize {
    pool_files(server)
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "qcow2"))
        .map(|f| chain_len(f))
        .max()
        .unwrap_or(0)
}

/// Waits (the reconciler runs right after the call settles) until no chain
/// of the pool is longer than the cap.
fn assert_chains_bounded(server: &Server, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let longest = longest_chain(server);
        if longest <= CAP {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: a chain of {longest} files (cap {CAP})"
        );
        std::thread::sleep(POLL);
    }
}

/// How many lines of the service's log contain `needle`.
fn log_lines_with(server: &Server, needle: &str) -> usize {
    let log = server.data_dir().join("logs").join("snapstack.log");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Prints (for the report) and returns how many merges and rebases ran.
fn rewrites(server: &Server) -> (usize, usize) {
    let merged = log_lines_with(server, "released layer merged");
    let bounded = log_lines_with(server, "chain too deep");
    eprintln!("{merged} released layers merged, {bounded} deep chains rebased");
    (merged, bounded)
}

fn snapshot_volume(volumes: &VolumeApi, volume: &str, name: &str) -> String {
    let snap = volumes
        .post(
            "/snapshots",
            json!({"snapshot": {"volume_id": volume, "name": name, "force": true}}),
        )
        .expect_status(202)
        .body["snapshot"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    volumes.wait_snapshot(&snap, "available");
    snap
}

/// Deletes `snaps` in order, each waited until gone; chains bounded after
/// every one.
fn delete_snapshots(server: &Server, volumes: &VolumeApi, snaps: &[String]) {
    for snap in snaps {
        volumes
            .delete(&format!("/snapshots/{snap}"))
            .expect_status(202);
        volumes.wait_snapshot_gone(snap);
        assert_chains_bounded(server, &format!("after deleting snapshot {snap}"));
    }
}

/// 35 oldest first, then the rest newest first.
fn rotate_out(server: &Server, volumes: &VolumeApi, snaps: &[String]) {
    let (oldest, rest) = snaps.split_at(snaps.len() / 2);
    delete_snapshots(server, volumes, oldest);
    let newest_first: Vec<String> = rest.iter().rev().cloned().collect();
    delete_snapshots(server, volumes, &newest_first);
}

fn delete_volume_and_assert_nothing_left(server: &Server, volumes: &VolumeApi, volume: &str) {
    volumes
        .delete(&format!("/volumes/{volume}"))
        .expect_status(202);
    volumes.wait_volume_gone(volume);
    let left = assert_only_needed_files(server, "after the volume delete");
    assert!(
        !left.iter().any(|f| f.to_string_lossy().contains(volume)),
        "files of volume {volume} left: {left:?}"
    );
}

#[test]
fn volume_when_70_snapshots_rotated_while_a_guest_writes_then_data_exact_and_chains_bounded() {
    let _one = one_at_a_time();
    let started = Instant::now();
    let server = start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let (api, volumes) = (Api::new(&server), VolumeApi::new(server.admin()));
    let vm = boot(&server, &api, "vm1", "guest", 1, 2);
    let volume = volumes.blank_volume("v1", 1);
    ok(server.openstack(&["server", "add", "volume", "vm1", &volume]));
    wait_volume_attached(&volumes, &volume, "in-use", 1);
    let at_plug = wait_disk_line(&api, &vm, "RESET vdb", 0);

    let mut snaps = Vec::new();
    for n in 0..70 {
        snaps.push(snapshot_volume(&volumes, &volume, &format!("s{n}")));
        assert_chains_bounded(&server, &format!("after snapshot {n}"));
    }
    let before_deletes = api.wait_seq_above(&vm, at_plug.last().seq + 5).last().seq;
    rotate_out(&server, &volumes, &snaps);
    let after_deletes = api.wait_seq_above(&vm, before_deletes + 5).last().seq;
    assert_pool_files_check_clean(&server);
    ok(server.openstack(&["server", "remove", "volume", "vm1", &volume]));
    wait_volume_attached(&volumes, &volume, "available", 0);
    let on_disk = guest_check(&location_of(&server, "volumes", &volume));

    assert_eq!(on_disk["corrupt"], 0, "{on_disk}");
    assert!(
        on_disk["last_seq"].as_u64().unwrap() >= after_deletes,
        "the volume's log ends at {on_disk}, the guest had written {after_deletes}"
    );
    assert_chains_bounded(&server, "at the end");
    let (merged, bounded) = rewrites(&server);
    assert!(
        merged > 0 && bounded > 0,
        "{merged} merges, {bounded} rebases"
    );
    delete_volume_and_assert_nothing_left(&server, &volumes, &volume);
    eprintln!("attached rotation took {:?}", started.elapsed());
}

#[test]
fn volume_when_70_snapshots_rotated_while_detached_then_every_write_kept_and_chains_bounded() {
    let _one = one_at_a_time();
    let started = Instant::now();
    let server = start();
    let _log = LogOnFailure::new(&server);
    let volumes = VolumeApi::new(server.admin());
    let volume = volumes.blank_volume("v1", 1);

    let mut snaps = Vec::new();
    for n in 0..70u64 {
        let top = location_of(&server, "volumes", &volume);
        write_pattern(&top, (n % 250 + 1) as u8, n * 65536);
        snaps.push(snapshot_volume(&volumes, &volume, &format!("s{n}")));
        assert_chains_bounded(&server, &format!("after snapshot {n}"));
    }
    let mid_snap = location_of(&server, "volume_snapshots", &snaps[50]);
    let mid_snap_kept = (0..=50u64).all(|n| {
        holds_pattern(
            mid_snap.to_str().unwrap(),
            "qcow2",
            (n % 250 + 1) as u8,
            n * 65536,
        )
    });
    rotate_out(&server, &volumes, &snaps);
    assert_pool_files_check_clean(&server);
    let top = location_of(&server, "volumes", &volume);
    let all_kept = (0..70u64).all(|n| {
        holds_pattern(
            top.to_str().unwrap(),
            "qcow2",
            (n % 250 + 1) as u8,
            n * 65536,
        )
    });

    assert!(mid_snap_kept);
    assert!(all_kept, "the volume lost a write");
    assert!(
        chain_len(&top) <= 2,
        "chain of {} files left",
        chain_len(&top)
    );
    delete_volume_and_assert_nothing_left(&server, &volumes, &volume);
    eprintln!("detached rotation took {:?}", started.elapsed());
}

#[test]
fn stopped_server_when_66_images_made_then_deleted_then_starts_on_its_own_data() {
    let _one = one_at_a_time();
    let started = Instant::now();
    let server = start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let vm = boot(&server, &api, "vm1", "guest", 1, 3);
    ok(server.openstack(&["server", "stop", "vm1"]));
    api.wait_settled(&vm, &["SHUTOFF"], ACTION);
    let written = log_of(&file_in_column(&server, "servers", "root_disk", &vm)).1;

    let mut images = Vec::new();
    for n in 0..66 {
        let r = api.admin.post(
            &format!("/compute/v2.1/servers/{vm}/action"),
            json!({"createImage": {"name": format!("i{n}")}}),
        );
        assert_eq!(r.status, 202, "{:?}", r.body);
        let id = r
            .header("location")
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let image = api.wait_image_settled(&id).expect("image gone");
        assert_eq!(image["status"], "active", "{image}");
        api.wait_settled(&vm, &["SHUTOFF"], ACTION);
        assert_chains_bounded(&server, &format!("after image {n}"));
        images.push(id);
    }
    for id in &images {
        api.admin
            .delete(&format!("/image/v2/images/{id}"))
            .expect_status(204);
        assert_chains_bounded(&server, &format!("after deleting image {id}"));
    }
    assert_pool_files_check_clean(&server);
    assert_only_needed_files(&server, "after the image deletes");
    ok(server.openstack(&["server", "start", "vm1"]));
    let rebooted = api.wait_booted(&vm, 2, 2);

    assert_eq!(rebooted.banners.last().unwrap().boot, 2);
    let (merged, bounded) = rewrites(&server);
    assert!(
        merged > 0 && bounded > 0,
        "{merged} merges, {bounded} rebases"
    );
    assert!(written > 0);
    eprintln!("stopped-server rotation took {:?}", started.elapsed());
}

#[test]
fn volumes_when_created_from_a_source_while_others_deleted_then_each_holds_the_source_data() {
    let _one = one_at_a_time();
    let started = Instant::now();
    let server = start();
    let _log = LogOnFailure::new(&server);
    let volumes = VolumeApi::new(server.admin());
    let source = volumes.blank_volume("source", 1);
    write_pattern(&location_of(&server, "volumes", &source), 0x5a, 0);
    let victims: Vec<String> = (0..50)
        .map(|n| volumes.blank_volume(&format!("victim{n}"), 1))
        .collect();

    let deleter = {
        let client = VolumeApi::new(server.admin());
        std::thread::spawn(move || {
            for victim in &victims {
                client
                    .delete(&format!("/volumes/{victim}"))
                    .expect_status(202);
            }
            victims
        })
    };
    let copies: Vec<String> = (0..50)
        .map(|n| {
            volumes.create_volume(
                json!({"name": format!("copy{n}"), "size": 1, "source_volid": source}),
            )["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for victim in deleter.join().unwrap() {
        volumes.wait_volume_gone(&victim);
    }
    for copy in &copies {
        volumes.wait_volume(copy, "available");
    }
    let unreadable: Vec<(String, &str)> = copies
        .iter()
        .filter_map(|copy| {
            let file = location_of(&server, "volumes", copy);
            if !file.exists() {
                Some((copy.clone(), "file missing"))
            } else if !holds_pattern(file.to_str().unwrap(), "qcow2", 0x5a, 0) {
                Some((copy.clone(), "other data"))
            } else {
                None
            }
        })
        .collect();

    assert!(
        unreadable.is_empty(),
        "copies without their data: {unreadable:?}"
    );
    assert_pool_files_check_clean(&server);
    assert_only_needed_files(&server, "after the creates and deletes");
    eprintln!("create-while-delete took {:?}", started.elapsed());
}
