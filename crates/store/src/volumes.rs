//! Volumes and volume snapshots. Status changes are compare-and-swap:
//! [`Store::update_volume`] and [`Store::update_volume_snapshot`] name the
//! status they expect and fail with `Conflict` if another request moved
//! first. Deleted rows stay (status `deleted`) and are never listed.

use std::collections::BTreeMap;

use domain::volume::{SnapshotStatus, Volume, VolumeSnapshot, VolumeSource, VolumeStatus};
use domain::{Error, ProjectId, Result, VolumeId, VolumeSnapshotId};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::narrow::{Column, Update, Written};
use crate::{db_error, parse_id, parse_ts, ts, Store};

fn source_columns(source: VolumeSource) -> (&'static str, Option<String>) {
    match source {
        VolumeSource::Blank => ("blank", None),
        VolumeSource::Image(id) => ("image", Some(id.to_string())),
        VolumeSource::Snapshot(id) => ("snapshot", Some(id.to_string())),
        VolumeSource::Volume(id) => ("volume", Some(id.to_string())),
    }
}

fn map_json(row: &SqliteRow, column: &str, table: &str) -> Result<BTreeMap<String, String>> {
    serde_json::from_str(row.get(column))
        .map_err(|_| Error::internal(format!("Corrupt {column} in the {table} table.")))
}

fn volume_from_row(row: &SqliteRow) -> Result<Volume> {
    let corrupt = |what: &str| Error::internal(format!("Corrupt {what} in the volumes table."));
    let source_id: Option<String> = row.get("source_id");
    let source_id = || source_id.as_deref().ok_or_else(|| corrupt("source_id"));
    let source = match row.get::<&str, _>("source_kind") {
        "blank" => VolumeSource::Blank,
        "image" => VolumeSource::Image(parse_id(source_id()?)?),
        "snapshot" => VolumeSource::Snapshot(parse_id(source_id()?)?),
        "volume" => VolumeSource::Volume(parse_id(source_id()?)?),
        _ => return Err(corrupt("source_kind")),
    };
    Ok(Volume {
        id: parse_id(row.get::<&str, _>("id"))?,
        project_id: parse_id(row.get::<&str, _>("project_id"))?,
        user_id: parse_id(row.get::<&str, _>("user_id"))?,
        name: row.get("name"),
        description: row.get("description"),
        size: row.get::<i64, _>("size").max(0) as u64,
        status: VolumeStatus::parse(row.get("status")).ok_or_else(|| corrupt("status"))?,
        source,
        location: row.get("location"),
        bootable: row.get::<i64, _>("bootable") != 0,
        metadata: map_json(row, "metadata", "volumes")?,
        image_metadata: map_json(row, "image_metadata", "volumes")?,
        volume_type_id: parse_id(row.get::<&str, _>("volume_type_id"))?,
        readonly: row.get::<Option<i64>, _>("readonly").map(|r| r != 0),
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
    })
}

fn snapshot_from_row(row: &SqliteRow) -> Result<VolumeSnapshot> {
    Ok(VolumeSnapshot {
        id: parse_id(row.get::<&str, _>("id"))?,
        volume_id: parse_id(row.get::<&str, _>("volume_id"))?,
        project_id: parse_id(row.get::<&str, _>("project_id"))?,
        user_id: parse_id(row.get::<&str, _>("user_id"))?,
        name: row.get("name"),
        description: row.get("description"),
        size: row.get::<i64, _>("size").max(0) as u64,
        status: SnapshotStatus::parse(row.get("status"))
            .ok_or_else(|| Error::internal("Corrupt status in the volume_snapshots table."))?,
        location: row.get("location"),
        metadata: map_json(row, "metadata", "volume_snapshots")?,
        progress: row.get("progress"),
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
    })
}

fn json_of(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".into())
}

