//! Test harness: starts the real `snapstack serve` binary on a free port
//! with its own data directory, and talks to it over HTTP (ureq) or through
//! the real `openstack` CLI.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const ADMIN_PASSWORD: &str = "admin-secret-pw";

/// A running `snapstack serve`, killed when dropped.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub port: u16,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// Extra environment of the service process (e.g. `SNAPSTACK_FAULT_INJECT`).
    env: Vec<(String, String)>,
}

fn owned_env(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts with extra `serve` flags (e.g. `--token-ttl 2`).
    pub fn start_with(extra: &[&str]) -> Server {
        Server::start_full(extra, &[])
    }

    /// Starts with extra environment variables for the service process
    /// (e.g. `SNAPSTACK_FAULT_INJECT`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Server {
        Server::start_full(&[], env)
    }

    /// Starts with extra `serve` flags and extra environment variables.
    pub fn start_full(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut server = Server {
            url: format!("http://127.0.0.1:{port}"),
            port,
            dir,
            child: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            env: owned_env(env),
        };
        server.spawn();
        server
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("serve.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_snapstack"))
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--admin-password")
            .arg(ADMIN_PASSWORD)
            .args(&self.extra_args)
            .env("HOME", self.dir.path())
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start snapstack");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if ureq::get(&format!("{}/identity/v3", self.url))
                .call()
                .is_ok()
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("snapstack exited at start-up ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("snapstack did not come up:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill and start again on the same data directory and port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kill and start again on the same data directory and port, with
    /// `env` as the service's extra environment (empty: none).
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.env = owned_env(env);
        self.restart();
    }

    /// Waits up to `within` for the service to exit by itself (a crash);
    /// its exit status, or `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.as_mut()?.try_wait().ok().flatten() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn admin(&self) -> Client {
        self.login("admin", ADMIN_PASSWORD, "admin")
    }

    pub fn login(&self, user: &str, password: &str, project: &str) -> Client {
        let token = self
            .try_login(user, password, project)
            .expect("login failed");
        Client {
            url: self.url.clone(),
            token,
        }
    }

    pub fn try_login(&self, user: &str, password: &str, project: &str) -> Result<String, u16> {
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}});
        match ureq::post(&format!("{}/identity/v3/auth/tokens", self.url)).send_json(body) {
            Ok(r) => Ok(r.header("x-subject-token").unwrap().to_string()),
            Err(ureq::Error::Status(code, _)) => Err(code),
            Err(e) => panic!("transport error: {e}"),
        }
    }

    /// Creates a project and a user holding `role` on it; logs in as it.
    pub fn user_with_role(&self, name: &str, role: &str) -> Client {
        let admin = self.admin();
        let project = admin.post(
            "/identity/v3/projects",
            json!({"project": {"name": format!("{name}-project")}}),
        );
        let pid = project.body["project"]["id"].as_str().unwrap().to_string();
        self.user_in_project(name, &pid, &format!("{name}-project"), role)
    }

    /// Creates a user holding `role` on an existing project; logs in as it.
    pub fn user_in_project(
        &self,
        name: &str,
        project_id: &str,
        project_name: &str,
        role: &str,
    ) -> Client {
        let admin = self.admin();
        let user = admin.post(
            "/identity/v3/users",
            json!({"user": {"name": name, "password": "pw-".to_string() + name}}),
        );
        let uid = user.body["user"]["id"].as_str().unwrap().to_string();
        let roles = admin.get(&format!("/identity/v3/roles?name={role}"));
        let rid = roles.body["roles"][0]["id"].as_str().unwrap().to_string();
        admin
            .put_empty(&format!(
                "/identity/v3/projects/{project_id}/users/{uid}/roles/{rid}"
            ))
            .expect_status(204);
        self.login(name, &format!("pw-{name}"), project_name)
    }

    /// The staging directory uploads are written to before inspection.
    pub fn staging_dir(&self) -> PathBuf {
        self.data_dir().join("staging")
    }

    /// The file pool's image directory.
    pub fn pool_images_dir(&self) -> PathBuf {
        self.data_dir().join("pool").join("images")
    }

    /// Names of the files in the staging directory.
    pub fn staging_files(&self) -> Vec<String> {
        file_names(&self.staging_dir())
    }

    /// Names of the files in the pool's image directory.
    pub fn pool_files(&self) -> Vec<String> {
        file_names(&self.pool_images_dir())
    }

    /// A request without a token.
    pub fn anonymous(&self, method: &str, path: &str) -> ureq::Request {
        ureq::request(method, &format!("{}{path}", self.url))
    }

    /// `GET path` without a token.
    pub fn get_anonymous(&self, path: &str) -> Reply {
        reply(self.anonymous("GET", path).call())
    }

    /// `POST /identity/v3/auth/tokens` with `body`; the whole reply.
    pub fn issue_token(&self, body: Value) -> Reply {
        reply(
            self.anonymous("POST", "/identity/v3/auth/tokens")
                .send_json(body),
        )
    }

    /// Runs the real `openstack` CLI as the admin against this server.
    pub fn openstack(&self, args: &[&str]) -> Output {
        openstack_cli()
            .env("OS_CLIENT_CONFIG_FILE", self.data_dir().join("clouds.yaml"))
            .env("HOME", self.dir.path())
            .arg("--os-cloud")
            .arg("snapstack")
            .args(args)
            .output()
            .expect("cannot run the openstack CLI")
    }

    /// Runs the `openstack` CLI as another user.
    pub fn openstack_as(&self, user: &str, password: &str, project: &str, args: &[&str]) -> Output {
        openstack_cli()
            .env("HOME", self.dir.path())
            .env("OS_AUTH_URL", format!("{}/identity/v3", self.url))
            .env("OS_USERNAME", user)
            .env("OS_PASSWORD", password)
            .env("OS_PROJECT_NAME", project)
            .env("OS_USER_DOMAIN_NAME", "Default")
            .env("OS_PROJECT_DOMAIN_NAME", "Default")
            .env("OS_IDENTITY_API_VERSION", "3")
            .args(args)
            .output()
            .expect("cannot run the openstack CLI")
    }
}

