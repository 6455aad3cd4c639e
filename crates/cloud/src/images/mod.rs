//! The image service (Glance v2 semantics).
//!
//! Who may do what:
//! - see an image: its owner project, an admin, anyone for `public` and
//!   `community` images, member projects for `shared` ones; anyone else gets
//!   404 (never 403, so ids of other projects' images do not leak);
//! - change or delete it: its owner with the `member` role, or an admin;
//!   readers get 403;
//! - make it `public`, deactivate or reactivate it: admins only.
//!
//! Uploads and downloads are streamed ([`upload`], [`download`]); metadata
//! changes are JSON patches ([`patch`]).

pub(crate) mod convert;
mod download;
pub(crate) mod exports;
mod members;
pub mod metadefs;
pub mod patch;
mod request;
pub(crate) mod stage_quota;
mod upload;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::image::{Image, ImageStatus, Visibility};
use domain::{Error, ImageId, Result};
use store::{ImageFilter, ImagePage};

pub use download::Download;
pub use exports::ExportConfig;
pub use request::NewImage;

use crate::Cloud;

/// Largest page `GET /v2/images` returns (Glance's `api_limit_max`).
pub const MAX_PAGE: u32 = 1000;
/// Page size when the request names none (Glance's `limit_param_default`).
pub const DEFAULT_PAGE: u32 = 25;

/// The `qemu-img` format of an image's stored data (raw when unknown).
pub(crate) fn qemu_format_of(img: &Image) -> &'static str {
    img.disk_format
        .as_deref()
        .and_then(|f| f.parse::<image_format::DiskFormat>().ok())
        .map_or("raw", image_format::qemu_img_format)
}

/// Whether `caller` may see `img` at all.
fn can_view(caller: &Caller, img: &Image, is_member: bool) -> bool {
    caller.can_see_project(img.owner)
        || matches!(img.visibility, Visibility::Public | Visibility::Community)
        || (img.visibility == Visibility::Shared && is_member)
}

impl Cloud {
    /// An image the caller can see, or 404.
    pub async fn image(&self, caller: &Caller, id: &str) -> Result<Image> {
        let id: ImageId = id.parse()?;
        let img = self.store.image(id).await?;
        if img.status == ImageStatus::Deleted {
            return Err(Error::not_found("image", id));
        }
        let is_member = match (caller.project_id, img.visibility) {
            (Some(me), Visibility::Shared) => {
                self.store.members(id).await?.iter().any(|m| m.member == me)
            }
            _ => false,
        };
        if !can_view(caller, &img, is_member) {
            return Err(Error::not_found("image", id));
        }
        Ok(img)
    }

    /// An image the caller may change: visible (else 404) and owned with the
    /// member role, or admin (else 403).
    async fn image_for_change(&self, caller: &Caller, id: &str, action: &str) -> Result<Image> {
        let img = self.image(caller, id).await?;
        caller.require(Role::Member, action)?;
        if !caller.is_admin() && caller.project_id != Some(img.owner) {
            return Err(Error::forbidden(format!(
                "You are not authorized to {action}: image {} belongs to another project.",
                img.id
            )));
        }
        Ok(img)
    }

    /// 409 while a saga (a server snapshot) is making `img`: the image is
    /// Snapstack's until it is active, so neither a PATCH nor an upload
    /// may change it under the saga.
    pub(crate) async fn refuse_if_saga_makes(&self, img: &Image) -> Result<()> {
        if !matches!(img.status, ImageStatus::Queued | ImageStatus::Saving) {
            return Ok(());
        }
        let id = img.id.to_string();
        let open = self.store.open_sagas().await?;
        if open
            .iter()
            .any(|s| s.data.get("image").and_then(serde_json::Value::as_str) == Some(id.as_str()))
        {
            return Err(Error::conflict(format!(
                "Image {id} is being made by a server snapshot; it cannot be changed until it is active."
            )));
        }
        Ok(())
    }

    pub async fn create_image(&self, caller: &Caller, new: NewImage) -> Result<Image> {
        caller.require(Role::Member, "create images")?;
        let mut owner = caller.project()?;
        if let Some(asked) = new.owner {
            if asked != owner && !caller.is_admin() {
                return Err(Error::forbidden(
                    "Only an admin may create an image owned by another project.",
                ));
            }
            owner = asked;
        }
        self.check_image_count(owner).await?;
        let id = new.id.unwrap_or_default();
        let mut img = Image::new_queued(id, owner, Utc::now());
        img.name = new.name;
        if let Some(v) = new.visibility {
            check_visibility_allowed(caller, v)?;
            img.visibility = v;
        }
        img.protected = new.protected;
        img.os_hidden = new.os_hidden;
        img.disk_format = new.disk_format;
        img.container_format = new.container_format;
        img.min_disk = new.min_disk;
        img.min_ram = new.min_ram;
        img.tags = new.tags;
        img.properties = new.properties;
        img.validate()?;
        if self.store.image(id).await.is_ok() {
            return Err(Error::conflict(format!(
                "An image with id {id} already exists."
            )));
        }
        self.store.insert_image(&img).await?;
        Ok(img)
    }

    /// One page of the images the caller can see.
    pub async fn list_images(&self, caller: &Caller, mut filter: ImageFilter) -> Result<ImagePage> {
        caller.require(Role::Reader, "list images")?;
        filter.viewer = if caller.is_admin() {
            None
        } else {
            Some(caller.project()?)
        };
        if filter.limit == 0 || filter.limit > MAX_PAGE {
            filter.limit = filter.limit.clamp(1, MAX_PAGE);
        }
        if let Some(marker) = filter.marker {
            self.image(caller, &marker.to_string()).await.map_err(|_| {
                Error::invalid(format!(
                    "Marker {marker} does not name an image you can see."
                ))
            })?;
        }
        self.store.list_images(&filter).await
    }

