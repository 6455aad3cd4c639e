//! The one place where errors become HTTP responses. The status of each kind is
//! `domain::ErrorKind::http_status` (server faults use the same):
//!
//! | kind | status |
//! |---|---|
//! | InvalidInput | 400 |
//! | Unauthenticated | 401 (with `WWW-Authenticate`) |
//! | Forbidden | 403 |
//! | NotFound | 404 |
//! | Conflict | 409 |
//! | Gone | 410 |
//! | TooLarge | 413 |
//! | UnsupportedMediaType | 415 |
//! | RangeNotSatisfiable | 416 |
//! | Unavailable | 503 |
//! | Internal | 500 |
//!
//! The body is Keystone's `{"error": {"code", "title", "message"}}`, which
//! keystoneclient and openstacksdk both read.

use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::{Error, ErrorKind};
use http::{HeaderValue, StatusCode};
use serde_json::json;

/// An error on its way out.
#[derive(Debug)]
pub struct ApiError(pub Error);

pub type ApiResult<T> = Result<T, ApiError>;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

/// The status of `kind`: [`ErrorKind::http_status`], the one mapping.
pub(crate) fn status_of(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The chain of causes under `e` (its sources), for the log; the response never
/// shows them.
pub(crate) fn causes(e: &Error) -> String {
    let mut chain = Vec::new();
    let mut next = std::error::Error::source(e);
    while let Some(cause) = next {
        chain.push(cause.to_string());
        next = cause.source();
    }
    chain.join(": ")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(self.0.kind());
        if status.is_server_error() {
            tracing::error!(error = %self.0, causes = %causes(&self.0), "request failed");
        }
        let title = status.canonical_reason().unwrap_or("Error");
        let body = json!({"error": {"code": status.as_u16(), "title": title, "message": self.0.message()}});
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Keystone uri=\"/identity\""),
            );
        }
        response
    }
}

/// A refused `OpenStack-API-Version`: 400 (`badRequest`) for a malformed
/// one, 406 (`notAcceptable`) for one out of range — the shape Nova and
/// Cinder answer with.
pub(crate) fn version_refused(status: StatusCode, message: String) -> Response {
    let key = if status == StatusCode::NOT_ACCEPTABLE {
        "notAcceptable"
    } else {
        "badRequest"
    };
    (
        status,
        Json(json!({key: {"code": status.as_u16(), "message": message}})),
    )
        .into_response()
}

pub(crate) async fn not_found_route(uri: http::Uri) -> ApiError {
    ApiError(Error::new(
        ErrorKind::NotFound,
        format!("No API at {}.", uri.path()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_when_error_has_a_source_chain_then_each_cause_in_order() {
        let io = std::io::Error::other("connection reset");
        let inner = Error::unavailable("the database is unavailable").with_source(io);
        let error = Error::internal("Cannot stop the server.").with_source(inner);

        let chain = causes(&error);

        assert_eq!(chain, "the database is unavailable: connection reset");
    }

    #[test]
    fn status_of_when_unavailable_then_503() {
        let kind = ErrorKind::Unavailable;

        let status = status_of(kind);

        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
