//! SEND: validate, read expiry and reply-to, then publish (or hold for
//! COMMIT). A topic SEND is fanned out by this session itself through the
//! shared topic index; the router sees it only when it has interest (a
//! client-ack or durable subscription matched), or whole when it must act
//! first (a reply queue to create, a persistent message the store may
//! refuse). Queue SENDs go to the router, or with a queue engine (the
//! cluster) to the engine.

use super::{required, CloseReason, Flow, Session, SessionError};
use crate::fanout::Published;
use crate::model::destination::{send_target, SendTarget, TEMP_QUEUE_PREFIX};
use crate::model::message::{epoch_ms, Message};
use crate::publish_rate::PublishVerdict;
use crate::queue::{QueueArguments, QueueEngine, QueueSend};
use crate::router::message::{Publication, ReplyQueue, NOT_PASSED_ON};
use crate::router::{RouterCommand, TxOperation};
use std::sync::Arc;
use stomp_protocol::Frame;

impl Session {
    pub(super) async fn on_send(&mut self, frame: Frame) -> Result<Flow, SessionError> {
        self.send_frame(frame, true).await.map(|_| Flow::Continue)
    }

    /// A SEND (the session must be connected), as `on_send` handles it;
    /// returns the message id given to it (`None`: held for COMMIT). The
    /// seam for publishers that are not STOMP connections (HTTP publish),
    /// which need the id for their answer: a SEND to the cluster engine
    /// returns once stored.
    pub async fn send(&mut self, frame: Frame) -> Result<Option<Arc<str>>, SessionError> {
        self.send_frame(frame, false).await
    }

    /// A SEND; with `pipelined`, one to the cluster engine returns once
    /// handed over, and its RECEIPT follows its confirmation.
    async fn send_frame(
        &mut self,
        frame: Frame,
        pipelined: bool,
    ) -> Result<Option<Arc<str>>, SessionError> {
        if self.version().is_none() {
            return Err(SessionError::protocol("not connected"));
        }
        let publication = self.publication(&frame)?;
        self.count_publish(&frame)?;
        let class = self.context.metrics.classes.of(&publication.destination);
        self.count_class(|counts| &counts.published, class, 1);
        let engine = self.context.queue_engine.clone();
        let to_engine = engine
            .as_ref()
            .filter(|_| matches!(publication.target, SendTarget::Queue(_)));
        if let Some(transaction) = frame.get("transaction") {
            if to_engine.is_some() {
                return Err(SessionError::new(
                    "transactions with queue SENDs are not supported on the cluster engine",
                    CloseReason::PolicyViolation,
                ));
            }
            self.transactions
                .add(transaction, TxOperation::Publish(publication))?;
            return self.receipt(&frame).await.map(|()| None);
        }
        if let Some(engine) = to_engine {
            return self
                .send_to_engine(engine.as_ref(), &frame, publication, pipelined)
                .await;
        }
        let mut publication = publication;
        let id = publication.id.clone();
        match publication.target {
            SendTarget::Queue(_) => {
                // Publisher back-pressure: past the queues' memory limit, wait
                // (and so stop reading this connection) until consumers drain.
                self.context.queue_memory.wait_for_room().await;
            }
            SendTarget::Topic(_) if publication.persistent && frame.get("receipt").is_some() => {
                if let Some(ack) = self.context.topics.confirm_export(&id) {
                    return self.send_confirmed_topic(&frame, publication, ack).await;
                }
                if !self.fan_out(&mut publication).await? {
                    self.receipt(&frame).await?;
                    return Ok(Some(id));
                }
            }
            SendTarget::Topic(_) => {
                if !self.fan_out(&mut publication).await? {
                    // Delivered: the router only has the RECEIPT to send, after
                    // every MESSAGE pushed above.
                    self.receipt(&frame).await?;
                    return Ok(Some(id));
                }
            }
            SendTarget::ReplyQueue(_) => {}
        }
        self.route(RouterCommand::Publish {
            session: self.id,
            publication,
            receipt: frame.get("receipt").map(str::to_owned),
        })
        .await?;
        Ok(Some(id))
    }

