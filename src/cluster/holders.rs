//! Exclusive and auto-delete queues across nodes: who holds a queue.
//!
//! An `exclusive:true` SUBSCRIBE takes its queue's key in a JetStream
//! key-value bucket (`<prefix>_queue_holders`) with a strict create, so
//! that exactly one subscription over all nodes holds it; it is refused if
//! the queue has consumers (this node's, or any node's pulls waiting or
//! deliveries unacknowledged on the queue's consumer), as on one node. Its
//! node refreshes the key every [`REFRESH`] while the subscription lasts
//! and deletes it when the subscription ends; the bucket forgets a key not
//! refreshed for [`LEASE`], so the queue is free again at most that long
//! after its holder's node is killed. Any other SUBSCRIBE to a held queue
//! gets the ERROR one node gives.
//!
//! This node also counts its live subscriptions per queue, for the
//! exclusive check and for auto-delete: when its last one of an
//! auto-delete queue has ended (its last pull over, its deliveries handed
//! back) and the queue's consumer shows no other node's subscriber (no
//! pull waiting, nothing unacknowledged), the queue's messages are purged
//! and its consumer deleted.

use super::subject::queue_consumer;
use crate::config::ClusterConfig;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, warn};

/// How long a holder's key lasts without a refresh (its node killed).
pub(super) const LEASE: Duration = Duration::from_secs(10);
/// How often a live holder refreshes its key.
const REFRESH: Duration = Duration::from_secs(3);

/// The holders' bucket and this node's live subscriptions per queue.
pub(super) struct Holders {
    kv: kv::Store,
    /// Queue name → live subscriptions of this node. A leaf lock, held
    /// for one change.
    local: Mutex<HashMap<String, usize>>,
}

impl Holders {
    /// Creates (or updates) the bucket.
    pub(super) async fn open(
        jetstream: &jetstream::Context,
        config: &ClusterConfig,
    ) -> Result<Holders, String> {
        let bucket = format!("{}_queue_holders", config.subject_prefix.replace('.', "_"));
        let kv = jetstream
            .create_or_update_key_value(kv::Config {
                bucket: bucket.clone(),
                history: 1,
                max_age: LEASE,
                num_replicas: config.replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cluster: cannot create the bucket '{bucket}': {e}"))?;
        Ok(Holders {
            kv,
            local: Mutex::new(HashMap::new()),
        })
    }

    fn local(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new live subscription of queue `name` on this node.
    pub(super) fn enter(&self, name: &str) {
        *self.local().entry(name.to_owned()).or_default() += 1;
    }

    /// A subscription of queue `name` has ended; true if it was this
    /// node's last one.
    pub(super) fn leave(&self, name: &str) -> bool {
        let mut local = self.local();
        let Some(count) = local.get_mut(name) else {
            return true;
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            local.remove(name);
            return true;
        }
        false
    }

    /// Whether this node has live subscriptions of queue `name`.
    pub(super) fn has_local(&self, name: &str) -> bool {
        self.local().contains_key(name)
    }

    /// Whether an exclusive subscription holds queue `name` now.
    pub(super) async fn held(&self, name: &str) -> Result<bool, String> {
        self.kv
            .get(queue_consumer(name))
            .await
            .map(|value| value.is_some())
            .map_err(|e| format!("queue engine: cannot read the holder of '{name}': {e}"))
    }

    /// Takes queue `name` for `holder`: its key's revision, or `None` if
    /// another subscription holds it.
    pub(super) async fn take(&self, name: &str, holder: &str) -> Result<Option<u64>, String> {
        match self
            .kv
            .create(queue_consumer(name), Bytes::from(holder.to_owned()))
            .await
        {
            Ok(revision) => Ok(Some(revision)),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(error) => Err(format!(
                "queue engine: cannot take the exclusive queue '{name}': {error}"
            )),
        }
    }

    /// Keeps queue `name` (taken at `revision`) until `stopped`, then
    /// gives it up.
    pub(super) fn hold(
        self: Arc<Self>,
        name: String,
        holder: String,
        mut revision: u64,
        mut stopped: watch::Receiver<bool>,
    ) {
        tokio::spawn(async move {
            let key = queue_consumer(&name);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(REFRESH) => {}
                    _ = stopped.wait_for(|stop| *stop) => break,
                }
                match self
                    .kv
                    .update(&key, Bytes::from(holder.clone()), revision)
                    .await
                {
                    Ok(next) => revision = next,
                    // Lost (the engine unreachable past the lease, and
                    // another took it): nothing to give up.
                    Err(error) => {
                        warn!(%error, queue = %name, "queue engine: exclusive hold not refreshed");
                    }
                }
            }
            if let Err(error) = self.kv.delete_expect_revision(&key, Some(revision)).await {
                debug!(%error, queue = %name, "queue engine: exclusive hold not given up; it lapses");
            }
        });
    }
}
