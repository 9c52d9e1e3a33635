//! `/meta/subscribers/topic/<name>`: subscriber counts of topics, sent to
//! their watchers at once and then whenever the count changes, at most once
//! per second per topic (a count that flaps is sent as it is a second later).

use super::{Router, SessionId};
use crate::fanout::encode::{encode, Delivery};
use crate::model::destination::{pattern_matches, PatternWord};
use crate::model::message::Message;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The shortest time between two counts of one topic.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The watchers of one topic's count.
#[derive(Debug)]
pub(super) struct Watch {
    topic: String,
    words: Vec<Box<str>>,
    /// (session, subscription id, the `/meta/...` destination).
    watchers: Vec<(SessionId, Arc<str>, Arc<str>)>,
    /// The count last sent to all, and when.
    last_count: usize,
    last_at: Instant,
    /// A subscription that may count changed since.
    dirty: bool,
}

/// Watches by topic words joined with `.`.
pub(super) type Watches = HashMap<Box<str>, Watch>;

impl Router {
    /// Adds a watcher of `topic`'s count and sends it the count now.
    pub(super) fn watch(
        &mut self,
        session: SessionId,
        id: Arc<str>,
        destination: Arc<str>,
        topic: String,
        words: Vec<Box<str>>,
    ) -> Box<str> {
        let key: Box<str> = words.join(".").into();
        let count = self.count_subscribers(&words);
        let watch = self.watches.entry(key.clone()).or_insert_with(|| Watch {
            topic,
            words,
            watchers: Vec::new(),
            last_count: count,
            last_at: Instant::now(),
            dirty: false,
        });
        watch
            .watchers
            .push((session, id.clone(), destination.clone()));
        let topic = watch.topic.clone();
        self.send_count(session, &id, &destination, &topic, count);
        key
    }

    /// Removes a watcher (its UNSUBSCRIBE or its session's end).
    pub(super) fn unwatch(&mut self, key: &str, session: SessionId, id: &str) {
        if let Some(watch) = self.watches.get_mut(key) {
            watch
                .watchers
                .retain(|(s, i, _)| !(*s == session && &**i == id));
            if watch.watchers.is_empty() {
                self.watches.remove(key);
            }
        }
    }

    /// A topic subscription with `pattern` came or went: the counts it
    /// matches are due.
    pub(super) fn subscribers_changed(&mut self, pattern: &[PatternWord]) {
        for watch in self.watches.values_mut() {
            let words: Vec<&str> = watch.words.iter().map(|w| &**w).collect();
            if pattern_matches(pattern, &words) {
                watch.dirty = true;
            }
        }
    }

    /// Other brokers' counts changed: every watched count is due (sent if
    /// it changed, at most once a second as always).
    pub(super) fn remote_counts_changed(&mut self) {
        for watch in self.watches.values_mut() {
            watch.dirty = true;
        }
    }

    /// Whether a count is due (the router's tick then runs).
    pub(super) fn counts_due(&self) -> bool {
        self.watches.values().any(|w| w.dirty)
    }

    /// Sends every due count whose second has passed and that changed.
    pub(super) fn send_due_counts(&mut self) {
        let now = Instant::now();
        let due: Vec<Box<str>> = self
            .watches
            .iter()
            .filter(|(_, w)| w.dirty && now.duration_since(w.last_at) >= MIN_INTERVAL)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            let Some(words) = self.watches.get(&key).map(|w| w.words.clone()) else {
                continue;
            };
            let count = self.count_subscribers(&words);
            let Some(watch) = self.watches.get_mut(&key) else {
                continue;
            };
            watch.dirty = false;
            if count == watch.last_count {
                continue;
            }
            watch.last_count = count;
            watch.last_at = now;
            let (topic, watchers) = (watch.topic.clone(), watch.watchers.clone());
            for (session, id, destination) in watchers {
                self.send_count(session, &id, &destination, &topic, count);
            }
        }
    }

    /// Subscriptions a publication to `words` would reach: auto-ack ones
    /// (the index), client-ack ones (the router's own), and, on a cluster,
    /// those of the other nodes (as the export seam last heard them).
    fn count_subscribers(&self, words: &[Box<str>]) -> usize {
        let mut client_ack: Vec<&Arc<super::Subscriber>> = Vec::new();
        self.topics.matches(words, &mut client_ack);
        let index = self.index.index();
        index.count_direct(words) + client_ack.len() + index.export().remote_subscribers(words)
    }

    fn send_count(
        &mut self,
        session: SessionId,
        id: &str,
        destination: &str,
        topic: &str,
        n: usize,
    ) {
        let Some(entry) = self.sessions.get(&session) else {
            return;
        };
        self.meta_messages += 1;
        let body = serde_json::json!({ "destination": topic, "subscribers": n }).to_string();
        let message = Message {
            id: format!("meta-{}", self.meta_messages).into(),
            destination: destination.to_owned(),
            headers: vec![
                ("x-subscribers".into(), n.to_string()),
                ("content-type".into(), "application/json".into()),
            ],
            body: Bytes::from(body),
            text: true,
            expires_at: None,
        };
        let delivery = Delivery {
            subscription: id,
            ack_id: None,
            previous_deliveries: 0,
        };
        // A full queue marks the connection slow; it closes itself.
        let _ = entry
            .outbound
            .push(encode(&message, delivery, entry.version));
    }
}
