//! The first request head on a WebSocket listener's connection, read before
//! anyone else sees the stream, to choose who serves it: a WebSocket upgrade
//! goes to tungstenite as before, anything else to hyper. Both get the
//! bytes read here again through [`Rewind`].

use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The longest request head read (request line and headers). tungstenite
/// and hyper refuse longer ones anyway; we stop reading here.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Room made in the buffer per read.
const READ_CHUNK: usize = 2 * 1024;

/// What the first request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    /// `GET` with `Upgrade: websocket`.
    WebSocket,
    /// Anything else (including what does not parse: hyper answers 400).
    Http,
}

/// Why no head was read.
#[derive(Debug)]
pub enum HeadError {
    /// No end of the head within [`MAX_HEAD_BYTES`].
    TooLarge,
    /// The connection ended or failed first.
    Io(io::Error),
}

/// Reads until the end of the first request head (or [`MAX_HEAD_BYTES`]);
/// returns every byte read (the head, and whatever followed it in the same
/// reads) and what the request wants. The caller bounds the time.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(BytesMut, Wants), HeadError> {
    let mut buffer = BytesMut::new();
    loop {
        let searched_from = buffer.len().saturating_sub(3);
        buffer.reserve(READ_CHUNK.min(MAX_HEAD_BYTES + 1 - buffer.len()));
        let read = stream.read_buf(&mut buffer).await.map_err(HeadError::Io)?;
        if read == 0 {
            return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        if let Some(end) = find_end(&buffer[searched_from..]) {
            let wants = wants(&buffer[..searched_from + end]);
            return Ok((buffer, wants));
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
    }
}

/// The offset just past the blank line that ends a head, if there is one.
fn find_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// Whether a whole head is a WebSocket upgrade request.
pub fn wants(head: &[u8]) -> Wants {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        return Wants::Http;
    }
    let upgrade = request.headers.iter().any(|header| {
        header.name.eq_ignore_ascii_case("upgrade")
            && std::str::from_utf8(header.value).is_ok_and(|value| {
                value
                    .split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
            })
    });
    if request.method == Some("GET") && upgrade {
        Wants::WebSocket
    } else {
        Wants::Http
    }
}

/// A stream that first yields bytes already read from it.
pub struct Rewind<S> {
    /// What was read before (empty once given back; then it holds nothing).
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner`, with `prefix` to be read again first.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Rewind { prefix, inner }
    }

    /// The bytes still to be read again (the first request head).
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The stream below.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let take = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..take]);
            self.prefix.advance(take);
            if self.prefix.is_empty() {
                // An emptied `Bytes` still holds its allocation: let it go,
                // so that an idle connection keeps none of the head.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_are_told_from_the_rest() {
        let upgrade =
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n";
        assert_eq!(wants(upgrade), Wants::WebSocket);
        assert_eq!(wants(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Wants::Http);
        assert_eq!(
            wants(b"POST /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
            Wants::Http
        );
        assert_eq!(wants(b"\x16\x03\x01garbage\r\n\r\n"), Wants::Http);
    }

    #[tokio::test]
    async fn the_head_and_what_follows_are_read_again_in_order() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in [&b"GET / HTTP/1.1\r\nHo"[..], b"st: x\r", b"\n\r\nBODY"] {
                client.write_all(piece).await.expect("write");
                tokio::task::yield_now().await;
            }
        });
        let (read, wants) = read_head(&mut server).await.expect("head");
        assert_eq!(wants, Wants::Http);
        writer.await.expect("writer");
        let mut rewound = Rewind::new(read.freeze(), server);
        let mut all = Vec::new();
        rewound.read_to_end(&mut all).await.expect("read");
        assert_eq!(all, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY");
    }

    #[tokio::test]
    async fn a_head_without_end_is_cut_at_the_limit() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = client.write_all(&[b'a'; 40 * 1024]).await;
            client
        });
        assert!(matches!(
            read_head(&mut server).await,
            Err(HeadError::TooLarge)
        ));
        drop(writer);
    }
}
