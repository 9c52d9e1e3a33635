//! Subscriber counts across nodes (`/meta/subscribers/...` on the cluster).
//!
//! Each node shares the subscriptions its clients hold, as the topic
//! subjects they listen on with how many entries use each (the interest
//! table of `topics.rs`), on `<prefix>.meta.subscribers`: whenever the
//! table changes (checked every [`CHECK`]) and at least every
//! [`HEARTBEAT`]. Every node keeps the latest table of each other node and
//! forgets a node not heard for [`EXPIRY`] (killed, cut off): its
//! subscribers then stop counting. A watched count is this node's own (the
//! router's) plus the entries of other nodes whose subject matches the
//! topic's; the router sends it as on one node, at most once a second.
//! A pattern with `#` before its last word listens on a wider subject, so
//! other nodes' such subscriptions count for every topic under it.
//!
//! The two tasks hold the counts weakly: the engine's topic half
//! (`NatsTopics`) owns them, and once it is dropped both tasks end within
//! a [`CHECK`]. In a running broker that does not happen (the topic index
//! keeps `NatsTopics`, and the interest task keeps the index): the tasks
//! run until the process exits, as its NATS connections do; a broker shut
//! down inside a process that goes on (tests) leaves them running.

use super::subject::topic_subject;
use crate::router::{RouterCommand, RouterHandle};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::time::Instant;
use tracing::debug;

/// How often a node looks whether its table changed.
const CHECK: Duration = Duration::from_millis(250);
/// The longest time between two tables of a node.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard for this long no longer counts.
pub const EXPIRY: Duration = Duration::from_secs(3);

/// One node's table as it travels.
#[derive(Debug, Serialize, Deserialize)]
struct Table {
    /// Who sends it: unique per process.
    node: String,
    /// Subject → subscription entries listening on it.
    subjects: HashMap<String, usize>,
}

/// Another node's latest table.
#[derive(Debug)]
struct Remote {
    heard: Instant,
    subjects: HashMap<String, usize>,
}

/// Other nodes' subscriptions, shared by the export half (the router asks
/// through it) and the tasks that keep it.
#[derive(Debug)]
pub(super) struct Counts {
    prefix: Arc<str>,
    /// This process among the nodes.
    node: String,
    /// A leaf lock, held for a lookup or one table's change.
    remote: Mutex<HashMap<String, Remote>>,
}

impl Counts {
    pub(super) fn new(prefix: Arc<str>) -> Counts {
        // Unique per process, also when two nodes share a name.
        let node = format!("{}-{}", std::process::id(), unique());
        Counts {
            prefix,
            node,
            remote: Mutex::new(HashMap::new()),
        }
    }

    fn remote(&self) -> MutexGuard<'_, HashMap<String, Remote>> {
        self.remote.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subject(&self) -> String {
        format!("{}.meta.subscribers", self.prefix)
    }

    /// Subscriptions on other nodes a message to topic `words` would reach.
    pub(super) fn elsewhere(&self, words: &[Box<str>]) -> usize {
        let topic = topic_subject(&self.prefix, words);
        self.remote()
            .values()
            .flat_map(|remote| remote.subjects.iter())
            .filter(|(subject, _)| subject_matches(subject, &topic))
            .map(|(_, count)| count)
            .sum()
    }

    /// Shares `local()` (this node's table) while the counts' owner lives.
    pub(super) async fn share(
        counts: Weak<Self>,
        client: async_nats::Client,
        local: impl Fn() -> HashMap<Arc<str>, usize> + Send + 'static,
    ) {
        let mut sent: Option<(HashMap<String, usize>, Instant)> = None;
        let mut check = tokio::time::interval(CHECK);
        loop {
            check.tick().await;
            let Some(counts) = counts.upgrade() else {
                debug!("subscriber counts: the engine is gone; no longer shared");
                return;
            };
            let subjects: HashMap<String, usize> = local()
                .into_iter()
                .map(|(s, n)| (s.to_string(), n))
                .collect();
            let due = sent
                .as_ref()
                .is_none_or(|(last, at)| *last != subjects || at.elapsed() >= HEARTBEAT);
            if !due {
                continue;
            }
            let table = Table {
                node: counts.node.clone(),
                subjects,
            };
            match serde_json::to_vec(&table) {
                Ok(payload) => {
                    if let Err(error) = client.publish(counts.subject(), payload.into()).await {
                        debug!(%error, "subscriber counts not shared");
                    }
                }
                Err(error) => debug!(%error, "subscriber counts not encoded"),
            }
            sent = Some((table.subjects, Instant::now()));
        }
    }

