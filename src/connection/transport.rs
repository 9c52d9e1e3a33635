//! What a connection's bytes travel in: a WebSocket (one STOMP frame per
//! message out, any split of the byte stream in) or plain TCP (the frames
//! straight on the stream). Either may run over TLS (`S`). The drive loop,
//! timers, writer and closing speak only to [`Transport`], so that both
//! kinds share the codec, the session and every limit.
//!
//! The differences live here: reading (WebSocket messages or stream bytes),
//! writing a batch (messages fed then one flush, or one vectored write then
//! one flush), the heart-beat EOL (a text message or one byte), the ping for
//! a late client (WebSocket only) and the close (a Close frame with a code,
//! or nothing: the linger's half-close is TCP's close).

use super::End;
use crate::outbound::OutFrame;
use crate::session::{CloseReason, SessionError};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::io::{self, IoSlice};
use stomp_protocol::Limits;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

/// How much room one TCP read makes in the receive buffer. The decoder
/// refuses an oversized frame in its check step, so the buffer never holds
/// more than the frame limits plus one read.
const TCP_READ_CHUNK: usize = 4 * 1024;

/// One connection's transport over the stream `S` (TCP, or TLS over TCP).
// One per connection, never moved once serving: boxing the WebSocket would
// only add an allocation to every WebSocket connection.
#[allow(clippy::large_enum_variant)]
pub(super) enum Transport<S> {
    /// STOMP over WebSocket, after the upgrade.
    WebSocket(WebSocketStream<S>),
    /// STOMP over plain TCP: no handshake, no framing but STOMP's own.
    Tcp(S),
}

/// What one read brought.
pub(super) enum Received {
    /// Bytes were appended to the buffer.
    Data,
    /// A WebSocket ping or pong: a sign of life only where pings are lenient.
    Control,
    /// The read ended the connection.
    End(End),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Transport<S> {
    /// Whether this is a WebSocket (pings and Close frames exist).
    pub(super) fn is_websocket(&self) -> bool {
        matches!(self, Transport::WebSocket(_))
    }

    /// Reads what arrives next into `buffer`. Cancel-safe: the loop drops it
    /// whenever another branch is ready, and nothing is read then.
    pub(super) async fn read(&mut self, buffer: &mut BytesMut, limits: &Limits) -> Received {
        match self {
            Transport::WebSocket(ws) => {
                let data: Bytes = match ws.next().await {
                    None => return Received::End(End::ClientGone),
                    Some(Ok(Message::Close(_))) => return Received::End(End::ClientClosed),
                    Some(Err(error)) => return Received::End(websocket_error(error, limits)),
                    Some(Ok(Message::Text(text))) => text.into(),
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    // Pings are answered by tungstenite.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                        return Received::Control
                    }
                };
                buffer.extend_from_slice(&data);
                Received::Data
            }
            Transport::Tcp(stream) => {
                buffer.reserve(TCP_READ_CHUNK);
                match stream.read_buf(buffer).await {
                    Ok(0) => Received::End(End::ClientGone),
                    Ok(_) => Received::Data,
                    Err(error) => {
                        debug!(%error, "connection lost");
                        Received::End(End::ClientGone)
                    }
                }
            }
        }
    }

    /// Writes `frames` in order and flushes once. Over WebSocket, each frame
    /// is a message of its own unless `packed`: then consecutive frames go
    /// in one message of at most [`MAX_PACKED_BYTES`] (a larger frame alone).
    pub(super) async fn write_frames(
        &mut self,
        frames: &[OutFrame],
        packed: bool,
    ) -> io::Result<()> {
        match self {
            Transport::WebSocket(ws) => {
                if packed {
                    let mut rest = frames;
                    while !rest.is_empty() {
                        let (message, taken) = pack(rest);
                        ws.feed(message).await.map_err(io::Error::other)?;
                        rest = &rest[taken..];
                    }
                } else {
                    for frame in frames {
                        ws.feed(to_message(frame)).await.map_err(io::Error::other)?;
                    }
                }
                ws.flush().await.map_err(io::Error::other)
            }
            Transport::Tcp(stream) => {
                write_all_vectored(stream, frames).await?;
                stream.flush().await
            }
        }
    }

