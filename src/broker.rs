//! Assembles a running broker: the router task, the listeners (one accept
//! loop per `[[listeners]]` entry, one connection budget for all), shared
//! context, and a bounded graceful shutdown.

use crate::auth::Authenticator;
use crate::cluster::Role;
use crate::config::{Config, Engine};
use crate::context::BrokerContext;
use crate::fanout::{Feeds, LocalOnly, TopicExport, TopicIndex};
use crate::listener::{self, Endpoint};
use crate::metrics::Metrics;
use crate::model::destination::DestinationLimits;
use crate::publish_rate::PublishRules;
use crate::queue::{QueueMemory, QueuePolicy};
pub use crate::reload::Reloader;
use crate::router::{spawn_router, RouterSettings};
use crate::shutdown::{shutdown_pair, ShutdownTrigger};
use crate::store::writer::spawn_writer;
use crate::store::{NoStore, SledStore, Store};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{info, warn};

fn invalid(error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string())
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
    /// The admin listener's address and state, when it runs.
    admin: Option<(SocketAddr, Arc<crate::admin::AdminState>)>,
    /// Applies SIGHUP and `POST /api/reload`.
    reloader: Arc<Reloader>,
    /// The queue engine (`engine = "nats"`), flushed at shutdown.
    queue_engine: Option<Arc<dyn crate::queue::QueueEngine>>,
}

