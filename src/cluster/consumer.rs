//! One queue subscription on JetStream: its credit, its unsettled
//! deliveries, and the task that pulls from the queue's shared consumer.
//!
//! The task pulls at most what the subscription has credit for: with
//! `client` and `client-individual`, `prefetch` minus its unsettled
//! deliveries (a `Semaphore` of `prefetch` permits, one taken per delivery
//! and given back by its ACK or NACK); with `auto`, up to `prefetch` at a
//! time, each acknowledged to JetStream once handed to the connection's
//! writer. Nothing is fetched for credit the node does not have, so other
//! nodes' subscribers get the rest. A pull waits at most [`PULL_WAIT`] for
//! messages; a stopped subscription's task ends after its current pull,
//! handing back anything that still arrives.
//!
//! The consumer delivers a message once more than `max_deliver`: that
//! delivery goes to the queue's dead-letter queue instead of a client.

use super::dead_letters::DeadLetters;
use super::wire;
use crate::fanout::encode::{ack_id, encode, Delivery};
use crate::model::ack_mode::AckMode;
use crate::model::message::epoch_ms;
use crate::outbound::OutboundSender;
use crate::queue::{DeliveryKey, QueueSettings, QueueSubscribe};
use async_nats::jetstream::{consumer::PullConsumer, message::Acker, AckKind};
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use stomp_protocol::Version;
use tokio::sync::{oneshot, watch, Semaphore};
use tracing::{debug, warn};

/// How long one pull waits for messages before it is made again (and how
/// long a stopped subscription's task may still run).
const PULL_WAIT: Duration = Duration::from_secs(2);
/// The pause after a failed pull (the engine unreachable).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// One unsettled delivery.
pub struct Pending {
    /// The MESSAGE's `ack` header (STOMP 1.2).
    ack_id: String,
    /// The MESSAGE's `message-id` (STOMP 1.0/1.1).
    message_id: Arc<str>,
    /// Deliveries so far, this one included (JetStream's count).
    pub(super) delivered: u32,
    /// Settles it with JetStream.
    pub(super) acker: Acker,
}

/// What the task and the settling sessions share.
struct State {
    /// Unsettled deliveries, oldest first.
    pending: VecDeque<Pending>,
    /// Where its MESSAGEs go; taken by UNSUBSCRIBE or the session's end
    /// (so the connection's writer is not kept waiting for this task):
    /// deliveries arriving later are handed back, not sent.
    outbound: Option<OutboundSender>,
}

/// A queue subscription served by the engine.
pub struct Subscription {
    /// How its deliveries are settled.
    pub(super) ack: AckMode,
    /// A leaf lock, never held across `.await`.
    state: Mutex<State>,
    /// Credit of `client`/`client-individual` subscriptions: `prefetch`
    /// permits; the task takes one per delivery (forgotten), settling gives
    /// them back. Closed never.
    credit: Semaphore,
    /// Tells the task to stop (sent once, by `stop`).
    stop_tx: watch::Sender<bool>,
    /// The queue's NACK delay and its cap (`[queues]` and its rules).
    redelivery_delay: Duration,
    redelivery_delay_max: Duration,
}

/// The SUBSCRIBE as the task reads it while it runs.
struct ServedRef {
    id: Arc<str>,
    destination: String,
    ack: AckMode,
    prefetch: usize,
    version: Version,
}

/// What the pull task needs of the SUBSCRIBE.
pub(super) struct Served {
    /// The client's subscription id.
    id: Arc<str>,
    /// The queue's destination.
    destination: String,
    /// Its ack mode.
    ack: AckMode,
    /// Its prefetch.
    prefetch: usize,
    /// The session's STOMP version.
    version: Version,
    /// Fired once the SUBSCRIBE's RECEIPT is out.
    start: oneshot::Receiver<()>,
    /// Set when the subscription stops.
    stopped: watch::Receiver<bool>,
}

