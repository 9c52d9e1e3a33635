//! SUBSCRIBE: validate id, ack mode, prefetch and destination, then register
//! with the router (or, for a queue with a queue engine, with the engine).

use super::{required, CloseReason, Flow, Session, SessionError};
use crate::fanout::StartAt;
use crate::model::destination::{queue_name, subscribe_target, PatternWord, SubscribeTarget};
use crate::queue::{DurableRefusal, DurableSubscribe, QueueArguments, QueueSubscribe};
use crate::router::{AckMode, DurableSubscription, RouterCommand};
use std::sync::Arc;
use std::time::Duration;
use stomp_protocol::{Frame, Version};

impl Session {
    /// Whether `pattern` names one destination that a `[[topics.rules]]`
    /// rule makes a live feed.
    fn feed_by_rule(&self, pattern: &[PatternWord]) -> bool {
        let words: Option<Vec<Box<str>>> = pattern
            .iter()
            .map(|word| match word {
                PatternWord::Exact(word) => Some(word.clone()),
                PatternWord::One | PatternWord::Many => None,
            })
            .collect();
        words.is_some_and(|words| self.context.topics.is_feed_by_rule(&words))
    }

    pub(super) async fn on_subscribe(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let destination = required(frame, "destination")?;
        // STOMP 1.0 made `id` optional; the destination then names the subscription.
        let id: Arc<str> = match (frame.get("id"), self.connected_version()) {
            (Some(id), _) => id.into(),
            (None, Version::V1_0) => destination.into(),
            (None, _) => return Err(SessionError::missing_header("SUBSCRIBE", "id")),
        };
        let ack = AckMode::from_header(frame.get("ack")).ok_or_else(|| {
            SessionError::protocol(format!(
                "ack '{}' is not one of auto, client, client-individual",
                frame.get("ack").unwrap_or_default()
            ))
        })?;
        if self.subscriptions.contains_key(&id) {
            return Err(SessionError::protocol(format!(
                "subscription id '{id}' is already in use on this connection"
            )));
        }
        let max = self.context.config.limits.max_subscriptions_per_connection;
        if self.subscriptions.len() >= max {
            return Err(SessionError::new(
                format!("too many subscriptions: max_subscriptions_per_connection is {max}"),
                CloseReason::PolicyViolation,
            ));
        }
        let limits = &self.context.destination_limits;
        let target =
            subscribe_target(destination, limits).map_err(|e| SessionError::protocol(e.0))?;
        // A wildcard must stay inside what may be read; a subscriber count
        // needs read permission on the topic counted.
        let readable = match &target {
            SubscribeTarget::Subscribers { topic, .. } => topic.as_str(),
            _ => destination,
        };
        if !self.permissions.can_read(readable, limits) {
            return Err(self.denied(
                "read",
                readable,
                format!("read access to '{readable}' denied"),
            ));
        }
        if matches!(target, SubscribeTarget::Subscribers { .. }) && ack.expects_ack() {
            return Err(SessionError::protocol(format!(
                "'{destination}' needs ack:auto (counts are not acknowledged)"
            )));
        }
        let prefetch = prefetch(frame)?;
        let arguments =
            QueueArguments::from_headers(&frame.headers).map_err(SessionError::protocol)?;
        self.check_dead_letter(&arguments)?;
        let durable = match &target {
            SubscribeTarget::Topic(_) => self.durable_subscription(frame, destination, &id)?,
            SubscribeTarget::Queue(_) | SubscribeTarget::Subscribers { .. } => None,
        };
        let start = start_at(frame, &target, ack, durable.is_some())?;
        if let StartAt::Offset { offset, .. } = &start {
            // On a cluster the offset may come from a node that has read the
            // engine's feed stream further than this one: wait, briefly,
            // until this one has (at once on a single broker).
            let seen = offset.saturating_sub(1);
            let topics = &self.context.topics;
            topics.wait_feeds_applied(seen, FEED_CATCH_UP).await;
        }
        let engine_served = match (&target, &durable) {
            (SubscribeTarget::Queue(queue), _) => Some((queue.clone(), None)),
            (SubscribeTarget::Topic(pattern), Some(durable)) => {
                Some((destination.to_owned(), Some((durable, pattern))))
            }
            _ => None,
        };
        if let (Some(engine), Some((served, durable))) = (&self.context.queue_engine, engine_served)
        {
            let (start_tx, start) = tokio::sync::oneshot::channel();
            let subscribe = QueueSubscribe {
                start,
                session: self.id,
                id: id.clone(),
                destination: served,
                ack,
                prefetch: prefetch.unwrap_or(self.context.config.queues.prefetch),
                outbound: self.outbound.clone().ok_or_else(|| {
                    SessionError::new("the session has ended", CloseReason::GoingAway)
                })?,
                version: self.connected_version(),
                arguments: arguments.clone(),
            };
            match durable {
                None => engine.subscribe(subscribe).await.map_err(|message| {
                    let reason = crate::queue::close_reason(&message);
                    SessionError::new(message, reason)
                })?,
                // Durable topic subscriptions live in the engine too, so
                // that a client resumes them on any node.
                Some((durable, pattern)) => engine
                    .subscribe_durable(DurableSubscribe {
                        subscribe,
                        key: durable.key.clone(),
                        owner: durable.owner.to_record(),
                        pattern: pattern.clone(),
                        feed: self.feed_by_rule(pattern),
                    })
                    .await
                    .map_err(|refusal| match refusal {
                        DurableRefusal::Policy(message) => {
                            SessionError::new(message, CloseReason::PolicyViolation)
                        }
                        DurableRefusal::Engine(message) => {
                            SessionError::new(message, CloseReason::InternalError)
                        }
                    })?,
            }
            self.subscriptions.insert(id, destination.into());
            if frame.get("receipt").is_some() {
                // The RECEIPT goes through the router; deliveries start once
                // it is out.
                self.receipt(frame).await?;
                self.router_ahead = true;
                self.await_router().await?;
            }
            let _ = start_tx.send(());
            return Ok(Flow::Continue);
        }
        self.subscriptions.insert(id.clone(), destination.into());
        // On a cluster engine a topic SUBSCRIBE with a receipt first waits
        // until the engine holds the interest, then goes to the router,
        // which adds it and sends the RECEIPT: other nodes' publications
        // after the RECEIPT reach it, and no MESSAGE precedes the RECEIPT.
        // Not for durable ones (not on the engine).
        let interest = match (&target, &durable) {
            (SubscribeTarget::Topic(pattern), None) if frame.get("receipt").is_some() => {
                self.context.topics.export().hold_interest(pattern)
            }
            _ => None,
        };
        let interest = match interest {
            Some(mut hold) => {
                (&mut hold.flushed).await;
                Some(hold)
            }
            None => None,
        };
        // This session's next direct fan-out must see the new subscription.
        self.router_ahead |= matches!(target, SubscribeTarget::Topic(_));
        self.route(RouterCommand::Subscribe {
            session: self.id,
            id,
            target,
            ack,
            prefetch,
            arguments,
            durable,
            start,
            max_rate: max_rate(frame)?,
            receipt: frame.get("receipt").map(str::to_owned),
        })
        .await?;
        if interest.is_some() {
            // The hold is let go once the entry holds the interest itself.
            self.await_router().await?;
        }
        drop(interest);
        Ok(Flow::Continue)
    }
}

