//! Durable topic subscriptions on JetStream (`engine = "nats"`).
//!
//! One stream, `<prefix>_durables`, captures the topic subjects that
//! durable subscriptions use, and only those: JetStream refuses a stream
//! whose own subjects overlap, so the list holds the fewest subjects that
//! cover them all (`a.>` takes the place of `a.b.__`; `a.*.__` and
//! `*.b.__`, which only overlap, give way to `*.*.__`). Topic messages are core NATS publishes as
//! before; the stream stores the ones on its subjects, so a topic no
//! durable subscription matches costs no JetStream write. The stream keeps
//! a message while a consumer whose filter matches it has not acknowledged
//! it (interest retention), within `cluster.durable_max_bytes`.
//!
//! Each durable subscription is one durable pull consumer (`d-<key>`,
//! filter = its pattern's subject, explicit acks, delivering only what
//! arrives after it was made) whose metadata holds its owner and topic:
//! any node can attach to it, check the owner, and re-bind it. An
//! attachment waits until the previous one's pull and hand-backs are over
//! (in order), and is refused while another connection still pulls (a
//! re-bind before it deletes anything). Its subscription then runs as a queue subscription does
//! (`consumer.rs`), checking that its consumer is still the one it
//! attached to (`rebound.rs`).
//!
//! A durable subscription to one live-feed destination (a rule's) has its
//! consumer on the feed stream instead (`feeds.rs`), which keeps that
//! destination's messages already: no second copy, and each MESSAGE gets
//! the stream sequence and epoch as its `x-offset` and `x-epoch`, as the
//! feed's other subscribers on every node. That stream keeps the last
//! `max(history, 128)` messages per destination (limits retention), so
//! that is what such a subscription can hold unacknowledged.
//!
//! `max_durable_subscriptions` counts the consumers of both streams.
//!
//! Finding, counting and deleting consumers, and the stream's subjects:
//! `durable_consumers.rs`.

use super::durable_subjects::{filters_of, placeholder};
use super::rebound::{Incarnation, INCARNATION};
use super::subject::{durable_consumer, durable_feed_pattern, feed_subject, pattern_subject};
use super::subscription::DurableBinding;
use crate::config::ClusterConfig;
use crate::model::destination::PatternWord;
use crate::queue::{DurableRefusal, DurableSubscribe, QueueSubscribe};
use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, stream};
use std::collections::HashMap;
use std::time::Duration;
use tracing::{debug, info};

/// The consumer metadata key of a durable subscription's owner.
pub(super) const OWNER: &str = "stomphub-owner";
/// The consumer metadata key of the topic (pattern) it collects.
pub(super) const DESTINATION: &str = "stomphub-destination";
/// The consumer metadata key of its `<client-id>/<name>`.
pub(super) const KEY: &str = "stomphub-durable";
/// How long an attachment waits for the pulls of an earlier one to end:
/// longer than one pull (`consumer.rs`).
const EARLIER_PULLS: Duration = Duration::from_secs(4);

/// The durable subscriptions' stream, shared by the node's sessions.
pub(super) struct Durables {
    pub(super) jetstream: jetstream::Context,
    /// `<prefix>_durables`.
    pub(super) stream: String,
    pub(super) prefix: String,
    /// `[cluster] ack_wait`, for every durable consumer.
    ack_wait: Duration,
    /// Serialises this node's changes of the stream's subjects.
    pub(super) subjects: tokio::sync::Mutex<()>,
    /// `<prefix>_feeds` (`feeds.rs`), home of durable subscriptions to
    /// one live-feed destination.
    pub(super) feed_stream: String,
    /// `[limits] max_durable_subscriptions`, over the engine.
    pub(super) max_subscriptions: usize,
}

/// A durable subscription attached: its consumer, its name, and which
/// incarnation of it.
pub(super) struct Attached {
    pub(super) consumer: PullConsumer,
    pub(super) name: String,
    pub(super) incarnation: Incarnation,
    /// On the feed stream: its epoch, each delivery's `x-epoch`.
    pub(super) feed_epoch: Option<std::sync::Arc<str>>,
}

/// Which stream keeps a durable subscription's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Home {
    /// `<prefix>_durables`: the topic subjects it captures.
    Topics,
    /// `<prefix>_feeds`: one live-feed destination (a rule's), whose
    /// messages that stream keeps already.
    Feed,
}

