//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load
//! balancer writes before the client's first byte, naming the client's
//! address. A listener with `proxy_protocol = true` reads it first (before
//! TLS, WebSocket or STOMP), so that per-address limits, login delays and
//! logs see the client instead of the balancer.
//!
//! Parsing is pure and bounded (v1: one line of at most 107 bytes; v2: 16
//! bytes then at most [`MAX_V2_LENGTH`]), with no allocation: the header
//! lands in stack buffers. Reading takes exactly the header's bytes from the
//! socket, never one more, so that what follows reaches the TLS or HTTP code
//! untouched. Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The 12 bytes that open a v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included (the spec's own bound).
const V1_MAX: usize = 107;
/// The largest v2 length (addresses plus TLVs) we accept. The spec allows
/// 65535; balancers send a few hundred bytes at most (AWS adds a VPC
/// endpoint TLV), and a bound keeps a hostile header from costing time.
pub const MAX_V2_LENGTH: usize = 4096;
/// The largest v2 address block (two UNIX paths of 108 bytes); TLVs after it
/// are read and discarded.
const V2_ADDRESSES_MAX: usize = 216;

/// Who the header says the connection is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// A client's address (v1 `TCP4`/`TCP6`, v2 `PROXY` over TCP or UDP).
    Client(SocketAddr),
    /// The balancer speaking for itself (v2 `LOCAL`, e.g. its health
    /// checks) or an address it cannot tell (v1 `UNKNOWN`, v2 `UNSPEC` or
    /// UNIX): the connection's own address stands.
    Local,
}

/// Why a header was refused.
#[derive(Debug)]
pub enum ProxyHeaderError {
    /// The connection does not start with a PROXY protocol signature.
    Missing,
    /// It does, but the header breaks the grammar.
    Malformed(&'static str),
    /// The connection ended or failed while the header was read.
    Io(std::io::Error),
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyHeaderError::Missing => write!(f, "no PROXY protocol header"),
            ProxyHeaderError::Malformed(why) => write!(f, "malformed PROXY protocol header: {why}"),
            ProxyHeaderError::Io(error) => write!(f, "reading the PROXY protocol header: {error}"),
        }
    }
}

impl From<std::io::Error> for ProxyHeaderError {
    fn from(error: std::io::Error) -> Self {
        ProxyHeaderError::Io(error)
    }
}

/// Reads one header, v1 or v2, from the start of `stream`, consuming exactly
/// its bytes. The caller bounds the time (the handshake timeout).
pub async fn read_header(stream: &mut TcpStream) -> Result<Proxied, ProxyHeaderError> {
    // Both versions' shortest header is longer than 12 bytes ("PROXY
    // UNKNOWN\r\n" is 15), so these 12 are always the header's.
    let mut start = [0u8; 12];
    stream.read_exact(&mut start).await?;
    if start == V2_SIGNATURE {
        read_v2(stream).await
    } else if start.starts_with(b"PROXY ") {
        read_v1(stream, start).await
    } else {
        Err(ProxyHeaderError::Missing)
    }
}

