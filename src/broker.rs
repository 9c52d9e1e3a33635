//! Assembles a running broker: the router task, the listeners (one accept
//! loop per `[[listeners]]` entry, one connection budget for all), shared
//! context, and a bounded graceful shutdown.

use crate::auth::Authenticator;
use crate::config::Config;
use crate::connection_rate::ConnectionRate;
use crate::listener::{self, Endpoint};
use crate::queue::{QueueMemory, QueuePolicy};
use crate::router::destination::DestinationLimits;
use crate::router::{spawn_router, RouterHandle, RouterSettings};
use crate::session::rate_limit::PublishRules;
use crate::shutdown::{shutdown_pair, ShutdownTrigger};
use crate::store::writer::spawn_writer;
use crate::store::{NoStore, SledStore, Store};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{info, warn};

fn invalid(error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string())
}

/// What every connection shares. Read-only but for the id counter.
pub struct BrokerContext {
    /// The configuration in force.
    pub config: Config,
    /// The way to the router.
    pub router: RouterHandle,
    /// Destination limits, from `config.limits`.
    pub destination_limits: DestinationLimits,
    /// Memory of all queues; sessions wait on it before queue SENDs.
    pub queue_memory: Arc<QueueMemory>,
    /// Checks credentials on CONNECT.
    pub auth: Authenticator,
    /// Open connections per client address. Entries go at zero, so the map
    /// holds at most `max_connections` keys. Short critical sections only.
    connections_per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// New connections per second per address (its own short lock).
    connection_rate: ConnectionRate,
    /// `[[rate_limits.publish]]`, compiled; each session takes its buckets.
    pub publish_rules: Arc<PublishRules>,
    next_session: AtomicU64,
}

