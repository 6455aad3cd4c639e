//! Keeping a running server's disk chain short on the file pool.
//!
//! Every snapshot of a server adds a layer under its disk's top (the frozen
//! top becomes the image's data). Reads of data written long ago go down
//! the chain, and QEMU opens every file of it; so when a snapshot leaves the
//! chain longer than `max_chain_depth` files, the saga (still holding the
//! server's task, so no other snapshot runs meanwhile) streams every layer
//! above the bottom file (the image the server was booted from) into the
//! top with QMP `block-stream`. What the guest sees does not change; the
//! layers stay as long as images or restore points use them (garbage
//! collection follows the chains), the server no longer needs them.
//!
//! A QEMU that dies mid-stream leaves the chain as it was (the top's backing
//! file changes only when the job completes); a service that dies leaves
//! the job to QEMU, which finishes it alone. Stopped servers are left as
//! they are (their chain is shortened at their next snapshot while running).

use domain::Result;

use super::hypervisor_error;
use crate::restore_points::merge::chain_of;
use crate::Cloud;

impl Cloud {
    /// Streams the chain of `server`'s disk into its top if it is longer
    /// than the configured depth and the server runs; whether it did.
    pub(super) async fn shorten_chain(&self, server: domain::ServerId) -> Result<bool> {
        let srv = self.store.server(server).await?;
        let Some(disk) = srv.root_disk.clone() else {
            return Ok(false);
        };
        let Ok(storage::DiskSource::File { path: top, .. }) = self.pool.disk_source(&disk) else {
            return Ok(false);
        };
        let chain = chain_of(&top).await?;
        let (Some(base), true) = (chain.last(), chain.len() > self.config.max_chain_depth) else {
            return Ok(false);
        };
        if !self.vm_is_live(&srv).await {
            return Ok(false);
        }
        self.set_snapshot_task(server, domain::server::TaskState::ImageUploading, 90)
            .await?;
        let started = std::time::Instant::now();
        self.hypervisor
            .stream_into(&server.to_string(), &top, base)
            .await
            .map_err(hypervisor_error)?;
        tracing::info!(%server, files = chain.len(), ms = started.elapsed().as_millis() as u64,
            "disk chain streamed into its top");
        Ok(true)
    }
}
