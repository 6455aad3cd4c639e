//! Volume attachments: which volume is attached to which server, as what
//! device and QEMU node. Rows are inserted and deleted, never updated; the
//! volume's status (reserved, attaching, in-use, detaching) says how far an
//! attach or detach went.

use domain::volume::VolumeAttachment;
use domain::{AttachmentId, Result, ServerId, VolumeId};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{db_error, parse_id, parse_ts, ts, Store};

/// Root first, then the other boot indexes, then the rest by device.
const ORDER: &str = "ORDER BY boot_index IS NULL, boot_index, device";

fn attachment_from_row(row: &SqliteRow) -> Result<VolumeAttachment> {
    let boot_index: Option<i64> = row.get("boot_index");
    Ok(VolumeAttachment {
        id: parse_id(row.get::<&str, _>("id"))?,
        volume_id: parse_id(row.get::<&str, _>("volume_id"))?,
        server_id: parse_id(row.get::<&str, _>("server_id"))?,
        device: row.get("device"),
        disk_id: row.get("disk_id"),
        boot_index: boot_index.and_then(|i| u32::try_from(i).ok()),
        delete_on_termination: row.get::<i64, _>("delete_on_termination") != 0,
        created_at: parse_ts(row.get("created_at"))?,
    })
}

impl Store {
    /// Records an attachment. `Conflict` if the volume is already attached
    /// or the server already uses the device or disk id.
    pub async fn insert_attachment(&self, a: &VolumeAttachment) -> Result<()> {
        sqlx::query(
            "INSERT INTO volume_attachments (id, volume_id, server_id, device, disk_id, boot_index, \
             delete_on_termination, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(a.id.to_string())
        .bind(a.volume_id.to_string())
        .bind(a.server_id.to_string())
        .bind(&a.device)
        .bind(&a.disk_id)
        .bind(a.boot_index.map(i64::from))
        .bind(a.delete_on_termination as i64)
        .bind(ts(a.created_at))
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!(
            "Cannot attach volume {} to server {} as {}",
            a.volume_id, a.server_id, a.device
        )))?;
        Ok(())
    }

    /// Removes an attachment; removing one already gone succeeds.
    pub async fn delete_attachment(&self, id: AttachmentId) -> Result<()> {
        sqlx::query("DELETE FROM volume_attachments WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error(&format!("Cannot remove attachment {id}")))?;
        Ok(())
    }

    /// A server's attachments: root volume first, then by boot index, then
    /// by device.
    pub async fn attachments_of_server(&self, server: ServerId) -> Result<Vec<VolumeAttachment>> {
        let rows = sqlx::query(&format!(
            "SELECT * FROM volume_attachments WHERE server_id = ? {ORDER}"
        ))
        .bind(server.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot list the volumes of a server"))?;
        rows.iter().map(attachment_from_row).collect()
    }

    /// The attachment of a volume, if it has one.
    pub async fn attachment_of_volume(&self, volume: VolumeId) -> Result<Option<VolumeAttachment>> {
        let row = sqlx::query("SELECT * FROM volume_attachments WHERE volume_id = ?")
            .bind(volume.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read the attachment of a volume"))?;
        row.as_ref().map(attachment_from_row).transpose()
    }

    /// Every attachment, for start-up recovery.
    pub async fn attachments(&self) -> Result<Vec<VolumeAttachment>> {
        let rows = sqlx::query(&format!(
            "SELECT * FROM volume_attachments {}",
            ORDER.replacen("ORDER BY ", "ORDER BY server_id, ", 1)
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot list attachments"))?;
        rows.iter().map(attachment_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;
    use domain::server::{Flavor, PowerState, Server, VmState};
    use domain::volume::{disk_id_of, Volume, VolumeSource};
    use domain::{ErrorKind, ProjectId, UserId};

    use super::*;

    /// Now, to the microsecond the store keeps.
    fn now() -> chrono::DateTime<Utc> {
        chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
    }

    async fn server(store: &Store) -> ServerId {
        let now = now();
        let s = Server {
            id: ServerId::new(),
            name: "vm".into(),
            project_id: ProjectId::new(),
            user_id: UserId::new(),
            image_id: None,
            flavor: Flavor {
                id: "1".into(),
                name: "tiny".into(),
                vcpus: 1,
                ram: 256,
                disk: 1,
                ephemeral: 0,
                swap: 0,
                is_public: true,
                description: None,
                extra_specs: BTreeMap::new(),
            },
            vm_state: VmState::Active,
            task_state: None,
            power_state: PowerState::Running,
            progress: 0,
            fault: None,
            metadata: BTreeMap::new(),
            key_name: None,
            access_ipv4: None,
            access_ipv6: None,
            locked: false,
            root_disk: None,
            created_at: now,
            updated_at: now,
            launched_at: None,
        };
        store.insert_server(&s).await.unwrap();
        s.id
    }

    async fn volume(store: &Store) -> VolumeId {
        let v = Volume::new_creating(
            ProjectId::new(),
            UserId::new(),
            1,
            VolumeSource::Blank,
            now(),
        );
        store.insert_volume(&v).await.unwrap();
        v.id
    }

    fn attachment(
        server: ServerId,
        volume: VolumeId,
        device: &str,
        boot: Option<u32>,
    ) -> VolumeAttachment {
        VolumeAttachment {
            id: AttachmentId::new(),
            volume_id: volume,
            server_id: server,
            device: device.into(),
            disk_id: disk_id_of(volume),
            boot_index: boot,
            delete_on_termination: boot.is_some(),
            created_at: now(),
        }
    }

    #[tokio::test]
    async fn attachments_when_listed_then_root_first_then_by_device() {
        let store = Store::in_memory().await.unwrap();
        let s = server(&store).await;
        let vdc = attachment(s, volume(&store).await, "/dev/vdc", None);
        let vdb = attachment(s, volume(&store).await, "/dev/vdb", None);
        let root = attachment(s, volume(&store).await, "/dev/vda", Some(0));
        for a in [&vdc, &vdb, &root] {
            store.insert_attachment(a).await.unwrap();
        }

        let listed = store.attachments_of_server(s).await.unwrap();

        assert_eq!(listed, vec![root, vdb, vdc]);
    }

    #[tokio::test]
    async fn volume_when_attached_twice_then_conflict() {
        let store = Store::in_memory().await.unwrap();
        let (s1, s2, v) = (
            server(&store).await,
            server(&store).await,
            volume(&store).await,
        );
        store
            .insert_attachment(&attachment(s1, v, "/dev/vdb", None))
            .await
            .unwrap();

        let err = store
            .insert_attachment(&attachment(s2, v, "/dev/vdb", None))
            .await
            .unwrap_err();

        assert_eq!(err.kind(), ErrorKind::Conflict);
    }

    #[tokio::test]
    async fn attachment_when_deleted_then_volume_has_none() {
        let store = Store::in_memory().await.unwrap();
        let (s, v) = (server(&store).await, volume(&store).await);
        let a = attachment(s, v, "/dev/vdb", None);
        store.insert_attachment(&a).await.unwrap();
        assert_eq!(
            store.attachment_of_volume(v).await.unwrap(),
            Some(a.clone())
        );

        store.delete_attachment(a.id).await.unwrap();

        assert_eq!(store.attachment_of_volume(v).await.unwrap(), None);
        assert!(store.attachments().await.unwrap().is_empty());
    }
}