    /// A heart-beat: one EOL (a text message holding it, over WebSocket).
    pub(super) async fn heartbeat(&mut self) -> io::Result<()> {
        match self {
            Transport::WebSocket(ws) => {
                ws.send(Message::text("\n")).await.map_err(io::Error::other)
            }
            Transport::Tcp(stream) => {
                stream.write_all(b"\n").await?;
                stream.flush().await
            }
        }
    }

    /// A WebSocket ping to a late client (TCP has none: nothing is sent).
    pub(super) async fn ping(&mut self) -> io::Result<()> {
        match self {
            Transport::WebSocket(ws) => ws
                .send(Message::Ping(Bytes::new()))
                .await
                .map_err(io::Error::other),
            Transport::Tcp(_) => Ok(()),
        }
    }

    /// Writes what is buffered: over WebSocket, the answer to the client's
    /// Close frame that tungstenite queued when it read it.
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::WebSocket(ws) => ws.flush().await.map_err(io::Error::other),
            Transport::Tcp(stream) => stream.flush().await,
        }
    }

    /// Our side of the close, before the linger; whether it went out. Over
    /// WebSocket a Close frame with the code for `reason` (`None`: normal
    /// closure); over TCP nothing more: the linger's half-close is the close.
    pub(super) async fn close(&mut self, reason: Option<CloseReason>, message: &str) -> bool {
        match self {
            Transport::WebSocket(ws) => {
                // A close reason must fit in 123 bytes.
                let mut end = message.len().min(123);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                let frame = CloseFrame {
                    code: reason.map_or(CloseCode::Normal, close_code),
                    reason: Utf8Bytes::from(&message[..end]),
                };
                ws.close(Some(frame)).await.is_ok()
            }
            Transport::Tcp(stream) => stream.flush().await.is_ok(),
        }
    }

    /// The stream below, for the linger (after an oversized WebSocket
    /// message its framing is lost anyway).
    pub(super) fn stream_mut(&mut self) -> &mut S {
        match self {
            Transport::WebSocket(ws) => ws.get_mut(),
            Transport::Tcp(stream) => stream,
        }
    }
}

/// One STOMP frame as one WebSocket message: text when it is UTF-8.
fn to_message(frame: &OutFrame) -> Message {
    if frame.text {
        match Utf8Bytes::try_from(frame.bytes.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(frame.bytes.clone()),
        }
    } else {
        Message::Binary(frame.bytes.clone())
    }
}

/// The most bytes of STOMP frames packed into one WebSocket message: a
/// client's message size limit is rarely below this, and the copy stays small.
const MAX_PACKED_BYTES: usize = 64 * 1024;

/// The first frames of `frames` (at least one) as one WebSocket message, and
/// how many went in: text if every one of them is text.
fn pack(frames: &[OutFrame]) -> (Message, usize) {
    let mut total = 0;
    let count = frames
        .iter()
        .take_while(|frame| {
            total += frame.bytes.len();
            total <= MAX_PACKED_BYTES
        })
        .count()
        .max(1);
    if count == 1 {
        return (to_message(&frames[0]), 1);
    }
    let packed = &frames[..count];
    let mut bytes = BytesMut::with_capacity(packed.iter().map(|f| f.bytes.len()).sum());
    for frame in packed {
        bytes.extend_from_slice(&frame.bytes);
    }
    let text = packed.iter().all(|frame| frame.text);
    let frame = OutFrame::new(bytes.freeze(), text);
    (to_message(&frame), count)
}

/// Writes every frame's bytes with vectored writes: no copy into a buffer,
/// and usually one system call for the whole batch.
async fn write_all_vectored<S: AsyncWrite + Unpin>(
    stream: &mut S,
    frames: &[OutFrame],
) -> io::Result<()> {
    // The next byte to write: frame `at`, `offset` bytes in.
    let (mut at, mut offset) = (0, 0);
    loop {
        while frames.get(at).is_some_and(|f| f.bytes.len() == offset) {
            at += 1;
            offset = 0;
        }
        let Some(first) = frames.get(at) else {
            return Ok(());
        };
        // Transient: only a connection that is writing holds it.
        let slices: Vec<IoSlice<'_>> = std::iter::once(IoSlice::new(&first.bytes[offset..]))
            .chain(frames[at + 1..].iter().map(|f| IoSlice::new(&f.bytes)))
            .collect();
        let mut written = stream.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let Some(frame) = frames.get(at) else { break };
            let left = frame.bytes.len() - offset;
            if written >= left {
                written -= left;
                at += 1;
                offset = 0;
            } else {
                offset += written;
                written = 0;
            }
        }
    }
}

