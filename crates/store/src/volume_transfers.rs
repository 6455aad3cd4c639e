//! Volume transfers. Accepting one moves the volume (and its snapshots)
//! to the receiving project and drops the transfer in one transaction.

use domain::volume::VolumeStatus;
use domain::volume_transfer::VolumeTransfer;
use domain::{Error, ProjectId, Result, TransferId, UserId};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{db_error, parse_id, parse_ts, ts, Store};

fn transfer_from_row(row: &SqliteRow) -> Result<VolumeTransfer> {
    Ok(VolumeTransfer {
        id: parse_id(row.get::<&str, _>("id"))?,
        volume_id: parse_id(row.get::<&str, _>("volume_id"))?,
        project_id: parse_id(row.get::<&str, _>("project_id"))?,
        name: row.get("name"),
        salt: row.get("salt"),
        key_hash: row.get("key_hash"),
        no_snapshots: row.get::<i64, _>("no_snapshots") != 0,
        created_at: parse_ts(row.get("created_at"))?,
    })
}

impl Store {
    /// Records a transfer and moves its volume from `available` to
    /// `awaiting-transfer`, in one transaction: `Conflict` if the volume
    /// moved meanwhile or already has a transfer.
    pub async fn insert_volume_transfer(&self, t: &VolumeTransfer) -> Result<()> {
        let what = format!("Cannot create a transfer of volume {}", t.volume_id);
        let mut tx = self.pool.begin().await.map_err(db_error(&what))?;
        let moved = sqlx::query(
            "UPDATE volumes SET status = ?, updated_at = ? WHERE id = ? AND status = ?",
        )
        .bind(VolumeStatus::AwaitingTransfer.as_str())
        .bind(ts(t.created_at))
        .bind(t.volume_id.to_string())
        .bind(VolumeStatus::Available.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_error(&what))?;
        if moved.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "Volume {} is no longer available; another request changed it first.",
                t.volume_id
            )));
        }
        sqlx::query(
            "INSERT INTO volume_transfers (id, volume_id, project_id, name, salt, key_hash, \
             no_snapshots, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.to_string())
        .bind(t.volume_id.to_string())
        .bind(t.project_id.to_string())
        .bind(&t.name)
        .bind(&t.salt)
        .bind(&t.key_hash)
        .bind(t.no_snapshots as i64)
        .bind(ts(t.created_at))
        .execute(&mut *tx)
        .await
        .map_err(db_error(&what))?;
        tx.commit().await.map_err(db_error(&what))?;
        Ok(())
    }

    pub async fn volume_transfer(&self, id: TransferId) -> Result<VolumeTransfer> {
        let row = sqlx::query("SELECT * FROM volume_transfers WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a volume transfer"))?
            .ok_or_else(|| Error::not_found("Transfer", id))?;
        transfer_from_row(&row)
    }

    /// The transfers of a project (of all projects: `None`), newest first.
    pub async fn volume_transfers(
        &self,
        project: Option<ProjectId>,
    ) -> Result<Vec<VolumeTransfer>> {
        let rows = sqlx::query(
            "SELECT * FROM volume_transfers WHERE (?1 IS NULL OR project_id = ?1) \
             ORDER BY created_at DESC, id DESC",
        )
        .bind(project.map(|p| p.to_string()))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot list volume transfers"))?;
        rows.iter().map(transfer_from_row).collect()
    }

    /// Drops a transfer and gives its volume back to `available` in its
    /// project; or, with `to`, moves the volume (and, unless the transfer
    /// says `no_snapshots`, its snapshots) to that project and user.
    pub async fn end_volume_transfer(
        &self,
        t: &VolumeTransfer,
        to: Option<(ProjectId, UserId)>,
    ) -> Result<()> {
        let what = format!("Cannot end transfer {}", t.id);
        let mut tx = self.pool.begin().await.map_err(db_error(&what))?;
        let gone = sqlx::query("DELETE FROM volume_transfers WHERE id = ?")
            .bind(t.id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error(&what))?;
        if gone.rows_affected() == 0 {
            return Err(Error::not_found("Transfer", t.id));
        }
        let now = ts(chrono::Utc::now());
        let (project, user) = match to {
            Some((p, u)) => (Some(p.to_string()), Some(u.to_string())),
            None => (None, None),
        };
        let moved = sqlx::query(
            "UPDATE volumes SET status = 'available', project_id = COALESCE(?, project_id), \
             user_id = COALESCE(?, user_id), updated_at = ? WHERE id = ? AND status = ?",
        )
        .bind(&project)
        .bind(&user)
        .bind(&now)
        .bind(t.volume_id.to_string())
        .bind(VolumeStatus::AwaitingTransfer.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_error(&what))?;
        if moved.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "Volume {} is no longer awaiting its transfer.",
                t.volume_id
            )));
        }
        if let (Some(project), false) = (&project, t.no_snapshots) {
            sqlx::query(
                "UPDATE volume_snapshots SET project_id = ?, updated_at = ? \
                 WHERE volume_id = ? AND status <> 'deleted'",
            )
            .bind(project)
            .bind(&now)
            .bind(t.volume_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error(&what))?;
        }
        tx.commit().await.map_err(db_error(&what))?;
        Ok(())
    }
}
