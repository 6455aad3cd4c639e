//! Running the tools the plane drives (`ip`, `nft`, `sysctl`, `dnsmasq`) without blocking
//! the runtime; a failure carries the command line and what the tool printed.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::{Error, Result};

/// Runs `program args…`; its stdout on success, else [`Error::Command`] with its stderr.
pub(crate) async fn run<S: AsRef<str>>(program: &str, args: &[S]) -> Result<String> {
    run_with_input(program, args, None).await
}

/// As [`run`], with `input` on the tool's stdin (`nft -f -`).
pub(crate) async fn run_with_input<S: AsRef<str>>(
    program: &str,
    args: &[S],
    input: Option<&str>,
) -> Result<String> {
    let command_line = command_line(program, args);
    let mut command = Command::new(program);
    command
        .args(args.iter().map(AsRef::as_ref))
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let failed = |message: String| Error::Command {
        command: command_line.clone(),
        message,
    };
    let mut child = command.spawn().map_err(|e| failed(e.to_string()))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    Err(failed(if stderr.is_empty() {
        format!("exited with {}", output.status)
    } else {
        stderr
    }))
}

/// `ip -n <ns> args…`.
pub(crate) async fn ip<S: AsRef<str>>(ns: &str, args: &[S]) -> Result<String> {
    let mut all = vec!["-n".to_string(), ns.to_string()];
    all.extend(args.iter().map(|a| a.as_ref().to_string()));
    run("ip", &all).await
}

/// `ip -n <ns> -j args…`, parsed (`ip` prints nothing at all for an empty list).
pub(crate) async fn ip_json<S: AsRef<str>>(ns: &str, args: &[S]) -> Result<Vec<serde_json::Value>> {
    let mut all = vec!["-j".to_string()];
    all.extend(args.iter().map(|a| a.as_ref().to_string()));
    let out = ip(ns, &all).await?;
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&out).map_err(|e| Error::Command {
        command: command_line("ip", &all),
        message: format!("unexpected output: {e}"),
    })
}

/// `ip netns exec <ns> program args…`.
pub(crate) async fn in_ns<S: AsRef<str>>(ns: &str, program: &str, args: &[S]) -> Result<String> {
    run_in_ns(ns, program, args, None).await
}

/// `ip netns exec <ns> program args…` with `input` on stdin.
pub(crate) async fn run_in_ns<S: AsRef<str>>(
    ns: &str,
    program: &str,
    args: &[S],
    input: Option<&str>,
) -> Result<String> {
    let mut all = vec![
        "netns".to_string(),
        "exec".to_string(),
        ns.to_string(),
        program.to_string(),
    ];
    all.extend(args.iter().map(|a| a.as_ref().to_string()));
    run_with_input("ip", &all, input).await
}

fn command_line<S: AsRef<str>>(program: &str, args: &[S]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(AsRef::as_ref))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn run_when_tool_fails_then_error_names_command_and_stderr() {
        let args = ["-c", "echo broken >&2; exit 3"];

        let err = run("sh", &args).await.unwrap_err();

        let text = err.to_string();
        assert!(text.starts_with("sh -c echo broken"), "{text}");
        assert!(text.ends_with(": broken"), "{text}");
    }

    #[tokio::test]
    async fn run_with_input_when_stdin_given_then_tool_reads_it() {
        let out = run_with_input("cat", &[] as &[&str], Some("hello"))
            .await
            .unwrap();

        assert_eq!(out, "hello");
    }
}
