//! Volume transfers (Cinder's `os-volume-transfer`, `volume-transfers`):
//! the owner offers an `available` volume (it becomes `awaiting-transfer`),
//! another project accepts it with the transfer's id and auth key (the
//! volume, and its snapshots unless `no_snapshots`, move to that project
//! and user), or the owner deletes the offer (the volume is `available`
//! again). Accepting claims the volume's quota in the receiving project.
//!
//! The auth key is 16 random hex digits, shown once at creation; only a
//! salted SHA-256 of it is kept.

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::volume::VolumeStatus;
use domain::volume_transfer::VolumeTransfer;
use domain::{Error, Result, TransferId};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::Cloud;

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn key_hash(salt: &str, key: &str) -> String {
    hex::encode(Sha256::digest(format!("{salt}{key}").as_bytes()))
}

/// What `POST …/os-volume-transfer` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewTransfer {
    pub volume_id: String,
    pub name: Option<String>,
    pub no_snapshots: bool,
}

impl Cloud {
    /// Offers a volume; answers the transfer and its auth key.
    pub async fn create_volume_transfer(
        &self,
        caller: &Caller,
        new: NewTransfer,
    ) -> Result<(VolumeTransfer, String)> {
        caller.require(Role::Member, "transfer volumes")?;
        let volume = self.volume(caller, &new.volume_id).await?;
        if volume.status != VolumeStatus::Available {
            return Err(Error::invalid(format!(
                "Invalid volume: status must be available (volume {} is {}).",
                volume.id, volume.status
            )));
        }
        if new.no_snapshots && !self.store.snapshots_of_volume(volume.id).await?.is_empty() {
            return Err(Error::invalid(format!(
                "Invalid volume: Volume {} has snapshots; they cannot stay behind (no_snapshots).",
                volume.id
            )));
        }
        if let Some(name) = &new.name {
            if name.chars().count() > 255 {
                return Err(Error::invalid(
                    "Invalid input received: the transfer name must be at most 255 characters.",
                ));
            }
        }
        let key = random_hex(8);
        let salt = random_hex(8);
        let t = VolumeTransfer {
            id: TransferId::new(),
            volume_id: volume.id,
            project_id: volume.project_id,
            name: new.name,
            key_hash: key_hash(&salt, &key),
            salt,
            no_snapshots: new.no_snapshots,
            created_at: Utc::now(),
        };
        self.store.insert_volume_transfer(&t).await?;
        Ok((t, key))
    }

    /// A transfer of the caller's project (any for an admin), or 404.
    pub async fn volume_transfer(&self, caller: &Caller, id: &str) -> Result<VolumeTransfer> {
        caller.require(Role::Reader, "read volume transfers")?;
        let tid: TransferId = id.parse().map_err(|_| Error::not_found("Transfer", id))?;
        let t = self.store.volume_transfer(tid).await?;
        if !caller.can_see_project(t.project_id) {
            return Err(Error::not_found("Transfer", id));
        }
        Ok(t)
    }

    pub async fn volume_transfers(
        &self,
        caller: &Caller,
        all_projects: bool,
    ) -> Result<Vec<VolumeTransfer>> {
        caller.require(Role::Reader, "list volume transfers")?;
        let project = if all_projects && caller.is_admin() {
            None
        } else {
            Some(caller.project()?)
        };
        self.store.volume_transfers(project).await
    }

    /// Withdraws an offer: the volume is `available` again.
    pub async fn delete_volume_transfer(&self, caller: &Caller, id: &str) -> Result<()> {
        let t = self.volume_transfer(caller, id).await?;
        caller.require(Role::Member, "delete volume transfers")?;
        self.store.end_volume_transfer(&t, None).await
    }

    /// Accepts a transfer into the caller's project: 404 for an unknown
    /// transfer, 400 for a wrong auth key, 413 past the receiver's quota.
    pub async fn accept_volume_transfer(
        &self,
        caller: &Caller,
        id: &str,
        auth_key: &str,
    ) -> Result<VolumeTransfer> {
        caller.require(Role::Member, "accept volume transfers")?;
        let project = caller.project()?;
        let tid: TransferId = id.parse().map_err(|_| Error::not_found("Transfer", id))?;
        let t = self.store.volume_transfer(tid).await?;
        if key_hash(&t.salt, auth_key) != t.key_hash {
            return Err(Error::invalid(format!(
                "Invalid auth key: Attempt to transfer {} with invalid auth key.",
                t.id
            )));
        }
        let volume = self.store.volume(t.volume_id).await?;
        let claim = if project == t.project_id {
            None
        } else {
            Some(self.claim_volume_quota(project, volume.size).await?)
        };
        self.store
            .end_volume_transfer(&t, Some((project, caller.user_id)))
            .await?;
        if let Some(claim) = claim {
            claim.release().await;
        }
        Ok(t)
    }
}
