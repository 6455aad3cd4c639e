//! Quota limits and race-free reservations.
//!
//! Usage is never stored: it is counted from the resources' own rows
//! (servers, volumes, volume snapshots), plus the reservations of requests
//! that checked their quota but have not inserted their row yet. A
//! reservation is taken in one `BEGIN IMMEDIATE` transaction with that
//! count, so SQLite's single writer serialises two requests racing for the
//! last unit: the second one counts the first one's reservation.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::{Error, ProjectId, Result};
use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

use crate::{db_error, ts, Store};

/// A service whose resources have quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaService {
    Compute,
    Volume,
}

impl QuotaService {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaService::Compute => "compute",
            QuotaService::Volume => "volume",
        }
    }
}

/// Whose limits: a project's, or a quota class's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaScope {
    Project(ProjectId),
    Class(String),
}

impl QuotaScope {
    fn key(&self) -> String {
        match self {
            QuotaScope::Project(p) => format!("project:{p}"),
            QuotaScope::Class(c) => format!("class:{c}"),
        }
    }
}

/// What a reservation attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Taken; release it by id once the resource's row exists.
    Taken(String),
    /// `resource` would go over its limit.
    Exceeded {
        resource: String,
        limit: i64,
        in_use: i64,
        requested: i64,
    },
}

/// Resource → amount.
pub type Amounts = BTreeMap<String, i64>;

async fn scalar(conn: &mut SqliteConnection, sql: &str, project: &str) -> Result<i64> {
    sqlx::query_scalar::<_, i64>(sql)
        .bind(project)
        .fetch_one(conn)
        .await
        .map_err(db_error("Cannot count quota usage"))
}

/// Usage counted from the resources' rows.
async fn counted_usage(
    conn: &mut SqliteConnection,
    project: ProjectId,
    service: QuotaService,
) -> Result<Amounts> {
    let p = project.to_string();
    let mut usage = Amounts::new();
    match service {
        QuotaService::Compute => {
            const LIVE: &str = "FROM servers WHERE project_id = ? AND vm_state <> 'deleted'";
            let count = format!("SELECT COUNT(*) {LIVE}");
            let cores = format!(
                "SELECT CAST(COALESCE(SUM(json_extract(flavor, '$.vcpus')), 0) AS INTEGER) {LIVE}"
            );
            let ram = format!(
                "SELECT CAST(COALESCE(SUM(json_extract(flavor, '$.ram')), 0) AS INTEGER) {LIVE}"
            );
            usage.insert("instances".into(), scalar(conn, &count, &p).await?);
            usage.insert("cores".into(), scalar(conn, &cores, &p).await?);
            usage.insert("ram".into(), scalar(conn, &ram, &p).await?);
        }
        QuotaService::Volume => {
            const VOLUMES: &str = "FROM volumes WHERE project_id = ? AND status <> 'deleted'";
            const SNAPS: &str =
                "FROM volume_snapshots WHERE project_id = ? AND status <> 'deleted'";
            let volumes = scalar(conn, &format!("SELECT COUNT(*) {VOLUMES}"), &p).await?;
            let volume_gb = scalar(
                conn,
                &format!("SELECT CAST(COALESCE(SUM(size), 0) AS INTEGER) {VOLUMES}"),
                &p,
            )
            .await?;
            let snapshots = scalar(conn, &format!("SELECT COUNT(*) {SNAPS}"), &p).await?;
            let snapshot_gb = scalar(
                conn,
                &format!("SELECT CAST(COALESCE(SUM(size), 0) AS INTEGER) {SNAPS}"),
                &p,
            )
            .await?;
            usage.insert("volumes".into(), volumes);
            usage.insert("snapshots".into(), snapshots);
            usage.insert("gigabytes".into(), volume_gb + snapshot_gb);
        }
    }
    Ok(usage)
}

