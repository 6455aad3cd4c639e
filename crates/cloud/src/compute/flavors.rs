//! Flavors: admins create and delete them, and decide who may use a
//! private one (os-flavor-access); everyone lists those they may use.
//! Extra specs are the admin's to write, anyone's who sees the flavor to
//! read.

use std::collections::BTreeMap;

use domain::identity::{Caller, Role};
use domain::server::Flavor;
use domain::{Error, ProjectId, Result};

use crate::Cloud;

/// Longest extra spec key or value (Nova's schema: 255).
const MAX_SPEC_LEN: usize = 255;

impl Cloud {
    pub async fn create_flavor(&self, caller: &Caller, mut flavor: Flavor) -> Result<Flavor> {
        caller.require(Role::Admin, "create flavors")?;
        if flavor.id.is_empty() || flavor.id == "auto" {
            flavor.id = uuid::Uuid::new_v4().to_string();
        }
        flavor.validate()?;
        if self.store.flavor(&flavor.id).await.is_ok() {
            return Err(Error::conflict(format!(
                "Flavor with ID {} already exists.",
                flavor.id
            )));
        }
        self.store.insert_flavor(&flavor).await?;
        Ok(flavor)
    }

    /// Whether the caller may see and use `flavor`.
    pub(crate) async fn may_use_flavor(&self, caller: &Caller, flavor: &Flavor) -> Result<bool> {
        if flavor.is_public || caller.is_admin() {
            return Ok(true);
        }
        let Some(project) = caller.project_id else {
            return Ok(false);
        };
        Ok(self
            .store
            .flavor_access(&flavor.id)
            .await?
            .contains(&project))
    }

    pub async fn flavors(&self, caller: &Caller) -> Result<Vec<Flavor>> {
        caller.require(Role::Reader, "list flavors")?;
        let mut out = Vec::new();
        for flavor in self.store.flavors().await? {
            if self.may_use_flavor(caller, &flavor).await? {
                out.push(flavor);
            }
        }
        Ok(out)
    }

    pub async fn flavor(&self, caller: &Caller, id: &str) -> Result<Flavor> {
        caller.require(Role::Reader, "read flavors")?;
        let flavor = self.store.flavor(id).await?;
        if !self.may_use_flavor(caller, &flavor).await? {
            return Err(Error::not_found("flavor", id));
        }
        Ok(flavor)
    }

    pub async fn delete_flavor(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(Role::Admin, "delete flavors")?;
        self.store.delete_flavor(id).await
    }

    /// The projects that may use a private flavor (admin); a public
    /// flavor has no access list (404, as Nova).
    pub async fn flavor_access(&self, caller: &Caller, id: &str) -> Result<Vec<ProjectId>> {
        caller.require(Role::Admin, "list flavor access")?;
        let flavor = self.store.flavor(id).await?;
        if flavor.is_public {
            return Err(Error::not_found(
                "flavor access list",
                format!("{id}: access list not available for public flavors"),
            ));
        }
        self.store.flavor_access(id).await
    }

    /// `addTenantAccess`: 409 if the project already has access.
    pub async fn add_flavor_access(
        &self,
        caller: &Caller,
        id: &str,
        project: &str,
    ) -> Result<Vec<ProjectId>> {
        caller.require(Role::Admin, "add flavor access")?;
        let flavor = self.store.flavor(id).await?;
        if flavor.is_public {
            return Err(Error::conflict(format!(
                "Can not add access to a public flavor {id}."
            )));
        }
        let pid: ProjectId = project
            .parse()
            .map_err(|_| Error::invalid(format!("'{project}' is not a project id.")))?;
        if !self.store.add_flavor_access(id, pid).await? {
            return Err(Error::conflict(format!(
                "Flavor access already exists for flavor {id} and project {project} combination."
            )));
        }
        self.store.flavor_access(id).await
    }

    /// `removeTenantAccess`: 404 if the project had no access.
    pub async fn remove_flavor_access(
        &self,
        caller: &Caller,
        id: &str,
        project: &str,
    ) -> Result<Vec<ProjectId>> {
        caller.require(Role::Admin, "remove flavor access")?;
        self.store.flavor(id).await?;
        let removed = match project.parse::<ProjectId>() {
            Ok(pid) => self.store.remove_flavor_access(id, pid).await?,
            Err(_) => false,
        };
        if !removed {
            return Err(Error::not_found(
                "flavor access",
                format!("flavor {id} and project {project} combination"),
            ));
        }
        self.store.flavor_access(id).await
    }

    /// Merges `specs` into a flavor's extra specs (admin); returns them all.
    pub async fn set_flavor_extra_specs(
        &self,
        caller: &Caller,
        id: &str,
        specs: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        caller.require(Role::Admin, "set flavor extra specs")?;
        for (k, v) in &specs {
            let key_ok = !k.is_empty()
                && k.len() <= MAX_SPEC_LEN
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_:. ".contains(c));
            if !key_ok || v.len() > MAX_SPEC_LEN {
                return Err(Error::invalid(format!(
                    "Invalid input for field/attribute extra_specs: key '{k}' or its value is not valid."
                )));
            }
        }
        let mut flavor = self.store.flavor(id).await?;
        flavor.extra_specs.extend(specs);
        self.store
            .set_flavor_extra_specs(id, &flavor.extra_specs)
            .await?;
        Ok(flavor.extra_specs)
    }

    /// Removes one extra spec (admin); 404 if the flavor has no such key.
    pub async fn delete_flavor_extra_spec(
        &self,
        caller: &Caller,
        id: &str,
        key: &str,
    ) -> Result<()> {
        caller.require(Role::Admin, "delete flavor extra specs")?;
        let mut flavor = self.store.flavor(id).await?;
        if flavor.extra_specs.remove(key).is_none() {
            return Err(Error::not_found(
                "flavor extra spec",
                format!("{key} of flavor {id}"),
            ));
        }
        self.store
            .set_flavor_extra_specs(id, &flavor.extra_specs)
            .await
    }
}