    /// A queue SEND on the cluster engine: stored there (confirmed when a
    /// RECEIPT or `persistent:true` asks for it), then the RECEIPT. With
    /// `pipelined` the confirmation is awaited in the background, in order
    /// (`confirm.rs`), and the session reads on. A SEND the engine did not
    /// take is an ERROR, never a RECEIPT.
    async fn send_to_engine(
        &mut self,
        engine: &dyn QueueEngine,
        frame: &Frame,
        publication: Publication,
        pipelined: bool,
    ) -> Result<Option<Arc<str>>, SessionError> {
        if publication.reply_queue.is_some() {
            // Reply queues live in one node's router: a responder on another
            // node could not answer. Refused rather than half working.
            return Err(SessionError::new(
                "reply-to /temp-queue/ on queue SENDs is not supported on the cluster engine",
                CloseReason::PolicyViolation,
            ));
        }
        let id = publication.id.clone();
        // The client's own `message-id`, scoped by its client id, makes a
        // retried SEND (even on another connection or node) the same
        // message to the engine's duplicate detection.
        let dedup_id = match frame.get("message-id") {
            Some(client_id) => format!(
                "c/{}/{client_id}",
                self.client_id.as_deref().unwrap_or_default()
            ),
            None => format!("b/{id}"),
        };
        let send = QueueSend {
            id: id.clone(),
            destination: publication.destination,
            headers: publication.headers,
            body: publication.body,
            expires_at: publication.expires_at,
            dedup_id,
            confirm: publication.persistent || frame.get("receipt").is_some(),
        };
        let confirm = send.confirm;
        let not_stored = |message| SessionError::new(message, CloseReason::InternalError);
        let ack = engine.publish(send).await.map_err(not_stored)?;
        if pipelined && confirm {
            let receipt = frame.get("receipt").map(str::to_owned);
            self.confirmations
                .push(&self.context.router, self.id, ack, receipt)
                .await?;
            return Ok(Some(id));
        }
        ack.await.map_err(not_stored)?;
        self.receipt(frame).await?;
        Ok(Some(id))
    }

    /// A persistent topic SEND with a RECEIPT when the export seam confirms
    /// (the cluster: durable subscriptions live in the engine): published
    /// as always, then the RECEIPT once the engine has kept it for them, or
    /// ERROR if it could not.
    async fn send_confirmed_topic(
        &mut self,
        frame: &Frame,
        mut publication: Publication,
        ack: crate::fanout::ExportAck,
    ) -> Result<Option<Arc<str>>, SessionError> {
        let id = publication.id.clone();
        if self.fan_out(&mut publication).await? {
            // The router fans it out (and exports it) or refuses it with
            // ERROR; the RECEIPT follows the engine's answer.
            self.route(RouterCommand::Publish {
                session: self.id,
                publication,
                receipt: None,
            })
            .await?;
            self.router_ahead = true;
            self.await_router().await?;
        }
        // Not exported (expired, refused): nothing to wait for.
        self.context.topics.forget_confirm(&id);
        if let Ok(Err(message)) = ack.await {
            return Err(SessionError::new(message, CloseReason::InternalError));
        }
        self.receipt(frame).await?;
        Ok(Some(id))
    }

    /// Fans a topic publication out to the shared index's direct
    /// subscribers, unless the router must handle it whole. Returns whether
    /// the router must see it (for its own subscriptions, or whole).
    pub(super) async fn fan_out(
        &mut self,
        publication: &mut Publication,
    ) -> Result<bool, SessionError> {
        if !matches!(publication.target, SendTarget::Topic(_)) {
            return Ok(true);
        }
        let persistent_feed = matches!(&publication.target,
            SendTarget::Topic(words) if self.context.topics.is_persistent_feed(words));
        if publication.reply_queue.is_some() || persistent_feed {
            // The reply queue must exist before anyone can answer: the
            // router creates it and fans out, and this session's next direct
            // fan-out waits until it has (per-publisher order). A persistent
            // live feed's change is stored by the router, and the RECEIPT
            // waits for the sync.
            self.router_ahead = true;
            return Ok(true);
        }
        self.await_router().await?;
        let defer = self.may_persist(publication);
        let Publication {
            id,
            target: SendTarget::Topic(words),
            destination,
            headers,
            body,
            expires_at,
            ..
        } = publication
        else {
            return Ok(true);
        };
        // The message borrows destination and headers (no copies on the
        // publishing path) and gives them back for the router, if needed.
        let mut message = Message {
            id: id.clone(),
            destination: std::mem::take(destination),
            headers: std::mem::take(headers),
            body: body.clone(),
            text: std::str::from_utf8(body).is_ok(),
            expires_at: *expires_at,
        };
        let mut pushed = 0;
        let published =
            self.context
                .topics
                .publish_counting(words, &mut message, defer, &mut pushed);
        let class = self.context.metrics.classes.of(&message.destination);
        self.count_class(|counts| &counts.delivered, class, pushed);
        *destination = message.destination;
        *headers = message.headers;
        match published {
            Published::Deferred => {
                self.router_ahead = true;
                Ok(true)
            }
            Published::Delivered { router_interest } => {
                publication.delivered_direct = true;
                Ok(router_interest)
            }
        }
    }

    /// Adds `n` to one of this connection's per-class counters.
    fn count_class(
        &self,
        counter: fn(&crate::metrics::connections::Counts) -> &[std::sync::atomic::AtomicU64],
        class: usize,
        n: u64,
    ) {
        if let Some(slot) = self
            .stats()
            .and_then(|stats| counter(&stats.counts).get(class))
        {
            crate::metrics::connections::add(slot, n);
        }
    }

