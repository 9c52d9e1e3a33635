//! SUBSCRIBE: validate id, ack mode, prefetch and destination, then register
//! with the router.

use super::{required, CloseReason, Flow, Session, SessionError};
use crate::queue::QueueArguments;
use crate::router::destination::subscribe_target;
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
        let target = subscribe_target(destination, &self.context.destination_limits)
            .map_err(|e| SessionError::protocol(e.0))?;
        let prefetch = prefetch(frame)?;
        let arguments =
            QueueArguments::from_headers(&frame.headers).map_err(SessionError::protocol)?;
        self.subscriptions.insert(id.clone());
        self.route(RouterCommand::Subscribe {
            session: self.id,
            id,
            target,
            ack,
            prefetch,
            arguments,
            receipt: frame.get("receipt").map(str::to_owned),
        })
        .await?;
        Ok(Flow::Continue)
    }
}

/// `prefetch-count` (RabbitMQ), or its alias `activemq.prefetchSize`.
fn prefetch(frame: &Frame) -> Result<Option<usize>, SessionError> {
    let Some((name, value)) = ["prefetch-count", "activemq.prefetchSize"]
        .into_iter()
        .find_map(|name| frame.get(name).map(|value| (name, value)))
    else {
        return Ok(None);
    };
    match value.parse::<usize>() {
        Ok(count) if count > 0 => Ok(Some(count)),
        _ => Err(SessionError::protocol(format!(
            "{name} '{value}' is not a positive integer"
        ))),
    }
}
