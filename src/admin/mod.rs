//! The admin listener: an HTTP/1.1 server (hyper) on its own address for
//! operators: `/healthz`, `/readyz`, `/metrics`, `/api/...` and the
//! dashboard at `/`. It shares nothing with the STOMP listeners but the
//! broker context it reads, and it is bounded like them: a few requests at
//! once, each under a time limit.
//!
//! [`access`] decides who may use it, [`routes`] what each path answers,
//! [`api`] the JSON documents and actions, [`response`] their shape,
//! [`scrape`] the `/metrics` text.

pub mod access;
pub mod api;
pub mod rates;
pub mod response;
pub mod routes;
pub mod scrape;

use crate::context::BrokerContext;
use crate::shutdown::Shutdown;
use crate::store::writer::StoreState;
use futures_util::future::BoxFuture;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::debug;

/// Requests served at once; more wait in the accept backlog.
const MAX_CONNECTIONS: usize = 64;
/// A request's headers must arrive within this, and a whole exchange
/// (a scrape of 10 000 queues included) end within [`EXCHANGE_TIME`].
const HEADER_TIME: Duration = Duration::from_secs(5);
const EXCHANGE_TIME: Duration = Duration::from_secs(30);

/// Reloads the configuration file: `Ok` says what changed, `Err` why
/// nothing did (installed by the broker, which owns reloading).
pub type ReloadFn = dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync;

/// Whether the cluster engine is reachable: `Err` says why not.
pub type EngineReadyFn = dyn Fn() -> Result<(), String> + Send + Sync;

/// What the admin listener reads.
pub struct AdminState {
    /// The running broker's shared context.
    pub context: Arc<BrokerContext>,
    /// The store's readings (none with storage off).
    pub store: Option<Arc<StoreState>>,
    /// Every listener is bound and serving (`/readyz`).
    pub listening: AtomicBool,
    /// `POST /api/reload`.
    pub reload: Box<ReloadFn>,
    /// The cluster engine's reachability (none with the local engine).
    pub engine: Option<Box<EngineReadyFn>>,
    /// Published and delivered totals, sampled every second for rates.
    pub rates: rates::Rates,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("listening", &self.listening)
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// Whether the broker is ready: listeners bound, the store working,
    /// the cluster engine (if any) reachable.
    pub fn ready(&self) -> Result<(), String> {
        if !self.listening.load(Ordering::Relaxed) {
            return Err("listeners not bound yet".into());
        }
        if let Some(error) = self.store.as_ref().and_then(|store| store.failing()) {
            return Err(format!("store failing: {error}"));
        }
        if let Some(engine) = &self.engine {
            engine()?;
        }
        Ok(())
    }
}

/// Serves admin requests on `listener` until shutdown.
pub fn spawn(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: Shutdown,
) -> JoinHandle<()> {
    // The rates' sampler lives as long as the admin listener.
    let sampled = state.clone();
    let mut stop_sampling = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop_sampling.wait() => return,
                _ = tick.tick() => {
                    let (published, delivered) = api::totals(&sampled);
                    sampled.rates.record(std::time::Instant::now(), published, delivered);
                }
            }
        }
    });
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.wait() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors, say: back off instead of spinning.
                        debug!(%error, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _permit = permit;
                serve(stream, peer, state).await;
            });
        }
    })
}

async fn serve(stream: tokio::net::TcpStream, peer: SocketAddr, state: Arc<AdminState>) {
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(routes::handle(&state, peer, request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIME)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(EXCHANGE_TIME, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => debug!(%error, %peer, "admin connection failed"),
        Err(_) => debug!(%peer, "admin connection timed out"),
    }
}
