//! Runs sagas forward and back, records every step, and recovers them.

use chrono::Utc;
use domain::{Error, Result};
use store::{SagaPhase, SagaRecord};

use super::{Probe, Saga, SagaId, SagaStep};
use crate::Cloud;

/// Why a saga stopped before its end.
enum Stop {
    /// A step failed (forward) and the saga must be undone from `at`.
    Failed { at: usize, error: Error },
    /// A crash was injected (tests): the process "died" here.
    Crashed,
    /// Recording progress failed: nothing more can be said durably.
    Unrecorded(Error),
}

/// The collector's lock as a step holds it (held, never read).
#[allow(dead_code)]
enum GcGuard<'a> {
    Shared(tokio::sync::RwLockReadGuard<'a, ()>),
    Exclusive(tokio::sync::RwLockWriteGuard<'a, ()>),
}

impl<'a> GcGuard<'a> {
    async fn take(cloud: &'a Cloud, exclusive: bool) -> GcGuard<'a> {
        if exclusive {
            GcGuard::Exclusive(cloud.gc_lock.write().await)
        } else {
            GcGuard::Shared(cloud.gc_lock.read().await)
        }
    }
}

/// A saga that has been recorded and has steps left to run.
pub(crate) struct Running<S: Saga> {
    cloud: Cloud,
    id: SagaId,
    saga: S,
    next: usize,
}

impl Cloud {
    /// Records `saga` at its first step; nothing runs yet.
    pub(crate) async fn begin_saga<S: Saga>(&self, saga: S) -> Result<Running<S>> {
        let id = SagaId::new();
        let first = S::Step::ALL
            .first()
            .ok_or_else(|| Error::internal(format!("Saga kind {} has no steps.", S::KIND)))?;
        self.store
            .insert_saga(&SagaRecord {
                id: id.to_string(),
                kind: S::KIND.into(),
                step: first.name().into(),
                phase: SagaPhase::Running,
                data: to_json(&saga)?,
                created_at: Utc::now(),
            })
            .await?;
        Ok(Running {
            cloud: self.clone(),
            id,
            saga,
            next: 0,
        })
    }

    /// Records `saga`, runs it through `recorded` (the step that inserts the
    /// rows a quota counts) and releases `quota` — the rows count from
    /// then on, or nothing was made — then runs the rest in the background.
    pub(crate) async fn start_saga_with_claim<S: Saga>(
        &self,
        saga: S,
        recorded: S::Step,
        quota: crate::quotas::QuotaClaim,
    ) -> Result<()> {
        let mut running = match self.begin_saga(saga).await {
            Ok(running) => running,
            Err(e) => {
                quota.release().await;
                return Err(e);
            }
        };
        let outcome = running.run_through(recorded).await;
        quota.release().await;
        outcome?;
        running.spawn();
        Ok(())
    }

    /// Whether the crash tests asked to die at fault point `name`: a test
    /// build aborts the process (end-to-end crash tests), an in-process
    /// hook stops the saga where it is (fake-based crash tests).
    fn crash_at(&self, name: &str) -> bool {
        crate::fault::fault_point(name);
        self.crash_hook.as_ref().is_some_and(|hook| hook(name))
    }
}

impl<S: Saga> Running<S> {
    /// Runs the steps up to and including `last` now (the part of an
    /// operation a request waits for). A failure undoes the saga and is
    /// returned.
    pub(crate) async fn run_through(&mut self, last: S::Step) -> Result<()> {
        let end = index_of::<S>(last)? + 1;
        match self.forward(end).await {
            Ok(()) => Ok(()),
            Err(stop) => Err(self.stopped(stop).await),
        }
    }

    /// Runs every remaining step now; a failure undoes the saga and is
    /// returned. Gives the final state back.
    pub(crate) async fn run_to_end(mut self) -> Result<S> {
        match self.forward(S::Step::ALL.len()).await {
            Ok(()) => Ok(self.saga),
            Err(stop) => Err(self.stopped(stop).await),
        }
    }

    /// Runs the remaining steps in the background.
    pub(crate) fn spawn(self) {
        tokio::spawn(async move {
            let what = format!("{} {}", S::KIND, self.saga.describe());
            if let Err(e) = self.run_to_end().await {
                tracing::warn!(saga = %what, error = %e, "saga did not finish");
            }
        });
    }

    /// Runs steps `self.next..end`; after the last step the saga is closed.
    async fn forward(&mut self, end: usize) -> Result<(), Stop> {
        while self.next < end {
            let at = self.next;
            let step = S::Step::ALL[at];
            self.record(step, SagaPhase::Running).await?;
            if self
                .cloud
                .crash_at(&format!("{}:{}:start", S::KIND, step.name()))
            {
                return Err(Stop::Crashed);
            }
            {
                // Data the step makes is named in the state recorded below
                // before the collector can decide anything.
                let _gc = GcGuard::take(&self.cloud, S::exclusive(step)).await;
                if let Err(error) = self.saga.run(&self.cloud, step).await {
                    return Err(Stop::Failed { at, error });
                }
                if self.cloud.crash_at(&format!("{}:{}", S::KIND, step.name())) {
                    return Err(Stop::Crashed);
                }
                self.record(step, SagaPhase::Done).await?;
            }
            self.next = at + 1;
        }
        if self.next == S::Step::ALL.len() {
            self.close("done").await?;
            self.saga.finished(&self.cloud).await;
            tracing::info!(kind = S::KIND, saga = %self.id, what = %self.saga.describe(), "saga done");
        }
        Ok(())
    }

    /// Undoes steps `from`, `from - 1`, …, 0, then closes the saga.
    async fn backward(&mut self, from: usize, cause: Option<&Error>) -> Result<(), Stop> {
        for at in (0..=from).rev() {
            let step = S::Step::ALL[at];
            self.record(step, SagaPhase::Undoing).await?;
            if self
                .cloud
                .crash_at(&format!("{}:{}:undo", S::KIND, step.name()))
            {
                return Err(Stop::Crashed);
            }
            if let Err(e) = self.saga.undo(&self.cloud, step).await {
                // Left open: the next start tries the undo again, and the
                // collector keeps what the saga names meanwhile.
                tracing::error!(kind = S::KIND, saga = %self.id, step = step.name(), error = %e,
                    "undo failed; the saga stays open until the next start");
                return Err(Stop::Unrecorded(e));
            }
        }
        self.close("undone").await?;
        self.saga.undone(&self.cloud, cause).await;
        tracing::info!(kind = S::KIND, saga = %self.id, what = %self.saga.describe(), "saga undone");
        self.cloud.collect_garbage_quietly().await;
        Ok(())
    }

    /// After a forward stop: undo a failure; report the error.
    async fn stopped(&mut self, stop: Stop) -> Error {
        match stop {
            Stop::Failed { at, error } => {
                tracing::warn!(kind = S::KIND, saga = %self.id, what = %self.saga.describe(),
                    step = S::Step::ALL[at].name(), error = %error, "saga step failed; undoing");
                match self.backward(at, Some(&error)).await {
                    Ok(()) | Err(Stop::Crashed) => error,
                    Err(Stop::Unrecorded(e)) | Err(Stop::Failed { error: e, .. }) => {
                        tracing::error!(saga = %self.id, error = %e, "saga could not be undone");
                        error
                    }
                }
            }
            Stop::Crashed => Error::unavailable("The service stopped during the operation."),
            Stop::Unrecorded(e) => e,
        }
    }

    async fn record(&self, step: S::Step, phase: SagaPhase) -> Result<(), Stop> {
        let data = to_json(&self.saga).map_err(Stop::Unrecorded)?;
        self.cloud
            .store
            .saga_progress(&self.id.to_string(), step.name(), phase, &data)
            .await
            .map_err(Stop::Unrecorded)
    }

    async fn close(&self, outcome: &str) -> Result<(), Stop> {
        self.cloud
            .store
            .finish_saga(&self.id.to_string(), outcome)
            .await
            .map_err(Stop::Unrecorded)
    }
}

/// Takes one open saga of kind `S` (its record) forward or back; returns a
/// line saying what became of it.
pub(super) async fn recover<S: Saga>(cloud: &Cloud, record: SagaRecord) -> Result<String> {
    let saga: S = serde_json::from_value(record.data.clone()).map_err(|e| {
        Error::internal(format!(
            "Open saga {} ({}) has a state this build cannot read: {e}.",
            record.id, record.kind
        ))
    })?;
    let at = S::Step::ALL
        .iter()
        .position(|s| s.name() == record.step)
        .ok_or_else(|| {
            Error::internal(format!(
                "Open saga {} ({}) is at step {:?}, which this build does not know.",
                record.id, record.kind, record.step
            ))
        })?;
    let mut running = Running {
        cloud: cloud.clone(),
        id: record.id.parse()?,
        saga,
        next: at,
    };
    running.saga.before_recovery(cloud).await;
    let what = format!(
        "{} {} (at {}, {})",
        S::KIND,
        running.saga.describe(),
        record.step,
        record.phase.as_str()
    );
    let outcome = match record.phase {
        SagaPhase::Undoing => running.backward(at, None).await.map(|()| "undone"),
        SagaPhase::Done => {
            running.next = at + 1;
            running.resume().await
        }
        SagaPhase::Running => {
            let step = S::Step::ALL[at];
            match running.saga.probe(cloud, step).await {
                Ok(Probe::Took) => {
                    running.next = at + 1;
                    running.resume().await
                }
                Ok(Probe::Rerun) => running.resume().await,
                Ok(Probe::NotTaken) => running.backward(at, None).await.map(|()| "undone"),
                Err(error) => Err(Stop::Failed { at, error }),
            }
        }
    };
    let outcome = match outcome {
        Ok(o) => o.to_string(),
        Err(Stop::Failed { at, error }) => match running.backward(at, Some(&error)).await {
            Ok(()) => format!("undone after {error}"),
            Err(_) => format!("left open after {error}"),
        },
        Err(Stop::Crashed) => "crashed again".to_string(),
        Err(Stop::Unrecorded(e)) => format!("left open: {e}"),
    };
    Ok(format!("{what}: {outcome}"))
}

impl<S: Saga> Running<S> {
    /// Forward to the end from `self.next`.
    async fn resume(&mut self) -> Result<&'static str, Stop> {
        self.forward(S::Step::ALL.len()).await.map(|()| "finished")
    }
}

/// The pool locations an open saga's recorded state names.
pub(super) fn pool_names<S: Saga>(record: &SagaRecord) -> Result<Vec<String>> {
    let saga: S = serde_json::from_value(record.data.clone()).map_err(|e| {
        Error::internal(format!(
            "Open saga {} ({}) has a state this build cannot read: {e}; garbage collection stops.",
            record.id, record.kind
        ))
    })?;
    Ok(saga.pool_names())
}

fn index_of<S: Saga>(step: S::Step) -> Result<usize> {
    S::Step::ALL
        .iter()
        .position(|s| *s == step)
        .ok_or_else(|| Error::internal(format!("Step {step:?} is not a step of {}.", S::KIND)))
}

fn to_json<S: Saga>(saga: &S) -> Result<serde_json::Value> {
    serde_json::to_value(saga).map_err(|e| {
        Error::internal(format!(
            "Cannot record the state of a {} saga: {e}",
            S::KIND
        ))
    })
}
