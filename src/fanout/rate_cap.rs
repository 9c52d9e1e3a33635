//! SUBSCRIBE `x-max-rate:<messages per second>`: at most that many MESSAGEs
//! per destination to one subscription, always the latest. Per destination
//! a slot keeps when the next may go and the newest held back; a timer task
//! delivers what is held when the interval ends.

use crate::outbound::OutFrame;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// Slots per destination are bounded by the destinations a subscription
/// matches; past this many the idle ones are forgotten.
const PRUNE_AT: usize = 4096;

/// One subscription's rate cap.
#[derive(Debug)]
pub struct RateCap {
    interval: Duration,
    slots: Mutex<HashMap<Box<str>, RateSlot>>,
}

/// One destination's state under the cap.
#[derive(Debug)]
struct RateSlot {
    /// When the next MESSAGE may go out.
    next_at: Instant,
    /// The newest MESSAGE held back, replaced by newer ones.
    held: Option<OutFrame>,
    /// A timer task will deliver `held` at `next_at`.
    armed: bool,
}

/// What a held MESSAGE is delivered to when its interval ends: the
/// subscription that owns the cap.
pub(super) trait CappedSink: Send + Sync + 'static {
    /// The cap, if this subscription has one.
    fn rate_cap(&self) -> Option<&RateCap>;
    /// Pushes a held MESSAGE as the subscription's slow-consumer policy says.
    fn push_held(&self, destination: &str, frame: OutFrame);
}

/// What [`RateCap::offer`] did with a frame.
pub(super) enum Offered {
    /// It may go out now.
    Now(OutFrame),
    /// It is held (replacing an older held one) until the interval ends.
    Held,
}

impl RateCap {
    /// A cap of `per_second` (at least 1) MESSAGEs per destination.
    pub fn new(per_second: u32) -> RateCap {
        RateCap {
            interval: Duration::from_secs(1) / per_second.max(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, RateSlot>> {
        // A poisoned lock only means a panic elsewhere; the data is plain.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets every held MESSAGE; a timer that fires later finds nothing.
    /// Called when the subscription is removed, so that nothing of it is
    /// pushed after its UNSUBSCRIBE's RECEIPT.
    pub fn close(&self) {
        self.lock().clear();
    }

    /// Lets `frame` for `destination` go now, or holds it as the latest and
    /// arms a timer that delivers it to `subscriber` when the interval ends.
    pub(super) fn offer<S: CappedSink>(
        &self,
        subscriber: &Arc<S>,
        destination: &str,
        frame: OutFrame,
    ) -> Offered {
        let now = Instant::now();
        let mut slots = self.lock();
        if slots.len() >= PRUNE_AT && !slots.contains_key(destination) {
            slots.retain(|_, slot| slot.armed || slot.next_at > now);
        }
        let slot = slots.entry(destination.into()).or_insert(RateSlot {
            next_at: now,
            held: None,
            armed: false,
        });
        if !slot.armed && now >= slot.next_at {
            slot.next_at = now + self.interval;
            return Offered::Now(frame);
        }
        slot.held = Some(frame);
        if !slot.armed {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                // No runtime to time it with (never on the broker's
                // publishing path): let it go now rather than lose it.
                slot.next_at = now + self.interval;
                return slot.held.take().map_or(Offered::Held, Offered::Now);
            };
            slot.armed = true;
            let at = slot.next_at;
            let subscriber = Arc::downgrade(subscriber);
            let destination: Box<str> = destination.into();
            runtime.spawn(deliver_held(subscriber, destination, at));
        }
        Offered::Held
    }
}

/// Waits until `at`, then pushes the destination's held MESSAGE, unless the
/// subscription has gone meanwhile.
async fn deliver_held<S: CappedSink>(subscriber: Weak<S>, destination: Box<str>, at: Instant) {
    tokio::time::sleep_until(at).await;
    let Some(subscriber) = subscriber.upgrade() else {
        return;
    };
    let Some(cap) = subscriber.rate_cap() else {
        return;
    };
    // The push happens under the slots' lock: once `close` has returned
    // (the router calls it when the subscription leaves the index, before
    // its UNSUBSCRIBE's RECEIPT), no held MESSAGE can follow.
    let mut slots = cap.lock();
    let Some(slot) = slots.get_mut(&destination) else {
        return;
    };
    slot.armed = false;
    if let Some(frame) = slot.held.take() {
        slot.next_at = Instant::now() + cap.interval;
        subscriber.push_held(&destination, frame);
    }
}
