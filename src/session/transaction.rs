//! BEGIN, COMMIT and ABORT. A transaction's SENDs, ACKs and NACKs wait here
//! and reach the router together at COMMIT, as one command, so that nothing
//! else is routed between them. ABORT, DISCONNECT and a lost connection
//! discard them.

use super::{required, CloseReason, Flow, Session, SessionError};
use crate::router::destination::SendTarget;
use crate::router::{RouterCommand, TxOperation};
use std::collections::HashMap;
use stomp_protocol::{Command, Frame};

/// A session's open transactions, bounded by the `[limits]`.
#[derive(Debug, Default)]
pub struct Transactions {
    open: HashMap<String, Vec<TxOperation>>,
    max_open: usize,
    max_operations: usize,
}

impl Transactions {
    /// No transactions, with these bounds.
    pub fn new(max_open: usize, max_operations: usize) -> Self {
        Transactions {
            open: HashMap::new(),
            max_open,
            max_operations,
        }
    }

    /// Holds an operation of transaction `id` until COMMIT.
    pub fn add(&mut self, id: &str, operation: TxOperation) -> Result<(), SessionError> {
        let max = self.max_operations;
        let operations = self.open.get_mut(id).ok_or_else(|| unknown(id))?;
        if operations.len() >= max {
            return Err(SessionError::new(
                format!("transaction '{id}' is too large: max_frames_per_transaction is {max}"),
                CloseReason::PolicyViolation,
            ));
        }
        operations.push(operation);
        Ok(())
    }

    /// Discards every open transaction.
    pub fn clear(&mut self) {
        self.open.clear();
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
                self.transactions.open.insert(id.to_owned(), Vec::new());
                self.receipt(frame).await?;
            }
            Command::Commit => {
                let operations = self
                    .transactions
                    .open
                    .remove(id)
                    .ok_or_else(|| unknown(id))?;
                let to_queues = operations.iter().any(|operation| {
                    matches!(operation, TxOperation::Publish(p) if matches!(p.target, SendTarget::Queue(_)))
                });
                if to_queues {
                    // Publisher back-pressure, as for a plain SEND.
                    self.context.queue_memory.wait_for_room().await;
                }
                self.route(RouterCommand::Commit {
                    session: self.id,
                    operations,
                    receipt: frame.get("receipt").map(str::to_owned),
                })
                .await?;
            }
            _ => {
                self.transactions
                    .open
                    .remove(id)
                    .ok_or_else(|| unknown(id))?;
                self.receipt(frame).await?;
            }
        }
        Ok(Flow::Continue)
    }
}
