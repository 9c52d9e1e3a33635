//! UNSUBSCRIBE: the id must name an active subscription of this connection.

use super::{CloseReason, Flow, Session, SessionError};
use crate::router::RouterCommand;
use std::sync::Arc;
use stomp_protocol::{Frame, Version};

impl Session {
    pub(super) async fn on_unsubscribe(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        // STOMP 1.0 allowed naming the subscription by its destination.
        let id: Arc<str> = match (
            frame.get("id"),
            frame.get("destination"),
            self.connected_version(),
        ) {
            (Some(id), _, _) => id.into(),
            (None, Some(destination), Version::V1_0) => destination.into(),
            _ => return Err(SessionError::missing_header("UNSUBSCRIBE", "id")),
        };
        if self.subscriptions.remove(&id).is_none() {
            return Err(SessionError::protocol(format!(
                "no subscription with id '{id}' on this connection"
            )));
        }
        // Any dialect's durable header on UNSUBSCRIBE deletes the durable
        // subscription too; without one it only detaches.
        let remove_durable = frame.get("durable-subscription-name").is_some()
            || frame.get("activemq.subscriptionName").is_some()
            || frame.get("durable") == Some("true");
        if let Some(engine) = &self.context.queue_engine {
            let removed = remove_durable
                && engine
                    .remove_durable(self.id, &id)
                    .await
                    .map_err(|message| SessionError::new(message, CloseReason::InternalError))?;
            if removed || engine.unsubscribe(self.id, &id).await {
                return self.receipt(frame).await.map(|()| Flow::Continue);
            }
        }
        // This session's next direct fan-out must not reach it any more.
        self.router_ahead = true;
        self.route(RouterCommand::Unsubscribe {
            session: self.id,
            id,
            remove_durable,
            receipt: frame.get("receipt").map(str::to_owned),
        })
        .await?;
        Ok(Flow::Continue)
    }
}
