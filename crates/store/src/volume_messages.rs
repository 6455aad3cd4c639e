//! Cinder user messages.

use domain::volume_message::VolumeMessage;
use domain::{Error, ProjectId, Result};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{db_error, parse_id, parse_ts, ts, Store};

fn message_from_row(row: &SqliteRow) -> Result<VolumeMessage> {
    let uuid = |s: &str| {
        uuid::Uuid::parse_str(s)
            .map_err(|_| Error::internal("Corrupt id in the volume_messages table."))
    };
    Ok(VolumeMessage {
        id: uuid(row.get("id"))?,
        project_id: parse_id(row.get::<&str, _>("project_id"))?,
        resource_type: row.get("resource_type"),
        resource_uuid: row
            .get::<Option<&str>, _>("resource_uuid")
            .map(uuid)
            .transpose()?,
        event_id: row.get("event_id"),
        message_level: row.get("message_level"),
        user_message: row.get("user_message"),
        request_id: row.get("request_id"),
        created_at: parse_ts(row.get("created_at"))?,
        expires_at: parse_ts(row.get("expires_at"))?,
    })
}

impl Store {
    pub async fn insert_volume_message(&self, m: &VolumeMessage) -> Result<()> {
        sqlx::query(
            "INSERT INTO volume_messages (id, project_id, resource_type, resource_uuid, event_id, \
             message_level, user_message, request_id, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(m.id.to_string())
        .bind(m.project_id.to_string())
        .bind(&m.resource_type)
        .bind(m.resource_uuid.map(|u| u.to_string()))
        .bind(&m.event_id)
        .bind(&m.message_level)
        .bind(&m.user_message)
        .bind(&m.request_id)
        .bind(ts(m.created_at))
        .bind(ts(m.expires_at))
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot record a user message"))?;
        Ok(())
    }

    /// Messages of a project (all: `None`), newest first.
    pub async fn volume_messages(&self, project: Option<ProjectId>) -> Result<Vec<VolumeMessage>> {
        let rows = sqlx::query(
            "SELECT * FROM volume_messages WHERE (?1 IS NULL OR project_id = ?1) \
             ORDER BY created_at DESC, id DESC",
        )
        .bind(project.map(|p| p.to_string()))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot list user messages"))?;
        rows.iter().map(message_from_row).collect()
    }

    pub async fn volume_message(&self, id: uuid::Uuid) -> Result<VolumeMessage> {
        let row = sqlx::query("SELECT * FROM volume_messages WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a user message"))?
            .ok_or_else(|| Error::not_found("Message", id))?;
        message_from_row(&row)
    }

    pub async fn delete_volume_message(&self, id: uuid::Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM volume_messages WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot delete a user message"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("Message", id));
        }
        Ok(())
    }
}
