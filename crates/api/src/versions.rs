//! Unauthenticated version documents at each service root, in the shapes
//! keystoneauth's discovery accepts: `{"versions": …}` at the root and
//! `{"version": …}` at the versioned base, whose `self` link is that base.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::AppState;

pub(crate) const COMPUTE_MAX_MICROVERSION: &str = "2.79";
/// The newest Block Storage microversion served: 3.65. From 3.66 Cinder
/// snapshots in-use volumes without `force`, and python-openstackclient
/// then stops sending `--force` while openstacksdk still sends its
/// snapshot requests at 3.65 — so `volume snapshot create --force` of an
/// attached volume would fail; 3.67 (URLs without a project id) is not
/// served either.
pub(crate) const VOLUME_MAX_MICROVERSION: &str = "3.65";

fn link(href: String) -> Value {
    json!([{"rel": "self", "href": href}])
}

fn identity_version(s: &AppState) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": link(s.url("/identity/v3/")),
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    })
}

fn image_version(s: &AppState, id: &str, status: &str) -> Value {
    json!({"id": id, "status": status, "links": link(s.url("/image/v2/"))})
}

fn compute_version(s: &AppState) -> Value {
    json!({
        "id": "v2.1",
        "status": "CURRENT",
        "version": COMPUTE_MAX_MICROVERSION,
        "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": link(s.url("/compute/v2.1/")),
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}],
    })
}

fn volume_version(s: &AppState) -> Value {
    json!({
        "id": "v3.0",
        "status": "CURRENT",
        "version": VOLUME_MAX_MICROVERSION,
        "min_version": "3.0",
        "updated": "2023-08-31T00:00:00Z",
        "links": link(s.url("/volume/v3/")),
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}],
    })
}

/// Keystone answers its root with 300 Multiple Choices.
async fn identity_root(State(s): State<AppState>) -> (http::StatusCode, Json<Value>) {
    (
        http::StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": {"values": [identity_version(&s)]}})),
    )
}

async fn identity_v3(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"version": identity_version(&s)}))
}

/// Glance answers its root with 300 Multiple Choices (`/versions`: 200).
async fn image_root_choices(State(s): State<AppState>) -> (http::StatusCode, Json<Value>) {
    (
        http::StatusCode::MULTIPLE_CHOICES,
        image_root(State(s)).await,
    )
}

async fn image_root(State(s): State<AppState>) -> Json<Value> {
    let versions: Vec<Value> = [
        "v2.16", "v2.15", "v2.9", "v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2", "v2.1", "v2.0",
    ]
    .iter()
    .enumerate()
    .map(|(i, id)| image_version(&s, id, if i == 0 { "CURRENT" } else { "SUPPORTED" }))
    .collect();
    Json(json!({"versions": versions}))
}

/// Nova's legacy v2.0 entry, listed first as every Nova does (it serves the
/// same API as v2.1 at microversion 2.1).
fn compute_v20_version(s: &AppState) -> Value {
    json!({
        "id": "v2.0",
        "status": "SUPPORTED",
        "version": "",
        "min_version": "",
        "updated": "2011-01-21T11:33:21Z",
        "links": link(s.url("/compute/v2/")),
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}],
    })
}

async fn compute_root(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"versions": [compute_v20_version(&s), compute_version(&s)]}))
}

async fn compute_v20(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"version": compute_v20_version(&s)}))
}

async fn compute_v21(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"version": compute_version(&s)}))
}

/// Cinder answers its root with 300 Multiple Choices.
async fn volume_root(State(s): State<AppState>) -> (http::StatusCode, Json<Value>) {
    (
        http::StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": [volume_version(&s)]})),
    )
}

/// Cinder's versioned root lists its one version (`versions`, 200).
async fn volume_v3(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"versions": [volume_version(&s)]}))
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/identity", get(identity_root))
        .route("/identity/", get(identity_root))
        .route("/identity/v3", get(identity_v3))
        .route("/identity/v3/", get(identity_v3))
        .route("/image", get(image_root_choices))
        .route("/image/", get(image_root_choices))
        .route("/image/versions", get(image_root))
        .route("/compute", get(compute_root))
        .route("/compute/", get(compute_root))
        .route("/compute/v2", get(compute_v20))
        .route("/compute/v2/", get(compute_v20))
        .route("/compute/v2.1", get(compute_v21))
        .route("/compute/v2.1/", get(compute_v21))
        .route("/volume", get(volume_root))
        .route("/volume/", get(volume_root))
        .route("/volume/v3", get(volume_v3))
        .route("/volume/v3/", get(volume_v3))
}