impl Subscription {
    /// A subscription for `request`, and what its task needs.
    pub(super) fn new(
        request: QueueSubscribe,
        settings: &QueueSettings,
    ) -> (Arc<Subscription>, Served) {
        let (stop_tx, stopped) = watch::channel(false);
        let subscription = Subscription {
            ack: request.ack,
            state: Mutex::new(State {
                pending: VecDeque::new(),
                outbound: Some(request.outbound),
            }),
            credit: Semaphore::new(request.prefetch.max(1)),
            stop_tx,
            redelivery_delay: settings.redelivery_delay,
            redelivery_delay_max: settings.redelivery_delay_max,
        };
        let served = Served {
            id: request.id,
            destination: request.destination,
            ack: request.ack,
            prefetch: request.prefetch,
            version: request.version,
            start: request.start,
            stopped,
        };
        (Arc::new(subscription), served)
    }

    /// The NACK delay of a message delivered `delivered` times: as on one
    /// node, the base delay doubled per earlier delivery, capped.
    pub(super) fn nack_delay(&self, delivered: u32) -> Duration {
        let doublings = delivered.saturating_sub(1).min(16);
        self.redelivery_delay
            .saturating_mul(1 << doublings)
            .min(self.redelivery_delay_max)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where `key` is among its unsettled deliveries.
    pub(super) fn position(&self, key: DeliveryKey<'_>) -> Option<usize> {
        self.state().pending.iter().position(|p| match key {
            DeliveryKey::AckId(id) => p.ack_id == id,
            DeliveryKey::MessageId(id) => *p.message_id == *id,
        })
    }

    /// Takes the delivery at `index` (and, `cumulative`, every earlier one)
    /// out of the unsettled ones, giving their credit back.
    pub(super) fn take(&self, index: usize, cumulative: bool) -> Vec<Pending> {
        let taken: Vec<Pending> = {
            let mut state = self.state();
            if index >= state.pending.len() {
                return Vec::new();
            }
            if cumulative {
                state.pending.drain(..=index).collect()
            } else {
                state.pending.remove(index).into_iter().collect()
            }
        };
        self.credit.add_permits(taken.len());
        taken
    }

    /// Stops the subscription; returns its unsettled deliveries.
    pub(super) fn stop(&self) -> Vec<Pending> {
        let pending = {
            let mut state = self.state();
            state.outbound = None;
            state.pending.drain(..).collect()
        };
        let _ = self.stop_tx.send(true);
        pending
    }

    /// Keeps `pending` as unsettled and returns where to send it; `None`
    /// (and `pending` handed back) if the subscription has stopped.
    async fn keep(&self, pending: Pending) -> Option<OutboundSender> {
        let refused = {
            let mut state = self.state();
            match state.outbound.clone() {
                Some(outbound) => {
                    state.pending.push_back(pending);
                    return Some(outbound);
                }
                None => pending,
            }
        };
        hand_back(vec![refused]).await;
        None
    }

    /// Where its MESSAGEs go, unless it has stopped.
    fn outbound(&self) -> Option<OutboundSender> {
        self.state().outbound.clone()
    }
}

/// Takes credit for the next pull: at least one permit (waiting for it),
/// at most `max`. `None`: the subscription stopped.
async fn take_credit(
    subscription: &Subscription,
    stopped: &mut watch::Receiver<bool>,
    max: usize,
) -> Option<usize> {
    let permit = tokio::select! {
        permit = subscription.credit.acquire() => permit.ok()?,
        _ = stopped.wait_for(|stop| *stop) => return None,
    };
    permit.forget();
    let more = subscription.credit.available_permits().min(max - 1);
    if more > 0 {
        if let Ok(permits) = subscription
            .credit
            .try_acquire_many(u32::try_from(more).unwrap_or(u32::MAX))
        {
            permits.forget();
            return Some(1 + more);
        }
    }
    Some(1)
}

/// Naks `pending` without delay, so that other consumers get them now.
pub(super) async fn hand_back(pending: Vec<Pending>) {
    for delivery in pending {
        if let Err(error) = delivery.acker.ack_with(AckKind::Nak(None)).await {
            warn!(%error, "queue engine: a hand-back did not go out; the message comes back after ack_wait");
        }
    }
}

/// The subscription's task: pull, deliver, until stopped.
pub(super) async fn pull_loop(
    consumer: PullConsumer,
    subscription: Arc<Subscription>,
    request: Served,
    dead_letters: DeadLetters,
) {
    let Served {
        start, mut stopped, ..
    } = request;
    let request = ServedRef {
        id: request.id,
        destination: request.destination,
        ack: request.ack,
        prefetch: request.prefetch,
        version: request.version,
    };
    // Nothing before the SUBSCRIBE's RECEIPT (a dropped sender: the
    // session is gone, and its end stops this subscription).
    tokio::select! {
        _ = start => {}
        _ = stopped.wait_for(|stop| *stop) => return,
    }
    let max = request.prefetch.max(1);
    let credited = request.ack.expects_ack();
    loop {
        if *stopped.borrow() {
            break;
        }
        let want = if credited {
            match take_credit(&subscription, &mut stopped, max).await {
                Some(want) => want,
                None => break,
            }
        } else {
            max
        };
        let mut used = 0;
        match consumer
            .batch()
            .max_messages(want)
            .expires(PULL_WAIT)
            .messages()
            .await
        {
            Ok(mut batch) => {
                while let Some(item) = batch.next().await {
                    let message = match item {
                        Ok(message) => message,
                        Err(error) => {
                            debug!(%error, "queue engine: pull ended");
                            break;
                        }
                    };
                    if deliver(&subscription, &request, &dead_letters, message).await {
                        used += 1;
                    }
                }
            }
            Err(error) => {
                warn!(%error, destination = %request.destination, "queue engine: pull failed; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                    _ = stopped.wait_for(|stop| *stop) => {}
                }
            }
        }
        if credited {
            subscription.credit.add_permits(want - used);
        }
    }
    debug!(destination = %request.destination, id = %request.id, "queue engine: subscription ended");
}

/// Delivers one message (or hands it back, drops it expired); true if it
/// keeps a credit (an unsettled delivery of a client-ack subscription).
async fn deliver(
    subscription: &Subscription,
    request: &ServedRef,
    dead_letters: &DeadLetters,
    message: async_nats::jetstream::Message,
) -> bool {
    let (delivered, sequence) = message
        .info()
        .map(|info| (info.delivered, info.stream_sequence))
        .unwrap_or((1, 0));
    let (message, acker) = message.split();
    let Some(decoded) = wire::decode(message.payload) else {
        // Not ours to read: dropped, so that it cannot block the queue.
        warn!(destination = %request.destination, "queue engine: an unreadable message dropped");
        let _ = acker.ack_with(AckKind::Term).await;
        return false;
    };
    if decoded.expired(epoch_ms()) {
        let _ = acker.ack().await;
        return false;
    }
    if delivered > i64::from(dead_letters.max_deliver) {
        if let Some(target) = &dead_letters.target {
            let deliveries = delivered - 1;
            match dead_letters
                .store(target, decoded, deliveries, sequence)
                .await
            {
                Ok(()) => {
                    debug!(from = %request.destination, to = %target, "dead-lettered");
                    let _ = acker.ack().await;
                }
                Err(error) => {
                    warn!(%error, to = %target, "queue engine: a dead letter was not stored; it comes back");
                    let _ = acker.ack_with(AckKind::Nak(None)).await;
                }
            }
            return false;
        }
    }
    let previous = u32::try_from(delivered.saturating_sub(1)).unwrap_or(0);
    let ack_header = request
        .ack
        .expects_ack()
        .then(|| format!("{}/{delivered}", ack_id(&decoded.id, &request.id)));
    let frame = encode(
        &decoded,
        Delivery {
            subscription: &request.id,
            ack_id: ack_header.as_deref(),
            previous_deliveries: previous,
        },
        request.version,
    );
    match ack_header {
        Some(ack_id) => {
            let pending = Pending {
                delivered: u32::try_from(delivered).unwrap_or(u32::MAX),
                ack_id,
                message_id: decoded.id.clone(),
                acker,
            };
            // Kept before the push, so that an ACK racing it finds it.
            let Some(outbound) = subscription.keep(pending).await else {
                return false;
            };
            // A full or closed queue ends the connection, whose session end
            // hands the unsettled deliveries back.
            let _ = outbound.push(frame);
            true
        }
        None => {
            let pushed = subscription
                .outbound()
                .is_some_and(|outbound| outbound.push(frame).is_ok());
            if !pushed {
                let _ = acker.ack_with(AckKind::Nak(None)).await;
            } else if let Err(error) = acker.ack().await {
                warn!(%error, "queue engine: an auto ack did not go out; the message comes back after ack_wait");
            }
            false
        }
    }
}
