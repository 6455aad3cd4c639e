//! Deleting a restore point: a short saga, always finished forward.
//!
//! ```text
//!  begun (task claimed, point `deleting`) ──▶ state file removed, record
//!  removed (children re-parented, current moves up) ──▶ garbage collection
//!  ──▶ done (task cleared)
//! ```
//! The point's layer stops being a root: it goes if nothing stands on it (a
//! leaf point's layer nobody uses); when exactly one file stands on it, it is
//! merged into that file first ([`super::merge`]); otherwise it stays,
//! unchanged, while another point's layer, an image or the server's own
//! chain stands on it — what every other point, image and server sees is
//! untouched. An attached volume's layer is not merged: it goes with garbage
//! collection when nothing (the volume's chain, another point, a volume
//! snapshot) stands on it.

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::restore_point::{RestoreMethod, RestorePointStatus};
use domain::server::TaskState;
use domain::{Error, Result};

use super::{fault_point, point_of, Saga};
use crate::Cloud;

pub(super) const KIND: &str = "restore-point-delete";

impl Cloud {
    /// Deletes a point of a server the caller can see; done when it returns.
    pub async fn delete_restore_point(
        &self,
        caller: &Caller,
        server_id: &str,
        point_id: &str,
    ) -> Result<()> {
        let server = self.server(caller, server_id).await?;
        caller.require(Role::Member, "delete restore points")?;
        let point = point_of(&server, point_id, self).await?;
        if !matches!(
            point.status,
            RestorePointStatus::Available | RestorePointStatus::Error
        ) {
            return Err(Error::conflict(format!(
                "Restore point {} is {}.",
                point.id, point.status
            )));
        }
        if let Some(task) = server.task_state {
            return Err(Error::conflict(format!(
                "Server {} is busy (task_state {task}).",
                server.id
            )));
        }
        let mut saga = Saga::new(server.id, point.id);
        if point.method == RestoreMethod::External {
            // The root disk's layer is merged if it can be; volumes' layers
            // are left to garbage collection.
            saga.old_top = point
                .disks
                .iter()
                .find(|d| d.volume_id.is_none())
                .map(|d| d.layer.clone());
        }
        self.store.insert_saga(&saga.record(KIND)).await?;
        if let Err(e) = self
            .claim_task(&server, TaskState::RestorePointDeleting)
            .await
        {
            let _ = self.store.finish_saga(&saga.id, "undone").await;
            return Err(e);
        }
        let mut deleting = point.clone();
        deleting.status = RestorePointStatus::Deleting;
        deleting.updated_at = Utc::now();
        if let Err(e) = self
            .store
            .update_restore_point(&deleting, point.status)
            .await
        {
            let _ = self.clear_point_task(server.id, None, None).await;
            let _ = self.store.finish_saga(&saga.id, "undone").await;
            return Err(e);
        }
        fault_point("restore-point-delete:begun");
        self.point_delete_forward(&saga).await
    }

    pub(super) async fn point_delete_forward(&self, saga: &Saga) -> Result<()> {
        let id = saga.point()?;
        match self.store.restore_point(id).await {
            Ok(point) => {
                if point.method == RestoreMethod::Internal {
                    self.delete_internal_tag(&point).await;
                }
                self.remove_point_state(point.state_file.as_deref()).await;
                fault_point("restore-point-delete:state-removed");
                self.store.delete_restore_point(id).await?;
            }
            Err(e) if e.kind() == domain::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // RBD snapshots are not merged: garbage collection releases them.
        let layered = self.native_points().is_none();
        if let Some(layer) = saga.old_top.as_ref().filter(|_| layered) {
            // Under the GC lock: no layer may appear or go meanwhile.
            let merged = {
                let _gc = self.gc_lock.read().await;
                self.merge_released_layer(saga.server()?, layer).await
            };
            if let Err(e) = merged {
                tracing::warn!(%layer, error = %e, "released layer not merged; it stays while used");
            }
        }
        self.collect_garbage().await?;
        self.clear_point_task(saga.server()?, None, None).await?;
        self.store.finish_saga(&saga.id, "done").await?;
        tracing::info!(point = %id, "restore point deleted");
        Ok(())
    }
}
