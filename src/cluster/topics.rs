//! Topics across nodes: the export half ([`NatsTopics`], the index's
//! `TopicExport`) and the inbound half ([`Inbound`]: NATS subscriptions for
//! the patterns local subscribers use, and their messages fanned out
//! locally).
//!
//! Outgoing: `export` (on the publishing path, never waiting) puts the
//! message into a bounded queue; one task publishes it on the topic's
//! subject on the one NATS connection, so each publisher's order holds.
//! The connection is made with `no_echo`: a node never hears its own.
//!
//! Incoming: each subscription entry of the index (auto-ack and
//! client-ack; durable ones live in the engine, `durables.rs`) maps to one subject
//! (`subject::pattern_subject`); subjects are ref-counted over the entries,
//! and one task keeps a NATS subscription per subject in use (the table:
//! `interest.rs`). NATS sends a
//! message once per matching subscription of the connection (`a.*` and
//! `*.b` both hear `a.b`), so a message that came through subject S goes
//! only to the entries whose subject is S: each entry hears it once,
//! through its own subscription, in order. Auto-ack entries get it pushed
//! by the reader; client-ack ones through the router
//! (`RouterCommand::Remote`, naming them). Messages from elsewhere go to
//! local subscribers only, never exported again.
//!
//! Live-feed messages (`export_feed`) take the same outgoing queue to the
//! feed stream's subjects instead (`feeds.rs` reads them back), and a
//! persistent topic SEND with a receipt goes out as a JetStream publish
//! (`confirm.rs`); the queue's task is in `outgoing.rs`.

use super::confirm::{Confirm, Confirms};
use super::counts::Counts;
use super::feeds::confirmation;
use super::interest::Interest;
use super::outgoing::Outgoing;
use super::subject::{
    durable_feed_subject, feed_subject, pattern_subject, topic_subject, topic_words,
};
use super::wire;
use crate::fanout::{ExportAck, FeedAck, IndexKey, InterestHold, TopicExport, TopicIndex};
use crate::metrics::Metrics;
use crate::model::destination::PatternWord;
use crate::model::message::Message;
use crate::router::{RouterCommand, RouterHandle};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::RequestErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Messages waiting to be published to the engine.
const MAX_OUTGOING_MESSAGES: usize = 16_384;
/// Their bytes; past either bound a message is not sent to other nodes.
const MAX_OUTGOING_BYTES: usize = 64 << 20;
/// How long new interest may wait for the server's answer to a probe: an
/// engine outage delays a topic SUBSCRIBE's RECEIPT by this much at most
/// (the client subscribes again on reconnect by itself).
const MAX_FLUSH_WAIT: Duration = Duration::from_secs(5);

/// The export half: the topic index's [`TopicExport`] on a NATS engine.
#[derive(Debug)]
pub struct NatsTopics {
    prefix: Arc<str>,
    /// To the publishing task; bounded by [`MAX_OUTGOING_MESSAGES`].
    outgoing_tx: mpsc::Sender<Outgoing>,
    /// Bytes in that queue, bounded by [`MAX_OUTGOING_BYTES`].
    outgoing_bytes: Arc<AtomicUsize>,
    /// Messages not sent to other nodes because the queue was full.
    dropped: AtomicU64,
    interest: Arc<Interest>,
    /// Other nodes' subscriptions (`counts.rs`).
    counts: Arc<Counts>,
    /// Confirmations asked for (`confirm.rs`).
    confirms: Confirms,
}

/// The inbound half, started once the index exists.
#[derive(Debug)]
pub struct Inbound {
    client: async_nats::Client,
    prefix: Arc<str>,
    outgoing_rx: mpsc::Receiver<Outgoing>,
    outgoing_bytes: Arc<AtomicUsize>,
    interest: Arc<Interest>,
    counts: Arc<Counts>,
}

/// Both halves of topics on `client`, under `prefix`.
pub fn topics(client: async_nats::Client, prefix: &str) -> (NatsTopics, Inbound) {
    let (outgoing_tx, outgoing_rx) = mpsc::channel(MAX_OUTGOING_MESSAGES);
    let prefix: Arc<str> = prefix.into();
    let outgoing_bytes = Arc::new(AtomicUsize::new(0));
    let interest = Arc::new(Interest::default());
    let counts = Arc::new(Counts::new(prefix.clone()));
    (
        NatsTopics {
            prefix: prefix.clone(),
            outgoing_tx,
            outgoing_bytes: outgoing_bytes.clone(),
            dropped: AtomicU64::new(0),
            interest: interest.clone(),
            counts: counts.clone(),
            confirms: Confirms::default(),
        },
        Inbound {
            client,
            prefix,
            outgoing_rx,
            outgoing_bytes,
            interest,
            counts,
        },
    )
}

