//! Request ids: every request gets `req-<uuid>`, logged with its method,
//! path, status and duration, and returned as `x-openstack-request-id`.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use tracing::Instrument;

pub(crate) async fn request_id(req: Request, next: Next) -> Response {
    let id = format!("req-{}", uuid::Uuid::new_v4());
    let span =
        tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    let started = std::time::Instant::now();
    async move {
        let mut response = next.run(req).await;
        let status = response.status().as_u16();
        let millis = started.elapsed().as_millis() as u64;
        if status >= 500 {
            tracing::error!(status, millis, "request failed");
        } else {
            tracing::info!(status, millis, "request done");
        }
        if let Ok(value) = HeaderValue::from_str(&id) {
            response
                .headers_mut()
                .insert("x-openstack-request-id", value);
        }
        response
    }
    .instrument(span)
    .await
}
