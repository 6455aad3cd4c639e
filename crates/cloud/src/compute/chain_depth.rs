//! Keeping a server's disk chain short after a snapshot (pools that layer:
//! the file pool).
//!
//! Every snapshot of a server adds a layer under its disk's top (the frozen
//! top becomes the image's data). The saga (still holding the server's
//! task, so no other snapshot of it runs meanwhile) then runs the one chain
//! reconciler, [`Cloud::shorten_chains`](crate::Cloud::shorten_chains):
//! past `max_chain_depth` files the top is rebased onto the bottom of its
//! chain — QMP `block-stream` on a running server, `qemu-img rebase` (safe
//! mode) on a stopped one — and layers of deleted images are merged into
//! the file standing on them. What the guest sees does not change; the
//! layers stay as long as images or restore points use them.

use domain::Result;

use crate::Cloud;

impl Cloud {
    /// Shortens the chains after a snapshot of `server`; whether any file
    /// was rewritten. The caller (a saga step) holds the collector's lock
    /// exclusively.
    pub(super) async fn shorten_chain(&self, server: domain::ServerId) -> Result<bool> {
        let rewritten = self.shorten_chains_locked().await?;
        if rewritten > 0 {
            tracing::info!(%server, rewritten, "disk chains shortened after a snapshot");
        }
        Ok(rewritten > 0)
    }
}
