//! Topic fan-out, done by the publishing session itself.
//!
//! The router is the only writer of the shared [`TopicIndex`] (SUBSCRIBE,
//! UNSUBSCRIBE and session ends change it under its write lock); every
//! session reads it to publish: it matches a topic under the read lock and
//! pushes the encoded MESSAGE into each matching subscriber's outbound queue
//! before letting go. Pushes never wait (a short mutex each), so the read
//! lock is held briefly, and when the router's write lock for an
//! UNSUBSCRIBE returns, no publisher can still be pushing to that
//! subscription: the RECEIPT the router sends after it is the last word.
//!
//! What needs one owner stays with the router: client-ack topic
//! subscriptions (unsettled tracking) and durable subscriptions (queues,
//! stored). The index keeps a marker for each, so a publisher knows when the
//! router must see a publication too ([`Published::Delivered`]).
//!
//! Live feeds ([`Feeds`]): destinations with history or a retained value
//! get an offset per message on the publishing path, and a new auto-ack
//! subscription gets their snapshot under the index's write lock, so that
//! snapshot and live stream meet with no gap and no duplicate.
//!
//! On a cluster engine the feeds' state lives in the engine
//! (`engine_feeds.rs`): a feed message goes out through the seam first and
//! is numbered, kept and fanned out when it comes back from the engine.
//!
//! Where a topic message goes besides local subscribers is
//! [`TopicExport`]: the one boundary for a second engine (NATS subjects).
//! Where queue messages live and are dispatched from is the router's queue
//! side, reached through `router::RouterHandle` commands.

pub mod encode;
mod engine_feeds;
mod engine_progress;
mod export;
mod feed;
mod feeds;
mod index;
mod index_key;
mod keep;
mod match_cache;
mod rate_cap;
mod snapshot;
mod start_at;
mod subscriber;
pub mod topic_trie;

pub use export::{ExportAck, FeedAck, InterestFlushed, InterestHold, LocalOnly, TopicExport};
pub use feed::STAMP_HEADERS;
pub use feeds::Feeds;
pub use index::{IndexKey, IndexWriter, Interest, Published, TopicIndex};
pub use rate_cap::RateCap;
pub use snapshot::Snapshot;
pub use start_at::StartAt;
pub use subscriber::Subscriber;
