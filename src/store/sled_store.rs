//! The sled backend. The only file that names sled.
//!
//! Durability: sled's own flush ends in `sync_file_range`, which does not
//! flush the drive's cache, so [`SledStore::sync`] follows it with an explicit
//! `fdatasync` of sled's log file. Items larger than a quarter of a segment
//! would go to blob files that sled never fsyncs, so the segment size is
//! chosen to keep the largest allowed record inline.

use super::record::{
    decode_definition, decode_feed_entry, decode_feed_state, decode_message, encode_definition,
    encode_feed_entry, encode_feed_state, encode_message, feed_entry_key, message_key, queue_id,
    split_feed_entry_key, split_message_key,
};
use super::{
    QueueId, Store, StoreError, StoreOp, StoredFeed, StoredFeedEntry, StoredMessage, StoredQueue,
};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// sled's smallest (and default) segment.
const MIN_SEGMENT_BYTES: usize = 512 * 1024;

/// A store in a sled database directory.
pub struct SledStore {
    db: sled::Db,
    queues: sled::Tree,
    messages: sled::Tree,
    deliveries: sled::Tree,
    /// Persistent live feeds: destination → state; (destination, offset) →
    /// kept message.
    feeds: sled::Tree,
    feed_entries: sled::Tree,
    /// sled's log file, for the explicit `fdatasync`.
    log: File,
    path: PathBuf,
    stored_bytes: u64,
}

fn error(path: &Path, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("store at {}: {what}: {e}", path.display()))
}

/// The segment size that keeps records of `max_record_bytes` inline: sled
/// puts items over a quarter of a segment (less a header) in blob files.
pub fn segment_size_for(max_record_bytes: usize) -> usize {
    (max_record_bytes.saturating_mul(4) + 64 * 1024)
        .next_power_of_two()
        .max(MIN_SEGMENT_BYTES)
}

/// How long `open` waits for the database's file lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens the database, waiting a bounded time for its file lock. A dropped
/// `sled::Db` releases the lock only when sled's background threads and
/// deferred garbage let go of the file, a moment later; a store reopened in
/// the same process (tests, a restarted broker) must not fail on that. A
/// second broker on the same directory still gets the lock error.
fn open_waiting_for_lock(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, sized for records of up to
    /// `max_record_bytes`.
    pub fn open(dir: &Path, max_record_bytes: usize) -> Result<SledStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| error(dir, "cannot create the directory", e))?;
        let config = sled::Config::new()
            .path(dir)
            .segment_size(segment_size_for(max_record_bytes))
            // We flush (and fsync) ourselves, once per group commit.
            .flush_every_ms(None);
        let db = open_waiting_for_lock(&config).map_err(|e| error(dir, "cannot be opened", e))?;
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| error(dir, "cannot open a tree", e))
        };
        let (queues, messages, deliveries) =
            (tree("queues")?, tree("messages")?, tree("deliveries")?);
        let (feeds, feed_entries) = (tree("feeds")?, tree("feed_entries")?);
        let log =
            File::open(dir.join("db")).map_err(|e| error(dir, "cannot open sled's log file", e))?;
        // sled writes `conf` at every open and never fsyncs it: after a power
        // cut it was found empty (sled rewrites it) and could be zeros (which
        // sled refuses: the broker would not start). Sync it, then the
        // directory, whose entries for `conf`, `db`, `blobs` and a snapshot
        // renamed into place during the open must be durable too.
        File::open(dir.join("conf"))
            .and_then(|conf| conf.sync_all())
            .map_err(|e| error(dir, "cannot sync sled's conf file", e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| error(dir, "cannot sync the directory", e))?;
        Ok(SledStore {
            db,
            queues,
            messages,
            deliveries,
            feeds,
            feed_entries,
            log,
            path: dir.to_path_buf(),
            stored_bytes: 0,
        })
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        error(&self.path, what, e)
    }

    fn remove_message(&mut self, key: &[u8]) -> Result<(), StoreError> {
        if let Some(old) = self
            .messages
            .remove(key)
            .map_err(|e| self.fail("remove", e))?
        {
            self.stored_bytes = self.stored_bytes.saturating_sub(old.len() as u64);
        }
        self.deliveries
            .remove(key)
            .map_err(|e| self.fail("remove", e))?;
        Ok(())
    }
}

