//! What the broker counts for operators, and how it is counted: plain
//! atomics, added to on the hot path without locks. Per-connection counts
//! live in each connection's own [`connections::ConnectionEntry`] (one
//! writer each); router counts are written by the router task alone; the
//! few shared counters here change once per connection or per failure, not
//! per frame. The admin listener's `scrape` turns them into the
//! OpenMetrics text format.

pub mod classes;
pub mod connections;
pub mod log_budget;
pub mod process;

use crate::config::Config;
use crate::model::destination::DestinationLimits;
use classes::DestinationClasses;
use connections::Connections;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Why connections closed: the `reason` label of
/// `stomphub_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// DISCONNECT.
    Disconnect,
    /// The client sent a WebSocket Close.
    ClientClosed,
    /// The TCP connection ended or failed.
    ClientGone,
    /// Over its outbound budget.
    SlowConsumer,
    /// Silent past its heart-beat interval.
    HeartbeatTimeout,
    /// CONNECT refused: credentials.
    AuthFailed,
    /// Broke the protocol.
    ProtocolError,
    /// Broke a policy (a limit, a rate, a timeout).
    PolicyViolation,
    /// Sent something too big.
    TooBig,
    /// The broker is shutting down.
    Shutdown,
    /// An operator closed it through the admin API.
    Admin,
    /// Anything else the broker ended (a router-detected error).
    ServerError,
}

impl CloseKind {
    /// Every kind, in label order.
    pub const ALL: [CloseKind; 12] = [
        CloseKind::Disconnect,
        CloseKind::ClientClosed,
        CloseKind::ClientGone,
        CloseKind::SlowConsumer,
        CloseKind::HeartbeatTimeout,
        CloseKind::AuthFailed,
        CloseKind::ProtocolError,
        CloseKind::PolicyViolation,
        CloseKind::TooBig,
        CloseKind::Shutdown,
        CloseKind::Admin,
        CloseKind::ServerError,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            CloseKind::Disconnect => "disconnect",
            CloseKind::ClientClosed => "client_closed",
            CloseKind::ClientGone => "client_gone",
            CloseKind::SlowConsumer => "slow_consumer",
            CloseKind::HeartbeatTimeout => "heartbeat_timeout",
            CloseKind::AuthFailed => "auth_failed",
            CloseKind::ProtocolError => "protocol_error",
            CloseKind::PolicyViolation => "policy_violation",
            CloseKind::TooBig => "too_big",
            CloseKind::Shutdown => "shutdown",
            CloseKind::Admin => "admin",
            CloseKind::ServerError => "server_error",
        }
    }
}

/// How a failed login authenticated: the `method` label of
/// `stomphub_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `login` and `passcode`.
    Password,
    /// A JWT (as passcode or from the handshake).
    Token,
    /// No credentials, where anonymous access is not allowed.
    Anonymous,
}

impl AuthMethod {
    /// Every method, in label order.
    pub const ALL: [AuthMethod; 3] = [
        AuthMethod::Password,
        AuthMethod::Token,
        AuthMethod::Anonymous,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            AuthMethod::Password => "password",
            AuthMethod::Token => "token",
            AuthMethod::Anonymous => "anonymous",
        }
    }
}

/// Counts the router task keeps (it alone writes them).
#[derive(Debug)]
pub struct RouterCounts {
    /// Messages the router delivered (queues, client-ack topics, durables), by class.
    pub delivered: Box<[AtomicU64]>,
    /// Deliveries of messages delivered before (NACK, a consumer gone).
    pub redelivered: Box<[AtomicU64]>,
    /// Messages moved to a dead-letter queue, by the class of the queue they left.
    pub dead_lettered: Box<[AtomicU64]>,
    /// Queue messages dropped because they expired, by class.
    pub expired: Box<[AtomicU64]>,
    /// Queue messages dropped by a full `drop-oldest` queue, by class.
    pub overflow: Box<[AtomicU64]>,
    /// Queue messages refused by a full `reject` queue, by class.
    pub rejected: Box<[AtomicU64]>,
}

fn per_class(classes: usize) -> Box<[AtomicU64]> {
    (0..classes).map(|_| AtomicU64::new(0)).collect()
}

