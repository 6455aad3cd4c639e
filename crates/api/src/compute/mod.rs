//! Compute v2.1 (Nova shapes): flavors, servers, server actions.
//!
//! Microversions are negotiated per request ([`microversion`]) up to
//! [`crate::versions::COMPUTE_MAX_MICROVERSION`]; errors use Nova's bodies
//! (`{"itemNotFound": {"code": 404, "message": …}}`).

mod admin_events;
mod availability_zones;
mod extensions;
mod flavor_access;
mod flavors;
mod hosts;
mod hypervisors;
mod images;
mod keypairs;
mod microversion;
mod networks;
pub(crate) mod quotas;
mod restore_points;
mod servers;
mod services;
mod usage;
mod views;
mod volume_attachments;
mod volumes_proxy;

use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use domain::ErrorKind;
use serde_json::json;

use crate::error::{status_of, ApiError};
use crate::AppState;

pub(crate) use microversion::Microversion;

pub(crate) fn routes() -> Router<AppState> {
    flavors::routes()
        .merge(flavor_access::routes())
        .merge(servers::routes())
        .merge(keypairs::routes())
        .merge(hypervisors::routes())
        .merge(services::routes())
        .merge(hosts::routes())
        .merge(usage::routes())
        .merge(admin_events::routes())
        .merge(images::routes())
        .merge(volumes_proxy::routes())
        .merge(extensions::routes())
        .merge(availability_zones::routes())
        .merge(networks::routes())
        .merge(quotas::routes())
        .merge(restore_points::routes())
        .merge(volume_attachments::routes())
        .layer(axum::middleware::from_fn(microversion::negotiate))
}

/// An error in Nova's shape.
#[derive(Debug)]
pub(crate) struct NovaError(pub domain::Error);

pub(crate) type NovaResult<T> = Result<T, NovaError>;

impl From<domain::Error> for NovaError {
    fn from(e: domain::Error) -> Self {
        NovaError(e)
    }
}

impl From<ApiError> for NovaError {
    fn from(e: ApiError) -> Self {
        NovaError(e.0)
    }
}

impl IntoResponse for NovaError {
    fn into_response(self) -> Response {
        let kind = self.0.kind();
        if kind == ErrorKind::Unauthenticated {
            return ApiError(self.0).into_response();
        }
        let status = status_of(kind);
        if status.is_server_error() {
            tracing::error!(
                error = %self.0,
                causes = %crate::error::causes(&self.0),
                "compute request failed"
            );
        }
        let key = match kind {
            ErrorKind::InvalidInput => "badRequest",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "itemNotFound",
            ErrorKind::Conflict => "conflictingRequest",
            ErrorKind::TooLarge => "overLimit",
            ErrorKind::Unavailable => "serviceUnavailable",
            _ => "computeFault",
        };
        (
            status,
            Json(json!({key: {"code": status.as_u16(), "message": self.0.message()}})),
        )
            .into_response()
    }
}
