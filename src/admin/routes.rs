//! What each admin path answers. `/healthz` and `/readyz` are open (load
//! balancers and orchestrators probe them without credentials); everything
//! else passes [`access::check`] first.

use super::access::{self, Refusal};
use super::response::{reply, text, Reply};
use super::{api, AdminState};
use hyper::body::Incoming;
use hyper::header::WWW_AUTHENTICATE;
use hyper::{Method, Request, StatusCode};
use std::net::SocketAddr;

/// The dashboard page, served from the binary (no CDN, no files).
const DASHBOARD: &str = include_str!("dashboard.html");

/// Answers one request.
pub async fn handle(state: &AdminState, peer: SocketAddr, request: Request<Incoming>) -> Reply {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => {
            return match state.ready() {
                Ok(()) => text(StatusCode::OK, "ready"),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
            }
        }
        _ => {}
    }
    match access::check(&state.context, peer, request.headers()).await {
        Ok(()) => {}
        Err(Refusal::Unauthorized(why)) => {
            let mut response = text(StatusCode::UNAUTHORIZED, why);
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"stomphub admin\""),
            );
            return response;
        }
        Err(Refusal::Forbidden) => {
            return text(StatusCode::FORBIDDEN, "the admin role or claim is required")
        }
    }
    let parameters = parse_query(&query);
    match (&method, path.as_str()) {
        (&Method::GET, "/") => reply(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD),
        (&Method::GET, "/metrics") => api::metrics(state).await,
        (&Method::GET, "/api/overview") => api::overview(state).await,
        (&Method::GET, "/api/connections") => api::connections(state).await,
        (&Method::GET, "/api/queues") => api::queues(state, false).await,
        (&Method::GET, "/api/durables") => api::queues(state, true).await,
        (&Method::POST, "/api/connections/close") => api::close_connection(state, &parameters),
        (&Method::POST, "/api/queues/purge") => {
            api::queue_action(state, &parameters, api::QueueAction::Purge).await
        }
        (&Method::POST, "/api/queues/delete") => {
            api::queue_action(state, &parameters, api::QueueAction::Delete).await
        }
        (&Method::POST, "/api/queues/move-back") => {
            api::queue_action(state, &parameters, api::QueueAction::MoveBack).await
        }
        (&Method::POST, "/api/reload") => api::reload(state).await,
        (_, "/" | "/metrics" | "/api/overview" | "/api/connections" | "/api/queues")
        | (_, "/api/durables" | "/api/connections/close" | "/api/queues/purge")
        | (_, "/api/queues/delete" | "/api/queues/move-back" | "/api/reload") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// `a=1&b=x%2Fy` → [("a", "1"), ("b", "x/y")]; `+` is a space.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|b| char::from(*b).to_digit(16))
                .and_then(|d| u8::try_from(d).ok())
        };
        match byte {
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 3;
                    continue;
                }
                _ => out.push(byte),
            },
            b'+' => out.push(b' '),
            _ => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_split_and_percent_decoded() {
        assert_eq!(
            parse_query("name=%2Fqueue%2Fa.b&reason=too+slow&x&bad=%zz%4"),
            vec![
                ("name".into(), "/queue/a.b".into()),
                ("reason".into(), "too slow".into()),
                ("x".into(), String::new()),
                ("bad".into(), "%zz%4".into()),
            ]
        );
    }
}