impl Durables {
    /// Opens the stream, creating it (with no subject in use) if absent; an
    /// existing one keeps its subjects (the durable subscriptions of every
    /// node).
    pub(super) async fn open(
        jetstream: jetstream::Context,
        config: &ClusterConfig,
        max_subscriptions: usize,
    ) -> Result<Durables, String> {
        let stream = format!("{}_durables", config.subject_prefix.replace('.', "_"));
        let stream_config = stream::Config {
            name: stream.clone(),
            subjects: vec![placeholder(&config.subject_prefix)],
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            max_bytes: i64::try_from(config.durable_max_bytes).unwrap_or(i64::MAX),
            // Full: new messages are not stored (as one node refuses them);
            // what durable subscriptions hold stays.
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        };
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        loop {
            match jetstream.get_or_create_stream(stream_config.clone()).await {
                Ok(_) => break,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    debug!(%error, %stream, "cluster: durables stream not created yet; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => {
                    return Err(format!(
                    "cluster: cannot create the durable subscriptions' stream '{stream}': {error}"
                ))
                }
            }
        }
        info!(%stream, "cluster durable subscriptions on JetStream");
        Ok(Durables {
            jetstream,
            stream,
            prefix: config.subject_prefix.clone(),
            ack_wait: config.ack_wait,
            subjects: tokio::sync::Mutex::new(()),
            feed_stream: super::feeds::stream_name(&config.subject_prefix),
            max_subscriptions,
        })
    }

    /// The stream's name (`<prefix>_durables`).
    pub(super) fn stream(&self) -> &str {
        &self.stream
    }

    /// The feed stream's name (`<prefix>_feeds`), home of durable
    /// subscriptions to one live-feed destination.
    pub(super) fn feed_stream(&self) -> &str {
        &self.feed_stream
    }

    /// A durable SUBSCRIBE attached (made, re-bound): what serving it as a
    /// queue subscription on its consumer needs.
    pub(super) async fn prepare(
        &self,
        request: DurableSubscribe,
    ) -> Result<(QueueSubscribe, PullConsumer, DurableBinding), DurableRefusal> {
        let DurableSubscribe {
            subscribe,
            key,
            owner,
            pattern,
            feed,
        } = request;
        let home = match feed {
            true => Home::Feed,
            false => Home::Topics,
        };
        let attached = self
            .attach(&key, &subscribe.destination, &pattern, &owner, home)
            .await?;
        let binding = DurableBinding {
            consumer: attached.name,
            pattern,
            incarnation: attached.incarnation,
            feed_epoch: attached.feed_epoch,
        };
        Ok((subscribe, attached.consumer, binding))
    }

    /// The name of the stream `home` names.
    pub(super) fn stream_of(&self, home: Home) -> &str {
        match home {
            Home::Topics => &self.stream,
            Home::Feed => &self.feed_stream,
        }
    }

    /// Attaches to durable subscription `key` for `destination`, making it
    /// (or re-binding it: a new topic discards the old one's backlog) first,
    /// on the stream `home` says.
    pub(super) async fn attach(
        &self,
        key: &str,
        destination: &str,
        pattern: &[PatternWord],
        owner: &str,
        home: Home,
    ) -> Result<Attached, DurableRefusal> {
        let engine = |e: &dyn std::fmt::Display| unreachable(key, e);
        let name = durable_consumer(key);
        let found = self.find(&name).await.map_err(|e| engine(&e))?;
        // One made on the durables stream before a rule made its
        // destination a feed stays there (it has the feed messages' copies):
        // moving it would lose what it holds. (One on the feed stream whose
        // rule is gone is re-bound: no feed message comes there any more.)
        let home = match &found {
            Some((Home::Topics, metadata))
                if metadata.get(DESTINATION).map(String::as_str) == Some(destination) =>
            {
                Home::Topics
            }
            _ => home,
        };
        // On the durables stream: the pattern's topic messages and the
        // copies of its feed messages (`topics.rs`).
        let filters = match home {
            Home::Topics => vec![
                pattern_subject(&self.prefix, pattern),
                durable_feed_pattern(&self.prefix, pattern),
            ],
            Home::Feed => vec![feed_subject(&self.prefix, &exact_words(pattern))],
        };
        if let Some((found_home, metadata)) = &found {
            if metadata.get(OWNER).is_some_and(|o| o != owner) {
                // Not saying whose: that would tell a stranger who uses it.
                return Err(DurableRefusal::Policy(format!(
                    "durable subscription '{key}' belongs to another principal"
                )));
            }
            // Another topic, or the same one no longer a feed by rule (its
            // messages no longer on the feed stream): re-bound.
            if metadata.get(DESTINATION).map(String::as_str) != Some(destination)
                || *found_home != home
            {
                let stream = self.stream_at(*found_home).await.map_err(|e| engine(&e))?;
                // Not under a holder: its pulls would go on with the new
                // consumer (taking the new holder's messages). One that
                // stopped ends within a pull.
                // The engine not saying is no proof that no one holds it
                // (a timeout, an election): refused rather than deleted
                // under a live holder.
                if self
                    .await_earlier_pulls(&stream, &name)
                    .await
                    .map_err(|e| engine(&e))?
                {
                    return Err(active(key));
                }
                // Re-bound: the old topic's backlog goes, and its subject
                // if no one else uses it.
                self.delete(&name).await.map_err(|e| engine(&e))?;
            }
        }
        let made_here = matches!(&found, Some((h, m)) if *h == home && m.get(DESTINATION).map(String::as_str) == Some(destination));
        if !made_here {
            self.check_room(key).await?;
        }
        let stream = self.stream_at(home).await.map_err(|e| engine(&e))?;
        if home == Home::Topics {
            self.add_subjects(&filters).await.map_err(|e| engine(&e))?;
        }
        let config = PullConfig {
            durable_name: Some(name.clone()),
            filter_subjects: filters.clone(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            // What a durable subscription collects starts with it.
            deliver_policy: DeliverPolicy::New,
            metadata: HashMap::from([
                (OWNER.to_owned(), owner.to_owned()),
                (DESTINATION.to_owned(), destination.to_owned()),
                (KEY.to_owned(), key.to_owned()),
                // Kept only if this makes it (an existing one keeps its own).
                (INCARNATION.to_owned(), Incarnation::fresh()),
            ]),
            ..Default::default()
        };
        // Creating an existing consumer with the same configuration returns
        // it unchanged (its position kept).
        let mut consumer: PullConsumer = stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|e| engine(&e))?;
        if filters_of(&consumer.cached_info().config) != filters {
            // Made by an earlier version (one filter, without the feed
            // copies): given these filters, keeping its position and
            // metadata (its incarnation: the same consumer).
            let mut config = consumer.cached_info().config.clone();
            config.filter_subject = String::new();
            config.filter_subjects = filters.clone();
            let _: async_nats::jetstream::consumer::Consumer<_> = stream
                .update_consumer(config)
                .await
                .map_err(|e| engine(&e))?;
            consumer = stream.get_consumer(&name).await.map_err(|e| engine(&e))?;
        }
        if home == Home::Topics {
            // Another node may have removed the subjects meanwhile.
            self.add_subjects(&filters).await.map_err(|e| engine(&e))?;
        }
        // Not known (the engine not answering): attached; the hand-backs
        // of an earlier attachment may then come after later messages.
        if self
            .await_earlier_pulls(&stream, &name)
            .await
            .unwrap_or(false)
        {
            return Err(active(key));
        }
        let feed_epoch = match home {
            Home::Topics => None,
            Home::Feed => Some(self.feed_epoch().await.map_err(|e| engine(&e))?),
        };
        let incarnation = Incarnation::of(consumer.cached_info());
        Ok(Attached {
            consumer,
            name,
            incarnation,
            feed_epoch,
        })
    }

