//! What every connection shares: the configuration, the way to the router,
//! the topic index sessions publish through, message ids, authentication,
//! and the per-address connection counts. Built by
//! [`crate::broker`], read by the listener, connections and sessions.

use crate::auth::Authenticator;
use crate::config::Config;
use crate::connection_rate::ConnectionRate;
use crate::fanout::TopicIndex;
use crate::model::destination::DestinationLimits;
use crate::model::message::MessageIds;
use crate::publish_rate::PublishRules;
use crate::queue::{QueueEngine, QueueMemory};
use crate::router::RouterHandle;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What every connection shares. Read-only but for the id counters, the
/// topic index (its own lock) and the per-address tables (theirs).
pub struct BrokerContext {
    /// The configuration in force.
    pub config: Config,
    /// The way to the router.
    pub router: RouterHandle,
    /// Topic subscriptions, matched by publishing sessions themselves
    /// (written by the router only).
    pub topics: Arc<TopicIndex>,
    /// `message-id`s for every SEND, unique without asking the router.
    pub message_ids: MessageIds,
    /// Destination limits, from `config.limits`.
    pub destination_limits: DestinationLimits,
    /// Memory of all queues; sessions wait on it before queue SENDs.
    pub queue_memory: Arc<QueueMemory>,
    /// Checks credentials on CONNECT; swapped whole by a reload.
    pub auth: ArcSwap<Authenticator>,
    /// Open connections per client address. Entries go at zero, so the map
    /// holds at most `max_connections` keys. Short critical sections only.
    connections_per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// New connections per second per address (its own short lock);
    /// swapped whole by a reload (the new limits start with full buckets).
    connection_rate: ArcSwap<ConnectionRate>,
    /// `listener.max_connections_per_ip`; a reload stores a new value.
    max_connections_per_ip: AtomicUsize,
    /// `[[rate_limits.publish]]`, compiled; each session takes its
    /// buckets. Swapped whole by a reload.
    pub publish_rules: ArcSwap<PublishRules>,
    /// Counts configuration reloads. The sender is the reload's; every
    /// connection holds a receiver and checks its session's permissions
    /// again on a change. Never closed while the context lives.
    pub reloads: tokio::sync::watch::Sender<u64>,
    /// What the broker counts for operators (`/metrics`, the admin API).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where queue operations go instead of the router: `None` with
    /// `engine = "local"` (the router has the queues), JetStream with
    /// `"nats"`.
    pub queue_engine: Option<Arc<dyn QueueEngine>>,
    next_session: AtomicU64,
}

impl std::fmt::Debug for BrokerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerContext")
            .field("auth", &*self.auth.load())
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
    /// The context of a broker with this configuration and these parts.
    pub fn new(
        config: Config,
        router: RouterHandle,
        topics: Arc<TopicIndex>,
        destination_limits: DestinationLimits,
        queue_memory: Arc<QueueMemory>,
        auth: Authenticator,
        publish_rules: Arc<PublishRules>,
    ) -> BrokerContext {
        BrokerContext {
            connection_rate: ArcSwap::from_pointee(ConnectionRate::new(
                config.rate_limits.connections_per_second_per_ip,
                config.rate_limits.connection_burst_per_ip,
            )),
            max_connections_per_ip: AtomicUsize::new(config.listener.max_connections_per_ip),
            connections_per_ip: Mutex::new(HashMap::new()),
            metrics: Arc::new(crate::metrics::Metrics::new(&config, &destination_limits)),
            next_session: AtomicU64::new(0),
            queue_engine: None,
            config,
            router,
            topics,
            message_ids: MessageIds::default(),
            destination_limits,
            queue_memory,
            auth: ArcSwap::from_pointee(auth),
            publish_rules: ArcSwap::new(publish_rules),
            reloads: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Shares `metrics` (the router's too) instead of its own.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> BrokerContext {
        self.metrics = metrics;
        self
    }

    /// Hands queue operations to `engine` instead of the router.
    pub fn with_queue_engine(mut self, engine: Option<Arc<dyn QueueEngine>>) -> BrokerContext {
        self.queue_engine = engine;
        self
    }

    /// Applies reloaded per-address limits: new connections per second
    /// and burst (`rate_limits`), open connections (`listener`). Open
    /// connections over a lowered limit stay; new ones are refused.
    pub fn set_address_limits(&self, per_second: f64, burst: f64, max_per_ip: usize) {
        self.connection_rate
            .store(Arc::new(ConnectionRate::new(per_second, burst)));
        self.max_connections_per_ip
            .store(max_per_ip, Ordering::Relaxed);
    }

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
        self.connection_rate.load().admit(ip)?;
        let mut counts = self.lock_connections_per_ip();
        let count = counts.entry(ip).or_insert(0);
        let max = self.max_connections_per_ip.load(Ordering::Relaxed);
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
