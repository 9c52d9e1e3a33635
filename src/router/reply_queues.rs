//! Reply queues: `reply-to:/temp-queue/NAME` makes a private, exclusive
//! queue consumed by the publishing session itself.

use super::message::ReplyQueue;
use super::{AckMode, Router, SessionId, Subscription, Target};
use crate::model::destination::REPLY_QUEUE_PREFIX;
use crate::queue::{Consumer, Queue, QueueArguments};
use std::collections::VecDeque;

impl Router {
    /// Creates the session's private reply queue, consumed by the session itself.
    pub(super) fn ensure_reply_queue(&mut self, session: SessionId, reply_queue: &ReplyQueue) {
        if self.queues.contains_key(&reply_queue.queue)
            || !reply_queue.queue.starts_with(REPLY_QUEUE_PREFIX)
        {
            return;
        }
        let Some(entry) = self.sessions.get_mut(&session) else {
            return;
        };
        entry.reply_queues.push(reply_queue.queue.clone());
        self.reply_queue_count += 1;
        self.subscription_count += 1;
        entry.subscriptions.insert(
            reply_queue.subscription.clone(),
            Subscription {
                target: Target::Queue(reply_queue.queue.clone()),
                ack: AckMode::Auto,
                prefetch: 1,
                unacked: VecDeque::new(),
            },
        );
        let arguments = QueueArguments {
            exclusive: true,
            ..QueueArguments::default()
        };
        let mut settings = self.policy.settings_for(&reply_queue.queue, &arguments);
        settings.dead_letter = None;
        let mut queue = Queue::new(
            reply_queue.queue.clone(),
            settings,
            self.queue_memory.clone(),
        );
        queue.consumers.push(Consumer {
            session,
            subscription: reply_queue.subscription.clone(),
        });
        self.queues.insert(reply_queue.queue.clone(), queue);
    }
}
