//! Compute microversion negotiation: `OpenStack-API-Version: compute 2.x`
//! or `X-OpenStack-Nova-API-Version: 2.x` (`latest` allowed), default 2.1,
//! above the maximum → 406. The version used is echoed in both headers.

use axum::extract::{FromRequestParts, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::versions::COMPUTE_MAX_MICROVERSION;

/// The negotiated compute microversion: `2.<minor>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Microversion(pub u32);

impl Microversion {
    pub fn at_least(self, minor: u32) -> bool {
        self.0 >= minor
    }
}

fn max_minor() -> u32 {
    COMPUTE_MAX_MICROVERSION
        .trim_start_matches("2.")
        .parse()
        .unwrap_or(1)
}

fn requested(headers: &HeaderMap) -> Option<String> {
    let modern = headers
        .get_all("openstack-api-version")
        .iter()
        .find_map(|v| {
            let v = v.to_str().ok()?;
            v.split(',').find_map(|part| {
                let mut words = part.split_whitespace();
                (words.next()?.eq_ignore_ascii_case("compute"))
                    .then(|| words.next().map(str::to_owned))
                    .flatten()
            })
        });
    modern.or_else(|| {
        headers
            .get("x-openstack-nova-api-version")?
            .to_str()
            .ok()
            .map(|v| v.trim().to_owned())
    })
}

/// Parses the requested version; `Err` is the message of a 406 or 400.
fn parse(v: Option<String>) -> Result<Microversion, (StatusCode, String)> {
    let Some(v) = v else {
        return Ok(Microversion(1));
    };
    if v.eq_ignore_ascii_case("latest") {
        return Ok(Microversion(max_minor()));
    }
    let minor = v
        .strip_prefix("2.")
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                format!("Invalid compute API version '{v}'."),
            )
        })?;
    if minor < 1 || minor > max_minor() {
        return Err((
            StatusCode::NOT_ACCEPTABLE,
            format!("Version 2.{minor} is not supported by the API. Minimum is 2.1 and maximum is {COMPUTE_MAX_MICROVERSION}."),
        ));
    }
    Ok(Microversion(minor))
}

pub(crate) async fn negotiate(mut req: Request, next: Next) -> Response {
    let version = match parse(requested(req.headers())) {
        Ok(v) => v,
        Err((status, message)) => return crate::error::version_refused(status, message),
    };
    req.extensions_mut().insert(version);
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("compute 2.{}", version.0)) {
        h.insert("openstack-api-version", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("2.{}", version.0)) {
        h.insert("x-openstack-nova-api-version", v);
    }
    h.insert(
        "vary",
        HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
    );
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Microversion {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Microversion>()
            .copied()
            .unwrap_or(Microversion(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_when_absent_then_2_1() {
        assert_eq!(parse(None).unwrap(), Microversion(1));
    }

    #[test]
    fn version_when_latest_then_maximum() {
        assert_eq!(
            parse(Some("latest".into())).unwrap(),
            Microversion(max_minor())
        );
    }

    #[test]
    fn version_when_above_maximum_then_406() {
        assert_eq!(
            parse(Some("2.999".into())).unwrap_err().0,
            StatusCode::NOT_ACCEPTABLE
        );
    }

    #[test]
    fn modern_header_when_several_services_then_compute_picked() {
        let mut h = HeaderMap::new();
        h.insert(
            "openstack-api-version",
            HeaderValue::from_static("volume 3.5, compute 2.47"),
        );

        assert_eq!(requested(&h).as_deref(), Some("2.47"));
    }
}
