//! `GET /sse` as a connection's first request, answered without hyper: an
//! idle hyper connection keeps an 8 KiB read buffer and an 8 KiB write
//! buffer for its whole life, which more than doubled an idle feed's memory
//! beside an idle WebSocket connection's. Here the request head (already
//! read by [`super::head`]) is parsed once, the answer's head written, and
//! the feed's events written as they come (chunked), with nothing buffered
//! while the feed is idle. The connection closes when the feed ends.

use super::head::Rewind;
use super::{sse, Body, HttpConnection};
use http_body_util::BodyExt;
use hyper::{Request, Response};
use std::fmt::Write as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Headers read from the request (more are refused with 431 by hyper; here
/// the request goes to hyper instead).
const MAX_HEADERS: usize = 64;

/// The request in `head` when it is a `GET /sse` this module serves.
pub(super) fn sse_request(head: &[u8]) -> Option<Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = parsed.parse(head).ok()? else {
        return None;
    };
    let path = parsed.path?;
    if parsed.method? != "GET" || path.split('?').next() != Some("/sse") {
        return None;
    }
    let mut request = Request::builder().method("GET").uri(path);
    for header in parsed.headers.iter() {
        request = request.header(header.name, header.value);
    }
    request.body(()).ok()
}

/// Answers `request` on `stream` and closes it when the feed (or the
/// client) ends.
pub(super) async fn serve_sse<S>(
    mut stream: Rewind<S>,
    request: Request<()>,
    shared: &HttpConnection,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The head was parsed: what the client sends from now on is not read
    // as requests (a GET has no body; EventSource sends nothing more).
    let mut discard = vec![0u8; stream.prefix().len()];
    if stream.read_exact(&mut discard).await.is_err() {
        return;
    }
    drop(discard);
    // Boxed: setting the feed up (auth, subscribing) takes more room than
    // the idle feed; inline, this task would keep that room for its life.
    let response = Box::pin(sse::events(shared, request)).await;
    let _ = write_response(&mut stream, response).await;
    let _ = stream.shutdown().await;
}

/// `fmt::Write` into a byte vector, for a chunk's size line.
struct Chunked<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Chunked<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

/// Writes the head, then each body chunk as it comes; stops when the client
/// closes its side (the body, and with it the feed's session, is dropped).
async fn write_response<S>(stream: &mut S, response: Response<Body>) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, mut body) = response.into_parts();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            let _ = write!(head, "{name}: {value}\r\n");
        }
    }
    head.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    // Nothing of the head is kept while the feed idles.
    drop((head, parts));
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            frame = body.frame() => {
                let Some(Ok(frame)) = frame else { break };
                if let Ok(data) = frame.into_data() {
                    if data.is_empty() {
                        continue;
                    }
                    // One write per chunk, framing included (three were
                    // three system calls per chunk).
                    let mut chunk = Vec::with_capacity(data.len() + 12);
                    let _ = write!(Chunked(&mut chunk), "{:x}\r\n", data.len());
                    chunk.extend_from_slice(&data);
                    chunk.extend_from_slice(b"\r\n");
                    drop(data);
                    stream.write_all(&chunk).await?;
                }
            }
            // Anything read (or the end) while the feed runs: the client
            // went away or is not an SSE client; either way the feed ends.
            read = stream.read(&mut probe) => {
                let _ = read;
                return Ok(());
            }
        }
    }
    stream.write_all(b"0\r\n\r\n").await
}
