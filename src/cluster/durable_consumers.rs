//! The durable subscriptions' consumers as a whole (`durables.rs`):
//! finding one on either stream (the durables stream or the feed stream),
//! counting them against `max_durable_subscriptions`, deleting one, and
//! keeping the durables stream's subjects to those its consumers use.
//!
//! Adding and removing subjects is a read-modify-write of the stream's
//! configuration: a node serialises its own, and `attach` checks after
//! making a consumer that its subjects are still there (another node
//! removing unused ones at the same moment), adding them again if not.

use super::durable_subjects::{cover, covers, filters_of, placeholder};
use super::durables::{unreachable, Durables, Home, KEY};
use super::feeds::epoch_of;
use crate::queue::DurableRefusal;
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamError};
use async_nats::jetstream::stream::Stream;
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::debug;

/// How often a node tries a subject change that raced another node's.
const ATTEMPTS: usize = 5;

impl Durables {
    /// The stream of `home`, without asking the engine for its info.
    pub(super) async fn stream_at(&self, home: Home) -> Result<Stream<()>, GetStreamError> {
        self.jetstream
            .get_stream_no_info(self.stream_of(home))
            .await
    }

    /// Durable consumer `name`: on which stream, and its metadata.
    pub(super) async fn find(
        &self,
        name: &str,
    ) -> Result<Option<(Home, HashMap<String, String>)>, String> {
        for home in [Home::Topics, Home::Feed] {
            let stream = self.stream_at(home).await.map_err(|e| e.to_string())?;
            match stream.consumer_info(name).await {
                Ok(info) => return Ok(Some((home, info.config.metadata))),
                // The feed stream being made anew has none.
                Err(error)
                    if matches!(
                        error.kind(),
                        ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
                    ) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
        Ok(None)
    }

    /// Refuses a new durable subscription past `max_durable_subscriptions`,
    /// counted over the engine: every consumer of the durables stream, and
    /// the feed stream's that carry a key (not the nodes' readers). Two
    /// nodes making the last ones at the same moment may both pass.
    pub(super) async fn check_room(&self, key: &str) -> Result<(), DurableRefusal> {
        let engine = |e: &dyn std::fmt::Display| unreachable(key, e);
        let mut stream = self
            .jetstream
            .get_stream(&self.stream)
            .await
            .map_err(|e| engine(&e))?;
        let on_topics = stream
            .info()
            .await
            .map_err(|e| engine(&e))?
            .state
            .consumer_count;
        let feeds = self.stream_at(Home::Feed).await.map_err(|e| engine(&e))?;
        let on_feeds = feeds
            .consumers()
            .try_filter(|info| std::future::ready(info.config.metadata.contains_key(KEY)))
            .try_fold(0usize, |n, _| std::future::ready(Ok(n + 1)))
            .await
            .map_err(|e| engine(&e))?;
        if on_topics + on_feeds >= self.max_subscriptions {
            return Err(DurableRefusal::Policy(format!(
                "too many durable subscriptions on this server: max_durable_subscriptions is {}",
                self.max_subscriptions
            )));
        }
        Ok(())
    }

    /// The feed stream's epoch (its creation time), as its readers give it.
    pub(super) async fn feed_epoch(&self) -> Result<Arc<str>, String> {
        let mut stream = self
            .jetstream
            .get_stream(&self.feed_stream)
            .await
            .map_err(|e| e.to_string())?;
        let info = stream.info().await.map_err(|e| e.to_string())?;
        Ok(epoch_of(info))
    }

    /// Deletes durable consumer `name`, and the stream's subjects no other
    /// durable subscription needs.
    pub(super) async fn delete(&self, name: &str) -> Result<(), String> {
        let feeds = self
            .stream_at(Home::Feed)
            .await
            .map_err(|e| e.to_string())?;
        // On one stream or the other: not found on the other. Any other
        // failure is the caller's (its UNSUBSCRIBE gets ERROR, not a
        // RECEIPT for a subscription that stays).
        deleted_or_absent(feeds.delete_consumer(name).await)?;
        let stream = self
            .stream_at(Home::Topics)
            .await
            .map_err(|e| e.to_string())?;
        deleted_or_absent(stream.delete_consumer(name).await)?;
        let _serial = self.subjects.lock().await;
        let filters: Vec<Vec<String>> = stream
            .consumers()
            .map_ok(|info| filters_of(&info.config))
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        let mut wanted = cover(filters.into_iter().flatten().collect());
        if wanted.is_empty() {
            wanted.push(placeholder(&self.prefix));
        }
        self.set_subjects(wanted).await
    }

    /// Makes the stream capture `filters` (unless subjects cover them).
    pub(super) async fn add_subjects(&self, filters: &[String]) -> Result<(), String> {
        let _serial = self.subjects.lock().await;
        for _ in 0..ATTEMPTS {
            let subjects = self.subjects_now().await?;
            let covered = |filter: &String| subjects.iter().any(|s| covers(s, filter));
            if filters.iter().all(covered) {
                return Ok(());
            }
            let placeholder = placeholder(&self.prefix);
            let mut wanted: Vec<String> =
                subjects.into_iter().filter(|s| *s != placeholder).collect();
            wanted.extend(filters.iter().cloned());
            match self.set_subjects(cover(wanted)).await {
                Ok(()) => {}
                // Another node changed them at the same time: read again.
                Err(error) => debug!(%error, "cluster: durable stream subjects changed meanwhile"),
            }
        }
        Err(format!("the stream's subjects would not take {filters:?}"))
    }

    async fn subjects_now(&self) -> Result<Vec<String>, String> {
        let mut stream = self
            .jetstream
            .get_stream(&self.stream)
            .await
            .map_err(|e| e.to_string())?;
        let info = stream.info().await.map_err(|e| e.to_string())?;
        Ok(info.config.subjects.clone())
    }

    async fn set_subjects(&self, subjects: Vec<String>) -> Result<(), String> {
        let mut stream = self
            .jetstream
            .get_stream(&self.stream)
            .await
            .map_err(|e| e.to_string())?;
        let mut config = stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .config
            .clone();
        if config.subjects == subjects {
            return Ok(());
        }
        debug!(?subjects, "cluster: durable stream subjects");
        config.subjects = subjects;
        self.jetstream
            .update_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A consumer deletion's outcome: done, or nothing to delete (no such
/// consumer, or no such stream); else why not.
fn deleted_or_absent<T>(
    result: Result<T, async_nats::jetstream::stream::ConsumerError>,
) -> Result<(), String> {
    use async_nats::jetstream::stream::ConsumerErrorKind;
    use async_nats::jetstream::ErrorCode;
    match result {
        Ok(_) => Ok(()),
        Err(error) => match error.kind() {
            ConsumerErrorKind::JetStream(api)
                if api.error_code() == ErrorCode::CONSUMER_NOT_FOUND
                    || api.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(())
            }
            _ => Err(error.to_string()),
        },
    }
}
