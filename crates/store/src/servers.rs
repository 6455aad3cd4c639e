//! Flavors and servers. A server's state changes are compare-and-swap on
//! what the caller read: [`Store::update_server`] writes only the fields
//! that change, guarded by their values as read.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::server::{Fault, Flavor, PowerState, Server, TaskState, VmState};
use domain::{Error, ImageId, ProjectId, Result, ServerId};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::narrow::{Column, Update, Written};
use crate::{db_error, parse_id, parse_ts, ts, Store};

/// The stored form of a flavor copy and a fault (JSON columns).
#[derive(Serialize, Deserialize)]
struct FlavorJson {
    id: String,
    name: String,
    vcpus: u32,
    ram: u64,
    disk: u64,
    ephemeral: u64,
    swap: u64,
    is_public: bool,
    description: Option<String>,
    extra_specs: BTreeMap<String, String>,
}

impl From<&Flavor> for FlavorJson {
    fn from(f: &Flavor) -> Self {
        FlavorJson {
            id: f.id.clone(),
            name: f.name.clone(),
            vcpus: f.vcpus,
            ram: f.ram,
            disk: f.disk,
            ephemeral: f.ephemeral,
            swap: f.swap,
            is_public: f.is_public,
            description: f.description.clone(),
            extra_specs: f.extra_specs.clone(),
        }
    }
}

