//! A JSON body extractor whose failures are 400s with a readable message
//! (axum's own answers 422 for type errors and plain text bodies).

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use domain::Error;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| Error::invalid(format!("Cannot read the request body: {e}")))?;
        parse(&bytes).map(JsonBody)
    }
}

pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(Error::invalid("The request body is empty; JSON was expected.").into());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Error::invalid(format!(
            "The request body is not valid JSON for this request: {e}"
        ))
        .into()
    })
}
