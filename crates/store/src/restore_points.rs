//! Restore points and each server's current point. Status changes are
//! compare-and-swap on the status; deleting a point re-parents its children
//! to its parent and moves the server's current point up, in one transaction.

use domain::restore_point::{
    PointDisk, RestoreMethod, RestorePoint, RestorePointId, RestorePointStatus,
};
use domain::server::VmState;
use domain::{Error, Result, ServerId};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::narrow::{Column, Update, Written};
use crate::{db_error, parse_id, parse_ts, ts, Store};

#[derive(Serialize, Deserialize)]
struct DiskJson {
    disk_id: String,
    layer: String,
    /// Set for an attached volume's disk (absent in points of root disks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    volume_id: Option<String>,
}

fn disks_json(disks: &[PointDisk]) -> String {
    let list: Vec<DiskJson> = disks
        .iter()
        .map(|d| DiskJson {
            disk_id: d.disk_id.clone(),
            layer: d.layer.clone(),
            volume_id: d.volume_id.map(|v| v.to_string()),
        })
        .collect();
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
}

fn point_from_row(row: &SqliteRow) -> Result<RestorePoint> {
    let corrupt =
        |what: &str| Error::internal(format!("Corrupt {what} in the restore_points table."));
    let disks: Vec<DiskJson> =
        serde_json::from_str(row.get("disks")).map_err(|_| corrupt("disks"))?;
    let disks = disks
        .into_iter()
        .map(|d| {
            Ok(PointDisk {
                volume_id: d.volume_id.as_deref().map(parse_id).transpose()?,
                disk_id: d.disk_id,
                layer: d.layer,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let parent: Option<String> = row.get("parent_id");
    let pause: Option<i64> = row.get("guest_pause_us");
    Ok(RestorePoint {
        id: parse_id(row.get::<&str, _>("id"))?,
        server_id: parse_id(row.get::<&str, _>("server_id"))?,
        project_id: parse_id(row.get::<&str, _>("project_id"))?,
        name: row.get("name"),
        parent_id: parent.as_deref().map(parse_id).transpose()?,
        method: RestoreMethod::parse(row.get("method")).map_err(|_| corrupt("method"))?,
        memory: row.get::<i64, _>("memory") != 0,
        quiesced: row.get::<i64, _>("quiesced") != 0,
        status: RestorePointStatus::parse(row.get("status")).ok_or_else(|| corrupt("status"))?,
        disks,
        state_file: row.get("state_file"),
        vm_state: VmState::parse(row.get("vm_state")).ok_or_else(|| corrupt("vm_state"))?,
        guest_pause_us: pause.and_then(|p| u64::try_from(p).ok()),
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
    })
}

impl Store {
    pub async fn insert_restore_point(&self, p: &RestorePoint) -> Result<()> {
        sqlx::query(
            "INSERT INTO restore_points (id, server_id, project_id, name, parent_id, method, memory, quiesced, \
             status, disks, state_file, vm_state, guest_pause_us, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(p.id.to_string())
        .bind(p.server_id.to_string())
        .bind(p.project_id.to_string())
        .bind(&p.name)
        .bind(p.parent_id.map(|i| i.to_string()))
        .bind(p.method.as_str())
        .bind(i64::from(p.memory))
        .bind(i64::from(p.quiesced))
        .bind(p.status.as_str())
        .bind(disks_json(&p.disks))
        .bind(&p.state_file)
        .bind(p.vm_state.as_str())
        .bind(p.guest_pause_us.and_then(|u| i64::try_from(u).ok()))
        .bind(ts(p.created_at))
        .bind(ts(p.updated_at))
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot record restore point {}", p.id)))?;
        Ok(())
    }

    pub async fn restore_point(&self, id: RestorePointId) -> Result<RestorePoint> {
        let row = sqlx::query("SELECT * FROM restore_points WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a restore point"))?
            .ok_or_else(|| Error::not_found("restore point", id))?;
        point_from_row(&row)
    }

    /// The points of one server (or of all servers), oldest first.
    pub async fn restore_points(&self, server: Option<ServerId>) -> Result<Vec<RestorePoint>> {
        let rows = sqlx::query(
            "SELECT * FROM restore_points WHERE (?1 IS NULL OR server_id = ?1) \
             ORDER BY created_at, id",
        )
        .bind(server.map(|s| s.to_string()))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot list restore points"))?;
        rows.iter().map(point_from_row).collect()
    }

    /// Writes the fields in which `next` differs from `prev` (what the
    /// caller read), guarded by `prev`'s status and values.
    pub async fn update_restore_point(
        &self,
        prev: &RestorePoint,
        next: &RestorePoint,
    ) -> Result<()> {
        let written = self
            .update_narrowly(Update {
                table: "restore_points",
                id: next.id.to_string(),
                prev: point_columns(prev),
                next: point_columns(next),
                always_guarded: &["status"],
                unguarded: &[],
                descriptive: &[],
                updated_at: ts(next.updated_at),
            })
            .await?;
        if let Written::Conflict(_) = written {
            let now = self.restore_point(next.id).await?;
            return Err(Error::conflict(format!(
                "Restore point {} is {}; another request changed it first.",
                next.id, now.status
            )));
        }
        Ok(())
    }

    /// Removes a point: its children hang from its parent from now on, and
    /// a server whose current point it was is now at its parent.
    pub async fn delete_restore_point(&self, id: RestorePointId) -> Result<()> {
        let point = match self.restore_point(id).await {
            Ok(p) => p,
            Err(e) if e.kind() == domain::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let parent = point.parent_id.map(|p| p.to_string());
        let what = "Cannot delete a restore point";
        let mut tx = self.pool.begin().await.map_err(db_error(what))?;
        sqlx::query("UPDATE restore_points SET parent_id = ? WHERE parent_id = ?")
            .bind(&parent)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error(what))?;
        match &parent {
            Some(parent) => {
                sqlx::query("UPDATE restore_point_current SET point_id = ? WHERE point_id = ?")
                    .bind(parent)
                    .bind(id.to_string())
            }
            None => sqlx::query("DELETE FROM restore_point_current WHERE point_id = ?")
                .bind(id.to_string()),
        }
        .execute(&mut *tx)
        .await
        .map_err(db_error(what))?;
        sqlx::query("DELETE FROM restore_points WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error(what))?;
        tx.commit().await.map_err(db_error(what))
    }

    /// The point the server's current state descends from.
    pub async fn current_restore_point(&self, server: ServerId) -> Result<Option<RestorePointId>> {
        let row = sqlx::query("SELECT point_id FROM restore_point_current WHERE server_id = ?")
            .bind(server.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read the current restore point"))?;
        row.map(|r| parse_id(r.get::<&str, _>("point_id")))
            .transpose()
    }

    pub async fn set_current_restore_point(
        &self,
        server: ServerId,
        point: Option<RestorePointId>,
    ) -> Result<()> {
        let what = "Cannot record the current restore point";
        let query = match point {
            Some(point) => sqlx::query(
                "INSERT INTO restore_point_current (server_id, point_id) VALUES (?, ?) \
                 ON CONFLICT (server_id) DO UPDATE SET point_id = excluded.point_id",
            )
            .bind(server.to_string())
            .bind(point.to_string()),
            None => sqlx::query("DELETE FROM restore_point_current WHERE server_id = ?")
                .bind(server.to_string()),
        };
        query.execute(&self.pool).await.map_err(db_error(what))?;
        Ok(())
    }
}

/// A restore point's columns an update may change (updated_at apart).
fn point_columns(p: &RestorePoint) -> Vec<(&'static str, Column)> {
    vec![
        ("name", Column::text(p.name.clone())),
        (
            "parent_id",
            Column::Text(p.parent_id.map(|i| i.to_string())),
        ),
        ("status", Column::text(p.status.as_str())),
        ("disks", Column::text(disks_json(&p.disks))),
        ("state_file", Column::Text(p.state_file.clone())),
        (
            "guest_pause_us",
            Column::Int(p.guest_pause_us.and_then(|u| i64::try_from(u).ok())),
        ),
        ("quiesced", Column::int(i64::from(p.quiesced))),
    ]
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use domain::ProjectId;

    use super::*;

    fn point(server: ServerId, parent: Option<RestorePointId>) -> RestorePoint {
        RestorePoint {
            id: RestorePointId::new(),
            server_id: server,
            project_id: ProjectId::new(),
            name: "p".into(),
            parent_id: parent,
            method: RestoreMethod::External,
            memory: false,
            quiesced: false,
            status: RestorePointStatus::Available,
            disks: vec![PointDisk {
                disk_id: "root".into(),
                layer: "file:///pool/disks/a.qcow2".into(),
                volume_id: None,
            }],
            state_file: None,
            vm_state: VmState::Active,
            guest_pause_us: Some(0),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn delete_when_inner_point_then_child_reparented_and_current_moves_up() {
        let store = Store::in_memory().await.unwrap();
        let server = ServerId::new();
        let a = point(server, None);
        let b = point(server, Some(a.id));
        let c = point(server, Some(b.id));
        for p in [&a, &b, &c] {
            store.insert_restore_point(p).await.unwrap();
        }
        store
            .set_current_restore_point(server, Some(b.id))
            .await
            .unwrap();

        store.delete_restore_point(b.id).await.unwrap();

        assert_eq!(
            store.restore_point(c.id).await.unwrap().parent_id,
            Some(a.id)
        );
        assert_eq!(
            store.current_restore_point(server).await.unwrap(),
            Some(a.id)
        );
        assert_eq!(store.restore_points(Some(server)).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn update_when_status_moved_then_conflict() {
        let store = Store::in_memory().await.unwrap();
        let p = point(ServerId::new(), None);
        store.insert_restore_point(&p).await.unwrap();
        let mut deleting = p.clone();
        deleting.status = RestorePointStatus::Deleting;
        store.update_restore_point(&p, &deleting).await.unwrap();

        let err = store.update_restore_point(&p, &deleting).await.unwrap_err();

        assert_eq!(err.kind(), domain::ErrorKind::Conflict);
    }

    #[tokio::test]
    async fn point_when_stored_then_read_back_equal() {
        let store = Store::in_memory().await.unwrap();
        let mut p = point(ServerId::new(), None);
        p.memory = true;
        p.state_file = Some("/state/p.state".into());
        p.created_at = parse_ts(&ts(p.created_at)).unwrap();
        p.updated_at = p.created_at;

        store.insert_restore_point(&p).await.unwrap();

        assert_eq!(store.restore_point(p.id).await.unwrap(), p);
    }

    #[tokio::test]
    async fn point_when_volume_disks_then_volume_ids_read_back() {
        let store = Store::in_memory().await.unwrap();
        let mut p = point(ServerId::new(), None);
        let volume = domain::VolumeId::new();
        p.disks.push(PointDisk {
            disk_id: "vol-1".into(),
            layer: "file:///pool/disks/volume-1.qcow2".into(),
            volume_id: Some(volume),
        });
        store.insert_restore_point(&p).await.unwrap();

        let read = store.restore_point(p.id).await.unwrap();

        assert_eq!(read.disks[0].volume_id, None);
        assert_eq!(read.disks[1].volume_id, Some(volume));
    }
}
