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
//! exclusive check and for auto-delete. While it has subscriptions of an
//! auto-delete queue it keeps a presence key (`<queue>.n.<node>`, refreshed
//! as holds are); when its last one has ended (its last pull over, its
//! deliveries handed back) it deletes its key, and if no other node's key
//! is left the queue is deleted with its messages (`definitions.rs`).

use super::subject::queue_consumer;
use crate::config::ClusterConfig;
use crate::queue::{QueueSubscribe, REFUSAL};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// How long a holder's key lasts without a refresh (its node killed).
pub(super) const LEASE: Duration = Duration::from_secs(10);
/// How often a live holder refreshes its key.
pub(super) const REFRESH: Duration = Duration::from_secs(3);
/// How long a SUBSCRIBE tries to read a queue's holder before its ERROR.
const READ_PATIENCE: Duration = Duration::from_secs(5);

/// The holders' bucket and this node's live subscriptions per queue.
pub(super) struct Holders {
    pub(super) kv: kv::Store,
    /// This process among the nodes (its presence keys' last token).
    node: String,
    /// Queue name → live subscriptions of this node, and whether the queue
    /// is auto-delete. A leaf lock, held for one change.
    local: Mutex<HashMap<String, (usize, bool)>>,
    /// Holder name → the task keeping its hold. A leaf lock.
    pub(super) holds: Mutex<HashMap<String, JoinHandle<()>>>,
}

/// The name of the holder of subscription `id` of `session`.
pub(super) fn holder_name(session: impl std::fmt::Display, id: &str) -> String {
    format!("{session}/{id}")
}

/// The presence key of `node` for queue `name`.
fn presence(name: &str, node: &str) -> String {
    format!("{}.n.{node}", queue_consumer(name))
}

