//! Internal restore points (qcow2 only, as `virsh snapshot-create-as`
//! without options): QEMU's `snapshot-save` job writes the disk state and
//! the VM state, under the point's id as tag, into the file that is the
//! server's top at that moment — that file is the point's "layer". The
//! guest pauses for the whole save (hundreds of ms here): reported as the
//! point's `guest_pause_ms`.
//!
//! ```text
//!  create: plan (top recorded) ──▶ cut (snapshot-save) ──▶ switch (point
//!          available, current)    crash in cut: undo (the tag is deleted if
//!                                 it was written)
//!  revert: the file is still the live top ──▶ snapshot-load in place
//!          otherwise (an external point or a revert froze it since) ──▶ a
//!          copy of the file becomes the server's new top (the frozen file
//!          is never written), QEMU starts on it, snapshot-load
//!  delete: the tag is deleted from the live top when it is there; a tag
//!          inside a frozen layer stays and goes with the layer
//! ```

use chrono::Utc;
use domain::restore_point::RestorePoint;
use domain::server::{PowerState, Server, VmState};
use domain::{Error, Result};
use hypervisor::InternalSnapshot;

use super::{overlay_name, PointState, ROOT_DISK_ID};
use crate::compute::hypervisor_error;
use crate::Cloud;

impl Cloud {
    /// The `cut` of an internal point: QEMU's snapshot-save job writes the
    /// disk and VM state into the live top under the point's id.
    pub(super) async fn internal_point_cut(&self, saga: &mut PointState) -> Result<()> {
        let server = self.store.server(saga.server()?).await?;
        let point_id = saga.point()?;
        let taken = self
            .hypervisor
            .internal_snapshot(
                &server.id.to_string(),
                &[ROOT_DISK_ID.to_string()],
                InternalSnapshot::Save,
                &point_id.to_string(),
            )
            .await
            .map_err(hypervisor_error)?;
        tracing::info!(server = %server.id, pause = ?taken.guest_pause, "internal restore point saved");
        saga.pause_us = Some(taken.guest_pause.as_micros() as u64);
        Ok(())
    }

    /// Undo of an interrupted internal save: the tag goes if it was written.
    pub(super) async fn forget_internal_tag(&self, saga: &PointState) {
        let (Some(server), Some(point)) = (saga.server, saga.point) else {
            return;
        };
        let _ = self
            .hypervisor
            .internal_snapshot(
                &server.to_string(),
                &[ROOT_DISK_ID.to_string()],
                InternalSnapshot::Delete,
                &point.to_string(),
            )
            .await;
    }

    /// Reverts to an internal point; returns the server's settled states.
    pub(super) async fn revert_internal(
        &self,
        saga: &mut PointState,
        point: &RestorePoint,
    ) -> Result<(VmState, PowerState)> {
        let server = self.store.server(point.server_id).await?;
        let layer = point
            .disks
            .first()
            .map(|d| d.layer.clone())
            .ok_or_else(|| Error::conflict("The restore point has no disk."))?;
        let in_place = server.root_disk.as_deref() == Some(layer.as_str())
            && self.point_qemu_is_up(&server).await;
        if !in_place {
            self.start_on_copy(saga, &server, &layer).await?;
        }
        self.hypervisor
            .internal_snapshot(
                &server.id.to_string(),
                &[ROOT_DISK_ID.to_string()],
                InternalSnapshot::Load,
                &point.id.to_string(),
            )
            .await
            .map_err(hypervisor_error)?;
        self.store
            .set_current_restore_point(server.id, Some(point.id))
            .await?;
        // A paused server stays paused (the load keeps the run state).
        let now = self.store.server(server.id).await?;
        Ok(self.observed_state(&now).await)
    }

    /// The point's file is frozen: a copy of it becomes the server's top
    /// (same backing file), and QEMU starts on it.
    async fn start_on_copy(
        &self,
        saga: &mut PointState,
        server: &Server,
        layer: &str,
    ) -> Result<()> {
        let (new_top, path) = self
            .pool
            .new_overlay(layer, &overlay_name(server.id))?
            .ok_or_else(|| Error::conflict("This pool cannot layer disks."))?;
        saga.new_top = Some(new_top.clone());
        let source = match self.pool.disk_source(layer)? {
            storage::DiskSource::File { path, .. } => path,
            _ => return Err(Error::conflict("Internal points need qcow2 files.")),
        };
        let partial = path.with_extension("qcow2.part");
        tokio::fs::copy(&source, &partial)
            .await
            .map_err(|e| Error::unavailable(format!("Cannot copy {}: {e}", source.display())))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|e| Error::unavailable(format!("Cannot create {}: {e}", path.display())))?;
        self.hypervisor
            .destroy(&server.id.to_string())
            .await
            .or_else(|e| match e.kind() {
                hypervisor::ErrorKind::NotFound => Ok(()),
                _ => Err(hypervisor_error(e)),
            })?;
        if let Err(e) = tokio::fs::remove_file(self.state_file(server)).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(server = %server.id, error = %e, "could not remove a suspended state");
            }
        }
        let mut next = self.store.server(server.id).await?;
        let prev = next.clone();
        next.root_disk = Some(new_top);
        next.updated_at = Utc::now();
        self.store.update_server(&prev, &next).await?;
        self.hypervisor
            .start(&self.vm_spec(&next).await?)
            .await
            .map_err(hypervisor_error)
    }

    /// Removes an internal point's tag from the live top when it is there.
    pub(super) async fn delete_internal_tag(&self, point: &RestorePoint) {
        let Ok(server) = self.store.server(point.server_id).await else {
            return;
        };
        if !self.point_qemu_is_up(&server).await {
            return;
        }
        if let Err(e) = self
            .hypervisor
            .internal_snapshot(
                &server.id.to_string(),
                &[ROOT_DISK_ID.to_string()],
                InternalSnapshot::Delete,
                &point.id.to_string(),
            )
            .await
        {
            tracing::debug!(point = %point.id, error = %e, "internal snapshot tag not in the live top");
        }
    }
}
