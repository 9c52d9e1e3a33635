//! ACK and NACK: header checks per version, then the router settles (or the
//! transaction holds them until COMMIT); a queue engine's deliveries are
//! settled by the engine (at COMMIT, in a transaction).

use super::{required, CloseReason, Flow, Session, SessionError};
use crate::queue::DeliveryKey;
use crate::router::{AckKey, RouterCommand, Settle, TxOperation};
use stomp_protocol::{Command, Frame, Version};

impl Session {
    pub(super) async fn on_ack(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let version = self.connected_version();
        if frame.command == Command::Nack && version == Version::V1_0 {
            return Err(SessionError::protocol("NACK is not part of STOMP 1.0"));
        }
        let key = match version {
            // 1.2 acknowledges by the MESSAGE's `ack` header, sent back as `id`
            // (stompjs also sends `subscription`, which is not needed).
            Version::V1_2 => AckKey::Id(required(frame, "id")?.to_owned()),
            // 1.0 and 1.1 acknowledge by `message-id`; 1.1 adds `subscription`.
            Version::V1_0 | Version::V1_1 => AckKey::MessageId {
                message_id: required(frame, "message-id")?.to_owned(),
                subscription: frame.get("subscription").map(str::to_owned),
            },
        };
        // In a transaction: held below; the engine settles its own
        // deliveries at COMMIT (`transaction_engine.rs`).
        let engine = self.context.queue_engine.clone();
        if let Some(engine) = engine.filter(|_| frame.get("transaction").is_none()) {
            let engine_key = delivery_key(&key);
            let nack = frame.command == Command::Nack;
            if let Some(settled) = engine.settle(self.id, engine_key, nack).await {
                settled
                    .map_err(|message| SessionError::new(message, CloseReason::InternalError))?;
                if frame.get("receipt").is_some() {
                    // A RECEIPT says the ACK has left this node: it is
                    // on its way to the engine's server before the RECEIPT.
                    engine.sent().await;
                }
                return self.receipt(frame).await.map(|()| Flow::Continue);
            }
        }
        let settle = Settle {
            nack: frame.command == Command::Nack,
            key,
        };
        if let Some(transaction) = frame.get("transaction") {
            self.transactions
                .add(transaction, TxOperation::Settle(settle))?;
            return self.receipt(frame).await.map(|()| Flow::Continue);
        }
        self.route(RouterCommand::Settle {
            session: self.id,
            settle,
            receipt: frame.get("receipt").map(str::to_owned),
        })
        .await?;
        Ok(Flow::Continue)
    }
}

/// How the queue engine names the delivery an ACK or NACK names.
pub(super) fn delivery_key(key: &AckKey) -> DeliveryKey<'_> {
    match key {
        AckKey::Id(id) => DeliveryKey::AckId(id),
        AckKey::MessageId { message_id, .. } => DeliveryKey::MessageId(message_id),
    }
}