impl Store for SledStore {
    fn recover(&mut self) -> Result<Vec<StoredQueue>, StoreError> {
        let mut queues: BTreeMap<QueueId, StoredQueue> = BTreeMap::new();
        for entry in self.queues.iter() {
            let (key, value) = entry.map_err(|e| self.fail("cannot read queues", e))?;
            let id = queue_id(&key)?;
            queues.insert(
                id,
                StoredQueue {
                    id,
                    definition: decode_definition(&value)?,
                    messages: Vec::new(),
                },
            );
        }
        let mut orphans = Vec::new();
        self.stored_bytes = 0;
        for entry in self.messages.iter() {
            let (key, value) = entry.map_err(|e| self.fail("cannot read messages", e))?;
            let (queue, sequence) = split_message_key(&key)?;
            let Some(stored) = queues.get_mut(&queue) else {
                // Left by a queue deletion cut short by a crash.
                orphans.push(key);
                continue;
            };
            let deliveries = match self
                .deliveries
                .get(&key)
                .map_err(|e| self.fail("cannot read deliveries", e))?
            {
                Some(count) => count
                    .as_ref()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| {
                        StoreError("corrupt store: a delivery count is not 4 bytes".into())
                    })?,
                None => 0,
            };
            self.stored_bytes += value.len() as u64;
            stored.messages.push(StoredMessage {
                sequence,
                message: decode_message(&value)?,
                deliveries,
            });
        }
        for key in orphans {
            self.remove_message(&key)?;
        }
        Ok(queues.into_values().collect())
    }

    fn write(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        for op in ops {
            match op {
                StoreOp::DefineQueue { id, definition } => {
                    self.queues
                        .insert(id.to_be_bytes(), encode_definition(definition))
                        .map_err(|e| self.fail("write", e))?;
                }
                StoreOp::DeleteQueue { id } => {
                    let keys: Vec<sled::IVec> = self
                        .messages
                        .scan_prefix(id.to_be_bytes())
                        .keys()
                        .collect::<Result<_, _>>()
                        .map_err(|e| self.fail("scan", e))?;
                    for key in keys {
                        self.remove_message(&key)?;
                    }
                    self.queues
                        .remove(id.to_be_bytes())
                        .map_err(|e| self.fail("write", e))?;
                }
                StoreOp::Put {
                    queue,
                    sequence,
                    message,
                } => {
                    let record = encode_message(message);
                    self.stored_bytes += record.len() as u64;
                    self.messages
                        .insert(message_key(*queue, *sequence), record)
                        .map_err(|e| self.fail("write", e))?;
                }
                StoreOp::Delivered {
                    queue,
                    sequence,
                    deliveries,
                } => {
                    self.deliveries
                        .insert(message_key(*queue, *sequence), &deliveries.to_be_bytes())
                        .map_err(|e| self.fail("write", e))?;
                }
                StoreOp::Remove { queue, sequence } => {
                    self.remove_message(&message_key(*queue, *sequence))?
                }
                StoreOp::FeedState {
                    destination,
                    epoch,
                    next_offset,
                    retained,
                } => {
                    self.feeds
                        .insert(
                            destination.as_bytes(),
                            encode_feed_state(*next_offset, *retained, epoch),
                        )
                        .map_err(|e| self.fail("write", e))?;
                }
                StoreOp::FeedPut {
                    destination,
                    offset,
                    at_ms,
                    in_history,
                    message,
                } => {
                    let record = encode_feed_entry(*at_ms, *in_history, message);
                    self.stored_bytes += record.len() as u64;
                    self.feed_entries
                        .insert(feed_entry_key(destination, *offset), record)
                        .map_err(|e| self.fail("write", e))?;
                }
                StoreOp::FeedForget {
                    destination,
                    offset,
                } => {
                    let old = self
                        .feed_entries
                        .remove(feed_entry_key(destination, *offset))
                        .map_err(|e| self.fail("remove", e))?;
                    if let Some(old) = old {
                        self.stored_bytes = self.stored_bytes.saturating_sub(old.len() as u64);
                    }
                }
            }
        }
        Ok(())
    }

    fn recover_feeds(&mut self) -> Result<Vec<StoredFeed>, StoreError> {
        let mut feeds: BTreeMap<String, StoredFeed> = BTreeMap::new();
        for entry in self.feeds.iter() {
            let (key, value) = entry.map_err(|e| self.fail("cannot read feeds", e))?;
            let destination = String::from_utf8(key.to_vec())
                .map_err(|_| StoreError("corrupt store: a live-feed name is not UTF-8".into()))?;
            let (next_offset, retained, epoch) = decode_feed_state(&value)?;
            feeds.insert(
                destination.clone(),
                StoredFeed {
                    destination,
                    epoch,
                    next_offset,
                    retained,
                    entries: Vec::new(),
                },
            );
        }
        for entry in self.feed_entries.iter() {
            let (key, value) = entry.map_err(|e| self.fail("cannot read feed entries", e))?;
            let (destination, offset) = split_feed_entry_key(&key)?;
            let (at_ms, in_history, message) = decode_feed_entry(&value)?;
            self.stored_bytes += value.len() as u64;
            // Keys sort by destination, then offset: entries come in order.
            if let Some(feed) = feeds.get_mut(&destination) {
                feed.entries.push(StoredFeedEntry {
                    offset,
                    at_ms,
                    in_history,
                    message,
                });
            }
        }
        Ok(feeds.into_values().collect())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.fail("flush", e))?;
        self.log.sync_data().map_err(|e| self.fail("fdatasync", e))
    }

    fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::message::Message;
    use crate::store::QueueDefinition;
    use bytes::Bytes;
    use std::sync::Arc;

    fn message(id: &str) -> Arc<Message> {
        Arc::new(Message {
            id: id.into(),
            destination: "/queue/a".into(),
            headers: Vec::new(),
            body: Bytes::from(vec![b'x'; 200_000]),
            text: true,
            expires_at: None,
        })
    }

    #[test]
    fn writes_survive_reopening_in_order_with_delivery_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store = SledStore::open(dir.path(), 1 << 20).expect("opens");
            store
                .write(&[
                    StoreOp::DefineQueue {
                        id: 1,
                        definition: QueueDefinition {
                            name: "/queue/a".into(),
                            ..Default::default()
                        },
                    },
                    StoreOp::Put {
                        queue: 1,
                        sequence: 5,
                        message: message("m5"),
                    },
                    StoreOp::Put {
                        queue: 1,
                        sequence: 7,
                        message: message("m7"),
                    },
                    StoreOp::Put {
                        queue: 1,
                        sequence: 6,
                        message: message("m6"),
                    },
                    StoreOp::Delivered {
                        queue: 1,
                        sequence: 6,
                        deliveries: 2,
                    },
                    StoreOp::Remove {
                        queue: 1,
                        sequence: 7,
                    },
                ])
                .expect("writes");
            store.sync().expect("syncs");
        }
        let mut store = SledStore::open(dir.path(), 1 << 20).expect("reopens");
        let queues = store.recover().expect("recovers");
        assert_eq!(queues.len(), 1);
        let ids: Vec<(&str, u32)> = queues[0]
            .messages
            .iter()
            .map(|m| (&*m.message.id, m.deliveries))
            .collect();
        assert_eq!(ids, vec![("m5", 0), ("m6", 2)]);
        assert!(store.stored_bytes() > 400_000);
        // 200 KB bodies stay inline: sled made no blob files.
        let blobs = std::fs::read_dir(dir.path().join("blobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(blobs, 0);
        store
            .write(&[StoreOp::DeleteQueue { id: 1 }])
            .expect("deletes");
        assert_eq!(store.stored_bytes(), 0);
    }

    #[test]
    fn a_second_opener_of_a_store_in_use_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = SledStore::open(dir.path(), 1 << 20).expect("opens");
        let second = SledStore::open(dir.path(), 1 << 20);
        let Err(StoreError(message)) = second else {
            panic!("a store in use opened twice");
        };
        assert!(message.contains("could not acquire lock"), "{message}");
    }

    #[test]
    fn a_corrupt_record_refuses_recovery() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SledStore::open(dir.path(), 1 << 20).expect("opens");
        store
            .queues
            .insert(1u64.to_be_bytes(), b"not a frame".to_vec())
            .expect("insert");
        assert!(store.recover().is_err());
    }

    /// What a test can show of the power-cut fix: `open` syncs `conf` (and
    /// fails if it cannot: the file must exist), and a fresh store leaves a
    /// complete `conf` behind (sled calls 8 bytes or less corrupt). Whether
    /// the bytes reached the disk before a cut is not observable here; the
    /// fsync calls themselves are in `open`.
    #[test]
    fn opening_a_fresh_store_leaves_a_complete_conf() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(SledStore::open(dir.path(), 1 << 20).expect("opens"));
        let conf = std::fs::read(dir.path().join("conf")).expect("conf exists");
        assert!(conf.len() > 8, "conf has {} bytes", conf.len());
        // Reopening leaves the same settings (sled rewrites the file).
        drop(SledStore::open(dir.path(), 1 << 20).expect("reopens"));
        assert_eq!(std::fs::read(dir.path().join("conf")).expect("conf"), conf);
    }

    #[test]
    fn live_feeds_survive_reopening_without_what_was_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let put = |offset: u64, in_history: bool| StoreOp::FeedPut {
            destination: "prices.a".into(),
            offset,
            at_ms: 1000 + offset,
            in_history,
            message: message(&format!("m{offset}")),
        };
        {
            let mut store = SledStore::open(dir.path(), 1 << 20).expect("opens");
            store
                .write(&[
                    put(1, true),
                    put(2, true),
                    put(3, true),
                    StoreOp::FeedForget {
                        destination: "prices.a".into(),
                        offset: 1,
                    },
                    StoreOp::FeedState {
                        destination: "prices.a".into(),
                        epoch: "e-1".into(),
                        next_offset: 4,
                        retained: Some(3),
                    },
                ])
                .expect("writes");
            store.sync().expect("syncs");
        }
        let mut store = SledStore::open(dir.path(), 1 << 20).expect("reopens");
        store.recover().expect("recovers");
        let feeds = store.recover_feeds().expect("recovers feeds");
        assert_eq!(feeds.len(), 1);
        let feed = &feeds[0];
        assert_eq!(
            (
                feed.destination.as_str(),
                feed.epoch.as_str(),
                feed.next_offset,
                feed.retained
            ),
            ("prices.a", "e-1", 4, Some(3))
        );
        let entries: Vec<(u64, u64, bool)> = feed
            .entries
            .iter()
            .map(|e| (e.offset, e.at_ms, e.in_history))
            .collect();
        assert_eq!(entries, [(2, 1002, true), (3, 1003, true)]);
        assert_eq!(&*feed.entries[1].message.id, "m3");
        assert!(store.stored_bytes() > 0, "counted against the disk budget");
    }
}
