//! Cinder QoS specs (`/qos-specs`, admins only): named key/value limits
//! for a consumer, associated with volume types. Snapstack's backends
//! report `QoS_support: false`: the specs are recorded and shown, not
//! enforced (as Cinder with such a backend).

use std::collections::BTreeMap;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::volume_type::{QosSpecs, VolumeType};
use domain::{Error, ErrorKind, Result};

use crate::Cloud;

fn parse_id(id: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(id).map_err(|_| Error::not_found("QoS specs", id))
}

impl Cloud {
    pub async fn all_qos_specs(&self, caller: &Caller) -> Result<Vec<QosSpecs>> {
        caller.require(Role::Admin, "list QoS specs")?;
        self.store.all_qos_specs().await
    }

    pub async fn qos_specs(&self, caller: &Caller, id: &str) -> Result<QosSpecs> {
        caller.require(Role::Admin, "read QoS specs")?;
        self.store.qos_specs(parse_id(id)?).await
    }

    pub async fn create_qos_specs(
        &self,
        caller: &Caller,
        name: String,
        consumer: Option<String>,
        specs: BTreeMap<String, String>,
    ) -> Result<QosSpecs> {
        caller.require(Role::Admin, "create QoS specs")?;
        if name.trim().is_empty() || name.chars().count() > 255 {
            return Err(Error::invalid(
                "Invalid input received: a QoS specs name must be 1 to 255 characters.",
            ));
        }
        let consumer = consumer.unwrap_or_else(|| "back-end".into());
        if !matches!(consumer.as_str(), "front-end" | "back-end" | "both") {
            return Err(Error::invalid(format!(
                "Invalid input received: consumer '{consumer}' must be front-end, back-end or both."
            )));
        }
        domain::volume_type::validate_extra_specs(&specs)?;
        let q = QosSpecs {
            id: uuid::Uuid::new_v4(),
            name,
            consumer,
            specs,
            created_at: Utc::now(),
        };
        self.store
            .insert_qos_specs(&q)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::Conflict => {
                    Error::conflict(format!("QoS Specs {} already exists.", q.name))
                }
                _ => e,
            })?;
        Ok(q)
    }

    /// Sets (`given`) keys; answers the keys set.
    pub async fn set_qos_keys(
        &self,
        caller: &Caller,
        id: &str,
        given: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let mut q = self.qos_specs(caller, id).await?;
        domain::volume_type::validate_extra_specs(&given)?;
        q.specs.extend(given.clone());
        self.store.set_qos_specs_keys(q.id, &q.specs).await?;
        Ok(given)
    }

    /// Removes keys (404 for a key the specs do not have).
    pub async fn unset_qos_keys(&self, caller: &Caller, id: &str, keys: &[String]) -> Result<()> {
        let mut q = self.qos_specs(caller, id).await?;
        for k in keys {
            if q.specs.remove(k).is_none() {
                return Err(Error::not_found("QoS specs key", k));
            }
        }
        self.store.set_qos_specs_keys(q.id, &q.specs).await
    }

    pub async fn delete_qos_specs(&self, caller: &Caller, id: &str, force: bool) -> Result<()> {
        let q = self.qos_specs(caller, id).await?;
        self.store.delete_qos_specs(q.id, force).await
    }

    /// The types associated with QoS specs.
    pub async fn qos_associations(&self, caller: &Caller, id: &str) -> Result<Vec<VolumeType>> {
        let q = self.qos_specs(caller, id).await?;
        Ok(self
            .store
            .volume_types()
            .await?
            .into_iter()
            .filter(|t| t.qos_specs_id == Some(q.id))
            .collect())
    }

    /// Associates (`Some(type)`) a type, or disassociates one (`None` for
    /// `type_id`: all of them) — `associate` says which.
    pub async fn change_qos_association(
        &self,
        caller: &Caller,
        id: &str,
        type_id: Option<&str>,
        associate: bool,
    ) -> Result<()> {
        let q = self.qos_specs(caller, id).await?;
        let types = match type_id {
            Some(t) => vec![self.volume_type(caller, t).await?],
            None => self.qos_associations(caller, id).await?,
        };
        for mut t in types {
            if associate {
                if t.qos_specs_id.is_some_and(|other| other != q.id) {
                    return Err(Error::invalid(format!(
                        "Invalid volume type: Type {} is already associated with other QoS specs.",
                        t.id
                    )));
                }
                t.qos_specs_id = Some(q.id);
            } else if t.qos_specs_id == Some(q.id) {
                t.qos_specs_id = None;
            } else {
                continue;
            }
            t.updated_at = Utc::now();
            self.store.update_volume_type(&t).await?;
        }
        Ok(())
    }
}
