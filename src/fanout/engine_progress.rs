//! How far a node's mirror of the cluster engine's feed stream has read
//! it (`engine_feeds.rs` reads and moves it on; `feeds.rs` holds it).

use std::sync::atomic::AtomicU64;
use tokio::sync::Notify;

/// How far this node's mirror has applied the engine's feed stream.
#[derive(Debug, Default)]
pub(super) struct EngineFeeds {
    /// The highest stream sequence applied (0: none yet).
    pub(super) applied: AtomicU64,
    /// The highest stream sequence this node never read: the stream had
    /// already dropped it (its destination had newer messages past the
    /// stream's per-subject limit, or the byte bound) when the reader came
    /// to it. Only the reader writes it.
    pub(super) hole_end: AtomicU64,
    /// Woken (all waiters) whenever `applied` grows; waited on by sessions
    /// resuming from an offset this node has not applied yet.
    pub(super) applied_changed: Notify,
}
