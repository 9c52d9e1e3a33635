//! The WebSocket upgrade: path check, `Sec-WebSocket-Protocol` negotiation and
//! tungstenite's limits. Runs in the connection's own task, under a timeout.

use crate::auth::origin_allowed;
use crate::config::{Config, EndpointConfig};
use stomp_protocol::Version;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// What the handshake settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The subprotocol we answered with, if the client offered any of ours.
    pub subprotocol: Option<Version>,
    /// The STOMP versions CONNECT may choose from: those the client offered
    /// as subprotocols, or all when it offered none.
    pub allowed_versions: Vec<Version>,
    /// A bearer token from `Authorization: Bearer` or `?access_token=`.
    /// A secret: never logged.
    pub bearer: Option<String>,
    /// The request's `Origin`, once it passed the allow-list (anonymous
    /// loopback access also requires it to be a page of this machine).
    pub origin: Option<String>,
}

/// Chooses our answer to the offered subprotocols.
///
/// - none offered: accepted, no subprotocol in the answer, any version;
/// - some of ours offered: the highest one, echoed;
/// - only others offered: refused (the error text goes into the HTTP 400).
pub fn negotiate_subprotocol(offered: &[&str]) -> Result<Handshake, String> {
    if offered.is_empty() {
        return Ok(Handshake {
            subprotocol: None,
            allowed_versions: Version::ALL.to_vec(),
            bearer: None,
            origin: None,
        });
    }
    let mut ours: Vec<Version> = offered
        .iter()
        .filter_map(|name| Version::from_subprotocol(name))
        .collect();
    ours.sort();
    ours.dedup();
    match ours.last() {
        Some(&highest) => Ok(Handshake {
            subprotocol: Some(highest),
            allowed_versions: ours,
            bearer: None,
            origin: None,
        }),
        None => Err(format!(
            "no supported STOMP subprotocol offered (offered: {}; supported: v12.stomp, v11.stomp, v10.stomp)",
            offered.join(", ")
        )),
    }
}

/// tungstenite's settings: messages as large as our largest frame, small
/// buffers so that idle connections stay cheap.
pub fn websocket_config(config: &Config) -> WebSocketConfig {
    let max_message = config.limits.frame_limits().max_frame_bytes();
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(max_message + 64 * 1024)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

fn refuse(status: StatusCode, reason: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(reason));
    *response.status_mut() = status;
    response
}

/// The bearer token of a request: `Authorization: Bearer <t>`, else the
/// `access_token` query parameter (browsers cannot set headers on a WebSocket).
fn bearer(request: &Request) -> Option<String> {
    let header = request
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    header.or_else(|| {
        request.uri().query().and_then(|query| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("access_token="))
                .map(percent_decode)
        })
    })
}

/// Decodes `%XX` escapes (JWTs need none, but clients may escape anyway).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[at], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                at += 1;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Performs the upgrade on `stream`, by the path and Origin rules of the
/// listener it came in on.
// The callback's error type is tungstenite's `ErrorResponse`, an HTTP
// response: large, but not ours to box.
#[allow(clippy::result_large_err)]
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    config: &Config,
    endpoint: &EndpointConfig,
) -> Result<(WebSocketStream<S>, Handshake), tokio_tungstenite::tungstenite::Error> {
    let mut settled: Option<Handshake> = None;
    let path = endpoint.path.as_str();
    let callback = |request: &Request, mut response: Response| {
        if request.uri().path() != path {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                format!("no WebSocket endpoint here; use {path}"),
            ));
        }
        let offered: Vec<&str> = request
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .collect();
        // Cross-site WebSocket hijacking: only allowed browser origins.
        let origin = request
            .headers()
            .get("Origin")
            .map(|v| v.to_str().unwrap_or("<not UTF-8>"));
        let listener = endpoint;
        match origin {
            None if !listener.allow_missing_origin => {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    "an Origin header is required".into(),
                ));
            }
            Some(origin) if !origin_allowed(origin, &listener.allowed_origins) => {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    format!("origin '{origin}' is not allowed"),
                ));
            }
            _ => {}
        }
        let mut handshake = negotiate_subprotocol(&offered)
            .map_err(|reason| refuse(StatusCode::BAD_REQUEST, reason))?;
        handshake.bearer = bearer(request);
        handshake.origin = origin.map(str::to_owned);
        if let Some(version) = handshake.subprotocol {
            response.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(version.subprotocol()),
            );
        }
        settled = Some(handshake);
        Ok(response)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(websocket_config(config)),
    )
    .await?;
    let handshake = settled.unwrap_or(Handshake {
        subprotocol: None,
        allowed_versions: Version::ALL.to_vec(),
        bearer: None,
        origin: None,
    });
    Ok((ws, handshake))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_offered_version_is_chosen() {
        let h = negotiate_subprotocol(&["v10.stomp", "v12.stomp", "v11.stomp"]).unwrap();
        assert_eq!(h.subprotocol, Some(Version::V1_2));
        let h = negotiate_subprotocol(&["mqtt", "v11.stomp"]).unwrap();
        assert_eq!(h.subprotocol, Some(Version::V1_1));
        assert_eq!(h.allowed_versions, vec![Version::V1_1]);
    }

    #[test]
    fn nothing_offered_allows_everything_and_only_foreign_is_refused() {
        let h = negotiate_subprotocol(&[]).unwrap();
        assert_eq!(h.subprotocol, None);
        assert_eq!(h.allowed_versions.len(), 3);
        assert!(negotiate_subprotocol(&["mqtt", "wamp"]).is_err());
    }
}
