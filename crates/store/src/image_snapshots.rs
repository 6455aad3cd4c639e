//! Which volume snapshots an image owns (a snapshot of a volume-backed
//! server is an empty image whose block device mapping names them).

use domain::{ImageId, Result, VolumeSnapshotId};
use sqlx::Row;

use crate::{db_error, Store};

impl Store {
    /// Records that `image` owns `snapshot` (idempotent).
    pub async fn own_volume_snapshot(
        &self,
        image: ImageId,
        snapshot: VolumeSnapshotId,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO image_volume_snapshots (image_id, snapshot_id) VALUES (?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(image.to_string())
        .bind(snapshot.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot record a volume snapshot of an image"))?;
        Ok(())
    }

    /// The volume snapshots `image` owns, in the order they were recorded.
    pub async fn volume_snapshots_of_image(&self, image: ImageId) -> Result<Vec<VolumeSnapshotId>> {
        let rows = sqlx::query(
            "SELECT snapshot_id FROM image_volume_snapshots WHERE image_id = ? ORDER BY rowid",
        )
        .bind(image.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot list the volume snapshots of an image"))?;
        rows.iter()
            .map(|r| r.get::<String, _>("snapshot_id").parse())
            .collect()
    }

    /// The image that owns `snapshot`, if any.
    pub async fn image_owning_volume_snapshot(
        &self,
        snapshot: VolumeSnapshotId,
    ) -> Result<Option<ImageId>> {
        let row = sqlx::query("SELECT image_id FROM image_volume_snapshots WHERE snapshot_id = ?")
            .bind(snapshot.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot find the image owning a volume snapshot"))?;
        row.map(|r| r.get::<String, _>("image_id").parse())
            .transpose()
    }
}
