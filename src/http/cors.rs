//! CORS for the HTTP endpoints: the preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) a browser sends before a cross-origin
//! `POST /api/publish` with a JSON body or an `Authorization` header, and
//! the `Access-Control-Allow-Origin` on the answers. Only for the listener's
//! `allowed_origins`: others get no CORS headers (and `403`), so the browser
//! refuses the page's request.

use super::{text, Body};
use crate::auth::origin_allowed;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, ALLOW, ORIGIN, VARY,
};
use hyper::{HeaderMap, Response, StatusCode};

/// Methods a preflight may ask for.
const METHODS: &str = "GET, POST, OPTIONS";
/// Request headers pages may send: credentials, the body's type, SSE resume.
const HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";
/// How long (seconds) the browser may keep a preflight's answer.
const MAX_AGE: &str = "600";

/// The `Origin` of a request, if it came from a page with an allowed one.
fn allowed_origin(headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    let origin = headers.get(ORIGIN)?;
    let text = origin.to_str().ok()?;
    origin_allowed(text, allowed).then(|| origin.clone())
}

/// Answers `OPTIONS`: a CORS preflight when it is one, else `Allow`.
pub(super) fn options(headers: &HeaderMap, allowed: &[String]) -> Response<Body> {
    let preflight =
        headers.contains_key(ORIGIN) && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
    if !preflight {
        let mut response = text(StatusCode::NO_CONTENT, "");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD, POST, OPTIONS"));
        return response;
    }
    let Some(origin) = allowed_origin(headers, allowed) else {
        return text(StatusCode::FORBIDDEN, "origin not allowed\n");
    };
    let mut response = text(StatusCode::NO_CONTENT, "");
    let out = response.headers_mut();
    out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    out.insert(
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    out.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    out.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(HEADERS),
    );
    out.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
    out.insert(VARY, HeaderValue::from_static("Origin"));
    out.insert(ALLOW, HeaderValue::from_static("GET, HEAD, POST, OPTIONS"));
    response
}

/// Lets the page read an answer when its origin is allowed.
pub(super) fn allow(request: &HeaderMap, allowed: &[String], response: &mut Response<Body>) {
    if let Some(origin) = allowed_origin(request, allowed) {
        let out = response.headers_mut();
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        out.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        out.insert(VARY, HeaderValue::from_static("Origin"));
    }
}
