//! The accept loop: take a permit, accept, spawn. It never waits on a peer;
//! handshakes run in the spawned task. Accept errors (EMFILE, ...) back off.

use crate::connection;
use crate::context::BrokerContext;
use crate::shutdown::Shutdown;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::warn;

// Re-exported so that `listener::Endpoint` keeps working for the broker,
// which builds one per `[[listeners]]` entry.
pub use crate::endpoint::Endpoint;

/// Accepts on one listener until shutdown. `permits`, shared by all
/// listeners, bounds the connections served at once. Each connection takes
/// the endpoint as it is when accepted: a reload (Origin list, TLS
/// certificate) applies to new connections only.
pub async fn accept_loop(
    listener: TcpListener,
    endpoint: Arc<ArcSwap<Endpoint>>,
    context: Arc<BrokerContext>,
    permits: Arc<Semaphore>,
    mut shutdown: Shutdown,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shutdown.wait() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let context = context.clone();
                let endpoint = endpoint.load_full();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    connection::serve(stream, peer, context, endpoint, shutdown).await;
                    drop(permit);
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: spinning would not help.
                warn!(%error, ?backoff, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
