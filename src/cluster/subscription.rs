//! One queue subscription on JetStream as the sessions and its pull task
//! share it: its credit (a `Semaphore` of `prefetch` permits for `client`
//! and `client-individual`: one taken per delivery, given back by its ACK or
//! NACK), its unsettled deliveries, and where its MESSAGEs go until it
//! stops (UNSUBSCRIBE, the session's end).

use super::rebound::Incarnation;
use crate::model::ack_mode::AckMode;
use crate::model::destination::PatternWord;
use crate::outbound::OutboundSender;
use crate::queue::{DeliveryKey, QueueSettings, QueueSubscribe};
use async_nats::jetstream::{message::Acker, AckKind};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use stomp_protocol::Version;
use tokio::sync::{oneshot, watch, Semaphore};
use tracing::warn;

/// The most unsettled deliveries one subscription may hold, whatever its
/// `prefetch-count` says (the one-node queues have no such need).
const MAX_CREDIT: usize = 1 << 20;

/// One unsettled delivery.
pub struct Pending {
    /// The MESSAGE's `ack` header (STOMP 1.2).
    pub(super) ack_id: String,
    /// The MESSAGE's `message-id` (STOMP 1.0/1.1).
    pub(super) message_id: Arc<str>,
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

/// What a durable topic subscription adds to a queue-like one.
pub(super) struct DurableBinding {
    /// Its JetStream consumer (deleted by an UNSUBSCRIBE that removes it).
    pub(super) consumer: String,
    /// Its topic pattern: the consumer's filter is wider for a `#` before
    /// the last word, so deliveries are matched again.
    pub(super) pattern: Vec<PatternWord>,
    /// The incarnation of the consumer it attached to: a consumer of that
    /// name made again since is another holder's (`rebound.rs`).
    pub(super) incarnation: Incarnation,
    /// Served from the feed stream (one live-feed destination): its epoch.
    /// Each MESSAGE then carries `x-offset` (the stream sequence) and
    /// `x-epoch`, as the feed's other subscribers' do.
    pub(super) feed_epoch: Option<Arc<str>>,
}

/// A queue (or durable topic) subscription served by the engine.
pub struct Subscription {
    /// Its SUBSCRIBE's destination (`/queue/...`, or a durable's topic).
    pub(super) destination: Arc<str>,
    /// How its deliveries are settled.
    pub(super) ack: AckMode,
    /// Set for a durable topic subscription.
    pub(super) durable: Option<DurableBinding>,
    /// A leaf lock, never held across `.await`.
    state: Mutex<State>,
    /// Credit of `client`/`client-individual` subscriptions: `prefetch`
    /// permits; the task takes one per delivery (forgotten), settling gives
    /// them back. Closed never.
    pub(super) credit: Semaphore,
    /// Tells the task to stop (sent once, by `stop`).
    stop_tx: watch::Sender<bool>,
    /// The queue's NACK delay and its cap (`[queues]` and its rules).
    redelivery_delay: Duration,
    redelivery_delay_max: Duration,
}

/// The SUBSCRIBE as the task reads it while it runs.
pub(super) struct ServedRef {
    pub(super) id: Arc<str>,
    pub(super) destination: String,
    pub(super) ack: AckMode,
    pub(super) prefetch: usize,
    pub(super) version: Version,
}

/// What the pull task needs of the SUBSCRIBE.
pub(super) struct Served {
    /// The client's subscription id.
    pub(super) id: Arc<str>,
    /// The queue's destination.
    pub(super) destination: String,
    /// Its ack mode.
    pub(super) ack: AckMode,
    /// Its prefetch.
    pub(super) prefetch: usize,
    /// The session's STOMP version.
    pub(super) version: Version,
    /// Fired once the SUBSCRIBE's RECEIPT is out.
    pub(super) start: oneshot::Receiver<()>,
    /// Set when the subscription stops.
    pub(super) stopped: watch::Receiver<bool>,
}

impl Subscription {
    /// A subscription for `request`, and what its task needs.
    pub(super) fn new(
        request: QueueSubscribe,
        settings: &QueueSettings,
        durable: Option<DurableBinding>,
    ) -> (Arc<Subscription>, Served) {
        let (stop_tx, stopped) = watch::channel(false);
        let subscription = Subscription {
            destination: request.destination.as_str().into(),
            ack: request.ack,
            durable,
            state: Mutex::new(State {
                pending: VecDeque::new(),
                outbound: Some(request.outbound),
            }),
            // A client's prefetch-count may be any number: past the
            // semaphore's limit it would panic.
            credit: Semaphore::new(request.prefetch.clamp(1, MAX_CREDIT)),
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

    /// Stops the subscription: no MESSAGE goes out after this. Its task
    /// hands its unsettled deliveries back once its last pull is over.
    pub(super) fn stop(&self) {
        self.state().outbound = None;
        let _ = self.stop_tx.send(true);
    }

    /// Set when the subscription stops (for what lasts as long as it).
    pub(super) fn stopped(&self) -> watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }

    /// Takes every unsettled delivery (at the task's end).
    pub(super) fn drain(&self) -> Vec<Pending> {
        self.state().pending.drain(..).collect()
    }

    /// Keeps `pending` as unsettled and returns where to send it; `None`
    /// (and `pending` put with the `refused`, to hand back) if the
    /// subscription has stopped.
    pub(super) fn keep(
        &self,
        pending: Pending,
        refused: &mut Vec<Acker>,
    ) -> Option<OutboundSender> {
        let mut state = self.state();
        match state.outbound.clone() {
            Some(outbound) => {
                state.pending.push_back(pending);
                Some(outbound)
            }
            None => {
                refused.push(pending.acker);
                None
            }
        }
    }

    /// Settles `pending` (ACK, or NACK with the configured delay).
    pub(super) async fn settle(&self, pending: Vec<Pending>, nack: bool) {
        for delivery in pending {
            let kind = if nack {
                let delay = self.nack_delay(delivery.delivered);
                AckKind::Nak(Some(delay).filter(|d| !d.is_zero()))
            } else {
                AckKind::Ack
            };
            if let Err(error) = delivery.acker.ack_with(kind).await {
                warn!(%error, "queue engine: an acknowledgement did not go out; the message comes back after ack_wait");
            }
        }
    }

    /// Where its MESSAGEs go, unless it has stopped.
    pub(super) fn outbound(&self) -> Option<OutboundSender> {
        self.state().outbound.clone()
    }
}

/// Takes credit for the next pull: at least one permit (waiting for it),
/// at most `max`. `None`: the subscription stopped.
pub(super) async fn take_credit(
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

/// Naks `deliveries` without delay, so that other consumers get them now.
/// Called once the subscription's pull is over: a pull still out would take
/// them straight back (each time counted as a delivery by JetStream).
pub(super) async fn hand_back(deliveries: impl IntoIterator<Item = Acker>) {
    for acker in deliveries {
        if let Err(error) = acker.ack_with(AckKind::Nak(None)).await {
            warn!(%error, "queue engine: a hand-back did not go out; the message comes back after ack_wait");
        }
    }
}
