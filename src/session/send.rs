//! SEND: validate, read expiry and reply-to, then publish (or hold for
//! COMMIT). A topic SEND is fanned out by this session itself through the
//! shared topic index; the router sees it only when it has interest (a
//! client-ack or durable subscription matched), or whole when it must act
//! first (a reply queue to create, a persistent message the store may
//! refuse). Queue SENDs go to the router, or with a queue engine (the
//! cluster) to the engine (`send_engine.rs`).

use super::{required, CloseReason, Flow, Session, SessionError};
use crate::fanout::{FeedAck, Published};
use crate::model::destination::{send_target, SendTarget, TEMP_QUEUE_PREFIX};
use crate::model::message::{epoch_ms, Message};
use crate::publish_rate::PublishVerdict;
use crate::queue::QueueArguments;
use crate::router::message::{Publication, ReplyQueue, NOT_PASSED_ON};
use crate::router::RouterCommand;
use std::sync::Arc;
use std::time::Duration;

/// How long a confirmed feed SEND's RECEIPT waits, after the engine has the
/// message, for this node to read it back from the feed stream.
const FEED_READ_BACK: Duration = Duration::from_secs(5);
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
            // Kept for the engine's batch (`transaction_engine.rs`).
            let dedup_id = to_engine.and_then(|_| self.client_dedup_id(&frame));
            self.transactions
                .add_send(transaction, publication, dedup_id)?;
            return self.receipt(&frame).await.map(|()| None);
        }
        if let Some(engine) = to_engine {
            return self
                .send_to_engine(engine.as_ref(), &frame, publication, pipelined)
                .await;
        }
        if let Some(engine) = engine.filter(|e| self.reply_elsewhere(e.as_ref(), &publication)) {
            let id = publication.id.clone();
            self.send_reply(engine.as_ref(), publication).await?;
            if frame.get("receipt").is_some() {
                // A RECEIPT says the reply has left this node.
                engine.sent().await;
            }
            self.receipt(&frame).await?;
            return Ok(Some(id));
        }
        let mut publication = publication;
        let id = publication.id.clone();
        match publication.target {
            SendTarget::Queue(_) => {
                // Publisher back-pressure: past the queues' memory limit, wait
                // (and so stop reading this connection) until consumers drain.
                self.context.queue_memory.wait_for_room().await;
            }
            SendTarget::Topic(_) => {
                let confirm = publication.persistent || frame.get("receipt").is_some();
                // A persistent one with a RECEIPT on the cluster: kept for
                // the durable subscriptions before the RECEIPT.
                let kept = match publication.persistent && frame.get("receipt").is_some() {
                    true => self.context.topics.export().confirm(&id),
                    false => None,
                };
                // Withdrawn unless the RECEIPT waits for it: on an error, a
                // live-feed message (below), or this future dropped while it
                // fans out, the request would stay for good.
                let mut guard = kept.is_some().then(|| ConfirmGuard {
                    topics: self.context.topics.clone(),
                    id: id.clone(),
                    armed: true,
                });
                let (for_router, feed_ack) = self.fan_out(&mut publication, confirm).await?;
                if let Some(kept) = kept {
                    if feed_ack.is_none() {
                        if let Some(guard) = &mut guard {
                            guard.armed = false;
                        }
                        return self
                            .send_kept_topic(&frame, publication, for_router, kept)
                            .await;
                    }
                }
                // A live-feed message: its stream's confirmation below.
                drop(guard);
                if let Some(feed_ack) = feed_ack {
                    // A live-feed message on the cluster engine: the RECEIPT
                    // once its stream has it and this node has read it back
                    // (a SUBSCRIBE here after the RECEIPT sees it), in order
                    // with other pipelined confirmations; the session reads
                    // on meanwhile.
                    let topics = self.context.topics.clone();
                    let ack: crate::queue::EngineAck = Box::pin(async move {
                        let sequence = feed_ack.await?;
                        topics.wait_feeds_applied(sequence, FEED_READ_BACK).await;
                        Ok(())
                    });
                    let receipt = frame.get("receipt").map(str::to_owned);
                    self.confirmations
                        .push(&self.context.router, self.id, ack, receipt)
                        .await?;
                    return Ok(Some(id));
                }
                if !for_router {
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

    /// Fans a topic publication out to the shared index's direct
    /// subscribers, unless the router must handle it whole. Returns whether
    /// the router must see it (for its own subscriptions, or whole), and,
    /// with `confirm`, for a live-feed message handed to the cluster engine,
    /// the engine's confirmation to wait for before the RECEIPT.
    pub(super) async fn fan_out(
        &mut self,
        publication: &mut Publication,
        confirm: bool,
    ) -> Result<(bool, Option<FeedAck>), SessionError> {
        if !matches!(publication.target, SendTarget::Topic(_)) {
            return Ok((true, None));
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
            return Ok((true, None));
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
            return Ok((true, None));
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
        let (published, feed_ack) = self.context.topics.publish_confirming(
            words,
            &mut message,
            defer,
            &mut pushed,
            confirm,
        );
        let class = self.context.metrics.classes.of(&message.destination);
        self.count_class(|counts| &counts.delivered, class, pushed);
        *destination = message.destination;
        *headers = message.headers;
        match published {
            Published::Deferred => {
                self.router_ahead = true;
                Ok((true, None))
            }
            Published::Delivered { router_interest } => {
                publication.delivered_direct = true;
                Ok((router_interest, None))
            }
            // Gone to the cluster engine's feed stream: the router gets it
            // from there (its client-ack and durable subscriptions).
            Published::ToEngine => {
                publication.delivered_direct = true;
                Ok((false, feed_ack))
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
                        .map(|names| {
                            let node = self.context.queue_engine.as_ref();
                            names.queue(node.and_then(|e| e.reply_node()), reply)
                        })
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

/// Withdraws the engine confirmation asked for message `id` when dropped
/// armed.
struct ConfirmGuard {
    topics: Arc<crate::fanout::TopicIndex>,
    id: Arc<str>,
    armed: bool,
}

impl Drop for ConfirmGuard {
    fn drop(&mut self) {
        if self.armed {
            self.topics.export().forget_confirm(&self.id);
        }
    }
}