    /// Whether a publication may be stored (and so refused by a full or
    /// failing store): then it goes to the router whole when the router has
    /// interest, so that a refused message reaches no one, as before.
    pub(super) fn may_persist(&self, publication: &Publication) -> bool {
        let storage = &self.context.config.storage;
        storage.enabled && (publication.persistent || !storage.persistent.is_empty())
    }

    /// Counts the SEND against its publish rate rule (also inside a
    /// transaction: the rate is of what the client sends). Over a `slow`
    /// rule the SEND goes on and the connection pauses; over an `error` rule
    /// the SEND is refused and the connection ends.
    fn count_publish(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let destination = frame.get("destination").unwrap_or_default();
        let bytes = frame.command.as_str().len()
            + frame
                .headers
                .iter()
                .map(|(name, value)| name.len() + value.len() + 2)
                .sum::<usize>()
            + frame.body.len()
            + 2;
        let now = tokio::time::Instant::now();
        match self.publish_limiter.check(destination, bytes, now) {
            PublishVerdict::Go => Ok(()),
            PublishVerdict::PauseUntil(until) => {
                self.read_pause = Some(self.read_pause.map_or(until, |p| p.max(until)));
                Ok(())
            }
            PublishVerdict::Refuse(message) => {
                Err(SessionError::new(message, CloseReason::PolicyViolation))
            }
        }
    }

    /// The SEND as the router takes it.
    fn publication(&self, frame: &Frame) -> Result<Publication, SessionError> {
        let destination = required(frame, "destination")?;
        let limits = &self.context.destination_limits;
        let target = send_target(destination, limits).map_err(|e| SessionError::protocol(e.0))?;
        if !self.permissions.can_write(destination, limits) {
            return Err(self.denied(
                "write",
                destination,
                format!("write access to '{destination}' denied"),
            ));
        }
        let expires_at = expiry(frame)?;
        let queue_arguments =
            QueueArguments::from_headers(&frame.headers).map_err(SessionError::protocol)?;
        self.check_dead_letter(&queue_arguments)?;
        let mut reply_queue = None;
        let mut headers: Vec<(String, String)> = Vec::with_capacity(frame.headers.len());
        for (name, value) in frame.headers.iter() {
            if NOT_PASSED_ON.contains(&name) {
                continue;
            }
            if name == "reply-to" && reply_queue.is_none() {
                if let Some(reply) = value.strip_prefix(TEMP_QUEUE_PREFIX) {
                    // RabbitMQ's request/reply: a private queue for this
                    // connection; responders send to the rewritten name.
                    if reply.is_empty() || reply.contains('/') {
                        return Err(SessionError::protocol(format!(
                            "reply-to '{value}' is not /temp-queue/<name>"
                        )));
                    }
                    let queue = self
                        .reply_names
                        .get_or_init(super::reply_to::ReplyNames::new)
                        .as_ref()
                        .map(|names| names.queue(reply))
                        .ok_or_else(|| {
                            SessionError::new(
                                "no randomness for a reply queue name",
                                CloseReason::InternalError,
                            )
                        })?;
                    headers.push((name.to_owned(), queue.clone()));
                    reply_queue = Some(ReplyQueue {
                        subscription: value.into(),
                        queue,
                    });
                    continue;
                }
            }
            headers.push((name.to_owned(), value.to_owned()));
        }
        Ok(Publication {
            id: self.context.message_ids.next(),
            delivered_direct: false,
            target,
            destination: destination.to_owned(),
            headers,
            body: frame.body.clone(),
            expires_at,
            queue_arguments,
            reply_queue,
            persistent: frame.get("persistent") == Some("true"),
        })
    }
}

/// `expires` (ActiveMQ: absolute, ms since the epoch, 0 = never) or
/// `expiration` (RabbitMQ: relative, ms), whichever comes first.
fn expiry(frame: &Frame) -> Result<Option<u64>, SessionError> {
    let number = |name: &str| -> Result<Option<u64>, SessionError> {
        frame
            .get(name)
            .map(|value| {
                value.trim().parse::<u64>().map_err(|_| {
                    SessionError::new(
                        format!("{name} '{value}' is not a number of milliseconds"),
                        CloseReason::ProtocolError,
                    )
                })
            })
            .transpose()
    };
    let absolute = number("expires")?.filter(|at| *at > 0);
    let relative = number("expiration")?.map(|ttl| epoch_ms().saturating_add(ttl));
    Ok(match (absolute, relative) {
        (Some(a), Some(r)) => Some(a.min(r)),
        (a, r) => a.or(r),
    })
}
