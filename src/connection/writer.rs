//! Writing the outbound queue: each batch the queue hands over is fed to the
//! WebSocket and flushed once, and its bytes are given back to the budget.
//! A final frame (one carrying a close order) ends the batch.

use super::Ws;
use crate::outbound::{CloseAfter, OutFrame, OutboundReceiver};
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Most frames written between two flushes.
pub(super) const WRITE_BATCH: usize = 64;

/// Writes `batch` with one flush. Stops at a final frame (one with `close`)
/// and returns how to close; frames after it are never written.
pub(super) async fn write_batch<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut Ws<S>,
    outbound: &OutboundReceiver,
    batch: &mut Vec<OutFrame>,
) -> Result<Option<Box<CloseAfter>>, WsError> {
    let mut bytes = 0;
    let mut close_after = None;
    for mut frame in batch.drain(..) {
        bytes += frame.bytes.len();
        close_after = frame.close.take();
        ws.feed(to_message(frame)).await?;
        if close_after.is_some() {
            break;
        }
    }
    batch.clear();
    ws.flush().await?;
    outbound.written(bytes);
    Ok(close_after)
}

/// One STOMP frame as one WebSocket message: text when it is UTF-8.
pub(super) fn to_message(frame: OutFrame) -> Message {
    if frame.text {
        match Utf8Bytes::try_from(frame.bytes.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(frame.bytes),
        }
    } else {
        Message::Binary(frame.bytes)
    }
}
