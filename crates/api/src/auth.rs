//! The `X-Auth-Token` extractor: every authenticated handler takes an
//! [`Auth`] and gets the validated caller, or the request ends in 401.

use axum::extract::FromRequestParts;
use domain::identity::Caller;
use domain::Error;
use http::request::Parts;

use crate::error::ApiError;
use crate::AppState;

/// The caller behind a request's token.
#[derive(Debug, Clone)]
pub struct Auth(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::unauthenticated(
                    "The request you have made requires authentication: no X-Auth-Token.",
                )
            })?;
        let info = state.cloud.validate(token).await?;
        Ok(Auth(info.caller))
    }
}
