//! Drives one STOMP connection, over WebSocket or plain TCP: reads bytes into
//! the decoder, feeds frames to the session, and hands the outbound queue to
//! the writer, until the connection ends one way or another ([`End`]).
//!
//! The rest of a connection's life has a file each: [`admission`] (TLS,
//! the WebSocket handshake under the timeout, per-address admission),
//! [`transport`] (what differs between WebSocket and TCP), [`timers`]
//! (heart-beats, the CONNECT deadline, token expiry), [`writer`] (the
//! outbound queue in batches, one flush each) and [`closing`] (ERROR, the
//! close and the linger after it).

mod admission;
mod closing;
mod stats;
mod timers;
mod transport;
mod wake_flag;
mod writer;

use crate::context::BrokerContext;
use crate::endpoint::Endpoint;
use crate::model::session_id::SessionId;
use crate::outbound::{deferring_wakes, CloseAfter, OutboundReceiver, OverflowSignal};
use crate::session::{CloseReason, Flow, Session, SessionError};
use crate::shutdown::Shutdown;
use bytes::BytesMut;
use futures_util::FutureExt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use stomp_protocol::{Decoder, Limits};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};
use tracing::{info_span, Instrument};
use transport::{Received, Transport};
use wake_flag::WakeFlag;
use writer::{write_batch, WRITE_BATCH};

/// Most reads (WebSocket messages, or TCP reads) handled as one burst
/// before the subscribers' writers are woken: bounds how long the first
/// message of a burst waits for the last.
const READ_BURST: usize = 32;

/// How long a write under way when shutdown begins may still take.
const SHUTDOWN_WRITE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

pub use closing::{linger, LINGER_BYTES, LINGER_TIME};

/// Serves one accepted TCP connection until it ends.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<BrokerContext>,
    endpoint: Arc<Endpoint>,
    shutdown: Shutdown,
) {
    let id = SessionId(context.next_session_id());
    // `client`: the address a PROXY protocol header names, when it does.
    let span = info_span!("conn", id = id.0, %peer, client = tracing::field::Empty);
    admission::run(stream, peer.ip(), id, context, endpoint, shutdown)
        .instrument(span)
        .await;
}

/// How the read/write loop ended.
enum End {
    /// The TCP connection ended or failed (without a WebSocket Close frame).
    ClientGone,
    /// The client sent a WebSocket Close frame: answer it (same code), then close.
    ClientClosed,
    /// DISCONNECT: write what is queued, then close normally.
    Disconnect,
    /// ERROR, then close.
    Error(SessionError),
    /// A final frame (an ERROR queued by the router or the store writer)
    /// was written: close as its [`CloseAfter`] says.
    FinalFrame(Box<CloseAfter>),
}

