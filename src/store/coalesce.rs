//! Folding a group commit's changes before they are written. A message that
//! is stored and removed within one group (consumed and acknowledged while
//! its SEND waited for the sync) need never reach the disk: dropping both
//! changes, and its delivery counts, leaves what recovery would find the same
//! and saves most of the writing when consumers keep up.

use super::{QueueId, Sequence, StoreOp};
use std::collections::HashMap;

/// The changes of `ops`, in order, less those that cancel out.
pub fn coalesce(ops: Vec<StoreOp>) -> Vec<StoreOp> {
    // For each message stored in this group: where its Put and Delivered
    // changes are in `kept`.
    let mut stored_here: HashMap<(QueueId, Sequence), Vec<usize>> = HashMap::new();
    let mut kept: Vec<Option<StoreOp>> = Vec::with_capacity(ops.len());
    for op in ops {
        match &op {
            StoreOp::Put {
                queue, sequence, ..
            } => {
                stored_here
                    .entry((*queue, *sequence))
                    .or_default()
                    .push(kept.len());
            }
            StoreOp::Delivered {
                queue, sequence, ..
            } => {
                if let Some(at) = stored_here.get_mut(&(*queue, *sequence)) {
                    at.push(kept.len());
                }
            }
            StoreOp::Remove { queue, sequence } => {
                if let Some(at) = stored_here.remove(&(*queue, *sequence)) {
                    for index in at {
                        kept[index] = None;
                    }
                    continue;
                }
            }
            // A queue (re)defined or deleted: keep its later changes as they
            // are rather than reason about them.
            StoreOp::DefineQueue { id, .. } | StoreOp::DeleteQueue { id } => {
                stored_here.retain(|(queue, _), _| queue != id);
            }
            // Live-feed changes are written as they come.
            StoreOp::FeedState { .. } | StoreOp::FeedPut { .. } | StoreOp::FeedForget { .. } => {}
        }
        kept.push(Some(op));
    }
    kept.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::message::Message;
    use std::sync::Arc;

    fn put(queue: QueueId, sequence: Sequence) -> StoreOp {
        StoreOp::Put {
            queue,
            sequence,
            message: Arc::new(Message {
                id: format!("m{sequence}").into(),
                destination: "/queue/a".into(),
                headers: Vec::new(),
                body: bytes::Bytes::from_static(b"x"),
                text: true,
                expires_at: None,
            }),
        }
    }

    fn shape(ops: &[StoreOp]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                StoreOp::Put {
                    queue, sequence, ..
                } => format!("put {queue}/{sequence}"),
                StoreOp::Delivered {
                    queue,
                    sequence,
                    deliveries,
                } => format!("delivered {queue}/{sequence} {deliveries}"),
                StoreOp::Remove { queue, sequence } => format!("remove {queue}/{sequence}"),
                StoreOp::DefineQueue { id, .. } => format!("define {id}"),
                StoreOp::DeleteQueue { id } => format!("delete {id}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_message_stored_and_removed_in_one_group_is_never_written() {
        let ops = vec![
            put(1, 1),
            put(1, 2),
            StoreOp::Delivered {
                queue: 1,
                sequence: 1,
                deliveries: 1,
            },
            StoreOp::Remove {
                queue: 1,
                sequence: 1,
            },
        ];
        assert_eq!(shape(&coalesce(ops)), vec!["put 1/2"]);
    }

    #[test]
    fn removals_of_messages_stored_earlier_are_kept() {
        let ops = vec![
            StoreOp::Delivered {
                queue: 1,
                sequence: 7,
                deliveries: 2,
            },
            StoreOp::Remove {
                queue: 1,
                sequence: 7,
            },
            put(2, 7),
        ];
        assert_eq!(
            shape(&coalesce(ops)),
            vec!["delivered 1/7 2", "remove 1/7", "put 2/7"]
        );
    }

    #[test]
    fn a_queue_redefined_in_between_keeps_both_changes() {
        let ops = vec![
            put(1, 1),
            StoreOp::DeleteQueue { id: 1 },
            StoreOp::Remove {
                queue: 1,
                sequence: 1,
            },
        ];
        assert_eq!(
            shape(&coalesce(ops)),
            vec!["put 1/1", "delete 1", "remove 1/1"]
        );
    }
}
