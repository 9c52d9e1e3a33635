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
//! and one task keeps a NATS subscription per subject in use. NATS sends a
//! message once per matching subscription of the connection (`a.*` and
//! `*.b` both hear `a.b`), so a message that came through subject S goes
//! only to the entries whose subject is S: each entry hears it once,
//! through its own subscription, in order. Auto-ack entries get it pushed
//! by the reader; client-ack ones through the router
//! (`RouterCommand::Remote`, naming them). Messages from elsewhere go to
//! local subscribers only, never exported again.

use super::confirm::{publish_confirmed, Confirm, Confirms};
use super::counts::Counts;
use super::subject::{pattern_subject, topic_subject, topic_words};
use super::wire;
use crate::fanout::{ExportAck, IndexKey, TopicExport, TopicIndex};
use crate::model::destination::PatternWord;
use crate::model::message::Message;
use crate::router::{RouterCommand, RouterHandle};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{debug, warn};

/// Messages waiting to be published to the engine.
const MAX_OUTGOING_MESSAGES: usize = 16_384;
/// Their bytes; past either bound a message is not sent to other nodes.
const MAX_OUTGOING_BYTES: usize = 64 << 20;

/// One message on its way to the engine.
#[derive(Debug)]
struct Outgoing {
    subject: String,
    payload: Bytes,
    /// Set for a persistent topic SEND with a RECEIPT (`confirm.rs`).
    confirm: Option<Confirm>,
}

/// The subjects local subscribers need, by index entry.
#[derive(Debug, Default)]
struct Table {
    /// Each auto-ack entry's subject.
    by_key: HashMap<IndexKey, Arc<str>>,
    /// Entries per subject; a subject is subscribed while its count is above 0.
    counts: HashMap<Arc<str>, usize>,
}

/// The interest of this node's subscribers, shared by the export half (the
/// index's writer changes it) and the inbound tasks (which read it).
#[derive(Debug, Default)]
struct Interest {
    /// A leaf lock: taken under the index's lock (write: changes; read:
    /// choosing entries for an incoming message), or alone; never held
    /// while taking another.
    table: Mutex<Table>,
    /// Woken when a subject's count leaves or reaches 0: the interest task
    /// brings NATS into line.
    changed: Notify,
}

impl Interest {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, key: &IndexKey, subject: String) {
        let mut table = self.table();
        if table.by_key.get(key).is_some_and(|s| **s == *subject) {
            return;
        }
        self.forget(&mut table, key);
        let subject: Arc<str> = subject.into();
        table.by_key.insert(key.clone(), subject.clone());
        let count = table.counts.entry(subject).or_default();
        *count += 1;
        if *count == 1 {
            self.changed.notify_one();
        }
    }

    fn remove(&self, key: &IndexKey) {
        let mut table = self.table();
        self.forget(&mut table, key);
    }

    fn forget(&self, table: &mut Table, key: &IndexKey) {
        let Some(subject) = table.by_key.remove(key) else {
            return;
        };
        if let Some(count) = table.counts.get_mut(&subject) {
            *count -= 1;
            if *count == 0 {
                table.counts.remove(&subject);
                self.changed.notify_one();
            }
        }
    }

    fn wants(&self, key: &IndexKey, subject: &str) -> bool {
        self.table()
            .by_key
            .get(key)
            .is_some_and(|s| **s == *subject)
    }

    fn subjects(&self) -> HashSet<Arc<str>> {
        self.table().counts.keys().cloned().collect()
    }

    /// Entries per subject, for other nodes' subscriber counts.
    fn counts(&self) -> HashMap<Arc<str>, usize> {
        self.table().counts.clone()
    }
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

impl TopicExport for NatsTopics {
    fn export(&self, words: &[Box<str>], message: &Message) {
        let payload = wire::encode(message);
        let size = payload.len();
        let queued = self.outgoing_bytes.fetch_add(size, Ordering::AcqRel);
        let confirm = self.confirms.take(&message.id);
        let outgoing = Outgoing {
            subject: topic_subject(&self.prefix, words),
            payload,
            confirm,
        };
        let refused = match queued + size > MAX_OUTGOING_BYTES {
            true => Some(outgoing),
            false => self
                .outgoing_tx
                .try_send(outgoing)
                .err()
                .map(|e| e.into_inner()),
        };
        if let Some(refused) = refused {
            super::confirm::refuse(refused.confirm);
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
    pub fn spawn(self, index: Arc<TopicIndex>, router: RouterHandle) {
        let Inbound {
            client,
            prefix,
            outgoing_rx,
            outgoing_bytes,
            interest,
            ..
        } = self;
        tokio::spawn(publish_loop(client.clone(), outgoing_rx, outgoing_bytes));
        let local = Local { index, router };
        tokio::spawn(interest_loop(client, prefix, interest, Arc::new(local)));
    }
}

/// Publishes what `export` queued, in order, on the one connection.
async fn publish_loop(
    client: async_nats::Client,
    mut outgoing_rx: mpsc::Receiver<Outgoing>,
    outgoing_bytes: Arc<AtomicUsize>,
) {
    // For confirmed messages; its first request adds one inbox subscription.
    let jetstream = async_nats::jetstream::new(client.clone());
    let mut batch = Vec::with_capacity(256);
    while outgoing_rx.recv_many(&mut batch, 256).await > 0 {
        for Outgoing {
            subject,
            payload,
            confirm,
        } in batch.drain(..)
        {
            outgoing_bytes.fetch_sub(payload.len(), Ordering::AcqRel);
            if let Some(confirm) = confirm {
                // The same one message, on the same connection and so in
                // order, with a reply subject for the PubAck.
                publish_confirmed(&jetstream, subject, payload, confirm).await;
                continue;
            }
            // Waits while the client's own buffer is full (reconnecting);
            // our bounded queue takes the rest.
            if let Err(error) = client.publish(subject, payload).await {
                debug!(%error, "topic message not published to the engine");
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
        let wanted = interest.subjects();
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
        };
        if local.router.send(remote).await.is_err() {
            break;
        }
    }
    if let Err(error) = subscriber.unsubscribe().await {
        debug!(%subject, %error, "unsubscribe from the engine failed");
    }
}
