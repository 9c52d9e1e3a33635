//! The seam for a second engine: where a topic message goes besides local
//! subscribers, and which patterns local subscribers want from elsewhere.

use super::index_key::IndexKey;
use crate::model::destination::PatternWord;
use crate::model::message::Message;
use std::sync::Arc;

/// Resolves once the engine has what [`TopicExport::confirm`] asked about
/// (`Err`: the ERROR message for the client); a dropped sender: nothing to
/// confirm (the message was not exported).
pub type ExportAck = tokio::sync::oneshot::Receiver<Result<(), String>>;

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
}

/// A single broker: topic messages go to local subscribers only.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalOnly;

impl TopicExport for LocalOnly {
    fn export(&self, _words: &[Box<str>], _message: &Message) {}
}
