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
//! client-ack; durable ones are for a later stage) maps to one subject
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
//! feed stream's subjects instead (`feeds.rs` reads them back).

use super::feeds::{confirmation, not_stored};
use super::interest::Interest;
use super::subject::{feed_subject, pattern_subject, topic_subject, topic_words};
use super::wire;
use crate::fanout::{FeedAck, IndexKey, InterestHold, TopicExport, TopicIndex};
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

/// One message on its way to the engine.
#[derive(Debug)]
struct Outgoing {
    subject: String,
    payload: Bytes,
    /// A feed message whose SEND waits for the feed stream's PubAck: it
    /// is published through JetStream and the PubAck's future (or why it
    /// could not be sent) goes here.
    confirm: Option<oneshot::Sender<Result<PublishAckFuture, String>>>,
}

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
}

/// The inbound half, started once the index exists.
#[derive(Debug)]
pub struct Inbound {
    client: async_nats::Client,
    prefix: Arc<str>,
    outgoing_rx: mpsc::Receiver<Outgoing>,
    outgoing_bytes: Arc<AtomicUsize>,
    interest: Arc<Interest>,
}

/// Both halves of topics on `client`, under `prefix`.
pub fn topics(client: async_nats::Client, prefix: &str) -> (NatsTopics, Inbound) {
    let (outgoing_tx, outgoing_rx) = mpsc::channel(MAX_OUTGOING_MESSAGES);
    let prefix: Arc<str> = prefix.into();
    let outgoing_bytes = Arc::new(AtomicUsize::new(0));
    let interest = Arc::new(Interest::default());
    (
        NatsTopics {
            prefix: prefix.clone(),
            outgoing_tx,
            outgoing_bytes: outgoing_bytes.clone(),
            dropped: AtomicU64::new(0),
            interest: interest.clone(),
        },
        Inbound {
            client,
            prefix,
            outgoing_rx,
            outgoing_bytes,
            interest,
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
    ) {
        let payload = wire::encode(message);
        let size = payload.len();
        let queued = self.outgoing_bytes.fetch_add(size, Ordering::AcqRel);
        let outgoing = Outgoing {
            subject,
            payload,
            confirm,
        };
        // Dropped when not queued: a waiting SEND then hears it failed.
        if queued + size > MAX_OUTGOING_BYTES || self.outgoing_tx.try_send(outgoing).is_err() {
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
        self.queue(topic_subject(&self.prefix, words), message, None);
    }

    fn export_feed(&self, words: &[Box<str>], message: &Message, confirm: bool) -> Option<FeedAck> {
        // The same queue as plain topic messages: a publisher's order holds
        // across both.
        let subject = feed_subject(&self.prefix, words);
        if !confirm {
            self.queue(subject, message, None);
            return None;
        }
        let (confirm_tx, confirm_rx) = oneshot::channel();
        self.queue(subject, message, Some(confirm_tx));
        Some(confirmation(confirm_rx))
    }

    fn subscribed(&self, pattern: &[PatternWord], key: &IndexKey) {
        self.interest
            .add(key, pattern_subject(&self.prefix, pattern));
    }

    fn unsubscribed(&self, key: &IndexKey) {
        self.interest.remove(key);
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
    /// Starts the publishing task and the interest task (which starts one
    /// reader per subscribed subject), all delivering into `index`, and
    /// through `router` to its client-ack subscriptions.
    pub fn spawn(self, index: Arc<TopicIndex>, router: RouterHandle) {
        let Inbound {
            client,
            prefix,
            outgoing_rx,
            outgoing_bytes,
            interest,
        } = self;
        let jetstream = async_nats::jetstream::new(client.clone());
        tokio::spawn(publish_loop(
            client.clone(),
            jetstream,
            outgoing_rx,
            outgoing_bytes,
        ));
        let local = Local { index, router };
        tokio::spawn(interest_loop(client, prefix, interest, Arc::new(local)));
    }
}

/// Publishes what `export` queued, in order, on the one connection.
async fn publish_loop(
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    mut outgoing_rx: mpsc::Receiver<Outgoing>,
    outgoing_bytes: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(256);
    let mut refused: u64 = 0;
    while outgoing_rx.recv_many(&mut batch, 256).await > 0 {
        for Outgoing {
            subject,
            payload,
            confirm,
        } in batch.drain(..)
        {
            outgoing_bytes.fetch_sub(payload.len(), Ordering::AcqRel);
            if let Some(confirm_tx) = confirm {
                // In line with the rest (order holds); the PubAck is
                // awaited by the SEND, not here.
                let sent = jetstream
                    .publish(subject, payload)
                    .await
                    .map_err(|e| not_stored(&e));
                let _ = confirm_tx.send(sent);
                continue;
            }
            // Waits while the client's own buffer is full (reconnecting);
            // our bounded queue takes the rest.
            if let Err(error) = client.publish(subject, payload).await {
                // Too large for the server's max_payload (warned at start)
                // or the client closed for good. Logged at 1, 2, 4, 8, ...
                refused += 1;
                if refused.is_power_of_two() {
                    warn!(%error, refused, "topic message not published to the engine");
                }
            }
        }
    }
}

/// Where messages from other nodes go: the index's direct subscribers,
/// and the router's client-ack ones.
#[derive(Debug)]
struct Local {
    index: Arc<TopicIndex>,
    router: RouterHandle,
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
        let (_pushed, for_router) = local
            .index
            .publish_remote(&words, &mut decoded, |key| interest.wants(key, &subject));
        let subscriptions: Vec<_> = for_router
            .into_iter()
            .filter_map(|key| match key {
                IndexKey::Subscription(session, id) => Some((session, id)),
                IndexKey::Durable(_) => None,
            })
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
