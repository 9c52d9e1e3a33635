//! stomphub: a STOMP 1.0/1.1/1.2 broker over WebSocket and plain TCP.
//!
//! Layout: [`listener`] accepts, [`websocket`] upgrades, [`connection`] drives
//! one WebSocket or TCP connection, [`session`] is the STOMP state machine and fans topic
//! messages out itself through the shared index in [`fanout`], [`router`]
//! owns queues, acks, durable subscriptions and the index's changes; both
//! push into each connection's [`outbound`] queue. `docs/architecture.md` draws the tasks and channels.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod connection_rate;
pub mod context;
pub mod endpoint;
pub mod fanout;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod outbound;
pub mod proxy_protocol;
pub mod publish_rate;
pub mod queue;
pub mod reload;
pub mod router;
pub mod session;
pub mod shutdown;
pub mod socket_options;
pub mod store;
pub mod tls;
pub mod token_bucket;
pub mod websocket;

pub use broker::Broker;
pub use config::Config;