    /// Waits (at most [`EARLIER_PULLS`]) until no pull of an earlier
    /// attachment waits and nothing is out unacknowledged, so that its
    /// hand-backs come before later messages. True if a pull still waits
    /// then: one outlives its connection by one pull (2 s) at most, so
    /// another connection is attached and pulling. (Unacknowledged
    /// deliveries alone prove nothing: JetStream counts a handed-back one
    /// as pending until it is delivered again. A holder whose credit is
    /// used up, so not pulling, finds its consumer lost at its next pull:
    /// `rebound.rs`.) An error if the engine cannot say (the consumer gone
    /// is free).
    async fn await_earlier_pulls(
        &self,
        stream: &stream::Stream<()>,
        name: &str,
    ) -> Result<bool, String> {
        let deadline = tokio::time::Instant::now() + EARLIER_PULLS;
        let (mut pulled, mut free) = (false, 0);
        while tokio::time::Instant::now() < deadline {
            match stream.consumer_info(name).await {
                Ok(info) if info.num_waiting > 0 || info.num_ack_pending > 0 => {
                    pulled = info.num_waiting > 0;
                    free = 0;
                }
                // Free twice in a row, 100 ms apart: not just the moment
                // between two pulls of a connection still attached.
                Ok(_) if free == 0 => free = 1,
                Ok(_) => return Ok(false),
                Err(error) if error.kind() == ConsumerInfoErrorKind::NotFound => return Ok(false),
                Err(error) => return Err(error.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(pulled)
    }
}

/// The refusal of an attachment of `key` the engine did not answer.
pub(super) fn unreachable(key: &str, error: &dyn std::fmt::Display) -> DurableRefusal {
    DurableRefusal::Engine(format!(
        "durable subscription engine unreachable: '{key}' not attached ({error})"
    ))
}

/// The refusal of an attachment while another connection holds `key`.
fn active(key: &str) -> DurableRefusal {
    DurableRefusal::Policy(format!(
        "durable subscription '{key}' is already active on another connection"
    ))
}

/// The words of a pattern without wildcards (a live-feed destination).
fn exact_words(pattern: &[PatternWord]) -> Vec<Box<str>> {
    pattern
        .iter()
        .filter_map(|word| match word {
            PatternWord::Exact(word) => Some(word.clone()),
            PatternWord::One | PatternWord::Many => None,
        })
        .collect()
}
