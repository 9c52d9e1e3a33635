//! The cluster engine: several brokers as front-ends of one NATS system.
//!
//! With `[cluster] engine = "nats"` the broker connects to NATS at start
//! ([`connect`]) and plugs topics into the index's export seam
//! ([`topics`]: the `TopicExport` half for the index, the inbound half
//! started once the index exists), and queues on JetStream ([`queues`]:
//! the session's `queue::QueueEngine`, each subscription pulling in
//! `consumer`; durable topic subscriptions too, on their own stream:
//! `durables`), and live-feed state on JetStream ([`feeds`]: one stream,
//! read in order by every node into its mirror). A COMMIT's queue SENDs
//! are one atomic batch ([`transactions`]); replies to reply queues cross
//! nodes on core subjects ([`replies`]). The router and sessions do not know NATS exists. Topic names become subjects in [`subject`]; the payload
//! layout is `wire`. `/readyz` asks [`ready`].

mod auto_delete;
mod confirm;
mod consumer;
mod counts;
mod dead_letters;
mod definitions;
mod durable_consumers;
mod durable_serving;
mod durable_subjects;
mod durables;
mod feeds;
mod held;
mod holders;
mod holds;
mod interest;
mod outgoing;
mod publish;
mod pull_queue;
mod pulls;
mod queues;
mod rebound;
mod replies;
mod stats;
mod streams;
mod subject;
mod subscription;
mod topics;
mod transactions;
mod wire;

pub use feeds::{feed_stream, FeedStream};
pub use queues::{queues, NatsQueues};
pub use replies::Replies;
pub use topics::{topics, Inbound, NatsTopics};

use crate::config::ClusterConfig;
use async_nats::connection::State;
use tracing::{info, warn};

/// Connects to the engine within `connect_timeout`: a broker that cannot
/// reach it at start does not start (the error says why). Later outages
/// are retried for ever (`/readyz` says not ready meanwhile); subscriptions
/// are made again on each reconnect by the client.
///
/// A node makes three connections: `Role::Topics` (named `stomphub <node>`),
/// `Role::Queues` (`stomphub <node> queues`, JetStream's requests and
/// pulls) and `Role::Feeds` (`stomphub <node> feeds`, the feed stream's
/// reader), so that queue traffic does not wait behind topic traffic and the
/// topic connection holds exactly the subscriptions of the topics in use
/// (plus, once a feed SEND has waited for a PubAck, the client's one reply
/// inbox: confirmed feed messages are published in line with topic ones).
pub async fn connect(config: &ClusterConfig, role: Role) -> Result<async_nats::Client, String> {
    let name = node_name(config);
    let connection = match role {
        Role::Topics => format!("stomphub {name}"),
        Role::Queues => format!("stomphub {name} queues"),
        Role::Feeds => format!("stomphub {name} feeds"),
    };
    let mut options = async_nats::ConnectOptions::new().name(connection);
    if role == Role::Topics {
        // A node never hears its own publications back: its local
        // subscribers had them from the publisher already.
        options = options.no_echo();
    }
    let mut options = options
        .connection_timeout(config.connect_timeout)
        .max_reconnects(None)
        .event_callback(move |event| async move {
            match event {
                async_nats::Event::Connected => info!("cluster engine connected"),
                async_nats::Event::Disconnected => warn!("cluster engine disconnected"),
                // A reader 65 536 messages behind (its router waiting):
                // the client drops that subscription's messages.
                async_nats::Event::SlowConsumer(subscription) => warn!(
                    subscription,
                    "cluster engine: a topic subscription fell behind, messages from other nodes dropped"
                ),
                other => info!(event = %other, "cluster engine"),
            }
        });
    if let Some(path) = &config.credentials_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| format!("cluster.credentials_file: {}: {e}", path.display()))?;
    }
    if let Some(tls) = &config.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    let servers = config.servers.join(",");
    let connecting = options.connect(config.servers.as_slice());
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Ok(Ok(client)) => {
            info!(node = %name, %servers, "cluster engine: nats");
            Ok(client)
        }
        Ok(Err(error)) => Err(format!(
            "cluster.servers: cannot connect to {servers}: {error}"
        )),
        Err(_) => Err(format!(
            "cluster.servers: no answer from {servers} within connect_timeout ({:?})",
            config.connect_timeout
        )),
    }
}

/// Warns when the server's `max_payload` is below the largest message a
/// client may send (`largest`: body and headers, plus our layout's
/// overhead): such a message would reach only this node's subscribers.
pub fn check_max_payload(client: &async_nats::Client, largest: usize) {
    let max_payload = client.server_info().max_payload;
    if max_payload < largest {
        warn!(
            max_payload,
            largest,
            "cluster engine: the NATS server's max_payload is below the largest message clients may \
             send (limits.max_body_bytes + max_header_bytes); larger messages will not reach other \
             nodes or be stored: raise max_payload in the NATS servers' config (e.g. 8MB)"
        );
    }
}

/// What a connection to the engine carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Topic messages between nodes (core subjects).
    Topics,
    /// Queues (JetStream).
    Queues,
    /// The reader of the live-feed stream (JetStream), so that its pulls
    /// wait behind neither topic nor queue traffic.
    Feeds,
}

/// Whether the engine is reachable now (for `/readyz`).
pub fn ready(client: &async_nats::Client) -> Result<(), String> {
    match client.connection_state() {
        State::Connected => Ok(()),
        State::Pending => Err("cluster engine: connecting".into()),
        State::Disconnected => Err("cluster engine: unreachable".into()),
    }
}

/// `node_name`, or the host name when it is empty.
fn node_name(config: &ClusterConfig) -> String {
    if !config.node_name.is_empty() {
        return config.node_name.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "stomphub".into())
}
