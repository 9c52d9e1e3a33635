//! The seam for a second engine: where a topic message goes besides local
//! subscribers, and which patterns local subscribers want from elsewhere.

use super::index_key::IndexKey;
use crate::model::destination::PatternWord;
use crate::model::message::Message;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Resolves once the engine has what [`TopicExport::confirm`] asked about
/// (`Err`: the ERROR message for the client); a dropped sender: nothing to
/// confirm (the message was not exported).
pub type ExportAck = tokio::sync::oneshot::Receiver<Result<(), String>>;

/// The engine's word on one feed message: `Ok` with the message's stream
/// sequence once it has stored it (a JetStream PubAck), `Err` (what to tell
/// the client) if it did not.
pub type FeedAck = Pin<Box<dyn Future<Output = Result<u64, String>> + Send>>;

/// Resolves once the engine holds the interest asked for.
pub type InterestFlushed = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Interest in one pattern taken ahead of its subscription entry, so that a
/// SUBSCRIBE's RECEIPT can wait for the engine before the entry exists (no
/// MESSAGE may precede the RECEIPT). Let go when dropped; the entry, once
/// in the index, holds the interest itself.
pub struct InterestHold {
    /// Resolves once the engine holds the interest.
    pub flushed: InterestFlushed,
    /// Gives the held interest back.
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl InterestHold {
    /// A hold that `release` gives back, ready when `flushed` resolves.
    pub fn new(flushed: InterestFlushed, release: Box<dyn FnOnce() + Send>) -> InterestHold {
        InterestHold {
            flushed,
            release: Some(release),
        }
    }
}

impl Drop for InterestHold {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for InterestHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InterestHold")
    }
}

/// Receives every topic message once, from whoever fans it out (the
/// publishing session, or the router for publications it handles whole),
/// in each publisher's order, and hears of every subscription entry but
/// durable ones (auto-ack and client-ack) as the index gains and loses it. A cluster implementation forwards the
/// messages to other brokers (a NATS subject per topic) and asks the engine
/// for the patterns local subscribers use. Every method must not block:
/// `export` is called on the publishing path, the others by the index's
/// only writer under its write lock.
pub trait TopicExport: Send + Sync + std::fmt::Debug {
    /// Hands `message`, published to the topic `words`, onward.
    fn export(&self, words: &[Box<str>], message: &Message);

    /// A subscription entry `key` with `pattern` is in the index (called
    /// again if the entry is replaced under the same key).
    fn subscribed(&self, _pattern: &[PatternWord], _key: &IndexKey) {}

    /// The subscription entry `key` has left the index.
    fn unsubscribed(&self, _key: &IndexKey) {}

    /// Asks that the message with `id`, when exported, be confirmed by the
    /// engine where it keeps messages (durable subscriptions): the RECEIPT
    /// of a persistent topic SEND waits for it. `None`: nothing to wait for.
    fn confirm(&self, _id: &Arc<str>) -> Option<ExportAck> {
        None
    }

    /// Withdraws a [`confirm`](Self::confirm) whose message was not exported.
    fn forget_confirm(&self, _id: &Arc<str>) {}

    /// Subscriptions on other brokers a message to topic `words` would
    /// reach, as far as this one knows (for `/meta/subscribers/` counts).
    fn remote_subscribers(&self, _words: &[Box<str>]) -> usize {
        0
    }

    /// Hands `message`, published to the feed destination `words`, to the
    /// engine's feed stream. Called INSTEAD of local pushes and `export`
    /// when the feeds are the engine's (`Feeds::owned_by_engine`): the
    /// message comes back numbered from the engine to every node, this one
    /// too. With `confirm` (the SEND asked for a RECEIPT, or is
    /// persistent), returns the engine's confirmation to wait for before
    /// the RECEIPT.
    fn export_feed(
        &self,
        _words: &[Box<str>],
        _message: &Message,
        _confirm: bool,
    ) -> Option<FeedAck> {
        None
    }

    /// Takes interest in `pattern` ahead of its entry: a topic SUBSCRIBE
    /// with a receipt waits for the engine to hold it before the router adds
    /// the entry and sends the RECEIPT, so that what other nodes publish
    /// after the RECEIPT reaches the subscription. `None`: nothing to wait
    /// for (a single broker).
    fn hold_interest(&self, _pattern: &[PatternWord]) -> Option<InterestHold> {
        None
    }
}

/// A single broker: topic messages go to local subscribers only.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalOnly;

impl TopicExport for LocalOnly {
    fn export(&self, _words: &[Box<str>], _message: &Message) {}
}