/// Everything counted, shared through the broker context.
#[derive(Debug)]
pub struct Metrics {
    /// The destination classes (metric labels).
    pub classes: DestinationClasses,
    /// Open connections and what closed ones counted.
    pub connections: Arc<Connections>,
    /// Connections accepted, by transport (`ws`, `tcp`).
    pub opened: [AtomicU64; 2],
    /// Connections closed, by [`CloseKind::ALL`] index.
    pub closed: [AtomicU64; CloseKind::ALL.len()],
    /// Failed logins, by [`AuthMethod::ALL`] index.
    pub auth_failures: [AtomicU64; AuthMethod::ALL.len()],
    /// The router's counts.
    pub router: RouterCounts,
    /// MESSAGEs that came from the cluster engine (other nodes' topic
    /// messages, live-feed messages pushed to auto-ack subscribers; queue
    /// and durable subscription deliveries), by class: no local
    /// publisher's connection counts them.
    pub engine_delivered: Box<[AtomicU64]>,
    /// When the broker started.
    pub started: Instant,
    /// Failed-login log lines (see [`Metrics::may_log_failure`]).
    login_log: log_budget::LogBudget,
    /// Permission-denial log lines (see [`Metrics::may_log_denial`]).
    denial_log: log_budget::LogBudget,
    /// Connect and disconnect log lines (see [`Metrics::may_log_connection`]).
    connection_log: log_budget::LogBudget,
}

/// Failed logins logged per second at most; the rest are only counted, so
/// that a flood of bad logins cannot fill the disk.
pub const MAX_LOGGED_FAILURES_PER_SECOND: u64 = 10;

/// Permission denials logged per second at most (as failed logins).
pub const MAX_LOGGED_DENIALS_PER_SECOND: u64 = 10;

/// Connects and disconnects logged per second at most, together.
pub const MAX_LOGGED_CONNECTIONS_PER_SECOND: u64 = 100;

/// The transport label's index.
pub fn transport_index(transport: &str) -> usize {
    usize::from(transport == "tcp")
}

impl Metrics {
    /// Counters for a broker with this configuration.
    pub fn new(config: &Config, limits: &DestinationLimits) -> Metrics {
        let classes = DestinationClasses::new(config, limits);
        let n = classes.len();
        Metrics {
            connections: Arc::new(Connections::new(n)),
            classes,
            opened: Default::default(),
            closed: Default::default(),
            auth_failures: Default::default(),
            router: RouterCounts {
                delivered: per_class(n),
                redelivered: per_class(n),
                dead_lettered: per_class(n),
                expired: per_class(n),
                overflow: per_class(n),
                rejected: per_class(n),
            },
            engine_delivered: per_class(n),
            started: Instant::now(),
            login_log: log_budget::LogBudget::new(MAX_LOGGED_FAILURES_PER_SECOND),
            denial_log: log_budget::LogBudget::new(MAX_LOGGED_DENIALS_PER_SECOND),
            connection_log: log_budget::LogBudget::new(MAX_LOGGED_CONNECTIONS_PER_SECOND),
        }
    }

    /// Counts a closed connection.
    pub fn closed(&self, kind: CloseKind) {
        let index = CloseKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.closed[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed login.
    pub fn auth_failed(&self, method: AuthMethod) {
        let index = AuthMethod::ALL
            .iter()
            .position(|m| *m == method)
            .unwrap_or(0);
        self.auth_failures[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a failed login may be logged now: at most
    /// [`MAX_LOGGED_FAILURES_PER_SECOND`] a second (all are counted).
    pub fn may_log_failure(&self) -> bool {
        self.login_log.allow()
    }

    /// Whether a permission denial may be logged now: at most
    /// [`MAX_LOGGED_DENIALS_PER_SECOND`] a second.
    pub fn may_log_denial(&self) -> bool {
        self.denial_log.allow()
    }

    /// Whether a connect or disconnect may be logged now: at most
    /// [`MAX_LOGGED_CONNECTIONS_PER_SECOND`] a second.
    pub fn may_log_connection(&self) -> bool {
        self.connection_log.allow()
    }

    /// Adds `n` to the router counter `counter` for `destination`'s class
    /// (router task only).
    pub fn router_add(
        &self,
        counter: fn(&RouterCounts) -> &[AtomicU64],
        destination: &str,
        n: u64,
    ) {
        let class = self.classes.of(destination);
        if let Some(slot) = counter(&self.router).get(class) {
            slot.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts `n` MESSAGEs from the cluster engine to `destination` pushed
    /// to auto-ack subscribers.
    pub fn engine_delivered_add(&self, destination: &str, n: u64) {
        if n == 0 {
            return;
        }
        let class = self.classes.of(destination);
        if let Some(slot) = self.engine_delivered.get(class) {
            slot.fetch_add(n, Ordering::Relaxed);
        }
    }
}