impl Session {
    /// A client-named dead-letter target (`x-dead-letter-routing-key`) is a
    /// place messages are written to: it needs write permission there, as a
    /// SEND would. (A `[[queues.rules]]` `dead_letter` then still wins.)
    pub(super) fn check_dead_letter(&self, arguments: &QueueArguments) -> Result<(), SessionError> {
        let Some(target) = &arguments.dead_letter else {
            return Ok(());
        };
        let limits = &self.context.destination_limits;
        queue_name(target, limits).map_err(|e| SessionError::protocol(e.0))?;
        if !self.permissions.can_write(target, limits) {
            return Err(self.denied(
                "write",
                target,
                format!("write access to '{target}' denied (x-dead-letter-routing-key)"),
            ));
        }
        Ok(())
    }

    /// A durable topic subscription in any of the three dialects, keyed by
    /// the connection's client id and a name, never by the id alone
    /// (stompjs numbers ids `sub-0, sub-1, ...` on every connection):
    /// - Artemis: `durable-subscription-name:<name>`;
    /// - ActiveMQ: `activemq.subscriptionName:<name>` (with `client-id` on CONNECT);
    /// - RabbitMQ: `durable:true` (and not `auto-delete:true`); the name is
    ///   the subscription id together with the destination.
    fn durable_subscription(
        &self,
        frame: &Frame,
        destination: &str,
        id: &str,
    ) -> Result<Option<DurableSubscription>, SessionError> {
        let name = match (
            frame.get("durable-subscription-name"),
            frame.get("activemq.subscriptionName"),
            frame.get("durable") == Some("true") && frame.get("auto-delete") != Some("true"),
        ) {
            (Some(name), _, _) | (None, Some(name), _) => name.to_owned(),
            (None, None, true) => format!("{id}@{destination}"),
            (None, None, false) => return Ok(None),
        };
        if name.is_empty() {
            return Err(SessionError::protocol(
                "a durable subscription name must not be empty",
            ));
        }
        Ok(Some(DurableSubscription {
            key: format!("{}/{name}", self.client_id.as_deref().unwrap_or("")),
            destination: destination.to_owned(),
            owner: self.principal.clone(),
        }))
    }
}