impl Holders {
    /// Creates (or updates) the bucket.
    pub(super) async fn open(
        jetstream: &jetstream::Context,
        config: &ClusterConfig,
    ) -> Result<Arc<Holders>, String> {
        let bucket = format!("{}_queue_holders", config.subject_prefix.replace('.', "_"));
        let bucket_config = kv::Config {
            bucket: bucket.clone(),
            history: 1,
            max_age: LEASE,
            num_replicas: config.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        // As the queue stream: tried again until `connect_timeout` while a
        // JetStream cluster that has just started elects its leaders.
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let kv = loop {
            match jetstream
                .create_or_update_key_value(bucket_config.clone())
                .await
            {
                Ok(kv) => break kv,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    debug!(%error, %bucket, "cluster: bucket not created yet; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => {
                    return Err(format!(
                        "cluster: cannot create the bucket '{bucket}': {error}"
                    ))
                }
            }
        };
        // Unique over the NATS system: the server's id and this
        // connection's id on it.
        let info = jetstream.client().server_info();
        let holders = Arc::new(Holders {
            kv,
            node: format!("{}-{}", info.server_id, info.client_id),
            local: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
        });
        tokio::spawn(refresh_presence(Arc::downgrade(&holders)));
        Ok(holders)
    }

    fn local(&self) -> MutexGuard<'_, HashMap<String, (usize, bool)>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new live subscription of queue `name` on this node; the
    /// first of an auto-delete queue puts this node's presence key. `Err`
    /// (the key not put: another node's last subscriber could delete the
    /// queue under this one) is the SUBSCRIBE's ERROR, and nothing counted.
    pub(super) async fn enter(&self, name: &str, auto_delete: bool) -> Result<(), String> {
        let first = {
            let mut local = self.local();
            let entry = local.entry(name.to_owned()).or_insert((0, auto_delete));
            entry.0 += 1;
            entry.0 == 1
        };
        if first && auto_delete {
            if let Err(error) = self.kv.put(presence(name, &self.node), Bytes::new()).await {
                warn!(%error, queue = %name, "queue engine: presence not put; SUBSCRIBE refused");
                let mut local = self.local();
                if let Some(entry) = local.get_mut(name) {
                    entry.0 = entry.0.saturating_sub(1);
                    if entry.0 == 0 {
                        local.remove(name);
                    }
                }
                return Err(format!(
                    "queue engine: cannot subscribe to the auto-delete queue '{name}': the engine is unreachable ({error})"
                ));
            }
        }
        Ok(())
    }

    /// A subscription of queue `name` has ended (its last pull over). If
    /// it was this node's last one of an auto-delete queue, its presence
    /// key goes; true if no other node's is left (the queue is to go).
    pub(super) async fn leave(&self, name: &str) -> bool {
        let auto_delete = {
            let mut local = self.local();
            let Some(entry) = local.get_mut(name) else {
                return false;
            };
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 > 0 {
                return false;
            }
            let auto_delete = entry.1;
            local.remove(name);
            auto_delete
        };
        if !auto_delete {
            return false;
        }
        if let Err(error) = self.kv.delete(presence(name, &self.node)).await {
            // It lapses after LEASE; meanwhile the queue stays.
            warn!(%error, queue = %name, "queue engine: presence not given up");
            return false;
        }
        let mine = format!("{}.n.", queue_consumer(name));
        let Ok(mut keys) = self.kv.keys().await else {
            return false;
        };
        while let Some(key) = keys.next().await {
            match key {
                Ok(key) if key.starts_with(&mine) => return false,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        !self.has_local(name)
    }

    /// Whether this node has live subscriptions of queue `name`.
    pub(super) fn has_local(&self, name: &str) -> bool {
        self.local().contains_key(name)
    }

    /// The presence keys this node keeps now.
    fn present(&self) -> Vec<String> {
        self.local()
            .iter()
            .filter(|(_, (_, auto_delete))| *auto_delete)
            .map(|(name, _)| presence(name, &self.node))
            .collect()
    }

    /// Admits `request` to queue `name`, whose consumer has `waiting` pulls
    /// out: an exclusive SUBSCRIBE takes the queue (its holder and key
    /// revision, for [`hold`](Self::hold)) if nobody consumes it; any other
    /// is refused while the queue is held. `Err` is the ERROR.
    pub(super) async fn admit(
        &self,
        name: &str,
        request: &QueueSubscribe,
        waiting: usize,
    ) -> Result<Option<(String, u64)>, String> {
        let refused = || {
            format!(
                "{REFUSAL}{}' is exclusive: it already has a consumer",
                request.destination
            )
        };
        if !request.arguments.exclusive {
            return match self.held(name).await? {
                true => Err(refused()),
                false => Ok(None),
            };
        }
        // Another node's subscriber with credit keeps a pull waiting (one
        // whose prefetch is used up does not: it is not seen).
        if self.has_local(name) || waiting > 0 {
            return Err(refused());
        }
        let holder = holder_name(request.session, &request.id);
        match self.take(name, &holder).await? {
            Some(revision) => Ok(Some((holder, revision))),
            None => Err(refused()),
        }
    }

    /// Whether an exclusive subscription holds queue `name` now. A read
    /// that fails is tried again for up to [`READ_PATIENCE`]: a busy
    /// engine (many SUBSCRIBEs at once, an election) should delay a
    /// SUBSCRIBE, not refuse it.
    async fn held(&self, name: &str) -> Result<bool, String> {
        let deadline = tokio::time::Instant::now() + READ_PATIENCE;
        loop {
            match self.kv.get(queue_consumer(name)).await {
                Ok(value) => return Ok(value.is_some()),
                Err(error) if tokio::time::Instant::now() < deadline => {
                    debug!(%error, queue = name, "queue engine: holder not read yet; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => {
                    return Err(format!(
                        "queue engine: cannot read the holder of '{name}': {error}"
                    ))
                }
            }
        }
    }

    /// Takes queue `name` for `holder`: its key's revision, or `None` if
    /// another subscription holds it.
    async fn take(&self, name: &str, holder: &str) -> Result<Option<u64>, String> {
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
}

/// Refreshes this node's presence keys every [`REFRESH`] while the node
/// lives (they lapse [`LEASE`] after it is killed).
async fn refresh_presence(holders: std::sync::Weak<Holders>) {
    loop {
        tokio::time::sleep(REFRESH).await;
        let Some(holders) = holders.upgrade() else {
            return;
        };
        for key in holders.present() {
            if let Err(error) = holders.kv.put(&key, Bytes::new()).await {
                debug!(%error, %key, "queue engine: presence not refreshed");
            }
        }
    }
}
