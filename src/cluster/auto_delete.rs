//! Auto-delete queues on the engine going (`Definitions::delete`, when the
//! last subscriber over all nodes has left), and a node noticing that one
//! it knew has gone (`Definitions::still_there`, before a SEND to one with
//! a stream of its own).

use super::definitions::{read, Definition, Definitions};
use super::subject::queue_consumer;
use async_nats::jetstream::consumer;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use std::time::Duration;

/// How often (and how far apart) an auto-delete queue is read for no pull
/// waiting on it.
const UNUSED_TRIES: usize = 20;
const UNUSED_PAUSE: Duration = Duration::from_millis(100);

impl Definitions {
    /// Deletes queue `name`: its messages, then its consumer (an
    /// auto-delete queue whose last subscriber over all nodes has left).
    /// Only the queue this node knows: its consumer read again must still
    /// be the one cached (auto-delete, the same creation time; else another
    /// node made it again, maybe without auto-delete, and the cached
    /// definition is dropped) and no pull waiting on it (after a short wait:
    /// this node's last pulls may not have expired on the server yet). Its
    /// unacknowledged count is no sign: the deliveries handed back (NAKed)
    /// stay counted until delivered again.
    pub(super) async fn delete(&self, name: &str) {
        let Some(definition) = self.known().get(name).cloned() else {
            return;
        };
        if !self.still_unused(name, &definition).await {
            return;
        }
        let deleted = async {
            let stream = self
                .jetstream
                .get_stream_no_info(&definition.stream)
                .await
                .map_err(|e| e.to_string())?;
            if definition.own {
                // Its own stream goes whole (it would count against
                // `max_queue_streams` for good): another node that still
                // knows the queue reads it again before a SEND (`definition`).
                return self
                    .jetstream
                    .delete_stream(&definition.stream)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
            }
            // In the shared stream: the queue's messages, then its consumer
            // (once that is gone, so are the messages it had).
            stream
                .purge()
                .filter(definition.subject.clone())
                .await
                .map_err(|e| e.to_string())?;
            stream
                .delete_consumer(&queue_consumer(name))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        match deleted.await {
            Ok(_) => {
                self.known().remove(name);
                tracing::debug!(queue = name, "auto-delete queue removed");
            }
            Err(error) => {
                tracing::warn!(%error, queue = name, "queue engine: auto-delete queue not removed")
            }
        }
    }

    /// Whether the consumer of `definition` (of queue `name`, auto-delete,
    /// in a stream of its own) is still the one it read: one request per SEND to
    /// such a queue. Not knowing (the engine not answering) counts as
    /// there: the SEND then fails or is published again as any other.
    pub(super) async fn still_there(&self, name: &str, definition: &Definition) -> bool {
        let stream = match self.jetstream.get_stream_no_info(&definition.stream).await {
            Ok(stream) => stream,
            Err(_) => return true,
        };
        match stream.consumer_info(queue_consumer(name)).await {
            // Made again by another node (maybe with other arguments):
            // read anew.
            Ok(info) => info.created.to_string() == definition.created,
            Err(error) => !matches!(
                error.kind(),
                ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
            ),
        }
    }

    /// Whether queue `name`'s consumer is still `definition`'s (an
    /// auto-delete one of the same creation) and no pull waits on it.
    async fn still_unused(&self, name: &str, definition: &Definition) -> bool {
        for _ in 0..UNUSED_TRIES {
            let info = match self
                .jetstream
                .get_consumer_from_stream::<consumer::pull::Config, _, _>(
                    queue_consumer(name),
                    &definition.stream,
                )
                .await
            {
                Ok(consumer) => consumer.cached_info().clone(),
                Err(error) => {
                    tracing::debug!(%error, queue = name, "queue engine: auto-delete queue not read; kept");
                    self.forget(name);
                    return false;
                }
            };
            if !read(&info.config.metadata).auto_delete
                || info.created.to_string() != definition.created
            {
                tracing::debug!(
                    queue = name,
                    "queue engine: the queue was made again; not deleted"
                );
                self.forget(name);
                return false;
            }
            if info.num_waiting == 0 {
                return true;
            }
            tokio::time::sleep(UNUSED_PAUSE).await;
        }
        tracing::debug!(
            queue = name,
            "queue engine: auto-delete queue still consumed; kept"
        );
        false
    }
}
