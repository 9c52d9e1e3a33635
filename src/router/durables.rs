//! Durable topic subscriptions: queues named `/durable/<client-id>/<name>`
//! bound to a topic pattern, owned by the principal that created them.

use super::{Router, SubscribeRequest};
use crate::fanout::{IndexKey, Interest};
use crate::model::close::CloseReason;
use crate::model::destination::PatternWord;
use crate::queue::QueueArguments;
use crate::store::{QueueDefinition, StoreOp};
use std::sync::Arc;

/// Durable topic subscriptions are queues named `/durable/<client-id>/<name>`.
pub const DURABLE_PREFIX: &str = "/durable/";

/// A durable topic subscription asked for by SUBSCRIBE.
#[derive(Debug, Clone)]
pub struct DurableSubscription {
    /// `<client-id>/<name>`: never the subscription id alone.
    pub key: String,
    /// The topic destination (pattern) it collects.
    pub destination: String,
    /// Who asks: the principal it belongs to, or must belong to.
    pub owner: super::Principal,
}

impl Router {
    /// Attaches a consumer to a durable topic subscription, creating (or
    /// re-binding) it first. It belongs to the principal that created it:
    /// anyone else using the same client id and name gets ERROR. Re-binding
    /// to another topic discards the old topic's backlog (JMS semantics);
    /// read permission on the new topic was checked by the session.
    pub(super) fn subscribe_durable(
        &mut self,
        who: SubscribeRequest,
        durable: &DurableSubscription,
        pattern: Vec<PatternWord>,
        receipt: Option<&str>,
    ) -> bool {
        let name = format!("{DURABLE_PREFIX}{}", durable.key);
        if self
            .durable_owners
            .get(&name)
            .is_some_and(|owner| *owner != durable.owner)
        {
            // Not saying whose: that would tell a stranger who uses it.
            let message = format!(
                "durable subscription '{}' belongs to another principal",
                durable.key
            );
            self.fail(who.session, message, receipt, CloseReason::PolicyViolation);
            return false;
        }
        let in_use = self
            .queues
            .get(&name)
            .is_some_and(|q| !q.consumers.is_empty());
        if in_use {
            let message = format!(
                "durable subscription '{}' is already active on another connection",
                durable.key
            );
            self.fail(who.session, message, receipt, CloseReason::PolicyViolation);
            return false;
        }
        let existing = self.durable_bindings.get(&name).cloned();
        if existing.is_none() && !self.durable_room(who.session, receipt) {
            return false;
        }
        let owned = self.durable_owners.contains_key(&name);
        match existing {
            Some(bound) if bound == durable.destination => {
                if !owned {
                    // Stored by an older version without an owner: the
                    // first principal to attach claims it.
                    self.define_durable(&name, durable);
                }
            }
            rebound => {
                if rebound.is_some() {
                    // The same name for another topic: what it collected
                    // belongs to the old topic and goes with it.
                    self.delete_durable(&name);
                }
                self.ensure_queue(
                    &name,
                    &QueueArguments::default(),
                    Some(&durable.destination),
                );
                self.define_durable(&name, durable);
                self.bind_durable(&pattern, &name);
                self.durable_bindings
                    .insert(name.clone(), durable.destination.clone());
            }
        }
        self.durable_owners
            .insert(name.clone(), durable.owner.clone());
        self.add_consumer(who, name);
        true
    }

    /// Binds durable subscription `name` to `pattern`: in the router's own
    /// trie, and as a router interest in the shared index (publishers then
    /// send matching publications to the router).
    pub(super) fn bind_durable(&mut self, pattern: &[PatternWord], name: &str) {
        let bound: Arc<str> = name.into();
        self.durables.insert(pattern, bound.clone(), bound.clone());
        self.index
            .insert(pattern, IndexKey::Durable(bound), Interest::Router);
    }

    /// Stores a durable subscription's definition with its binding and owner.
    pub(super) fn define_durable(&mut self, name: &str, durable: &DurableSubscription) {
        if let Some(id) = self.queues.get(name).and_then(|q| q.store_id) {
            self.store_op(StoreOp::DefineQueue {
                id,
                definition: QueueDefinition {
                    name: name.to_owned(),
                    binding: Some(durable.destination.clone()),
                    owner: Some(durable.owner.to_record()),
                    ..QueueDefinition::default()
                },
            });
        }
    }

    pub(super) fn unbind_durable(&mut self, name: &str, destination: &str) {
        if let Ok(pattern) =
            crate::model::destination::topic_pattern(destination, &self.destination_limits)
        {
            let bound: Arc<str> = name.into();
            self.durables.remove(&pattern, &bound);
            self.index.remove(&pattern, &IndexKey::Durable(bound));
        }
        self.durable_bindings.remove(name);
    }

    /// Deletes a durable topic subscription and what it collected.
    pub(super) fn delete_durable(&mut self, name: &str) {
        if let Some(destination) = self.durable_bindings.get(name).cloned() {
            self.unbind_durable(name, &destination);
        }
        self.durable_owners.remove(name);
        if let Some(queue) = self.queues.remove(name) {
            self.attention.remove(name);
            if let Some(id) = queue.store_id {
                self.store_op(StoreOp::DeleteQueue { id });
            }
        }
    }
}