/// How long a resuming SUBSCRIBE waits for this node to read the engine's
/// feed stream up to the client's offset; then it is answered from what
/// the node has (`x-recovered:false` if that misses the offset).
const FEED_CATCH_UP: Duration = Duration::from_secs(5);

/// `x-stream-offset` (with `x-epoch`): where a live-feed subscription
/// starts. Only auto-ack, non-durable topic subscriptions have one (their
/// snapshot is pushed under the index's write lock; the router's client-ack
/// and durable deliveries have no such seam), and `offset=` names one
/// destination's offsets, so it needs a destination without wildcards.
fn start_at(
    frame: &Frame,
    target: &SubscribeTarget,
    ack: AckMode,
    durable: bool,
) -> Result<StartAt, SessionError> {
    let start = StartAt::from_headers(frame.get("x-stream-offset"), frame.get("x-epoch"))
        .map_err(SessionError::protocol)?;
    if !start.is_explicit() {
        return Ok(start);
    }
    match target {
        SubscribeTarget::Queue(_) | SubscribeTarget::Subscribers { .. } => Err(
            SessionError::protocol("x-stream-offset applies to /topic/ subscriptions only"),
        ),
        SubscribeTarget::Topic(_) if ack.expects_ack() || durable => Err(SessionError::protocol(
            "x-stream-offset needs ack:auto and a non-durable topic subscription",
        )),
        SubscribeTarget::Topic(pattern)
            if matches!(start, StartAt::Offset { .. })
                && pattern.iter().any(|w| !matches!(w, PatternWord::Exact(_))) =>
        {
            Err(SessionError::protocol(
                "x-stream-offset offset=<n> needs a destination without wildcards (offsets are per destination)",
            ))
        }
        SubscribeTarget::Topic(_) => Ok(start),
    }
}

/// `x-max-rate:<messages per second>`, a positive whole number.
fn max_rate(frame: &Frame) -> Result<Option<u32>, SessionError> {
    let Some(value) = frame.get("x-max-rate") else {
        return Ok(None);
    };
    match value.trim().parse::<u32>() {
        Ok(rate) if rate > 0 => Ok(Some(rate)),
        _ => Err(SessionError::protocol(format!(
            "x-max-rate '{value}' is not a positive whole number of messages per second"
        ))),
    }
}

/// `prefetch-count` (RabbitMQ), or its alias `activemq.prefetchSize`.
fn prefetch(frame: &Frame) -> Result<Option<usize>, SessionError> {
    let Some((name, value)) = ["prefetch-count", "activemq.prefetchSize"]
        .into_iter()
        .find_map(|name| frame.get(name).map(|value| (name, value)))
    else {
        return Ok(None);
    };
    match value.parse::<usize>() {
        Ok(count) if count > 0 => Ok(Some(count)),
        _ => Err(SessionError::protocol(format!(
            "{name} '{value}' is not a positive integer"
        ))),
    }
}
