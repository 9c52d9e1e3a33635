//! The store's writer thread: group commit. It takes every batch that is
//! waiting, writes them all, syncs once, and only then reports the outcome
//! to each batch's [`SyncCompletion`]s, in order (the router turns them into
//! RECEIPTs, or ERRORs for what could not be stored; the store knows nothing
//! of frames). A failed write or sync marks the store failing until a later
//! sync succeeds. Changes that cancel out within a group are not written
//! (coalesce.rs).

use super::coalesce::coalesce;
use super::{Store, StoreError, StoreOp};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tracing::{error, info};

/// Most batches written under one sync.
const MAX_GROUP: usize = 4096;

/// What to do once a batch's changes are durable, or failed to be: made
/// by the router (which turns it into a RECEIPT or an ERROR), run on the
/// writer thread after the sync, in submission order. It must not block.
pub struct SyncCompletion(Box<OnSync>);

/// The callback a [`SyncCompletion`] holds.
type OnSync = dyn FnOnce(Result<(), &StoreError>) + Send;

impl SyncCompletion {
    /// Wraps `done`, called with the sync's outcome.
    pub fn new(done: impl FnOnce(Result<(), &StoreError>) + Send + 'static) -> Self {
        SyncCompletion(Box::new(done))
    }
}

impl std::fmt::Debug for SyncCompletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncCompletion")
    }
}

/// Ops and the completions that wait for them.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// Changes, in order.
    pub ops: Vec<StoreOp>,
    /// Called after the changes are durable (or failed to be).
    pub completions: Vec<SyncCompletion>,
    /// Only a sync, to find out whether a failing store works again.
    pub probe: bool,
}

impl WriteBatch {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.completions.is_empty() && !self.probe
    }
}

/// What the router reads about the store without asking the writer.
#[derive(Debug)]
pub struct StoreState {
    /// Seconds each write-and-sync took (the writer thread observes, a
    /// scrape reads).
    pub sync_seconds: prometheus_client::metrics::histogram::Histogram,
    stored_bytes: AtomicU64,
    failing: AtomicBool,
    last_error: Mutex<String>,
}

impl StoreState {
    /// Bytes of stored records after the last batch.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes.load(Ordering::Relaxed)
    }

    /// The last write or sync failed (and no sync has succeeded since).
    pub fn failing(&self) -> Option<String> {
        self.failing.load(Ordering::Relaxed).then(|| {
            self.last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default()
        })
    }
}

/// The router's handle on the writer.
#[derive(Debug, Clone)]
pub struct StoreWriter {
    /// Batches for the writer thread. Bounded: the router waits when the
    /// disk is behind, which in turn slows every session down.
    batches_tx: mpsc::Sender<WriteBatch>,
    /// Shared readings.
    pub state: Arc<StoreState>,
}

impl StoreWriter {
    /// Hands a batch to the writer; waits while it is behind.
    pub async fn submit(&self, batch: WriteBatch) {
        if let Err(error) = self.batches_tx.send(batch).await {
            // Only when the writer thread is gone (it never stops by itself).
            error!(
                "store writer is gone; {} completions dropped",
                error.0.completions.len()
            );
        }
    }
}

/// Starts the writer thread with a recovered store.
pub fn spawn_writer(store: Box<dyn Store>) -> Result<StoreWriter, StoreError> {
    let (batches_tx, batches_rx) = mpsc::channel(1024);
    let state = Arc::new(StoreState {
        sync_seconds: prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
        ),
        stored_bytes: AtomicU64::new(store.stored_bytes()),
        failing: AtomicBool::new(false),
        last_error: Mutex::new(String::new()),
    });
    let thread_state = state.clone();
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || run(store, batches_rx, thread_state))
        .map_err(|e| StoreError(format!("cannot start the store writer: {e}")))?;
    Ok(StoreWriter { batches_tx, state })
}

fn run(
    mut store: Box<dyn Store>,
    mut batches_rx: mpsc::Receiver<WriteBatch>,
    state: Arc<StoreState>,
) {
    while let Some(first) = batches_rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match batches_rx.try_recv() {
                Ok(batch) => group.push(batch),
                Err(_) => break,
            }
        }
        let ops = coalesce(group.iter_mut().flat_map(|b| b.ops.drain(..)).collect());
        // Earlier groups were synced: with nothing left to write, only a
        // probe needs the disk.
        let must_sync = !ops.is_empty() || group.iter().any(|b| b.probe);
        let result = if must_sync {
            let started = std::time::Instant::now();
            let result = store.write(&ops).and_then(|()| store.sync());
            state.sync_seconds.observe(started.elapsed().as_secs_f64());
            result
        } else {
            Ok(())
        };
        state
            .stored_bytes
            .store(store.stored_bytes(), Ordering::Relaxed);
        match &result {
            Ok(()) if must_sync => {
                if state.failing.swap(false, Ordering::Relaxed) {
                    info!("store works again");
                }
            }
            Ok(()) => {}
            Err(e) => {
                if !state.failing.swap(true, Ordering::Relaxed) {
                    error!(error = %e, "store write failed; persistent SENDs are refused until it works again");
                }
                if let Ok(mut last) = state.last_error.lock() {
                    *last = e.0.clone();
                }
            }
        }
        for completion in group.into_iter().flat_map(|b| b.completions) {
            (completion.0)(result.as_ref().map(|_| ()));
        }
    }
}
