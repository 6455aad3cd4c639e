//! Shared by the volume-backed snapshot acceptance tests (file pool and
//! rbd pool): the scenario of the issue, run through the real `openstack`
//! CLI on a real guest, and how each pool's data is read behind the API.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use crate::cli_volumes_support::VolumeApi;
use crate::common::{ok, run, Server};
use crate::snapshot_support::*;
use serde_json::Value;

/// Where a pool keeps data, and how to read it behind the API.
pub enum Backend {
    File,
    /// The dev cluster's configuration file.
    Rbd {
        conf: String,
    },
}

/// A volume's or a snapshot's data, as `qemu-img` names it.
#[derive(Debug, Clone)]
pub struct Data {
    pub name: String,
    pub format: &'static str,
}

pub fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// The guest image and flavor `tiny`, with the guest agent property so
/// that snapshots quiesce it (the writer stops between two records, on
/// every disk).
pub fn guest_image(server: &Server) {
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
pub fn disk_lines(console: &Console) -> Vec<(String, u64)> {
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
pub fn mappings(image: &Value) -> Vec<Value> {
    let text = image["properties"]["block_device_mapping"]
        .as_str()
        .unwrap_or_else(|| panic!("no block_device_mapping: {image}"));
    serde_json::from_str(text).unwrap()
}

/// The `location` column of a row of the service's database.
pub fn location(server: &Server, table: &str, id: &str) -> String {
    const QUERY: &str = "import sqlite3, sys\n\
        db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
        row = db.execute('SELECT location FROM ' + sys.argv[2] + ' WHERE id = ?', (sys.argv[3],)).fetchone()\n\
        print(row[0] if row and row[0] else '')\n";
    let db = server.data_dir().join("snapstack.db");
    let found = run("python3", &["-c", QUERY, db.to_str().unwrap(), table, id]);
    let found = found.trim().to_string();
    assert!(!found.is_empty(), "{table} {id} has no location");
    found
}

impl Backend {
    /// How `qemu-img` reads the data at a pool location.
    pub fn data(&self, location: &str) -> Data {
        match self {
            Backend::File => Data {
                name: location
                    .strip_prefix("file://")
                    .unwrap_or(location)
                    .to_string(),
                format: "qcow2",
            },
            Backend::Rbd { conf } => {
                // rbd://<fsid>/<pool>/<image>[/<snap>]
                let path = location.strip_prefix("rbd://").unwrap();
                let parts: Vec<&str> = path.split('/').collect();
                let spec = match parts.as_slice() {
                    [_, pool, image] => format!("{pool}/{image}"),
                    [_, pool, image, snap] => format!("{pool}/{image}@{snap}"),
                    _ => panic!("unexpected RBD location {location}"),
                };
                Data {
                    name: format!("rbd:{spec}:conf={conf}"),
                    format: "raw",
                }
            }
        }
    }

    /// The guest's log in a volume or snapshot: (boot, last_seq, corrupt).
    pub fn log(&self, server: &Server, table: &str, id: &str) -> (u64, u64, u64) {
        let data = self.data(&location(server, table, id));
        let out = run(
            "python3",
            &[&guest_check_script(), "--format", data.format, &data.name],
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        (
            v["boot"].as_u64().unwrap(),
            v["last_seq"].as_u64().unwrap(),
            v["corrupt"].as_u64().unwrap(),
        )
    }

    /// `qemu-img compare` of two volumes/snapshots: same content.
    pub fn same(&self, a: &Data, b: &Data) -> bool {
        Command::new("qemu-img")
            .args(["compare", "-U", "-f", a.format, "-F", b.format])
            .arg(&a.name)
            .arg(&b.name)
            .status()
            .unwrap()
            .success()
    }

    /// The pool holds only what records need (file: every file; rbd: no
    /// volume image or snapshot that no record names).
    pub fn assert_clean(&self, server: &Server, when: &str) {
        match self {
            Backend::File => {
                assert_only_needed_files(server, when);
            }
            Backend::Rbd { .. } => {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let (held, needed) = (rbd_volume_data(), needed_rbd_volume_data(server));
                    if held == needed {
                        return;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{when}: the volumes pool holds {held:?}, records need {needed:?}"
                    );
                    std::thread::sleep(POLL);
                }
            }
        }
    }
}

fn guest_check_script() -> String {
    format!(
        "{}/../../scripts/guest-check.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Every `image` and `image@snap` in the `volumes` pool.
fn rbd_volume_data() -> std::collections::BTreeSet<String> {
    let mut held = std::collections::BTreeSet::new();
    for image in crate::rbd_support::rbd_ls("volumes") {
        for (snap, _) in crate::rbd_support::rbd_snaps(&format!("volumes/{image}")) {
            held.insert(format!("{image}@{snap}"));
        }
        held.insert(image);
    }
    held
}

/// What the records name in the `volumes` pool — volumes and volume
/// snapshots not deleted — and the snapshots their clones stand on.
fn needed_rbd_volume_data(server: &Server) -> std::collections::BTreeSet<String> {
    let mut needed = named_rbd_volume_data(server);
    let mut queue: Vec<String> = needed
        .iter()
        .filter(|n| !n.contains('@'))
        .cloned()
        .collect();
    while let Some(image) = queue.pop() {
        let info: Value = serde_json::from_str(&crate::rbd_support::rbd(&[
            "info",
            "--format",
            "json",
            &format!("volumes/{image}"),
        ]))
        .unwrap();
        let parent = &info["parent"];
        if parent["pool"] == "volumes" {
            let (image, snap) = (
                parent["image"].as_str().unwrap().to_string(),
                parent["snapshot"].as_str().unwrap(),
            );
            needed.insert(format!("{image}@{snap}"));
            if needed.insert(image.clone()) {
                queue.push(image);
            }
        }
    }
    needed
}

/// What the records name in the `volumes` pool.
fn named_rbd_volume_data(server: &Server) -> std::collections::BTreeSet<String> {
    const QUERY: &str = "import sqlite3, sys\n\
        db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
        rows = db.execute(\"SELECT location FROM volumes WHERE status <> 'deleted' AND location IS NOT NULL \
        UNION ALL SELECT location FROM volume_snapshots WHERE status <> 'deleted' AND location IS NOT NULL\")\n\
        print('\\n'.join(r[0] for r in rows))\n";
    let db = server.data_dir().join("snapstack.db");
    run("python3", &["-c", QUERY, db.to_str().unwrap()])
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let parts: Vec<&str> = l.strip_prefix("rbd://").unwrap().split('/').collect();
            match parts.as_slice() {
                [_, _, image] => image.to_string(),
                [_, _, image, snap] => format!("{image}@{snap}"),
                _ => panic!("unexpected RBD location {l}"),
            }
        })
        .collect()
}

/// The guest pause a snapshot into `image` logged, in ms.
pub fn logged_pause(server: &Server, image: &str) -> f64 {
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("guest pause during the snapshot") && l.contains(image))
        .unwrap_or_else(|| panic!("no pause logged for image {image}"));
    let clean: String = strip_ansi(line);
    let value = clean
        .split_whitespace()
        .find_map(|w| w.strip_prefix("paused_ms="))
        .unwrap_or_else(|| panic!("no paused_ms in {clean}"));
    value.parse().unwrap()
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The scenario: a server booted from volume `boot1` (made from the
/// guest image) with `v1` attached, both written in lockstep; its snapshot
/// `bs1`; a server booted from `bs1`; a forced snapshot `s` of the attached
/// `v1` and a volume `v2` made from it; `bs1` deleted, then everything.
/// Returns the guest pause the snapshot logged, in ms.
pub fn snapshot_boot_and_delete(server: &Server, backend: &Backend) -> f64 {
    let api = Api::new(server);
    let volumes = VolumeApi::new(server.admin());
    guest_image(server);
    let v1 = id_of(&cli_json(
        server,
        &["volume", "create", "--size", "1", "-f", "json", "v1"],
    ));
    let boot1 = id_of(&cli_json(
        server,
        &[
            "volume", "create", "--image", "guest", "--size", "2", "-f", "json", "boot1",
        ],
    ));
    volumes.wait_volume(&v1, "available");
    volumes.wait_volume(&boot1, "available");
    let vm = id_of(&cli_json(
        server,
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
    api.wait_booted(&vm, 1, 2);
    ok(server.openstack(&["server", "add", "volume", "vm", "v1"]));
    volumes.wait_volume(&v1, "in-use");
    let hot = api.wait_console(&vm, "the hot-plugged disk written", ACTION, |c| {
        c.text.contains("HOTPLUG vdb") && c.seqs.len() >= 4
    });
    let written = hot.last().seq;
    api.wait_seq_above(&vm, written + 10);

    // Act: the snapshot of the running server.
    let image = snapshot(server, "vm", "bs1");

    // Assert: an empty image naming two snapshots, taken at one instant.
    assert_eq!(image["status"], "active");
    assert_eq!(image["size"], 0);
    assert_eq!(image["properties"]["bdm_v2"], "True");
    assert_eq!(image["properties"]["root_device_name"], "/dev/vda");
    let maps = mappings(&image);
    assert_eq!(maps.len(), 2, "{maps:?}");
    assert_eq!(maps[0]["boot_index"], 0);
    assert_eq!(maps[0]["device_name"], "/dev/vda");
    assert_eq!(maps[0]["volume_size"], 2);
    assert_eq!(maps[1]["device_name"], "/dev/vdb");
    assert_eq!(maps[1]["volume_size"], 1);
    let snap_ids: Vec<String> = maps
        .iter()
        .map(|m| m["snapshot_id"].as_str().unwrap().to_string())
        .collect();
    for m in &maps {
        assert_eq!(m["source_type"], "snapshot");
        assert_eq!(m["destination_type"], "volume");
    }
    for snap in &snap_ids {
        assert_eq!(
            volumes.wait_snapshot(snap, "available")["status"],
            "available"
        );
    }
    let boot_log = backend.log(server, "volume_snapshots", &snap_ids[0]);
    let v1_log = backend.log(server, "volume_snapshots", &snap_ids[1]);
    assert!(boot_log.1 > written, "{boot_log:?} after {written}");
    assert_eq!(boot_log.1, v1_log.1, "both disks end at one record");
    assert_eq!((boot_log.2, v1_log.2), (0, 0), "no corrupt record");
    let pause = logged_pause(server, image["id"].as_str().unwrap());
    let after = api.wait_seq_above(&vm, boot_log.1 + 10);
    assert_seqs_continuous(&after.seqs_since_last_boot(), &after);

    // Act: boot a new server from the image.
    let vm2 = id_of(&cli_json(
        server,
        &[
            "server",
            "create",
            "--image",
            "bs1",
            "--flavor",
            "tiny",
            "--no-network",
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
    assert_eq!(
        api.show(&vm2)["image"],
        "",
        "a volume-backed server has no image"
    );
    let attached = cli_json(server, &["server", "volume", "list", "-f", "json", "vm2"]);
    let attached = attached.as_array().unwrap();
    assert_eq!(attached.len(), 2, "{attached:?}");
    for a in attached {
        let vid = a["Volume ID"].as_str().unwrap();
        assert!(vid != v1 && vid != boot1, "new volumes, not the old ones");
    }

    // Act: a forced snapshot of the attached v1, and a volume made from it.
    let s = id_of(&cli_json(
        server,
        &[
            "volume", "snapshot", "create", "--volume", "v1", "--force", "-f", "json", "s",
        ],
    ));
    volumes.wait_snapshot(&s, "available");
    let v2 = id_of(&cli_json(
        server,
        &["volume", "create", "--snapshot", "s", "-f", "json", "v2"],
    ));
    volumes.wait_volume(&v2, "available");

    // Assert: v2 holds v1's data at `s`, and v1 went on being written.
    let s_data = backend.data(&location(server, "volume_snapshots", &s));
    let v2_data = backend.data(&location(server, "volumes", &v2));
    assert!(backend.same(&s_data, &v2_data), "{s_data:?} != {v2_data:?}");
    let s_log = backend.log(server, "volume_snapshots", &s);
    assert!(s_log.1 > v1_log.1, "{s_log:?} after {v1_log:?}");
    let later = api.wait_seq_above(&vm, s_log.1 + 10);
    assert_seqs_continuous(&later.seqs_since_last_boot(), &later);

    // Act: delete the image.
    ok(server.openstack(&["image", "delete", "bs1"]));

    // Assert: its snapshots go with it; vm2's volumes keep their data.
    for snap in &snap_ids {
        volumes.wait_snapshot_gone(snap);
    }
    backend.assert_clean(server, "after the image delete");
    api.wait_seq_above(&vm2, boot_log.1 + 10);

    // Act: delete everything.
    ok(server.openstack(&["server", "delete", "--wait", "vm", "vm2"]));
    ok(server.openstack(&["volume", "snapshot", "delete", "s"]));
    volumes.wait_snapshot_gone(&s);
    let left: Vec<String> = cli_json(server, &["volume", "list", "-f", "json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["ID"].as_str().unwrap().to_string())
        .collect();
    for vid in &left {
        ok(server.openstack(&["volume", "delete", vid]));
        volumes.wait_volume_gone(vid);
    }

    // Assert: nothing leaked.
    assert_eq!(
        left.len(),
        5,
        "v1, boot1, v2 and vm2's two volumes: {left:?}"
    );
    backend.assert_clean(server, "at the end");
    pause
}
