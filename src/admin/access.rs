//! Who may use the admin listener: anonymous requests from loopback (by
//! default; `[admin] anonymous = "never"` turns that off), else HTTP Basic
//! as a `[[auth.users]]` entry with the `admin` role, or a JWT bearer token
//! whose admin claim is `true`. The checks are the STOMP login's own
//! (argon2, throttled per address), so the admin port is no easier to
//! guess passwords on.

use crate::auth::Credentials;
use crate::config::AdminAnonymous;
use crate::context::BrokerContext;
use base64::Engine;
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use std::net::SocketAddr;

/// Why a request was refused: 401 (no or wrong credentials) or 403 (valid,
/// but not an admin).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401: credentials needed, or they failed.
    Unauthorized(String),
    /// 403: authenticated, without the admin role or claim.
    Forbidden,
}

/// Lets the request through or says why not.
pub async fn check(
    context: &BrokerContext,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(authorization) = authorization else {
        return match context.config.admin.anonymous {
            AdminAnonymous::Loopback if peer.ip().to_canonical().is_loopback() => Ok(()),
            _ => Err(Refusal::Unauthorized("authentication required".into())),
        };
    };
    let (login, passcode, bearer);
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        (login, passcode, bearer) = (None, None, Some(token.trim().to_owned()));
    } else if let Some(encoded) = authorization.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| Refusal::Unauthorized("malformed Basic credentials".into()))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| Refusal::Unauthorized("malformed Basic credentials".into()))?;
        (login, passcode, bearer) = (Some(user.to_owned()), Some(password.to_owned()), None);
    } else {
        return Err(Refusal::Unauthorized(
            "unsupported Authorization scheme (Basic or Bearer)".into(),
        ));
    }
    let credentials = Credentials {
        login: login.as_deref(),
        passcode: passcode.as_deref(),
        bearer: bearer.as_deref(),
        ip: peer.ip(),
        origin: None,
    };
    match context.auth.load_full().authenticate(credentials).await {
        Ok(identity) if identity.admin => Ok(()),
        Ok(_) => Err(Refusal::Forbidden),
        Err(message) => {
            context.metrics.auth_failed(credentials.method());
            Err(Refusal::Unauthorized(message))
        }
    }
}
