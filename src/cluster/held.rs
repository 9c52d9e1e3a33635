//! The deliveries an auto-ack subscription's pull task holds while its
//! connection's outbound queue has no room, and the wait for room.
//!
//! Why: JetStream counts a delivery each time a message goes to a pull. A
//! message pulled for a slow client and nak'ed unseen would come back
//! `redelivered`, and after `max_deliver` such rounds go to the dead
//! letters without any client having seen it. So an auto pull asks only
//! for what fits (the room left, at most [`AUTO_PULL_CAP`]), and what does
//! not fit after all (bytes, other producers) is held in the task, in
//! order, until there is room; its `ack_wait` is kept from running out by
//! `AckKind::Progress`. No new pull goes out while any is held, and what is
//! held is handed back only when the subscription stops.

use super::subscription::Subscription;
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{AckKind, Message};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

/// The most one auto-ack pull asks for, whatever the room and `prefetch`.
pub(super) const AUTO_PULL_CAP: usize = 256;

/// How often a subscription whose connection has no room looks again (the
/// outbound queue has no signal for room).
const ROOM_POLL: Duration = Duration::from_millis(20);

/// Deliveries pulled and not yet queued for the client, oldest first.
pub(super) struct Held {
    messages: VecDeque<Message>,
    /// When they were last told to JetStream as in progress (or the first
    /// was held).
    last_progress: Instant,
    /// How often they are: well within the consumer's `ack_wait`.
    progress_every: Duration,
}

impl Held {
    /// Nothing held, for a consumer with `ack_wait`.
    pub(super) fn new(ack_wait: Duration) -> Held {
        Held {
            messages: VecDeque::new(),
            last_progress: Instant::now(),
            progress_every: (ack_wait / 3).max(Duration::from_millis(100)),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Whether the next delivery must be held: some already is (order), or
    /// the connection has no room. A stopped subscription's is not: its
    /// delivery is refused.
    pub(super) fn must_hold(&self, subscription: &Subscription) -> bool {
        !self.is_empty()
            || subscription
                .outbound()
                .is_some_and(|outbound| !outbound.has_room())
    }

    /// Holds `message` after the others.
    pub(super) fn push(&mut self, message: Message) {
        if self.messages.is_empty() {
            self.last_progress = Instant::now();
        }
        self.messages.push_back(message);
    }

    /// The oldest held one, if the connection has room for it now.
    pub(super) fn next_with_room(&mut self, subscription: &Subscription) -> Option<Message> {
        let outbound = subscription.outbound()?;
        if outbound.has_room() {
            self.messages.pop_front()
        } else {
            None
        }
    }

    /// What is held, to hand back (the subscription stopped).
    pub(super) fn into_ackers(self) -> impl Iterator<Item = Acker> {
        self.messages.into_iter().map(|message| message.split().1)
    }

    /// Tells JetStream the held ones are in progress, if it is time.
    async fn keep_alive(&mut self) {
        if self.messages.is_empty() || self.last_progress.elapsed() < self.progress_every {
            return;
        }
        for message in &self.messages {
            if let Err(error) = message.ack_with(AckKind::Progress).await {
                debug!(%error, "queue engine: a held delivery's progress did not go out");
            }
        }
        self.last_progress = Instant::now();
    }
}

/// Waits until the connection of an auto-ack subscription has room in its
/// outbound queue (below half full), keeping what is held alive meanwhile.
/// The frames that fit; `None`: the subscription stopped.
pub(super) async fn wait_for_room(
    subscription: &Subscription,
    stopped: &mut watch::Receiver<bool>,
    held: &mut Held,
) -> Option<usize> {
    loop {
        let room = subscription.outbound()?.room();
        if room > 0 {
            return Some(room);
        }
        held.keep_alive().await;
        tokio::select! {
            _ = tokio::time::sleep(ROOM_POLL) => {}
            _ = stopped.wait_for(|stop| *stop) => return None,
        }
    }
}