/// The WebSocket close code for why we close.
fn close_code(reason: CloseReason) -> CloseCode {
    match reason {
        CloseReason::ProtocolError => CloseCode::Protocol,
        CloseReason::PolicyViolation => CloseCode::Policy,
        CloseReason::TooBig => CloseCode::Size,
        CloseReason::InvalidData => CloseCode::Invalid,
        CloseReason::GoingAway => CloseCode::Away,
        CloseReason::InternalError => CloseCode::Error,
    }
}

/// Maps a tungstenite read error to how the connection ends.
fn websocket_error(error: WsError, limits: &Limits) -> End {
    match error {
        // tungstenite's `size` is the announced frame length or the bytes
        // received so far: not worth reporting. The limits are.
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => End::Error(SessionError::new(
            format!(
                "WebSocket message too large: frame body exceeds max_body_bytes ({} bytes) \
                 or headers exceed max_header_bytes ({} bytes)",
                limits.max_body_bytes, limits.max_header_bytes
            ),
            CloseReason::TooBig,
        )),
        WsError::Utf8(_) => End::Error(SessionError::new(
            "a WebSocket text message was not valid UTF-8",
            CloseReason::InvalidData,
        )),
        error => {
            debug!(%error, "connection lost");
            End::ClientGone
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A writer that takes at most `step` bytes per call, vectored or not.
    struct Trickle {
        written: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let take = buf.len().min(self.step);
            self.written.extend_from_slice(&buf[..take]);
            Poll::Ready(Ok(take))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut taken = 0;
            for buf in bufs {
                let take = buf.len().min(self.step - taken);
                self.written.extend_from_slice(&buf[..take]);
                taken += take;
                if taken == self.step {
                    break;
                }
            }
            Poll::Ready(Ok(taken))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frame(bytes: &'static [u8]) -> OutFrame {
        OutFrame {
            bytes: Bytes::from_static(bytes),
            text: true,
            close: None,
        }
    }

    #[tokio::test]
    async fn vectored_writes_write_every_byte_in_order_across_partial_writes() {
        let frames = [
            frame(b"MESSAGE\n\nab\0"),
            frame(b""),
            frame(b"\n"),
            frame(b"RECEIPT\n\n\0"),
        ];
        for step in [1, 2, 3, 7, 100] {
            let mut writer = Trickle {
                written: Vec::new(),
                step,
            };
            write_all_vectored(&mut writer, &frames)
                .await
                .expect("write");
            assert_eq!(
                writer.written, b"MESSAGE\n\nab\0\nRECEIPT\n\n\0",
                "step {step}"
            );
        }
    }

    fn frame_of(bytes: Vec<u8>, text: bool) -> OutFrame {
        OutFrame::new(Bytes::from(bytes), text)
    }

    #[test]
    fn packing_takes_consecutive_frames_up_to_the_bound_in_order() {
        let small = |c: u8| frame_of(vec![c; 1000], true);
        let frames: Vec<OutFrame> = (0..100u8).map(small).collect();
        let (message, taken) = pack(&frames);
        assert_eq!(taken, MAX_PACKED_BYTES / 1000);
        let Message::Text(text) = message else {
            panic!("text frames pack into a text message");
        };
        let expected: Vec<u8> = (0..taken as u8).flat_map(|c| vec![c; 1000]).collect();
        assert_eq!(text.as_bytes(), &expected[..]);
    }

    #[test]
    fn a_large_frame_goes_alone_and_binary_makes_the_message_binary() {
        let large = frame_of(vec![b'x'; MAX_PACKED_BYTES + 1], true);
        let (message, taken) = pack(&[large.clone(), large]);
        assert_eq!(taken, 1);
        assert!(matches!(message, Message::Text(ref t) if t.len() == MAX_PACKED_BYTES + 1));
        let mixed = [
            frame_of(b"A\0".to_vec(), true),
            frame_of(vec![0xff, 0], false),
        ];
        let (message, taken) = pack(&mixed);
        assert_eq!(taken, 2);
        assert!(matches!(message, Message::Binary(ref b) if b.len() == 4));
    }
}
