//! CONNECT and STOMP: version negotiation, heart-beats, CONNECTED.

use super::heartbeat::{negotiate, parse_client_header, Heartbeat, HeartbeatPolicy};
use super::{CloseReason, Flow, Session, SessionError, State};
use crate::auth::Credentials;
use crate::outbound::OutFrame;
use crate::router::RouterCommand;
use stomp_protocol::{Command, Frame, FrameEncoder, Version};
use tracing::{debug, info};

impl Session {
    pub(super) async fn on_connect(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let stomp = &self.context.config.stomp;
        let allowed: Vec<Version> = stomp
            .versions
            .iter()
            .copied()
            .filter(|v| self.allowed_versions.contains(v))
            .collect();
        let accept_version = frame.get("accept-version");
        let Some(version) = Version::negotiate(accept_version, &allowed) else {
            let mut error =
                SessionError::protocol("unsupported protocol version").with_detail(format!(
                    "Supported protocol versions are {}; the client accepts {}",
                    Version::list(&allowed),
                    accept_version.unwrap_or("1.0 (no accept-version header)")
                ));
            error.version = Some(Version::list(&allowed));
            return Err(error);
        };

        let credentials = Credentials {
            login: frame.get("login"),
            passcode: frame.get("passcode"),
            bearer: self.client.bearer.as_deref(),
            ip: self.client.ip,
            origin: self.client.origin.as_deref(),
        };
        let identity = self
            .context
            .auth
            .load_full()
            .authenticate(credentials)
            .await
            .map_err(|message| {
                let metrics = &self.context.metrics;
                metrics.auth_failed(credentials.method());
                if metrics.may_log_failure() {
                    // Who and from where, never the passcode or token.
                    tracing::info!(
                        login = credentials.login.unwrap_or(""),
                        address = %credentials.ip,
                        method = credentials.method().label(),
                        %message,
                        "login failed"
                    );
                }
                SessionError::new(message, CloseReason::PolicyViolation)
            })?;
        self.authenticated = Some(super::reload::Authenticated::of(&credentials, &identity));
        self.permissions = identity.permissions;
        self.publish_limiter = self
            .context
            .publish_rules
            .load()
            .limiter(identity.name.as_deref(), tokio::time::Instant::now());
        // The connection's timer ends the session when its token expires.
        self.expires_at = identity.expires.map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::time::Instant::now() + left.min(std::time::Duration::from_secs(1 << 32))
        });
        self.principal = crate::router::Principal::of(identity.name.as_deref());

        // Heart-beating exists from 1.1 on; a 1.0 session has none.
        self.heartbeat = if version == Version::V1_0 {
            Heartbeat::default()
        } else {
            negotiate(
                parse_client_header(frame.get("heart-beat"))?,
                HeartbeatPolicy {
                    send_floor: stomp.heartbeat_send,
                    receive_floor: stomp.heartbeat_receive,
                    ceiling: stomp.heartbeat_max,
                },
            )
        };

        let outbound = self.outbound.clone().ok_or_else(|| {
            SessionError::new("the session has ended", CloseReason::ProtocolError)
        })?;
        self.route(RouterCommand::Attach {
            session: self.id,
            outbound,
            version,
        })
        .await?;
        self.state = State::Connected(version);
        if let Some(stats) = &self.stats {
            let user = identity.name.clone();
            let _ = stats
                .connected
                .set(crate::metrics::connections::Connected { version, user });
        }
        // Never the passcode or a token: only who connected, from where.
        if self.context.metrics.may_log_connection() {
            info!(
                session = self.id.0,
                user = identity.name.as_deref().unwrap_or("anonymous"),
                address = %self.client.ip,
                transport = self.stats.as_ref().map_or("-", |stats| stats.transport),
                version = %version,
                "connected"
            );
        }
        debug!(heartbeat = ?self.heartbeat, "heart-beats negotiated");
        self.client_id = frame.get("client-id").map(str::to_owned).or(identity.name);

        let mut connected = FrameEncoder::begin(Command::Connected, version, 128);
        connected.header("version", version.as_str());
        connected.header("session", &self.id.to_string());
        connected.header(
            "server",
            &format!("{}/{}", stomp.server_name, env!("CARGO_PKG_VERSION")),
        );
        // What we settled on: the client's max(cx, sy), max(sx, cy) gives
        // the same intervals back.
        connected.header("heart-beat", &self.heartbeat.header_value());
        // Opt-in only: a client must say its parser takes several frames
        // from one WebSocket message (RabbitMQ never sends them so, and
        // some clients expect one frame per message).
        self.pack_frames = frame.get("x-pack-frames") == Some("true");
        if self.pack_frames {
            connected.header("x-pack-frames", "true");
        }
        self.push(OutFrame {
            bytes: connected.finish(false, b""),
            text: true,
            close: None,
        })?;
        Ok(Flow::Continue)
    }
}