impl Store {
    pub async fn insert_volume(&self, v: &Volume) -> Result<()> {
        let (kind, source_id) = source_columns(v.source);
        sqlx::query(
            "INSERT INTO volumes (id, project_id, user_id, name, description, size, status, source_kind, source_id, \
             location, bootable, metadata, image_metadata, created_at, updated_at, volume_type_id, readonly) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(v.id.to_string())
        .bind(v.project_id.to_string())
        .bind(v.user_id.to_string())
        .bind(&v.name)
        .bind(&v.description)
        .bind(v.size as i64)
        .bind(v.status.as_str())
        .bind(kind)
        .bind(source_id)
        .bind(&v.location)
        .bind(v.bootable as i64)
        .bind(json_of(&v.metadata))
        .bind(json_of(&v.image_metadata))
        .bind(ts(v.created_at))
        .bind(ts(v.updated_at))
        .bind(v.volume_type_id.to_string())
        .bind(v.readonly.map(i64::from))
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot create volume {}", v.id)))?;
        Ok(())
    }

    /// A volume by id, deleted ones included (callers decide what to show).
    pub async fn volume(&self, id: VolumeId) -> Result<Volume> {
        let row = sqlx::query("SELECT * FROM volumes WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a volume"))?
            .ok_or_else(|| Error::not_found("volume", id))?;
        volume_from_row(&row)
    }

    /// Volumes not deleted, of one project or of all, newest first.
    pub async fn volumes(&self, project: Option<ProjectId>) -> Result<Vec<Volume>> {
        let rows = sqlx::query(
            "SELECT * FROM volumes WHERE status <> 'deleted' AND (?1 IS NULL OR project_id = ?1) \
             ORDER BY created_at DESC, id DESC",
        )
        .bind(project.map(|p| p.to_string()))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot list volumes"))?;
        rows.iter().map(volume_from_row).collect()
    }

    /// Writes the fields in which `next` differs from `prev` (what the
    /// caller read) — and only those — provided the stored volume still
    /// has `prev`'s status and `prev`'s value in each of them. Returns
    /// `Conflict` otherwise.
    pub async fn update_volume(&self, prev: &Volume, next: &Volume) -> Result<()> {
        let written = self
            .update_narrowly(Update {
                table: "volumes",
                id: next.id.to_string(),
                prev: volume_columns(prev),
                next: volume_columns(next),
                always_guarded: &["status"],
                unguarded: &[],
                descriptive: &[],
                updated_at: ts(next.updated_at),
            })
            .await?;
        if let Written::Conflict(_) = written {
            let now = self.volume(next.id).await?;
            return Err(Error::conflict(format!(
                "Volume {} is {} (expected {}); another request changed it first.",
                next.id, now.status, prev.status
            )));
        }
        Ok(())
    }

    /// Writes what a user may change (name, description, metadata) and
    /// nothing else, whatever the status moved to meanwhile; `NotFound` for
    /// a deleted volume.
    pub async fn set_volume_details(&self, v: &Volume) -> Result<()> {
        let done = sqlx::query(
            "UPDATE volumes SET name = ?, description = ?, metadata = ?, updated_at = ? \
             WHERE id = ? AND status <> 'deleted'",
        )
        .bind(&v.name)
        .bind(&v.description)
        .bind(json_of(&v.metadata))
        .bind(ts(v.updated_at))
        .bind(v.id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot update volume {}", v.id)))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("volume", v.id));
        }
        Ok(())
    }

    /// [`set_volume_details`](Store::set_volume_details) for a snapshot.
    pub async fn set_volume_snapshot_details(&self, s: &VolumeSnapshot) -> Result<()> {
        let done = sqlx::query(
            "UPDATE volume_snapshots SET name = ?, description = ?, metadata = ?, updated_at = ? \
             WHERE id = ? AND status <> 'deleted'",
        )
        .bind(&s.name)
        .bind(&s.description)
        .bind(json_of(&s.metadata))
        .bind(ts(s.updated_at))
        .bind(s.id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot update snapshot {}", s.id)))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("snapshot", s.id));
        }
        Ok(())
    }

