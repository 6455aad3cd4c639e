//! Volume types (Cinder's `/types`): the default type, admin CRUD, extra
//! specs, access to private types, encryption specs, and the choice of a
//! type for a new or retyped volume.
//!
//! Policy as Cinder's defaults: anyone may list and show the types they can
//! use (public ones, private ones their project was given); only admins
//! make, change or delete types and see extra specs of every type.
//!
//! Placement: the extra spec `volume_backend_name`, where set, must name
//! the pool (`file`, `rbd`): with one pool configured, a type naming another
//! backend cannot be placed (400, "No valid backend"). Snapstack does not
//! encrypt volumes, so a type with encryption specs is refused for volumes.

use std::collections::BTreeMap;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::volume::{Volume, VolumeStatus};
use domain::volume_type::{
    default_type_id, validate_encryption, validate_extra_specs, Encryption, VolumeType,
    BACKEND_NAME_SPEC,
};
use domain::{Error, ProjectId, Result, VolumeTypeId};

use crate::Cloud;

/// The vendor Snapstack reports for its backend.
pub const VENDOR_NAME: &str = "Snapstack";

/// Snapstack does not encrypt volumes: a type with encryption specs is
/// refused (400) rather than its volumes made in the clear.
fn refuse_encrypted(t: &VolumeType) -> Result<()> {
    if t.encryption.is_some() {
        return Err(Error::invalid(format!(
            "Invalid volume type: volume type {} is encrypted; Snapstack does not encrypt volumes.",
            t.name
        )));
    }
    Ok(())
}

/// What `POST /types` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewVolumeType {
    pub name: String,
    pub description: Option<String>,
    pub is_public: bool,
    pub extra_specs: BTreeMap<String, String>,
}

/// What `PUT /types/{id}` may change.
#[derive(Debug, Clone, Default)]
pub struct VolumeTypeChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub is_public: Option<bool>,
}

/// What encryption specs a request gives (all optional on update).
#[derive(Debug, Clone, Default)]
pub struct EncryptionSpecs {
    pub provider: Option<String>,
    pub cipher: Option<Option<String>>,
    pub key_size: Option<Option<i64>>,
    pub control_location: Option<String>,
}

