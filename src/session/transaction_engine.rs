//! COMMIT on the cluster engine: the transaction's parts the engine owns,
//! applied before the rest (`transaction.rs`) goes on as on one node.
//!
//! First the queue SENDs, as one atomic batch: all stored or none, and
//! none is delivered before all are (`cluster/transactions.rs`); if the
//! engine does not take them, ERROR and nothing of the transaction is
//! applied. Then the ACKs and NACKs of the engine's deliveries, in order
//! (not atomic with the SENDs: one lost on its way is redelivered, as an
//! unacknowledged message is), then replies to other nodes' reply queues.
//! What is left (topic SENDs, replies to this node's reply queues, ACKs
//! of the router's deliveries) goes to the router as before, with the
//! COMMIT's RECEIPT after it.

use super::ack::delivery_key;
use super::send_engine::queue_send;
use super::{CloseReason, Session, SessionError};
use crate::model::destination::SendTarget;
use crate::queue::QueueEngine;
use crate::router::TxOperation;
use std::collections::HashMap;
use std::sync::Arc;

impl Session {
    /// Applies the engine's part of a COMMIT's `operations`; returns the
    /// rest, in order, for the router. `receipt`: the COMMIT's.
    pub(super) async fn commit_to_engine(
        &mut self,
        engine: &dyn QueueEngine,
        operations: Vec<TxOperation>,
        dedup_ids: &HashMap<Arc<str>, String>,
        receipt: Option<&str>,
    ) -> Result<Vec<TxOperation>, SessionError> {
        let (mut sends, mut settles, mut replies) = (Vec::new(), Vec::new(), Vec::new());
        let mut rest = Vec::with_capacity(operations.len());
        for operation in operations {
            match operation {
                TxOperation::Publish(publication)
                    if matches!(publication.target, SendTarget::Queue(_)) =>
                {
                    // A responder may answer as soon as the batch is in.
                    self.make_reply_queue(&publication).await?;
                    // The client's `message-id` deduplicates, as for a
                    // single SEND: a retried COMMIT is not stored twice.
                    let dedup_id = dedup_ids
                        .get(&publication.id)
                        .cloned()
                        .unwrap_or_else(|| format!("b/{}", publication.id));
                    sends.push(queue_send(publication, dedup_id, true));
                }
                TxOperation::Publish(publication) if self.reply_elsewhere(engine, &publication) => {
                    replies.push(publication);
                }
                TxOperation::Settle(settle) if engine.holds(self.id, delivery_key(&settle.key)) => {
                    settles.push(settle);
                }
                other => rest.push(other),
            }
        }
        let failed = |message| SessionError::new(message, CloseReason::InternalError);
        engine.publish_batch(sends).await.map_err(failed)?;
        let sent = !settles.is_empty() || !replies.is_empty();
        for settle in settles {
            match engine
                .settle(self.id, delivery_key(&settle.key), settle.nack)
                .await
            {
                Some(result) => result.map_err(failed)?,
                // Handed back since (its subscription ended): the router
                // answers it as any ACK of a delivery it does not know.
                None => rest.push(TxOperation::Settle(settle)),
            }
        }
        for reply in replies {
            self.send_reply(engine, reply).await?;
        }
        if sent && receipt.is_some() {
            // As for a plain ACK: on its way to the engine before the RECEIPT.
            engine.sent().await;
        }
        Ok(rest)
    }
}