impl std::fmt::Debug for BrokerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerContext")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// One open connection counted against its address; uncounted on drop.
#[derive(Debug)]
pub struct IpSlot {
    context: Arc<BrokerContext>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.context.lock_connections_per_ip();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl BrokerContext {
    fn lock_connections_per_ip(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // A poisoned lock only means a panic elsewhere; the counts are plain.
        self.connections_per_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `ip`; `Err` with the refusal's text past
    /// `rate_limits.connections_per_second_per_ip` or
    /// `listener.max_connections_per_ip`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<IpSlot, String> {
        self.connection_rate.admit(ip)?;
        let mut counts = self.lock_connections_per_ip();
        let count = counts.entry(ip).or_insert(0);
        let max = self.config.listener.max_connections_per_ip;
        if *count >= max {
            return Err(format!(
                "too many connections from {ip}: max_connections_per_ip is {max}"
            ));
        }
        *count += 1;
        Ok(IpSlot {
            context: self.clone(),
            ip,
        })
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A running broker.
pub struct Broker {
    /// Each listener's bound address and URL, in `[[listeners]]` order.
    bound: Vec<(SocketAddr, String)>,
    trigger: ShutdownTrigger,
    accept_tasks: Vec<JoinHandle<()>>,
    /// One permit per connection: all permits back means all sessions are gone.
    permits: Arc<Semaphore>,
    config: Config,
}

impl Broker {
    /// Binds the listener and starts serving.
    pub async fn start(config: Config) -> std::io::Result<Broker> {
        let store: Box<dyn Store> = if config.storage.enabled {
            let max_record = config.limits.frame_limits().max_frame_bytes() + 64;
            Box::new(SledStore::open(&config.storage.data_dir, max_record).map_err(invalid)?)
        } else {
            Box::new(NoStore)
        };
        Broker::start_with_store(config, store).await
    }

    /// Starts with a given store (a test's fault-injecting one, say).
    pub async fn start_with_store(
        config: Config,
        mut store: Box<dyn Store>,
    ) -> std::io::Result<Broker> {
        // A store that cannot be read completely stops the start: never a
        // silently shortened queue.
        if config.listeners.is_empty() {
            return Err(invalid("listeners: at least one [[listeners]] is needed"));
        }
        let recovered = store.recover().map_err(invalid)?;
        let writer = spawn_writer(store).map_err(invalid)?;
        // Every listener is bound (and its certificate read) before anything
        // is served: a bad one stops the start, naming it.
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for endpoint in &config.listeners {
            let listener = TcpListener::bind(endpoint.address).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("listeners: {}: {e}", endpoint.address))
            })?;
            let local_addr = listener.local_addr()?;
            let tls = endpoint
                .tls
                .as_ref()
                .map(crate::tls::acceptor)
                .transpose()
                .map_err(invalid)?;
            let scheme = if tls.is_some() { "wss" } else { "ws" };
            let url = format!("{scheme}://{local_addr}{}", endpoint.path);
            let endpoint = Arc::new(Endpoint {
                config: endpoint.clone(),
                tls,
            });
            listeners.push((listener, endpoint, (local_addr, url)));
        }
        let destination_limits = DestinationLimits {
            max_words: config.limits.max_destination_words,
            max_multi_word_wildcards: config.limits.max_multi_word_wildcards,
        };
        let queue_policy =
            QueuePolicy::new(&config.queues, &destination_limits).map_err(invalid)?;
        let queue_memory = Arc::new(QueueMemory::new(config.limits.max_queued_message_bytes));
        let auth = Authenticator::new(&config.auth, destination_limits).map_err(invalid)?;
        let (router, _router_task) = spawn_router(RouterSettings {
            queue_depth: config.router.queue_depth,
            max_queued_bytes: config.router.max_queued_bytes,
            caps: crate::router::StateCaps::from_limits(&config.limits),
            queue_policy,
            topic_prefetch: config.queues.prefetch,
            max_unacked_per_connection: config.limits.max_unacked_per_connection,
            queue_memory: queue_memory.clone(),
            slow_consumers: config.slow_consumers.clone(),
            destination_limits,
            store: writer,
            store_enabled: config.storage.enabled,
            recovered,
            persistent_patterns: config.storage.persistent.clone(),
            max_disk_bytes: config.storage.max_disk_bytes,
        })
        .map_err(invalid)?;
        let publish_rules = Arc::new(
            PublishRules::new(&config.rate_limits.publish, &destination_limits).map_err(invalid)?,
        );
        let context = Arc::new(BrokerContext {
            connection_rate: ConnectionRate::new(
                config.rate_limits.connections_per_second_per_ip,
                config.rate_limits.connection_burst_per_ip,
            ),
            publish_rules,
            destination_limits,
            router,
            queue_memory,
            auth,
            connections_per_ip: Mutex::new(HashMap::new()),
            config: config.clone(),
            next_session: AtomicU64::new(0),
        });
        let permits = Arc::new(Semaphore::new(config.listener.max_connections));
        let (trigger, shutdown) = shutdown_pair();
        let mut accept_tasks = Vec::with_capacity(listeners.len());
        let mut bound = Vec::with_capacity(listeners.len());
        for (listener, endpoint, (local_addr, url)) in listeners {
            info!(address = %local_addr, %url, "listening");
            accept_tasks.push(tokio::spawn(listener::accept_loop(
                listener,
                endpoint,
                context.clone(),
                permits.clone(),
                shutdown.clone(),
            )));
            bound.push((local_addr, url));
        }
        Ok(Broker {
            bound,
            trigger,
            accept_tasks,
            permits,
            config,
        })
    }

    /// The first listener's bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs()[0]
    }

    /// Every listener's bound address, in `[[listeners]]` order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound.iter().map(|(address, _)| *address).collect()
    }

    /// The URL clients connect to on the first listener (`wss://` with TLS).
    pub fn url(&self) -> String {
        self.urls().swap_remove(0)
    }

    /// Every listener's URL, in `[[listeners]]` order.
    pub fn urls(&self) -> Vec<String> {
        self.bound.iter().map(|(_, url)| url.clone()).collect()
    }

    /// Stops accepting, tells every session (ERROR, close 1001), and waits
    /// for them up to the configured grace.
    pub async fn shutdown(self) {
        self.trigger.fire();
        for task in self.accept_tasks {
            let _ = task.await;
        }
        let all = u32::try_from(self.config.listener.max_connections).unwrap_or(u32::MAX);
        let grace = self.config.shutdown.grace;
        match tokio::time::timeout(grace, self.permits.acquire_many(all)).await {
            Ok(_) => info!("all sessions closed"),
            Err(_) => warn!(
                ?grace,
                "sessions still open after the shutdown grace; leaving them"
            ),
        }
    }
}
