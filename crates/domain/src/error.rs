//! The error every Snapstack layer returns: a small, matchable [`ErrorKind`]
//! (what the caller did wrong, or what failed), a sentence for a human, and the
//! cause when there is one (a hypervisor, storage, database or I/O error), kept
//! as the [`std::error::Error::source`] so it is not lost at a crate boundary.
//! [`ErrorKind::http_status`] is the one mapping of kinds to HTTP status codes
//! (API responses and server faults).

use std::fmt;
use std::sync::Arc;

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

impl ErrorKind {
    /// The HTTP status code of this kind (the codes on the variants).
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidInput => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::Gone => 410,
            Self::TooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::RangeNotSatisfiable => 416,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}

/// The cause of an [`Error`], shared so that errors stay `Clone`.
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

/// A Snapstack error: a kind, a message and maybe its cause. Two errors are equal
/// when their kinds and messages are (causes are not compared).
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Source>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The same error, caused by `source`.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
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

    /// A 404 with its own message.
    pub fn not_found_message(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
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

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for Error {}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn with_source_when_cloned_then_both_keep_the_cause() {
        let cause = std::io::Error::new(std::io::ErrorKind::TimedOut, "monitor timed out");

        let error = Error::unavailable("VM vm1 did not answer.").with_source(cause);
        let copy = error.clone();

        assert_eq!(copy.source().unwrap().to_string(), "monitor timed out");
        assert_eq!(error.source().unwrap().to_string(), "monitor timed out");
    }

    #[test]
    fn eq_when_only_the_source_differs_then_equal() {
        let cause = std::io::Error::other("disk gone");

        let with = Error::conflict("Busy.").with_source(cause);

        assert_eq!(with, Error::conflict("Busy."));
    }

    #[test]
    fn http_status_when_each_kind_then_the_documented_code() {
        let kinds = [
            (ErrorKind::InvalidInput, 400),
            (ErrorKind::Unauthenticated, 401),
            (ErrorKind::Forbidden, 403),
            (ErrorKind::NotFound, 404),
            (ErrorKind::Conflict, 409),
            (ErrorKind::Gone, 410),
            (ErrorKind::TooLarge, 413),
            (ErrorKind::UnsupportedMediaType, 415),
            (ErrorKind::RangeNotSatisfiable, 416),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Internal, 500),
        ];

        let codes: Vec<_> = kinds.iter().map(|(k, _)| k.http_status()).collect();

        let expected: Vec<_> = kinds.iter().map(|(_, code)| *code).collect();
        assert_eq!(codes, expected);
    }
}
