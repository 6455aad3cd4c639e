//! The OpenStack-compatible HTTP API: one port, devstack-style prefixes
//! (`/identity/v3`, `/image/v2`, `/compute/v2.1`, `/volume/v3/{project}`).
//!
//! Handlers are thin: parse the request, call a [`cloud::Cloud`] use-case,
//! convert the result into OpenStack's JSON shape. Errors become status
//! codes in one place ([`error`]); every response carries an
//! `x-openstack-request-id`.

mod auth;
mod compute;
mod error;
mod identity;
mod images;
mod json;
mod network;
mod request_id;
mod versions;
mod volumes;

use std::sync::Arc;

use axum::Router;
use cloud::Cloud;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub cloud: Cloud,
    /// The externally visible base URL, e.g. `http://127.0.0.1:8774`.
    pub public_url: Arc<str>,
}

impl AppState {
    pub fn new(cloud: Cloud, public_url: &str) -> Self {
        AppState {
            cloud,
            public_url: public_url.trim_end_matches('/').into(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(versions::routes())
        .nest("/identity/v3", identity::routes())
        .nest("/image/v2", images::routes())
        .nest("/compute/v2.1", compute::routes())
        .nest("/volume/v3", volumes::routes())
        .nest("/networking", network::routes())
        .fallback(error::not_found_route)
        .layer(axum::middleware::from_fn(request_id::request_id))
        .with_state(state)
}
