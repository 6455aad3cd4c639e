//! Shared by the snapshot acceptance tests (`cli_snapshots.rs`,
//! `cli_snapshot_crash.rs`): the test guest's console parsed into banners and
//! sequence lines, a small HTTP client, and the pool checks ("only files some
//! record needs", `qemu-img check` of every file).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{ok, run, Client, Server};
use serde_json::{json, Value};

/// Longest wait for a guest to boot to its banner (TCG on a busy machine).
pub const BOOT: Duration = Duration::from_secs(180);
/// Longest wait for an action or a snapshot to settle.
pub const ACTION: Duration = Duration::from_secs(90);
pub const POLL: Duration = Duration::from_millis(200);

// ---- the guest's console -------------------------------------------------

/// `SNAPSTACK-GUEST boot=<n> last_seq=<m> corrupt=<k> disk=<d>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Banner {
    pub boot: u64,
    pub last_seq: u64,
    pub corrupt: u64,
}

/// `SEQ <n> ram=<k>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seq {
    pub seq: u64,
    pub ram: u64,
}

/// A guest's console, parsed.
#[derive(Debug, Clone)]
pub struct Console {
    pub text: String,
    pub banners: Vec<Banner>,
    pub seqs: Vec<Seq>,
    /// `STOPPED last_seq=<m>`: the writer's last record at a clean stop.
    pub stopped: Vec<u64>,
}

