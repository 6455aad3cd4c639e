//! Images stay Snapstack's where they must: `createImage` metadata cannot
//! name core attributes, and an upload's final write keeps metadata
//! PATCHed while the upload ran.

mod common;

use std::io::Read;
use std::sync::mpsc;

use common::{reply, Server};
use serde_json::json;

#[test]
fn create_image_when_metadata_names_core_field_then_400() {
    let server = Server::start();
    let admin = server.admin();

    let r = admin.post(
        "/compute/v2.1/servers/00000000-0000-0000-0000-000000000001/action",
        json!({"createImage": {"name": "snap", "metadata": {"visibility": "public"}}}),
    );

    assert_eq!(r.status, 400, "{}", r.body);
}

/// Hands out `first` bytes, then waits for a go-ahead before the rest.
struct PausingReader {
    data: Vec<u8>,
    pos: usize,
    first: usize,
    paused: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
}

impl Read for PausingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.first {
            if let Some((reached, go)) = self.paused.take() {
                reached.send(()).unwrap();
                go.recv().unwrap();
            }
        }
        let end = if self.pos < self.first {
            self.first
        } else {
            self.data.len()
        };
        let n = buf.len().min(end - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn upload_when_metadata_patched_during_it_then_patch_kept() {
    let server = Server::start();
    let admin = server.admin();
    let id = admin
        .create_image(json!({"name": "before", "disk_format": "raw", "container_format": "bare"}));
    let (reached_tx, reached_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let reader = PausingReader {
        data: vec![7u8; 4 << 20],
        pos: 0,
        first: 1 << 20,
        paused: Some((reached_tx, go_rx)),
    };
    let uploader = {
        let admin = admin.clone();
        let id = id.clone();
        std::thread::spawn(move || {
            reply(
                admin
                    .request("PUT", &format!("/image/v2/images/{id}/file"))
                    .set("Content-Type", "application/octet-stream")
                    .send(reader),
            )
            .status
        })
    };

    reached_rx.recv().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let patched = admin.patch(
        &format!("/image/v2/images/{id}"),
        "application/openstack-images-v2.1-json-patch",
        json!([{"op": "replace", "path": "/name", "value": "after"},
               {"op": "add", "path": "/purpose", "value": "kept"}]),
    );
    go_tx.send(()).unwrap();
    let uploaded = uploader.join().unwrap();
    let image = admin.image(&id);

    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(uploaded, 204);
    assert_eq!(image["status"], json!("active"));
    assert_eq!(image["name"], json!("after"));
    assert_eq!(image["purpose"], json!("kept"));
}
