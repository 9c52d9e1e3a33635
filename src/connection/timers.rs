//! A connection's clocks: heart-beats both ways (an EOL; over WebSocket, a
//! ping for a late client when `stomp.heartbeat_ping` is on), the CONNECT deadline and
//! the expiry of the client's token.

use super::{Connection, End};
use crate::session::heartbeat::Heartbeat;
use crate::session::{CloseReason, SessionError};
use std::future::Future;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout, Instant};

/// The longest a heart-beat or ping write may wait for a full socket: the
/// loop cannot see shutdown or overflow meanwhile, and intervals go up to
/// `stomp.heartbeat_max`.
const BEAT_WRITE_LIMIT: Duration = Duration::from_secs(10);
/// A heart-beat goes out this much (at most a quarter of the interval)
/// before the promised interval is over, so that timer and scheduling delays
/// on a busy machine never make it late at the client.
const BEAT_EARLY: Duration = Duration::from_millis(250);

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// The next moment a timer needs attention, if any does. No clock is
    /// read: this runs at every turn of the loop.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        if self.session.version().is_none() {
            return Some(self.connect_deadline);
        }
        let Heartbeat {
            send_every,
            expect_every,
        } = self.session.heartbeat();
        // Intervals are clamped to stomp.heartbeat_max, but an Instant
        // overflow must never be what ends a connection: checked adds.
        let send_at = send_every.and_then(|every| self.last_write.checked_add(beat_after(every)));
        let check_at = expect_every.and_then(|every| {
            if self.ping_late && !self.pinged {
                self.last_read.checked_add(every)
            } else {
                self.last_read.checked_add(cut_off_after(every, self.grace))
            }
        });
        [send_at, check_at, self.session.expires_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// [`next_timer`](Self::next_timer), or an hour from now when no
    /// timer is set (the loop's sleep needs a deadline).
    pub(super) fn next_timer_or_far(&self) -> Instant {
        self.next_timer()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// Acts on whatever timer is due; `Some` ends the loop.
    pub(super) async fn on_timer(&mut self) -> Option<End> {
        let now = Instant::now();
        if self.session.version().is_none() {
            if now >= self.connect_deadline {
                return Some(End::Error(SessionError::new(
                    "no CONNECT frame received in time",
                    CloseReason::PolicyViolation,
                )));
            }
            return None;
        }
        // OWASP: a long-lived socket must not outlive its credentials.
        if self.session.expires_at().is_some_and(|at| now >= at) {
            return Some(End::Error(SessionError::new(
                "token expired",
                CloseReason::PolicyViolation,
            )));
        }
        let Heartbeat {
            send_every,
            expect_every,
        } = self.session.heartbeat();
        if let Some(every) = expect_every {
            let silent = now.saturating_duration_since(self.last_read);
            if silent >= cut_off_after(every, self.grace) {
                return Some(End::Error(SessionError::new(
                    format!(
                        "heart-beat timeout: no data from the client for {} ms",
                        silent.as_millis()
                    ),
                    CloseReason::PolicyViolation,
                )));
            }
            if self.ping_late && silent >= every && !self.pinged {
                // Late, perhaps a throttled background tab: a WebSocket ping
                // is answered by the browser itself, and a pong counts.
                self.pinged = true;
                if !within(self.transport.ping(), every).await {
                    return Some(End::ClientGone);
                }
            }
        }
        if let Some(every) = send_every {
            if now.saturating_duration_since(self.last_write) >= beat_after(every) {
                if !within(self.transport.heartbeat(), every).await {
                    return Some(End::ClientGone);
                }
                self.last_write = now;
            }
        }
        None
    }
}

/// Whether a heart-beat or ping went out before the client's socket stayed
/// full for its interval (at most [`BEAT_WRITE_LIMIT`]): a client that
/// cannot take a heart-beat in that time is gone.
async fn within(write: impl Future<Output = io::Result<()>>, interval: Duration) -> bool {
    let limit = interval.min(BEAT_WRITE_LIMIT);
    matches!(timeout(limit, write).await, Ok(Ok(())))
}

/// When a heart-beat is due after our last write: [`BEAT_EARLY`] (at most a
/// quarter of the interval) before the interval is over.
fn beat_after(every: Duration) -> Duration {
    every - (every / 4).min(BEAT_EARLY)
}

/// How long a client may be silent: its interval × `stomp.heartbeat_grace`
/// (validated 1 to 100; intervals clamped to `heartbeat_max`, so no overflow;
/// an absurd product still saturates instead of panicking).
fn cut_off_after(every: Duration, grace: f64) -> Duration {
    Duration::try_from_secs_f64(every.as_secs_f64() * grace).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_go_out_a_little_early() {
        assert_eq!(
            beat_after(Duration::from_secs(1)),
            Duration::from_millis(750)
        );
        assert_eq!(
            beat_after(Duration::from_secs(10)),
            Duration::from_millis(9750)
        );
        assert_eq!(
            beat_after(Duration::from_millis(100)),
            Duration::from_millis(75)
        );
    }

    #[test]
    fn cut_off_never_overflows() {
        assert_eq!(
            cut_off_after(Duration::from_secs(1), 2.0),
            Duration::from_secs(2)
        );
        assert_eq!(cut_off_after(Duration::MAX, 100.0), Duration::MAX);
    }
}