impl Broker {
    /// Checks what a start would build from `config` beyond parsing it
    /// (queue rules, users and JWT keys, publish rules, TLS certificates)
    /// without binding or opening anything. The error names the key.
    pub fn check(config: &Config) -> Result<(), String> {
        if config.listeners.is_empty() {
            return Err("listeners: at least one [[listeners]] is needed".into());
        }
        let destination_limits = DestinationLimits {
            max_words: config.limits.max_destination_words,
            max_multi_word_wildcards: config.limits.max_multi_word_wildcards,
        };
        QueuePolicy::new(&config.queues, &destination_limits)?;
        Authenticator::new(&config.auth, destination_limits)?;
        PublishRules::new(&config.rate_limits.publish, &destination_limits)?;
        for endpoint in &config.listeners {
            if let Some(tls) = &endpoint.tls {
                crate::tls::acceptor(tls)
                    .map_err(|e| format!("listeners {}: {e}", endpoint.address))?;
            }
        }
        Ok(())
    }

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
        let recovered_feeds = store.recover_feeds().map_err(invalid)?;
        let writer = spawn_writer(store).map_err(invalid)?;
        let store_state = config.storage.enabled.then(|| writer.state.clone());
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
            let url = endpoint.url(local_addr);
            let endpoint = Arc::new(Endpoint {
                config: endpoint.clone(),
                tls,
            });
            listeners.push((listener, endpoint, (local_addr, url)));
        }
        let admin_listener = if config.admin.enabled {
            let address = config.admin.address;
            let listener = TcpListener::bind(address).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("admin.address: {address}: {e}"))
            })?;
            Some(listener)
        } else {
            None
        };
        let destination_limits = DestinationLimits {
            max_words: config.limits.max_destination_words,
            max_multi_word_wildcards: config.limits.max_multi_word_wildcards,
        };
        let queue_policy =
            QueuePolicy::new(&config.queues, &destination_limits).map_err(invalid)?;
        let queue_memory = Arc::new(QueueMemory::new(config.limits.max_queued_message_bytes));
        let auth = Authenticator::new(&config.auth, destination_limits).map_err(invalid)?;
        // A single broker exports topic messages nowhere; on a NATS engine
        // they go to the other nodes, and theirs come in (the seam:
        // `fanout::TopicExport`).
        let mut feeds = Feeds::new(&config.topics, &destination_limits).map_err(invalid)?;
        // Before the engine: its queue deliveries are counted in it.
        let metrics = Arc::new(Metrics::new(&config, &destination_limits));
        if config.cluster.engine == Engine::Nats {
            // Their state lives in the engine's feed stream (`cluster::feeds`).
            feeds = feeds.owned_by_engine();
        }
        feeds.restore(recovered_feeds);
        // This node's reply queues' way in from the other nodes, served
        // once the router runs (`cluster::replies`).
        let mut replies = None;
        // Queues too: on a NATS engine they live in JetStream (the seam:
        // `queue::QueueEngine`), otherwise in the router.
        let (export, inbound, engine, queue_engine, feed_stream): (
            Box<dyn TopicExport>,
            _,
            _,
            _,
            _,
        ) = match config.cluster.engine {
            Engine::Local => (Box::new(LocalOnly), None, None, None, None),
            Engine::Nats => {
                let client = crate::cluster::connect(&config.cluster, Role::Topics)
                    .await
                    .map_err(invalid)?;
                // Our layout adds the ids and a length per header.
                let largest = config.limits.max_body_bytes + config.limits.max_header_bytes + 4096;
                crate::cluster::check_max_payload(&client, largest);
                let queue_client = crate::cluster::connect(&config.cluster, Role::Queues)
                    .await
                    .map_err(invalid)?;
                let queues = crate::cluster::queues(
                    queue_client.clone(),
                    &config.cluster,
                    &config.limits,
                    queue_policy.clone(),
                    metrics.clone(),
                )
                .await
                .map_err(invalid)?;
                replies = Some(queues.replies());
                let feed_client = crate::cluster::connect(&config.cluster, Role::Feeds)
                    .await
                    .map_err(invalid)?;
                let feed_stream = crate::cluster::feed_stream(
                    feed_client.clone(),
                    &config.cluster,
                    &config.topics,
                )
                .await
                .map_err(invalid)?;
                let (export, inbound) =
                    crate::cluster::topics(client.clone(), &config.cluster.subject_prefix);
                (
                    Box::new(export),
                    Some(inbound),
                    Some((client, queue_client, feed_client)),
                    Some(queues as Arc<dyn crate::queue::QueueEngine>),
                    Some(feed_stream),
                )
            }
        };
        let (topics, index_writer) =
            TopicIndex::new(export, config.router.match_cache_entries, feeds);
        let (router, _router_task) = spawn_router(RouterSettings {
            channel_capacity: config.router.channel_capacity,
            max_queued_bytes: config.router.max_queued_bytes,
            caps: config.limits.clone(),
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
            index: index_writer,
            metrics: metrics.clone(),
        })
        .map_err(invalid)?;
        if let Some(replies) = replies {
            replies.serve(router.clone()).await.map_err(invalid)?;
        }
        if let Some(inbound) = inbound {
            if let Some((_, queue_client, _)) = &engine {
                inbound.share_counts(queue_client.clone(), router.clone());
            }
            inbound.spawn(topics.clone(), router.clone(), metrics.clone());
        }
        if let Some(feed_stream) = feed_stream {
            // Clients are let in once this node's mirror of the feeds holds
            // what the stream held at start: a late joiner then gets every
            // retained value.
            let last = feed_stream.last_at_start;
            feed_stream.spawn(topics.clone(), router.clone(), metrics.clone());
            if !topics
                .wait_feeds_applied(last, config.cluster.connect_timeout)
                .await
            {
                warn!(
                    last,
                    "cluster: the feed stream was not read up to where it was at start within \
                     connect_timeout; going on (snapshots may miss values until it is)"
                );
            }
        }
        let publish_rules = Arc::new(
            PublishRules::new(&config.rate_limits.publish, &destination_limits).map_err(invalid)?,
        );
        let context = Arc::new(
            BrokerContext::new(
                config.clone(),
                router,
                topics,
                destination_limits,
                queue_memory,
                auth,
                publish_rules,
            )
            .with_metrics(metrics)
            .with_queue_engine(queue_engine),
        );
        let permits = Arc::new(Semaphore::new(config.listener.max_connections));
        let (trigger, shutdown) = shutdown_pair();
        let mut accept_tasks = Vec::with_capacity(listeners.len());
        let mut bound = Vec::with_capacity(listeners.len());
        let mut endpoints = Vec::with_capacity(listeners.len());
        for (listener, endpoint, (local_addr, url)) in listeners {
            info!(address = %local_addr, %url, "listening");
            let endpoint = Arc::new(ArcSwap::new(endpoint));
            endpoints.push(endpoint.clone());
            accept_tasks.push(tokio::spawn(listener::accept_loop(
                listener,
                endpoint,
                context.clone(),
                permits.clone(),
                shutdown.clone(),
            )));
            bound.push((local_addr, url));
        }
        let reloader = Arc::new(Reloader::new(context.clone(), endpoints));
        let admin = match admin_listener {
            Some(listener) => {
                let address = listener.local_addr()?;
                let for_admin = reloader.clone();
                let state = Arc::new(crate::admin::AdminState {
                    context: context.clone(),
                    store: store_state,
                    listening: true.into(),
                    reload: Box::new(move || Box::pin(for_admin.clone().reload_off_runtime())),
                    engine: engine.map(|(client, queue_client, feed_client)| {
                        Box::new(move || {
                            crate::cluster::ready(&client)
                                .and_then(|()| crate::cluster::ready(&queue_client))
                                .and_then(|()| crate::cluster::ready(&feed_client))
                        }) as Box<crate::admin::EngineReadyFn>
                    }),
                    rates: Default::default(),
                });
                info!(%address, "admin listener");
                accept_tasks.push(crate::admin::spawn(
                    listener,
                    state.clone(),
                    shutdown.clone(),
                ));
                Some((address, state))
            }
            None => None,
        };
        Ok(Broker {
            bound,
            trigger,
            accept_tasks,
            permits,
            config,
            admin,
            queue_engine: context.queue_engine.clone(),
            reloader,
        })
    }

    /// The admin listener's bound address, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(address, _)| *address)
    }

    /// Names the configuration file that SIGHUP and `POST /api/reload`
    /// read again.
    pub fn set_config_file(&self, path: std::path::PathBuf) {
        self.reloader.set_file(path);
    }

    /// SIGHUP: reloads the configuration file (see [`Reloader`]); a file
    /// that does not check is logged and the running configuration stays.
    pub async fn reload(&self) -> Result<String, String> {
        self.reloader.clone().reload_off_runtime().await
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
        if let Some((_, state)) = &self.admin {
            // Draining: load balancers stop sending new clients here.
            state
                .listening
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        // Queue deliveries stop before the sessions hear of it, and are
        // handed back together once the node's pulls are over (`flush`).
        if let Some(engine) = &self.queue_engine {
            engine.quiesce();
        }
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
        // The closed sessions handed their unsettled queue deliveries back
        // (a rolling restart delays them little): make sure that reached
        // the engine.
        if let Some(engine) = &self.queue_engine {
            if tokio::time::timeout(grace, engine.flush()).await.is_err() {
                warn!("queue engine: hand-backs not flushed within the shutdown grace");
            }
        }
    }
}
