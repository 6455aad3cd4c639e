//! Block Storage microversion negotiation, as Cinder: the request's
//! `OpenStack-API-Version: volume 3.x` (`latest` allowed; absent means
//! 3.0), a malformed value → 400, one outside 3.0 to
//! [`VOLUME_MAX_MICROVERSION`] → 406. The version used is echoed in
//! `OpenStack-API-Version` with `Vary: OpenStack-API-Version`.

use axum::extract::{FromRequestParts, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::versions::VOLUME_MAX_MICROVERSION;

/// The negotiated volume microversion: `3.<minor>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct VolumeVersion(pub u32);

impl VolumeVersion {
    pub fn at_least(self, minor: u32) -> bool {
        self.0 >= minor
    }
}

fn max_minor() -> u32 {
    VOLUME_MAX_MICROVERSION
        .trim_start_matches("3.")
        .parse()
        .unwrap_or(0)
}

fn requested(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("openstack-api-version")
        .iter()
        .find_map(|v| {
            let v = v.to_str().ok()?;
            v.split(',').find_map(|part| {
                let mut words = part.split_whitespace();
                (words.next()?.eq_ignore_ascii_case("volume"))
                    .then(|| words.next().map(str::to_owned))
                    .flatten()
            })
        })
}

/// Parses the requested version; `Err` is the status and message.
fn parse(v: Option<String>) -> Result<VolumeVersion, (StatusCode, String)> {
    let Some(v) = v else {
        return Ok(VolumeVersion(0));
    };
    if v.eq_ignore_ascii_case("latest") {
        return Ok(VolumeVersion(max_minor()));
    }
    let (major, minor) = v
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                format!("API Version String {v} is of invalid format. Must be of format MajorNum.MinorNum."),
            )
        })?;
    if major != 3 || minor > max_minor() {
        return Err((
            StatusCode::NOT_ACCEPTABLE,
            format!("Version {v} is not supported by the API. Minimum is 3.0 and maximum is {VOLUME_MAX_MICROVERSION}."),
        ));
    }
    Ok(VolumeVersion(minor))
}

pub(crate) async fn negotiate(mut req: Request, next: Next) -> Response {
    let version = match parse(requested(req.headers())) {
        Ok(v) => v,
        Err((status, message)) => return crate::error::version_refused(status, message),
    };
    req.extensions_mut().insert(version);
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("volume 3.{}", version.0)) {
        h.insert("openstack-api-version", v);
    }
    h.insert("vary", HeaderValue::from_static("OpenStack-API-Version"));
    response
}

impl<S: Send + Sync> FromRequestParts<S> for VolumeVersion {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<VolumeVersion>()
            .copied()
            .unwrap_or(VolumeVersion(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_when_absent_then_3_0() {
        assert_eq!(parse(None).unwrap(), VolumeVersion(0));
    }

    #[test]
    fn version_when_above_maximum_then_406() {
        assert_eq!(
            parse(Some("3.999".into())).unwrap_err().0,
            StatusCode::NOT_ACCEPTABLE
        );
    }

    #[test]
    fn version_when_malformed_then_400() {
        assert_eq!(
            parse(Some("three".into())).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn modern_header_when_several_services_then_volume_picked() {
        let mut h = HeaderMap::new();
        h.insert(
            "openstack-api-version",
            HeaderValue::from_static("compute 2.47, volume 3.44"),
        );

        assert_eq!(requested(&h).as_deref(), Some("3.44"));
    }
}
