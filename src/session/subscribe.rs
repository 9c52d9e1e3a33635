//! SUBSCRIBE: validate id, ack mode and pattern, then register with the router.

use super::{required, CloseReason, Flow, Session, SessionError};
use crate::router::destination::topic_pattern;
use crate::router::{AckMode, RouterCommand};
use std::sync::Arc;
use stomp_protocol::{Frame, Version};

impl Session {
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
        if self.subscriptions.contains(&id) {
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
        let pattern = topic_pattern(destination, &self.context.destination_limits)
            .map_err(|e| SessionError::protocol(e.0))?;
        self.subscriptions.insert(id.clone());
        self.route(RouterCommand::Subscribe {
            session: self.id,
            id,
            pattern,
            ack,
            receipt: frame.get("receipt").map(str::to_owned),
        })
        .await?;
        Ok(Flow::Continue)
    }
}
