//! Glance's `image_stage_total`: the bytes of a project's uploads under way
//! (written to the staging area, not yet in the pool) may not pass a limit.
//!
//! Each upload holds a [`StageClaim`] that grows with every chunk it writes;
//! a chunk that would take the project past its limit fails the upload with
//! 413, and the claim gives its bytes back when the upload ends, however it
//! ends. The meter lives in memory: the staging area is emptied at start-up,
//! so nothing survives a restart that a meter would have to remember.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use domain::{Error, ErrorKind, ProjectId, Result};

/// Staged bytes per project.
#[derive(Debug, Default)]
pub(crate) struct StageMeter {
    staged: Mutex<HashMap<ProjectId, u64>>,
}

/// One upload's share of its project's staged bytes.
#[derive(Debug)]
pub(crate) struct StageClaim {
    meter: Arc<StageMeter>,
    project: ProjectId,
    limit_mib: i64,
    bytes: u64,
}

fn over_limit(limit_mib: i64, usage: u64, delta: u64) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!(
            "Resource image_stage_total is over limit of {limit_mib} due to current usage {} and delta {}",
            usage >> 20,
            delta.div_ceil(1 << 20)
        ),
    )
}

impl StageMeter {
    /// A claim for a new upload of `project`; 413 at once when the
    /// project's uploads under way already fill its limit, or when the
    /// announced length would not fit. `None`: no limit.
    pub(crate) fn claim(
        self: &Arc<Self>,
        project: ProjectId,
        limit_mib: i64,
        announced: Option<u64>,
    ) -> Result<Option<StageClaim>> {
        if limit_mib < 0 {
            return Ok(None);
        }
        let limit = (limit_mib as u64).saturating_mul(1 << 20);
        let usage = self.usage(project);
        let wanted = announced.unwrap_or(0).max(1);
        if usage.saturating_add(wanted) > limit {
            return Err(over_limit(limit_mib, usage, wanted));
        }
        Ok(Some(StageClaim {
            meter: self.clone(),
            project,
            limit_mib,
            bytes: 0,
        }))
    }

    fn usage(&self, project: ProjectId) -> u64 {
        let staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        staged.get(&project).copied().unwrap_or(0)
    }
}

impl StageClaim {
    /// Counts `more` bytes written; 413 (nothing counted) past the limit.
    pub(crate) fn grow(&mut self, more: u64) -> Result<()> {
        let limit = (self.limit_mib as u64).saturating_mul(1 << 20);
        let mut staged = self.meter.staged.lock().unwrap_or_else(|e| e.into_inner());
        let usage = staged.entry(self.project).or_default();
        if usage.saturating_add(more) > limit {
            return Err(over_limit(self.limit_mib, *usage, more));
        }
        *usage += more;
        self.bytes += more;
        Ok(())
    }
}

impl Drop for StageClaim {
    fn drop(&mut self) {
        let mut staged = self.meter.staged.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(usage) = staged.get_mut(&self.project) {
            *usage = usage.saturating_sub(self.bytes);
            if *usage == 0 {
                staged.remove(&self.project);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_when_two_uploads_share_the_limit_then_the_second_stops_and_ends_give_back() {
        let meter = Arc::new(StageMeter::default());
        let project = ProjectId::new();
        let mut first = meter.claim(project, 1, None).unwrap().unwrap();
        let mut second = meter.claim(project, 1, None).unwrap().unwrap();

        first.grow(600 << 10).unwrap();
        let refused = second.grow(600 << 10);
        drop(first);
        let after = second.grow(600 << 10);

        assert_eq!(refused.unwrap_err().kind(), ErrorKind::TooLarge);
        assert!(after.is_ok());
    }

    #[test]
    fn claim_when_announced_length_over_limit_then_413_and_unlimited_then_none() {
        let meter = Arc::new(StageMeter::default());
        let project = ProjectId::new();

        let too_big = meter.claim(project, 1, Some(2 << 20));
        let unlimited = meter.claim(project, -1, Some(u64::MAX));

        assert_eq!(too_big.unwrap_err().kind(), ErrorKind::TooLarge);
        assert!(unlimited.unwrap().is_none());
    }
}
