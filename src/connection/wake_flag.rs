//! A wait the drive loop polls only once something woke it.
//!
//! The loop polls every branch of its `select!` at each turn, and a turn is
//! a delivery at low rates. Most branches are rarely ready: polling them
//! anyway re-registers the task with each of their sources (tokio's
//! `Notify` and socket readiness take a lock for that), a visible part of
//! each delivery's cost. A [`WakeFlag`] gives such a wait a waker of its
//! own, which records that the wait's source fired and then wakes the task:
//! until it fires, a poll is one atomic swap.
//!
//! This holds only for a wait whose source keeps the flag's waker between
//! polls, including when the wait is dropped and made again (a pinned
//! future, or a cancel-safe read whose socket keeps the last waker). When
//! something polls the same source with another waker (a read with a
//! no-op waker), [`WakeFlag::fire`] says so, and the next poll polls it.

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// See the module documentation.
pub(super) struct WakeFlag {
    shared: Arc<Flag>,
    /// `shared` as a waker, made once.
    waker: Waker,
}

struct Flag {
    /// The source fired (or must be polled anyway) since the last poll.
    fired: AtomicBool,
    /// The task to wake when it fires.
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl WakeFlag {
    /// A flag that has fired: the first poll polls the wait.
    pub(super) fn new() -> Self {
        let shared = Arc::new(Flag {
            fired: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(shared.clone());
        WakeFlag { shared, waker }
    }

    /// Polls `wait` with the flag's waker if the flag fired since the last
    /// poll, and is `Pending` otherwise; either way the current task is
    /// woken when it next fires.
    pub(super) fn poll<F: Future + ?Sized>(
        &self,
        cx: &mut Context<'_>,
        wait: Pin<&mut F>,
    ) -> Poll<F::Output> {
        self.shared.task.register(cx.waker());
        if !self.shared.fired.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let poll = wait.poll(&mut Context::from_waker(&self.waker));
        if poll.is_ready() {
            // A finished wait registered nothing: the next one is polled.
            self.fire();
        }
        poll
    }

    /// Makes the next poll poll its wait: its source was polled with
    /// another waker, or the wait was replaced by one never polled.
    pub(super) fn fire(&self) {
        self.shared.fired.store(true, Ordering::Release);
    }

    /// `wait`, polled through this flag.
    pub(super) async fn wait<F: Future>(&self, wait: F) -> F::Output {
        let mut wait = std::pin::pin!(wait);
        std::future::poll_fn(|cx| self.poll(cx, wait.as_mut())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::Notify;

    #[tokio::test]
    async fn a_wait_is_polled_again_only_after_its_source_fired() {
        let flag = WakeFlag::new();
        let notify = Arc::new(Notify::new());
        let polls = std::sync::atomic::AtomicUsize::new(0);
        let mut counted = std::pin::pin!(async {
            polls.fetch_add(1, Ordering::Relaxed);
            notify.notified().await;
        });
        // The first poll polls it; the next ones do not, until it fires.
        for _ in 0..3 {
            let waited =
                tokio::time::timeout(Duration::from_millis(10), flag.wait(counted.as_mut()));
            assert!(waited.await.is_err());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        let notifier = notify.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            notifier.notify_one();
        });
        tokio::time::timeout(Duration::from_secs(5), flag.wait(counted.as_mut()))
            .await
            .expect("woken when its source fires");
    }

    #[tokio::test]
    async fn fire_makes_the_next_poll_poll() {
        let flag = WakeFlag::new();
        let ready = std::sync::atomic::AtomicBool::new(false);
        let check = || {
            std::future::poll_fn(|_| {
                if ready.load(Ordering::Relaxed) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
        };
        let mut first = std::pin::pin!(check());
        let waited = tokio::time::timeout(Duration::from_millis(10), flag.wait(first.as_mut()));
        assert!(waited.await.is_err());
        // Ready now, but its source never wakes: only `fire` gets it polled.
        ready.store(true, Ordering::Relaxed);
        let mut second = std::pin::pin!(check());
        let waited = tokio::time::timeout(Duration::from_millis(10), flag.wait(second.as_mut()));
        assert!(waited.await.is_err());
        flag.fire();
        let mut third = std::pin::pin!(check());
        tokio::time::timeout(Duration::from_secs(1), flag.wait(third.as_mut()))
            .await
            .expect("polled after fire");
    }
}