/// A password-method auth body, scoped to `project` (by name) if given.
pub fn password_auth(user: &str, password: &str, project: Option<&str>) -> Value {
    let mut body = json!({"auth": {"identity": {"methods": ["password"],
        "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}}}}});
    if let Some(p) = project {
        body["auth"]["scope"] = json!({"project": {"name": p, "domain": {"id": "default"}}});
    }
    body
}

/// Sorted names of the entries of `dir` (empty if it does not exist).
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

impl Drop for Server {
    /// Kills the service, then the QEMU processes it started (they outlive
    /// it on purpose), so that a failed test leaks no VM.
    fn drop(&mut self) {
        self.kill();
        for pid in self.qemu_pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        // The service's networks outlive it on purpose, as its VMs do.
        if self.data_dir().exists() {
            let _ = Command::new(env!("CARGO_BIN_EXE_snapstack"))
                .args(["network", "teardown", "--data-dir"])
                .arg(self.data_dir())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The `openstack` program: `$SNAPSTACK_OPENSTACK` or `.venv/bin/openstack`
/// at the repository root (made by scripts/install-deps.sh).
pub fn openstack_cli() -> Command {
    let path = std::env::var_os("SNAPSTACK_OPENSTACK")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/openstack"));
    assert!(
        path.exists(),
        "the openstack CLI is not at {} — run scripts/install-deps.sh or set SNAPSTACK_OPENSTACK",
        path.display()
    );
    Command::new(path)
}

/// Asserts a CLI run succeeded; returns its stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "openstack failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Asserts a CLI run failed; returns its stderr.
pub fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "openstack unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// An HTTP response: status, headers we care about, body as JSON (or Null).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub raw: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn expect_status(self, status: u16) -> Reply {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.raw)
        );
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The error message of an error reply.
    pub fn message(&self) -> String {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Reads a ureq result (a 4xx/5xx is a reply too) into a [`Reply`].
pub fn reply(result: Result<ureq::Response, ureq::Error>) -> Reply {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .filter_map(|n| response.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let mut raw = Vec::new();
    response.into_reader().read_to_end(&mut raw).unwrap();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Reply {
        status,
        body,
        raw,
        headers,
    }
}

/// An authenticated HTTP client.
#[derive(Clone, Debug)]
pub struct Client {
    pub url: String,
    pub token: String,
}

impl Client {
    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        ureq::request(method, &format!("{}{path}", self.url)).set("X-Auth-Token", &self.token)
    }

    pub fn get(&self, path: &str) -> Reply {
        reply(self.request("GET", path).call())
    }

    pub fn delete(&self, path: &str) -> Reply {
        reply(self.request("DELETE", path).call())
    }

    pub fn post(&self, path: &str, body: Value) -> Reply {
        reply(self.request("POST", path).send_json(body))
    }

    pub fn post_raw(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        reply(
            self.request("POST", path)
                .set("Content-Type", content_type)
                .send_bytes(body),
        )
    }

    pub fn put_empty(&self, path: &str) -> Reply {
        reply(self.request("PUT", path).call())
    }

    pub fn put_bytes(&self, path: &str, body: &[u8]) -> Reply {
        reply(
            self.request("PUT", path)
                .set("Content-Type", "application/octet-stream")
                .send_bytes(body),
        )
    }

    pub fn patch(&self, path: &str, content_type: &str, body: Value) -> Reply {
        reply(
            self.request("PATCH", path)
                .set("Content-Type", content_type)
                .send_string(&body.to_string()),
        )
    }

    /// Creates an image record; returns its id.
    pub fn create_image(&self, body: Value) -> String {
        let r = self.post("/image/v2/images", body).expect_status(201);
        r.body["id"].as_str().unwrap().to_string()
    }

    /// Creates an image and uploads `data`; returns the id and the upload reply.
    pub fn upload_image(&self, name: &str, disk_format: &str, data: &[u8]) -> (String, Reply) {
        let id = self.create_image(
            json!({"name": name, "disk_format": disk_format, "container_format": "bare"}),
        );
        let r = self.put_bytes(&format!("/image/v2/images/{id}/file"), data);
        (id, r)
    }

    pub fn image(&self, id: &str) -> Value {
        self.get(&format!("/image/v2/images/{id}"))
            .expect_status(200)
            .body
    }

    /// The id of the project this client's token is scoped to.
    /// Lifts the compute and volume quotas of this client's project (an
    /// admin's): for tests that make more than OpenStack's defaults allow.
    pub fn unlimited_quotas(&self) {
        let pid = self.project_id();
        let compute = json!({"quota_set": {"instances": -1, "cores": -1, "ram": -1}});
        let volume = json!({"quota_set": {"volumes": -1, "snapshots": -1, "gigabytes": -1}});
        for (path, body) in [
            (format!("/compute/v2.1/os-quota-sets/{pid}"), compute),
            (format!("/volume/v3/{pid}/os-quota-sets/{pid}"), volume),
        ] {
            let status = reply(self.request("PUT", &path).send_json(body)).status;
            assert_eq!(status, 200, "PUT {path}");
        }
    }

    pub fn project_id(&self) -> String {
        let r = reply(
            self.request("GET", "/identity/v3/auth/tokens?nocatalog")
                .set("X-Subject-Token", &self.token)
                .call(),
        );
        r.expect_status(200).body["token"]["project"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `GET path` with one extra header.
    pub fn get_with(&self, path: &str, header: &str, value: &str) -> Reply {
        reply(self.request("GET", path).set(header, value).call())
    }

    /// Polls an image until its status is `status` (panics after 10 s).
    pub fn wait_image_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let img = self.image(id);
            if img["status"] == status {
                return img;
            }
            assert!(
                Instant::now() < deadline,
                "image {id} never became {status}: {img}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs a command (qemu-img, …) and asserts success.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A small valid qcow2 image (qemu-img create) with some data written.
pub fn make_qcow2(dir: &Path, name: &str, size: &str) -> PathBuf {
    let path = dir.join(name);
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", path.to_str().unwrap(), size],
    );
    path
}

/// The test guest's directory: `$SNAPSTACK_GUEST_DIR`, else `<repo>/build/guest`.
pub fn guest_dir() -> PathBuf {
    std::env::var_os("SNAPSTACK_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/guest"))
}

/// The test guest's bootable disk; panics with what to run when it is missing.
pub fn guest_disk() -> PathBuf {
    let disk = guest_dir().join("guest.qcow2");
    assert!(
        disk.is_file(),
        "the test guest is not at {} — run scripts/build-guest.sh (or set SNAPSTACK_GUEST_DIR)",
        disk.display()
    );
    disk
}

/// Pids of the processes whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(needle)
        })
        .collect();
    pids.sort();
    pids
}

impl Server {
    /// Uploads the test guest (`guest_disk()`) as image `guest` and creates
    /// flavor `tiny` (1 vCPU, 256 MiB, 1 GiB disk); returns the image id.
    pub fn add_guest_image_and_flavor(&self) -> String {
        let data = std::fs::read(guest_disk()).unwrap();
        let admin = self.admin();
        let (id, upload) = admin.upload_image("guest", "qcow2", &data);
        upload.expect_status(204);
        let flavor =
            json!({"flavor": {"id": "tiny", "name": "tiny", "vcpus": 1, "ram": 256, "disk": 1}});
        admin
            .post("/compute/v2.1/flavors", flavor)
            .expect_status(200);
        id
    }

    /// Pids of the QEMU processes this server started: their command line
    /// names its data directory.
    pub fn qemu_pids(&self) -> Vec<u32> {
        let dir = self
            .data_dir()
            .canonicalize()
            .unwrap_or_else(|_| self.data_dir());
        pids_with_cmdline(&format!("{}/instances/", dir.display()))
            .into_iter()
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|exe| exe.to_string_lossy().contains("qemu"))
            })
            .collect()
    }
}
