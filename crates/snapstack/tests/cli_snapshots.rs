//! Acceptance: server snapshots (Nova `createImage`) on the file pool, on
//! real QEMU (TCG) through the real `openstack` CLI. What must be true:
//!
//! - a live snapshot never pauses the guest and holds a consistent prefix of
//!   its writes: a server booted from it, the server rebuilt from it and the
//!   downloaded image all show the same last record;
//! - snapshots of paused, suspended and stopped servers leave them so, and
//!   they continue afterwards;
//! - servers and images deleted in any order leave only the files some
//!   record needs (none at the end);
//! - a crash of the service at every step of the saga, or QEMU's death
//!   during one, leaves a working server, an image that is either usable or
//!   gone, and a clean pool.
//!
//! Evidence is what a user can see: statuses, the test guest's console
//! (`SNAPSTACK-GUEST boot=… last_seq=…`, `SEQ n ram=k`, `STOPPED last_seq=…`),
//! downloaded images (`image save`, `qemu-img`, `scripts/guest-check.py`),
//! QEMU processes and the pool's files. "The files some record needs" is
//! computed apart from the service: the root disks of the servers and the
//! data of the active images in its database, with their qcow2 backing
//! chains as `qemu-img info --backing-chain` reads them.
//!
//! Run with `-- --test-threads=2` (2 cores, TCG). Needs the test guest
//! (`scripts/build-guest.sh`, `$SNAPSTACK_GUEST_DIR`), the CLI
//! (`scripts/install-deps.sh`) and python3. The crash tests need a debug
//! build of `snapstack`: release builds have no fault points.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{fails, ok, run, Client, Server};
use serde_json::{json, Value};

/// Longest wait for a guest to boot to its banner (TCG on a busy machine).
const BOOT: Duration = Duration::from_secs(180);
/// Longest wait for an action or a snapshot to settle.
const ACTION: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);

// ---- the guest's console -------------------------------------------------

/// `SNAPSTACK-GUEST boot=<n> last_seq=<m> corrupt=<k> disk=<d>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Banner {
    boot: u64,
    last_seq: u64,
    corrupt: u64,
}

/// `SEQ <n> ram=<k>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seq {
    seq: u64,
    ram: u64,
}

/// A guest's console, parsed.
#[derive(Debug, Clone)]
struct Console {
    text: String,
    banners: Vec<Banner>,
    seqs: Vec<Seq>,
    /// `STOPPED last_seq=<m>`: the writer's last record at a clean stop.
    stopped: Vec<u64>,
}

