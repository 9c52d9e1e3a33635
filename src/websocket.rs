//! The WebSocket upgrade: path check, `Sec-WebSocket-Protocol` negotiation,
//! the bearer token's carriers (browsers cannot set headers on a WebSocket,
//! so besides `Authorization` a token may come as a subprotocol, a query
//! parameter or a cookie) and tungstenite's limits. Runs in the connection's
//! own task, under a timeout.

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
    /// A bearer token from `Authorization: Bearer`, a
    /// `base64url.bearer.authorization.stomp.<token>` subprotocol,
    /// `?access_token=` or the `[auth.jwt] cookie`. A secret: never logged.
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

/// The subprotocol that carries a token (Kubernetes' scheme, in our name):
/// offered beside `v12.stomp`, never chosen, never echoed.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "base64url.bearer.authorization.stomp.";

/// The token in an offered `base64url.bearer.authorization.stomp.<token>`:
/// base64url-decoded (with or without padding), or as it is when it does not
/// decode to text (a JWT's own characters are all allowed in a subprotocol
/// name, so clients may offer it unencoded).
fn subprotocol_token(offered: &str) -> Option<String> {
    use base64::Engine as _;
    let encoded = offered.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX)?;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    Some(decoded.unwrap_or_else(|| encoded.to_owned()))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get_all("Cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
}

/// The bearer token of a request, from the first carrier that has one:
/// `Authorization: Bearer <t>`, the token subprotocol, the `access_token`
/// query parameter, then the cookie `cookie_name` (when given: the caller
/// passes it only where the Origin check makes the cookie safe to honour).
fn bearer(
    request: &Request,
    offered_token: Option<String>,
    cookie_name: Option<&str>,
) -> Option<String> {
    let header = request
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    header
        .or(offered_token)
        .or_else(|| {
            request.uri().query().and_then(|query| {
                query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("access_token="))
                    .map(percent_decode)
            })
        })
        .or_else(|| cookie_name.and_then(|name| cookie(request, name)))
}

/// Whether a token cookie may be honoured for a request whose Origin passed
/// the allow-list. A browser sends cookies with a WebSocket handshake from
/// any site (cross-site WebSocket hijacking, OWASP): only the Origin check
/// tells our pages from others, so a wildcard `*` allow-list (every site
/// passes) disables the cookie. A request without Origin is not a browser's,
/// and nobody else rides its cookies.
fn cookie_safe(origin: Option<&str>, allowed_origins: &[String]) -> bool {
    origin.is_none() || !allowed_origins.iter().any(|o| o.trim() == "*")
}

/// Decodes `%XX` escapes (JWTs need none, but clients may escape anyway).
pub(crate) fn percent_decode(text: &str) -> String {
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
        let mut offered_token = None;
        let offered: Vec<&str> = request
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            // A token is a credential, not a protocol: taken out before
            // negotiation, so it is never chosen, echoed or named in a refusal.
            .filter(|name| match subprotocol_token(name) {
                Some(token) => {
                    offered_token.get_or_insert(token);
                    false
                }
                None => true,
            })
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
        let cookie_name = config
            .auth
            .jwt
            .as_ref()
            .and_then(|jwt| jwt.cookie.as_deref())
            .filter(|_| cookie_safe(origin, &listener.allowed_origins));
        handshake.bearer = bearer(request, offered_token, cookie_name);
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
    fn token_subprotocol_decodes_base64url_or_stays_as_it_is() {
        // "a.b-c_d" in base64url, without padding.
        assert_eq!(
            subprotocol_token("base64url.bearer.authorization.stomp.YS5iLWNfZA").as_deref(),
            Some("a.b-c_d")
        );
        assert_eq!(
            subprotocol_token("base64url.bearer.authorization.stomp.eyJh.eyJz.c2ln").as_deref(),
            Some("eyJh.eyJz.c2ln")
        );
        assert_eq!(subprotocol_token("v12.stomp"), None);
    }

    #[test]
    fn cookie_is_found_by_name_and_honoured_only_without_a_wildcard_origin() {
        let request = Request::builder()
            .header("Cookie", "theme=dark; stomp_token=\"abc.def\"")
            .header("Cookie", "other=1")
            .body(())
            .expect("request");
        assert_eq!(cookie(&request, "stomp_token").as_deref(), Some("abc.def"));
        assert_eq!(cookie(&request, "other").as_deref(), Some("1"));
        assert_eq!(cookie(&request, "stomp"), None);
        let listed = vec!["https://app.example.com".to_owned()];
        assert!(cookie_safe(Some("https://app.example.com"), &listed));
        assert!(cookie_safe(None, &["*".to_owned()]));
        assert!(!cookie_safe(Some("https://any.example"), &["*".to_owned()]));
    }

    #[test]
    fn nothing_offered_allows_everything_and_only_foreign_is_refused() {
        let h = negotiate_subprotocol(&[]).unwrap();
        assert_eq!(h.subprotocol, None);
        assert_eq!(h.allowed_versions.len(), 3);
        assert!(negotiate_subprotocol(&["mqtt", "wamp"]).is_err());
    }
}
