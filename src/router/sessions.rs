//! Per-session tables: what the router keeps for each connected session
//! (its outbound queue, subscriptions, unsettled deliveries), adding and
//! removing subscriptions, and dropping a session that ended or fell behind.

use super::{AckMode, Router, RouterCommand, SessionId, Subscriber, DURABLE_PREFIX};
use crate::config::SlowConsumerPolicy;
use crate::fanout::{IndexKey, Interest, RateCap, StartAt};
use crate::model::destination::{self, PatternWord, SubscribeTarget, META_SUBSCRIBERS_PREFIX};
use crate::outbound::OutboundSender;
use crate::queue::{QueueArguments, QueuedMessage};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use stomp_protocol::Version;
use tracing::warn;

/// A SUBSCRIBE as the router receives it: who subscribes, and how its
/// deliveries are acknowledged. It becomes a [`Subscription`].
#[derive(Debug, Clone)]
pub(super) struct SubscribeRequest {
    pub(super) session: SessionId,
    pub(super) id: Arc<str>,
    pub(super) ack: AckMode,
    /// `prefetch-count`, if given.
    pub(super) prefetch: Option<usize>,
}

/// What the router keeps per connected session.
pub(super) struct SessionEntry {
    pub(super) outbound: OutboundSender,
    pub(super) version: Version,
    pub(super) subscriptions: HashMap<Arc<str>, Subscription>,
    /// Unsettled deliveries' ack ids → their subscription.
    pub(super) ack_index: HashMap<String, Arc<str>>,
    /// Reply queues this session made with `reply-to:/temp-queue/...`.
    pub(super) reply_queues: Vec<String>,
    /// Durable subscriptions this session created (`max_durable_subscriptions_per_connection`).
    pub(super) durables_created: usize,
    /// RECEIPTs of this session waiting for the store; while any wait, later
    /// ones wait too, so that RECEIPTs keep their order. A mutex, not an
    /// atomic: the writer thread pushes a released RECEIPT and counts it
    /// down under it, so the router never sees a RECEIPT the client already
    /// has as still held (and then holds the next one, and lets a
    /// SUBSCRIBE's backlog overtake it).
    pub(super) held_receipts: Arc<Mutex<usize>>,
}

/// A **subscription**: a client's SUBSCRIBE as the router keeps it in the
/// session's table (its target, ack mode, credit and unsettled deliveries).
/// A topic subscription is matched through its [`Subscriber`]; a queue
/// subscription appears in its queue as a `queue::Consumer`.
pub(super) struct Subscription {
    pub(super) target: Target,
    pub(super) ack: AckMode,
    /// Most unsettled deliveries (client ack modes).
    pub(super) prefetch: usize,
    /// Unsettled deliveries in delivery order (client ack modes only).
    pub(super) unacked: VecDeque<Unacked>,
}

/// Where a subscription's messages come from.
pub(super) enum Target {
    Topic {
        pattern: Vec<PatternWord>,
        subscriber: Arc<Subscriber>,
    },
    Queue(String),
    /// A topic's subscriber count, by its watch key (`meta.rs`).
    Subscribers(Box<str>),
}

/// A delivery awaiting ACK or NACK.
pub(super) struct Unacked {
    pub(super) ack_id: String,
    pub(super) message: QueuedMessage,
    /// The queue it came from; `None` for topic deliveries (nothing to return).
    pub(super) queue: Option<String>,
}

impl Router {
    /// Starts the tables of a connected session.
    pub(super) fn attach(
        &mut self,
        session: SessionId,
        outbound: OutboundSender,
        version: Version,
    ) {
        self.sessions.insert(
            session,
            SessionEntry {
                outbound,
                version,
                subscriptions: HashMap::new(),
                ack_index: HashMap::new(),
                reply_queues: Vec::new(),
                durables_created: 0,
                held_receipts: Arc::new(Mutex::new(0)),
            },
        );
    }

