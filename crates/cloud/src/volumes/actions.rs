//! Cinder's volume and snapshot actions beyond create/extend/delete:
//!
//! - the attach-flow bookkeeping a compute service calls on a real cloud:
//!   `os-reserve` (available → attaching) and `os-unreserve` (back, if no
//!   attachment was made), `os-begin_detaching` (in-use → detaching) and
//!   `os-roll_detaching` (back). Snapstack's own attaches (Nova's
//!   `os-volume_attachments`) move through the same statuses, so a volume a
//!   request has reserved is not attached by another one meanwhile;
//! - `os-update_readonly_flag`, image metadata (`os-set_image_metadata`,
//!   `os-unset_image_metadata`);
//! - admin overrides: `os-reset_status` and `os-force_delete` for volumes
//!   and snapshots, and `os-update_snapshot_status`.
//!
//! Every change is a compare-and-swap from the status read, except the
//! admin resets, which write the status whatever it was (Cinder's meaning).

use std::collections::BTreeMap;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::volume::{SnapshotStatus, Volume, VolumeStatus};
use domain::{Error, Result};

use crate::Cloud;

impl Cloud {
    /// Writes `next` over `prev` (compare-and-swap on the status and the
    /// changed fields).
    async fn write_volume(&self, prev: &Volume, mut next: Volume) -> Result<Volume> {
        next.updated_at = Utc::now();
        self.store.update_volume(prev, &next).await?;
        Ok(next)
    }

    /// `os-reserve`: an available volume becomes `attaching`.
    pub async fn reserve_volume(&self, caller: &Caller, id: &str) -> Result<()> {
        let volume = self.volume(caller, id).await?;
        caller.require(Role::Member, "reserve volumes")?;
        if volume.status != VolumeStatus::Available {
            return Err(Error::invalid(format!(
                "Invalid volume: Volume {} status must be available to reserve, but the current status is: {}.",
                volume.id, volume.status
            )));
        }
        let mut reserved = volume.clone();
        reserved.status = volume.status.transition(VolumeStatus::Reserved)?;
        let reserved = self.write_volume(&volume, reserved).await?;
        let mut attaching = reserved.clone();
        attaching.status = reserved.status.transition(VolumeStatus::Attaching)?;
        self.write_volume(&reserved, attaching).await?;
        Ok(())
    }

    /// `os-unreserve`: an `attaching` volume no attachment was made for
    /// goes back to `available`.
    pub async fn unreserve_volume(&self, caller: &Caller, id: &str) -> Result<()> {
        let volume = self.volume(caller, id).await?;
        caller.require(Role::Member, "unreserve volumes")?;
        if volume.status != VolumeStatus::Attaching
            || self.store.attachment_of_volume(volume.id).await?.is_some()
        {
            return Err(Error::invalid(format!(
                "Invalid volume: Volume {} status must be attaching (and not attached) to unreserve, but the current status is: {}.",
                volume.id, volume.status
            )));
        }
        let mut next = volume.clone();
        next.status = VolumeStatus::Available;
        self.write_volume(&volume, next).await?;
        Ok(())
    }

    /// `os-begin_detaching` (`in-use` → `detaching`) and `os-roll_detaching`
    /// (`detaching` → `in-use`, `roll` true).
    pub async fn mark_volume_detaching(&self, caller: &Caller, id: &str, roll: bool) -> Result<()> {
        let volume = self.volume(caller, id).await?;
        caller.require(Role::Member, "detach volumes")?;
        let (from, to) = if roll {
            (VolumeStatus::Detaching, VolumeStatus::InUse)
        } else {
            (VolumeStatus::InUse, VolumeStatus::Detaching)
        };
        if volume.status != from {
            if roll {
                // Cinder's roll_detaching does nothing for a volume that is
                // not detaching.
                return Ok(());
            }
            return Err(Error::invalid(format!(
                "Invalid volume: Volume {} status must be in-use to begin detaching, but the current status is: {}.",
                volume.id, volume.status
            )));
        }
        let mut next = volume.clone();
        next.status = volume.status.transition(to)?;
        self.write_volume(&volume, next).await?;
        Ok(())
    }

    /// `os-update_readonly_flag`: recorded and shown as the volume's
    /// `readonly` metadata ("True"/"False").
    pub async fn set_volume_readonly(
        &self,
        caller: &Caller,
        id: &str,
        readonly: bool,
    ) -> Result<()> {
        let volume = self.volume(caller, id).await?;
        caller.require(Role::Member, "update volumes")?;
        if !matches!(volume.status, VolumeStatus::Available | VolumeStatus::InUse) {
            return Err(Error::invalid(format!(
                "Invalid volume: Volume {} status must be available or in-use to change its readonly flag, but the current status is: {}.",
                volume.id, volume.status
            )));
        }
        let mut next = volume.clone();
        next.readonly = Some(readonly);
        self.write_volume(&volume, next).await?;
        Ok(())
    }

