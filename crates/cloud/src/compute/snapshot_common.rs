//! What the two snapshot sagas (an image-backed server's [`super::snapshot`],
//! a volume-backed server's [`super::volume_image`]) share: the snapshot
//! task on the server and the image's publication or removal.

use chrono::Utc;
use domain::image::{Image, ImageStatus};
use domain::server::{Server, TaskState};
use domain::{Error, ImageId, Result, ServerId};

use crate::Cloud;

pub(super) fn is_snapshot_task(t: TaskState) -> bool {
    matches!(
        t,
        TaskState::ImageSnapshotPending | TaskState::ImagePendingUpload | TaskState::ImageUploading
    )
}

impl Cloud {
    pub(super) async fn vm_is_live(&self, server: &Server) -> bool {
        matches!(
            self.hypervisor.status(&server.id.to_string()).await,
            Ok(hypervisor::VmStatus::Running | hypervisor::VmStatus::Paused { .. })
        )
    }

    /// Claims `server` for a snapshot: task `image_snapshot_pending` by
    /// compare-and-swap on a server with no task (a second request gets 409).
    pub(super) async fn claim_snapshot_task(&self, id: ServerId) -> Result<()> {
        let server = self.store.server(id).await?;
        if let Some(busy) = server.task_state {
            return Err(Error::conflict(format!(
                "Server {id} is busy (task_state {busy})."
            )));
        }
        let mut claimed = server.clone();
        claimed.task_state = Some(TaskState::ImageSnapshotPending);
        claimed.progress = 0;
        claimed.updated_at = Utc::now();
        self.store.update_server(&server, &claimed).await
    }

    /// Moves the snapshot task on (`image_pending_upload`, …) with `progress`.
    pub(super) async fn set_snapshot_task(
        &self,
        id: ServerId,
        task: TaskState,
        progress: u8,
    ) -> Result<Server> {
        let server = self.store.server(id).await?;
        if !server.task_state.is_some_and(is_snapshot_task) {
            return Err(Error::conflict(format!(
                "Server {id} is no longer being snapshotted."
            )));
        }
        let mut next = server.clone();
        next.task_state = Some(task);
        next.progress = progress;
        next.updated_at = Utc::now();
        self.store.update_server(&server, &next).await?;
        Ok(next)
    }

    /// The snapshot is over: the task cleared (progress 100). A server in
    /// no snapshot task is left as it is.
    pub(super) async fn clear_snapshot_task(&self, id: ServerId) -> Result<()> {
        let server = self.store.server(id).await?;
        if !server.task_state.is_some_and(is_snapshot_task) {
            return Ok(());
        }
        let mut next = server.clone();
        next.task_state = None;
        next.progress = 100;
        next.updated_at = Utc::now();
        self.store.update_server(&server, &next).await
    }

    /// Records on the server why a snapshot into `image` failed (Nova's
    /// fault), best effort.
    pub(super) async fn record_snapshot_fault(&self, id: ServerId, image: ImageId, cause: &Error) {
        let Ok(server) = self.store.server(id).await else {
            return;
        };
        let mut next = server.clone();
        let mut fault = super::lifecycle::fault(cause);
        fault.message = format!("Snapshot into image {image} failed: {}", fault.message);
        next.fault = Some(fault);
        next.updated_at = Utc::now();
        if let Err(e) = self.store.update_server(&server, &next).await {
            tracing::warn!(server = %id, error = %e, "could not record the snapshot's fault");
        }
    }

    /// Whether `server` is in a snapshot task: after a crash in the middle
    /// of claiming it, the claim took (one task per server).
    pub(super) async fn in_snapshot_task(&self, id: ServerId) -> Result<bool> {
        Ok(self
            .store
            .server(id)
            .await?
            .task_state
            .is_some_and(is_snapshot_task))
    }

    /// A snapshot saga's claim interrupted by a crash took when the server
    /// is in a snapshot task (one task per server: it is the saga's).
    pub(super) async fn probe_snapshot_claim(
        &self,
        server: ServerId,
        claimed: &mut bool,
    ) -> Result<crate::saga::Probe> {
        *claimed = self.in_snapshot_task(server).await?;
        Ok(if *claimed {
            crate::saga::Probe::Took
        } else {
            crate::saga::Probe::NotTaken
        })
    }

    /// Thaws the guest if the saga froze it.
    pub(super) async fn thaw_if_frozen(&self, server: ServerId, quiesced: &mut bool) {
        if *quiesced {
            self.thaw_after_snapshot(server).await;
            *quiesced = false;
        }
    }

    /// Inserts a snapshot's image record (`queued`) unless it is there.
    pub(super) async fn record_snapshot_image(&self, image: &Image) -> Result<()> {
        match self.store.image(image.id).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == domain::ErrorKind::NotFound => {
                self.store.insert_image(image).await
            }
            Err(e) => Err(e),
        }
    }

    /// A snapshot's image goes queued → saving → `active`, with `fill`
    /// setting what the snapshot made; an image active already is left.
    pub(super) async fn activate_snapshot_image(
        &self,
        image: ImageId,
        fill: impl FnOnce(&mut Image),
    ) -> Result<()> {
        let img = self.store.image(image).await?;
        if img.status == ImageStatus::Active {
            return Ok(());
        }
        let mut saving = img.clone();
        if img.status != ImageStatus::Saving {
            saving.status = img.status.transition(ImageStatus::Saving)?;
            saving.updated_at = Utc::now();
            self.store.update_image(&img, &saving).await?;
        }
        let mut active = saving.clone();
        active.status = ImageStatus::Active;
        fill(&mut active);
        active.updated_at = Utc::now();
        self.store.update_image(&saving, &active).await
    }

    /// An undone snapshot's image is `deleted` (its data, if any, is then
    /// garbage).
    pub(super) async fn drop_snapshot_image(&self, image: ImageId) -> Result<()> {
        let img = match self.store.image(image).await {
            Ok(img) => img,
            Err(e) if e.kind() == domain::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if img.status == ImageStatus::Deleted {
            return Ok(());
        }
        let mut gone = img.clone();
        gone.status = ImageStatus::Deleted;
        gone.updated_at = Utc::now();
        self.store.update_image(&img, &gone).await
    }
}