    /// Adds a subscription; `None` (after failing the session) if refused,
    /// else for `x-stream-offset:offset=` whether every missed message was
    /// delivered (`x-recovered`).
    pub(super) fn subscribe(
        &mut self,
        who: SubscribeRequest,
        target: SubscribeTarget,
        arguments: &QueueArguments,
        (start, max_rate): (&StartAt, Option<u32>),
        receipt: Option<&str>,
    ) -> Option<Option<bool>> {
        let SubscribeRequest {
            session,
            id,
            ack,
            prefetch,
        } = who.clone();
        let policy = match &target {
            SubscribeTarget::Topic(pattern) => self.slow_consumer_policy(pattern),
            SubscribeTarget::Queue(_) | SubscribeTarget::Subscribers { .. } => {
                SlowConsumerPolicy::Disconnect
            }
        };
        let entry = self.sessions.get_mut(&session)?;
        match target {
            SubscribeTarget::Topic(pattern) => {
                let subscriber = Arc::new(Subscriber {
                    session,
                    id: id.clone(),
                    ack,
                    version: entry.version,
                    outbound: entry.outbound.clone(),
                    drop_oldest: policy == SlowConsumerPolicy::DropOldest,
                    conflate: policy == SlowConsumerPolicy::Conflate,
                    // Client-ack deliveries are the router's, one by one.
                    max_rate: max_rate.filter(|_| !ack.expects_ack()).map(RateCap::new),
                });
                // Inserted before the RECEIPT goes out: every publication
                // that starts after it sees the subscription.
                let key = IndexKey::Subscription(session, id.clone());
                let mut recovered = None;
                if ack.expects_ack() {
                    // Unsettled deliveries need one owner: the router
                    // delivers, publishers only learn that it must.
                    self.topics
                        .insert(&pattern, (session, id.clone()), subscriber.clone());
                    self.index.insert(&pattern, key, Interest::Router);
                } else {
                    // Its snapshot (retained values, history) is queued
                    // under the same write lock: nothing between it and
                    // the live stream.
                    recovered = self
                        .index
                        .insert_with_snapshot(&pattern, key, subscriber.clone(), start)
                        .recovered;
                }
                // `/meta/subscribers/...` counts it may change.
                let counted = pattern.clone();
                self.subscription_count += 1;
                entry.subscriptions.insert(
                    id,
                    Subscription {
                        target: Target::Topic {
                            pattern,
                            subscriber,
                        },
                        ack,
                        prefetch: prefetch.unwrap_or(self.topic_prefetch),
                        unacked: VecDeque::new(),
                    },
                );
                self.subscribers_changed(&counted);
                // A persistent feed's history that aged out while the
                // snapshot was read is forgotten by the store too.
                for op in self.index.feeds().take_store_ops() {
                    self.store_op(op);
                }
                Some(recovered)
            }
            SubscribeTarget::Queue(name) => self
                .subscribe_queue(who, name, arguments, receipt)
                .then_some(None),
            SubscribeTarget::Subscribers { topic, words } => {
                let destination = format!("{META_SUBSCRIBERS_PREFIX}{}", &topic[1..]).into();
                let key = self.watch(session, id.clone(), destination, topic, words);
                self.subscription_count += 1;
                self.sessions.get_mut(&session)?.subscriptions.insert(
                    id,
                    Subscription {
                        target: Target::Subscribers(key),
                        ack,
                        prefetch: 0,
                        unacked: VecDeque::new(),
                    },
                );
                Some(None)
            }
        }
    }

    /// Applies a SUBSCRIBE command: admits it, adds the subscription (with
    /// its snapshot), sends the RECEIPT (with `x-recovered` for `offset=`)
    /// and dispatches a queue's backlog. `mark` is the store ops count
    /// before it, to tell whether it changed the store.
    pub(super) fn apply_subscribe(&mut self, command: RouterCommand, mark: usize) {
        let RouterCommand::Subscribe {
            session,
            id,
            target,
            ack,
            prefetch,
            arguments,
            durable,
            start,
            max_rate,
            receipt,
        } = command
        else {
            return;
        };
        if !self.admit_subscription(session, &id, receipt.as_deref()) {
            return;
        }
        let queue = match (&target, &durable) {
            (_, Some(durable)) => Some(format!("{DURABLE_PREFIX}{}", durable.key)),
            (SubscribeTarget::Queue(name), None) => Some(name.clone()),
            (SubscribeTarget::Topic(_) | SubscribeTarget::Subscribers { .. }, None) => None,
        };
        let who = SubscribeRequest {
            session,
            id,
            ack,
            prefetch,
        };
        let subscribed = match (target, durable) {
            (SubscribeTarget::Topic(pattern), Some(durable)) => self
                .subscribe_durable(who, &durable, pattern, receipt.as_deref())
                .then_some(None),
            (target, _) => self.subscribe(
                who,
                target,
                &arguments,
                (&start, max_rate),
                receipt.as_deref(),
            ),
        };
        if let Some(recovered) = subscribed {
            let durable = self.durable_ops != mark;
            // `offset=`: the RECEIPT says whether every missed
            // message came (its snapshot is already queued).
            let recovered = recovered.map(|r| ("x-recovered", if r { "true" } else { "false" }));
            self.receipt_with(session, receipt, durable, recovered);
            // The RECEIPT says "active"; a backlog follows it.
            if let Some(name) = queue {
                self.dispatch(&name);
            }
        }
    }

