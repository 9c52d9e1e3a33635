//! Waking a connection's writer: at once, or for a task inside a
//! [`deferring_wakes`] scope, once when the scope ends.

use super::Shared;
use std::cell::RefCell;
use std::sync::Arc;

tokio::task_local! {
    /// Writers to wake when the current [`deferring_wakes`] scope ends.
    static DEFERRED_WAKES: RefCell<DeferredWakes>;
}

/// Writers whose queues became non-empty inside a [`deferring_wakes`]
/// scope. Dropping it wakes them, so a scope that is cancelled half way
/// still wakes every writer it owes (a writer not woken would sleep on a
/// non-empty queue: later pushes do not wake it).
#[derive(Default)]
struct DeferredWakes(Vec<Arc<Shared>>);

impl Drop for DeferredWakes {
    fn drop(&mut self) {
        for shared in self.0.drain(..) {
            shared.ready.notify_one();
        }
    }
}

/// Wakes `shared`'s writer now, or at the end of the current task's
/// [`deferring_wakes`] scope.
pub(super) fn wake(shared: &Arc<Shared>) {
    let deferred = DEFERRED_WAKES.try_with(|wakes| wakes.borrow_mut().0.push(shared.clone()));
    if deferred.is_err() {
        shared.ready.notify_one();
    }
}

/// Runs `work`, waking the writers of the queues it pushed into only when
/// it is done. A publisher that handles a burst of SENDs in one scope wakes
/// each subscriber's writer once for the burst, which then writes it in one
/// batch, instead of once per message while the publisher is still pushing
/// (the writers' draining raced the pushes for each queue's lock).
pub async fn deferring_wakes<F: std::future::Future>(work: F) -> F::Output {
    DEFERRED_WAKES
        .scope(RefCell::new(DeferredWakes::default()), work)
        .await
}
