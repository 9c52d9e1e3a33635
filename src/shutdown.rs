//! Graceful shutdown as a small type: one trigger, many listeners.

use tokio::sync::watch;

/// Fires shutdown once; dropping it does not fire it.
#[derive(Debug)]
pub struct ShutdownTrigger {
    fired_tx: watch::Sender<bool>,
}

/// A cloneable view of whether shutdown has started.
#[derive(Debug, Clone)]
pub struct Shutdown {
    fired_rx: watch::Receiver<bool>,
}

/// A new trigger and its first listener.
pub fn shutdown_pair() -> (ShutdownTrigger, Shutdown) {
    let (fired_tx, fired_rx) = watch::channel(false);
    (ShutdownTrigger { fired_tx }, Shutdown { fired_rx })
}

impl ShutdownTrigger {
    /// Starts shutdown. Idempotent.
    pub fn fire(&self) {
        self.fired_tx.send_replace(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown has started (at once if it already has).
    pub async fn wait(&mut self) {
        // An error means the trigger is gone without firing: never resolve then.
        if self.fired_rx.wait_for(|fired| *fired).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