impl From<FlavorJson> for Flavor {
    fn from(f: FlavorJson) -> Self {
        Flavor {
            id: f.id,
            name: f.name,
            vcpus: f.vcpus,
            ram: f.ram,
            disk: f.disk,
            ephemeral: f.ephemeral,
            swap: f.swap,
            is_public: f.is_public,
            description: f.description,
            extra_specs: f.extra_specs,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct FaultJson {
    code: u16,
    message: String,
    created: DateTime<Utc>,
}

fn flavor_from_row(row: &SqliteRow) -> Result<Flavor> {
    Ok(Flavor {
        id: row.get("id"),
        name: row.get("name"),
        vcpus: row.get::<i64, _>("vcpus") as u32,
        ram: row.get::<i64, _>("ram") as u64,
        disk: row.get::<i64, _>("disk") as u64,
        ephemeral: row.get::<i64, _>("ephemeral") as u64,
        swap: row.get::<i64, _>("swap") as u64,
        is_public: row.get::<i64, _>("is_public") != 0,
        description: row.get("description"),
        extra_specs: serde_json::from_str(row.get("extra_specs"))
            .map_err(|_| Error::internal("Corrupt extra_specs in the flavors table."))?,
    })
}

fn server_from_row(row: &SqliteRow) -> Result<Server> {
    let corrupt = |what: &str| Error::internal(format!("Corrupt {what} in the servers table."));
    let flavor: FlavorJson =
        serde_json::from_str(row.get("flavor")).map_err(|_| corrupt("flavor"))?;
    let fault: Option<String> = row.get("fault");
    let fault = fault
        .map(|f| serde_json::from_str::<FaultJson>(&f).map_err(|_| corrupt("fault")))
        .transpose()?
        .map(|f| Fault {
            code: f.code,
            message: f.message,
            created: f.created,
        });
    let task: Option<String> = row.get("task_state");
    let image: Option<String> = row.get("image_id");
    let launched: Option<String> = row.get("launched_at");
    Ok(Server {
        id: parse_id(row.get::<&str, _>("id"))?,
        name: row.get("name"),
        project_id: parse_id(row.get::<&str, _>("project_id"))?,
        user_id: parse_id(row.get::<&str, _>("user_id"))?,
        image_id: image.as_deref().map(parse_id::<ImageId>).transpose()?,
        flavor: flavor.into(),
        vm_state: VmState::parse(row.get("vm_state")).ok_or_else(|| corrupt("vm_state"))?,
        task_state: task
            .as_deref()
            .map(|t| TaskState::parse(t).ok_or_else(|| corrupt("task_state")))
            .transpose()?,
        power_state: PowerState::from_code(row.get("power_state")),
        progress: row.get::<i64, _>("progress").clamp(0, 100) as u8,
        fault,
        metadata: serde_json::from_str(row.get("metadata")).map_err(|_| corrupt("metadata"))?,
        key_name: row.get("key_name"),
        access_ipv4: row.get("access_ipv4"),
        access_ipv6: row.get("access_ipv6"),
        locked: row.get::<i64, _>("locked") != 0,
        root_disk: row.get("root_disk"),
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
        launched_at: launched.as_deref().map(parse_ts).transpose()?,
    })
}

fn fault_json(f: &Option<Fault>) -> Option<String> {
    f.as_ref().map(|f| {
        serde_json::to_string(&FaultJson {
            code: f.code,
            message: f.message.clone(),
            created: f.created,
        })
        .unwrap_or_default()
    })
}

impl Store {
    pub async fn insert_flavor(&self, f: &Flavor) -> Result<()> {
        sqlx::query(
            "INSERT INTO flavors (id, name, vcpus, ram, disk, ephemeral, swap, is_public, description, extra_specs) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&f.id)
        .bind(&f.name)
        .bind(i64::from(f.vcpus))
        .bind(f.ram as i64)
        .bind(f.disk as i64)
        .bind(f.ephemeral as i64)
        .bind(f.swap as i64)
        .bind(f.is_public as i64)
        .bind(&f.description)
        .bind(serde_json::to_string(&f.extra_specs).unwrap_or_default())
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot create flavor '{}' ({})", f.name, f.id)))?;
        Ok(())
    }

    pub async fn flavor(&self, id: &str) -> Result<Flavor> {
        let row = sqlx::query("SELECT * FROM flavors WHERE id = ? AND deleted = 0")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a flavor"))?
            .ok_or_else(|| Error::not_found("flavor", id))?;
        flavor_from_row(&row)
    }

    pub async fn flavors(&self) -> Result<Vec<Flavor>> {
        let rows = sqlx::query("SELECT * FROM flavors WHERE deleted = 0 ORDER BY ram, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list flavors"))?;
        rows.iter().map(flavor_from_row).collect()
    }

    /// Removes a flavor; its name becomes free again.
    pub async fn delete_flavor(&self, id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM flavors WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot delete a flavor"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("flavor", id));
        }
        Ok(())
    }

    pub async fn insert_server(&self, s: &Server) -> Result<()> {
        sqlx::query(
            "INSERT INTO servers (id, name, project_id, user_id, image_id, flavor, vm_state, task_state, power_state, \
             progress, fault, metadata, root_disk, created_at, updated_at, launched_at, key_name, \
             access_ipv4, access_ipv6, locked) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.id.to_string())
        .bind(&s.name)
        .bind(s.project_id.to_string())
        .bind(s.user_id.to_string())
        .bind(s.image_id.map(|i| i.to_string()))
        .bind(serde_json::to_string(&FlavorJson::from(&s.flavor)).unwrap_or_default())
        .bind(s.vm_state.as_str())
        .bind(s.task_state.map(TaskState::as_str))
        .bind(s.power_state as i64)
        .bind(i64::from(s.progress))
        .bind(fault_json(&s.fault))
        .bind(serde_json::to_string(&s.metadata).unwrap_or_default())
        .bind(&s.root_disk)
        .bind(ts(s.created_at))
        .bind(ts(s.updated_at))
        .bind(s.launched_at.map(ts))
        .bind(&s.key_name)
        .bind(&s.access_ipv4)
        .bind(&s.access_ipv6)
        .bind(i64::from(s.locked))
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot create server {}", s.id)))?;
        Ok(())
    }

    pub async fn server(&self, id: ServerId) -> Result<Server> {
        let row = sqlx::query("SELECT * FROM servers WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a server"))?
            .ok_or_else(|| Error::not_found("server", id))?;
        server_from_row(&row)
    }

    /// Live (not deleted) servers, of one project or of all.
    pub async fn servers(&self, project: Option<ProjectId>) -> Result<Vec<Server>> {
        let rows = sqlx::query(
            "SELECT * FROM servers WHERE vm_state <> 'deleted' AND (?1 IS NULL OR project_id = ?1) \
             ORDER BY created_at DESC, id DESC",
        )
        .bind(project.map(|p| p.to_string()))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot list servers"))?;
        rows.iter().map(server_from_row).collect()
    }

    /// Writes the fields in which `next` differs from `prev` (what the
    /// caller read) — and only those — provided the stored server still
    /// has `prev`'s value in each of them that is not an observation
    /// (power state, progress and fault are last-writer-wins) and, unless
    /// only descriptive fields change (name, metadata, fault, lock, access
    /// addresses), `prev`'s vm_state and
    /// task_state. Returns `Conflict` otherwise: another request changed it
    /// first. Nothing to write is a success.
    pub async fn update_server(&self, prev: &Server, next: &Server) -> Result<()> {
        let written = self
            .update_narrowly(Update {
                table: "servers",
                id: next.id.to_string(),
                prev: server_columns(prev),
                next: server_columns(next),
                always_guarded: &["vm_state", "task_state"],
                unguarded: &["power_state", "progress", "fault"],
                descriptive: &[
                    "name",
                    "metadata",
                    "fault",
                    "locked",
                    "access_ipv4",
                    "access_ipv6",
                ],
                updated_at: ts(next.updated_at),
            })
            .await?;
        if let Written::Conflict(fields) = written {
            let now = self.server(next.id).await?;
            return Err(Error::conflict(format!(
                "Server {} is {} (task {}); another request changed it first ({}).",
                next.id,
                now.vm_state,
                now.task_state.map_or("none", TaskState::as_str),
                fields.join(", ")
            )));
        }
        Ok(())
    }
}

/// The columns an update may change, in a fixed order (updated_at apart).
fn server_columns(s: &Server) -> Vec<(&'static str, Column)> {
    vec![
        ("name", Column::Text(Some(s.name.clone()))),
        (
            "vm_state",
            Column::Text(Some(s.vm_state.as_str().to_string())),
        ),
        (
            "task_state",
            Column::Text(s.task_state.map(|t| t.as_str().to_string())),
        ),
        ("power_state", Column::int(s.power_state as i64)),
        ("progress", Column::int(i64::from(s.progress))),
        ("fault", Column::Text(fault_json(&s.fault))),
        (
            "metadata",
            Column::text(serde_json::to_string(&s.metadata).unwrap_or_default()),
        ),
        ("root_disk", Column::Text(s.root_disk.clone())),
        ("image_id", Column::Text(s.image_id.map(|i| i.to_string()))),
        ("launched_at", Column::Text(s.launched_at.map(ts))),
        ("access_ipv4", Column::Text(s.access_ipv4.clone())),
        ("access_ipv6", Column::Text(s.access_ipv6.clone())),
        ("locked", Column::int(i64::from(s.locked))),
    ]
}

#[cfg(test)]
mod tests {
    use domain::ErrorKind;

    use super::*;

    fn flavor() -> Flavor {
        Flavor {
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
        }
    }

    fn server() -> Server {
        let now = Utc::now();
        Server {
            id: ServerId::new(),
            name: "vm".into(),
            project_id: ProjectId::new(),
            user_id: domain::UserId::new(),
            image_id: Some(ImageId::new()),
            flavor: flavor(),
            vm_state: VmState::Building,
            task_state: Some(TaskState::Spawning),
            power_state: PowerState::NoState,
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
        }
    }

    #[tokio::test]
    async fn server_when_task_claimed_twice_then_second_conflicts() {
        let store = Store::in_memory().await.unwrap();
        let mut s = server();
        s.vm_state = VmState::Active;
        s.task_state = None;
        store.insert_server(&s).await.unwrap();
        let mut claimed = s.clone();
        claimed.task_state = Some(TaskState::PoweringOff);
        store.update_server(&s, &claimed).await.unwrap();

        let err = store.update_server(&s, &claimed).await.unwrap_err();

        assert_eq!(err.kind(), ErrorKind::Conflict);
    }

    #[tokio::test]
    async fn update_when_two_writers_change_different_fields_then_both_kept() {
        let store = Store::in_memory().await.unwrap();
        let mut s = server();
        s.vm_state = VmState::Active;
        s.task_state = Some(TaskState::RestorePointCreating);
        s.root_disk = Some("old-top".into());
        store.insert_server(&s).await.unwrap();
        let mut renamed = s.clone();
        renamed.name = "renamed".into();
        let mut switched = s.clone();
        switched.root_disk = Some("new-top".into());

        store.update_server(&s, &switched).await.unwrap();
        store.update_server(&s, &renamed).await.unwrap();

        let now = store.server(s.id).await.unwrap();
        assert_eq!(now.name, "renamed");
        assert_eq!(now.root_disk.as_deref(), Some("new-top"));
    }

    #[tokio::test]
    async fn update_when_field_changed_since_read_then_conflict_and_nothing_written() {
        let store = Store::in_memory().await.unwrap();
        let mut s = server();
        s.root_disk = Some("a".into());
        store.insert_server(&s).await.unwrap();
        let mut first = s.clone();
        first.root_disk = Some("b".into());
        store.update_server(&s, &first).await.unwrap();
        let mut stale = s.clone();
        stale.root_disk = Some("c".into());
        stale.progress = 50;

        let err = store.update_server(&s, &stale).await.unwrap_err();

        assert_eq!(err.kind(), ErrorKind::Conflict);
        let now = store.server(s.id).await.unwrap();
        assert_eq!(
            (now.root_disk.as_deref(), now.progress),
            (Some("b"), s.progress)
        );
    }

    #[tokio::test]
    async fn server_when_stored_then_read_back_equal() {
        let store = Store::in_memory().await.unwrap();
        let mut s = server();
        s.fault = Some(Fault {
            code: 500,
            message: "boom".into(),
            created: Utc::now(),
        });
        store.insert_server(&s).await.unwrap();

        let back = store.server(s.id).await.unwrap();

        assert_eq!(back.fault.unwrap().message, "boom");
        assert_eq!(back.task_state, Some(TaskState::Spawning));
        assert_eq!(back.flavor, s.flavor);
    }

    #[tokio::test]
    async fn flavor_when_deleted_then_not_found() {
        let store = Store::in_memory().await.unwrap();
        store.insert_flavor(&flavor()).await.unwrap();

        store.delete_flavor("1").await.unwrap();

        assert_eq!(
            store.flavor("1").await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
}
