//! One STOMP connection over WebSocket (`ws://`, `wss://`) or plain TCP
//! (`tcp://host:port`, STOMP's port 61613), as a load generator needs it:
//! feed many frames, flush once, read frames as they come; and the
//! WebSocket opening that the NATS and MQTT connections share.
//!
//! Connections to a loopback broker take their source address in turn from
//! 127.0.0.1 … 127.0.0.N (`--sources`), with `IP_BIND_ADDRESS_NO_PORT` so
//! that the port is chosen at connect time per (source, destination) pair:
//! past the ~28 000 ephemeral ports of one source address, and past a
//! broker's per-address connection limit.

use crate::message_scan::{self, Scan};
use crate::Fallible;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use stomp_protocol::{encode, Command, Decoder, Frame, Limits, Version};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

/// How many loopback source addresses connections are spread over.
static SOURCES: OnceLock<usize> = OnceLock::new();
/// The next source address, round robin.
static NEXT_SOURCE: AtomicUsize = AtomicUsize::new(0);

/// Spreads loopback connections over 127.0.0.1 … 127.0.0.`count` (set once, at start).
pub fn spread_sources(count: usize) {
    let _ = SOURCES.set(count.clamp(1, 254));
}

/// A TCP connection to `target`, from the next loopback source address when
/// the target is on loopback.
pub(crate) async fn tcp_connect(target: SocketAddr) -> Fallible<tokio::net::TcpStream> {
    let sources = SOURCES.get().copied().unwrap_or(1);
    let stream = match target {
        SocketAddr::V4(v4) if v4.ip().is_loopback() && sources > 1 => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            bind_address_no_port(&socket)?;
            let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % sources;
            let source = Ipv4Addr::new(127, 0, 0, 1 + n as u8);
            socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
            socket.connect(target).await?
        }
        _ => tokio::net::TcpStream::connect(target).await?,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Lets `bind` take an address without reserving a port: the port is picked
/// at `connect`, unique per destination instead of per source.
fn bind_address_no_port(socket: &tokio::net::TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and a pointer to a c_int that
    // outlives the call, with its exact size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether STOMP connections ask for packed frames (`--pack-frames`), set
/// by the scenario before it connects.
pub static PACK_FRAMES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A client WebSocket, as every protocol's connection holds it.
pub type WebSocket = tokio_tungstenite::WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `url`, offering `subprotocol`, from the next
/// loopback source address when the broker is on loopback.
pub async fn open_websocket(url: &str, subprotocol: Option<&str>) -> Fallible<WebSocket> {
    let mut request = url.into_client_request()?;
    if let Some(subprotocol) = subprotocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", subprotocol.parse()?);
    }
    if request.uri().scheme_str() != Some("ws") {
        return Ok(tokio_tungstenite::connect_async(request).await?.0);
    }
    let host = request.uri().host().unwrap_or("127.0.0.1");
    let port = request.uri().port_u16().unwrap_or(80);
    let target = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or("the URL's host has no address")?;
    let stream = tcp_connect(target).await?;
    // tungstenite's default 128 KiB read buffer, zeroed for every
    // connection, would cost the tool more than the broker a connect.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024);
    Ok(tokio_tungstenite::client_async_with_config(
        request,
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await?
    .0)
}

/// What a STOMP connection runs on.
enum Link {
    /// One STOMP frame per WebSocket message.
    Ws(Box<WebSocket>),
    /// STOMP straight on TCP; frames fed are kept in `out` until a flush.
    Tcp {
        stream: tokio::net::TcpStream,
        out: BytesMut,
    },
}

/// One STOMP connection over WebSocket or TCP.
pub struct Connection {
    ws: Link,
    decoder: Decoder,
    buffer: BytesMut,
    /// WebSocket payload bytes received so far, for bytes per delivery.
    received_bytes: u64,
}

impl Connection {
    /// Opens the WebSocket (or, for `tcp://host:port`, the TCP connection)
    /// and sends CONNECT.
    pub async fn open(url: &str) -> Fallible<Connection> {
        let ws = match url.strip_prefix("tcp://") {
            Some(address) => {
                let address = address.trim_end_matches('/');
                let target = tokio::net::lookup_host(address)
                    .await?
                    .next()
                    .ok_or("the tcp:// address has no host")?;
                Link::Tcp {
                    stream: tcp_connect(target).await?,
                    out: BytesMut::new(),
                }
            }
            None => Link::Ws(Box::new(open_websocket(url, Some("v12.stomp")).await?)),
        };
        let mut connection = Connection {
            ws,
            decoder: Decoder::new(Limits {
                max_body_bytes: 64 << 20,
                ..Limits::default()
            }),
            buffer: BytesMut::new(),
            received_bytes: 0,
        };
        let mut connect = Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("host", "/");
        if PACK_FRAMES.load(std::sync::atomic::Ordering::Relaxed) {
            connect = connect.header("x-pack-frames", "true");
        }
        connection.send(connect).await?;
        let reply = connection.next().await?;
        if reply.command != Command::Connected {
            return Err(format!("CONNECT refused: {:?}", reply.get("message")).into());
        }
        Ok(connection)
    }

    /// Subscribes `id` to `destination` (with `extra` headers) and waits
    /// for the RECEIPT.
    pub async fn subscribe_confirmed(
        &mut self,
        id: &str,
        destination: &str,
        receipt: &str,
        extra: &[(&str, &str)],
    ) -> Fallible<()> {
        let mut frame = Frame::new(Command::Subscribe)
            .header("id", id)
            .header("destination", destination)
            .header("receipt", receipt);
        for (name, value) in extra {
            frame = frame.header(*name, *value);
        }
        self.send(frame).await?;
        match self.next().await? {
            frame if frame.command == Command::Receipt => Ok(()),
            frame => Err(format!("SUBSCRIBE not confirmed: {:?}", frame.get("message")).into()),
        }
    }

    /// Queues a frame (written at the next flush or read).
    pub async fn send(&mut self, frame: Frame) -> Fallible<()> {
        let bytes = encode(&frame, Version::V1_2);
        match &mut self.ws {
            Link::Ws(ws) => ws.feed(Message::Binary(bytes)).await?,
            Link::Tcp { out, .. } => out.extend_from_slice(&bytes),
        }
        Ok(())
    }

    /// Writes what is queued.
    pub async fn flush(&mut self) -> Fallible<()> {
        match &mut self.ws {
            Link::Ws(ws) => ws.flush().await?,
            Link::Tcp { stream, out } => {
                use tokio::io::AsyncWriteExt;
                if !out.is_empty() {
                    stream.write_all(out).await?;
                    out.clear();
                }
            }
        }
        Ok(())
    }

    /// Takes what the TCP connection has already received; whether
    /// anything came.
    fn try_read_tcp(&mut self) -> Fallible<bool> {
        let Link::Tcp { stream, .. } = &mut self.ws else {
            return Ok(false);
        };
        let mut chunk = [0u8; 16 * 1024];
        let read = match stream.try_read(&mut chunk) {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        self.received_bytes += read as u64;
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(true)
    }

    /// Waits until the TCP connection has something, and takes it.
    async fn read_tcp(&mut self) -> Fallible<()> {
        loop {
            if let Link::Tcp { stream, .. } = &self.ws {
                stream.readable().await?;
            }
            if self.try_read_tcp()? {
                return Ok(());
            }
        }
    }

    /// A frame that has already arrived, without waiting or flushing: lets
    /// a client answer a burst of frames with one write.
    pub fn try_next(&mut self) -> Fallible<Option<Frame>> {
        use futures_util::FutureExt;
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buffer)? {
                return Ok(Some(frame));
            }
            let Link::Ws(ws) = &mut self.ws else {
                if self.try_read_tcp()? {
                    continue;
                }
                return Ok(None);
            };
            match ws.next().now_or_never() {
                None => return Ok(None),
                Some(Some(Ok(message))) => self.take(message),
                Some(Some(Err(e))) => return Err(e.into()),
                Some(None) => return Err("connection closed".into()),
            }
        }
    }

    /// The next frame from the broker.
    pub async fn next(&mut self) -> Fallible<Frame> {
        self.flush().await?;
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buffer)? {
                return Ok(frame);
            }
            self.receive().await?;
        }
    }

    /// The body of the next frame, which must be a MESSAGE: found without
    /// decoding its headers when it is a regular one (see `message_scan`).
    pub async fn next_message_body(&mut self) -> Fallible<Bytes> {
        self.flush().await?;
        loop {
            // The decoder keeps progress only on a frame that is not a
            // MESSAGE at the head of the buffer, which the scan leaves to it.
            match message_scan::scan(&self.buffer) {
                Scan::Message { body, end } => {
                    return Ok(self.buffer.split_to(end).freeze().slice(body));
                }
                Scan::Incomplete => {}
                Scan::Other => {
                    if let Some(frame) = self.decoder.decode(&mut self.buffer)? {
                        if frame.command != Command::Message {
                            return Err(format!("subscriber: {:?}", frame.get("message")).into());
                        }
                        return Ok(frame.body);
                    }
                }
            }
            self.receive().await?;
        }
    }

    /// Waits for more bytes from the broker.
    async fn receive(&mut self) -> Fallible<()> {
        let Link::Ws(ws) = &mut self.ws else {
            return self.read_tcp().await;
        };
        match ws.next().await {
            Some(Ok(message)) => {
                self.take(message);
                Ok(())
            }
            Some(Err(e)) => Err(e.into()),
            None => Err("connection closed".into()),
        }
    }

    /// WebSocket payload bytes received so far.
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// Adds a data message's payload to the byte stream the decoder reads.
    fn take(&mut self, message: Message) {
        let payload: &[u8] = match &message {
            Message::Binary(b) => b,
            Message::Text(t) => t.as_bytes(),
            _ => return,
        };
        self.received_bytes += payload.len() as u64;
        self.buffer.extend_from_slice(payload);
    }
}
