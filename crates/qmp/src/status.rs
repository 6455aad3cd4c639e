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

impl RunState {
    /// QEMU's name for the state (`"postmigrate"`, `"io-error"`, …); `"other"` for
    /// states this crate does not know.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Inmigrate => "inmigrate",
            Self::InternalError => "internal-error",
            Self::IoError => "io-error",
            Self::Paused => "paused",
            Self::Postmigrate => "postmigrate",
            Self::Prelaunch => "prelaunch",
            Self::FinishMigrate => "finish-migrate",
            Self::RestoreVm => "restore-vm",
            Self::Running => "running",
            Self::SaveVm => "save-vm",
            Self::Shutdown => "shutdown",
            Self::Suspended => "suspended",
            Self::Watchdog => "watchdog",
            Self::GuestPanicked => "guest-panicked",
            Self::Colo => "colo",
            Self::Other => "other",
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

    #[test]
    fn as_str_when_deserialized_from_name_then_gives_the_name_back() {
        let names = ["io-error", "finish-migrate", "guest-panicked", "restore-vm"];

        let back: Vec<&str> = names
            .iter()
            .map(|name| {
                serde_json::from_value::<RunState>(json!(name))
                    .unwrap()
                    .as_str()
            })
            .collect();

        assert_eq!(back, names);
    }
}
