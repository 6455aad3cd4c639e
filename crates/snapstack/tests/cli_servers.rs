//! Acceptance: servers on real QEMU (TCG) driven by the real `openstack` CLI,
//! asserting what a user sees — status, console lines of the project's test
//! guest (`SNAPSTACK-GUEST boot=… last_seq=…`, `SEQ n ram=k`), processes and
//! files on the host.
//!
//! Each test is a scenario that boots few guests (2 cores, TCG): run with
//! `-- --test-threads=2`. Needs the test guest (`scripts/build-guest.sh`,
//! `$SNAPSTACK_GUEST_DIR`) and the CLI (`scripts/install-deps.sh`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{fails, file_names, ok, pids_with_cmdline, reply, Client, Server};
use serde_json::{json, Value};

/// Longest wait for a guest to boot to its banner (TCG on a busy machine).
const BOOT: Duration = Duration::from_secs(120);
/// Longest wait for an action to settle.
const ACTION: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

fn parse_json(out: String) -> Value {
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

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
#[derive(Debug, Clone, PartialEq, Eq)]
struct Console {
    text: String,
    banners: Vec<Banner>,
    seqs: Vec<Seq>,
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

impl Console {
    fn parse(text: &str) -> Console {
        let mut banners = Vec::new();
        let mut seqs = Vec::new();
        for line in text.lines() {
            if let Some(at) = line.find("SNAPSTACK-GUEST ") {
                let rest = &line[at..];
                if let (Some(boot), Some(last_seq), Some(corrupt)) = (
                    field(rest, "boot"),
                    field(rest, "last_seq"),
                    field(rest, "corrupt"),
                ) {
                    banners.push(Banner {
                        boot,
                        last_seq,
                        corrupt,
                    });
                }
            } else if let Some(at) = line.find("SEQ ") {
                let mut words = line[at + 4..].split_whitespace();
                let seq = words.next().and_then(|w| w.parse().ok());
                let ram = words
                    .next()
                    .and_then(|w| w.strip_prefix("ram=")?.parse().ok());
                if let (Some(seq), Some(ram)) = (seq, ram) {
                    seqs.push(Seq { seq, ram });
                }
            }
        }
        Console {
            text: text.to_string(),
            banners,
            seqs,
        }
    }

    fn last_seq(&self) -> Option<Seq> {
        self.seqs.last().copied()
    }

    /// The SEQ lines printed after the last banner.
    fn seqs_since_last_boot(&self) -> Vec<Seq> {
        let Some(at) = self.text.rfind("SNAPSTACK-GUEST ") else {
            return Vec::new();
        };
        Console::parse(&self.text[at..]).seqs
    }
}

/// The compute API as the admin, for polling (the CLI takes seconds a call).
struct Compute {
    admin: Client,
}

impl Compute {
    fn new(server: &Server) -> Compute {
        Compute {
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

    /// Polls until the server's status is `status`.
    fn wait_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let server = self.show(id);
            if server["status"] == status && server["OS-EXT-STS:task_state"].is_null() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "server {id} never became {status}: {server}"
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

    /// Waits for boot number `boot`'s banner and a SEQ line after it.
    fn wait_booted(&self, id: &str, boot: u64) -> Console {
        self.wait_console(id, &format!("boot={boot} and a SEQ line"), BOOT, |c| {
            c.banners.last().is_some_and(|b| b.boot == boot) && !c.seqs_since_last_boot().is_empty()
        })
    }

    fn action(&self, id: &str, body: Value) -> common::Reply {
        self.admin
            .post(&format!("/compute/v2.1/servers/{id}/action"), body)
    }
}

/// The message of a Nova error body (`{"badRequest": {"code": 400, "message": …}}`).
fn nova_message(reply: &common::Reply) -> String {
    let fault = reply.body.as_object().and_then(|o| o.values().next());
    fault
        .and_then(|f| f["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// `openstack server create … --wait NAME`; returns the server as JSON.
fn create_server(server: &Server, name: &str) -> Value {
    parse_json(ok(server.openstack(&[
        "server",
        "create",
        "--image",
        "guest",
        "--flavor",
        "tiny",
        "--no-network",
        "--wait",
        "-f",
        "json",
        name,
    ])))
}

/// Names in `dir` that mention `id`.
fn files_of(dir: &Path, id: &str) -> Vec<String> {
    file_names(dir)
        .into_iter()
        .filter(|n| n.contains(id))
        .collect()
}

fn qemu_of(id: &str) -> Vec<u32> {
    pids_with_cmdline(&format!("guest={id},"))
}

#[test]
fn server_lifecycle_when_stopped_started_rebooted_and_deleted_then_guest_and_host_agree() {
    let server = Server::start();
    server.add_guest_image_and_flavor();
    let compute = Compute::new(&server);

    let created = create_server(&server, "vm1");
    let id = created["id"].as_str().unwrap().to_string();
    let first = compute.wait_booted(&id, 1);
    let shown = ok(server.openstack(&["console", "log", "show", "vm1"]));
    let start_active = fails(server.openstack(&["server", "start", "vm1"]));
    let seen_before_stop = compute.console(&id).last_seq().unwrap();
    ok(server.openstack(&["server", "stop", "vm1"]));
    compute.wait_status(&id, "SHUTOFF", ACTION);
    ok(server.openstack(&["server", "start", "vm1"]));
    let second = compute.wait_booted(&id, 2);
    ok(server.openstack(&["server", "reboot", "--hard", "--wait", "vm1"]));
    let third = compute.wait_booted(&id, 3);
    ok(server.openstack(&["server", "delete", "--wait", "vm1"]));

    assert_eq!(created["status"], "ACTIVE");
    assert_eq!(
        first.banners,
        [Banner {
            boot: 1,
            last_seq: 0,
            corrupt: 0
        }]
    );
    assert!(
        shown.contains("SNAPSTACK-GUEST boot=1 last_seq=0 corrupt=0 disk=vda"),
        "console:\n{shown}"
    );
    assert!(start_active.contains("409"), "stderr: {start_active}");
    let after_stop = second.banners[1];
    assert_eq!((after_stop.boot, after_stop.corrupt), (2, 0));
    assert!(
        after_stop.last_seq >= seen_before_stop.seq,
        "{after_stop:?} lost records before {seen_before_stop:?}"
    );
    assert_eq!(
        third.banners.iter().map(|b| b.boot).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(third.banners[2].corrupt, 0);
    assert_eq!(qemu_of(&id), Vec::<u32>::new());
    let data = server.data_dir();
    for dir in [
        data.join("instances"),
        data.join("pool").join("disks"),
        data.join("state"),
    ] {
        assert_eq!(
            files_of(&dir, &id),
            Vec::<String>::new(),
            "left in {}",
            dir.display()
        );
    }
    assert_eq!(
        ok(server.openstack(&["image", "show", "guest", "-f", "value", "-c", "status"])),
        "active"
    );
    assert!(fails(server.openstack(&["server", "show", "vm1"])).contains("No Server found for vm1"));
}

#[test]
fn pause_and_suspend_when_resumed_then_guest_continues_without_reboot() {
    let server = Server::start();
    server.add_guest_image_and_flavor();
    let compute = Compute::new(&server);
    let id = create_server(&server, "vm1")["id"]
        .as_str()
        .unwrap()
        .to_string();
    compute.wait_booted(&id, 1);

    // pause: the guest stops (its console does not change), unpause: it goes on.
    ok(server.openstack(&["server", "pause", "vm1"]));
    compute.wait_status(&id, "PAUSED", ACTION);
    let paused = compute.console(&id);
    let while_paused: Vec<Console> = (0..8)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(400));
            compute.console(&id)
        })
        .collect();
    ok(server.openstack(&["server", "unpause", "vm1"]));
    compute.wait_status(&id, "ACTIVE", ACTION);
    let paused_at = paused.last_seq().unwrap();
    let unpaused = compute.wait_console(&id, "SEQ after unpause", ACTION, |c| {
        c.last_seq().unwrap().seq > paused_at.seq
    });

    // suspend: memory to a file, no QEMU; a second action meanwhile is refused.
    ok(server.openstack(&["server", "suspend", "vm1"]));
    let second_action = compute.action(&id, json!({"pause": null}));
    let suspended = compute.wait_status(&id, "SUSPENDED", ACTION);
    let state_files = files_of(&server.data_dir().join("state"), &id);
    let qemu_while_suspended = qemu_of(&id);
    let before_resume = compute.console(&id);
    ok(server.openstack(&["server", "resume", "vm1"]));
    compute.wait_status(&id, "ACTIVE", ACTION);
    let last = before_resume.last_seq().unwrap();
    let resumed = compute.wait_console(&id, "SEQ after resume", ACTION, |c| {
        c.last_seq().unwrap().seq > last.seq
    });

    assert!(
        while_paused.iter().all(|c| *c == paused),
        "the console changed while paused"
    );
    assert_eq!(
        unpaused.banners.len(),
        1,
        "unpause rebooted the guest:\n{}",
        unpaused.text
    );
    assert_eq!(second_action.status, 409, "{:?}", second_action.body);
    assert_eq!(suspended["OS-EXT-STS:power_state"], 7);
    assert_eq!(state_files, [format!("{id}.state")]);
    assert_eq!(qemu_while_suspended, Vec::<u32>::new());
    assert_eq!(
        resumed.banners.len(),
        1,
        "resume rebooted the guest:\n{}",
        resumed.text
    );
    let first_after = resumed.seqs[before_resume.seqs.len()];
    assert_eq!(
        first_after,
        Seq {
            seq: last.seq + 10,
            ram: last.ram + 10
        },
        "after {last:?}"
    );
    assert_eq!(
        files_of(&server.data_dir().join("state"), &id),
        Vec::<String>::new()
    );
}

#[test]
fn two_servers_when_booted_from_one_image_then_each_has_its_own_disk() {
    let server = Server::start();
    server.add_guest_image_and_flavor();
    let compute = Compute::new(&server);
    let a = create_server(&server, "vm-a")["id"]
        .as_str()
        .unwrap()
        .to_string();
    compute.wait_console(&a, "SEQ 20 on vm-a", BOOT, |c| {
        c.last_seq().is_some_and(|s| s.seq >= 20)
    });

    let b = create_server(&server, "vm-b")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_console = compute.wait_booted(&b, 1);
    let a_console = compute.console(&a);
    let bob_client = server.user_with_role("bob", "member");
    let bob = |args: &[&str]| server.openstack_as("bob", "pw-bob", "bob-project", args);
    let bob_show = fails(bob(&["server", "show", &a]));
    let bob_stop = fails(bob(&["server", "stop", &a]));
    let bob_list = ok(bob(&["server", "list", "-f", "value", "-c", "ID"]));
    let bob_http = bob_client.get(&format!("/compute/v2.1/servers/{a}"));

    assert_eq!(
        a_console.banners,
        [Banner {
            boot: 1,
            last_seq: 0,
            corrupt: 0
        }]
    );
    assert_eq!(
        b_console.banners,
        [Banner {
            boot: 1,
            last_seq: 0,
            corrupt: 0
        }]
    );
    assert_eq!(b_console.seqs[0].seq, 10);
    assert!(a_console.last_seq().unwrap().seq > b_console.last_seq().unwrap().seq);
    let disks = file_names(&server.data_dir().join("pool").join("disks"));
    assert_eq!(disks.len(), 2, "{disks:?}");
    assert!(
        bob_show.contains(&format!("No Server found for {a}")),
        "stderr: {bob_show}"
    );
    assert!(
        bob_stop.contains(&format!("No Server found for {a}")),
        "stderr: {bob_stop}"
    );
    assert_eq!(bob_list, "");
    assert_eq!(bob_http.status, 404);
    assert_eq!(compute.show(&a)["status"], "ACTIVE");
}

#[test]
fn server_requests_when_bad_then_4xx_without_any_server() {
    let server = Server::start();
    let image = server.add_guest_image_and_flavor();
    let admin = server.admin();
    let create = |body: Value| admin.post("/compute/v2.1/servers", body);
    let good = |image: &str, flavor: &str| json!({"server": {"name": "x", "imageRef": image, "flavorRef": flavor, "networks": "none"}});
    let unknown_id = "5f2b4a4e-1b64-4d0c-9a57-000000000000";

    let unknown_image = create(good(unknown_id, "tiny"));
    let unknown_flavor = create(good(&image, "huge"));
    let mut extra = good(&image, "tiny");
    extra["server"]["colour"] = json!("blue");
    let unknown_field = create(extra);
    let malformed = admin.post_raw(
        "/compute/v2.1/servers",
        "application/json",
        b"{\"server\": {",
    );
    let show_nope = fails(server.openstack(&["server", "show", "nope"]));
    let show_unknown = admin.get(&format!("/compute/v2.1/servers/{unknown_id}"));
    let too_new = admin.get_with(
        "/compute/v2.1/servers",
        "OpenStack-API-Version",
        "compute 2.999",
    );
    let latest = admin.get_with(
        "/compute/v2.1/servers",
        "OpenStack-API-Version",
        "compute latest",
    );
    let cli_unknown_flavor = fails(server.openstack(&[
        "server",
        "create",
        "--image",
        "guest",
        "--flavor",
        "huge",
        "--no-network",
        "x",
    ]));

    assert_eq!(unknown_image.status, 400, "{:?}", unknown_image.body);
    assert!(
        nova_message(&unknown_image).contains(unknown_id),
        "{:?}",
        unknown_image.body
    );
    assert_eq!(unknown_flavor.status, 400, "{:?}", unknown_flavor.body);
    assert_eq!(unknown_field.status, 400, "{:?}", unknown_field.body);
    assert!(
        nova_message(&unknown_field).contains("colour"),
        "{:?}",
        unknown_field.body
    );
    assert_eq!(malformed.status, 400);
    assert!(
        show_nope.contains("No Server found for nope"),
        "stderr: {show_nope}"
    );
    assert_eq!(show_unknown.status, 404);
    assert_eq!(too_new.status, 406);
    assert_eq!(latest.status, 200);
    assert_eq!(latest.header("OpenStack-API-Version"), Some("compute 2.79"));
    assert!(
        cli_unknown_flavor.contains("huge"),
        "stderr: {cli_unknown_flavor}"
    );
    let listed = reply(admin.request("GET", "/compute/v2.1/servers").call()).expect_status(200);
    assert_eq!(listed.body["servers"], json!([]));
    assert_eq!(server.qemu_pids(), Vec::<u32>::new());
}

#[test]
fn service_and_qemu_when_killed_then_vm_outlives_service_and_death_is_reported() {
    let mut server = Server::start();
    server.add_guest_image_and_flavor();
    let id = create_server(&server, "vm1")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = Compute::new(&server).wait_booted(&id, 1);
    let pids_before = qemu_of(&id);

    server.restart();
    let compute = Compute::new(&server);
    let after_restart = parse_json(ok(
        server.openstack(&["server", "show", "-f", "json", "vm1"])
    ));
    let pids_after = qemu_of(&id);
    let last = before.last_seq().unwrap();
    compute.wait_console(&id, "SEQ after the restart", ACTION, |c| {
        c.last_seq().unwrap().seq > last.seq
    });
    for pid in &pids_after {
        ok_kill(*pid);
    }
    compute.wait_status(&id, "SHUTOFF", Duration::from_secs(10));
    let crashed = parse_json(ok(
        server.openstack(&["server", "show", "-f", "json", "vm1"])
    ));
    ok(server.openstack(&["server", "start", "vm1"]));
    let rebooted = compute.wait_booted(&id, 2);

    assert_eq!(pids_before.len(), 1);
    assert_eq!(after_restart["status"], "ACTIVE");
    assert_eq!(pids_after, pids_before);
    assert_eq!(crashed["status"], "SHUTOFF");
    let fault = crashed["fault"]["message"].as_str().unwrap_or_default();
    assert!(fault.contains("QEMU"), "fault: {}", crashed["fault"]);
    assert_eq!(
        rebooted.banners.iter().map(|b| b.boot).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(rebooted.banners[1].corrupt, 0);
}

/// SIGKILL, as a crash of QEMU would.
fn ok_kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {pid} failed");
}
