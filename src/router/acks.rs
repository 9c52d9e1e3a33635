//! ACK and NACK: settling deliveries by id, cumulatively for `client`
//! subscriptions, and returning what a subscription leaves unsettled.

use super::{AckKey, AckMode, Router, SessionId, Settle, Unacked};
use crate::fanout::encode::ack_id;
use crate::model::close::CloseReason;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

impl Router {
    /// Settles a delivery; false (after failing the session) if it names none.
    pub(super) fn settle(
        &mut self,
        session: SessionId,
        settle: &Settle,
        receipt: Option<&str>,
    ) -> bool {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return false;
        };
        let found: Option<(Arc<str>, String)> = match &settle.key {
            AckKey::Id(id) => entry.ack_index.get(id).map(|sub| (sub.clone(), id.clone())),
            AckKey::MessageId {
                message_id,
                subscription: Some(subscription),
            } => {
                let id = ack_id(message_id, subscription);
                entry.ack_index.get(&id).map(|sub| (sub.clone(), id))
            }
            AckKey::MessageId {
                message_id,
                subscription: None,
            } => {
                // STOMP 1.0: the message id alone; ids are unique per message.
                let prefix = format!("{message_id}@");
                entry
                    .ack_index
                    .iter()
                    .find(|(id, _)| id.starts_with(&prefix))
                    .map(|(id, sub)| (sub.clone(), id.clone()))
            }
        };
        let settled = found.and_then(|(subscription_id, ack_id)| {
            let subscription = entry.subscriptions.get_mut(&subscription_id)?;
            let position = subscription
                .unacked
                .iter()
                .position(|u| u.ack_id == ack_id)?;
            let settled: Vec<Unacked> = match subscription.ack {
                // `client`: cumulative, this one and every earlier one.
                AckMode::Client => subscription.unacked.drain(..=position).collect(),
                _ => subscription.unacked.remove(position).into_iter().collect(),
            };
            Some(settled)
        });
        let Some(settled) = settled else {
            let what = match &settle.key {
                AckKey::Id(id) => format!("id '{id}'"),
                AckKey::MessageId { message_id, .. } => format!("message-id '{message_id}'"),
            };
            let command = if settle.nack { "NACK" } else { "ACK" };
            self.fail(
                session,
                format!("{command} of unknown or already settled {what}"),
                receipt,
                CloseReason::ProtocolError,
            );
            return false;
        };
        for unacked in &settled {
            entry.ack_index.remove(&unacked.ack_id);
        }
        if settle.nack {
            self.return_messages(settled, true);
        } else {
            // Acknowledged: stored copies go, and credit is free again.
            let mut queues: Vec<String> = Vec::new();
            for unacked in settled {
                if let Some(name) = unacked.queue {
                    self.forget_settled(&name, unacked.message.sequence);
                    if !queues.contains(&name) {
                        queues.push(name);
                    }
                }
            }
            for name in queues {
                self.dispatch(&name);
            }
        }
        true
    }

    /// Returns unsettled deliveries of an ended subscription to their queues,
    /// ahead of newer messages.
    pub(super) fn return_unacked(&mut self, unacked: VecDeque<Unacked>) {
        self.return_messages(unacked.into_iter().collect(), false);
    }

    fn return_messages(&mut self, unacked: Vec<Unacked>, nacked: bool) {
        // Group by queue, keeping delivery order; topic deliveries have no queue.
        let mut by_queue: HashMap<String, Vec<_>> = HashMap::new();
        let mut order = Vec::new();
        for delivery in unacked {
            if let Some(name) = delivery.queue {
                if !by_queue.contains_key(&name) {
                    order.push(name.clone());
                }
                by_queue.entry(name).or_default().push(delivery.message);
            }
        }
        for name in order {
            let messages = by_queue.remove(&name).unwrap_or_default();
            self.requeue(&name, messages, nacked);
        }
    }
}
