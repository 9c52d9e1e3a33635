//! One connection's STOMP session: a state machine fed with decoded frames.
//!
//! It knows nothing of the transport. The connection driver
//! ([`crate::connection`]) decodes frames, calls [`Session::handle`], writes
//! what lands in the outbound queue, and turns a [`SessionError`] into an ERROR
//! frame and a close. Each client command has its own file here.

mod ack;
mod confirm;
mod connect;
mod disconnect;
pub mod error;
pub mod heartbeat;
mod reload;
mod reply_to;
mod send;
mod send_engine;
mod subscribe;
mod transaction;
mod transaction_engine;
mod unsubscribe;

use crate::context::BrokerContext;
pub use crate::model::close::CloseReason;
use crate::outbound::{OutFrame, OutboundSender};
use crate::publish_rate::PublishLimiter;
use crate::router::{RouterCommand, SessionId};
pub use confirm::MAX_PENDING_CONFIRMATIONS;
pub use error::SessionError;
use heartbeat::Heartbeat;
use std::collections::HashMap;
use std::sync::Arc;
use stomp_protocol::{Command, Frame, Version};

/// What the session knows of its client from the transport.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The peer's address.
    pub ip: std::net::IpAddr,
    /// A bearer token from the handshake (a secret: never logged).
    pub bearer: Option<String>,
    /// The handshake's `Origin` header, if any (browsers send one).
    pub origin: Option<String>,
}

/// What the connection does after a frame was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// DISCONNECT was handled: read no more, write what is queued, close normally.
    Disconnect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingConnect,
    Connected(Version),
    Ended,
}

/// One client's session.
pub struct Session {
    id: SessionId,
    context: Arc<BrokerContext>,
    /// Versions the WebSocket handshake's subprotocols allowed (all if none offered).
    allowed_versions: Vec<Version>,
    state: State,
    /// This session's active subscriptions: id → destination (checked
    /// again when a reload changes permissions).
    subscriptions: HashMap<Arc<str>, Arc<str>>,
    /// This session's own handle on its outbound queue (for CONNECTED);
    /// dropped when the session ends so the writer can see the end.
    outbound: Option<OutboundSender>,
    heartbeat: Heartbeat,
    /// Open transactions and what they hold.
    transactions: transaction::Transactions,
    /// CONNECT's `client-id` (else the authenticated name): scopes durable subscriptions.
    client_id: Option<String>,
    /// The client as the transport saw it.
    client: ClientInfo,
    /// What it may read and write, from authentication (none until CONNECT).
    permissions: crate::auth::Permissions,
    /// Its publish rate buckets, from `[[rate_limits.publish]]` (none until CONNECT).
    publish_limiter: PublishLimiter,
    /// Set by a SEND over a `slow` publish rate: the connection reads nothing
    /// until then. Taken by the connection after each frame.
    read_pause: Option<tokio::time::Instant>,
    /// When its credentials (a token) expire: the connection ends it then.
    expires_at: Option<tokio::time::Instant>,
    /// Who it is for ownership (durable subscriptions); set on CONNECT.
    principal: crate::router::Principal,
    /// The router has been sent a command that this session's next direct
    /// fan-out must not overtake (a topic SUBSCRIBE, an UNSUBSCRIBE, a
    /// publication sent whole): it asks the router for
    /// `RouterCommand::Applied` and waits first.
    router_ahead: bool,
    /// Its reply-queue naming key, made on the first `reply-to:/temp-queue/`.
    reply_names: std::sync::OnceLock<Option<reply_to::ReplyNames>>,
    /// How it authenticated, for a reload's new permissions.
    authenticated: Option<reload::Authenticated>,
    /// Its entry in the table of open connections (metrics, admin API);
    /// set by the connection once it runs.
    stats: Option<Arc<crate::metrics::connections::ConnectionEntry>>,
    /// CONNECT asked `x-pack-frames:true`: several queued frames may go out
    /// in one WebSocket message.
    pack_frames: bool,
    /// Queue SENDs handed to the cluster engine whose confirmations (and
    /// RECEIPTs) are still to come.
    confirmations: confirm::Confirmations,
}

