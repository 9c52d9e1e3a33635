//! The name of one entry of the topic index ([`IndexKey`]), on its own so
//! that the index and its export seam can both name it.

use crate::model::session_id::SessionId;
use std::sync::Arc;

/// Names one entry of the index, unique under its pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexKey {
    /// A topic subscription: its session and subscription id.
    Subscription(SessionId, Arc<str>),
    /// A durable topic subscription: its queue's name.
    Durable(Arc<str>),
}

impl IndexKey {
    /// The session and subscription id of a topic subscription's entry;
    /// `None` for a durable's.
    pub fn into_subscription(self) -> Option<(SessionId, Arc<str>)> {
        match self {
            IndexKey::Subscription(session, id) => Some((session, id)),
            IndexKey::Durable(_) => None,
        }
    }
}