    /// Ends a subscription; returns the queue it consumed from, if any.
    pub(super) fn unsubscribe(&mut self, session: SessionId, id: &str) -> Option<String> {
        let removed = self
            .sessions
            .get_mut(&session)
            .and_then(|entry| entry.subscriptions.remove(id))?;
        self.subscription_count = self.subscription_count.saturating_sub(1);
        let queue = match &removed.target {
            Target::Queue(name) => Some(name.clone()),
            Target::Topic { .. } | Target::Subscribers(_) => None,
        };
        self.end_subscription(session, id, removed);
        queue
    }

    /// Unhooks a removed subscription and returns its unsettled messages.
    pub(super) fn end_subscription(
        &mut self,
        session: SessionId,
        id: &str,
        subscription: Subscription,
    ) {
        if let Some(entry) = self.sessions.get_mut(&session) {
            for unacked in &subscription.unacked {
                entry.ack_index.remove(&unacked.ack_id);
            }
        }
        match &subscription.target {
            Target::Topic {
                pattern,
                subscriber,
            } => {
                let key = (subscriber.session, subscriber.id.clone());
                self.topics.remove(pattern, &key);
                // Once removed, no publisher is still pushing to it: the
                // UNSUBSCRIBE's RECEIPT, sent after this, is the last word.
                self.index
                    .remove(pattern, &IndexKey::Subscription(key.0, key.1));
                self.subscribers_changed(pattern);
            }
            Target::Queue(name) => self.remove_consumer(name, session, id),
            Target::Subscribers(key) => self.unwatch(key, session, id),
        }
        self.return_unacked(subscription.unacked);
    }

    pub(super) fn remove_session(&mut self, session: SessionId) {
        let Some(mut entry) = self.sessions.remove(&session) else {
            return;
        };
        let reply_queues = std::mem::take(&mut entry.reply_queues);
        self.subscription_count = self
            .subscription_count
            .saturating_sub(entry.subscriptions.len());
        self.reply_queue_count = self.reply_queue_count.saturating_sub(reply_queues.len());
        for (id, subscription) in entry.subscriptions.drain() {
            self.end_subscription(session, &id, subscription);
        }
        for name in reply_queues {
            self.queues.remove(&name);
            self.attention.remove(&name);
        }
    }

    /// The slow-consumer policy of a topic subscription: the first rule whose
    /// pattern matches the subscription's destination (its wildcards read as
    /// plain words), else the default.
    pub(super) fn slow_consumer_policy(&self, pattern: &[PatternWord]) -> SlowConsumerPolicy {
        let words: Vec<&str> = pattern
            .iter()
            .map(|word| match word {
                PatternWord::Exact(word) => &**word,
                PatternWord::One => "*",
                PatternWord::Many => "#",
            })
            .collect();
        self.slow_consumer_rules
            .iter()
            .find(|(rule, _)| destination::pattern_matches(rule, &words))
            .map_or(self.slow_consumer_default, |(_, policy)| *policy)
    }

    /// Logs once per slow session and removes it.
    pub(super) fn cut_off_slow(&mut self, slow: Vec<SessionId>) {
        for session in slow {
            if self.sessions.contains_key(&session) {
                warn!(session = %session, "slow consumer: outbound budget exceeded, disconnecting");
                self.remove_session(session);
            }
        }
    }
}