impl Session {
    /// A session that waits for CONNECT.
    pub fn new(
        id: SessionId,
        context: Arc<BrokerContext>,
        client: ClientInfo,
        allowed_versions: Vec<Version>,
        outbound: OutboundSender,
    ) -> Self {
        Session {
            id,
            transactions: transaction::Transactions::new(
                context.config.limits.max_transactions_per_connection,
                context.config.limits.max_frames_per_transaction,
                context.config.limits.max_transaction_bytes,
            ),
            context,
            allowed_versions,
            state: State::AwaitingConnect,
            subscriptions: HashMap::new(),
            outbound: Some(outbound),
            heartbeat: Heartbeat::default(),
            client_id: None,
            client,
            permissions: crate::auth::Permissions::default(),
            publish_limiter: PublishLimiter::default(),
            read_pause: None,
            expires_at: None,
            principal: crate::router::Principal::Anonymous,
            reply_names: std::sync::OnceLock::new(),
            router_ahead: false,
            stats: None,
            pack_frames: false,
            authenticated: None,
            confirmations: confirm::Confirmations::default(),
        }
    }

    /// Its session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The client's address.
    pub fn client_ip(&self) -> std::net::IpAddr {
        self.client.ip
    }

    /// The ERROR for an access its permissions deny (`access`: `read` or
    /// `write`), logged at info with who and where (rate-limited).
    fn denied(&self, access: &str, destination: &str, message: String) -> SessionError {
        if self.context.metrics.may_log_denial() {
            tracing::info!(
                session = self.id.0,
                user = self.principal_name(),
                address = %self.client.ip,
                access,
                destination,
                "permission denied"
            );
        }
        SessionError::new(message, CloseReason::PolicyViolation)
    }

    /// The user as logs name it.
    fn principal_name(&self) -> &str {
        self.stats
            .as_ref()
            .and_then(|stats| stats.connected.get())
            .and_then(|connected| connected.user.as_deref())
            .unwrap_or("anonymous")
    }

