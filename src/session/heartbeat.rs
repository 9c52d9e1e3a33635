//! Heart-beat negotiation (STOMP 1.1+, "Heart-beating").
//!
//! CONNECT carries `heart-beat:<cx>,<cy>`: the client can send every `cx` ms
//! and wants to hear from us every `cy` ms. The spec's rule is: we send every
//! max(sx, cy) and expect data every max(cx, sy), zero on either side
//! switching that direction off. Our `sx` and `sy` are floors
//! (`stomp.heartbeat_send`, `stomp.heartbeat_receive`), so the client sets the
//! pace and the floors only stop it from asking for a flood; a ceiling
//! (`stomp.heartbeat_max`) keeps any u64 a client writes out of `Duration`
//! and `Instant` arithmetic. CONNECTED announces the intervals we settled on,
//! which the client's own max() then reproduces.

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

impl Heartbeat {
    /// CONNECTED's `heart-beat` value: `<send>,<expect>` in ms, 0 for off.
    pub fn header_value(&self) -> String {
        let millis = |every: Option<Duration>| {
            every.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        };
        format!("{},{}", millis(self.send_every), millis(self.expect_every))
    }
}

/// The server's side of the negotiation, from `[stomp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatPolicy {
    /// The shortest interval we send at; zero: we never send heart-beats.
    pub send_floor: Duration,
    /// The shortest interval we check clients at; zero: we never check.
    pub receive_floor: Duration,
    /// The longest interval in either direction; larger requests are clamped.
    pub ceiling: Duration,
}

/// Parses CONNECT's `heart-beat` header: two non-negative integers.
pub fn parse_client_header(value: Option<&str>) -> Result<(u64, u64), SessionError> {
    let Some(value) = value else {
        return Ok((0, 0));
    };
    let parsed = value
        .split_once(',')
        .and_then(|(cx, cy)| Some((millis(cx)?, millis(cy)?)));
    parsed.ok_or_else(|| {
        SessionError::protocol(format!(
            "heart-beat header '{value}' is not two non-negative integers 'cx,cy'"
        ))
    })
}

/// One interval in ms; digits beyond u64 saturate (the ceiling clamps them anyway).
fn millis(text: &str) -> Option<u64> {
    match text.parse::<u64>() {
        Ok(ms) => Some(ms),
        Err(error) if *error.kind() == std::num::IntErrorKind::PosOverflow => Some(u64::MAX),
        Err(_) => None,
    }
}

/// Combines the client's `(cx, cy)` (ms) with our policy.
pub fn negotiate(client: (u64, u64), policy: HeartbeatPolicy) -> Heartbeat {
    let (cx, cy) = client;
    // max(client, floor), then at most the ceiling; off when either is zero.
    let interval = |client_ms: u64, floor: Duration| {
        (client_ms != 0 && !floor.is_zero()).then(|| {
            Duration::from_millis(client_ms)
                .max(floor)
                .min(policy.ceiling)
        })
    };
    Heartbeat {
        send_every: interval(cy, policy.send_floor),
        expect_every: interval(cx, policy.receive_floor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const HOUR: Duration = Duration::from_secs(3600);

    fn policy(send_floor: Duration, receive_floor: Duration) -> HeartbeatPolicy {
        HeartbeatPolicy {
            send_floor,
            receive_floor,
            ceiling: HOUR,
        }
    }

    #[test]
    fn spec_heart_beat_negotiation_takes_the_larger_interval() {
        let hb = negotiate((1000, 5000), policy(10 * SECOND, 2 * SECOND));
        assert_eq!(hb.send_every, Some(10 * SECOND));
        assert_eq!(hb.expect_every, Some(2 * SECOND));
        assert_eq!(hb.header_value(), "10000,2000");
    }

    #[test]
    fn spec_heart_beat_zero_on_either_side_is_off() {
        assert_eq!(
            negotiate((0, 5000), policy(SECOND, SECOND)).expect_every,
            None
        );
        assert_eq!(
            negotiate((5000, 0), policy(SECOND, SECOND)).send_every,
            None
        );
        let no_sending = policy(Duration::ZERO, SECOND);
        assert_eq!(negotiate((5000, 5000), no_sending).send_every, None);
        assert_eq!(
            negotiate((0, 0), policy(SECOND, SECOND)).header_value(),
            "0,0"
        );
    }

    #[test]
    fn the_client_sets_the_pace_above_the_floor() {
        let hb = negotiate((0, 1000), policy(SECOND, SECOND));
        assert_eq!(hb.send_every, Some(SECOND));
        assert_eq!(hb.header_value(), "1000,0");
        // stompjs' default.
        let hb = negotiate((10_000, 10_000), policy(SECOND, SECOND));
        assert_eq!(hb.header_value(), "10000,10000");
        // Faster than the floor is not granted.
        let hb = negotiate((10, 10), policy(SECOND, SECOND));
        assert_eq!(hb.header_value(), "1000,1000");
    }

    #[test]
    fn absurd_values_are_clamped_to_the_ceiling() {
        let hb = negotiate((u64::MAX, u64::MAX), policy(SECOND, SECOND));
        assert_eq!(hb.send_every, Some(HOUR));
        assert_eq!(hb.expect_every, Some(HOUR));
        assert_eq!(hb.header_value(), "3600000,3600000");
    }

    #[test]
    fn header_parsing() {
        assert_eq!(parse_client_header(None).unwrap(), (0, 0));
        assert_eq!(
            parse_client_header(Some("10000,10000")).unwrap(),
            (10_000, 10_000)
        );
        assert_eq!(
            parse_client_header(Some("18446744073709551615,18446744073709551615")).unwrap(),
            (u64::MAX, u64::MAX)
        );
        assert!(parse_client_header(Some("10000")).is_err());
        assert!(parse_client_header(Some("-1,5")).is_err());
        assert!(parse_client_header(Some("a,b")).is_err());
        assert_eq!(
            parse_client_header(Some("99999999999999999999999,0")).unwrap(),
            (u64::MAX, 0)
        );
    }
}
