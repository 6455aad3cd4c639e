//! Glance images: their fields, visibility and status machine.
//!
//! ```text
//!            upload starts           data stored, inspected
//!   queued ───────────────▶ saving ───────────────────────▶ active ◀──┐
//!     ▲                       │  │                           │        │ reactivate
//!     └── rejected / aborted ─┘  └── unrecoverable ─▶ killed  │        │
//!                                                   deactivate ▼        │
//!   any ───── delete ─────▶ deleted                      deactivated ──┘
//! ```
//!
//! Every transition is checked here and applied as a compare-and-swap by the
//! store, so two requests can never both move the same image.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};

use crate::{Error, ImageId, ProjectId, Result};

/// Glance's `disk_format` values.
pub const DISK_FORMATS: &[&str] = &[
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
];
/// Glance's `container_format` values.
pub const CONTAINER_FORMATS: &[&str] = &[
    "ami",
    "ari",
    "aki",
    "bare",
    "ovf",
    "ova",
    "docker",
    "compressed",
];

/// Fields a user may never set directly (Glance answers 403 for these).
pub const READ_ONLY_FIELDS: &[&str] = &[
    "id",
    "status",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "size",
    "virtual_size",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "direct_url",
    "locations",
    "deleted",
    "deleted_at",
    "stores",
];

/// Fields that are columns, not free-form properties.
pub const BASE_FIELDS: &[&str] = &[
    "name",
    "visibility",
    "protected",
    "os_hidden",
    "disk_format",
    "container_format",
    "min_disk",
    "min_ram",
    "tags",
    "owner",
];

pub const MAX_PROPERTY_VALUE_LEN: usize = 65535;
pub const MAX_TAG_LEN: usize = 255;
/// Glance's `image_property_quota` and `image_tag_quota`.
pub const MAX_PROPERTIES: usize = 128;
pub const MAX_TAGS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageStatus {
    Queued,
    Saving,
    Active,
    Killed,
    Deactivated,
    Deleted,
}

impl ImageStatus {
    pub const ALL: [ImageStatus; 6] = [
        ImageStatus::Queued,
        ImageStatus::Saving,
        ImageStatus::Active,
        ImageStatus::Killed,
        ImageStatus::Deactivated,
        ImageStatus::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Queued => "queued",
            ImageStatus::Saving => "saving",
            ImageStatus::Active => "active",
            ImageStatus::Killed => "killed",
            ImageStatus::Deactivated => "deactivated",
            ImageStatus::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the status machine allows `self → next`.
    pub fn can_become(self, next: ImageStatus) -> bool {
        use ImageStatus::*;
        matches!(
            (self, next),
            (Queued, Saving)
                | (Saving, Active)
                | (Saving, Queued)
                | (Saving, Killed)
                | (Active, Deactivated)
                | (Deactivated, Active)
                | (Queued | Saving | Active | Killed | Deactivated, Deleted)
        )
    }

    /// Checks `self → next`, with a 409 a user can read.
    pub fn transition(self, next: ImageStatus) -> Result<ImageStatus> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(Error::conflict(format!(
                "Image status transition from {self} to {next} is not allowed."
            )))
        }
    }
}

impl fmt::Display for ImageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visibility {
    Public,
    Private,
    Shared,
    Community,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::Shared => "shared",
            Visibility::Community => "community",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "public" => Ok(Visibility::Public),
            "private" => Ok(Visibility::Private),
            "shared" => Ok(Visibility::Shared),
            "community" => Ok(Visibility::Community),
            other => Err(Error::invalid(format!(
                "Invalid visibility '{other}': expected one of public, private, shared, community."
            ))),
        }
    }
}

/// An image as Glance describes it, plus where its data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: ImageId,
    pub name: Option<String>,
    pub owner: ProjectId,
    pub status: ImageStatus,
    pub visibility: Visibility,
    pub protected: bool,
    pub os_hidden: bool,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub size: Option<u64>,
    pub virtual_size: Option<u64>,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub min_disk: u64,
    pub min_ram: u64,
    pub tags: BTreeSet<String>,
    pub properties: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Where the pool keeps the data (pool-specific URL), once active.
    pub location: Option<String>,
}

impl Image {
    /// A new, empty `queued` image owned by `owner`.
    pub fn new_queued(id: ImageId, owner: ProjectId, now: DateTime<Utc>) -> Self {
        Image {
            id,
            name: None,
            owner,
            status: ImageStatus::Queued,
            visibility: Visibility::Shared,
            protected: false,
            os_hidden: false,
            disk_format: None,
            container_format: None,
            size: None,
            virtual_size: None,
            checksum: None,
            os_hash_algo: None,
            os_hash_value: None,
            min_disk: 0,
            min_ram: 0,
            tags: BTreeSet::new(),
            properties: BTreeMap::new(),
            created_at: now,
            updated_at: now,
            location: None,
        }
    }

