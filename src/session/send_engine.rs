//! SENDs whose RECEIPT waits for the cluster engine: a queue SEND stored
//! in the engine, a persistent topic SEND kept there for the durable
//! subscriptions, and a reply to another node's reply queue (the rest of
//! SEND: `send.rs`).

use super::{CloseReason, Session, SessionError};
use crate::model::destination::SendTarget;
use crate::model::message::Message;
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
        self.make_reply_queue(&publication).await?;
        let id = publication.id.clone();
        let dedup_id = self
            .client_dedup_id(frame)
            .unwrap_or_else(|| format!("b/{id}"));
        let confirm = publication.persistent || frame.get("receipt").is_some();
        let send = queue_send(publication, dedup_id, confirm);
        let not_stored = |message: String| {
            let reason = crate::queue::close_reason(&message);
            SessionError::new(message, reason)
        };
        let ack = engine.publish(send).await.map_err(not_stored)?;
        // Pipelined even without a RECEIPT to wait for: a full queue's
        // refusal is still the client's ERROR, after those of earlier SENDs.
        if pipelined {
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

    /// The engine's duplicate-detection id of a SEND with the client's own
    /// `message-id`: scoped by its client id, it makes a retried SEND (even
    /// on another connection or node, alone or in a COMMIT) the same
    /// message to the engine. `None`: the broker's message id is used.
    pub(super) fn client_dedup_id(&self, frame: &Frame) -> Option<String> {
        let client_id = frame.get("message-id")?;
        Some(format!(
            "c/{}/{client_id}",
            self.client_id.as_deref().unwrap_or_default()
        ))
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

    /// Makes the publication's reply queue (`reply-to:/temp-queue/`) in
    /// the router before the engine has the request: a responder, on any
    /// node, may answer at once. `Err` if the router refused it: the ERROR
    /// goes out after the RECEIPTs of the SENDs still being confirmed.
    pub(super) async fn make_reply_queue(
        &mut self,
        publication: &Publication,
    ) -> Result<(), SessionError> {
        let Some(reply_queue) = publication.reply_queue.clone() else {
            return Ok(());
        };
        let (made, answer) = tokio::sync::oneshot::channel();
        self.route(RouterCommand::ReplyQueue {
            session: self.id,
            reply_queue,
            made,
        })
        .await?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => {
                // Earlier SENDs' RECEIPTs (or their ERROR) first, and
                // queued for the connection before this ERROR is written.
                self.confirmations.drain().await?;
                self.router_ahead = true;
                self.await_router().await?;
                Err(SessionError::new(message, CloseReason::PolicyViolation))
            }
            Err(_) => Err(SessionError::new(
                "the server is shutting down",
                CloseReason::GoingAway,
            )),
        }
    }

    /// Whether `publication` is a reply to another node's reply queue.
    pub(super) fn reply_elsewhere(
        &self,
        engine: &dyn QueueEngine,
        publication: &Publication,
    ) -> bool {
        matches!(&publication.target, SendTarget::ReplyQueue(name) if engine.reply_elsewhere(name))
    }

    /// Passes a reply to another node's reply queue on to that node.
    pub(super) async fn send_reply(
        &mut self,
        engine: &dyn QueueEngine,
        publication: Publication,
    ) -> Result<(), SessionError> {
        // A reply may itself ask for a reply.
        self.make_reply_queue(&publication).await?;
        let message = Message {
            id: publication.id,
            text: std::str::from_utf8(&publication.body).is_ok(),
            destination: publication.destination,
            headers: publication.headers,
            body: publication.body,
            expires_at: publication.expires_at,
        };
        engine
            .send_reply(message)
            .await
            .map_err(|message| SessionError::new(message, CloseReason::InternalError))
    }
}

/// A queue publication as the engine stores it.
pub(super) fn queue_send(publication: Publication, dedup_id: String, confirm: bool) -> QueueSend {
    QueueSend {
        id: publication.id,
        destination: publication.destination,
        headers: publication.headers,
        body: publication.body,
        expires_at: publication.expires_at,
        dedup_id,
        confirm,
        arguments: publication.queue_arguments,
    }
}
