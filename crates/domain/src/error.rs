//! The error every Snapstack layer returns: a small, matchable [`ErrorKind`]
//! (what the caller did wrong, or what failed) plus a sentence for a human.
//! The API maps kinds to HTTP status codes in one place.

use std::fmt;

/// What went wrong, as a caller can act on it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or names something invalid (400).
    InvalidInput,
    /// No valid credentials or token (401).
    Unauthenticated,
    /// The caller is known but may not do this (403).
    Forbidden,
    /// No such resource, or not visible to the caller (404).
    NotFound,
    /// The resource is in a state that forbids the operation (409).
    Conflict,
    /// The resource went away while the operation ran (410).
    Gone,
    /// The request body is larger than allowed (413).
    TooLarge,
    /// The request's media type is not supported (415).
    UnsupportedMediaType,
    /// The requested byte range cannot be served (416).
    RangeNotSatisfiable,
    /// A backend (storage, hypervisor, database) is unreachable (503).
    Unavailable,
    /// A bug or an unexpected failure of a component (500).
    Internal,
}

/// A Snapstack error: a kind and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    pub fn not_found(what: &str, id: impl fmt::Display) -> Self {
        Self::new(
            ErrorKind::NotFound,
            format!("{what} {id} could not be found."),
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