    /// Checks the fields a user can set, as Glance's schema does.
    pub fn validate(&self) -> Result<()> {
        if let Some(name) = &self.name {
            crate::identity::validate_name("image", name)?;
        }
        if let Some(f) = &self.disk_format {
            if !DISK_FORMATS.contains(&f.as_str()) {
                return Err(Error::invalid(format!(
                    "Invalid disk_format '{f}': expected one of {}.",
                    DISK_FORMATS.join(", ")
                )));
            }
        }
        if let Some(f) = &self.container_format {
            if !CONTAINER_FORMATS.contains(&f.as_str()) {
                return Err(Error::invalid(format!(
                    "Invalid container_format '{f}': expected one of {}.",
                    CONTAINER_FORMATS.join(", ")
                )));
            }
        }
        if self.tags.len() > MAX_TAGS {
            return Err(Error::new(
                crate::ErrorKind::TooLarge,
                format!(
                    "The limit has been exceeded on the number of allowed image tags. Attempted: {}, Maximum: {MAX_TAGS}",
                    self.tags.len()
                ),
            ));
        }
        if self.properties.len() > MAX_PROPERTIES {
            return Err(Error::new(
                crate::ErrorKind::TooLarge,
                format!(
                    "The limit has been exceeded on the number of allowed image properties. Attempted: {}, Maximum: {MAX_PROPERTIES}",
                    self.properties.len()
                ),
            ));
        }
        for tag in &self.tags {
            if tag.chars().count() > MAX_TAG_LEN {
                return Err(Error::invalid(format!(
                    "Tag '{tag}' is longer than {MAX_TAG_LEN} characters."
                )));
            }
        }
        for (key, value) in &self.properties {
            validate_property(key, value)?;
        }
        Ok(())
    }

    /// Whether data may be uploaded now (Glance wants both formats set first).
    pub fn ready_for_upload(&self) -> Result<()> {
        if self.status != ImageStatus::Queued {
            return Err(Error::conflict(format!(
                "Image {} is {}; data can only be uploaded to a queued image.",
                self.id, self.status
            )));
        }
        if self.disk_format.is_none() || self.container_format.is_none() {
            return Err(Error::invalid(
                "Properties disk_format and container_format must be set before uploading data.",
            ));
        }
        Ok(())
    }
}

/// Checks one free-form property (`key=value`).
/// Glance's core image attributes: a server snapshot's `createImage`
/// metadata may not name them (they would shadow the image's own).
pub const CORE_FIELDS: &[&str] = &[
    "id",
    "name",
    "status",
    "visibility",
    "owner",
    "protected",
    "os_hidden",
    "disk_format",
    "container_format",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "min_disk",
    "min_ram",
    "tags",
    "locations",
    "direct_url",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "stores",
];

/// Checks `createImage` metadata: no core attribute, nothing in the
/// `os_glance` namespace (400).
pub fn check_snapshot_metadata<'a>(keys: impl IntoIterator<Item = &'a String>) -> Result<()> {
    for key in keys {
        if CORE_FIELDS.contains(&key.as_str()) || key.starts_with("os_glance") {
            return Err(Error::invalid(format!(
                "Invalid image metadata: '{key}' is an image attribute, not a property a snapshot may set."
            )));
        }
    }
    Ok(())
}

pub fn validate_property(key: &str, value: &str) -> Result<()> {
    if key.is_empty() || key.chars().count() > 255 {
        return Err(Error::invalid(
            "Property names must be 1 to 255 characters long.",
        ));
    }
    if READ_ONLY_FIELDS.contains(&key) {
        return Err(Error::forbidden(format!("Attribute '{key}' is read-only.")));
    }
    if key.starts_with("os_glance") {
        return Err(Error::forbidden(format!(
            "Attribute '{key}' is reserved: the os_glance namespace belongs to the image service."
        )));
    }
    if value.chars().count() > MAX_PROPERTY_VALUE_LEN {
        return Err(Error::invalid(format!(
            "The value of property '{key}' is longer than {MAX_PROPERTY_VALUE_LEN} characters."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn image() -> Image {
        Image::new_queued(ImageId::new(), ProjectId::new(), Utc::now())
    }

    #[test]
    fn queued_image_when_upload_starts_then_saving() {
        assert_eq!(
            ImageStatus::Queued.transition(ImageStatus::Saving),
            Ok(ImageStatus::Saving)
        );
    }

    #[test]
    fn active_image_when_upload_starts_then_conflict() {
        let err = ImageStatus::Active
            .transition(ImageStatus::Saving)
            .unwrap_err();

        assert_eq!(err.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn deleted_image_when_any_transition_then_refused() {
        for next in ImageStatus::ALL {
            assert!(!ImageStatus::Deleted.can_become(next), "deleted -> {next}");
        }
    }

    #[test]
    fn image_when_name_too_long_then_invalid() {
        let mut img = image();
        img.name = Some("x".repeat(256));

        assert_eq!(img.validate().unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn image_when_bad_disk_format_then_invalid() {
        let mut img = image();
        img.disk_format = Some("qcow3".into());

        assert_eq!(img.validate().unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn property_when_read_only_name_then_forbidden() {
        assert_eq!(
            validate_property("status", "active").unwrap_err().kind(),
            ErrorKind::Forbidden
        );
    }

    #[test]
    fn queued_image_without_formats_when_upload_then_invalid() {
        let img = image();

        assert_eq!(
            img.ready_for_upload().unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}
