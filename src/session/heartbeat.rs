//! Heart-beat negotiation (STOMP 1.1+, "Heart-beating").
//!
//! CONNECT carries `heart-beat:<cx>,<cy>`, CONNECTED ours `<sx>,<sy>`. We
//! send every max(sx, cy) ms and expect data every max(cx, sy) ms; zero on
//! either side switches that direction off.

use super::error::SessionError;
use std::time::Duration;

/// The negotiated intervals; `None` means "off".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// We must send something at least this often.
    pub send_every: Option<Duration>,
    /// The client promised to send something at least this often.
    pub expect_every: Option<Duration>,
}

/// Parses CONNECT's `heart-beat` header: two non-negative integers.
pub fn parse_client_header(value: Option<&str>) -> Result<(u64, u64), SessionError> {
    let Some(value) = value else {
        return Ok((0, 0));
    };
    let parsed = value
        .split_once(',')
        .and_then(|(cx, cy)| Some((cx.parse::<u64>().ok()?, cy.parse::<u64>().ok()?)));
    parsed.ok_or_else(|| {
        SessionError::protocol(format!(
            "heart-beat header '{value}' is not two non-negative integers 'cx,cy'"
        ))
    })
}

/// Combines the client's `(cx, cy)` with ours (`sx`, `sy`, in ms).
pub fn negotiate(client: (u64, u64), server_send_ms: u64, server_receive_ms: u64) -> Heartbeat {
    let (cx, cy) = client;
    let interval = |a: u64, b: u64| (a != 0 && b != 0).then(|| Duration::from_millis(a.max(b)));
    Heartbeat {
        send_every: interval(server_send_ms, cy),
        expect_every: interval(cx, server_receive_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_heart_beat_negotiation() {
        let hb = negotiate((1000, 5000), 10_000, 2000);
        assert_eq!(hb.send_every, Some(Duration::from_millis(10_000)));
        assert_eq!(hb.expect_every, Some(Duration::from_millis(2000)));
        assert_eq!(negotiate((0, 5000), 1000, 1000).expect_every, None);
        assert_eq!(negotiate((5000, 0), 1000, 1000).send_every, None);
        assert_eq!(negotiate((5000, 5000), 0, 1000).send_every, None);
    }

    #[test]
    fn header_parsing() {
        assert_eq!(parse_client_header(None).unwrap(), (0, 0));
        assert_eq!(
            parse_client_header(Some("10000,10000")).unwrap(),
            (10_000, 10_000)
        );
        assert!(parse_client_header(Some("10000")).is_err());
        assert!(parse_client_header(Some("-1,5")).is_err());
        assert!(parse_client_header(Some("a,b")).is_err());
    }
}