impl NatsTopics {
    /// Queues `message` for `subject` without waiting; past the bounds it
    /// is dropped (counted, logged at powers of two).
    fn queue(
        &self,
        subject: String,
        message: &Message,
        confirm: Option<oneshot::Sender<Result<PublishAckFuture, String>>>,
        kept: Option<Confirm>,
        copy: Option<String>,
    ) {
        let payload = wire::encode(message);
        let size = payload.len();
        let queued = self.outgoing_bytes.fetch_add(size, Ordering::AcqRel);
        let outgoing = Outgoing {
            subject,
            payload,
            confirm,
            kept,
            copy,
        };
        let refused = match queued + size > MAX_OUTGOING_BYTES {
            true => Some(outgoing),
            false => self
                .outgoing_tx
                .try_send(outgoing)
                .err()
                .map(|e| e.into_inner()),
        };
        // Dropped when not queued: a waiting SEND then hears it failed.
        if let Some(refused) = refused {
            super::confirm::refuse(refused.kept);
            self.outgoing_bytes.fetch_sub(size, Ordering::AcqRel);
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged at 1, 2, 4, 8, ...: a flood cannot flood the log.
            if dropped.is_power_of_two() {
                warn!(
                    dropped,
                    "the cluster engine is behind: topic messages not sent to other nodes"
                );
            }
        }
    }
}

impl TopicExport for NatsTopics {
    fn export(&self, words: &[Box<str>], message: &Message) {
        let kept = self.confirms.take(&message.id);
        let subject = topic_subject(&self.prefix, words);
        self.queue(subject, message, None, kept, None);
    }

    fn export_feed(&self, words: &[Box<str>], message: &Message, confirm: bool) -> Option<FeedAck> {
        // The same queue as plain topic messages: a publisher's order holds
        // across both.
        let subject = feed_subject(&self.prefix, words);
        // And a copy that durable subscriptions whose pattern matches keep
        // (wildcards, destinations made feeds by x-retain): dropped by the
        // server when none does (`durables.rs`).
        let copy = Some(durable_feed_subject(&self.prefix, words));
        if !confirm {
            self.queue(subject, message, None, None, copy);
            return None;
        }
        let (confirm_tx, confirm_rx) = oneshot::channel();
        self.queue(subject, message, Some(confirm_tx), None, copy);
        Some(confirmation(confirm_rx))
    }

    fn subscribed(&self, pattern: &[PatternWord], key: &IndexKey) {
        self.interest
            .add(key, pattern_subject(&self.prefix, pattern));
    }

    fn unsubscribed(&self, key: &IndexKey) {
        self.interest.remove(key);
    }

    fn remote_subscribers(&self, words: &[Box<str>]) -> usize {
        self.counts.elsewhere(words)
    }

    fn confirm(&self, id: &Arc<str>) -> Option<ExportAck> {
        Some(self.confirms.ask(id))
    }

    fn forget_confirm(&self, id: &Arc<str>) {
        let _ = self.confirms.take(id);
    }

    fn hold_interest(&self, pattern: &[PatternWord]) -> Option<InterestHold> {
        let subject: Arc<str> = pattern_subject(&self.prefix, pattern).into();
        let wanted = self.interest.hold(subject.clone());
        let interest = self.interest.clone();
        Some(InterestHold::new(
            self.interest.flushed(wanted),
            Box::new(move || interest.release(&subject)),
        ))
    }
}

impl Inbound {
    /// Shares this node's subscriber counts, hears the other nodes' (`counts.rs`).
    pub fn share_counts(&self, client: async_nats::Client, router: RouterHandle) {
        let interest = self.interest.clone();
        super::counts::spawn(
            self.counts.clone(),
            move || interest.counts(),
            client,
            router,
        );
    }

