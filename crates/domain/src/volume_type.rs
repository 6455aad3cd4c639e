//! Volume types (Cinder): a named set of extra specs a volume is made with.
//!
//! There is always a default type, `__DEFAULT__` (as Cinder creates it), used
//! when a volume names none. A type is public, or private and usable only by
//! the projects given access (and admins). Where more than one pool is
//! configured the extra spec `volume_backend_name` chooses the pool; with one
//! pool a type naming another backend cannot be placed.
//!
//! Encryption specs may be recorded on a type (Cinder's
//! `/types/{id}/encryption`); Snapstack does not encrypt, so a volume of an
//! encrypted type is refused rather than made in the clear.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::{Error, Result, VolumeTypeId};

/// The name of the type Cinder makes at installation.
pub const DEFAULT_TYPE_NAME: &str = "__DEFAULT__";

/// The id the default type has in every Snapstack.
pub const DEFAULT_TYPE_ID: &str = "5ad01bd4-5d8f-4c6b-8a6f-2b5d3a2f0001";

/// The extra spec that names the backend (pool) a volume goes to.
pub const BACKEND_NAME_SPEC: &str = "volume_backend_name";

/// The id of the default type.
pub fn default_type_id() -> VolumeTypeId {
    DEFAULT_TYPE_ID.parse().expect("a valid uuid")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeType {
    pub id: VolumeTypeId,
    pub name: String,
    pub description: Option<String>,
    pub is_public: bool,
    pub extra_specs: BTreeMap<String, String>,
    pub encryption: Option<Encryption>,
    /// The QoS specs associated with the type.
    pub qos_specs_id: Option<uuid::Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Cinder's QoS specs: key/value limits for a consumer (`front-end`,
/// `back-end` or `both`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QosSpecs {
    pub id: uuid::Uuid,
    pub name: String,
    pub consumer: String,
    pub specs: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
}

/// Cinder's encryption specs of a type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Encryption {
    pub encryption_id: uuid::Uuid,
    pub provider: String,
    pub cipher: Option<String>,
    pub key_size: Option<i64>,
    pub control_location: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl VolumeType {
    pub fn is_default(&self) -> bool {
        self.id == default_type_id()
    }

    /// Checks the fields an admin sets.
    pub fn validate(&self) -> Result<()> {
        validate_type_name(&self.name)?;
        if let Some(d) = &self.description {
            if d.chars().count() > 255 {
                return Err(Error::invalid(
                    "Invalid input received: the description must be at most 255 characters.",
                ));
            }
        }
        validate_extra_specs(&self.extra_specs)
    }
}

/// A type name: 1 to 255 characters, not blank.
pub fn validate_type_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > 255 {
        return Err(Error::invalid(
            "Invalid input received: a volume type name must be 1 to 255 characters and not blank.",
        ));
    }
    Ok(())
}

/// Extra spec keys and values: 1 to 255 characters (keys), at most 255 (values).
pub fn validate_extra_specs(specs: &BTreeMap<String, String>) -> Result<()> {
    if specs
        .iter()
        .any(|(k, v)| k.trim().is_empty() || k.len() > 255 || v.len() > 255)
    {
        return Err(Error::invalid(
            "Invalid input received: extra spec keys must be 1 to 255 characters and values at most 255.",
        ));
    }
    Ok(())
}

/// Checks encryption specs as Cinder does: a provider, a control location
/// `front-end` or `back-end`, a key size that is positive.
pub fn validate_encryption(e: &Encryption) -> Result<()> {
    if e.provider.trim().is_empty() {
        return Err(Error::invalid(
            "Invalid input received: provider must be specified.",
        ));
    }
    if !matches!(e.control_location.as_str(), "front-end" | "back-end") {
        return Err(Error::invalid(
            "Invalid input received: control_location must be 'front-end' or 'back-end'.",
        ));
    }
    if e.key_size.is_some_and(|k| k <= 0) {
        return Err(Error::invalid(
            "Invalid input received: key_size must be a positive integer.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn type_name_when_blank_then_invalid() {
        let e = validate_type_name("  ").unwrap_err();

        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn encryption_when_unknown_control_location_then_invalid() {
        let e = Encryption {
            encryption_id: uuid::Uuid::new_v4(),
            provider: "luks".into(),
            cipher: None,
            key_size: Some(256),
            control_location: "middle".into(),
            created_at: Utc::now(),
            updated_at: None,
        };

        assert_eq!(
            validate_encryption(&e).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}
