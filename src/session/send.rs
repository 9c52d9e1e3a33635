//! SEND: validate, then hand the message to the router.

use super::{required, Flow, Session, SessionError};
use crate::router::destination::topic_words;
use crate::router::fanout::{Publication, NOT_PASSED_ON};
use crate::router::RouterCommand;
use stomp_protocol::Frame;

impl Session {
    pub(super) async fn on_send(&mut self, frame: Frame) -> Result<Flow, SessionError> {
        let destination = required(&frame, "destination")?;
        if frame.get("transaction").is_some() {
            return Err(transactions_unsupported());
        }
        let words = topic_words(destination, &self.context.destination_limits)
            .map_err(|e| SessionError::protocol(e.0))?;
        let publication = Publication {
            destination: destination.to_owned(),
            words,
            headers: frame
                .headers
                .iter()
                .filter(|(name, _)| !NOT_PASSED_ON.contains(name))
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            body: frame.body.clone(),
        };
        self.route(RouterCommand::Publish {
            session: self.id,
            publication,
            receipt: frame.get("receipt").map(str::to_owned),
        })
        .await?;
        Ok(Flow::Continue)
    }
}

/// Transactions come with queue semantics; until then they are refused plainly.
pub(super) fn transactions_unsupported() -> SessionError {
    SessionError::protocol("transactions are not supported by this server yet")
}
