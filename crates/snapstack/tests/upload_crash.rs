//! Crash safety of uploads: the server is SIGKILLed while an upload is
//! streaming in; the next start puts the image back to `queued`, empties
//! the staging directory, leaves nothing in the pool, and a fresh upload of
//! the same image works.

mod common;

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, Server};
use serde_json::json;

/// A request body that yields `limit` bytes, then stalls until `stop` is
/// set (and then ends), like a client on a slow link.
struct StallingBody {
    sent: usize,
    limit: usize,
    stop: Arc<AtomicBool>,
}

impl Read for StallingBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.limit - self.sent);
        if n > 0 {
            buf[..n].fill(0xa5);
            self.sent += n;
            return Ok(n);
        }
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(0)
    }
}

/// Starts a streamed upload of `limit` bytes that then stalls; returns the
/// stop flag and the thread doing the request.
fn start_stalled_upload(
    client: &Client,
    id: &str,
    limit: usize,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let body = StallingBody {
        sent: 0,
        limit,
        stop: stop.clone(),
    };
    let request = client
        .request("PUT", &format!("/image/v2/images/{id}/file"))
        .set("Content-Type", "application/octet-stream");
    let thread = std::thread::spawn(move || {
        let _ = request.send(body);
    });
    (stop, thread)
}

/// Waits until the staging directory holds at least `bytes` of upload.
fn wait_staged_bytes(server: &Server, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let staged = || -> u64 {
        server
            .staging_files()
            .iter()
            .filter_map(|f| std::fs::metadata(server.staging_dir().join(f)).ok())
            .map(|m| m.len())
            .sum()
    };
    while staged() < bytes {
        assert!(
            Instant::now() < deadline,
            "the upload never reached {bytes} bytes in staging"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn upload_when_server_killed_mid_stream_then_restart_requeues_and_cleans_up() {
    let mut server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let id = alice
        .create_image(json!({"name": "crashy", "disk_format": "raw", "container_format": "bare"}));
    let (stop, thread) = start_stalled_upload(&alice, &id, 4 << 20);
    alice.wait_image_status(&id, "saving");
    wait_staged_bytes(&server, 1 << 20);

    server.kill();
    stop.store(true, Ordering::SeqCst);
    thread.join().unwrap();
    server.restart();

    let img = alice.image(&id);
    assert_eq!(img["status"], "queued");
    assert_eq!(img["size"], json!(null));
    assert_eq!(server.staging_files(), Vec::<String>::new());
    assert_eq!(server.pool_files(), Vec::<String>::new());
    assert!(
        server
            .log()
            .contains(&format!("image {id}: upload interrupted")),
        "log:\n{}",
        server.log()
    );
}

#[test]
fn upload_when_retried_after_crash_then_active_with_data() {
    let mut server = Server::start();
    let alice = server.user_with_role("alice", "member");
    let id = alice
        .create_image(json!({"name": "crashy", "disk_format": "raw", "container_format": "bare"}));
    let (stop, thread) = start_stalled_upload(&alice, &id, 4 << 20);
    alice.wait_image_status(&id, "saving");
    wait_staged_bytes(&server, 1 << 20);
    server.kill();
    stop.store(true, Ordering::SeqCst);
    thread.join().unwrap();
    server.restart();
    let data: Vec<u8> = (0..(2 << 20)).map(|i: u32| (i % 253) as u8).collect();

    let r = alice.put_bytes(&format!("/image/v2/images/{id}/file"), &data);

    assert_eq!(r.status, 204, "body: {}", String::from_utf8_lossy(&r.raw));
    let img = alice.image(&id);
    assert_eq!(img["status"], "active");
    assert_eq!(img["size"], 2 << 20);
    assert!(alice.get(&format!("/image/v2/images/{id}/file")).raw == data);
    assert_eq!(server.pool_files(), [id]);
    assert_eq!(server.staging_files(), Vec::<String>::new());
}
