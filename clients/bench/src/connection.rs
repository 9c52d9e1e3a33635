//! One STOMP connection over WebSocket, as a load generator needs it: feed
//! many frames, flush once, read frames as they come.

use crate::Fallible;
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use stomp_protocol::{encode, Command, Decoder, Frame, Limits, Version};
use tokio_tungstenite::tungstenite::Message;

/// One STOMP connection over WebSocket.
pub struct Connection {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    decoder: Decoder,
    buffer: BytesMut,
}

impl Connection {
    /// Opens the WebSocket and sends CONNECT.
    pub async fn open(url: &str) -> Fallible<Connection> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "v12.stomp".parse()?);
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        let mut connection = Connection {
            ws,
            decoder: Decoder::new(Limits {
                max_body_bytes: 64 << 20,
                ..Limits::default()
            }),
            buffer: BytesMut::new(),
        };
        connection
            .send(
                Frame::new(Command::Connect)
                    .header("accept-version", "1.2")
                    .header("host", "/"),
            )
            .await?;
        let reply = connection.next().await?;
        if reply.command != Command::Connected {
            return Err(format!("CONNECT refused: {:?}", reply.get("message")).into());
        }
        Ok(connection)
    }

    /// Subscribes `id` to `destination` and waits for the RECEIPT.
    pub async fn subscribe_confirmed(
        &mut self,
        id: &str,
        destination: &str,
        receipt: &str,
    ) -> Fallible<()> {
        self.send(
            Frame::new(Command::Subscribe)
                .header("id", id)
                .header("destination", destination)
                .header("receipt", receipt),
        )
        .await?;
        match self.next().await? {
            frame if frame.command == Command::Receipt => Ok(()),
            frame => Err(format!("SUBSCRIBE not confirmed: {:?}", frame.get("message")).into()),
        }
    }

    /// Queues a frame (written at the next flush or read).
    pub async fn send(&mut self, frame: Frame) -> Fallible<()> {
        self.ws
            .feed(Message::Binary(encode(&frame, Version::V1_2)))
            .await?;
        Ok(())
    }

    /// Writes what is queued.
    pub async fn flush(&mut self) -> Fallible<()> {
        self.ws.flush().await?;
        Ok(())
    }

    /// The next frame from the broker.
    pub async fn next(&mut self) -> Fallible<Frame> {
        self.flush().await?;
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buffer)? {
                return Ok(frame);
            }
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => self.buffer.extend_from_slice(&b),
                Some(Ok(Message::Text(t))) => self.buffer.extend_from_slice(t.as_bytes()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("connection closed".into()),
            }
        }
    }
}
