//! A connection's write side, shared: the socket of a plain-TCP WebSocket
//! connection, so that the task that queued frames for an idle subscriber
//! can write them itself at the end of its burst (nats-server's flush in the
//! producer) instead of waking the subscriber's task to do it: no wake and
//! poll of that task, no tungstenite copy; at low rates, where each wake
//! carries one message, that is most of a delivery's own work.
//!
//! Order: every byte for the socket goes through [`WriteSide`]'s lock.
//! `SharedSocket` (`socket.rs`), the stream tungstenite and the HTTP code
//! write to, takes each write whole, into the side's buffer behind whatever
//! is still unwritten, so the buffer always ends on a frame boundary. A
//! direct write happens only when the buffer is empty and the connection
//! task is not writing a batch (`busy`, set under the lock when it takes
//! frames from the queue): frames leave the queue and reach the socket in
//! queue order, and never inside a frame of tungstenite's.
//!
//! Lock order: the side's `state`, then the queue's `pending`. Other tasks
//! only ever `try_lock` the side: a busy side means "wake the writer".

use super::pending::Queued;
use super::{OutFrame, OutboundReceiver, Shared};
use bytes::{Buf, BytesMut};
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{ready, Context, Poll};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Most frames one direct write takes from a queue (two slices each).
const DIRECT_FRAMES: usize = 64;

/// Counts the frames a direct write wrote (the connection's statistics).
pub type WrittenHook = Box<dyn Fn(&[OutFrame]) + Send + Sync>;

/// One connection's socket and what is still to be written to it.
pub struct WriteSide {
    pub(super) socket: TcpStream,
    pub(super) state: Mutex<SideState>,
    /// Wakes the connection task to write out the buffer a direct write
    /// left (the socket took only part of a frame): sent by direct writers,
    /// received by the connection's loop. A stored permit if it is not waiting.
    flush_wanted: Notify,
    /// Direct writes allowed: set once the connection is a WebSocket with a
    /// queue attached; cleared for packed frames and when it starts closing.
    enabled: AtomicBool,
    /// When the side was made; `last_direct` counts from it.
    base: Instant,
    /// Microseconds after `base` of the last direct write, plus one (0: none):
    /// the heart-beat timer's "last write".
    last_direct: AtomicU64,
    /// Set by the connection once its statistics exist.
    on_written: OnceLock<WrittenHook>,
}

impl std::fmt::Debug for WriteSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteSide")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// What the side's lock guards.
#[derive(Default)]
pub(super) struct SideState {
    /// Bytes taken for the socket and not yet written, in order; always
    /// whole WebSocket frames after a part of one.
    pub(super) buffer: BytesMut,
    /// The connection task has taken frames from the queue and is writing
    /// them through tungstenite: no direct write until it is done.
    busy: bool,
}

