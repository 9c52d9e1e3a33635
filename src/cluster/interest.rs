//! The interest of this node's topic subscribers in the engine: each
//! index entry's NATS subject, ref-counted per subject, the generation of
//! new interest, and which generation the server has confirmed (a topic
//! SUBSCRIBE's RECEIPT waits for it). Kept by `topics.rs`.

use crate::fanout::{IndexKey, InterestFlushed};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{watch, Notify};

/// The subjects local subscribers need, by index entry.
#[derive(Debug, Default)]
pub(super) struct Table {
    /// Each auto-ack entry's subject.
    by_key: HashMap<IndexKey, Arc<str>>,
    /// Entries per subject; a subject is subscribed while its count is above 0.
    counts: HashMap<Arc<str>, usize>,
    /// Bumped each time a subject's count reaches 1 (new interest).
    generation: u64,
}

/// The interest of this node's subscribers, shared by the export half (the
/// index's writer changes it) and the inbound tasks (which read it).
#[derive(Debug)]
pub(super) struct Interest {
    /// A leaf lock: taken under the index's lock (write: changes; read:
    /// choosing entries for an incoming message), or alone; never held
    /// while taking another.
    table: Mutex<Table>,
    /// Woken when a subject's count leaves or reaches 0: the interest task
    /// brings NATS into line.
    pub(super) changed: Notify,
    /// The last `Table::generation` whose subjects the server has confirmed
    /// (a round trip after subscribing); sent by the interest task, watched by
    /// SUBSCRIBEs waiting to send their RECEIPT.
    pub(super) flushed_tx: watch::Sender<u64>,
}

impl Default for Interest {
    fn default() -> Interest {
        Interest {
            table: Mutex::default(),
            changed: Notify::new(),
            flushed_tx: watch::Sender::new(0),
        }
    }
}

impl Interest {
    pub(super) fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn add(&self, key: &IndexKey, subject: String) {
        let mut table = self.table();
        if table.by_key.get(key).is_some_and(|s| **s == *subject) {
            return;
        }
        self.forget(&mut table, key);
        let subject: Arc<str> = subject.into();
        table.by_key.insert(key.clone(), subject.clone());
        self.count(&mut table, subject);
    }

    /// One more user of `subject` (a new one: a new generation to confirm).
    pub(super) fn count(&self, table: &mut Table, subject: Arc<str>) {
        let count = table.counts.entry(subject).or_default();
        *count += 1;
        if *count == 1 {
            table.generation += 1;
            self.changed.notify_one();
        }
    }

    /// One user fewer of `subject`.
    pub(super) fn uncount(&self, table: &mut Table, subject: &Arc<str>) {
        if let Some(count) = table.counts.get_mut(subject) {
            *count -= 1;
            if *count == 0 {
                table.counts.remove(subject);
                self.changed.notify_one();
            }
        }
    }

    pub(super) fn remove(&self, key: &IndexKey) {
        let mut table = self.table();
        self.forget(&mut table, key);
    }

    pub(super) fn forget(&self, table: &mut Table, key: &IndexKey) {
        let Some(subject) = table.by_key.remove(key) else {
            return;
        };
        self.uncount(table, &subject);
    }

    pub(super) fn wants(&self, key: &IndexKey, subject: &str) -> bool {
        self.table()
            .by_key
            .get(key)
            .is_some_and(|s| **s == *subject)
    }

    /// One more user of `subject` outside the index (a SUBSCRIBE's hold);
    /// returns the generation to wait for.
    pub(super) fn hold(&self, subject: Arc<str>) -> u64 {
        let mut table = self.table();
        self.count(&mut table, subject);
        table.generation
    }

    /// Gives a hold of `subject` back.
    pub(super) fn release(&self, subject: &Arc<str>) {
        let mut table = self.table();
        self.uncount(&mut table, subject);
    }

    /// The subjects wanted now, and the generation they stand for.
    pub(super) fn subjects(&self) -> (u64, HashSet<Arc<str>>) {
        let table = self.table();
        (table.generation, table.counts.keys().cloned().collect())
    }

    /// Index entries per subject (a SUBSCRIBE's hold not counted), for
    /// other nodes' subscriber counts.
    pub(super) fn counts(&self) -> HashMap<Arc<str>, usize> {
        let mut counts: HashMap<Arc<str>, usize> = HashMap::new();
        for subject in self.table().by_key.values() {
            *counts.entry(subject.clone()).or_default() += 1;
        }
        counts
    }

    /// Resolves once the server has confirmed the subjects of the
    /// generation `wanted` (or the interest task has ended).
    pub(super) fn flushed(&self, wanted: u64) -> InterestFlushed {
        let mut flushed_rx = self.flushed_tx.subscribe();
        Box::pin(async move {
            let _ = flushed_rx.wait_for(|flushed| *flushed >= wanted).await;
        })
    }
}
