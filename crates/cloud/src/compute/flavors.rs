//! Flavors: admins create and delete them, everyone lists them.

use domain::identity::{Caller, Role};
use domain::server::Flavor;
use domain::{Error, Result};

use crate::Cloud;

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

    pub async fn flavors(&self, caller: &Caller) -> Result<Vec<Flavor>> {
        caller.require(Role::Reader, "list flavors")?;
        let all = self.store.flavors().await?;
        Ok(all
            .into_iter()
            .filter(|f| f.is_public || caller.is_admin())
            .collect())
    }

    pub async fn flavor(&self, caller: &Caller, id: &str) -> Result<Flavor> {
        caller.require(Role::Reader, "read flavors")?;
        let flavor = self.store.flavor(id).await?;
        if !flavor.is_public && !caller.is_admin() {
            return Err(Error::not_found("flavor", id));
        }
        Ok(flavor)
    }

    pub async fn delete_flavor(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(Role::Admin, "delete flavors")?;
        self.store.delete_flavor(id).await
    }
}
