//! A plain TCP stream whose every write goes through its connection's
//! [`WriteSide`] (see `direct.rs`): what the handshake, tungstenite and the
//! HTTP code read from and write to. A write is taken whole, never in part,
//! behind whatever is still buffered: so the side's buffer always ends on a
//! frame boundary, and a direct write never lands inside someone's frame.

use super::direct::WriteSide;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Past this many unwritten bytes a write waits for the socket instead of
/// buffering more.
const BUFFER_LIMIT: usize = 64 * 1024;

/// A plain TCP stream whose writes go through its [`WriteSide`].
#[derive(Debug)]
pub struct SharedSocket {
    side: Arc<WriteSide>,
}

impl SharedSocket {
    /// Takes over `stream` (its options already set).
    pub fn new(stream: TcpStream) -> SharedSocket {
        SharedSocket {
            side: Arc::new(WriteSide::new(stream)),
        }
    }

    /// Its write side, for the connection's outbound queue.
    pub fn side(&self) -> Arc<WriteSide> {
        self.side.clone()
    }
}

impl AsyncRead for SharedSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let socket = &self.side.socket;
        loop {
            ready!(socket.poll_read_ready(cx))?;
            match socket.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale: cleared now, so the next poll waits.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for SharedSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    /// Takes `bufs` whole (a part would leave half a frame outside the
    /// lock): what the socket does not take now is buffered, in order.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let side = &*self.side;
        let mut state = side.lock();
        if !state.buffer.is_empty() {
            match side.drain(&mut state, cx) {
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending if state.buffer.len() >= BUFFER_LIMIT => return Poll::Pending,
                _ => {}
            }
        }
        let mut written = 0;
        if state.buffer.is_empty() {
            match side.socket.try_write_vectored(bufs) {
                Ok(n) => written = n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        let mut total = 0;
        for buf in bufs {
            let skip = written.min(buf.len());
            written -= skip;
            total += buf.len();
            state.buffer.extend_from_slice(&buf[skip..]);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let side = &*self.side;
        let mut state = side.lock();
        side.drain(&mut state, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let side = &*self.side;
        let mut state = side.lock();
        ready!(side.drain(&mut state, cx))?;
        Poll::Ready(socket2::SockRef::from(&side.socket).shutdown(std::net::Shutdown::Write))
    }
}
