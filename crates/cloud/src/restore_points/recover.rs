//! Start-up recovery of restore-point sagas a previous run left open (see
//! each saga's header for what every step means). Runs before the servers'
//! interrupted tasks are settled, so the tasks it finds are its own.

use domain::restore_point::RestorePointStatus;
use domain::server::VmState;
use domain::Result;

use super::{create, delete, revert, Saga};
use crate::Cloud;

/// Finishes or undoes every open restore-point saga; a line per saga.
pub(crate) async fn recover(cloud: &Cloud) -> Result<Vec<String>> {
    let mut repaired = Vec::new();
    for record in cloud.store.open_sagas().await? {
        let kind = record.kind.as_str();
        if ![create::KIND, revert::KIND, delete::KIND].contains(&kind) {
            continue;
        }
        let mut saga = Saga::from_record(&record)?;
        let outcome = match kind {
            create::KIND => cloud.resume_point_create(&mut saga, &record.step).await,
            revert::KIND => cloud.resume_point_revert(&mut saga, &record.step).await,
            _ => cloud.point_delete_forward(&saga).await.map(|()| "finished"),
        };
        let outcome = match outcome {
            Ok(o) => o.to_string(),
            Err(e) => {
                match kind {
                    create::KIND => cloud.undo_point_create(&saga, Some(&e)).await,
                    revert::KIND => cloud.undo_point_revert(&saga, Some(&e)).await,
                    _ => {}
                }
                format!("undone after {e}")
            }
        };
        repaired.push(format!(
            "{kind} of point {} on server {} (at {}): {outcome}",
            saga.point.map(|p| p.to_string()).unwrap_or_default(),
            saga.server.map(|s| s.to_string()).unwrap_or_default(),
            record.step
        ));
    }
    Ok(repaired)
}

impl Cloud {
    async fn resume_point_create(&self, saga: &mut Saga, step: &str) -> Result<&'static str> {
        self.resume_point_vm_if_paused(saga).await;
        match step {
            "cut" if self.point_cut_took(saga).await => {
                if self.point_state_saved(saga).await {
                    self.record_point_switch(saga, None).await?;
                    self.finish_point_create(saga).await?;
                    Ok("finished")
                } else {
                    // The disks moved on but the memory is incomplete: the
                    // server keeps its new top, the point goes.
                    self.undo_point_create(saga, None).await;
                    Ok("disks kept, point removed (memory state incomplete)")
                }
            }
            "switched" => {
                self.finish_point_create(saga).await?;
                Ok("finished")
            }
            _ => {
                self.undo_point_create(saga, None).await;
                Ok("undone")
            }
        }
    }

    async fn resume_point_revert(&self, saga: &mut Saga, step: &str) -> Result<&'static str> {
        if step == "switched" {
            self.point_revert_forward(saga, "switched").await?;
            Ok("finished")
        } else if matches!(step, "loading" | "copying") {
            // Internal point: loading again is harmless.
            self.point_revert_forward(saga, "begun").await?;
            Ok("finished")
        } else {
            self.undo_point_revert(saga, None).await;
            Ok("undone")
        }
    }

    /// A crash between `stop` and the end of a memory point leaves the
    /// guest paused on QEMU ≥ 9 (7.2 resumes it itself): resume an active
    /// server's VM.
    async fn resume_point_vm_if_paused(&self, saga: &Saga) {
        let Some(id) = saga.server else { return };
        let Ok(server) = self.store.server(id).await else {
            return;
        };
        let paused = matches!(
            self.hypervisor.status(&id.to_string()).await,
            Ok(hypervisor::VmStatus::Paused { .. })
        );
        if server.vm_state == VmState::Active && paused {
            let _ = self.hypervisor.resume(&id.to_string()).await;
        }
    }

    pub(super) async fn keep_point_new_top(&self, saga: &Saga) -> Result<()> {
        self.move_point_volumes_forward(&saga.volumes).await?;
        let server = self.store.server(saga.server()?).await?;
        if server.root_disk != saga.new_top {
            let mut next = server.clone();
            next.root_disk = saga.new_top.clone();
            next.updated_at = chrono::Utc::now();
            self.store
                .update_server(&next, (server.vm_state, server.task_state))
                .await?;
        }
        if let Some(point) = saga.point {
            if let Ok(p) = self.store.restore_point(point).await {
                if p.status == RestorePointStatus::Creating {
                    tracing::warn!(point = %p.id, "restore point with an incomplete memory state removed");
                }
            }
        }
        Ok(())
    }
}
