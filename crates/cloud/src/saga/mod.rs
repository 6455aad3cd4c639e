//! The one saga engine: every long operation of Snapstack is a saga kind
//! written against it, and nothing else records progress.
//!
//! A saga kind ([`Saga`]) is a serde-serialisable state plus an ordered list
//! of typed steps ([`SagaStep`]). Each step has an action ([`Saga::run`]),
//! beside it its undo ([`Saga::undo`]) and, where a crash can leave the step
//! half done, a probe ([`Saga::probe`]) that says whether it took. The
//! engine — not the flow — records every step before and after it runs
//! (`sagas` table: step, phase, the state as JSON), calls the fault points
//! `"{kind}:{step}:start"` (recorded, not run) and `"{kind}:{step}"` (run,
//! its end not recorded) that the crash tests use, runs the undos in
//! reverse when a step fails, and at start-up recovers every open saga
//! through one registry of all kinds ([`registry`]).
//!
//! ```text
//!            record(step i, running)   action   record(step i, done)
//!  begin ──▶ ───────────────────────▶ ──────▶ ─────────────────────▶ … ──▶ done
//!                      │ fails
//!                      ▼
//!            record(step j, undoing)  undo(j)   for j = i, i-1, …, 0  ──▶ undone
//!
//!  recovery of an open saga, by what its record says:
//!    (i, done)     → forward from step i+1
//!    (i, running)  → probe(i): took → forward from i+1; not taken → undo
//!                    from i; no probe (the step is idempotent) → run i again
//!    (i, undoing)  → undo from i down (undos are idempotent)
//!    a forward failure during recovery → undo from the failing step
//! ```
//!
//! Rules every saga kind follows:
//! - a step's action and its undo can be repeated (a crash may cut either
//!   short, and recovery runs it again) unless the step has a probe;
//! - pool data a step makes is named in the saga's state before the step
//!   ends ([`Saga::pool_names`]): the garbage collector keeps everything
//!   open sagas name, and the engine holds the collector's shared lock from
//!   the start of a step until its end is recorded, so data a step made is
//!   never unreferenced in between;
//! - an undo puts rows back; it never deletes pool data a row might still
//!   name — the collector deletes what nothing needs, once the saga is over.

mod engine;
pub(crate) mod registry;

use async_trait::async_trait;
use domain::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Cloud;

/// A saga kind the registry knows, with its steps in order (for tests that
/// must cover every kind and every step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaKind {
    pub name: &'static str,
    pub steps: Vec<&'static str>,
}

/// Every saga kind start-up recovery knows, in the registry's order.
pub fn saga_kinds() -> Vec<SagaKind> {
    registry::kinds()
        .into_iter()
        .map(|k| SagaKind {
            name: k.name,
            steps: (k.steps)(),
        })
        .collect()
}

/// A saga's id: one row of the `sagas` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SagaId(uuid::Uuid);

impl SagaId {
    pub fn new() -> SagaId {
        SagaId(uuid::Uuid::new_v4())
    }
}

impl Default for SagaId {
    fn default() -> Self {
        SagaId::new()
    }
}

impl std::fmt::Display for SagaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl std::str::FromStr for SagaId {
    type Err = Error;

    fn from_str(s: &str) -> Result<SagaId> {
        uuid::Uuid::parse_str(s)
            .map(SagaId)
            .map_err(|_| Error::internal(format!("Bad saga id {s:?} in the database.")))
    }
}

/// What a probe says of a step that a crash interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The step took effect: go on from the next step.
    Took,
    /// The step did not take (or only half): undo from this step.
    NotTaken,
    /// The step can simply run again.
    Rerun,
}

/// The steps of one saga kind, in order.
pub trait SagaStep: Copy + Eq + std::fmt::Debug + Send + Sync + 'static {
    /// Every step, in the order they run.
    const ALL: &'static [Self];

    /// The step's name in the `sagas` table and in fault points.
    fn name(self) -> &'static str;
}

/// A long operation: its state (what the saga knows, serialised in its
/// record) and its steps.
#[async_trait]
pub trait Saga: Serialize + DeserializeOwned + Send + Sync + Sized + 'static {
    /// The kind's name in the `sagas` table (never change it: open sagas
    /// of a previous run are found by it).
    const KIND: &'static str;

    type Step: SagaStep;

    /// What the saga works on, for logs and recovery reports.
    fn describe(&self) -> String;

    /// The pool locations the saga's state names (made, or about to be
    /// made, by its steps): roots of the garbage collection while the saga
    /// is open.
    fn pool_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether `step` needs the collector's lock exclusively (it moves
    /// data that other sagas' steps might move too); most steps share it.
    fn exclusive(_step: Self::Step) -> bool {
        false
    }

    /// Runs `step`.
    async fn run(&mut self, cloud: &Cloud, step: Self::Step) -> Result<()>;

    /// Undoes `step`, done or half done (a failed step is undone too).
    async fn undo(&mut self, _cloud: &Cloud, _step: Self::Step) -> Result<()> {
        Ok(())
    }

    /// Whether `step`, interrupted by a crash, took (it may fill in the
    /// state the step would have recorded). The default: the step runs
    /// again.
    async fn probe(&mut self, _cloud: &Cloud, _step: Self::Step) -> Result<Probe> {
        Ok(Probe::Rerun)
    }

    /// At start-up, before an open saga is taken forward or back (thaw a
    /// guest a crash left frozen, say).
    async fn before_recovery(&mut self, _cloud: &Cloud) {}

    /// After the last step ran (outside the collector's lock).
    async fn finished(&mut self, _cloud: &Cloud) {}

    /// After every undo ran, with the failure that caused them (`None`
    /// when recovery chose to undo).
    async fn undone(&mut self, _cloud: &Cloud, _cause: Option<&Error>) {}
}