/// Amounts held by live reservations.
async fn reserved(
    conn: &mut SqliteConnection,
    project: ProjectId,
    service: QuotaService,
    now: DateTime<Utc>,
) -> Result<Amounts> {
    let rows = sqlx::query(
        "SELECT deltas FROM quota_reservations WHERE project_id = ? AND service = ? AND expires_at > ?",
    )
    .bind(project.to_string())
    .bind(service.as_str())
    .bind(ts(now))
    .fetch_all(conn)
    .await
    .map_err(db_error("Cannot read quota reservations"))?;
    let mut total = Amounts::new();
    for row in rows {
        let deltas: Amounts = serde_json::from_str(row.get::<&str, _>("deltas"))
            .map_err(|e| Error::internal(format!("Corrupt quota reservation: {e}")))?;
        for (k, v) in deltas {
            *total.entry(k).or_default() += v;
        }
    }
    Ok(total)
}

async fn limits_on(
    conn: &mut SqliteConnection,
    scope: &QuotaScope,
    service: QuotaService,
) -> Result<Amounts> {
    let rows = sqlx::query(
        "SELECT resource, hard_limit FROM quota_limits WHERE scope = ? AND service = ?",
    )
    .bind(scope.key())
    .bind(service.as_str())
    .fetch_all(conn)
    .await
    .map_err(db_error("Cannot read quota limits"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get("resource"), r.get("hard_limit")))
        .collect())
}

impl Store {
    /// The limits set on `scope` (only those set).
    pub async fn quota_limits(&self, scope: &QuotaScope, service: QuotaService) -> Result<Amounts> {
        let mut conn = self.acquire().await?;
        limits_on(&mut conn, scope, service).await
    }

    /// Sets limits on `scope`.
    pub async fn set_quota_limits(
        &self,
        scope: &QuotaScope,
        service: QuotaService,
        limits: &Amounts,
    ) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_error("Cannot set quotas"))?;
        for (resource, limit) in limits {
            sqlx::query(
                "INSERT INTO quota_limits (scope, service, resource, hard_limit) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (scope, service, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
            )
            .bind(scope.key())
            .bind(service.as_str())
            .bind(resource)
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(db_error("Cannot set a quota"))?;
        }
        tx.commit().await.map_err(db_error("Cannot set quotas"))
    }

    /// Forgets the limits set on `scope` (back to the defaults).
    pub async fn delete_quota_limits(
        &self,
        scope: &QuotaScope,
        service: QuotaService,
    ) -> Result<()> {
        sqlx::query("DELETE FROM quota_limits WHERE scope = ? AND service = ?")
            .bind(scope.key())
            .bind(service.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot delete quotas"))?;
        Ok(())
    }

    /// `(in use, reserved)` of a project's resources.
    pub async fn quota_usage(
        &self,
        project: ProjectId,
        service: QuotaService,
    ) -> Result<(Amounts, Amounts)> {
        let mut conn = self.acquire().await?;
        let used = counted_usage(&mut conn, project, service).await?;
        let held = reserved(&mut conn, project, service, Utc::now()).await?;
        Ok((used, held))
    }

    /// Reserves `deltas` for `project` if every resource stays within its
    /// limit; `defaults` are the limits of resources no row sets (after the
    /// project's rows, the `default` class's). Negative limits are
    /// unlimited. The reservation lives until released or `expires_at`.
    pub async fn reserve_quota(
        &self,
        project: ProjectId,
        service: QuotaService,
        deltas: &Amounts,
        defaults: &Amounts,
        expires_at: DateTime<Utc>,
    ) -> Result<Reservation> {
        let mut conn = self.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(db_error("Cannot start a quota reservation"))?;
        let outcome =
            reserve_locked(&mut conn, project, service, deltas, defaults, expires_at).await;
        let end = match &outcome {
            Ok(Reservation::Taken(_)) => "COMMIT",
            _ => "ROLLBACK",
        };
        sqlx::query(end)
            .execute(&mut *conn)
            .await
            .map_err(db_error("Cannot finish a quota reservation"))?;
        outcome
    }

    /// A project's images: how many exist (not deleted) and the bytes of
    /// those holding data (Glance's image_count_total, image_size_total).
    pub async fn image_usage(&self, owner: ProjectId) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS INTEGER) AS bytes \
             FROM images WHERE owner = ? AND status <> 'deleted'",
        )
        .bind(owner.to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(db_error("Cannot count a project's images"))?;
        Ok((row.get("n"), row.get("bytes")))
    }

    /// Drops a reservation (its resource's row now counts, or it failed).
    pub async fn release_quota(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM quota_reservations WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot release a quota reservation"))?;
        Ok(())
    }

    /// Drops every reservation: at start-up, none can still be needed.
    pub async fn clear_quota_reservations(&self) -> Result<u64> {
        let done = sqlx::query("DELETE FROM quota_reservations")
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot clear quota reservations"))?;
        Ok(done.rows_affected())
    }

    async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        self.pool
            .acquire()
            .await
            .map_err(db_error("Cannot reach the database"))
    }
}

