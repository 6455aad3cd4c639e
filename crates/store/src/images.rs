//! Images and their members. Status changes are compare-and-swap on the
//! status column: [`Store::update_image`] names the status it expects.

use chrono::Utc;
use domain::image::{Image, ImageStatus, Visibility};
use domain::{Error, ImageId, ProjectId, Result};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, Row};

use crate::narrow::{Column, Update, Written};
use crate::{db_error, parse_id, parse_ts, ts, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortDir {
    #[default]
    Desc,
    Asc,
}

/// What `GET /v2/images` asks for.
#[derive(Debug, Clone, Default)]
pub struct ImageFilter {
    /// The project looking; `None` for an admin, who sees every image.
    pub viewer: Option<ProjectId>,
    pub name: Option<String>,
    pub status: Option<ImageStatus>,
    pub visibility: Option<Visibility>,
    pub owner: Option<ProjectId>,
    pub tags: Vec<String>,
    /// Free-form properties that must have exactly these values.
    pub properties: Vec<(String, String)>,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub protected: Option<bool>,
    pub os_hidden: Option<bool>,
    pub limit: u32,
    pub marker: Option<ImageId>,
    pub sort_dir: SortDir,
}

#[derive(Debug, Clone)]
pub struct ImagePage {
    pub images: Vec<Image>,
    /// Set when more images follow the last one returned.
    pub next_marker: Option<ImageId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    Pending,
    Accepted,
    Rejected,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Pending => "pending",
            MemberStatus::Accepted => "accepted",
            MemberStatus::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(MemberStatus::Pending),
            "accepted" => Ok(MemberStatus::Accepted),
            "rejected" => Ok(MemberStatus::Rejected),
            other => Err(Error::invalid(format!(
                "Invalid member status '{other}': expected pending, accepted or rejected."
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMember {
    pub image_id: ImageId,
    pub member: ProjectId,
    pub status: MemberStatus,
    pub created_at: chrono::DateTime<Utc>,
    pub updated_at: chrono::DateTime<Utc>,
}

fn image_from_row(row: &SqliteRow) -> Result<Image> {
    let status: &str = row.get("status");
    let visibility: &str = row.get("visibility");
    let corrupt = |what: &str| Error::internal(format!("Corrupt {what} in the images table."));
    Ok(Image {
        id: parse_id(row.get::<&str, _>("id"))?,
        name: row.get("name"),
        owner: parse_id(row.get::<&str, _>("owner"))?,
        status: ImageStatus::parse(status).ok_or_else(|| corrupt("status"))?,
        visibility: Visibility::parse(visibility).map_err(|_| corrupt("visibility"))?,
        protected: row.get::<i64, _>("protected") != 0,
        os_hidden: row.get::<i64, _>("os_hidden") != 0,
        disk_format: row.get("disk_format"),
        container_format: row.get("container_format"),
        size: row.get::<Option<i64>, _>("size").map(|v| v as u64),
        virtual_size: row.get::<Option<i64>, _>("virtual_size").map(|v| v as u64),
        checksum: row.get("checksum"),
        os_hash_algo: row.get("os_hash_algo"),
        os_hash_value: row.get("os_hash_value"),
        min_disk: row.get::<i64, _>("min_disk") as u64,
        min_ram: row.get::<i64, _>("min_ram") as u64,
        tags: serde_json::from_str(row.get("tags")).map_err(|_| corrupt("tags"))?,
        properties: serde_json::from_str(row.get("properties"))
            .map_err(|_| corrupt("properties"))?,
        location: row.get("location"),
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
    })
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The columns an update may change, in a fixed order (updated_at apart).
fn image_columns(img: &Image) -> Vec<(&'static str, Column)> {
    let text = |v: &Option<String>| Column::Text(v.clone());
    vec![
        ("name", text(&img.name)),
        ("owner", Column::Text(Some(img.owner.to_string()))),
        ("status", Column::Text(Some(img.status.as_str().into()))),
        (
            "visibility",
            Column::Text(Some(img.visibility.as_str().into())),
        ),
        ("protected", Column::Int(Some(img.protected as i64))),
        ("os_hidden", Column::Int(Some(img.os_hidden as i64))),
        ("disk_format", text(&img.disk_format)),
        ("container_format", text(&img.container_format)),
        ("size", Column::Int(img.size.map(|v| v as i64))),
        (
            "virtual_size",
            Column::Int(img.virtual_size.map(|v| v as i64)),
        ),
        ("checksum", text(&img.checksum)),
        ("os_hash_algo", text(&img.os_hash_algo)),
        ("os_hash_value", text(&img.os_hash_value)),
        ("min_disk", Column::Int(Some(img.min_disk as i64))),
        ("min_ram", Column::Int(Some(img.min_ram as i64))),
        ("tags", Column::Text(Some(json_text(&img.tags)))),
        ("properties", Column::Text(Some(json_text(&img.properties)))),
        ("location", text(&img.location)),
    ]
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl Store {
    pub async fn insert_image(&self, img: &Image) -> Result<()> {
        sqlx::query(
            "INSERT INTO images (id, name, owner, status, visibility, protected, os_hidden, disk_format, \
             container_format, size, virtual_size, checksum, os_hash_algo, os_hash_value, min_disk, min_ram, \
             tags, properties, location, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(img.id.to_string())
        .bind(&img.name)
        .bind(img.owner.to_string())
        .bind(img.status.as_str())
        .bind(img.visibility.as_str())
        .bind(img.protected as i64)
        .bind(img.os_hidden as i64)
        .bind(&img.disk_format)
        .bind(&img.container_format)
        .bind(img.size.map(|v| v as i64))
        .bind(img.virtual_size.map(|v| v as i64))
        .bind(&img.checksum)
        .bind(&img.os_hash_algo)
        .bind(&img.os_hash_value)
        .bind(img.min_disk as i64)
        .bind(img.min_ram as i64)
        .bind(json_text(&img.tags))
        .bind(json_text(&img.properties))
        .bind(&img.location)
        .bind(ts(img.created_at))
        .bind(ts(img.updated_at))
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot create image {}", img.id)))?;
        Ok(())
    }

    /// Any image by id, deleted ones included.
    pub async fn image(&self, id: ImageId) -> Result<Image> {
        let row = sqlx::query("SELECT * FROM images WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read an image"))?
            .ok_or_else(|| Error::not_found("image", id))?;
        image_from_row(&row)
    }

    /// Writes the fields in which `next` differs from `prev` (what the
    /// caller read) — and only those — provided the stored image still has
    /// `prev`'s status and `prev`'s value in each of them (compare and
    /// swap). Returns `Conflict` otherwise. Nothing to write is a success.
    pub async fn update_image(&self, prev: &Image, next: &Image) -> Result<()> {
        let written = self
            .update_narrowly(Update {
                table: "images",
                id: next.id.to_string(),
                prev: image_columns(prev),
                next: image_columns(next),
                always_guarded: &["status"],
                unguarded: &[],
                descriptive: &[],
                updated_at: ts(next.updated_at),
            })
            .await?;
        if let Written::Conflict(_) = written {
            let now = self.image(next.id).await?;
            return Err(Error::conflict(format!(
                "Image {} is {} (expected {}); another request changed it first.",
                next.id, now.status, prev.status
            )));
        }
        Ok(())
    }

    /// Publishes an upload's data: writes only the data columns (status,
    /// formats, sizes, hashes, location) and merges `added_properties`,
    /// so metadata PATCHed while the upload ran is kept.
    pub async fn finish_image_upload(
        &self,
        img: &Image,
        added_properties: &std::collections::BTreeMap<String, String>,
        expected: ImageStatus,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE images SET status = ?, disk_format = ?, container_format = ?, size = ?, virtual_size = ?, \
             checksum = ?, os_hash_algo = ?, os_hash_value = ?, location = ?, \
             properties = json_patch(properties, ?), updated_at = ? WHERE id = ? AND status = ?",
        )
        .bind(img.status.as_str())
        .bind(&img.disk_format)
        .bind(&img.container_format)
        .bind(img.size.map(|v| v as i64))
        .bind(img.virtual_size.map(|v| v as i64))
        .bind(&img.checksum)
        .bind(&img.os_hash_algo)
        .bind(&img.os_hash_value)
        .bind(&img.location)
        .bind(json_text(added_properties))
        .bind(ts(img.updated_at))
        .bind(img.id.to_string())
        .bind(expected.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot publish image {}", img.id)))?;
        if done.rows_affected() == 0 {
            let now = self.image(img.id).await?;
            return Err(Error::conflict(format!(
                "Image {} is {} (expected {expected}); another request changed it first.",
                img.id, now.status
            )));
        }
        Ok(())
    }

    /// Images in `status` (for start-up reconciliation).
    pub async fn images_in_status(&self, status: ImageStatus) -> Result<Vec<Image>> {
        let rows = sqlx::query("SELECT * FROM images WHERE status = ?")
            .bind(status.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list images"))?;
        rows.iter().map(image_from_row).collect()
    }

    /// One page of the images `filter` selects, newest first by default.
    pub async fn list_images(&self, filter: &ImageFilter) -> Result<ImagePage> {
        let mut sql = String::from("SELECT * FROM images WHERE status <> 'deleted'");
        let mut args = SqliteArguments::default();
        let bind = |args: &mut SqliteArguments<'_>, v: String| {
            args.add(v)
                .map_err(|e| Error::internal(format!("Cannot bind a query argument: {e}")))
        };

        match (filter.viewer, filter.visibility) {
            (None, Some(v)) => {
                sql.push_str(" AND visibility = ?");
                bind(&mut args, v.as_str().into())?;
            }
            (None, None) => {}
            (Some(_), Some(Visibility::Community)) => sql.push_str(" AND visibility = 'community'"),
            (Some(_), Some(Visibility::Public)) => sql.push_str(" AND visibility = 'public'"),
            (Some(me), Some(v)) => {
                sql.push_str(
                    " AND visibility = ? AND (owner = ? OR EXISTS (SELECT 1 FROM image_members m \
                     WHERE m.image_id = images.id AND m.member = ? AND m.status <> 'rejected'))",
                );
                bind(&mut args, v.as_str().into())?;
                bind(&mut args, me.to_string())?;
                bind(&mut args, me.to_string())?;
            }
            (Some(me), None) => {
                sql.push_str(
                    " AND (owner = ? OR visibility = 'public' OR (visibility = 'shared' AND EXISTS \
                     (SELECT 1 FROM image_members m WHERE m.image_id = images.id AND m.member = ? \
                     AND m.status = 'accepted')))",
                );
                bind(&mut args, me.to_string())?;
                bind(&mut args, me.to_string())?;
            }
        }
        if let Some(name) = &filter.name {
            sql.push_str(" AND name = ?");
            bind(&mut args, name.clone())?;
        }
        if let Some(status) = filter.status {
            sql.push_str(" AND status = ?");
            bind(&mut args, status.as_str().into())?;
        }
        if let Some(owner) = filter.owner {
            sql.push_str(" AND owner = ?");
            bind(&mut args, owner.to_string())?;
        }
        for tag in &filter.tags {
            sql.push_str(" AND tags LIKE ? ESCAPE '\\'");
            bind(&mut args, format!("%{}%", like_escape(&json_text(tag))))?;
        }
        // Properties are stored as compact JSON: `"key":"value"` with the
        // quotes unescaped can only be a key and its value.
        for (key, value) in &filter.properties {
            sql.push_str(" AND properties LIKE ? ESCAPE '\\'");
            let pair = format!("{}:{}", json_text(key), json_text(value));
            bind(&mut args, format!("%{}%", like_escape(&pair)))?;
        }
        if let Some(f) = &filter.disk_format {
            sql.push_str(" AND disk_format = ?");
            bind(&mut args, f.clone())?;
        }
        if let Some(f) = &filter.container_format {
            sql.push_str(" AND container_format = ?");
            bind(&mut args, f.clone())?;
        }
        if let Some(p) = filter.protected {
            sql.push_str(if p {
                " AND protected = 1"
            } else {
                " AND protected = 0"
            });
        }
        match filter.os_hidden {
            Some(true) => sql.push_str(" AND os_hidden = 1"),
            Some(false) | None => sql.push_str(" AND os_hidden = 0"),
        }
        let (cmp, dir) = match filter.sort_dir {
            SortDir::Desc => ("<", "DESC"),
            SortDir::Asc => (">", "ASC"),
        };
        if let Some(marker) = filter.marker {
            let m = self.image(marker).await.map_err(|_| {
                Error::invalid(format!(
                    "Marker {marker} does not name an image you can see."
                ))
            })?;
            sql.push_str(&format!(
                " AND (created_at {cmp} ? OR (created_at = ? AND id {cmp} ?))"
            ));
            bind(&mut args, ts(m.created_at))?;
            bind(&mut args, ts(m.created_at))?;
            bind(&mut args, m.id.to_string())?;
        }
        sql.push_str(&format!(" ORDER BY created_at {dir}, id {dir} LIMIT ?"));
        let limit = filter.limit.max(1);
        args.add(i64::from(limit) + 1)
            .map_err(|e| Error::internal(format!("Cannot bind a query argument: {e}")))?;

        let rows = sqlx::query_with(&sql, args)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list images"))?;
        let mut images = rows
            .iter()
            .map(image_from_row)
            .collect::<Result<Vec<_>>>()?;
        let next_marker = if images.len() > limit as usize {
            images.truncate(limit as usize);
            images.last().map(|i| i.id)
        } else {
            None
        };
        Ok(ImagePage {
            images,
            next_marker,
        })
    }

    pub async fn upsert_member(&self, m: &ImageMember) -> Result<()> {
        sqlx::query(
            "INSERT INTO image_members (image_id, member, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (image_id, member) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
        )
        .bind(m.image_id.to_string())
        .bind(m.member.to_string())
        .bind(m.status.as_str())
        .bind(ts(m.created_at))
        .bind(ts(m.updated_at))
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot store an image member"))?;
        Ok(())
    }

    pub async fn members(&self, image: ImageId) -> Result<Vec<ImageMember>> {
        let rows =
            sqlx::query("SELECT * FROM image_members WHERE image_id = ? ORDER BY created_at")
                .bind(image.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(db_error("Cannot list image members"))?;
        rows.iter()
            .map(|r| {
                Ok(ImageMember {
                    image_id: parse_id(r.get::<&str, _>("image_id"))?,
                    member: parse_id(r.get::<&str, _>("member"))?,
                    status: MemberStatus::parse(r.get("status"))?,
                    created_at: parse_ts(r.get("created_at"))?,
                    updated_at: parse_ts(r.get("updated_at"))?,
                })
            })
            .collect()
    }

    pub async fn delete_member(&self, image: ImageId, member: ProjectId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM image_members WHERE image_id = ? AND member = ?")
            .bind(image.to_string())
            .bind(member.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot delete an image member"))?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use domain::ErrorKind;

    use super::*;

    fn image(owner: ProjectId, name: &str, offset_ms: i64) -> Image {
        let mut img = Image::new_queued(
            ImageId::new(),
            owner,
            Utc::now() + chrono::Duration::milliseconds(offset_ms),
        );
        img.name = Some(name.into());
        img
    }

    #[tokio::test]
    async fn update_when_status_moved_by_other_request_then_conflict() {
        let store = Store::in_memory().await.unwrap();
        let queued = image(ProjectId::new(), "a", 0);
        store.insert_image(&queued).await.unwrap();
        let mut saving = queued.clone();
        saving.status = ImageStatus::Saving;
        store.update_image(&queued, &saving).await.unwrap();

        let err = store.update_image(&queued, &saving).await.unwrap_err();

        assert_eq!(err.kind(), ErrorKind::Conflict);
    }

    #[tokio::test]
    async fn update_when_another_field_changed_meanwhile_then_both_kept() {
        let store = Store::in_memory().await.unwrap();
        let saving = {
            let mut img = image(ProjectId::new(), "a", 0);
            img.status = ImageStatus::Saving;
            img
        };
        store.insert_image(&saving).await.unwrap();
        let mut renamed = saving.clone();
        renamed.name = Some("renamed".into());
        let mut active = saving.clone();
        active.status = ImageStatus::Active;
        active.location = Some("file:///layer".into());

        store.update_image(&saving, &renamed).await.unwrap();
        store.update_image(&saving, &active).await.unwrap();

        let now = store.image(saving.id).await.unwrap();
        assert_eq!(now.name.as_deref(), Some("renamed"));
        assert_eq!(now.status, ImageStatus::Active);
        assert_eq!(now.location.as_deref(), Some("file:///layer"));
    }

    #[tokio::test]
    async fn list_when_paged_then_every_image_once_newest_first() {
        let store = Store::in_memory().await.unwrap();
        let owner = ProjectId::new();
        for i in 0..5 {
            store
                .insert_image(&image(owner, &format!("i{i}"), i))
                .await
                .unwrap();
        }
        let mut filter = ImageFilter {
            viewer: Some(owner),
            limit: 2,
            ..Default::default()
        };

        let mut names = Vec::new();
        loop {
            let page = store.list_images(&filter).await.unwrap();
            names.extend(page.images.iter().map(|i| i.name.clone().unwrap()));
            match page.next_marker {
                Some(m) => filter.marker = Some(m),
                None => break,
            }
        }

        assert_eq!(names, vec!["i4", "i3", "i2", "i1", "i0"]);
    }

    #[tokio::test]
    async fn list_when_other_projects_private_image_then_hidden() {
        let store = Store::in_memory().await.unwrap();
        let (a, b) = (ProjectId::new(), ProjectId::new());
        let mut private = image(a, "private", 0);
        private.visibility = Visibility::Private;
        store.insert_image(&private).await.unwrap();
        let mut public = image(a, "public", 1);
        public.visibility = Visibility::Public;
        store.insert_image(&public).await.unwrap();

        let page = store
            .list_images(&ImageFilter {
                viewer: Some(b),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();

        let names: Vec<_> = page
            .images
            .iter()
            .map(|i| i.name.clone().unwrap())
            .collect();
        assert_eq!(names, vec!["public"]);
    }

    #[tokio::test]
    async fn list_when_property_filter_then_only_exact_key_and_value() {
        let store = Store::in_memory().await.unwrap();
        let owner = ProjectId::new();
        let mut debian = image(owner, "debian", 0);
        debian
            .properties
            .insert("os_distro".into(), "debian".into());
        store.insert_image(&debian).await.unwrap();
        let mut tricky = image(owner, "tricky", 1);
        tricky
            .properties
            .insert("note".into(), "\"os_distro\":\"debian\"".into());
        store.insert_image(&tricky).await.unwrap();

        let page = store
            .list_images(&ImageFilter {
                viewer: Some(owner),
                properties: vec![("os_distro".into(), "debian".into())],
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();

        let names: Vec<_> = page
            .images
            .iter()
            .map(|i| i.name.clone().unwrap())
            .collect();
        assert_eq!(names, vec!["debian"]);
    }

    #[tokio::test]
    async fn list_when_tag_has_like_wildcards_then_exact_match_only() {
        let store = Store::in_memory().await.unwrap();
        let owner = ProjectId::new();
        let mut tagged = image(owner, "tagged", 0);
        tagged.tags.insert("a_b".into());
        store.insert_image(&tagged).await.unwrap();
        let mut other = image(owner, "other", 1);
        other.tags.insert("axb".into());
        store.insert_image(&other).await.unwrap();

        let page = store
            .list_images(&ImageFilter {
                viewer: Some(owner),
                tags: vec!["a_b".into()],
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();

        let names: Vec<_> = page
            .images
            .iter()
            .map(|i| i.name.clone().unwrap())
            .collect();
        assert_eq!(names, vec!["tagged"]);
    }
}
