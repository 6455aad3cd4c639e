//! Console logs bounded on disk (`--console-log-cap`), keeping their tail,
//! against the real `snapstack serve` and QEMU; `openstack console log show
//! --lines N` (os-getConsoleOutput `length`) gives the last N lines.
//!
//! The test guest prints a short line a second; a chatty guest is played by
//! appending lines to the log beside QEMU (both append: nothing is lost).

mod common;
mod snapshot_support;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::{ok, Server};
use serde_json::json;
use snapshot_support::Api;

const CAP: u64 = 8192;

#[test]
fn console_log_when_guest_writes_past_cap_then_disk_use_bounded_and_tail_shown_and_lines_work() {
    let server = Server::start_with(&["--console-log-cap", &CAP.to_string()]);
    let api = Api::new(&server);
    let image = server.add_guest_image_and_flavor();
    let created = api.admin.post(
        "/compute/v2.1/servers",
        json!({"server": {"name": "vm1", "imageRef": image, "flavorRef": "tiny", "networks": "none"}}),
    );
    let vm = created.expect_status(202).body["server"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let log = server
        .data_dir()
        .join("instances")
        .join(&vm)
        .join("console.log");

    wait_until(|| std::fs::read_to_string(&log).is_ok_and(|t| t.contains("SEQ")));
    let mut chatter = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    for i in 0..(5 * CAP / 16) {
        writeln!(chatter, "CHATTER {i:07}").unwrap();
    }
    drop(chatter);
    let chatter_end = std::fs::metadata(&log).unwrap().len();

    // The service frees the head on its power-sync tick; the guest goes on
    // printing after the chatter.
    let deadline = Instant::now() + Duration::from_secs(300);
    let meta = loop {
        let meta = std::fs::metadata(&log).ok();
        let trimmed = meta.filter(|m| m.len() > chatter_end + 32 && m.blocks() * 512 <= CAP + 8192);
        if let Some(m) = trimmed {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the log was never trimmed after the guest went on"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let whole = api.admin.post(
        &format!("/compute/v2.1/servers/{vm}/action"),
        json!({"os-getConsoleOutput": {}}),
    );
    let three = api.admin.post(
        &format!("/compute/v2.1/servers/{vm}/action"),
        json!({"os-getConsoleOutput": {"length": 3}}),
    );
    let cli = ok(server.openstack(&["console", "log", "show", "--lines", "2", &vm]));

    assert!(meta.len() > 5 * CAP);
    let whole = whole.expect_status(200).body["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(whole.len() as u64 <= CAP, "{} bytes shown", whole.len());
    assert!(!whole.contains('\0'), "the freed head is never shown");
    assert!(whole.lines().last().unwrap().contains("SEQ"), "{whole}");
    let three = three.expect_status(200).body["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(three.lines().count(), 3, "{three}");
    assert_eq!(cli.trim_end().lines().count(), 2, "{cli}");
    assert!(cli.contains("SEQ"), "{cli}");
}

fn wait_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(200));
    }
}