    /// Moves a volume from status `expected` to `next` (and its data to
    /// `location`, if given), touching no other field: a background task
    /// ending never undoes a rename made meanwhile. `Conflict` if the
    /// volume is no longer in `expected`.
    pub async fn set_volume_status(
        &self,
        id: VolumeId,
        expected: VolumeStatus,
        next: VolumeStatus,
        location: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE volumes SET status = ?, location = COALESCE(?, location), updated_at = ? \
             WHERE id = ? AND status = ?",
        )
        .bind(next.as_str())
        .bind(location)
        .bind(ts(chrono::Utc::now()))
        .bind(id.to_string())
        .bind(expected.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot update volume {id}")))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "Volume {id} is no longer {expected}; another request changed it first."
            )));
        }
        Ok(())
    }

    /// An admin's `os-reset_status`: the status is written whatever it
    /// was (Cinder's override); a deleted volume stays deleted (`NotFound`).
    pub async fn reset_volume_status(&self, id: VolumeId, status: VolumeStatus) -> Result<()> {
        let done = sqlx::query(
            "UPDATE volumes SET status = ?, updated_at = ? WHERE id = ? AND status <> 'deleted'",
        )
        .bind(status.as_str())
        .bind(ts(chrono::Utc::now()))
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot reset volume {id}")))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("volume", id));
        }
        Ok(())
    }

    /// [`reset_volume_status`](Store::reset_volume_status) for a snapshot,
    /// with the progress to show (None: derived from the status).
    pub async fn reset_volume_snapshot_status(
        &self,
        id: VolumeSnapshotId,
        status: SnapshotStatus,
        progress: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE volume_snapshots SET status = ?, progress = ?, updated_at = ? \
             WHERE id = ? AND status <> 'deleted'",
        )
        .bind(status.as_str())
        .bind(progress)
        .bind(ts(chrono::Utc::now()))
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot reset snapshot {id}")))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("snapshot", id));
        }
        Ok(())
    }

    /// [`set_volume_status`](Store::set_volume_status) for a snapshot.
    pub async fn set_volume_snapshot_status(
        &self,
        id: VolumeSnapshotId,
        expected: SnapshotStatus,
        next: SnapshotStatus,
        location: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE volume_snapshots SET status = ?, location = COALESCE(?, location), updated_at = ? \
             WHERE id = ? AND status = ?",
        )
        .bind(next.as_str())
        .bind(location)
        .bind(ts(chrono::Utc::now()))
        .bind(id.to_string())
        .bind(expected.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot update snapshot {id}")))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "Snapshot {id} is no longer {expected}; another request changed it first."
            )));
        }
        Ok(())
    }

    /// Moves a volume's data location from `from` to `to` (a snapshot put a
    /// new top over it), provided it is still `from`: `Conflict` otherwise.
    pub async fn move_volume_location(&self, id: VolumeId, from: &str, to: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE volumes SET location = ?, updated_at = ? WHERE id = ? AND location = ?",
        )
        .bind(to)
        .bind(ts(chrono::Utc::now()))
        .bind(id.to_string())
        .bind(from)
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot update volume {id}")))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "Volume {id} moved while it was being snapshotted; try again."
            )));
        }
        Ok(())
    }

    pub async fn insert_volume_snapshot(&self, s: &VolumeSnapshot) -> Result<()> {
        sqlx::query(
            "INSERT INTO volume_snapshots (id, volume_id, project_id, user_id, name, description, size, status, \
             location, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.id.to_string())
        .bind(s.volume_id.to_string())
        .bind(s.project_id.to_string())
        .bind(s.user_id.to_string())
        .bind(&s.name)
        .bind(&s.description)
        .bind(s.size as i64)
        .bind(s.status.as_str())
        .bind(&s.location)
        .bind(json_of(&s.metadata))
        .bind(ts(s.created_at))
        .bind(ts(s.updated_at))
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot create snapshot {}", s.id)))?;
        Ok(())
    }

    pub async fn volume_snapshot(&self, id: VolumeSnapshotId) -> Result<VolumeSnapshot> {
        let row = sqlx::query("SELECT * FROM volume_snapshots WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a snapshot"))?
            .ok_or_else(|| Error::not_found("snapshot", id))?;
        snapshot_from_row(&row)
    }

    /// Snapshots not deleted, of one project or of all, newest first.
    pub async fn volume_snapshots(
        &self,
        project: Option<ProjectId>,
    ) -> Result<Vec<VolumeSnapshot>> {
        let rows = sqlx::query(
            "SELECT * FROM volume_snapshots WHERE status <> 'deleted' AND (?1 IS NULL OR project_id = ?1) \
             ORDER BY created_at DESC, id DESC",
        )
        .bind(project.map(|p| p.to_string()))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot list snapshots"))?;
        rows.iter().map(snapshot_from_row).collect()
    }

    /// The snapshots of one volume that are not deleted.
    pub async fn snapshots_of_volume(&self, volume: VolumeId) -> Result<Vec<VolumeSnapshot>> {
        let rows = sqlx::query(
            "SELECT * FROM volume_snapshots WHERE volume_id = ? AND status <> 'deleted' ORDER BY created_at",
        )
        .bind(volume.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot list the snapshots of a volume"))?;
        rows.iter().map(snapshot_from_row).collect()
    }

    /// Writes the fields in which `next` differs from `prev` (what the
    /// caller read), guarded by `prev`'s status and values.
    pub async fn update_volume_snapshot(
        &self,
        prev: &VolumeSnapshot,
        next: &VolumeSnapshot,
    ) -> Result<()> {
        let written = self
            .update_narrowly(Update {
                table: "volume_snapshots",
                id: next.id.to_string(),
                prev: snapshot_columns(prev),
                next: snapshot_columns(next),
                always_guarded: &["status"],
                unguarded: &[],
                descriptive: &[],
                updated_at: ts(next.updated_at),
            })
            .await?;
        if let Written::Conflict(_) = written {
            let now = self.volume_snapshot(next.id).await?;
            return Err(Error::conflict(format!(
                "Snapshot {} is {} (expected {}); another request changed it first.",
                next.id, now.status, prev.status
            )));
        }
        Ok(())
    }
}

