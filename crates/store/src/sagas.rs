//! Saga records: a long operation's kind, the step it is at, the phase of
//! that step and the saga's state (JSON, written by the saga engine in
//! `cloud::saga`). `done` when the saga ended, forward or undone.

use chrono::{DateTime, Utc};
use domain::{Error, Result};
use sqlx::Row;

use crate::{db_error, parse_ts, ts, Store};

/// Where a saga is within its current step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaPhase {
    /// The step is about to run, or ran without its end being recorded.
    Running,
    /// The step ran to its end.
    Done,
    /// The saga is being undone; the step's undo is next.
    Undoing,
}

impl SagaPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaPhase::Running => "running",
            SagaPhase::Done => "done",
            SagaPhase::Undoing => "undoing",
        }
    }

    fn parse(s: &str) -> Result<SagaPhase> {
        match s {
            "running" => Ok(SagaPhase::Running),
            "done" => Ok(SagaPhase::Done),
            "undoing" => Ok(SagaPhase::Undoing),
            other => Err(Error::internal(format!(
                "Unknown saga phase {other:?} in the database."
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SagaRecord {
    pub id: String,
    pub kind: String,
    pub step: String,
    pub phase: SagaPhase,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl Store {
    pub async fn insert_saga(&self, saga: &SagaRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO sagas (id, kind, step, phase, data, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&saga.id)
        .bind(&saga.kind)
        .bind(&saga.step)
        .bind(saga.phase.as_str())
        .bind(saga.data.to_string())
        .bind(ts(saga.created_at))
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot record a saga"))?;
        Ok(())
    }

    /// Records that open saga `id` is at `step` in `phase`, with `data`.
    pub async fn saga_progress(
        &self,
        id: &str,
        step: &str,
        phase: SagaPhase,
        data: &serde_json::Value,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE sagas SET step = ?, phase = ?, data = ?, updated_at = ? WHERE id = ? AND done = 0",
        )
        .bind(step)
        .bind(phase.as_str())
        .bind(data.to_string())
        .bind(ts(Utc::now()))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot record a saga step"))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(format!("Saga {id} is over.")));
        }
        Ok(())
    }

    /// Closes saga `id` with `outcome` (`done`, `undone`, …).
    pub async fn finish_saga(&self, id: &str, outcome: &str) -> Result<()> {
        sqlx::query("UPDATE sagas SET outcome = ?, done = 1, updated_at = ? WHERE id = ?")
            .bind(outcome)
            .bind(ts(Utc::now()))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot record the end of a saga"))?;
        Ok(())
    }

    /// How many sagas ended forward (for tests and reports).
    pub async fn sagas_finished(&self) -> Result<u64> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM sagas WHERE done = 1 AND outcome = 'done'")
                .fetch_one(&self.pool)
                .await
                .map_err(db_error("Cannot count sagas"))?;
        Ok(row.get::<i64, _>("n") as u64)
    }

    /// Sagas that have not ended, oldest first.
    pub async fn open_sagas(&self) -> Result<Vec<SagaRecord>> {
        let rows = sqlx::query("SELECT * FROM sagas WHERE done = 0 ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list sagas"))?;
        rows.iter()
            .map(|r| {
                Ok(SagaRecord {
                    id: r.get("id"),
                    kind: r.get("kind"),
                    step: r.get("step"),
                    phase: SagaPhase::parse(r.get("phase"))?,
                    data: serde_json::from_str(r.get("data"))
                        .map_err(|_| Error::internal("Corrupt saga data in the database."))?,
                    created_at: parse_ts(r.get("created_at"))?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saga_when_stepped_then_listed_open_until_finished() {
        let store = Store::in_memory().await.unwrap();
        let saga = SagaRecord {
            id: "s1".into(),
            kind: "snapshot".into(),
            step: "begun".into(),
            phase: SagaPhase::Running,
            data: serde_json::json!({}),
            created_at: Utc::now(),
        };
        store.insert_saga(&saga).await.unwrap();
        store
            .saga_progress(
                "s1",
                "switched",
                SagaPhase::Done,
                &serde_json::json!({"top": "x"}),
            )
            .await
            .unwrap();

        let open = store.open_sagas().await.unwrap();
        store.finish_saga("s1", "done").await.unwrap();

        assert_eq!(open[0].step, "switched");
        assert_eq!(open[0].phase, SagaPhase::Done);
        assert_eq!(open[0].data["top"], "x");
        assert!(store.open_sagas().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn progress_of_a_finished_saga_is_refused() {
        let store = Store::in_memory().await.unwrap();
        let saga = SagaRecord {
            id: "s2".into(),
            kind: "k".into(),
            step: "a".into(),
            phase: SagaPhase::Running,
            data: serde_json::json!({}),
            created_at: Utc::now(),
        };
        store.insert_saga(&saga).await.unwrap();
        store.finish_saga("s2", "undone").await.unwrap();

        let late = store
            .saga_progress("s2", "b", SagaPhase::Running, &serde_json::json!({}))
            .await;

        assert_eq!(late.unwrap_err().kind(), domain::ErrorKind::Conflict);
    }
}
