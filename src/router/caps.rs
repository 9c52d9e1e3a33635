//! Caps on state keyed by names a client chooses: queues created on first
//! use, durable subscriptions, reply queues (one per distinct `reply-to`),
//! subscriptions. Without them one client could fill the router's maps
//! with names. A frame that would go past a cap gets an ERROR naming it and
//! its connection closes; nothing that exists is touched, so bystanders'
//! queues and subscriptions keep working. The caps themselves are the
//! router's copy of `[limits]` (`Router::caps`).

use super::message::ReplyQueue;
use super::{Router, SessionId};
use crate::model::close::CloseReason;
use crate::model::destination::QUEUE_PREFIX;

impl Router {
    /// Whether `session` may add subscription `id`: not an id already in
    /// use (the session checks its own ids; a reply queue's subscription,
    /// made by the router, would otherwise be silently replaced, or replace
    /// a topic subscription that then stayed in the trie for ever), and
    /// room under `max_subscriptions`. Fails the session if not.
    pub(super) fn admit_subscription(
        &mut self,
        session: SessionId,
        id: &str,
        receipt: Option<&str>,
    ) -> bool {
        let in_use = self
            .sessions
            .get(&session)
            .is_some_and(|entry| entry.subscriptions.contains_key(id));
        if in_use {
            let message = format!(
                "subscription id '{id}' is already in use on this connection (by the reply queue of reply-to '{id}')"
            );
            self.fail(session, message, receipt, CloseReason::ProtocolError);
            return false;
        }
        if self.subscription_count >= self.caps.max_subscriptions {
            let message = format!(
                "too many subscriptions on this server: max_subscriptions is {}",
                self.caps.max_subscriptions
            );
            self.fail(session, message, receipt, CloseReason::PolicyViolation);
            return false;
        }
        true
    }

    /// `/queue/...` queues now: all queues but durable subscriptions and
    /// reply queues.
    fn named_queue_count(&self) -> usize {
        self.queues
            .len()
            .saturating_sub(self.durable_bindings.len())
            .saturating_sub(self.reply_queue_count)
    }

    /// Whether queue `name` exists or may be created under `max_queues`.
    /// Fails the session if not.
    pub(super) fn queue_room(
        &mut self,
        session: SessionId,
        name: &str,
        receipt: Option<&str>,
    ) -> bool {
        if self.queues.contains_key(name)
            || !name.starts_with(QUEUE_PREFIX)
            || self.named_queue_count() < self.caps.max_queues
        {
            return true;
        }
        let message = format!(
            "cannot create queue '{name}': too many queues on this server, max_queues is {}",
            self.caps.max_queues
        );
        self.fail(session, message, receipt, CloseReason::PolicyViolation);
        false
    }

    /// Whether `session` may create a new durable subscription; counts it
    /// if so, fails the session if not.
    pub(super) fn durable_room(&mut self, session: SessionId, receipt: Option<&str>) -> bool {
        let caps = &self.caps;
        let Some(entry) = self.sessions.get_mut(&session) else {
            return false;
        };
        let message = if entry.durables_created >= caps.max_durable_subscriptions_per_connection {
            format!(
                "too many durable subscriptions created by this connection: max_durable_subscriptions_per_connection is {}",
                caps.max_durable_subscriptions_per_connection
            )
        } else if self.durable_bindings.len() >= caps.max_durable_subscriptions {
            format!(
                "too many durable subscriptions on this server: max_durable_subscriptions is {}",
                caps.max_durable_subscriptions
            )
        } else {
            entry.durables_created += 1;
            return true;
        };
        self.fail(session, message, receipt, CloseReason::PolicyViolation);
        false
    }

    /// Whether `session` may have `reply_queue` (it has it already, or
    /// there is room under both caps and its subscription id is free).
    /// Fails the session if not.
    pub(super) fn reply_queue_room(
        &mut self,
        session: SessionId,
        reply_queue: &ReplyQueue,
        receipt: Option<&str>,
    ) -> bool {
        match self.reply_queue_refusal(session, reply_queue) {
            None => true,
            Some(message) => {
                self.fail(session, message, receipt, CloseReason::PolicyViolation);
                false
            }
        }
    }

    /// Why `session` may not have `reply_queue`; `None` if it may (see
    /// [`reply_queue_room`](Self::reply_queue_room)).
    pub(super) fn reply_queue_refusal(
        &self,
        session: SessionId,
        reply_queue: &ReplyQueue,
    ) -> Option<String> {
        let caps = &self.caps;
        let Some(entry) = self.sessions.get(&session) else {
            return Some("the session has ended".to_owned());
        };
        if self.queues.contains_key(&reply_queue.queue) {
            return None;
        }
        let id = &reply_queue.subscription;
        let message = if entry.subscriptions.contains_key(id) {
            format!(
                "reply-to '{id}' collides with the subscription id '{id}' on this connection: use another name"
            )
        } else if entry.reply_queues.len() >= caps.max_reply_queues_per_connection {
            format!(
                "too many reply queues on this connection: max_reply_queues_per_connection is {}",
                caps.max_reply_queues_per_connection
            )
        } else if self.reply_queue_count >= caps.max_reply_queues {
            format!(
                "too many reply queues on this server: max_reply_queues is {}",
                caps.max_reply_queues
            )
        } else if self.subscription_count >= caps.max_subscriptions {
            format!(
                "too many subscriptions on this server: max_subscriptions is {}",
                caps.max_subscriptions
            )
        } else {
            return None;
        };
        Some(message)
    }
}