impl WriteSide {
    /// A side for `socket`: direct writes off until enabled.
    pub(super) fn new(socket: TcpStream) -> WriteSide {
        WriteSide {
            socket,
            state: Mutex::new(SideState::default()),
            flush_wanted: Notify::new(),
            enabled: AtomicBool::new(false),
            base: Instant::now(),
            last_direct: AtomicU64::new(0),
            on_written: OnceLock::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, SideState> {
        // A poisoned lock only means a panic elsewhere; the state is plain.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Allows direct writes (a WebSocket, after the upgrade).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Stops direct writes for good: packed frames, or closing (the ERROR
    /// and the Close frame go after everything written so far).
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    /// Sets what counts directly written frames (once).
    pub fn set_on_written(&self, hook: WrittenHook) {
        let _ = self.on_written.set(hook);
    }

    /// When a direct write last wrote, if ever.
    pub fn last_direct_write(&self) -> Option<Instant> {
        match self.last_direct.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(self.base + std::time::Duration::from_micros(micros - 1)),
        }
    }

    /// Resolves when a direct write left bytes for the connection to flush.
    pub async fn flush_wanted(&self) {
        self.flush_wanted.notified().await;
    }

    /// Runs the connection task's `take` from the queue under the lock,
    /// and marks it busy writing if it took any frames.
    pub(super) fn taking(&self, take: impl FnOnce() -> usize) -> usize {
        let mut state = self.lock();
        let count = take();
        if count > 0 {
            state.busy = true;
        }
        count
    }

    /// The connection task's batch is written and flushed.
    pub fn end_batch(&self) {
        self.lock().busy = false;
    }

    /// Writes out the buffer; `Ready(Ok)` once it is empty.
    pub(super) fn drain(
        &self,
        state: &mut SideState,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !state.buffer.is_empty() {
            ready!(self.socket.poll_write_ready(cx))?;
            match self.socket.try_write(&state.buffer) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => state.buffer.advance(n),
                // Readiness was stale: cleared now, so the next poll waits.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl OutboundReceiver {
    /// Lets publishers write this queue's frames straight to `side` when
    /// the connection is idle (once; a WebSocket on plain TCP).
    pub fn attach_direct(&self, side: Arc<WriteSide>) {
        side.enable();
        let _ = self.shared.direct.set(side);
    }

    /// The batch taken by the last `recv_many` is written and flushed:
    /// direct writes may go on.
    pub fn batch_written(&self) {
        if let Some(side) = self.shared.direct.get() {
            side.end_batch();
        }
    }
}

/// Writes `shared`'s queued frames straight to its socket if the side is
/// idle, without waiting; whether nothing is left for its writer (true: it
/// need not be woken).
pub(super) fn write_queued(shared: &Shared, side: &WriteSide) -> bool {
    if !side.enabled.load(Ordering::Relaxed) || shared.overflowed.load(Ordering::Relaxed) {
        return false;
    }
    let Ok(mut state) = side.state.try_lock() else {
        return false;
    };
    if state.busy || !state.buffer.is_empty() {
        return false;
    }
    let mut taken: Vec<Queued> = {
        let mut pending = shared.lock();
        // A final frame (one that closes) is the connection task's to write.
        let count = pending
            .frames
            .iter()
            .take(DIRECT_FRAMES)
            .take_while(|queued| queued.frame.close.is_none())
            .count();
        pending.frames.drain(..count).collect()
    };
    if taken.is_empty() {
        return false;
    }
    let headers: Vec<Header> = taken
        .iter()
        .map(|queued| Header::new(&queued.frame))
        .collect();
    let slices: Vec<IoSlice<'_>> = taken
        .iter()
        .zip(&headers)
        .flat_map(|(queued, header)| {
            [
                IoSlice::new(header.bytes()),
                IoSlice::new(&queued.frame.bytes),
            ]
        })
        .collect();
    // An error is left for the connection task to find on its next write.
    let mut written = side.socket.try_write_vectored(&slices).unwrap_or(0);
    drop(slices);
    // Frames wholly written, then the part of one that the socket took.
    let mut done = 0;
    let mut budget = 0;
    for (queued, header) in taken.iter().zip(&headers) {
        let (head, body) = (header.bytes(), &queued.frame.bytes);
        let length = head.len() + body.len();
        if written >= length {
            written -= length;
        } else if written > 0 {
            // The rest of this frame must follow before anything else.
            if written < head.len() {
                state.buffer.extend_from_slice(&head[written..]);
                state.buffer.extend_from_slice(body);
            } else {
                state
                    .buffer
                    .extend_from_slice(&body[written - head.len()..]);
            }
            written = 0;
        } else {
            break;
        }
        done += 1;
        budget += body.len();
    }
    let left = taken.split_off(done);
    let queue_empty = {
        let mut pending = shared.lock();
        for queued in left.into_iter().rev() {
            pending.frames.push_front(queued);
        }
        pending.frames.is_empty()
    };
    let buffered = !state.buffer.is_empty();
    drop(state);
    if done > 0 {
        // The part of a frame in the buffer is given back too: at most one
        // frame beyond the budget, written by the connection's next flush.
        shared.in_flight_bytes.fetch_sub(budget, Ordering::Relaxed);
        let micros = u64::try_from(side.base.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        side.last_direct.store(micros + 1, Ordering::Relaxed);
        if let Some(hook) = side.on_written.get() {
            let frames: Vec<OutFrame> = taken.into_iter().map(|queued| queued.frame).collect();
            hook(&frames);
        }
    }
    if buffered {
        side.flush_wanted.notify_one();
    }
    queue_empty
}

/// A server-to-client WebSocket frame header (RFC 6455 section 5.2: FIN,
/// the opcode, the length; no mask from a server).
struct Header {
    bytes: [u8; 10],
    length: usize,
}

impl Header {
    /// One STOMP frame as one message: text when the frame says it is UTF-8
    /// (checked once, when it was encoded), binary otherwise.
    fn new(frame: &OutFrame) -> Header {
        let opcode = if frame.text { 0x1 } else { 0x2 };
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | opcode;
        let size = frame.bytes.len();
        let length = if size < 126 {
            bytes[1] = size as u8;
            2
        } else if let Ok(size) = u16::try_from(size) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&size.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(size as u64).to_be_bytes());
            10
        };
        Header { bytes, length }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.length]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{outbound_channel, SharedSocket};
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Reads `count` unmasked WebSocket frames; their payloads.
    async fn read_frames(mut client: TcpStream, count: usize) -> Vec<Vec<u8>> {
        let mut payloads = Vec::new();
        for _ in 0..count {
            let mut head = [0u8; 2];
            client.read_exact(&mut head).await.expect("header");
            let size = match head[1] {
                126 => usize::from(client.read_u16().await.expect("length")),
                127 => usize::try_from(client.read_u64().await.expect("length")).expect("size"),
                size => usize::from(size),
            };
            let mut payload = vec![0u8; size];
            client.read_exact(&mut payload).await.expect("payload");
            payloads.push(payload);
        }
        payloads
    }

    #[tokio::test]
    async fn a_direct_write_the_socket_takes_in_part_keeps_every_frame_in_order() {
        const FRAMES: usize = 64;
        const SIZE: usize = 256 * 1024 + 7;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let client = TcpStream::connect(address).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let mut socket = SharedSocket::new(server);
        let side = socket.side();
        let (queue, mut receiver) = outbound_channel(10_000, usize::MAX);
        receiver.attach_direct(side.clone());
        let frame = |n: usize| OutFrame::new(Bytes::from(vec![n as u8; SIZE]), false);
        for n in 0..FRAMES {
            queue.push(frame(n)).expect("fits");
        }
        // 16 MiB into a socket nobody reads yet: it takes only a part.
        assert!(!write_queued(&receiver.shared, &side));
        assert!(!side.lock().buffer.is_empty(), "part of a frame is left");
        queue.push(frame(FRAMES)).expect("fits");
        assert!(
            !write_queued(&receiver.shared, &side),
            "nothing is written directly behind a buffered part"
        );
        let reader = tokio::spawn(read_frames(client, FRAMES + 1));
        // What the connection task does: flush the part, then write the
        // rest of the queue through the same socket, one batch at a time.
        socket.flush().await.expect("flush");
        let mut batch = Vec::new();
        let mut left = receiver.queued_bytes();
        while left > 0 {
            receiver.recv_many(&mut batch, 8).await;
            for frame in batch.drain(..) {
                socket
                    .write_all(Header::new(&frame).bytes())
                    .await
                    .expect("header");
                socket.write_all(&frame.bytes).await.expect("payload");
                receiver.written(frame.bytes.len());
            }
            socket.flush().await.expect("flush");
            receiver.batch_written();
            left = receiver.queued_bytes();
        }
        let payloads = reader.await.expect("reader");
        for (n, payload) in payloads.iter().enumerate() {
            assert_eq!(payload.len(), SIZE, "frame {n} whole");
            assert!(payload.iter().all(|&b| b == n as u8), "frame {n} in order");
        }
        drop(queue);
    }

    fn header(size: usize, text: bool) -> Vec<u8> {
        Header::new(&OutFrame::new(Bytes::from(vec![b'x'; size]), text))
            .bytes()
            .to_vec()
    }

    #[test]
    fn headers_follow_rfc_6455_length_forms() {
        assert_eq!(header(0, true), vec![0x81, 0]);
        assert_eq!(header(125, false), vec![0x82, 125]);
        assert_eq!(header(126, true), vec![0x81, 126, 0, 126]);
        assert_eq!(header(65535, true), vec![0x81, 126, 0xff, 0xff]);
        assert_eq!(header(65536, true), vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }
}
