//! Background jobs (`query-jobs`, `JOB_STATUS_CHANGE`, `job-dismiss`).
//!
//! ```text
//! created → running ⇄ paused/standby → (ready →) waiting → pending → concluded → (dismissed)
//!                 └──────────────→ aborting ─────────────────────────↗
//! ```
//!
//! [`Client::wait_job`] needs the job to stay visible once concluded so that its error can
//! be read: start jobs with `"auto-dismiss": false` (`blockdev-create` always does this).
//! Jobs that stop in `ready` (mirror) or `pending` (`"auto-finalize": false`) wait for the
//! caller's `job-complete` / `job-finalize`: `wait_job` keeps waiting meanwhile.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{Error, ErrorKind, Result};

/// How often `wait_job` re-reads `query-jobs` when no event arrives (a safety net).
const JOB_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// QAPI `JobStatus`, with a catch-all for states added later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum JobStatus {
    Undefined,
    Created,
    Running,
    Paused,
    Ready,
    Standby,
    Waiting,
    Pending,
    Aborting,
    Concluded,
    Null,
    #[serde(other)]
    Other,
}

/// One entry of `query-jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JobInfo {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    pub status: JobStatus,
    #[serde(rename = "current-progress")]
    pub current_progress: u64,
    #[serde(rename = "total-progress")]
    pub total_progress: u64,
    /// Set once the job failed or was cancelled.
    pub error: Option<String>,
}

impl Client {
    /// Runs `query-jobs`.
    pub async fn query_jobs(&self) -> Result<Vec<JobInfo>> {
        self.execute_as("query-jobs", Value::Null).await
    }

    /// Waits until job `job_id` concludes, dismisses it, and returns its error as
    /// [`ErrorKind::JobFailed`] if it had one. Fails with [`ErrorKind::JobNotFound`] if
    /// QEMU does not know the job (never started, or auto-dismissed).
    pub async fn wait_job(&self, job_id: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        // Subscribe before the first look so no status change falls in between.
        let mut events = self.events();
        loop {
            let job = self
                .query_jobs()
                .await?
                .into_iter()
                .find(|job| job.id == job_id)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::JobNotFound,
                        format!("job `{job_id}` does not exist"),
                    )
                })?;
            if job.status == JobStatus::Concluded {
                self.execute("job-dismiss", json!({ "id": job_id })).await?;
                return match job.error {
                    Some(error) => Err(Error::job_failed(job_id, error)),
                    None => Ok(()),
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::timeout(format_args!("job `{job_id}` to conclude")));
            }
            let wait = (deadline - now).min(JOB_POLL_INTERVAL);
            let changed = events
                .wait_for("JOB_STATUS_CHANGE", |e| e.data["id"] == job_id, wait)
                .await;
            match changed {
                Ok(_) => {}
                Err(error) if error.kind() == ErrorKind::Timeout => {}
                Err(error) => return Err(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_info_when_concluded_with_error_then_parsed() {
        let reply = json!({"current-progress": 1, "status": "concluded", "total-progress": 1,
                           "type": "create", "id": "j1", "error": "No such file or directory"});

        let info: JobInfo = serde_json::from_value(reply).unwrap();

        assert_eq!(info.status, JobStatus::Concluded);
        assert_eq!(info.error.as_deref(), Some("No such file or directory"));
    }
}