/// The rest of a v1 line after its first 12 bytes. Peeks for the CRLF and
/// takes only up to it; what was peeked without one is taken before peeking
/// again, so that each peek waits for new bytes.
async fn read_v1(stream: &mut TcpStream, start: [u8; 12]) -> Result<Proxied, ProxyHeaderError> {
    let mut line = [0u8; V1_MAX];
    line[..12].copy_from_slice(&start);
    let mut filled = 12;
    loop {
        if filled == V1_MAX {
            return Err(ProxyHeaderError::Malformed("v1 line longer than 107 bytes"));
        }
        let peeked = stream.peek(&mut line[filled..]).await?;
        if peeked == 0 {
            return Err(ProxyHeaderError::Io(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        // The CR may be the last byte already taken.
        let search_from = filled - 1;
        let end = line[search_from..filled + peeked]
            .windows(2)
            .position(|pair| pair == b"\r\n")
            .map(|at| search_from + at + 2);
        let take = end.unwrap_or(filled + peeked);
        stream.read_exact(&mut line[filled..take]).await?;
        filled = take;
        if end.is_some() {
            return parse_v1(&line[..filled]);
        }
    }
}

/// The rest of a v2 header after its signature.
async fn read_v2(stream: &mut TcpStream) -> Result<Proxied, ProxyHeaderError> {
    let mut fixed = [0u8; 4];
    stream.read_exact(&mut fixed).await?;
    let [version_command, family, high, low] = fixed;
    let length = usize::from(u16::from_be_bytes([high, low]));
    if length > MAX_V2_LENGTH {
        return Err(ProxyHeaderError::Malformed("v2 length over 4096 bytes"));
    }
    let mut addresses = [0u8; V2_ADDRESSES_MAX];
    let kept = length.min(V2_ADDRESSES_MAX);
    stream.read_exact(&mut addresses[..kept]).await?;
    // TLVs (and anything past the addresses) are not used: discard them.
    let mut left = length - kept;
    let mut discard = [0u8; 256];
    while left > 0 {
        let chunk = left.min(discard.len());
        stream.read_exact(&mut discard[..chunk]).await?;
        left -= chunk;
    }
    parse_v2(version_command, family, &addresses[..kept])
}

/// Parses a whole v1 line, CRLF included:
///
/// `"PROXY" SP ( "TCP4" | "TCP6" ) SP src SP dst SP sport SP dport CRLF`,
/// or `"PROXY" SP "UNKNOWN" [anything] CRLF`.
pub fn parse_v1(line: &[u8]) -> Result<Proxied, ProxyHeaderError> {
    let malformed = ProxyHeaderError::Malformed;
    if line.len() > V1_MAX {
        return Err(malformed("v1 line longer than 107 bytes"));
    }
    let body = line
        .strip_prefix(b"PROXY ")
        .and_then(|rest| rest.strip_suffix(b"\r\n"))
        .ok_or(ProxyHeaderError::Missing)?;
    let body = std::str::from_utf8(body).map_err(|_| malformed("v1 line is not ASCII"))?;
    if body == "UNKNOWN" || body.starts_with("UNKNOWN ") {
        return Ok(Proxied::Local);
    }
    let mut fields = body.split(' ');
    let family = fields.next().unwrap_or("");
    let (Some(source), Some(destination), Some(source_port), Some(destination_port), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(malformed(
            "v1 line needs exactly: family src dst sport dport",
        ));
    };
    let ip: IpAddr = match family {
        "TCP4" => source
            .parse::<Ipv4Addr>()
            .map_err(|_| malformed("v1 TCP4 source is not an IPv4 address"))?
            .into(),
        "TCP6" => source
            .parse::<Ipv6Addr>()
            .map_err(|_| malformed("v1 TCP6 source is not an IPv6 address"))?
            .into(),
        _ => return Err(malformed("v1 family is not TCP4, TCP6 or UNKNOWN")),
    };
    // Ports: decimal without a leading zero, 0..=65535.
    let port_ok = |port: &str| {
        !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && (port == "0" || !port.starts_with('0'))
    };
    if !port_ok(source_port) || !port_ok(destination_port) {
        return Err(malformed("v1 port is not a decimal number"));
    }
    let port: u16 = source_port
        .parse()
        .map_err(|_| malformed("v1 port is over 65535"))?;
    destination_port
        .parse::<u16>()
        .map_err(|_| malformed("v1 port is over 65535"))?;
    destination
        .parse::<IpAddr>()
        .ok()
        .filter(|destination| destination.is_ipv4() == ip.is_ipv4())
        .ok_or(malformed("v1 destination is not an address of the family"))?;
    Ok(Proxied::Client(SocketAddr::new(ip, port)))
}

/// Parses a v2 header's version/command byte, family byte and address block
/// (the first `min(len, 216)` bytes after the 16 fixed ones).
pub fn parse_v2(
    version_command: u8,
    family: u8,
    addresses: &[u8],
) -> Result<Proxied, ProxyHeaderError> {
    let malformed = ProxyHeaderError::Malformed;
    if version_command >> 4 != 2 {
        return Err(malformed("v2 version is not 2"));
    }
    match version_command & 0x0f {
        // LOCAL: the balancer's own connection; the address block is ignored.
        0x0 => return Ok(Proxied::Local),
        0x1 => {}
        _ => return Err(malformed("v2 command is neither LOCAL nor PROXY")),
    }
    match family >> 4 {
        // AF_INET: source, destination, source port, destination port.
        0x1 => {
            let block: &[u8; 12] = addresses
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(malformed("v2 IPv4 address block is short"))?;
            let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            let port = u16::from_be_bytes([block[8], block[9]]);
            Ok(Proxied::Client(SocketAddr::new(ip.into(), port)))
        }
        // AF_INET6: 16 + 16 + 2 + 2.
        0x2 => {
            let block: &[u8; 36] = addresses
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(malformed("v2 IPv6 address block is short"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&block[..16]);
            let port = u16::from_be_bytes([block[32], block[33]]);
            Ok(Proxied::Client(SocketAddr::new(
                Ipv6Addr::from(octets).into(),
                port,
            )))
        }
        // AF_UNSPEC or AF_UNIX: no address we can use.
        0x0 | 0x3 => Ok(Proxied::Local),
        _ => Err(malformed("v2 address family is unknown")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn client(text: &str) -> Proxied {
        Proxied::Client(text.parse().expect("socket address"))
    }

    /// A v2 header: signature, version 2 with `command`, `family`, then `block`.
    pub(crate) fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(family);
        let length = u16::try_from(block.len()).expect("short block");
        header.extend_from_slice(&length.to_be_bytes());
        header.extend_from_slice(block);
        header
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n").expect("valid"),
            client("192.0.2.7:56324")
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n").expect("valid"),
            client("[2001:db8::1]:1")
        );
        assert_eq!(
            parse_v1(b"PROXY UNKNOWN\r\n").expect("valid"),
            Proxied::Local
        );
        assert_eq!(
            parse_v1(b"PROXY UNKNOWN ffff:: 1.2.3.4 1 2\r\n").expect("valid"),
            Proxied::Local
        );
    }

    #[test]
    fn v1_refuses_what_breaks_the_grammar() {
        for line in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n"[..],
            b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443 9\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 2001:db8::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 0443 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 -1 443\r\n",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 1 443\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 443\n",
        ] {
            assert!(parse_v1(line).is_err(), "{}", String::from_utf8_lossy(line));
        }
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(106, b'x');
        long.extend_from_slice(b"\r\n");
        assert!(parse_v1(&long).is_err(), "108 bytes");
    }

    #[test]
    fn v2_proxy_local_and_families() {
        let ipv4 = [192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb];
        assert_eq!(
            parse_v2(0x21, 0x11, &ipv4).expect("valid"),
            client("192.0.2.7:56324")
        );
        // UDP over IPv4 has the same block.
        assert_eq!(
            parse_v2(0x21, 0x12, &ipv4).expect("valid"),
            client("192.0.2.7:56324")
        );
        let mut ipv6 = [0u8; 36];
        ipv6[0] = 0x20;
        ipv6[1] = 0x01;
        ipv6[15] = 1;
        ipv6[32..34].copy_from_slice(&443u16.to_be_bytes());
        assert_eq!(
            parse_v2(0x21, 0x21, &ipv6).expect("valid"),
            client("[2001::1]:443")
        );
        assert_eq!(parse_v2(0x20, 0x00, &[]).expect("local"), Proxied::Local);
        assert_eq!(parse_v2(0x21, 0x00, &[]).expect("unspec"), Proxied::Local);
        assert!(parse_v2(0x11, 0x11, &ipv4).is_err(), "version 1");
        assert!(parse_v2(0x22, 0x11, &ipv4).is_err(), "command 2");
        assert!(parse_v2(0x21, 0x11, &ipv4[..11]).is_err(), "short block");
        assert!(parse_v2(0x21, 0x21, &ipv4).is_err(), "short IPv6 block");
        assert!(parse_v2(0x21, 0x41, &ipv4).is_err(), "family 4");
    }

    /// Writes `bytes` to a fresh loopback connection in `pieces` and reads a
    /// header from the other end; returns it and the bytes after it.
    async fn read_from(bytes: Vec<u8>, pieces: usize) -> (Result<Proxied, String>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let writer = tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let step = bytes.len().div_ceil(pieces).max(1);
            for chunk in bytes.chunks(step) {
                stream.write_all(chunk).await.expect("write");
                stream.flush().await.expect("flush");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            stream.shutdown().await.expect("shutdown");
        });
        let (mut stream, _) = listener.accept().await.expect("accept");
        let header = read_header(&mut stream).await.map_err(|e| e.to_string());
        let mut rest = Vec::new();
        if header.is_ok() {
            stream.read_to_end(&mut rest).await.expect("rest");
        }
        writer.await.expect("writer");
        (header, rest)
    }

    #[tokio::test]
    async fn reading_takes_exactly_the_header_whole_or_in_pieces() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n".to_vec();
        let mut tlv = vec![192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb];
        tlv.extend_from_slice(&[0x04; 300]); // a TLV-sized tail, discarded
        let mut v2_bytes = v2(0x1, 0x11, &tlv);
        v2_bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        for pieces in [1, 3, 50] {
            for bytes in [&v1, &v2_bytes] {
                let (header, rest) = read_from(bytes.clone(), pieces).await;
                assert_eq!(header, Ok(client("192.0.2.7:56324")), "{pieces}");
                assert_eq!(rest, b"GET / HTTP/1.1\r\n", "{pieces}");
            }
        }
        let (header, rest) = read_from(b"PROXY UNKNOWN\r\nX".to_vec(), 1).await;
        assert_eq!((header, rest), (Ok(Proxied::Local), b"X".to_vec()));
    }

    #[tokio::test]
    async fn reading_refuses_missing_long_and_oversized_headers() {
        let (header, _) = read_from(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1).await;
        assert_eq!(header, Err("no PROXY protocol header".into()));
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(200, b'1');
        let (header, _) = read_from(long, 2).await;
        assert!(header.expect_err("too long").contains("107"));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let (header, _) = read_from(huge, 1).await;
        assert!(header.expect_err("too large").contains("4096"));
        let (header, _) = read_from(b"PROXY TCP4 1.2".to_vec(), 1).await;
        assert!(header.is_err(), "ends early");
    }
}
