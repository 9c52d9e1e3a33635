//! Writing the outbound queue: each batch the queue hands over goes to the
//! transport with one flush, and its bytes are given back to the budget.
//! A final frame (one carrying a close order) ends the batch. A client that
//! asked for it (CONNECT `x-pack-frames:true`) gets the batch's frames
//! packed into as few WebSocket messages as [`transport`] allows.
//!
//! [`transport`]: super::transport

use super::transport::Transport;
use crate::outbound::{CloseAfter, OutFrame, OutboundReceiver};
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};

/// Most frames written between two flushes.
pub(super) const WRITE_BATCH: usize = 64;

/// Writes `batch` with one flush, `packed` into few WebSocket messages when
/// the client asked for it. Stops at a final frame (one with `close`) and
/// returns how to close; frames after it are never written.
pub(super) async fn write_batch<S: AsyncRead + AsyncWrite + Unpin>(
    transport: &mut Transport<S>,
    outbound: &OutboundReceiver,
    batch: &mut Vec<OutFrame>,
    packed: bool,
) -> io::Result<Option<Box<CloseAfter>>> {
    if let Some(last) = batch.iter().position(|frame| frame.close.is_some()) {
        batch.truncate(last + 1);
    }
    let close_after = batch.last_mut().and_then(|frame| frame.close.take());
    let bytes = batch.iter().map(|frame| frame.bytes.len()).sum();
    let written = transport.write_frames(batch, packed).await;
    batch.clear();
    written?;
    outbound.written(bytes);
    Ok(close_after)
}
