//! `/os-networks`: Snapstack's servers have no virtual NICs. The compute
//! API lists one pseudo-network, `none`, so that clients resolving
//! `--network none` by name (python-openstackclient does, through this
//! nova-network proxy API, when no network service is in the catalog) get an
//! id; a server asked to join it gets no NIC, as with `networks: "none"`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use domain::Error;
use serde_json::{json, Value};

use super::NovaResult;
use crate::auth::Auth;
use crate::AppState;

pub(crate) const NO_NETWORK_ID: &str = "5e0c2c5f-0000-4000-8000-6e6f6e650000";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/os-networks", get(list))
        .route("/os-networks/{id}", get(show))
}

fn view() -> Value {
    json!({
        "id": NO_NETWORK_ID, "label": "none", "cidr": null, "cidr_v6": null, "netmask": null,
        "gateway": null, "broadcast": null, "dns1": null, "dns2": null, "bridge": null, "vlan": null,
    })
}

async fn list(Auth(_caller): Auth) -> Json<Value> {
    Json(json!({"networks": [view()]}))
}

async fn show(
    State(_s): State<AppState>,
    Auth(_caller): Auth,
    Path(id): Path<String>,
) -> NovaResult<Json<Value>> {
    if id == NO_NETWORK_ID {
        Ok(Json(json!({"network": view()})))
    } else {
        Err(Error::not_found("network", id).into())
    }
}