    /// Keeps the other nodes' tables (and forgets silent ones), telling the
    /// router when they change; while the counts' owner lives.
    pub(super) async fn listen(
        counts: Weak<Self>,
        client: async_nats::Client,
        router: RouterHandle,
    ) {
        let Some(subject) = counts.upgrade().map(|c| c.subject()) else {
            return;
        };
        let mut subscriber = match client.subscribe(subject).await {
            Ok(subscriber) => subscriber,
            Err(error) => {
                debug!(%error, "subscriber counts of other nodes not heard");
                return;
            }
        };
        let mut expire = tokio::time::interval(CHECK);
        loop {
            let event = tokio::select! {
                message = subscriber.next() => match message {
                    Some(message) => Some(message.payload),
                    None => return,
                },
                _ = expire.tick() => None,
            };
            let Some(counts) = counts.upgrade() else {
                debug!("subscriber counts: the engine is gone; no longer heard");
                return;
            };
            let changed = match event {
                Some(payload) => counts.heard(&payload),
                None => counts.expire(),
            };
            if changed && router.send(RouterCommand::RemoteCounts).await.is_err() {
                return;
            }
        }
    }

    /// Takes in a table; true if counts changed.
    fn heard(&self, payload: &[u8]) -> bool {
        let Ok(table) = serde_json::from_slice::<Table>(payload) else {
            debug!("not a subscriber count table: ignored");
            return false;
        };
        if table.node == self.node {
            return false;
        }
        let mut remote = self.remote();
        let changed = remote
            .get(&table.node)
            .is_none_or(|r| r.subjects != table.subjects);
        remote.insert(
            table.node,
            Remote {
                heard: Instant::now(),
                subjects: table.subjects,
            },
        );
        changed
    }

    /// Forgets nodes not heard for [`EXPIRY`]; true if any.
    fn expire(&self) -> bool {
        let mut remote = self.remote();
        let before = remote.len();
        remote.retain(|_, r| r.heard.elapsed() < EXPIRY);
        remote.len() != before
    }
}

/// Starts sharing this node's `table` of subscriptions and hearing the
/// other nodes' on `client` (the queues' connection: the topic connection
/// holds only the subjects of the topics in use).
pub(super) fn spawn(
    counts: Arc<Counts>,
    table: impl Fn() -> HashMap<Arc<str>, usize> + Send + 'static,
    client: async_nats::Client,
    router: RouterHandle,
) {
    tokio::spawn(Counts::share(
        Arc::downgrade(&counts),
        client.clone(),
        table,
    ));
    tokio::spawn(Counts::listen(Arc::downgrade(&counts), client, router));
}

/// Whether NATS subject pattern `pattern` matches the literal `subject`.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for token in pattern.split('.') {
        match (token, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (literal, Some(other)) if literal == other => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// A number unlikely to repeat between processes: the clock's nanoseconds
/// through std's randomly keyed hasher.
fn unique() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_topic_subjects_as_nats_does() {
        assert!(subject_matches("p.topic.a.>", "p.topic.a.__"));
        assert!(subject_matches("p.topic.*.b.__", "p.topic.a.b.__"));
        assert!(!subject_matches("p.topic.a.__", "p.topic.a.b.__"));
        assert!(!subject_matches("p.topic.a.b.__", "p.topic.a.__"));
    }

    #[test]
    fn a_node_counts_other_nodes_until_they_fall_silent() {
        let counts = Counts::new("p".into());
        let table = Table {
            node: "other".into(),
            subjects: HashMap::from([("p.topic.a.>".into(), 2), ("p.topic.b.__".into(), 1)]),
        };
        let payload = serde_json::to_vec(&table).expect("encodes");
        assert!(counts.heard(&payload));
        assert!(!counts.heard(&payload), "the same table changes nothing");
        assert_eq!(counts.elsewhere(&["a".into(), "x".into()]), 2);
        assert_eq!(counts.elsewhere(&["b".into()]), 1);
        assert_eq!(counts.elsewhere(&["c".into()]), 0);
        counts.remote().values_mut().for_each(|r| r.heard -= EXPIRY);
        assert!(counts.expire());
        assert_eq!(counts.elsewhere(&["a".into()]), 0);
    }

    #[tokio::test]
    async fn sharing_ends_once_the_counts_owner_is_gone() {
        // A client that never reaches a server: its publishes are buffered.
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("127.0.0.1:1")
            .await
            .expect("a client that connects later");
        let counts = Arc::new(Counts::new("p".into()));
        let sharing = tokio::spawn(Counts::share(Arc::downgrade(&counts), client, HashMap::new));
        tokio::time::sleep(CHECK * 2).await;
        assert!(!sharing.is_finished(), "shares while the owner lives");
        drop(counts);
        tokio::time::timeout(Duration::from_secs(10), sharing)
            .await
            .expect("the task ends")
            .expect("without a panic");
    }
}
