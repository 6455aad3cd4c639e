//! Saga records: a long operation's kind, the step it is at and its data
//! (JSON). A step is written before it runs; `done` when the saga ended,
//! forward or undone.

use chrono::{DateTime, Utc};
use domain::{Error, Result};
use sqlx::Row;

use crate::{db_error, parse_ts, ts, Store};

#[derive(Debug, Clone, PartialEq)]
pub struct SagaRecord {
    pub id: String,
    pub kind: String,
    pub step: String,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl Store {
    pub async fn insert_saga(&self, saga: &SagaRecord) -> Result<()> {
        sqlx::query("INSERT INTO sagas (id, kind, step, data, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&saga.id)
            .bind(&saga.kind)
            .bind(&saga.step)
            .bind(saga.data.to_string())
            .bind(ts(saga.created_at))
            .bind(ts(Utc::now()))
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot record a saga"))?;
        Ok(())
    }

    /// Records that saga `id` is about to run `step`, with `data`.
    pub async fn saga_step(&self, id: &str, step: &str, data: &serde_json::Value) -> Result<()> {
        let done = sqlx::query(
            "UPDATE sagas SET step = ?, data = ?, updated_at = ? WHERE id = ? AND done = 0",
        )
        .bind(step)
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

    pub async fn finish_saga(&self, id: &str, step: &str) -> Result<()> {
        sqlx::query("UPDATE sagas SET step = ?, done = 1, updated_at = ? WHERE id = ?")
            .bind(step)
            .bind(ts(Utc::now()))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot record the end of a saga"))?;
        Ok(())
    }

    /// Sagas that have not ended, oldest first.
    pub async fn open_sagas(&self) -> Result<Vec<SagaRecord>> {
        let rows = sqlx::query("SELECT * FROM sagas WHERE done = 0 ORDER BY created_at")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list sagas"))?;
        rows.iter()
            .map(|r| {
                Ok(SagaRecord {
                    id: r.get("id"),
                    kind: r.get("kind"),
                    step: r.get("step"),
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
            data: serde_json::json!({}),
            created_at: Utc::now(),
        };
        store.insert_saga(&saga).await.unwrap();
        store
            .saga_step("s1", "switched", &serde_json::json!({"top": "x"}))
            .await
            .unwrap();

        let open = store.open_sagas().await.unwrap();
        store.finish_saga("s1", "published").await.unwrap();

        assert_eq!(open[0].step, "switched");
        assert_eq!(open[0].data["top"], "x");
        assert!(store.open_sagas().await.unwrap().is_empty());
    }
}
