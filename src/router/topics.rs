//! Topic delivery the router still does itself: client-ack topic
//! subscriptions, whose unsettled deliveries it tracks. Auto-ack ones are
//! served by the publishing session through the shared index
//! (`crate::fanout`); durable ones are queues (`durables.rs`).

use super::{Router, SessionId, Unacked};
use crate::fanout::encode::{ack_id, FanOut};
use crate::model::message::epoch_ms;
use crate::model::message::Message;
use crate::outbound::PushError;
use crate::queue::QueuedMessage;
use std::sync::Arc;
use tracing::debug;

impl Router {
    /// Delivers `message` to every client-ack subscription matching `words`.
    pub(super) fn publish_topic(&mut self, words: &[Box<str>], message: Arc<Message>) {
        self.publish_topic_to(words, message, None);
    }

    /// Delivers `message` to the client-ack subscriptions matching `words`,
    /// or with `only`, to those of them it names (a message from another
    /// broker, for the subscriptions the engine delivered it for).
    pub(super) fn publish_topic_to(
        &mut self,
        words: &[Box<str>],
        message: Arc<Message>,
        only: Option<&[(SessionId, Arc<str>)]>,
    ) {
        if message.expired(epoch_ms()) {
            return;
        }
        let mut matched: Vec<&Arc<super::Subscriber>> = Vec::new();
        // Each subscription once, even one whose pattern matches along several paths.
        self.topics.matches(words, &mut matched);
        let mut fan_out = FanOut::new(&message);
        let mut slow = Vec::new();
        let mut delivered = 0;
        for subscriber in matched {
            let named = |(session, id): &(SessionId, Arc<str>)| {
                *session == subscriber.session && *id == subscriber.id
            };
            if only.is_some_and(|only| !only.iter().any(named)) {
                continue;
            }
            let with_ack = subscriber.ack.expects_ack();
            if with_ack {
                // Client-ack topic subscriptions hold at most `prefetch`
                // unsettled messages; a live topic does not wait for them.
                let Some(entry) = self.sessions.get_mut(&subscriber.session) else {
                    continue;
                };
                let Some(subscription) = entry.subscriptions.get_mut(&subscriber.id) else {
                    continue;
                };
                if subscription.unacked.len() >= subscription.prefetch
                    || entry.ack_index.len() >= self.max_unacked_per_connection
                {
                    debug!(session = %subscriber.session, subscription = %subscriber.id, "prefetch full: topic message skipped");
                    continue;
                }
                let ack_id = ack_id(&message.id, &subscriber.id);
                entry
                    .ack_index
                    .insert(ack_id.clone(), subscriber.id.clone());
                subscription.unacked.push_back(Unacked {
                    ack_id,
                    message: QueuedMessage {
                        message: message.clone(),
                        deliveries: 1,
                        sequence: None,
                    },
                    queue: None,
                });
            }
            let frame = fan_out.frame_for(subscriber.version, &subscriber.id, with_ack);
            let pushed = if subscriber.drop_oldest && !with_ack {
                subscriber.outbound.push_droppable(frame)
            } else {
                subscriber.outbound.push(frame)
            };
            if pushed == Err(PushError::SlowConsumer) {
                slow.push(subscriber.session);
            }
            delivered += u64::from(pushed.is_ok());
        }
        drop(fan_out);
        self.metrics
            .router_add(|r| &r.delivered, &message.destination, delivered);
        self.cut_off_slow(slow);
    }
}
