//! Quiescing a guest around a snapshot, through the QEMU guest agent, as
//! Nova's libvirt driver does: asked for by the image's properties
//! `hw_qemu_guest_agent` (the guest runs an agent) and `os_require_quiesce`
//! (a snapshot that cannot quiesce must fail rather than be merely
//! crash-consistent).
//!
//! | hw_qemu_guest_agent | os_require_quiesce | freeze fails / no agent |
//! |---|---|---|
//! | no  | no  | not tried: crash-consistent |
//! | no  | yes | 409 at once: no agent to ask |
//! | yes | no  | logged, snapshot crash-consistent |
//! | yes | yes | 409, nothing made |
//!
//! Only a running guest is frozen (a paused, suspended or stopped one does
//! not write). A frozen guest is always thawed: right after its data is
//! pinned, when the snapshot fails, and at start-up for a saga that was
//! interrupted while the guest may have been frozen.

use std::time::Duration;

use std::collections::BTreeMap;

use domain::server::Server;
use domain::{Error, Result, ServerId};

use crate::Cloud;

/// How long the guest agent gets to freeze the guest's filesystems.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the image asks of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Quiesce {
    /// No agent: crash-consistent.
    No,
    /// Freeze if the agent answers; crash-consistent otherwise.
    Try,
    /// Freeze or fail.
    Require,
}

/// Nova's truthy strings for boolean image properties.
fn is_true(properties: Option<&BTreeMap<String, String>>, key: &str) -> bool {
    properties.and_then(|p| p.get(key)).is_some_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "yes" | "true" | "1" | "on" | "y" | "t"
        )
    })
}

/// The quiesce policy of a snapshot of a server booted from an image with
/// `properties` (a volume's `volume_image_metadata` for a volume-backed
/// server); `Conflict` when they require quiescing a guest they say has no
/// agent.
pub(crate) fn policy(properties: Option<&BTreeMap<String, String>>) -> Result<Quiesce> {
    match (
        is_true(properties, "hw_qemu_guest_agent"),
        is_true(properties, "os_require_quiesce"),
    ) {
        (false, false) => Ok(Quiesce::No),
        (false, true) => Err(Error::conflict(
            "The image requires quiescing the guest (os_require_quiesce=yes) but does not say it runs a guest agent (hw_qemu_guest_agent=yes).",
        )),
        (true, false) => Ok(Quiesce::Try),
        (true, true) => Ok(Quiesce::Require),
    }
}

impl Cloud {
    /// Freezes `server`'s guest if `policy` and its state call for it;
    /// true when the guest may be frozen now (and must be thawed).
    pub(crate) async fn freeze_for_snapshot(
        &self,
        server: &Server,
        policy: Quiesce,
    ) -> Result<bool> {
        if policy == Quiesce::No
            || !matches!(
                self.hypervisor.status(&server.id.to_string()).await,
                Ok(hypervisor::VmStatus::Running)
            )
        {
            return Ok(false);
        }
        let name = server.id.to_string();
        match self
            .hypervisor
            .freeze_filesystems(&name, FREEZE_TIMEOUT)
            .await
        {
            Ok(frozen) => {
                tracing::info!(server = %server.id, frozen, "guest quiesced for a snapshot");
                Ok(true)
            }
            Err(e) => {
                let partly_frozen = e.kind() != hypervisor::ErrorKind::GuestAgentUnavailable;
                if partly_frozen {
                    self.thaw_after_snapshot(server.id).await;
                }
                if policy == Quiesce::Require {
                    return Err(Error::conflict(format!(
                        "Quiescing the guest failed and the image requires it (os_require_quiesce=yes): {e}"
                    )));
                }
                tracing::warn!(server = %server.id, error = %e, "guest not quiesced; the snapshot is crash-consistent");
                Ok(false)
            }
        }
    }

    /// Thaws `server`'s guest, logging a failure (the agent gone, say).
    pub(crate) async fn thaw_after_snapshot(&self, server: ServerId) {
        match self.hypervisor.thaw_filesystems(&server.to_string()).await {
            Ok(thawed) => tracing::info!(%server, thawed, "guest thawed"),
            Err(e) => tracing::warn!(%server, error = %e, "could not thaw the guest"),
        }
    }
}
