//! The WebSocket upgrade: path check, `Sec-WebSocket-Protocol` negotiation and
//! tungstenite's limits. Runs in the connection's own task, under a timeout.

use crate::config::Config;
use stomp_protocol::Version;
use tokio::net::TcpStream;
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
        .read_buffer_size(4096)
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

/// Performs the upgrade on `stream`.
// The callback's error type is tungstenite's `ErrorResponse`, an HTTP
// response: large, but not ours to box.
#[allow(clippy::result_large_err)]
pub async fn accept(
    stream: TcpStream,
    config: &Config,
) -> Result<(WebSocketStream<TcpStream>, Handshake), tokio_tungstenite::tungstenite::Error> {
    let mut settled: Option<Handshake> = None;
    let path = config.listener.path.as_str();
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
        let handshake = negotiate_subprotocol(&offered)
            .map_err(|reason| refuse(StatusCode::BAD_REQUEST, reason))?;
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
