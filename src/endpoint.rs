//! What one `[[listeners]]` entry serves: its configuration (kind, WebSocket
//! or TCP; path and Origin rules) and its TLS acceptor. It sits below both the accept loop
//! (`listener`) and the connection task (`connection`), which share it, so
//! neither has to import the other for it.

use crate::config::EndpointConfig;
use tokio_rustls::TlsAcceptor;

/// One `[[listeners]]` entry as its connections see it: where they came in,
/// and its TLS acceptor (`wss://`) when it has one.
#[derive(Clone)]
pub struct Endpoint {
    /// Its configuration (kind; path and Origin rules for WebSocket).
    pub config: EndpointConfig,
    /// TLS first (`wss://`, or STOMP over TLS on a `tcp` listener).
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}