/// A volume's columns an update may change (updated_at apart).
fn volume_columns(v: &Volume) -> Vec<(&'static str, Column)> {
    vec![
        ("name", Column::Text(v.name.clone())),
        ("description", Column::Text(v.description.clone())),
        ("size", Column::int(v.size as i64)),
        ("status", Column::text(v.status.as_str())),
        ("location", Column::Text(v.location.clone())),
        ("bootable", Column::int(v.bootable as i64)),
        ("metadata", Column::text(json_of(&v.metadata))),
        ("image_metadata", Column::text(json_of(&v.image_metadata))),
        ("volume_type_id", Column::text(v.volume_type_id.to_string())),
        ("readonly", Column::Int(v.readonly.map(i64::from))),
        ("project_id", Column::text(v.project_id.to_string())),
        ("user_id", Column::text(v.user_id.to_string())),
    ]
}

/// A volume snapshot's columns an update may change (updated_at apart).
fn snapshot_columns(s: &VolumeSnapshot) -> Vec<(&'static str, Column)> {
    vec![
        ("name", Column::Text(s.name.clone())),
        ("description", Column::Text(s.description.clone())),
        ("status", Column::text(s.status.as_str())),
        ("location", Column::Text(s.location.clone())),
        ("metadata", Column::text(json_of(&s.metadata))),
        ("progress", Column::Text(s.progress.clone())),
    ]
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use domain::{ErrorKind, UserId};

    use super::*;

    /// Now, to the microsecond the store keeps.
    fn now() -> chrono::DateTime<Utc> {
        chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
    }

    fn volume(source: VolumeSource) -> Volume {
        Volume::new_creating(ProjectId::new(), UserId::new(), 2, source, now())
    }

    #[tokio::test]
    async fn volume_when_stored_then_read_back_equal() {
        let store = Store::in_memory().await.unwrap();
        let mut v = volume(VolumeSource::Snapshot(VolumeSnapshotId::new()));
        v.name = Some("v1".into());
        v.metadata.insert("k".into(), "v".into());
        store.insert_volume(&v).await.unwrap();

        let back = store.volume(v.id).await.unwrap();

        assert_eq!(back, v);
    }

    #[tokio::test]
    async fn volume_when_status_moved_twice_from_same_state_then_second_conflicts() {
        let store = Store::in_memory().await.unwrap();
        let v = volume(VolumeSource::Blank);
        store.insert_volume(&v).await.unwrap();
        let mut available = v.clone();
        available.status = VolumeStatus::Available;
        store.update_volume(&v, &available).await.unwrap();

        let err = store.update_volume(&v, &available).await.unwrap_err();

        assert_eq!(err.kind(), ErrorKind::Conflict);
    }

    #[tokio::test]
    async fn deleted_volume_when_listed_then_absent() {
        let store = Store::in_memory().await.unwrap();
        let mut v = volume(VolumeSource::Blank);
        v.status = VolumeStatus::Deleted;
        store.insert_volume(&v).await.unwrap();
        let kept = volume(VolumeSource::Blank);
        store.insert_volume(&kept).await.unwrap();

        let listed = store.volumes(None).await.unwrap();

        assert_eq!(listed, vec![kept]);
    }

    #[tokio::test]
    async fn snapshot_when_stored_then_listed_under_its_volume() {
        let store = Store::in_memory().await.unwrap();
        let v = volume(VolumeSource::Blank);
        store.insert_volume(&v).await.unwrap();
        let now = now();
        let s = VolumeSnapshot {
            id: VolumeSnapshotId::new(),
            volume_id: v.id,
            project_id: v.project_id,
            user_id: v.user_id,
            name: Some("s".into()),
            description: None,
            size: 2,
            status: SnapshotStatus::Creating,
            location: None,
            metadata: BTreeMap::new(),
            progress: None,
            created_at: now,
            updated_at: now,
        };
        store.insert_volume_snapshot(&s).await.unwrap();
        let mut taken = s.clone();
        taken.status = SnapshotStatus::Available;
        taken.location = Some("file:///x".into());
        store.update_volume_snapshot(&s, &taken).await.unwrap();

        let listed = store.snapshots_of_volume(v.id).await.unwrap();

        assert_eq!(listed, vec![taken]);
        assert!(store
            .snapshots_of_volume(VolumeId::new())
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn volume_location_when_moved_from_a_stale_location_then_conflict() {
        let store = Store::in_memory().await.unwrap();
        let mut v = volume(VolumeSource::Blank);
        v.location = Some("a".into());
        store.insert_volume(&v).await.unwrap();
        store.move_volume_location(v.id, "a", "b").await.unwrap();

        let err = store
            .move_volume_location(v.id, "a", "c")
            .await
            .unwrap_err();

        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert_eq!(
            store.volume(v.id).await.unwrap().location.as_deref(),
            Some("b")
        );
    }

    #[tokio::test]
    async fn volume_status_when_set_then_other_fields_kept() {
        let store = Store::in_memory().await.unwrap();
        let v = volume(VolumeSource::Blank);
        store.insert_volume(&v).await.unwrap();
        let mut renamed = v.clone();
        renamed.name = Some("renamed".into());
        store.update_volume(&v, &renamed).await.unwrap();

        store
            .set_volume_status(
                v.id,
                VolumeStatus::Creating,
                VolumeStatus::Available,
                Some("loc"),
            )
            .await
            .unwrap();

        let back = store.volume(v.id).await.unwrap();
        assert_eq!(back.name.as_deref(), Some("renamed"));
        assert_eq!(back.location.as_deref(), Some("loc"));
        assert_eq!(back.status, VolumeStatus::Available);
    }
}
