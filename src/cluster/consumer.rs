//! The task of one queue subscription on JetStream: it pulls from the
//! queue's shared consumer (or a durable topic subscription's own one) and
//! delivers (its shared state: `subscription.rs`).
//!
//! The task pulls at most what the subscription has credit for: with
//! `client` and `client-individual`, `prefetch` minus its unsettled
//! deliveries (a `Semaphore` of `prefetch` permits, one taken per delivery
//! and given back by its ACK or NACK); with `auto`, what fits in the
//! connection's outbound queue below half full (as one node's queues; at
//! most `prefetch`), each acknowledged to JetStream once queued there; one
//! that does not fit after all is held, in order, until there is room
//! (`held.rs`: a slow consumer cut off holds nothing JetStream counts as
//! done by this subscription's pushes, and nothing it never saw comes back
//! counted as delivered once more). A durable subscription
//! ends when its consumer is deleted or made again under it
//! (`rebound.rs`). Nothing is fetched for credit the node does not have, so other
//! nodes' subscribers get the rest. A pull waits at most [`PULL_WAIT`] for
//! messages; a stopped subscription's task ends after its current pull,
//! handing back anything that still arrives.
//!
//! The consumer delivers a message once more than `max_deliver`: that
//! delivery goes to the queue's dead-letter queue instead of a client.

use super::dead_letters::DeadLetters;
use super::held::{self, Held, AUTO_PULL_CAP};
use super::pull_queue::Queue;
use super::pulls::PullTask;
use super::rebound::{self, Binding, Checker};
use super::subscription::{take_credit, Pending, Served, ServedRef, Subscription};
use super::wire;
use crate::fanout::encode::{ack_id, encode, Delivery};
use crate::model::destination::{pattern_matches, TOPIC_PREFIX};
use crate::model::message::epoch_ms;
use async_nats::jetstream::{message::Acker, AckKind};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// How long one pull waits for messages before it is made again (and how
/// long a stopped subscription's task may still run).
pub(super) const PULL_WAIT: Duration = Duration::from_secs(2);
/// The pause after a failed pull (the engine unreachable).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// After a failed pull (`error`): `queue`'s consumer made again if it
/// is gone; a durable subscription (its `checker`) ended if its
/// consumer is gone or another's.
async fn after_failure(
    queue: &mut Queue,
    subscription: &Subscription,
    request: &ServedRef,
    checker: Option<&mut Checker>,
    error: &str,
) {
    match checker {
        Some(checker) => {
            if checker.after_failure(&mut queue.consumer, error).await == Binding::Lost {
                lost(subscription, request);
            }
        }
        None => queue.remake().await,
    }
}

/// The subscription's task: pull, deliver, until stopped. After the stop it
/// reads its last pull to the end, handing back what still arrives.
pub(super) async fn pull_loop(
    mut queue: Queue,
    subscription: Arc<Subscription>,
    request: Served,
    dead_letters: DeadLetters,
    task: PullTask,
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
    let started = tokio::select! {
        _ = start => true,
        _ = stopped.wait_for(|stop| *stop) => false,
    };
    if !started {
        queue.ended().await;
        return;
    }
    // Deliveries that arrived after the stop, handed back with the
    // unsettled ones when the last pull is over.
    let mut refused = Vec::new();
    // Auto: pulled, waiting for room (`held.rs`).
    let mut held = Held::new(queue.consumer.cached_info().config.ack_wait);
    let max = request.prefetch.max(1);
    let credited = request.ack.expects_ack();
    // A durable subscription's checks of its consumer (`rebound.rs`).
    let mut checker = subscription
        .durable
        .as_ref()
        .map(|durable| Checker::new(durable.incarnation.clone()));
    loop {
        if *stopped.borrow() {
            break;
        }
        // About to wait (credit, room): the consumer may change meanwhile.
        let waits = if credited {
            subscription.credit.available_permits() == 0
        } else {
            subscription
                .outbound()
                .is_some_and(|outbound| !outbound.has_room())
        };
        if let (true, Some(checker)) = (waits, &mut checker) {
            checker.make_due();
        }
        let want = if credited {
            match take_credit(&subscription, &mut stopped, max).await {
                Some(want) => want,
                None => break,
            }
        } else {
            // Auto: as on one node, only for a connection with room, so
            // that messages wait in the queue rather than overflow it; what
            // is held goes first, and no pull goes out meanwhile.
            let Some(room) = held::wait_for_room(&subscription, &mut stopped, &mut held).await
            else {
                break;
            };
            if !held.is_empty() {
                while let Some(message) = held.next_with_room(&subscription) {
                    deliver(
                        &subscription,
                        &request,
                        &dead_letters,
                        message,
                        &mut refused,
                        &task,
                    )
                    .await;
                }
                continue;
            }
            room.min(max).min(AUTO_PULL_CAP)
        };
        let mut used = 0;
        match queue
            .consumer
            .batch()
            .max_messages(want)
            .expires(PULL_WAIT)
            .messages()
            .await
        {
            Ok(mut batch) => {
                let mut received = 0;
                while let Some(item) = batch.next().await {
                    let message = match item {
                        Ok(message) => message,
                        Err(error) => {
                            debug!(%error, "queue engine: pull ended");
                            let error = error.to_string();
                            let checker = checker.as_mut();
                            after_failure(&mut queue, &subscription, &request, checker, &error)
                                .await;
                            break;
                        }
                    };
                    received += 1;
                    if let Some(checker) = &mut checker {
                        // Stopped (lost): the rest goes back at the task's
                        // end, unchecked.
                        let found = if *stopped.borrow() {
                            Binding::Unknown
                        } else {
                            checker
                                .before(&mut queue.consumer, &message, &mut stopped)
                                .await
                        };
                        if found == Binding::Lost {
                            lost(&subscription, &request);
                        }
                        if found != Binding::Held {
                            // Another holder's, or stopped: back at the
                            // task's end (to the new holder).
                            refused.push(message.split().1);
                            continue;
                        }
                    }
                    // Auto: once one waits for room, the rest of the pull
                    // waits behind it (order).
                    if !credited && held.must_hold(&subscription) {
                        held.push(message);
                        continue;
                    }
                    if deliver(
                        &subscription,
                        &request,
                        &dead_letters,
                        message,
                        &mut refused,
                        &task,
                    )
                    .await
                    {
                        used += 1;
                    }
                }
                drop(batch);
                if let (0, Some(checker)) = (received, &mut checker) {
                    checker.make_due();
                }
            }
            Err(error) => {
                warn!(%error, destination = %request.destination, "queue engine: pull failed; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                    _ = stopped.wait_for(|stop| *stop) => {}
                }
                let error = error.to_string();
                let checker = checker.as_mut();
                after_failure(&mut queue, &subscription, &request, checker, &error).await;
            }
        }
        if credited {
            subscription.credit.add_permits(want - used);
        }
    }
    // Only now: while a pull of ours is out, JetStream would hand it
    // what we hand back (and count a delivery each time).
    let unsettled = subscription.drain().into_iter().map(|p| p.acker);
    let ackers = unsettled.chain(refused).chain(held.into_ackers());
    task.hand_back(ackers.collect()).await;
    queue.ended().await;
    debug!(destination = %request.destination, id = %request.id, "queue engine: subscription ended");
}

