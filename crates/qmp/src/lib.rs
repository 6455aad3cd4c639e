//! An async client for QEMU's machine protocol (QMP), on tokio.
//!
//! [`Client::connect`] opens a monitor socket, reads the greeting (QEMU's version) and
//! negotiates capabilities. [`Client::execute`] may be called from many tasks at once:
//! replies are matched to calls by id. Events arrive as JSON ([`Event`]) on
//! [`EventStream`]s; unknown events are delivered like known ones, never an error.
//! QMP error replies become an [`Error`] whose [`ErrorKind`] can be matched and which
//! keeps QEMU's class and description; losing the connection fails every pending call
//! with [`ErrorKind::Disconnected`].
//!
//! Helpers: [`Client::wait_event`], [`Client::query_status`], [`Client::query_jobs`],
//! [`Client::wait_job`].

mod client;
mod error;
mod event;
mod jobs;
mod status;

pub use client::{Client, Version, DEFAULT_CONNECT_TIMEOUT};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, EventStream};
pub use jobs::{JobInfo, JobStatus};
pub use status::{RunState, StatusInfo};
