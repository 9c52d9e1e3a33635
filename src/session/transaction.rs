//! BEGIN, COMMIT and ABORT. A transaction's SENDs, ACKs and NACKs wait here
//! until COMMIT. Then its topic SENDs are fanned out by the session, as
//! plain SENDs are, and what needs the router (queue SENDs, ACKs, NACKs,
//! topic SENDs for client-ack or durable subscriptions) reaches it together,
//! as one command, so that nothing else is routed between them. A
//! transaction with a topic SEND the router must handle whole (reply-to, or
//! possibly persistent) goes to the router whole. On the cluster engine,
//! its queue SENDs and the ACKs of the engine's deliveries are applied
//! there first (`transaction_engine.rs`). ABORT, DISCONNECT and a lost
//! connection discard them.

use super::{required, CloseReason, Flow, Session, SessionError};
use crate::model::destination::SendTarget;
use crate::router::message::Publication;
use crate::router::{AckKey, RouterCommand, TxOperation};
use std::collections::HashMap;
use std::sync::Arc;
use stomp_protocol::{Command, Frame};

/// A session's open transactions, bounded by the `[limits]` in count and
/// in bytes (16 transactions × 10 000 frames × 1 MiB would otherwise be
/// 160 GiB held for one connection).
#[derive(Debug, Default)]
pub struct Transactions {
    open: HashMap<String, Held>,
    max_open: usize,
    max_operations: usize,
    /// Bytes of all open transactions together, and their bound.
    bytes: usize,
    max_bytes: usize,
}

/// One open transaction's operations and what they weigh.
#[derive(Debug, Default)]
pub(super) struct Held {
    pub(super) operations: Vec<TxOperation>,
    bytes: usize,
    /// Per queue SEND to the cluster engine with the client's own
    /// `message-id` (by publication id): its duplicate-detection id.
    pub(super) dedup_ids: HashMap<Arc<str>, String>,
}

/// What an operation weighs against `max_transaction_bytes`.
fn weight(operation: &TxOperation) -> usize {
    match operation {
        TxOperation::Publish(publication) => publication.size(),
        // ACK/NACK: the ids they carry and a little bookkeeping.
        TxOperation::Settle(settle) => {
            64 + match &settle.key {
                AckKey::Id(id) => id.len(),
                AckKey::MessageId {
                    message_id,
                    subscription,
                } => message_id.len() + subscription.as_ref().map_or(0, String::len),
            }
        }
    }
}

impl Transactions {
    /// No transactions, with these bounds.
    pub fn new(max_open: usize, max_operations: usize, max_bytes: usize) -> Self {
        Transactions {
            open: HashMap::new(),
            max_open,
            max_operations,
            bytes: 0,
            max_bytes,
        }
    }

    /// Holds an operation of transaction `id` until COMMIT.
    pub fn add(&mut self, id: &str, operation: TxOperation) -> Result<(), SessionError> {
        let max = self.max_operations;
        let held = self.open.get_mut(id).ok_or_else(|| unknown(id))?;
        if held.operations.len() >= max {
            return Err(SessionError::new(
                format!("transaction '{id}' is too large: max_frames_per_transaction is {max}"),
                CloseReason::PolicyViolation,
            ));
        }
        let bytes = weight(&operation);
        if self.bytes.saturating_add(bytes) > self.max_bytes {
            return Err(SessionError::new(
                format!(
                    "transaction '{id}' is too large: this connection's open transactions would hold more than max_transaction_bytes ({})",
                    self.max_bytes
                ),
                CloseReason::PolicyViolation,
            ));
        }
        held.operations.push(operation);
        held.bytes += bytes;
        self.bytes += bytes;
        Ok(())
    }

    /// Holds a SEND of transaction `id` until COMMIT, with the engine's
    /// duplicate-detection id when the client gave a `message-id`.
    pub fn add_send(
        &mut self,
        id: &str,
        publication: Publication,
        dedup_id: Option<String>,
    ) -> Result<(), SessionError> {
        let publication_id = publication.id.clone();
        self.add(id, TxOperation::Publish(publication))?;
        if let (Some(dedup_id), Some(held)) = (dedup_id, self.open.get_mut(id)) {
            held.dedup_ids.insert(publication_id, dedup_id);
        }
        Ok(())
    }

    /// Ends transaction `id` (COMMIT or ABORT), handing back what it held.
    fn take(&mut self, id: &str) -> Result<Held, SessionError> {
        let held = self.open.remove(id).ok_or_else(|| unknown(id))?;
        self.bytes -= held.bytes;
        Ok(held)
    }

    /// Discards every open transaction.
    pub fn clear(&mut self) {
        self.open.clear();
        self.bytes = 0;
    }
}

fn unknown(id: &str) -> SessionError {
    SessionError::protocol(format!("unknown transaction '{id}': BEGIN it first"))
}

impl Session {
    pub(super) async fn on_transaction(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let id = required(frame, "transaction")?;
        match frame.command {
            Command::Begin => {
                if self.transactions.open.contains_key(id) {
                    return Err(SessionError::protocol(format!(
                        "transaction '{id}' is already open"
                    )));
                }
                let max = self.transactions.max_open;
                if self.transactions.open.len() >= max {
                    return Err(SessionError::new(
                        format!(
                            "too many open transactions: max_transactions_per_connection is {max}"
                        ),
                        CloseReason::PolicyViolation,
                    ));
                }
                self.transactions
                    .open
                    .insert(id.to_owned(), Held::default());
                self.receipt(frame).await?;
            }
            Command::Commit => {
                let held = self.transactions.take(id)?;
                let mut operations = held.operations;
                if let Some(engine) = self.context.queue_engine.clone() {
                    // Queue SENDs and the engine's ACKs: applied there first.
                    operations = self
                        .commit_to_engine(
                            engine.as_ref(),
                            operations,
                            &held.dedup_ids,
                            frame.get("receipt"),
                        )
                        .await?;
                }
                let to_queues = operations.iter().any(|operation| {
                    matches!(operation, TxOperation::Publish(p) if matches!(p.target, SendTarget::Queue(_)))
                });
                if to_queues {
                    // Publisher back-pressure, as for a plain SEND.
                    self.context.queue_memory.wait_for_room().await;
                }
                let whole = operations.iter().any(|operation| {
                    matches!(operation, TxOperation::Publish(p)
                        if matches!(p.target, SendTarget::Topic(_))
                            && (p.reply_queue.is_some() || self.may_persist(p)))
                });
                if whole {
                    self.router_ahead = true;
                } else {
                    let mut for_router = Vec::with_capacity(operations.len());
                    for operation in operations {
                        match operation {
                            TxOperation::Publish(mut publication) => {
                                // A COMMIT's RECEIPT does not wait for the
                                // cluster engine's feed stream.
                                if self.fan_out(&mut publication, false).await?.0 {
                                    for_router.push(TxOperation::Publish(publication));
                                }
                            }
                            settle => for_router.push(settle),
                        }
                    }
                    operations = for_router;
                }
                if operations.is_empty() {
                    self.receipt(frame).await?;
                    return Ok(Flow::Continue);
                }
                self.route(RouterCommand::Commit {
                    session: self.id,
                    operations,
                    receipt: frame.get("receipt").map(str::to_owned),
                })
                .await?;
            }
            _ => {
                self.transactions.take(id)?;
                self.receipt(frame).await?;
            }
        }
        Ok(Flow::Continue)
    }
}
