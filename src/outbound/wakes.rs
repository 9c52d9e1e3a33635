//! Waking a connection's writer: at once, or for a task inside a
//! [`deferring_wakes`] scope, once the scope stops running (it ends, or it
//! waits for something).

use super::Shared;
use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    /// Writers to wake when the current [`deferring_wakes`] scope stops running.
    static DEFERRED_WAKES: RefCell<DeferredWakes>;
}

/// Writers whose queues became non-empty inside a [`deferring_wakes`]
/// scope and are not woken yet. Dropping it wakes them, so a scope that is
/// cancelled half way still wakes every writer it owes (a writer not woken
/// would sleep on a non-empty queue: later pushes do not wake it).
#[derive(Default)]
struct DeferredWakes(Vec<Arc<Shared>>);

impl DeferredWakes {
    fn wake_all(&mut self) {
        for shared in self.0.drain(..) {
            shared.ready.wake();
        }
    }
}

impl Drop for DeferredWakes {
    fn drop(&mut self) {
        self.wake_all();
    }
}

/// Wakes `shared`'s writer now, or when the current task's
/// [`deferring_wakes`] scope stops running.
pub(super) fn wake(shared: &Arc<Shared>) {
    let deferred = DEFERRED_WAKES.try_with(|wakes| wakes.borrow_mut().0.push(shared.clone()));
    if deferred.is_err() {
        shared.ready.wake();
    }
}

/// Runs `work`, waking the writers of the queues it pushed into only when
/// it stops running: when it is done, and whenever it waits. A publisher
/// that handles a burst of SENDs in one go wakes each subscriber's writer
/// once for the burst, which then writes it in one batch, instead of once
/// per message while the publisher is still pushing (the writers' draining
/// raced the pushes for each queue's lock). Never across a wait: what `work`
/// waits for (room in queue memory, the engine) may need those writers.
pub async fn deferring_wakes<F: Future>(work: F) -> F::Output {
    DEFERRED_WAKES
        .scope(RefCell::new(DeferredWakes::default()), async move {
            let mut work = std::pin::pin!(work);
            std::future::poll_fn(|cx| {
                let poll = work.as_mut().poll(cx);
                if poll.is_pending() {
                    let _ = DEFERRED_WAKES.try_with(|wakes| wakes.borrow_mut().wake_all());
                }
                poll
            })
            .await
        })
        .await
}