    /// The broker's counters.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.context.metrics
    }

    /// Its connection's counters, once the connection has registered.
    pub fn stats(&self) -> Option<&crate::metrics::connections::ConnectionEntry> {
        self.stats.as_deref()
    }

    /// Tells of configuration reloads ([`Session::reloaded`] applies one).
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.context.reloads.subscribe()
    }

    /// Attaches its connection's counters.
    pub fn set_stats(&mut self, stats: Arc<crate::metrics::connections::ConnectionEntry>) {
        self.stats = Some(stats);
    }

    /// When the connection may read again, if a publish rate limit asked
    /// for a pause with the last frame.
    pub fn take_read_pause(&mut self) -> Option<tokio::time::Instant> {
        self.read_pause.take()
    }

    /// When the session's credentials expire (a token's `exp`), if ever.
    pub fn expires_at(&self) -> Option<tokio::time::Instant> {
        self.expires_at
    }

    /// Whether the client asked for several STOMP frames per WebSocket
    /// message (CONNECT `x-pack-frames:true`; CONNECTED confirms it).
    pub fn packs_frames(&self) -> bool {
        self.pack_frames
    }

    /// The negotiated version, once connected.
    pub fn version(&self) -> Option<Version> {
        match self.state {
            State::Connected(version) => Some(version),
            _ => None,
        }
    }

    /// The negotiated heart-beat intervals (none until connected).
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat
    }

    /// Resolves with the ERROR of a queue SEND the cluster engine did not
    /// store (never, if none): the connection then ends at once.
    pub async fn confirmation_failed(&mut self) -> SessionError {
        self.confirmations.failed().await
    }

    /// Handles one client frame.
    pub async fn handle(&mut self, frame: Frame) -> Result<Flow, SessionError> {
        if self.must_drain(&frame) {
            // Nothing the client asked to be answered may overtake the
            // RECEIPTs of SENDs still in flight to the engine.
            self.confirmations.drain().await?;
        }
        let receipt = frame.get("receipt").map(str::to_owned);
        let result = match (self.state, frame.command) {
            (_, Command::Connected | Command::Message | Command::Receipt | Command::Error) => {
                Err(SessionError::protocol(format!(
                    "{} is a server frame; a client may not send it",
                    frame.command.as_str()
                )))
            }
            (State::AwaitingConnect, Command::Connect | Command::Stomp) => {
                self.on_connect(&frame).await
            }
            (State::AwaitingConnect, command) => Err(SessionError::protocol(format!(
                "not connected: the first frame must be CONNECT or STOMP, not {}",
                command.as_str()
            ))),
            (State::Connected(_), Command::Connect | Command::Stomp) => Err(
                SessionError::protocol("already connected: a second CONNECT is not allowed"),
            ),
            (State::Connected(_), Command::Send) => self.on_send(frame).await,
            (State::Connected(_), Command::Subscribe) => self.on_subscribe(&frame).await,
            (State::Connected(_), Command::Unsubscribe) => self.on_unsubscribe(&frame).await,
            (State::Connected(_), Command::Ack | Command::Nack) => self.on_ack(&frame).await,
            (State::Connected(_), Command::Begin | Command::Commit | Command::Abort) => {
                self.on_transaction(&frame).await
            }
            (State::Connected(_), Command::Disconnect) => self.on_disconnect(&frame).await,
            (State::Ended, _) => Err(SessionError::protocol("the session has ended")),
        };
        result.map_err(|error| error.with_receipt(receipt))
    }

    /// Whether `frame` must wait for the engine's confirmations in flight:
    /// all but SENDs without a receipt and queue SENDs to the engine (which
    /// join the confirmations in order).
    fn must_drain(&self, frame: &Frame) -> bool {
        if frame.command != Command::Send {
            return true;
        }
        let to_engine = self.context.queue_engine.is_some()
            && frame.get("transaction").is_none()
            && frame
                .get("destination")
                .is_some_and(|d| d.starts_with(crate::model::destination::QUEUE_PREFIX));
        frame.get("receipt").is_some() && !to_engine
    }

    /// Tells the router the session is over, if it had not been told. Called
    /// by the connection on every way out.
    pub async fn end(&mut self) {
        let was_connected = matches!(self.state, State::Connected(_));
        self.state = State::Ended;
        self.outbound = None;
        // RECEIPTs still to come have no one to go to.
        self.confirmations = confirm::Confirmations::default();
        // Open transactions die with the session.
        self.transactions.clear();
        if was_connected {
            if let Some(engine) = &self.context.queue_engine {
                engine.detach(self.id).await;
            }
            // A gone router means shutdown: nothing left to tell.
            let _ = self
                .context
                .router
                .send(RouterCommand::Detach {
                    session: self.id,
                    receipt: None,
                })
                .await;
        }
    }

    /// Sends the router a command, mapping a stopped router to an error.
    async fn route(&self, command: RouterCommand) -> Result<(), SessionError> {
        self.context
            .router
            .send(command)
            .await
            .map_err(|_| SessionError::new("the server is shutting down", CloseReason::GoingAway))
    }

    /// Waits until the router has applied everything this session sent it,
    /// if a direct fan-out could otherwise overtake it.
    async fn await_router(&mut self) -> Result<(), SessionError> {
        if !self.router_ahead {
            return Ok(());
        }
        let (done, applied) = tokio::sync::oneshot::channel();
        self.route(RouterCommand::Applied { done }).await?;
        applied.await.map_err(|_| {
            SessionError::new("the server is shutting down", CloseReason::GoingAway)
        })?;
        self.router_ahead = false;
        Ok(())
    }

    /// Asks the router for a RECEIPT after everything sent so far.
    async fn receipt(&self, frame: &Frame) -> Result<(), SessionError> {
        match frame.get("receipt") {
            Some(receipt) => {
                self.route(RouterCommand::Receipt {
                    session: self.id,
                    receipt: receipt.to_owned(),
                })
                .await
            }
            None => Ok(()),
        }
    }

    /// Queues a frame the session itself writes (CONNECTED).
    fn push(&self, frame: OutFrame) -> Result<(), SessionError> {
        let pushed = self.outbound.as_ref().map(|queue| queue.push(frame));
        match pushed {
            Some(Ok(())) => Ok(()),
            _ => Err(SessionError::new(
                "slow consumer: outbound queue is full",
                CloseReason::PolicyViolation,
            )),
        }
    }

    fn connected_version(&self) -> Version {
        self.version().unwrap_or(Version::V1_2)
    }
}

/// A required header's value, or the error naming it.
fn required<'f>(frame: &'f Frame, header: &str) -> Result<&'f str, SessionError> {
    frame
        .get(header)
        .ok_or_else(|| SessionError::missing_header(frame.command.as_str(), header))
}