    /// Applies a JSON patch to an image's metadata.
    pub async fn update_image(
        &self,
        caller: &Caller,
        id: &str,
        ops: Vec<patch::PatchOp>,
    ) -> Result<Image> {
        let before = self.image_for_change(caller, id, "modify images").await?;
        self.refuse_if_saga_makes(&before).await?;
        let mut img = before.clone();
        for op in &ops {
            patch::apply(&mut img, op, caller)?;
        }
        if img.visibility != before.visibility {
            check_visibility_allowed(caller, img.visibility)?;
        }
        img.validate()?;
        img.updated_at = Utc::now();
        self.store.update_image(&before, &img).await?;
        Ok(img)
    }

    /// Deletes an image and its data. Protected images are refused (403).
    pub async fn delete_image(&self, caller: &Caller, id: &str) -> Result<()> {
        let img = self.image_for_change(caller, id, "delete images").await?;
        if img.protected {
            return Err(Error::forbidden(format!(
                "Image {} is protected and cannot be deleted; unset its protected flag first.",
                img.id
            )));
        }
        if let Some(location) = &img.location {
            // A pool that cannot let the data go (RBD clones of it) says so
            // now, before anything changes.
            self.pool.check_deletable(location).await?;
        }
        let mut deleted = img.clone();
        deleted.status = img.status.transition(ImageStatus::Deleted)?;
        deleted.updated_at = Utc::now();
        // Mark it deleted first: if the data removal then fails or the
        // process dies, start-up reconciliation removes the orphaned data.
        self.store.update_image(&img, &deleted).await?;
        self.delete_owned_volume_snapshots(img.id).await;
        // The data goes unless servers or other images still stand on it.
        self.collect_garbage_quietly().await;
        Ok(())
    }

    /// The volume snapshots a snapshot of a volume-backed server made for
    /// this image go with it (their data stays while volumes made from
    /// them stand on it). One that cannot go now is logged and left.
    async fn delete_owned_volume_snapshots(&self, image: domain::ImageId) {
        let owned = match self.store.volume_snapshots_of_image(image).await {
            Ok(owned) => owned,
            Err(e) => {
                return tracing::warn!(%image, error = %e, "cannot list the image's volume snapshots")
            }
        };
        for id in owned {
            let Ok(snap) = self.store.volume_snapshot(id).await else {
                continue;
            };
            if matches!(
                snap.status,
                domain::volume::SnapshotStatus::Deleting | domain::volume::SnapshotStatus::Deleted
            ) {
                continue;
            }
            match self.delete_snapshot_record(snap).await {
                Ok(()) => {
                    tracing::info!(%image, snapshot = %id, "volume snapshot of a deleted image deleted")
                }
                Err(e) => {
                    tracing::warn!(%image, snapshot = %id, error = %e, "volume snapshot of a deleted image kept")
                }
            }
        }
    }

    /// `deactivate` / `reactivate`: admins, and members of the owning
    /// project (Glance's default policy since the secure-RBAC defaults).
    pub async fn set_image_active(&self, caller: &Caller, id: &str, active: bool) -> Result<()> {
        let action = if active {
            "reactivate images"
        } else {
            "deactivate images"
        };
        let img = self.image_for_change(caller, id, action).await?;
        let target = if active {
            ImageStatus::Active
        } else {
            ImageStatus::Deactivated
        };
        if img.status == target {
            return Ok(());
        }
        let mut changed = img.clone();
        changed.status = img.status.transition(target).map_err(|_| {
            Error::conflict(format!(
                "Image {} is {}; it cannot be {action}d.",
                img.id, img.status
            ))
        })?;
        changed.updated_at = Utc::now();
        self.store.update_image(&img, &changed).await
    }

    /// Adds or removes one tag.
    pub async fn set_image_tag(
        &self,
        caller: &Caller,
        id: &str,
        tag: &str,
        present: bool,
    ) -> Result<()> {
        let img = self.image_for_change(caller, id, "modify images").await?;
        self.refuse_if_saga_makes(&img).await?;
        let mut changed = img.clone();
        if present {
            changed.tags.insert(tag.to_string());
        } else if !changed.tags.remove(tag) {
            return Err(Error::not_found("tag", tag));
        }
        changed.validate()?;
        changed.updated_at = Utc::now();
        self.store.update_image(&img, &changed).await
    }
}

fn check_visibility_allowed(caller: &Caller, v: Visibility) -> Result<()> {
    if v == Visibility::Public && !caller.is_admin() {
        return Err(Error::forbidden("Only an admin may make an image public."));
    }
    Ok(())
}

/// Start-up repair: uploads cut short go back to `queued`, staging files
/// are removed, and pool data no image record points to is deleted.
pub(crate) async fn reconcile(cloud: &Cloud) -> Result<Vec<String>> {
    let mut repaired = Vec::new();
    for saving in cloud.store.images_in_status(ImageStatus::Saving).await? {
        let mut img = saving.clone();
        img.status = ImageStatus::Queued;
        img.updated_at = Utc::now();
        cloud.store.update_image(&saving, &img).await?;
        repaired.push(format!(
            "image {}: upload interrupted, back to queued",
            img.id
        ));
    }
    if let Ok(mut dir) = tokio::fs::read_dir(&cloud.config.staging_dir).await {
        while let Ok(Some(entry)) = dir.next_entry().await {
            // The export cache (a directory) is swept below, not emptied.
            if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let _ = tokio::fs::remove_file(entry.path()).await;
            repaired.push(format!("staging file {} removed", entry.path().display()));
        }
    }
    repaired.extend(cloud.sweep_exports(true).await);
    Ok(repaired)
}
