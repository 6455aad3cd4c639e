//! Deleting a restore point: a saga (`restore-point-delete`, on the engine
//! in [`crate::saga`]), run in the request, always finished forward once
//! the point is `deleting`.
//!
//! ```text
//!  claim ──────────▶ remove ──────────────▶ merge ─────────────▶ release
//!  (task claimed,    (the internal tag,     (the root layer      (task cleared;
//!   point            the memory state and   merged into the one   then garbage
//!   `deleting`)      the record removed;    file standing on it,  collection)
//!                    children re-parented)  if there is one)
//! ```
//! The point's layer stops being a root: it goes if nothing stands on it (a
//! leaf point's layer nobody uses); when exactly one file stands on it, it is
//! merged into that file first ([`super::merge`]); otherwise it stays,
//! unchanged, while another point's layer, an image or the server's own
//! chain stands on it — what every other point, image and server sees is
//! untouched. An attached volume's layer is not merged: it goes with garbage
//! collection when nothing (the volume's chain, another point, a volume
//! snapshot) stands on it.

use async_trait::async_trait;
use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::restore_point::{RestoreMethod, RestorePointStatus};
use domain::server::TaskState;
use domain::{Error, Result};
use serde::{Deserialize, Serialize};

use super::{point_of, PointState};
use crate::saga::{Probe, Saga, SagaStep};
use crate::Cloud;

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
        let mut state = PointState::new(server.id, point.id);
        if point.method == RestoreMethod::External {
            // The root disk's layer is merged if it can be; volumes' layers
            // are left to garbage collection.
            state.old_top = point
                .disks
                .iter()
                .find(|d| d.volume_id.is_none())
                .map(|d| d.layer.clone());
        }
        self.begin_saga(PointDelete(state))
            .await?
            .run_to_end()
            .await?;
        Ok(())
    }
}

/// The `restore-point-delete` saga.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct PointDelete(PointState);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Claim,
    Remove,
    Merge,
    Release,
}

impl SagaStep for Step {
    const ALL: &'static [Step] = &[Step::Claim, Step::Remove, Step::Merge, Step::Release];

    fn name(self) -> &'static str {
        match self {
            Step::Claim => "claim",
            Step::Remove => "remove",
            Step::Merge => "merge",
            Step::Release => "release",
        }
    }
}

#[async_trait]
impl Saga for PointDelete {
    const KIND: &'static str = "restore-point-delete";
    type Step = Step;

    fn describe(&self) -> String {
        self.0.describe()
    }

    fn pool_names(&self) -> Vec<String> {
        // The layer being released is no root: it goes once merged.
        Vec::new()
    }

    async fn run(&mut self, cloud: &Cloud, step: Step) -> Result<()> {
        let saga = &mut self.0;
        match step {
            Step::Claim => {
                let server = cloud.store.server(saga.server()?).await?;
                let point = cloud.store.restore_point(saga.point()?).await?;
                if !saga.claimed {
                    cloud
                        .claim_task(&server, TaskState::RestorePointDeleting)
                        .await?;
                    saga.claimed = true;
                }
                if point.status == RestorePointStatus::Deleting {
                    return Ok(());
                }
                let mut deleting = point.clone();
                deleting.status = RestorePointStatus::Deleting;
                deleting.updated_at = Utc::now();
                cloud.store.update_restore_point(&point, &deleting).await?;
            }
            Step::Remove => {
                let id = saga.point()?;
                match cloud.store.restore_point(id).await {
                    Ok(point) => {
                        if point.method == RestoreMethod::Internal {
                            cloud.delete_internal_tag(&point).await;
                        }
                        cloud.remove_point_state(point.state_file.as_deref()).await;
                        cloud.store.delete_restore_point(id).await?;
                    }
                    Err(e) if e.kind() == domain::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Step::Merge => {
                // RBD snapshots are not merged: garbage collection releases them.
                let layered = cloud.native_points().is_none();
                if let Some(layer) = saga.old_top.as_ref().filter(|_| layered) {
                    if let Err(e) = cloud.merge_released_layer(saga.server()?, layer).await {
                        tracing::warn!(%layer, error = %e, "released layer not merged; it stays while used");
                    }
                }
            }
            Step::Release => cloud.clear_point_task(saga.server()?, None, None).await?,
        }
        Ok(())
    }

    async fn undo(&mut self, cloud: &Cloud, step: Step) -> Result<()> {
        let saga = &mut self.0;
        if step == Step::Claim && saga.claimed {
            if let Ok(point) = cloud.store.restore_point(saga.point()?).await {
                if point.status == RestorePointStatus::Deleting {
                    let mut back = point.clone();
                    back.status = RestorePointStatus::Available;
                    back.updated_at = Utc::now();
                    cloud.store.update_restore_point(&point, &back).await?;
                }
            }
            cloud.clear_point_task(saga.server()?, None, None).await?;
        }
        Ok(())
    }

    async fn probe(&mut self, cloud: &Cloud, step: Step) -> Result<Probe> {
        let saga = &mut self.0;
        Ok(match step {
            Step::Claim => {
                let task = cloud.store.server(saga.server()?).await?.task_state;
                if task == Some(TaskState::RestorePointDeleting) {
                    saga.claimed = true;
                    // A point claimed but still `available` is marked now.
                    Probe::Rerun
                } else {
                    Probe::NotTaken
                }
            }
            _ => Probe::Rerun,
        })
    }

    async fn finished(&mut self, cloud: &Cloud) {
        tracing::info!(point = ?self.0.point, "restore point deleted");
        cloud.collect_garbage_quietly().await;
    }
}
