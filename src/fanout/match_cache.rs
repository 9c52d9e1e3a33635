//! The bounded match cache in front of the topic trie, as nats-server's
//! sublist keeps one: topic words → the direct subscribers they reach and
//! whether the router has interest.
//!
//! An entry is valid while the index's generation is the one it was made
//! at: every change to the index bumps the generation (under the index's
//! write lock), so a publisher holding the read lock never uses a match
//! older than the trie it would walk. A removal also empties the cache, so
//! that no entry keeps a removed subscriber's outbound sender (and with it
//! the connection's writer) alive.
//!
//! The cache is split into shards, each behind its own `Mutex` held for one
//! lookup or insert, so that publishers on different topics rarely meet on
//! one lock. A full shard is emptied before the next insert: bounded memory,
//! with no bookkeeping on the hit path.

use super::feed::Policy;
use super::subscriber::Subscriber;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

/// Shards of the cache; a power of two.
const SHARDS: usize = 16;

/// What a publication to one topic reaches, as of one generation.
#[derive(Debug, Clone)]
pub struct Match {
    /// The index generation this match was made at.
    pub generation: u64,
    /// Auto-ack subscribers the publisher pushes to itself.
    pub direct: Arc<[Arc<Subscriber>]>,
    /// A client-ack or durable subscription matched as well.
    pub router_interest: bool,
    /// The `[[topics.rules]]` policy of the topic, if a rule matches (rules
    /// never change, so it is as fresh as the rest).
    pub policy: Option<Policy>,
}

type Shard = HashMap<Box<[Box<str>]>, Match>;

/// Topic words → [`Match`], at most `capacity` entries in all.
#[derive(Debug)]
pub struct MatchCache {
    shards: Box<[Mutex<Shard>]>,
    /// Entries one shard holds before it is emptied; 0: no cache.
    per_shard: usize,
    hasher: RandomState,
}

impl MatchCache {
    /// A cache of about `capacity` entries; 0 turns it off.
    pub fn new(capacity: usize) -> MatchCache {
        MatchCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, words: &[Box<str>]) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(words) as usize & (SHARDS - 1);
        // A poisoned shard only means a panic elsewhere mid-insert: the map
        // is still a valid map.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The match for `words` if one was made at `generation`.
    pub fn get(&self, words: &[Box<str>], generation: u64) -> Option<Match> {
        if self.per_shard == 0 {
            return None;
        }
        self.shard(words)
            .get(words)
            .filter(|found| found.generation == generation)
            .cloned()
    }

    /// Keeps `found` for `words`, emptying the shard first when it is full.
    pub fn insert(&self, words: &[Box<str>], found: Match) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(words);
        if shard.len() >= self.per_shard && !shard.contains_key(words) {
            shard.clear();
        }
        shard.insert(words.into(), found);
    }

    /// Empties every shard; the entries are returned so that the caller can
    /// drop them (and the senders they hold) outside its own lock.
    pub fn take_all(&self) -> Vec<Shard> {
        self.shards
            .iter()
            .map(|shard| std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner())))
            .collect()
    }

    /// Entries held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}