    /// `os-set_image_metadata`: merges `given` into the volume's image
    /// metadata; answers the whole of it.
    pub async fn set_volume_image_metadata(
        &self,
        caller: &Caller,
        id: &str,
        given: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let volume = self.volume(caller, id).await?;
        caller.require(Role::Member, "update volumes")?;
        let mut next = volume.clone();
        next.image_metadata.extend(given);
        if next
            .image_metadata
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 255 || v.len() > 255)
        {
            return Err(Error::invalid(
                "Invalid input received: image metadata keys must be 1 to 255 characters and values at most 255.",
            ));
        }
        Ok(self.write_volume(&volume, next).await?.image_metadata)
    }

    /// `os-unset_image_metadata`: removes one key (404 if absent).
    pub async fn unset_volume_image_metadata(
        &self,
        caller: &Caller,
        id: &str,
        key: &str,
    ) -> Result<()> {
        let volume = self.volume(caller, id).await?;
        caller.require(Role::Member, "update volumes")?;
        let mut next = volume.clone();
        if next.image_metadata.remove(key).is_none() {
            return Err(Error::not_found("Glance metadata", key));
        }
        self.write_volume(&volume, next).await?;
        Ok(())
    }

    /// An admin's `os-reset_status` of a volume.
    pub async fn reset_volume_status(&self, caller: &Caller, id: &str, status: &str) -> Result<()> {
        caller.require(Role::Admin, "reset volume status")?;
        let volume = self.volume(caller, id).await?;
        let status = VolumeStatus::parse(status)
            .filter(|s| *s != VolumeStatus::Deleted)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "Invalid input received: Must specify a valid status ({status})."
                ))
            })?;
        self.store.reset_volume_status(volume.id, status).await
    }

    /// An admin's `os-force_delete`: deletes a volume whatever its status,
    /// unless it is attached or has snapshots (those stay refused: data
    /// other records need is never dropped).
    pub async fn force_delete_volume(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(Role::Admin, "force-delete volumes")?;
        let volume = self.volume(caller, id).await?;
        if self.store.attachment_of_volume(volume.id).await?.is_some() {
            return Err(Error::invalid(format!(
                "Invalid volume: Volume {} is attached; detach it first.",
                volume.id
            )));
        }
        if !volume.status.can_become(VolumeStatus::Deleting) {
            let reset = if volume.status == VolumeStatus::Deleting {
                VolumeStatus::ErrorDeleting
            } else {
                VolumeStatus::Error
            };
            self.store.reset_volume_status(volume.id, reset).await?;
        }
        self.delete_volume(caller, id, false).await
    }

    /// An admin's `os-reset_status` of a snapshot.
    pub async fn reset_snapshot_status(
        &self,
        caller: &Caller,
        id: &str,
        status: &str,
    ) -> Result<()> {
        caller.require(Role::Admin, "reset snapshot status")?;
        let snap = self.volume_snapshot(caller, id).await?;
        let status = parse_snapshot_status(status)?;
        self.store
            .reset_volume_snapshot_status(snap.id, status, None)
            .await
    }

    /// `os-update_snapshot_status`: what a backend reports about a snapshot
    /// being made (`creating` → `available`/`error`) or deleted
    /// (`deleting` → `error_deleting`), with its progress.
    pub async fn update_snapshot_status(
        &self,
        caller: &Caller,
        id: &str,
        status: &str,
        progress: Option<&str>,
    ) -> Result<()> {
        let snap = self.volume_snapshot(caller, id).await?;
        caller.require(Role::Member, "update snapshot status")?;
        let next = parse_snapshot_status(status)?;
        let allowed = matches!(
            (snap.status, next),
            (
                SnapshotStatus::Creating,
                SnapshotStatus::Available | SnapshotStatus::Error
            ) | (SnapshotStatus::Deleting, SnapshotStatus::ErrorDeleting)
        );
        if !allowed {
            return Err(Error::invalid(format!(
                "Invalid input received: Snapshot status {} not allowed to change to {next}.",
                snap.status
            )));
        }
        self.store
            .reset_volume_snapshot_status(snap.id, next, progress)
            .await
    }

    /// An admin's `os-force_delete` of a snapshot, whatever its status.
    pub async fn force_delete_snapshot(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(Role::Admin, "force-delete snapshots")?;
        let snap = self.volume_snapshot(caller, id).await?;
        if !snap.status.can_become(SnapshotStatus::Deleting) {
            self.store
                .reset_volume_snapshot_status(snap.id, SnapshotStatus::ErrorDeleting, None)
                .await?;
        }
        let snap = self.volume_snapshot(caller, id).await?;
        self.delete_snapshot_record(snap).await
    }
}

fn parse_snapshot_status(status: &str) -> Result<SnapshotStatus> {
    SnapshotStatus::parse(status)
        .filter(|s| *s != SnapshotStatus::Deleted)
        .ok_or_else(|| {
            Error::invalid(format!(
                "Invalid input received: Must specify a valid status ({status})."
            ))
        })
}