/// Gives a message of the feed stream its `x-offset` (the stream
/// sequence, as every node numbers it) and `x-epoch`.
fn stamp_feed(message: &mut crate::model::message::Message, sequence: u64, epoch: &str) {
    let [offset, epoch_name] = crate::fanout::STAMP_HEADERS;
    message.headers.push((offset.into(), sequence.to_string()));
    message.headers.push((epoch_name.into(), epoch.to_owned()));
}

/// Ends a durable subscription whose consumer is lost (`rebound.rs`): no
/// MESSAGE goes out after this, and its client gets a final ERROR (unless
/// the subscription had stopped already).
fn lost(subscription: &Subscription, request: &ServedRef) {
    let outbound = subscription.outbound();
    subscription.stop();
    if let Some(outbound) = outbound {
        warn!(destination = %request.destination, "durable subscription deleted or re-bound elsewhere; its connection is closed");
        // Ignoring a full queue: the connection is closing either way.
        let _ = outbound.push(rebound::lost_frame(&request.destination, request.version));
    }
}

/// Delivers one message (or drops it expired; or, the subscription
/// stopped or its connection gone, puts it with the `refused` to hand back
/// at the task's end); true if it keeps a credit (an unsettled delivery of
/// a client-ack subscription). An auto-ack one is delivered only when its
/// connection has room (the caller holds it otherwise).
async fn deliver(
    subscription: &Subscription,
    request: &ServedRef,
    dead_letters: &DeadLetters,
    message: async_nats::jetstream::Message,
    refused: &mut Vec<Acker>,
    task: &PullTask,
) -> bool {
    let (delivered, sequence) = message
        .info()
        .map(|info| (info.delivered, info.stream_sequence))
        .unwrap_or((1, 0));
    let (message, acker) = message.split();
    let Some(mut decoded) = wire::decode(message.payload) else {
        // Not ours to read: dropped, so that it cannot block the queue.
        warn!(destination = %request.destination, "queue engine: an unreadable message dropped");
        let _ = acker.ack_with(AckKind::Term).await;
        return false;
    };
    if decoded.expired(epoch_ms()) {
        let _ = acker.ack().await;
        return false;
    }
    // A durable subscription's consumer filter is wider than its pattern
    // when a `#` comes before the last word.
    if let Some(durable) = &subscription.durable {
        let words: Vec<&str> = decoded
            .destination
            .strip_prefix(TOPIC_PREFIX)
            .unwrap_or(&decoded.destination)
            .split('.')
            .collect();
        if !pattern_matches(&durable.pattern, &words) {
            let _ = acker.ack().await;
            return false;
        }
        if let Some(epoch) = &durable.feed_epoch {
            stamp_feed(&mut decoded, sequence, epoch);
        }
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
            let Some(outbound) = subscription.keep(pending, refused) else {
                return false;
            };
            // A full or closed queue ends the connection, whose session end
            // hands the unsettled deliveries back.
            if outbound.push(frame).is_ok() {
                task.delivered(&decoded.destination);
            }
            true
        }
        None => {
            let Some(outbound) = subscription.outbound() else {
                refused.push(acker);
                return false;
            };
            // Acknowledged only once queued (and queued only within half
            // the budget, by the caller): this subscription never makes its
            // connection a slow consumer holding messages JetStream counts
            // as done. A refused push ends the connection.
            if outbound.push(frame).is_err() {
                refused.push(acker);
                return false;
            }
            task.delivered(&decoded.destination);
            if let Err(error) = acker.ack().await {
                warn!(%error, "queue engine: an auto ack did not go out; the message comes back after ack_wait");
            }
            false
        }
    }
}
