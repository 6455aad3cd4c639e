//! `snapstack restore-point …`: a client of the restore-point API
//! (`/compute/v2.1/servers/{id}/restore-points`), authenticated like the
//! `openstack` CLI (`OS_AUTH_URL`, `OS_USERNAME`, `OS_PASSWORD`,
//! `OS_PROJECT_NAME`). Servers and points are named by id or by name.
//! `create` and `revert` wait for the work to finish (unless `--no-wait`),
//! showing its progress on stderr.

mod http;
mod tree;

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use clap::Subcommand;
use serde_json::{json, Value};

pub use http::Credentials;
use http::{is_uuid, Session};

/// How long `--wait` waits at most.
const WAIT_LIMIT: Duration = Duration::from_secs(600);

#[derive(Subcommand, Debug)]
pub enum RestorePointCommand {
    /// Take a restore point of a server.
    Create {
        server: String,
        #[arg(long)]
        name: String,
        /// Save the RAM too (revert resumes the guest where it was).
        #[arg(long)]
        memory: bool,
        /// external (new overlays; default) or internal (qcow2 snapshot-save).
        #[arg(long, default_value = "external")]
        method: String,
        /// Freeze the guest's filesystems through its agent around the cut
        /// (disk-only points; skipped when the guest has no agent).
        #[arg(long)]
        quiesce: bool,
        /// Return at once instead of waiting for the point.
        #[arg(long)]
        no_wait: bool,
    },
    /// The server's points as a tree.
    List { server: String },
    /// One point, as JSON.
    Show { server: String, point: String },
    /// Revert the server to a point.
    Revert {
        server: String,
        point: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete a point.
    Delete { server: String, point: String },
}

/// Runs one command; prints its result on stdout.
pub fn run(credentials: &Credentials, command: RestorePointCommand) -> anyhow::Result<()> {
    let session = Session::login(credentials)?;
    match command {
        RestorePointCommand::Create {
            server,
            name,
            memory,
            method,
            quiesce,
            no_wait,
        } => {
            let sid = server_id(&session, &server)?;
            let body = json!({"restore_point": {
                "name": name, "memory": memory, "method": method, "quiesce": quiesce}});
            let created = session.call("POST", &points_path(&sid), Some(body))?;
            let id = created["restore_point"]["id"]
                .as_str()
                .ok_or_else(|| anyhow!("the API returned no point id"))?
                .to_string();
            let point = if no_wait {
                created["restore_point"].clone()
            } else {
                wait_for(&format!("restore point {name}"), || {
                    let p = session.call("GET", &format!("{}/{id}", points_path(&sid)), None)?;
                    let p = p["restore_point"].clone();
                    match p["status"].as_str() {
                        Some("available") if server_idle(&session, &sid)? => Ok(Some(p)),
                        Some("error" | "broken") => bail!("restore point {id} is {}", p["status"]),
                        _ => Ok(None),
                    }
                })?
            };
            println!("{}", tree::line(&point));
        }
        RestorePointCommand::List { server } => {
            let sid = server_id(&session, &server)?;
            let listed = session.call("GET", &points_path(&sid), None)?;
            let points = listed["restore_points"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            print!("{}", tree::render(&points));
        }
        RestorePointCommand::Show { server, point } => {
            let sid = server_id(&session, &server)?;
            let pid = point_id(&session, &sid, &point)?;
            let shown = session.call("GET", &format!("{}/{pid}", points_path(&sid)), None)?;
            println!("{}", serde_json::to_string_pretty(&shown["restore_point"])?);
        }
        RestorePointCommand::Revert {
            server,
            point,
            no_wait,
        } => {
            let sid = server_id(&session, &server)?;
            let pid = point_id(&session, &sid, &point)?;
            let path = format!("{}/{pid}/action", points_path(&sid));
            session.call("POST", &path, Some(json!({"revert": {}})))?;
            if !no_wait {
                let status = wait_for(&format!("revert to {point}"), || {
                    let s = session.call("GET", &format!("/servers/{sid}"), None)?;
                    let s = &s["server"];
                    Ok(s["OS-EXT-STS:task_state"]
                        .is_null()
                        .then(|| s["status"].as_str().unwrap_or("").to_string()))
                })?;
                println!("server {sid} reverted to {point}: {status}");
            }
        }
        RestorePointCommand::Delete { server, point } => {
            let sid = server_id(&session, &server)?;
            let pid = point_id(&session, &sid, &point)?;
            session.call("DELETE", &format!("{}/{pid}", points_path(&sid)), None)?;
            println!("restore point {pid} deleted");
        }
    }
    Ok(())
}

fn points_path(server: &str) -> String {
    format!("/servers/{server}/restore-points")
}

fn server_idle(session: &Session, sid: &str) -> anyhow::Result<bool> {
    let s = session.call("GET", &format!("/servers/{sid}"), None)?;
    Ok(s["server"]["OS-EXT-STS:task_state"].is_null())
}

/// A server's id from its id or its (unique) name.
fn server_id(session: &Session, server: &str) -> anyhow::Result<String> {
    if is_uuid(server) {
        return Ok(server.to_string());
    }
    let listed = session.call("GET", "/servers", None)?;
    let matches: Vec<&Value> = listed["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == server)
        .collect();
    match matches[..] {
        [one] => Ok(one["id"].as_str().unwrap_or_default().to_string()),
        [] => bail!("no server named {server}"),
        _ => bail!("more than one server is named {server}: use its id"),
    }
}

/// A point's id from its id or its (unique) name among the server's points.
fn point_id(session: &Session, sid: &str, point: &str) -> anyhow::Result<String> {
    if is_uuid(point) {
        return Ok(point.to_string());
    }
    let listed = session.call("GET", &points_path(sid), None)?;
    let matches: Vec<&Value> = listed["restore_points"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == point)
        .collect();
    match matches[..] {
        [one] => Ok(one["id"].as_str().unwrap_or_default().to_string()),
        [] => bail!("server {sid} has no restore point named {point}"),
        _ => bail!("more than one restore point is named {point}: use its id"),
    }
}

/// Polls `done` until it yields a value, showing the time spent on stderr.
fn wait_for<T>(
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let mut stderr = std::io::stderr();
    let spinner = ['|', '/', '-', '\\'];
    for tick in 0.. {
        if let Some(value) = done()? {
            let _ = writeln!(
                stderr,
                "\r{what}: done in {:.1} s   ",
                started.elapsed().as_secs_f64()
            );
            return Ok(value);
        }
        if started.elapsed() > WAIT_LIMIT {
            bail!("{what} did not finish within {WAIT_LIMIT:?}");
        }
        let _ = write!(
            stderr,
            "\r{what}: {} {:.1} s",
            spinner[tick % spinner.len()],
            started.elapsed().as_secs_f64()
        );
        let _ = stderr.flush();
        std::thread::sleep(Duration::from_millis(200));
    }
    unreachable!("the loop above only ends by returning")
}
