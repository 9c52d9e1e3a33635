//! The seam for a second engine: where a topic message goes besides local
//! subscribers.

use crate::model::message::Message;

/// Receives every topic message once, from whoever fans it out (the
/// publishing session, or the router for publications it handles whole),
/// in each publisher's order. A cluster implementation would forward it to
/// other brokers (a NATS subject per topic); it must not block, since it is
/// called on the publishing path.
pub trait TopicExport: Send + Sync + std::fmt::Debug {
    /// Hands `message`, published to the topic `words`, onward.
    fn export(&self, words: &[Box<str>], message: &Message);
}

/// A single broker: topic messages go to local subscribers only.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalOnly;

impl TopicExport for LocalOnly {
    fn export(&self, _words: &[Box<str>], _message: &Message) {}
}