    /// Starts the publishing task and the interest task (which starts one
    /// reader per subscribed subject), all delivering into `index`, and
    /// through `router` to its client-ack subscriptions.
    pub fn spawn(self, index: Arc<TopicIndex>, router: RouterHandle, metrics: Arc<Metrics>) {
        let Inbound {
            client,
            prefix,
            outgoing_rx,
            outgoing_bytes,
            interest,
            ..
        } = self;
        let jetstream = async_nats::jetstream::new(client.clone());
        tokio::spawn(super::outgoing::publish_loop(
            client.clone(),
            jetstream,
            outgoing_rx,
            outgoing_bytes,
        ));
        let local = Local {
            index,
            router,
            metrics,
        };
        tokio::spawn(interest_loop(client, prefix, interest, Arc::new(local)));
    }
}

/// Where messages from other nodes go: the index's direct subscribers,
/// and the router's client-ack ones.
#[derive(Debug)]
struct Local {
    index: Arc<TopicIndex>,
    router: RouterHandle,
    /// Counts what the readers push to auto-ack subscribers.
    metrics: Arc<Metrics>,
}

/// Keeps one NATS subscription per subject local subscribers need.
async fn interest_loop(
    client: async_nats::Client,
    prefix: Arc<str>,
    interest: Arc<Interest>,
    local: Arc<Local>,
) {
    // Each subscribed subject's reader stops when its sender is dropped.
    let mut active: HashMap<Arc<str>, oneshot::Sender<()>> = HashMap::new();
    loop {
        let (generation, wanted) = interest.subjects();
        active.retain(|subject, _| wanted.contains(subject));
        for subject in wanted {
            if active.contains_key(&subject) {
                continue;
            }
            match client.subscribe(subject.to_string()).await {
                Ok(subscriber) => {
                    let (stop_tx, stop_rx) = oneshot::channel();
                    tokio::spawn(read(
                        subscriber,
                        stop_rx,
                        subject.clone(),
                        prefix.clone(),
                        interest.clone(),
                        local.clone(),
                    ));
                    active.insert(subject, stop_tx);
                }
                // Only when the client is closed for good.
                Err(error) => warn!(%subject, %error, "cannot subscribe on the engine"),
            }
        }
        if generation > *interest.flushed_tx.borrow() {
            // A round trip to the server (a request nobody answers: the
            // server itself says "no responders") comes back after it has
            // taken every SUB sent before it: from then on, what a
            // publisher on the same server sends reaches us. Other servers
            // learn of it over their routes a moment later (not awaited).
            // (`flush` only writes the socket; it waits for no answer.)
            let probe = format!("{prefix}.interest-sync");
            let answered =
                tokio::time::timeout(MAX_FLUSH_WAIT, client.request(probe, Bytes::new()));
            match answered.await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) if error.kind() == RequestErrorKind::NoResponders => {}
                Ok(Err(error)) => debug!(%error, "new topic interest not confirmed by the engine"),
                Err(_) => debug!("new topic interest not confirmed within {MAX_FLUSH_WAIT:?}"),
            }
            interest.flushed_tx.send_replace(generation);
        }
        interest.changed.notified().await;
    }
}

/// Delivers what arrives on one subscription until told to stop.
async fn read(
    mut subscriber: async_nats::Subscriber,
    mut stop_rx: oneshot::Receiver<()>,
    subject: Arc<str>,
    prefix: Arc<str>,
    interest: Arc<Interest>,
    local: Arc<Local>,
) {
    loop {
        let message = tokio::select! {
            biased;
            _ = &mut stop_rx => break,
            message = subscriber.next() => message,
        };
        let Some(message) = message else { break };
        let Some(words) = topic_words(&prefix, &message.subject) else {
            debug!(subject = %message.subject, "not a topic subject: ignored");
            continue;
        };
        let Some(mut decoded) = wire::decode(message.payload) else {
            debug!(subject = %message.subject, "not a topic message: ignored");
            continue;
        };
        let (pushed, for_router) = local
            .index
            .publish_remote(&words, &mut decoded, |key| interest.wants(key, &subject));
        local
            .metrics
            .engine_delivered_add(&decoded.destination, pushed);
        let subscriptions: Vec<_> = for_router
            .into_iter()
            .filter_map(IndexKey::into_subscription)
            .collect();
        if subscriptions.is_empty() {
            continue;
        }
        // Waits while the router is behind: this subscription's NATS
        // buffer takes the wait (in order, so per-publisher order holds).
        let remote = RouterCommand::Remote {
            words,
            message: decoded,
            subscriptions,
            durables: false,
        };
        if local.router.send(remote).await.is_err() {
            break;
        }
    }
    if let Err(error) = subscriber.unsubscribe().await {
        debug!(%subject, %error, "unsubscribe from the engine failed");
    }
}