/// One admitted connection: its transport, its STOMP session, the receiving
/// half of its outbound queue, and the state its timers read.
struct Connection<S> {
    transport: Transport<S>,
    session: Session,
    outbound: OutboundReceiver,
    /// Fires when the router found this connection over its outbound budget.
    overflow: OverflowSignal,
    decoder: Decoder,
    /// Received bytes not yet decoded (at most one partial frame, bounded by the limits).
    buffer: BytesMut,
    last_read: Instant,
    last_write: Instant,
    /// A WebSocket ping was sent because the client's heart-beat is late.
    pinged: bool,
    /// A publish rate limit: nothing is read or decoded until then (writes
    /// and heart-beats go on).
    read_paused_until: Option<Instant>,
    connect_deadline: Instant,
    grace: f64,
    /// `stomp.heartbeat_ping` on a WebSocket: ping late clients, count
    /// pings and pongs. Always off over TCP, which has no ping.
    ping_late: bool,
    /// Frame size limits, named in the ERROR for an oversized message.
    frame_limits: Limits,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// The read/write loop: shutdown, overflow, outbound batches, client
    /// messages and timers, in that order of priority.
    async fn drive(&mut self, mut shutdown: Shutdown) -> End {
        // Grows on first use: an idle connection never needs 64 slots.
        let mut batch = Vec::new();
        let registered = self.register();
        // The waits that outlive one turn of the loop are made once, not on
        // every turn: each turn is a delivery at low rates, and making them
        // anew registered with the runtime's timer and with channels every
        // connection shares.
        // A write that blocks waits for shutdown on its own receiver: the
        // loop's is polled through `signals` only.
        let mut shutdown_during_write = shutdown.clone();
        let mut shutdown_signal = std::pin::pin!(shutdown.wait());
        let mut reload = Box::pin(next_reload(self.session.reloads()));
        let mut close_requested = std::pin::pin!(registered.entry.close_requested());
        let mut timer = std::pin::pin!(sleep_until(self.next_timer_or_far()));
        // The rarely ready waits, polled only once one of them fired: the
        // shutdown, reload and close signals as one, and the client's
        // socket (see `wake_flag`).
        let signals = WakeFlag::new();
        let readable = WakeFlag::new();
        loop {
            // Timers only move later as the connection reads and writes, so
            // the sleep is re-armed only when one moves earlier (CONNECTED)
            // or after it fires; `on_timer` checks what is really due.
            if let Some(due) = self.next_timer().filter(|due| *due < timer.deadline()) {
                timer.as_mut().reset(due);
            }
            let paused_until = self.read_paused_until;
            let buffered = self.buffer.len();
            tokio::select! {
                biased;
                signal = signals.wait(std::future::poll_fn(|cx| {
                    if shutdown_signal.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Signal::Shutdown);
                    }
                    if let Poll::Ready(receiver) = reload.as_mut().poll(cx) {
                        return Poll::Ready(Signal::Reload(receiver));
                    }
                    close_requested.as_mut().poll(cx).map(Signal::Close)
                })) => match signal {
                    Signal::Shutdown => return End::Error(shutting_down()),
                    Signal::Reload(receiver) => {
                        reload = Box::pin(next_reload(receiver));
                        if let Err(error) = self.session.reloaded() {
                            return End::Error(error);
                        }
                    }
                    Signal::Close(reason) => {
                        return End::Error(SessionError::new(format!("{}: {reason}", stats::CLOSED_BY_ADMIN), CloseReason::PolicyViolation));
                    }
                },
                // The queue's overflow comes first, then its frames.
                received = self.outbound.recv_many_until_overflow(&mut batch, WRITE_BATCH) => {
                    let Ok(received) = received else {
                        return End::Error(slow_consumer());
                    };
                    if received == 0 {
                        return End::Disconnect;
                    }
                    self.count_written(&batch);
                    // A client that stops reading blocks this write; the
                    // overflow signal and shutdown still end it.
                    let packed = self.session.packs_frames();
                    let mut write = std::pin::pin!(write_batch(&mut self.transport, &self.outbound, &mut batch, packed));
                    // The write first: it is almost always done at its first
                    // poll, and the overflow wait is then never made (a
                    // batch written as the queue overflowed ends the
                    // connection at the next turn).
                    let written = tokio::select! {
                        biased;
                        written = &mut write => written,
                        _ = self.overflow.wait() => return End::Error(slow_consumer()),
                        // The batch may hold queue messages already settled
                        // (auto ack): a reading client gets them before the
                        // shutdown ERROR; a stuck one does not hold it up.
                        _ = shutdown_during_write.wait() => {
                            return match tokio::time::timeout(SHUTDOWN_WRITE_GRACE, &mut write).await {
                                Ok(Ok(None)) => End::Error(shutting_down()),
                                Ok(Ok(Some(close_after))) => End::FinalFrame(close_after),
                                Ok(Err(_)) | Err(_) => End::ClientGone,
                            };
                        }
                    };
                    match written {
                        Err(_) => return End::ClientGone,
                        Ok(Some(close_after)) => return End::FinalFrame(close_after),
                        Ok(None) => self.last_write = Instant::now(),
                    }
                }
                // A queue SEND the cluster engine did not store: ERROR now,
                // not at the client's next frame.
                error = self.session.confirmation_failed() => return End::Error(error),
                received = readable.wait(self.transport.read(&mut self.buffer, &self.frame_limits)), if paused_until.is_none() => {
                    self.count_read(self.buffer.len().saturating_sub(buffered));
                    // One wake per subscriber writer for the whole burst.
                    if let Some(end) = deferring_wakes(self.on_received_burst(received, &readable)).await {
                        return end;
                    }
                }
                // Not made into a sleep at all unless paused.
                _ = sleep_while_paused(paused_until), if paused_until.is_some() => {
                    self.read_paused_until = None;
                    if let Some(end) = self.decode_buffered().await {
                        return end;
                    }
                }
                () = &mut timer => {
                    if let Some(end) = self.on_timer().await {
                        return end;
                    }
                    timer.as_mut().reset(self.next_timer_or_far());
                }
            }
        }
    }

    /// Handles what one read brought and what has already arrived behind
    /// it, up to [`READ_BURST`] reads, without waiting for more; `Some` ends
    /// the loop. `readable` is the loop's wait for the transport: the reads
    /// here poll it with a no-op waker, so each fires it.
    async fn on_received_burst(
        &mut self,
        mut received: Received,
        readable: &WakeFlag,
    ) -> Option<End> {
        for _ in 1..READ_BURST {
            if let Some(end) = self.on_received(received).await {
                return Some(end);
            }
            if self.read_paused_until.is_some() {
                return None;
            }
            let buffered = self.buffer.len();
            // Both transports' reads are cancel-safe: an unfinished one
            // keeps its bytes for the next.
            let read = self
                .transport
                .read(&mut self.buffer, &self.frame_limits)
                .now_or_never();
            readable.fire();
            received = read?;
            self.count_read(self.buffer.len().saturating_sub(buffered));
        }
        self.on_received(received).await
    }

    /// Handles what one read brought; `Some` ends the loop.
    async fn on_received(&mut self, received: Received) -> Option<End> {
        match received {
            Received::End(end) => Some(end),
            Received::Control => {
                // Lenient, pings and pongs count as a sign of life; strict,
                // only STOMP bytes do.
                if self.ping_late {
                    self.alive();
                }
                None
            }
            Received::Data => {
                self.alive();
                self.decode_buffered().await
            }
        }
    }

    /// Handles the whole frames in the buffer; `Some` ends the loop.
    async fn decode_buffered(&mut self) -> Option<End> {
        loop {
            let frame = match self.decoder.decode(&mut self.buffer) {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(error) => return Some(End::Error(error.into())),
            };
            self.count_frame(frame.command);
            let handled = self.session.handle(frame).await;
            // Time the broker spent on the frame (publisher back-pressure)
            // is not the client's silence.
            self.alive();
            match handled {
                Ok(Flow::Continue) => {
                    if let Some(version) = self.session.version() {
                        self.decoder.set_version(version);
                    }
                    if let Some(until) = self.session.take_read_pause() {
                        // Over a publish rate: the rest waits in the buffer
                        // (and the socket), and the pause is not the
                        // client's silence.
                        self.read_paused_until = Some(until);
                        self.last_read = self.last_read.max(until);
                        return None;
                    }
                }
                // Frames after DISCONNECT are ignored.
                Ok(Flow::Disconnect) => return Some(End::Disconnect),
                Err(error) => return Some(End::Error(error)),
            }
        }
    }

    fn alive(&mut self) {
        self.last_read = Instant::now();
        self.pinged = false;
    }
}

/// One of the loop's rarely ready waits, polled as one.
enum Signal {
    /// The broker is shutting down.
    Shutdown,
    /// The configuration was reloaded (the receiver waits for the next).
    Reload(tokio::sync::watch::Receiver<u64>),
    /// An operator closed the connection, for this reason.
    Close(String),
}

/// Resolves with `receiver` once the configuration has been reloaded (never,
/// once the broker has dropped the sender: it is shutting down).
async fn next_reload(
    mut receiver: tokio::sync::watch::Receiver<u64>,
) -> tokio::sync::watch::Receiver<u64> {
    if receiver.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
    receiver
}

/// Sleeps until `until` (forever if `None`: the branch is then disabled).
async fn sleep_while_paused(until: Option<Instant>) {
    match until {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn shutting_down() -> SessionError {
    SessionError::new("server shutting down", CloseReason::GoingAway)
}

fn slow_consumer() -> SessionError {
    SessionError::new("slow consumer", CloseReason::PolicyViolation).with_detail(
        "The client did not read its messages fast enough and exceeded its outbound budget \
         (outbound.max_queued_bytes / max_queued_frames).",
    )
}