pub fn field(text: &str, key: &str) -> Option<u64> {
    text.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

impl Console {
    pub fn parse(text: &str) -> Console {
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
    pub fn last(&self) -> Seq {
        *self
            .seqs
            .last()
            .unwrap_or_else(|| panic!("no SEQ line on the console:\n{}", self.text))
    }

    /// The SEQ lines printed since the last banner.
    pub fn seqs_since_last_boot(&self) -> Vec<Seq> {
        match self.text.rfind("SNAPSTACK-GUEST ") {
            Some(at) => Console::parse(&self.text[at..]).seqs,
            None => Vec::new(),
        }
    }

    /// The first SEQ line whose number is above `seq`.
    pub fn first_above(&self, seq: u64) -> Option<Seq> {
        self.seqs.iter().copied().find(|s| s.seq > seq)
    }
}

/// Asserts that consecutive SEQ lines step by exactly 10 records and 10 ticks
/// (one print every 10 ticks of 100 ms): no record lost, no reboot, no
/// restore of an older memory state in between.
pub fn assert_seqs_continuous(seqs: &[Seq], console: &Console) {
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
pub struct Api {
    pub admin: Client,
}

impl Api {
    pub fn new(server: &Server) -> Api {
        Api {
            admin: server.admin(),
        }
    }

    pub fn show(&self, id: &str) -> Value {
        self.admin
            .get(&format!("/compute/v2.1/servers/{id}"))
            .expect_status(200)
            .body["server"]
            .clone()
    }

    pub fn console(&self, id: &str) -> Console {
        let r = self.admin.post(
            &format!("/compute/v2.1/servers/{id}/action"),
            json!({"os-getConsoleOutput": {}}),
        );
        Console::parse(r.expect_status(200).body["output"].as_str().unwrap())
    }

    /// Polls until the server has one of `statuses` and no task.
    pub fn wait_settled(&self, id: &str, statuses: &[&str], within: Duration) -> Value {
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
    pub fn wait_console(
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
    pub fn wait_booted(&self, id: &str, boot: u64, lines: usize) -> Console {
        let what = format!("boot={boot} and {lines} SEQ lines");
        self.wait_console(id, &what, BOOT, |c| {
            c.banners.last().is_some_and(|b| b.boot == boot)
                && c.seqs_since_last_boot().len() >= lines
        })
    }

    /// Waits for a SEQ line above `seq`: the guest is writing.
    pub fn wait_seq_above(&self, id: &str, seq: u64) -> Console {
        self.wait_console(id, &format!("a SEQ line above {seq}"), ACTION, |c| {
            c.seqs.last().is_some_and(|s| s.seq > seq)
        })
    }

    /// The image as the image API shows it, `None` when it is gone (404).
    pub fn image(&self, id: &str) -> Option<Value> {
        let r = self.admin.get(&format!("/image/v2/images/{id}"));
        match r.status {
            404 => None,
            200 => Some(r.body),
            other => panic!("image {id}: unexpected status {other}: {:?}", r.body),
        }
    }

    /// Polls until the image is gone or in a final state (not queued/saving).
    pub fn wait_image_settled(&self, id: &str) -> Option<Value> {
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
    pub fn wait_checksum(&self, id: &str) -> Value {
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

pub fn cli_json(server: &Server, args: &[&str]) -> Value {
    let out = ok(server.openstack(args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `server create --wait` from `image`; returns the server's id once its
/// guest has printed `lines` SEQ lines after boot number `boot`.
pub fn boot(
    server: &Server,
    api: &Api,
    name: &str,
    image: &str,
    boot: u64,
    lines: usize,
) -> String {
    let created = cli_json(
        server,
        &[
            "server",
            "create",
            "--image",
            image,
            "--flavor",
            "tiny",
            "--no-network",
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
pub fn snapshot(server: &Server, vm: &str, name: &str) -> Value {
    ok(server.openstack(&["server", "image", "create", "--wait", "--name", name, vm]));
    image_show(server, name)
}

pub fn image_show(server: &Server, name: &str) -> Value {
    cli_json(server, &["image", "show", "-f", "json", name])
}

/// `image save --file` into the test's directory.
pub fn save(server: &Server, name: &str) -> PathBuf {
    let file = server.dir.path().join(format!("{name}.saved"));
    ok(server.openstack(&["image", "save", "--file", file.to_str().unwrap(), name]));
    file
}

/// What `scripts/guest-check.py` reads from a disk: `{boot, last_seq, corrupt}`.
pub fn guest_check(disk: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/guest-check.py");
    let out = run(
        "python3",
        &[script.to_str().unwrap(), disk.to_str().unwrap()],
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("guest-check.py: not JSON ({e}): {out}"))
}

/// The guest's log as (boot, last_seq, corrupt).
pub fn log_of(disk: &Path) -> (u64, u64, u64) {
    let v = guest_check(disk);
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k}: {v}"));
    (n("boot"), n("last_seq"), n("corrupt"))
}

/// A downloaded image is a valid qcow2 of its own (no backing file).
pub fn assert_self_contained_qcow2(file: &Path) {
    let info: Value = serde_json::from_str(&run(
        "qemu-img",
        &["info", "--output=json", file.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(info["format"], "qcow2", "{info}");
    assert!(info["backing-filename"].is_null(), "{info}");
    run("qemu-img", &["check", "-q", file.to_str().unwrap()]);
}

pub fn md5_hex(file: &Path) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(std::fs::read(file).unwrap()))
}

// ---- QEMU and the pool ---------------------------------------------------

/// The pid of the server's QEMU, from `<data>/instances/<id>/qemu.pid`.
pub fn qemu_pid(server: &Server, id: &str) -> u32 {
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

pub fn alive(pid: u32) -> bool {
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
pub fn open_pool_files(pid: u32) -> Vec<String> {
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

pub fn kill9(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {pid} failed");
}

/// Every file under `<data>/pool/images` and `<data>/pool/disks`.
pub fn pool_files(server: &Server) -> BTreeSet<PathBuf> {
    let pool = server.data_dir().join("pool");
    ["images", "disks"]
        .iter()
        .flat_map(|d| std::fs::read_dir(pool.join(d)).into_iter().flatten())
        .filter_map(|e| e.ok()?.path().canonicalize().ok())
        .collect()
}

/// Names of the files under `<data>/pool/<dir>`.
pub fn names_in_pool(server: &Server, dir: &str) -> Vec<String> {
    crate::common::file_names(&server.data_dir().join("pool").join(dir))
}

/// The files some record needs: the root disks of the servers that are not
/// deleted, the data of the active (or deactivated) images and of the
/// volumes and volume snapshots that are not deleted, as the service's
/// database holds them, each with its whole backing chain.
pub fn needed_files(server: &Server) -> BTreeSet<PathBuf> {
    const QUERY: &str = "import sqlite3, sys\n\
        db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
        rows = db.execute(\"SELECT root_disk FROM servers WHERE vm_state <> 'deleted' AND root_disk IS NOT NULL \
        UNION ALL SELECT location FROM images WHERE status IN ('active', 'deactivated') AND location IS NOT NULL \
        UNION ALL SELECT location FROM volumes WHERE status <> 'deleted' AND location IS NOT NULL \
        UNION ALL SELECT location FROM volume_snapshots WHERE status <> 'deleted' AND location IS NOT NULL\")\n\
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
pub fn assert_only_needed_files(server: &Server, when: &str) -> BTreeSet<PathBuf> {
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
pub fn assert_pool_files_check_clean(server: &Server) {
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
pub struct LogOnFailure(pub PathBuf);

impl LogOnFailure {
    pub fn new(server: &Server) -> LogOnFailure {
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

pub fn property<'a>(image: &'a Value, key: &str) -> &'a Value {
    &image["properties"][key]
}

// ---- live snapshot, boot from it, rebuild to it, download it ---------------
