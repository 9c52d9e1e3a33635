//! Options set on every accepted TCP socket, before any handshake.
//!
//! - `TCP_NODELAY`: frames go out whole and at once; Nagle would only add
//!   latency.
//! - TCP keepalive: a client whose machine or network vanished (a half-open
//!   connection) sends no FIN. Heart-beats find it when they are on; with
//!   heart-beats off, and for connections still in the handshake, keepalive
//!   probes do: after [`KEEPALIVE_IDLE`] without traffic, a probe every
//!   [`KEEPALIVE_INTERVAL`], and after [`KEEPALIVE_RETRIES`] unanswered ones
//!   the kernel fails the socket and the connection ends, at most about two
//!   minutes after the peer's last sign of life.

use socket2::{SockRef, TcpKeepalive};
use std::time::Duration;
use tokio::net::TcpStream;

/// Silence on a connection before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between unanswered keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the kernel gives the connection up.
pub const KEEPALIVE_RETRIES: u32 = 5;

/// Sets `TCP_NODELAY` and TCP keepalive on an accepted socket.
pub fn configure(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    #[cfg(target_os = "linux")]
    let keepalive = keepalive
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn an_accepted_socket_gets_nodelay_and_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let _client = TcpStream::connect(address).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let socket = SockRef::from(&accepted);
        assert!(!socket.keepalive().expect("SO_KEEPALIVE"));

        configure(&accepted).expect("configure");
        assert!(accepted.nodelay().expect("TCP_NODELAY"));
        assert!(socket.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(socket.tcp_keepalive_time().expect("idle"), KEEPALIVE_IDLE);
        assert_eq!(
            socket.tcp_keepalive_interval().expect("interval"),
            KEEPALIVE_INTERVAL
        );
        assert_eq!(
            socket.tcp_keepalive_retries().expect("retries"),
            KEEPALIVE_RETRIES
        );
    }
}
