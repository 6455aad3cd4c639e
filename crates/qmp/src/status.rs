//! `query-status`: QEMU's run state.

use serde::Deserialize;
use serde_json::Value;

use crate::client::Client;
use crate::error::Result;

/// QEMU's `RunState` (QAPI `RunState`), with a catch-all for states added later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RunState {
    Debug,
    Inmigrate,
    InternalError,
    IoError,
    Paused,
    Postmigrate,
    Prelaunch,
    FinishMigrate,
    RestoreVm,
    Running,
    SaveVm,
    /// The guest powered off and QEMU runs with `-no-shutdown`.
    Shutdown,
    Suspended,
    Watchdog,
    GuestPanicked,
    Colo,
    /// A state this crate does not know.
    #[serde(other)]
    Other,
}

/// The reply of `query-status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusInfo {
    /// True when vCPUs run.
    pub running: bool,
    /// The precise run state.
    pub status: RunState,
}

impl Client {
    /// Runs `query-status`.
    pub async fn query_status(&self) -> Result<StatusInfo> {
        self.execute_as("query-status", Value::Null).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_info_when_state_unknown_then_other() {
        let reply = json!({"running": false, "status": "brand-new-state", "singlestep": false});

        let info: StatusInfo = serde_json::from_value(reply).unwrap();

        assert_eq!(info.status, RunState::Other);
    }

    #[test]
    fn status_info_when_postmigrate_then_kebab_case_matches() {
        let reply = json!({"running": false, "status": "postmigrate"});

        let info: StatusInfo = serde_json::from_value(reply).unwrap();

        assert_eq!(info.status, RunState::Postmigrate);
    }
}