fn field(text: &str, key: &str) -> Option<u64> {
    text.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

impl Console {
    fn parse(text: &str) -> Console {
        let mut console = Console {
            text: text.to_string(),
            banners: Vec::new(),
            seqs: Vec::new(),
            stopped: Vec::new(),
        };
        for line in text.lines() {
            if let Some(at) = line.find("SNAPSTACK-GUEST ") {
                let rest = &line[at..];
                if let (Some(boot), Some(last_seq), Some(corrupt)) = (
                    field(rest, "boot"),
                    field(rest, "last_seq"),
                    field(rest, "corrupt"),
                ) {
                    console.banners.push(Banner {
                        boot,
                        last_seq,
                        corrupt,
                    });
                }
            } else if let Some(at) = line.find("STOPPED ") {
                console.stopped.extend(field(&line[at..], "last_seq"));
            } else if let Some(at) = line.find("SEQ ") {
                let mut words = line[at + 4..].split_whitespace();
                let seq = words.next().and_then(|w| w.parse().ok());
                let ram = words
                    .next()
                    .and_then(|w| w.strip_prefix("ram=")?.parse().ok());
                if let (Some(seq), Some(ram)) = (seq, ram) {
                    console.seqs.push(Seq { seq, ram });
                }
            }
        }
        console
    }

    /// The last SEQ line (panics, showing the console, when there is none).
    fn last(&self) -> Seq {
        *self
            .seqs
            .last()
            .unwrap_or_else(|| panic!("no SEQ line on the console:\n{}", self.text))
    }

    /// The SEQ lines printed since the last banner.
    fn seqs_since_last_boot(&self) -> Vec<Seq> {
        match self.text.rfind("SNAPSTACK-GUEST ") {
            Some(at) => Console::parse(&self.text[at..]).seqs,
            None => Vec::new(),
        }
    }

    /// The first SEQ line whose number is above `seq`.
    fn first_above(&self, seq: u64) -> Option<Seq> {
        self.seqs.iter().copied().find(|s| s.seq > seq)
    }
}

/// Asserts that consecutive SEQ lines step by exactly 10 records and 10 ticks
/// (one print every 10 ticks of 100 ms): no record lost, no reboot, no
/// restore of an older memory state in between.
fn assert_seqs_continuous(seqs: &[Seq], console: &Console) {
    for pair in seqs.windows(2) {
        assert_eq!(
            (pair[1].seq, pair[1].ram),
            (pair[0].seq + 10, pair[0].ram + 10),
            "SEQ lines jump; console:\n{}",
            console.text
        );
    }
}

// ---- the compute and image APIs, for polling ------------------------------

/// The APIs as the admin, for polling (the CLI takes a second a call).
struct Api {
    admin: Client,
}

impl Api {
    fn new(server: &Server) -> Api {
        Api {
            admin: server.admin(),
        }
    }

    fn show(&self, id: &str) -> Value {
        self.admin
            .get(&format!("/compute/v2.1/servers/{id}"))
            .expect_status(200)
            .body["server"]
            .clone()
    }

    fn console(&self, id: &str) -> Console {
        let r = self.admin.post(
            &format!("/compute/v2.1/servers/{id}/action"),
            json!({"os-getConsoleOutput": {}}),
        );
        Console::parse(r.expect_status(200).body["output"].as_str().unwrap())
    }

    /// Polls until the server has one of `statuses` and no task.
    fn wait_settled(&self, id: &str, statuses: &[&str], within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let server = self.show(id);
            let status = server["status"].as_str().unwrap_or_default();
            if statuses.contains(&status) && server["OS-EXT-STS:task_state"].is_null() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "server {id} never became {statuses:?} without a task: {server}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Polls the console until `done` holds.
    fn wait_console(
        &self,
        id: &str,
        what: &str,
        within: Duration,
        done: impl Fn(&Console) -> bool,
    ) -> Console {
        let deadline = Instant::now() + within;
        loop {
            let console = self.console(id);
            if done(&console) {
                return console;
            }
            assert!(
                Instant::now() < deadline,
                "server {id}: never saw {what}; console:\n{}",
                console.text
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits for boot number `boot`'s banner and `lines` SEQ lines after it.
    fn wait_booted(&self, id: &str, boot: u64, lines: usize) -> Console {
        let what = format!("boot={boot} and {lines} SEQ lines");
        self.wait_console(id, &what, BOOT, |c| {
            c.banners.last().is_some_and(|b| b.boot == boot)
                && c.seqs_since_last_boot().len() >= lines
        })
    }

    /// Waits for a SEQ line above `seq`: the guest is writing.
    fn wait_seq_above(&self, id: &str, seq: u64) -> Console {
        self.wait_console(id, &format!("a SEQ line above {seq}"), ACTION, |c| {
            c.seqs.last().is_some_and(|s| s.seq > seq)
        })
    }

    /// The image as the image API shows it, `None` when it is gone (404).
    fn image(&self, id: &str) -> Option<Value> {
        let r = self.admin.get(&format!("/image/v2/images/{id}"));
        match r.status {
            404 => None,
            200 => Some(r.body),
            other => panic!("image {id}: unexpected status {other}: {:?}", r.body),
        }
    }

    /// Polls until the image is gone or in a final state (not queued/saving).
    fn wait_image_settled(&self, id: &str) -> Option<Value> {
        let deadline = Instant::now() + ACTION;
        loop {
            let img = self.image(id);
            let status = img.as_ref().map(|i| i["status"].clone());
            if !matches!(
                status.as_ref().and_then(Value::as_str),
                Some("queued" | "saving")
            ) {
                return img;
            }
            assert!(
                Instant::now() < deadline,
                "image {id} never settled: {img:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Polls until the image's checksum (computed after it became active)
    /// is known.
    fn wait_checksum(&self, id: &str) -> Value {
        let deadline = Instant::now() + ACTION;
        loop {
            let img = self.image(id).expect("the image is gone");
            if img["checksum"].is_string() {
                return img;
            }
            assert!(
                Instant::now() < deadline,
                "image {id} never got a checksum: {img}"
            );
            std::thread::sleep(POLL);
        }
    }
}

// ---- the CLI -------------------------------------------------------------

fn cli_json(server: &Server, args: &[&str]) -> Value {
    let out = ok(server.openstack(args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `server create --wait` from `image`; returns the server's id once its
/// guest has printed `lines` SEQ lines after boot number `boot`.
fn boot(server: &Server, api: &Api, name: &str, image: &str, boot: u64, lines: usize) -> String {
    let created = cli_json(
        server,
        &[
            "server",
            "create",
            "--image",
            image,
            "--flavor",
            "tiny",
            "--network",
            "none",
            "--wait",
            "-f",
            "json",
            name,
        ],
    );
    let id = created["id"].as_str().unwrap().to_string();
    api.wait_booted(&id, boot, lines);
    id
}

/// `server image create --wait --name NAME VM`, then `image show NAME`.
fn snapshot(server: &Server, vm: &str, name: &str) -> Value {
    ok(server.openstack(&["server", "image", "create", "--wait", "--name", name, vm]));
    image_show(server, name)
}

fn image_show(server: &Server, name: &str) -> Value {
    cli_json(server, &["image", "show", "-f", "json", name])
}

/// `image save --file` into the test's directory.
fn save(server: &Server, name: &str) -> PathBuf {
    let file = server.dir.path().join(format!("{name}.saved"));
    ok(server.openstack(&["image", "save", "--file", file.to_str().unwrap(), name]));
    file
}

/// What `scripts/guest-check.py` reads from a disk: `{boot, last_seq, corrupt}`.
fn guest_check(disk: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/guest-check.py");
    let out = run(
        "python3",
        &[script.to_str().unwrap(), disk.to_str().unwrap()],
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("guest-check.py: not JSON ({e}): {out}"))
}

/// The guest's log as (boot, last_seq, corrupt).
fn log_of(disk: &Path) -> (u64, u64, u64) {
    let v = guest_check(disk);
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k}: {v}"));
    (n("boot"), n("last_seq"), n("corrupt"))
}

/// A downloaded image is a valid qcow2 of its own (no backing file).
fn assert_self_contained_qcow2(file: &Path) {
    let info: Value = serde_json::from_str(&run(
        "qemu-img",
        &["info", "--output=json", file.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(info["format"], "qcow2", "{info}");
    assert!(info["backing-filename"].is_null(), "{info}");
    run("qemu-img", &["check", "-q", file.to_str().unwrap()]);
}

fn md5_hex(file: &Path) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(std::fs::read(file).unwrap()))
}

// ---- QEMU and the pool ---------------------------------------------------

/// The pid of the server's QEMU, from `<data>/instances/<id>/qemu.pid`.
fn qemu_pid(server: &Server, id: &str) -> u32 {
    let file = server
        .data_dir()
        .join("instances")
        .join(id)
        .join("qemu.pid");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid in {}: {text:?}", file.display()))
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// The pool files a process has open (`/proc/<pid>/fd`); a deleted one
/// reads `… (deleted)`.
fn open_pool_files(pid: u32) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|p| p.to_string_lossy().into_owned())
                .filter(|p| p.contains("/pool/"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.dedup();
    files
}

fn kill9(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {pid} failed");
}

/// Every file under `<data>/pool/images` and `<data>/pool/disks`.
fn pool_files(server: &Server) -> BTreeSet<PathBuf> {
    let pool = server.data_dir().join("pool");
    ["images", "disks"]
        .iter()
        .flat_map(|d| std::fs::read_dir(pool.join(d)).into_iter().flatten())
        .filter_map(|e| e.ok()?.path().canonicalize().ok())
        .collect()
}

/// Names of the files under `<data>/pool/<dir>`.
fn names_in_pool(server: &Server, dir: &str) -> Vec<String> {
    common::file_names(&server.data_dir().join("pool").join(dir))
}

/// The files some record needs: the root disks of the servers that are not
/// deleted and the data of the active (or deactivated) images, as the
/// service's database holds them, each with its whole backing chain.
fn needed_files(server: &Server) -> BTreeSet<PathBuf> {
    const QUERY: &str = "import sqlite3, sys\n\
        db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
        rows = db.execute(\"SELECT root_disk FROM servers WHERE vm_state <> 'deleted' AND root_disk IS NOT NULL \
        UNION ALL SELECT location FROM images WHERE status IN ('active', 'deactivated') AND location IS NOT NULL\")\n\
        print('\\n'.join(r[0] for r in rows))\n";
    let db = server.data_dir().join("snapstack.db");
    let roots = run("python3", &["-c", QUERY, db.to_str().unwrap()]);
    let mut needed = BTreeSet::new();
    for root in roots.lines().filter(|l| !l.is_empty()) {
        let path = PathBuf::from(root.strip_prefix("file://").unwrap_or(root));
        if !path.exists() {
            needed.insert(path);
            continue;
        }
        let chain: Value = serde_json::from_str(&run(
            "qemu-img",
            &[
                "info",
                "-U",
                "--backing-chain",
                "--output=json",
                path.to_str().unwrap(),
            ],
        ))
        .unwrap();
        for layer in chain.as_array().unwrap() {
            let file = PathBuf::from(layer["filename"].as_str().unwrap());
            needed.insert(file.canonicalize().unwrap_or(file));
        }
    }
    needed
}

/// Waits (garbage collection may follow a delete by a moment) until the
/// pool holds exactly the files some record needs; returns them.
fn assert_only_needed_files(server: &Server, when: &str) -> BTreeSet<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (pool, needed) = (pool_files(server), needed_files(server));
        if pool == needed {
            return pool;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: the pool does not hold exactly the needed files\n\
             orphans: {:?}\nmissing: {:?}",
            pool.difference(&needed).collect::<Vec<_>>(),
            needed.difference(&pool).collect::<Vec<_>>()
        );
        std::thread::sleep(POLL);
    }
}

/// `qemu-img check -U` is clean on every pool file.
fn assert_pool_files_check_clean(server: &Server) {
    for file in pool_files(server) {
        let out = Command::new("qemu-img")
            .args(["check", "-U", "-q"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "qemu-img check {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Prints the service's log (warnings and errors, then its tail) when the
/// test fails, before the data directory goes.
struct LogOnFailure(PathBuf);

impl LogOnFailure {
    fn new(server: &Server) -> LogOnFailure {
        LogOnFailure(server.data_dir().join("logs").join("snapstack.log"))
    }
}

impl Drop for LogOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let log = std::fs::read_to_string(&self.0).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let notable: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        let tail = &lines[lines.len().saturating_sub(30)..];
        eprintln!(
            "--- service warnings and errors:\n{}\n--- service log tail:\n{}",
            notable.join("\n"),
            tail.join("\n")
        );
    }
}

fn property<'a>(image: &'a Value, key: &str) -> &'a Value {
    &image["properties"][key]
}

// ---- live snapshot, boot from it, rebuild to it, download it ---------------

#[test]
fn live_snapshot_when_guest_writes_then_no_pause_and_boot_rebuild_and_download_see_one_prefix() {
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    let guest = server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let vm1 = boot(&server, &api, "vm1", "guest", 1, 3);
    let pid_before = qemu_pid(&server, &vm1);

    // The snapshot, while the guest writes a record every 100 ms.
    let before = api.console(&vm1);
    let started = Instant::now();
    let s1 = snapshot(&server, "vm1", "s1");
    let took = started.elapsed();
    let at_active = api.console(&vm1);
    let after = api.wait_seq_above(&vm1, at_active.last().seq);
    let upper = after.first_above(at_active.last().seq).unwrap().seq;
    let vm1_after_snapshot = api.show(&vm1);
    let pid_after = qemu_pid(&server, &vm1);

    // A new server from s1, and vm1 rolled back to s1, booting together.
    ok(server.openstack(&["server", "rebuild", "--image", "s1", "vm1"]));
    let vm2 = boot(&server, &api, "vm2", "s1", 2, 1);
    let rebuilt = api.wait_settled(&vm1, &["ACTIVE"], BOOT);
    let vm1_console = api.wait_booted(&vm1, 2, 1);
    let vm2_console = api.console(&vm2);

    // Its download.
    let saved = save(&server, "s1");
    let s1_id = s1["id"].as_str().unwrap();
    let hashed = api.wait_checksum(s1_id);
    let layer = property(&s1, "direct_url").as_str().unwrap().to_string();
    let layer = layer.strip_prefix("file://").unwrap_or(&layer).to_string();
    let compared = Command::new("qemu-img")
        .args(["compare", "-U", "-f", "qcow2", "-F", "qcow2"])
        .arg(&saved)
        .arg(&layer)
        .output()
        .unwrap();

    // The image.
    assert_eq!(s1["status"], "active");
    assert_eq!(property(&s1, "image_type"), "snapshot");
    assert_eq!(property(&s1, "instance_uuid"), vm1.as_str());
    assert_eq!(property(&s1, "base_image_ref"), guest.as_str());
    assert!(took < Duration::from_secs(30), "the snapshot took {took:?}");
    // No pause: the same QEMU, no task left, and SEQ lines kept coming during
    // the snapshot, each 10 records and 10 ticks after the previous one.
    assert_eq!(vm1_after_snapshot["status"], "ACTIVE");
    assert!(vm1_after_snapshot["OS-EXT-STS:task_state"].is_null());
    assert_eq!(pid_after, pid_before);
    assert!(
        at_active.seqs.len() > before.seqs.len(),
        "no SEQ line printed during the {took:?} snapshot:\n{}",
        at_active.text
    );
    assert_eq!(
        after.banners.len(),
        1,
        "the guest rebooted:\n{}",
        after.text
    );
    assert_seqs_continuous(&after.seqs, &after);
    // A consistent prefix at the snapshot instant, the same everywhere.
    let from_s1 = *vm2_console.banners.last().unwrap();
    assert_eq!((from_s1.boot, from_s1.corrupt), (2, 0), "{vm2_console:?}");
    assert!(
        (before.last().seq..=upper).contains(&from_s1.last_seq),
        "last_seq {} outside [{}, {upper}]",
        from_s1.last_seq,
        before.last().seq
    );
    assert_eq!(log_of(&saved), (1, from_s1.last_seq, 0));
    // Rebuild: same server, a new boot on s1's data.
    assert_eq!(rebuilt["id"], vm1.as_str());
    assert_eq!(rebuilt["image"]["id"], s1_id);
    assert_eq!(
        vm1_console.banners,
        [
            Banner {
                boot: 1,
                last_seq: 0,
                corrupt: 0
            },
            from_s1
        ]
    );
    // The download: the frozen layer's content, hashed as Glance would.
    assert!(
        compared.status.success(),
        "qemu-img compare: {}{}",
        String::from_utf8_lossy(&compared.stdout),
        String::from_utf8_lossy(&compared.stderr)
    );
    assert_self_contained_qcow2(&saved);
    assert_eq!(hashed["checksum"], md5_hex(&saved).as_str());
    assert_eq!(hashed["size"], std::fs::metadata(&saved).unwrap().len());
    assert_pool_files_check_clean(&server);
    assert_only_needed_files(&server, "after the rebuild");
}

// ---- paused, suspended, stopped ---------------------------------------------

#[test]
fn snapshot_when_paused_suspended_or_shutoff_then_state_kept_and_server_continues() {
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let vm = boot(&server, &api, "vm1", "guest", 1, 1);

    // PAUSED: the guest is frozen; the snapshot holds what it had written.
    ok(server.openstack(&["server", "pause", "vm1"]));
    api.wait_settled(&vm, &["PAUSED"], ACTION);
    let paused = api.console(&vm);
    let p1 = snapshot(&server, "vm1", "p1");
    let still_paused = api.show(&vm);
    let console_while_paused = api.console(&vm);
    ok(server.openstack(&["server", "unpause", "vm1"]));
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let unpaused = api.wait_seq_above(&vm, paused.last().seq);

    // SUSPENDED: memory in a file, no QEMU; resume continues the same run.
    ok(server.openstack(&["server", "suspend", "vm1"]));
    api.wait_settled(&vm, &["SUSPENDED"], ACTION);
    let suspended = api.console(&vm);
    let u1 = snapshot(&server, "vm1", "u1");
    let still_suspended = api.show(&vm);
    ok(server.openstack(&["server", "resume", "vm1"]));
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let resumed = api.wait_seq_above(&vm, suspended.last().seq);

    // SHUTOFF: a clean stop; start boots again on the same disk.
    ok(server.openstack(&["server", "stop", "vm1"]));
    api.wait_settled(&vm, &["SHUTOFF"], ACTION);
    let stopped = api.console(&vm);
    let h1 = snapshot(&server, "vm1", "h1");
    let still_shutoff = api.show(&vm);
    ok(server.openstack(&["server", "start", "vm1"]));
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let started = api.wait_booted(&vm, 2, 1);

    let logs: Vec<(u64, u64, u64)> = ["p1", "u1", "h1"]
        .iter()
        .map(|name| {
            let saved = save(&server, name);
            assert_self_contained_qcow2(&saved);
            log_of(&saved)
        })
        .collect();

    for img in [&p1, &u1, &h1] {
        assert_eq!(img["status"], "active", "{img}");
        assert_eq!(property(img, "instance_uuid"), vm.as_str());
    }
    for (shown, status) in [
        (&still_paused, "PAUSED"),
        (&still_suspended, "SUSPENDED"),
        (&still_shutoff, "SHUTOFF"),
    ] {
        assert_eq!(shown["status"], status, "{shown}");
        assert!(shown["OS-EXT-STS:task_state"].is_null(), "{shown}");
    }
    // Paused: nothing printed meanwhile; the image holds the records written
    // up to the pause (at most the one whose SEQ line was not printed yet).
    let p = paused.last().seq;
    assert_eq!(console_while_paused.seqs, paused.seqs);
    assert_eq!(logs[0].0, 1);
    assert!(
        (p..=p + 10).contains(&logs[0].1),
        "p1 {:?}, paused at SEQ {p}",
        logs[0]
    );
    assert_eq!(logs[0].2, 0);
    // Suspended: same, and resume continued the same run (no banner, no gap).
    let s = suspended.last().seq;
    assert_eq!(logs[1].0, 1);
    assert!(
        (s..=s + 10).contains(&logs[1].1),
        "u1 {:?}, suspended at SEQ {s}",
        logs[1]
    );
    assert_eq!(logs[1].2, 0);
    assert_eq!(
        resumed.banners.len(),
        1,
        "resume rebooted:\n{}",
        resumed.text
    );
    assert_eq!(
        unpaused.banners.len(),
        1,
        "unpause rebooted:\n{}",
        unpaused.text
    );
    assert_seqs_continuous(&resumed.seqs, &resumed);
    // Shutoff: exactly what the guest had written when it stopped.
    let last_written = *stopped
        .stopped
        .last()
        .unwrap_or_else(|| panic!("no STOPPED line after a clean stop:\n{}", stopped.text));
    assert_eq!(logs[2], (1, last_written, 0));
    assert_eq!(
        started.banners.last(),
        Some(&Banner {
            boot: 2,
            last_seq: last_written,
            corrupt: 0
        })
    );
    assert_pool_files_check_clean(&server);
    assert_only_needed_files(&server, "after the three snapshots");
}

// ---- delete orders ------------------------------------------------------------

#[test]
fn images_and_servers_when_deleted_in_any_order_then_pool_keeps_only_needed_files() {
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    boot(&server, &api, "vm1", "guest", 1, 1);
    snapshot(&server, "vm1", "sa");
    snapshot(&server, "vm1", "sb");
    let vm2 = boot(&server, &api, "vm2", "sb", 2, 1);
    let with_all = assert_only_needed_files(&server, "with two servers and three images");

    // Image, then its server.
    ok(server.openstack(&["image", "delete", "sa"]));
    let after_sa = assert_only_needed_files(&server, "after deleting sa");
    ok(server.openstack(&["server", "delete", "--wait", "vm1"]));
    let after_vm1 = assert_only_needed_files(&server, "after deleting vm1");

    // The image a running server was booted from.
    let before_delete = api.console(&vm2).last();
    ok(server.openstack(&["image", "delete", "sb"]));
    let after_sb = assert_only_needed_files(&server, "after deleting sb");
    let vm2_writes = api.wait_seq_above(&vm2, before_delete.seq + 10);
    let vm2_shown = api.show(&vm2);

    // Server, then its image.
    snapshot(&server, "vm2", "sc");
    ok(server.openstack(&["server", "delete", "--wait", "vm2"]));
    let after_vm2 = assert_only_needed_files(&server, "after deleting vm2");
    let sc_saved = save(&server, "sc");
    ok(server.openstack(&["image", "delete", "sc"]));
    assert_only_needed_files(&server, "after deleting sc");
    let disks_left = names_in_pool(&server, "disks");
    ok(server.openstack(&["image", "delete", "guest"]));
    assert_only_needed_files(&server, "after deleting everything");

    // guest, vm1's top + 2 frozen layers, vm2's top.
    assert_eq!(with_all.len(), 5, "{with_all:?}");
    // sa's layer still backs sb's: nothing to free.
    assert_eq!(after_sa, with_all);
    // vm1's top goes; sb (and vm2) stand on the two layers.
    assert_eq!(after_vm1.len(), 4, "{after_vm1:?}");
    // Deleting sb frees nothing while vm2 stands on it, and vm2 runs on.
    assert_eq!(after_sb, after_vm1);
    assert_eq!(vm2_shown["status"], "ACTIVE");
    assert_eq!(vm2_writes.banners.len(), 1);
    // vm2's new top goes; sc keeps its layer and the layers under it.
    assert_eq!(after_vm2.len(), 4, "{after_vm2:?}");
    let (_, sc_last, sc_corrupt) = log_of(&sc_saved);
    assert!(
        sc_last > before_delete.seq && sc_corrupt == 0,
        "{sc_last} {sc_corrupt}"
    );
    assert_eq!(disks_left, Vec::<String>::new());
    assert_eq!(names_in_pool(&server, "images"), Vec::<String>::new());
    assert_eq!(names_in_pool(&server, "disks"), Vec::<String>::new());
    assert!(fails(server.openstack(&["image", "show", "sb"])).contains("sb"));
}

// ---- crash safety -----------------------------------------------------------------

/// What start-up recovery must make of a snapshot interrupted at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The image is gone, as if never requested.
    Undone,
    /// The image is active and usable.
    Finished,
}

/// The service dies (abort) at fault point `point` of a live snapshot of a
/// writing guest; after a restart without the fault, recovery reaches
/// `expected`, the server runs on untouched and the pool is clean.
fn snapshot_crash_at(point: &str, expected: Outcome) {
    let mut server = Server::start_with_env(&[("SNAPSTACK_FAULT_INJECT", point)]);
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let vm = boot(&server, &api, "vm1", "guest", 1, 1);
    let pid = qemu_pid(&server, &vm);
    let before = api.console(&vm).last();

    // The request may or may not be answered: the service dies meanwhile.
    let _ = server.openstack(&["server", "image", "create", "--name", "crash", "vm1"]);
    let died = server.wait_exit(Duration::from_secs(60));
    let dying_log = server.log();
    server.restart_with_env(&[]);
    let api = Api::new(&server);
    let shown = api.show(&vm);
    let listed = cli_json(&server, &["image", "list", "--name", "crash", "-f", "json"]);
    let after_restart = api.wait_seq_above(&vm, before.seq + 10);
    let needed = assert_only_needed_files(&server, "after recovery");
    let open = open_pool_files(pid);

    let died = died.unwrap_or_else(|| panic!("the service did not die at {point}"));
    assert!(!died.success(), "exit status {died}");
    assert!(
        dying_log.contains(&format!("fault injection: dying at {point}")),
        "log:\n{dying_log}"
    );
    match expected {
        Outcome::Undone => {
            assert_eq!(listed, json!([]), "the image survived the undo");
        }
        Outcome::Finished => {
            assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
            assert_eq!(listed[0]["Status"], "active", "{listed}");
            let saved = save(&server, "crash");
            assert_self_contained_qcow2(&saved);
            let (boot, last_seq, corrupt) = log_of(&saved);
            assert_eq!((boot, corrupt), (1, 0));
            assert!(
                (before.seq..=after_restart.last().seq).contains(&last_seq),
                "{last_seq} outside [{}, {}]",
                before.seq,
                after_restart.last().seq
            );
        }
    }
    // The server: untouched, same QEMU, still writing, on files that exist
    // and that its record needs.
    assert_eq!(shown["status"], "ACTIVE", "{shown}");
    assert!(shown["OS-EXT-STS:task_state"].is_null(), "{shown}");
    assert!(alive(pid), "QEMU {pid} died with the service");
    assert_eq!(qemu_pid(&server, &vm), pid);
    assert_eq!(after_restart.banners.len(), 1, "{}", after_restart.text);
    assert_seqs_continuous(&after_restart.seqs, &after_restart);
    assert!(!open.is_empty());
    for file in &open {
        assert!(
            needed.contains(Path::new(file)),
            "QEMU has {file} open, which no record needs (needed: {needed:?})"
        );
    }
    assert_pool_files_check_clean(&server);
}

#[test]
fn snapshot_crash_when_dying_at_begun_then_image_undone_and_server_runs_on() {
    snapshot_crash_at("snapshot:begun", Outcome::Undone);
}

#[test]
fn snapshot_crash_when_dying_at_overlay_then_image_finished_and_server_runs_on() {
    snapshot_crash_at("snapshot:overlay", Outcome::Finished);
}

#[test]
fn snapshot_crash_when_dying_at_switched_then_image_finished_and_server_runs_on() {
    snapshot_crash_at("snapshot:switched", Outcome::Finished);
}

#[test]
fn snapshot_crash_when_dying_at_published_then_image_finished_and_server_runs_on() {
    snapshot_crash_at("snapshot:published", Outcome::Finished);
}

#[test]
fn snapshot_when_qemu_killed_meanwhile_then_shutoff_with_fault_valid_chain_and_start_works() {
    let server = Server::start();
    let _log = LogOnFailure::new(&server);
    server.add_guest_image_and_flavor();
    let api = Api::new(&server);
    let vm = boot(&server, &api, "vm1", "guest", 1, 1);
    let pid = qemu_pid(&server, &vm);

    // The HTTP API, not the CLI: the kill must follow the request closely.
    let requested = api.admin.post(
        &format!("/compute/v2.1/servers/{vm}/action"),
        json!({"createImage": {"name": "k1"}}),
    );
    kill9(pid);
    let image_id = requested
        .header("location")
        .map(|l| l.rsplit('/').next().unwrap().to_string());
    let crashed = api.wait_settled(&vm, &["SHUTOFF", "ERROR"], ACTION);
    let image = image_id
        .as_deref()
        .and_then(|id| api.wait_image_settled(id));
    eprintln!(
        "QEMU killed during a snapshot: server {}, fault {}, image {}",
        crashed["status"],
        crashed["fault"]["message"],
        image
            .as_ref()
            .map_or("gone".into(), |i| i["status"].to_string())
    );
    assert_pool_files_check_clean(&server);
    assert_only_needed_files(&server, "after QEMU's death");
    ok(server.openstack(&["server", "start", "vm1"]));
    api.wait_settled(&vm, &["ACTIVE"], ACTION);
    let rebooted = api.wait_booted(&vm, 2, 1);

    assert_eq!(requested.status, 202, "{:?}", requested.body);
    assert!(
        crashed["fault"]["message"].is_string(),
        "no fault: {crashed}"
    );
    if let Some(img) = image.filter(|i| i["status"] == "active") {
        let saved = save(&server, img["id"].as_str().unwrap());
        assert_self_contained_qcow2(&saved);
        assert_eq!(log_of(&saved).2, 0);
    }
    assert_eq!(
        rebooted.banners.last().map(|b| (b.boot, b.corrupt)),
        Some((2, 0))
    );
}