async fn reserve_locked(
    conn: &mut SqliteConnection,
    project: ProjectId,
    service: QuotaService,
    deltas: &Amounts,
    defaults: &Amounts,
    expires_at: DateTime<Utc>,
) -> Result<Reservation> {
    let mut limits = defaults.clone();
    limits.extend(limits_on(conn, &QuotaScope::Class("default".into()), service).await?);
    limits.extend(limits_on(conn, &QuotaScope::Project(project), service).await?);
    let used = counted_usage(conn, project, service).await?;
    let held = reserved(conn, project, service, Utc::now()).await?;
    for (resource, amount) in deltas {
        let limit = limits.get(resource).copied().unwrap_or(-1);
        let in_use =
            used.get(resource).copied().unwrap_or(0) + held.get(resource).copied().unwrap_or(0);
        if limit >= 0 && *amount > 0 && in_use + amount > limit {
            return Ok(Reservation::Exceeded {
                resource: resource.clone(),
                limit,
                in_use,
                requested: *amount,
            });
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO quota_reservations (id, project_id, service, deltas, expires_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(project.to_string())
    .bind(service.as_str())
    .bind(serde_json::to_string(deltas).unwrap_or_default())
    .bind(ts(expires_at))
    .execute(&mut *conn)
    .await
    .map_err(db_error("Cannot record a quota reservation"))?;
    Ok(Reservation::Taken(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reserve_when_within_then_taken_and_next_over_limit_exceeded() {
        let store = Store::in_memory().await.unwrap();
        let project = ProjectId::new();
        let defaults = Amounts::from([("cores".to_string(), 4)]);
        let ask = Amounts::from([("cores".to_string(), 3)]);
        let later = Utc::now() + chrono::Duration::minutes(1);

        let first = store
            .reserve_quota(project, QuotaService::Compute, &ask, &defaults, later)
            .await
            .unwrap();
        let second = store
            .reserve_quota(project, QuotaService::Compute, &ask, &defaults, later)
            .await
            .unwrap();

        assert!(matches!(first, Reservation::Taken(_)));
        assert_eq!(
            second,
            Reservation::Exceeded {
                resource: "cores".into(),
                limit: 4,
                in_use: 3,
                requested: 3
            }
        );
    }

    #[tokio::test]
    async fn reserve_when_project_limit_set_then_it_wins_over_default() {
        let store = Store::in_memory().await.unwrap();
        let project = ProjectId::new();
        let defaults = Amounts::from([("cores".to_string(), 20)]);
        store
            .set_quota_limits(
                &QuotaScope::Project(project),
                QuotaService::Compute,
                &Amounts::from([("cores".to_string(), 1)]),
            )
            .await
            .unwrap();
        let ask = Amounts::from([("cores".to_string(), 2)]);

        let r = store
            .reserve_quota(
                project,
                QuotaService::Compute,
                &ask,
                &defaults,
                Utc::now() + chrono::Duration::minutes(1),
            )
            .await
            .unwrap();

        assert!(matches!(r, Reservation::Exceeded { limit: 1, .. }));
    }
}
