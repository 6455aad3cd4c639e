//! Cinder QoS specs; a type's association is its `qos_specs_id`.

use std::collections::BTreeMap;

use domain::volume_type::QosSpecs;
use domain::{Error, Result};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{db_error, parse_ts, ts, Store};

fn from_row(row: &SqliteRow) -> Result<QosSpecs> {
    let corrupt = |what: &str| Error::internal(format!("Corrupt {what} in the qos_specs table."));
    let specs: BTreeMap<String, String> =
        serde_json::from_str(row.get("specs")).map_err(|_| corrupt("specs"))?;
    Ok(QosSpecs {
        id: uuid::Uuid::parse_str(row.get("id")).map_err(|_| corrupt("id"))?,
        name: row.get("name"),
        consumer: row.get("consumer"),
        specs,
        created_at: parse_ts(row.get("created_at"))?,
    })
}

impl Store {
    /// Records QoS specs; `Conflict` if the name is taken.
    pub async fn insert_qos_specs(&self, q: &QosSpecs) -> Result<()> {
        sqlx::query(
            "INSERT INTO qos_specs (id, name, consumer, specs, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(q.id.to_string())
        .bind(&q.name)
        .bind(&q.consumer)
        .bind(serde_json::to_string(&q.specs).unwrap_or_else(|_| "{}".into()))
        .bind(ts(q.created_at))
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot create QoS specs {}", q.name)))?;
        Ok(())
    }

    pub async fn qos_specs(&self, id: uuid::Uuid) -> Result<QosSpecs> {
        let row = sqlx::query("SELECT * FROM qos_specs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read QoS specs"))?
            .ok_or_else(|| Error::not_found("QoS specs", id))?;
        from_row(&row)
    }

    pub async fn all_qos_specs(&self) -> Result<Vec<QosSpecs>> {
        let rows = sqlx::query("SELECT * FROM qos_specs ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list QoS specs"))?;
        rows.iter().map(from_row).collect()
    }

    /// Writes the specs map (last writer wins: an admin edit).
    pub async fn set_qos_specs_keys(
        &self,
        id: uuid::Uuid,
        specs: &BTreeMap<String, String>,
    ) -> Result<()> {
        let done = sqlx::query("UPDATE qos_specs SET specs = ? WHERE id = ?")
            .bind(serde_json::to_string(specs).unwrap_or_else(|_| "{}".into()))
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot update QoS specs"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("QoS specs", id));
        }
        Ok(())
    }

    /// Deletes QoS specs; with `force`, types associated with them lose the
    /// association, otherwise `Invalid` (400) while any type has it.
    pub async fn delete_qos_specs(&self, id: uuid::Uuid, force: bool) -> Result<()> {
        let what = "Cannot delete QoS specs";
        let mut tx = self.pool.begin().await.map_err(db_error(what))?;
        let used: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM volume_types WHERE qos_specs_id = ?")
                .bind(id.to_string())
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error(what))?;
        if used > 0 && !force {
            return Err(Error::invalid(format!(
                "Invalid QoS specs: QoS specs {id} is still associated with {used} volume type(s)."
            )));
        }
        sqlx::query("UPDATE volume_types SET qos_specs_id = NULL WHERE qos_specs_id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error(what))?;
        let done = sqlx::query("DELETE FROM qos_specs WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error(what))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("QoS specs", id));
        }
        tx.commit().await.map_err(db_error(what))?;
        Ok(())
    }
}
