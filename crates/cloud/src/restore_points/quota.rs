//! Snapstack's own limits on restore points: how many a server may have,
//! and how many bytes of memory states a project may keep (negative:
//! unlimited). Exceeding answers 403 "Quota exceeded for …" as Nova does.
//!
//! A new point counts from its `record` step: the check and that step run
//! under one lock, and a point with memory is recorded with the server's
//! RAM (what its state can reach) until the state is written and its real
//! size replaces it. Two creates racing for the last unit: one gets 403.

use domain::server::Server;
use domain::{Error, RestorePointId, Result};

use crate::Cloud;

/// The limits (`--max-restore-points-per-server`, `--restore-point-memory-total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestorePointQuota {
    pub per_server: i64,
    /// MiB of memory states per project.
    pub memory_total_mib: i64,
}

impl Default for RestorePointQuota {
    fn default() -> Self {
        RestorePointQuota {
            per_server: -1,
            memory_total_mib: -1,
        }
    }
}

fn exceeded(resource: &str, requested: i64, in_use: i64, limit: i64) -> Error {
    Error::forbidden(format!(
        "Quota exceeded for {resource}: Requested {requested}, but already used {in_use} of {limit} {resource}"
    ))
}

fn mib_up(bytes: i64) -> i64 {
    (bytes.max(0) as u64).div_ceil(1 << 20) as i64
}

/// What a checked create holds until its point is recorded.
pub(crate) struct PointQuotaHold<'a> {
    _serialised: tokio::sync::MutexGuard<'a, ()>,
    /// Bytes the point's memory state may reach (0 without memory).
    pub(crate) memory_bytes: u64,
}

impl Cloud {
    /// Checks both limits for a new point of `server`; hold the result until
    /// the point is recorded, then call [`Cloud::count_point_memory`].
    pub(crate) async fn check_point_quota(
        &self,
        server: &Server,
        memory: bool,
    ) -> Result<PointQuotaHold<'_>> {
        let serialised = self.point_quota_lock.lock().await;
        let quota = self.config.restore_point_quota;
        if quota.per_server >= 0 {
            let count = self.store.restore_point_count(server.id).await?;
            if count + 1 > quota.per_server {
                return Err(exceeded("restore_points", 1, count, quota.per_server));
            }
        }
        let memory_bytes = if memory {
            server.flavor.ram.saturating_mul(1 << 20)
        } else {
            0
        };
        if quota.memory_total_mib >= 0 && memory {
            let used = self
                .store
                .restore_point_memory_bytes(server.project_id)
                .await?;
            let limit = quota.memory_total_mib.saturating_mul(1 << 20);
            let wanted = i64::try_from(memory_bytes).unwrap_or(i64::MAX);
            if used.saturating_add(wanted) > limit {
                return Err(exceeded(
                    "restore_point_memory_mb",
                    mib_up(wanted),
                    mib_up(used),
                    quota.memory_total_mib,
                ));
            }
        }
        Ok(PointQuotaHold {
            _serialised: serialised,
            memory_bytes,
        })
    }

    /// Counts a recorded point's memory state toward its project.
    pub(crate) async fn count_point_memory(&self, point: RestorePointId, bytes: u64) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.store
            .set_restore_point_memory_bytes(point, bytes)
            .await
    }

    /// Once a point's memory state is written: its real size replaces the
    /// estimate (a state in the pool keeps the estimate).
    pub(crate) async fn count_written_point_memory(&self, point: RestorePointId, state: &str) {
        if state.starts_with("rbd://") {
            return;
        }
        if let Ok(meta) = tokio::fs::metadata(state).await {
            if let Err(e) = self.count_point_memory(point, meta.len()).await {
                tracing::warn!(%point, error = %e, "could not record a memory state's size");
            }
        }
    }
}
