//! Many tasks calling one client at once get their own replies.

mod common;

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_when_called_from_many_tasks_then_each_gets_its_own_reply() {
    let qemu = common::Qemu::spawn();
    let client = qemu.connect().await;
    let options = [
        "chardev", "drive", "netdev", "object", "machine", "name", "device", "accel",
    ];

    // query-command-line-options echoes the option asked for: a mismatched reply shows.
    let calls = (0..64).map(|i| {
        let client = client.clone();
        let option = options[i % options.len()];
        tokio::spawn(async move {
            let reply = client
                .execute("query-command-line-options", json!({ "option": option }))
                .await
                .unwrap();
            (option, reply[0]["option"].as_str().unwrap().to_string())
        })
    });
    let results = futures_join(calls.collect()).await;

    assert_eq!(results.len(), 64);
    for (asked, answered) in results {
        assert_eq!(asked, answered);
    }
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