impl Cloud {
    /// The backend name of the pool, as `volume_backend_name` names it.
    pub fn volume_backend_name(&self) -> &'static str {
        self.pool.kind()
    }

    /// Whether the caller may use (see) a type.
    async fn may_use_type(&self, caller: &Caller, t: &VolumeType) -> Result<bool> {
        if t.is_public || caller.is_admin() {
            return Ok(true);
        }
        let project = caller.project()?;
        Ok(self
            .store
            .volume_type_access(t.id)
            .await?
            .contains(&project))
    }

    /// The types the caller may use; `is_public` (admins only) narrows the
    /// list to public (`Some(true)`) or private (`Some(false)`) ones.
    pub async fn volume_types(
        &self,
        caller: &Caller,
        is_public: Option<bool>,
    ) -> Result<Vec<VolumeType>> {
        caller.require(Role::Reader, "list volume types")?;
        let mut shown = Vec::new();
        for t in self.store.volume_types().await? {
            let listed = match is_public {
                Some(p) if caller.is_admin() => t.is_public == p,
                _ => self.may_use_type(caller, &t).await?,
            };
            if listed {
                shown.push(t);
            }
        }
        Ok(shown)
    }

    /// A type by id or by name (`default`: the default type), or 404 when
    /// the caller may not use it.
    pub async fn volume_type(&self, caller: &Caller, id_or_name: &str) -> Result<VolumeType> {
        caller.require(Role::Reader, "read volume types")?;
        let found = if id_or_name == "default" {
            Some(self.store.volume_type(default_type_id()).await?)
        } else if let Ok(id) = id_or_name.parse::<VolumeTypeId>() {
            match self.store.volume_type(id).await {
                Ok(t) => Some(t),
                Err(e) if e.kind() == domain::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let found = match found {
            Some(t) => Some(t),
            None => self.store.volume_type_by_name(id_or_name).await?,
        };
        match found {
            Some(t) if self.may_use_type(caller, &t).await? => Ok(t),
            _ => Err(Error::not_found("Volume type", id_or_name)),
        }
    }

    /// An admin's lookup by id only (what the admin paths of `/types/{id}`
    /// take), or 404.
    async fn volume_type_for_admin(&self, caller: &Caller, id: &str) -> Result<VolumeType> {
        caller.require(Role::Admin, "manage volume types")?;
        let id: VolumeTypeId = id
            .parse()
            .map_err(|_| Error::not_found("Volume type", id))?;
        self.store.volume_type(id).await
    }

    pub async fn create_volume_type(
        &self,
        caller: &Caller,
        new: NewVolumeType,
    ) -> Result<VolumeType> {
        caller.require(Role::Admin, "create volume types")?;
        let now = Utc::now();
        let t = VolumeType {
            id: VolumeTypeId::new(),
            name: new.name.trim().to_string(),
            description: new.description,
            is_public: new.is_public,
            extra_specs: new.extra_specs,
            encryption: None,
            qos_specs_id: None,
            created_at: now,
            updated_at: now,
        };
        t.validate()?;
        if self.store.volume_type_by_name(&t.name).await?.is_some() {
            return Err(Error::conflict(format!(
                "Volume Type {} already exists.",
                t.name
            )));
        }
        self.store.insert_volume_type(&t).await?;
        Ok(t)
    }

    pub async fn update_volume_type(
        &self,
        caller: &Caller,
        id: &str,
        changes: VolumeTypeChanges,
    ) -> Result<VolumeType> {
        let mut t = self.volume_type_for_admin(caller, id).await?;
        if let Some(name) = changes.name {
            let name = name.trim().to_string();
            if t.is_default() && name != t.name {
                return Err(Error::invalid(
                    "Invalid volume type: the default volume type cannot be renamed.",
                ));
            }
            if let Some(other) = self.store.volume_type_by_name(&name).await? {
                if other.id != t.id {
                    return Err(Error::conflict(format!(
                        "Volume Type {name} already exists."
                    )));
                }
            }
            t.name = name;
        }
        if let Some(d) = changes.description {
            t.description = d;
        }
        if let Some(p) = changes.is_public {
            t.is_public = p;
        }
        t.validate()?;
        t.updated_at = Utc::now();
        self.store.update_volume_type(&t).await?;
        Ok(t)
    }

    /// Deletes a type: 400 for the default type or one in use.
    pub async fn delete_volume_type(&self, caller: &Caller, id: &str) -> Result<()> {
        let t = self.volume_type_for_admin(caller, id).await?;
        if t.is_default() {
            return Err(Error::invalid(
                "Invalid volume type: the default volume type cannot be deleted.",
            ));
        }
        self.store.delete_volume_type(t.id).await
    }

    /// The extra specs of a type (admins: any; others: the types they may
    /// use).
    pub async fn volume_type_extra_specs(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<BTreeMap<String, String>> {
        if caller.is_admin() {
            return Ok(self.volume_type_for_admin(caller, id).await?.extra_specs);
        }
        Ok(self.volume_type(caller, id).await?.extra_specs)
    }

    /// Sets (adds or overwrites) extra specs; answers the type's specs.
    pub async fn set_volume_type_extra_specs(
        &self,
        caller: &Caller,
        id: &str,
        specs: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let mut t = self.volume_type_for_admin(caller, id).await?;
        validate_extra_specs(&specs)?;
        t.extra_specs.extend(specs);
        t.updated_at = Utc::now();
        self.store.update_volume_type(&t).await?;
        Ok(t.extra_specs)
    }

    /// Removes one extra spec, 404 if the type has no such key.
    pub async fn unset_volume_type_extra_spec(
        &self,
        caller: &Caller,
        id: &str,
        key: &str,
    ) -> Result<()> {
        let mut t = self.volume_type_for_admin(caller, id).await?;
        if t.extra_specs.remove(key).is_none() {
            return Err(Error::not_found("Volume Type extra spec", key));
        }
        t.updated_at = Utc::now();
        self.store.update_volume_type(&t).await
    }

    /// The projects a private type is shared with (400 for a public type).
    pub async fn volume_type_access(&self, caller: &Caller, id: &str) -> Result<Vec<ProjectId>> {
        let t = self.volume_type_for_admin(caller, id).await?;
        if t.is_public {
            return Err(Error::invalid(
                "Access list not available for public volume types.",
            ));
        }
        self.store.volume_type_access(t.id).await
    }

    /// Gives (`grant`) or takes away a project's access to a private type.
    pub async fn change_volume_type_access(
        &self,
        caller: &Caller,
        id: &str,
        project: &str,
        grant: bool,
    ) -> Result<()> {
        let t = self.volume_type_for_admin(caller, id).await?;
        if t.is_public {
            return Err(Error::invalid(
                "Invalid volume type: Type access modification is not applicable to public volume type.",
            ));
        }
        let project: ProjectId = project
            .parse()
            .map_err(|_| Error::invalid(format!("Invalid project id '{project}'.")))?;
        if grant {
            self.store
                .add_volume_type_access(t.id, project)
                .await
                .map_err(|e| match e.kind() {
                    domain::ErrorKind::Conflict => Error::conflict(format!(
                        "Volume type access for {} / {project} combination already exists.",
                        t.id
                    )),
                    _ => e,
                })
        } else {
            self.store.remove_volume_type_access(t.id, project).await
        }
    }

    /// The encryption specs of a type (`None`: not encrypted).
    pub async fn volume_type_encryption(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(VolumeType, Option<Encryption>)> {
        let t = self.volume_type_for_admin(caller, id).await?;
        let e = t.encryption.clone();
        Ok((t, e))
    }

    /// Records encryption specs on a type without them (400 if it has some,
    /// or volumes use it).
    pub async fn create_volume_type_encryption(
        &self,
        caller: &Caller,
        id: &str,
        specs: EncryptionSpecs,
    ) -> Result<(VolumeType, Encryption)> {
        let mut t = self.volume_type_for_admin(caller, id).await?;
        if t.encryption.is_some() {
            return Err(Error::invalid(format!(
                "Volume type encryption for type {} already exists.",
                t.id
            )));
        }
        self.refuse_if_type_in_use(&t).await?;
        let e = Encryption {
            encryption_id: uuid::Uuid::new_v4(),
            provider: specs.provider.unwrap_or_default(),
            cipher: specs.cipher.flatten(),
            key_size: specs.key_size.flatten(),
            control_location: specs.control_location.unwrap_or_else(|| "front-end".into()),
            created_at: Utc::now(),
            updated_at: None,
        };
        validate_encryption(&e)?;
        t.encryption = Some(e.clone());
        t.updated_at = Utc::now();
        self.store.update_volume_type(&t).await?;
        Ok((t, e))
    }

    pub async fn update_volume_type_encryption(
        &self,
        caller: &Caller,
        id: &str,
        specs: EncryptionSpecs,
    ) -> Result<Encryption> {
        let mut t = self.volume_type_for_admin(caller, id).await?;
        let mut e = t
            .encryption
            .clone()
            .ok_or_else(|| Error::not_found("Volume type encryption for type", t.id.to_string()))?;
        self.refuse_if_type_in_use(&t).await?;
        if let Some(p) = specs.provider {
            e.provider = p;
        }
        if let Some(c) = specs.cipher {
            e.cipher = c;
        }
        if let Some(k) = specs.key_size {
            e.key_size = k;
        }
        if let Some(l) = specs.control_location {
            e.control_location = l;
        }
        validate_encryption(&e)?;
        e.updated_at = Some(Utc::now());
        t.encryption = Some(e.clone());
        t.updated_at = Utc::now();
        self.store.update_volume_type(&t).await?;
        Ok(e)
    }

    pub async fn delete_volume_type_encryption(&self, caller: &Caller, id: &str) -> Result<()> {
        let mut t = self.volume_type_for_admin(caller, id).await?;
        if t.encryption.is_none() {
            return Err(Error::not_found(
                "Volume type encryption for type",
                t.id.to_string(),
            ));
        }
        self.refuse_if_type_in_use(&t).await?;
        t.encryption = None;
        t.updated_at = Utc::now();
        self.store.update_volume_type(&t).await
    }

    async fn refuse_if_type_in_use(&self, t: &VolumeType) -> Result<()> {
        let in_use = self
            .store
            .volumes(None)
            .await?
            .iter()
            .any(|v| v.volume_type_id == t.id);
        if in_use {
            return Err(Error::invalid(format!(
                "Invalid volume type: Cannot change the encryption of volume type {}: volumes use it.",
                t.id
            )));
        }
        Ok(())
    }

    /// The type a new volume gets: the one asked for (by id or name, which
    /// the caller must be allowed to use: 404 otherwise), else `inherited`
    /// (a source volume's or snapshot's), else the default type; with why
    /// the backend cannot take it, if it cannot (the volume then ends in
    /// `error` with a user message, as Cinder's scheduler answers).
    pub(crate) async fn type_for_new_volume(
        &self,
        caller: &Caller,
        asked: Option<&str>,
        inherited: Option<VolumeTypeId>,
    ) -> Result<(VolumeTypeId, Option<String>)> {
        let t = match (asked, inherited) {
            (Some(asked), _) => self.volume_type(caller, asked).await?,
            (None, Some(id)) => self.store.volume_type(id).await?,
            (None, None) => return Ok((default_type_id(), None)),
        };
        refuse_encrypted(&t)?;
        Ok((t.id, self.placement_problem(&t)))
    }

    /// What the backend reports that a type's extra specs contradict
    /// (Cinder's capabilities filter on `volume_backend_name`,
    /// `vendor_name`, `storage_protocol`), or None if it can take it.
    fn placement_problem(&self, t: &VolumeType) -> Option<String> {
        let backend = [
            (BACKEND_NAME_SPEC, self.volume_backend_name()),
            ("vendor_name", VENDOR_NAME),
            ("storage_protocol", self.storage_protocol()),
        ];
        backend.iter().find_map(|(key, have)| {
            let wanted = t
                .extra_specs
                .get(*key)
                .or_else(|| t.extra_specs.get(&format!("capabilities:{key}")))?;
            let wanted = wanted.strip_prefix("<in> ").unwrap_or(wanted).trim();
            (!wanted.eq_ignore_ascii_case(have)).then(|| {
                format!(
                    "No valid backend was found: volume type {} asks for {key} '{wanted}'; the backend has '{have}'.",
                    t.name
                )
            })
        })
    }

    /// The storage protocol the backend reports (`ceph` for RBD, `file`).
    pub fn storage_protocol(&self) -> &'static str {
        match self.volume_backend_name() {
            "rbd" => "ceph",
            _ => "file",
        }
    }

    /// Cinder's `os-retype`: the volume (available or in-use) gets another
    /// type. Every type places on the one pool, so no data moves
    /// (`migration_policy` is accepted and has nothing to do).
    pub async fn retype_volume(&self, caller: &Caller, id: &str, new_type: &str) -> Result<Volume> {
        let volume = self.volume(caller, id).await?;
        caller.require(Role::Member, "retype volumes")?;
        if !matches!(volume.status, VolumeStatus::Available | VolumeStatus::InUse) {
            return Err(Error::invalid(format!(
                "Invalid volume: Volume {} status must be available or in-use, but current status is: {}.",
                volume.id, volume.status
            )));
        }
        let t = self.volume_type(caller, new_type).await?;
        if t.id == volume.volume_type_id {
            return Err(Error::invalid(
                "Invalid input received: Retype destination type is the same as the volume's type.",
            ));
        }
        refuse_encrypted(&t)?;
        if let Some(problem) = self.placement_problem(&t) {
            return Err(Error::invalid(problem));
        }
        let mut next = volume.clone();
        next.volume_type_id = t.id;
        next.updated_at = Utc::now();
        self.store.update_volume(&volume, &next).await?;
        Ok(next)
    }

    /// The name of a volume's type, as Cinder shows it (`volume_type`).
    pub async fn volume_type_name(&self, id: VolumeTypeId) -> Result<String> {
        match self.store.volume_type(id).await {
            Ok(t) => Ok(t.name),
            Err(e) if e.kind() == domain::ErrorKind::NotFound => Ok(id.to_string()),
            Err(e) => Err(e),
        }
    }
}
