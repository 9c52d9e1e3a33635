//! SENDs whose RECEIPT waits for the cluster engine: a queue SEND stored
//! in the engine, and a persistent topic SEND kept there for the durable
//! subscriptions (the rest of SEND: `send.rs`).

use super::{CloseReason, Session, SessionError};
use crate::queue::{QueueEngine, QueueSend};
use crate::router::message::Publication;
use crate::router::RouterCommand;
use std::sync::Arc;
use stomp_protocol::Frame;

impl Session {
    /// A queue SEND on the cluster engine: stored there (confirmed when a
    /// RECEIPT or `persistent:true` asks for it), then the RECEIPT. With
    /// `pipelined` the confirmation is awaited in the background, in order
    /// (`confirm.rs`), and the session reads on. A SEND the engine did not
    /// take is an ERROR, never a RECEIPT.
    pub(super) async fn send_to_engine(
        &mut self,
        engine: &dyn QueueEngine,
        frame: &Frame,
        publication: Publication,
        pipelined: bool,
    ) -> Result<Option<Arc<str>>, SessionError> {
        if publication.reply_queue.is_some() {
            // Reply queues live in one node's router: a responder on another
            // node could not answer. Refused rather than half working.
            return Err(SessionError::new(
                "reply-to /temp-queue/ on queue SENDs is not supported on the cluster engine",
                CloseReason::PolicyViolation,
            ));
        }
        let id = publication.id.clone();
        // The client's own `message-id`, scoped by its client id, makes a
        // retried SEND (even on another connection or node) the same
        // message to the engine's duplicate detection.
        let dedup_id = match frame.get("message-id") {
            Some(client_id) => format!(
                "c/{}/{client_id}",
                self.client_id.as_deref().unwrap_or_default()
            ),
            None => format!("b/{id}"),
        };
        let send = QueueSend {
            id: id.clone(),
            destination: publication.destination,
            headers: publication.headers,
            body: publication.body,
            expires_at: publication.expires_at,
            dedup_id,
            confirm: publication.persistent || frame.get("receipt").is_some(),
            arguments: publication.queue_arguments,
        };
        let confirm = send.confirm;
        let not_stored = |message: String| {
            let reason = crate::queue::close_reason(&message);
            SessionError::new(message, reason)
        };
        let ack = engine.publish(send).await.map_err(not_stored)?;
        if pipelined && confirm {
            let receipt = frame.get("receipt").map(str::to_owned);
            self.confirmations
                .push(&self.context.router, self.id, ack, receipt)
                .await?;
            return Ok(Some(id));
        }
        ack.await.map_err(not_stored)?;
        self.receipt(frame).await?;
        Ok(Some(id))
    }

    /// A persistent topic SEND with a RECEIPT when the export seam confirms
    /// (the cluster: durable subscriptions live in the engine), fanned out
    /// already: the router's part (`for_router`), then the RECEIPT once the
    /// engine has kept it for them, or ERROR if it could not.
    pub(super) async fn send_kept_topic(
        &mut self,
        frame: &Frame,
        publication: Publication,
        for_router: bool,
        ack: crate::fanout::ExportAck,
    ) -> Result<Option<Arc<str>>, SessionError> {
        let id = publication.id.clone();
        if for_router {
            // The router fans it out (and exports it) or refuses it with
            // ERROR; the RECEIPT follows the engine's answer.
            self.route(RouterCommand::Publish {
                session: self.id,
                publication,
                receipt: None,
            })
            .await?;
            self.router_ahead = true;
            self.await_router().await?;
        }
        // Not exported (expired, refused): nothing to wait for.
        self.context.topics.export().forget_confirm(&id);
        if let Ok(Err(message)) = ack.await {
            return Err(SessionError::new(message, CloseReason::InternalError));
        }
        self.receipt(frame).await?;
        Ok(Some(id))
    }
}
