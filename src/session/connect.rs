//! CONNECT and STOMP: version negotiation, heart-beats, CONNECTED.

use super::heartbeat::{negotiate, parse_client_header, Heartbeat};
use super::{CloseReason, Flow, Session, SessionError, State};
use crate::auth::Credentials;
use crate::outbound::OutFrame;
use crate::router::RouterCommand;
use stomp_protocol::{Command, Frame, FrameEncoder, Version};
use tracing::debug;

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
        };
        let identity = match self.context.auth.authenticate(credentials).await {
            Ok(identity) => identity,
            Err(refusal) => {
                // Slows guessing down; only this connection waits.
                tokio::time::sleep(refusal.delay).await;
                return Err(SessionError::new(
                    refusal.message,
                    CloseReason::PolicyViolation,
                ));
            }
        };
        self.permissions = identity.permissions;
        self.principal = crate::router::Principal::of(identity.name.as_deref());

        // Heart-beating exists from 1.1 on; a 1.0 session has none.
        let (server_send, server_receive) = if version == Version::V1_0 {
            (0, 0)
        } else {
            (
                millis(stomp.heartbeat_send),
                millis(stomp.heartbeat_receive),
            )
        };
        self.heartbeat = if version == Version::V1_0 {
            Heartbeat::default()
        } else {
            negotiate(
                parse_client_header(frame.get("heart-beat"))?,
                server_send,
                server_receive,
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
        self.client_id = frame.get("client-id").map(str::to_owned).or(identity.name);
        // Never the passcode or a token: only who connected.
        debug!(
            version = %version,
            client = self.client_id.as_deref().unwrap_or("anonymous"),
            heartbeat = ?self.heartbeat,
            "connected"
        );

        let mut connected = FrameEncoder::begin(Command::Connected, version, 128);
        connected.header("version", version.as_str());
        connected.header("session", &self.id.to_string());
        connected.header(
            "server",
            &format!("{}/{}", stomp.server_name, env!("CARGO_PKG_VERSION")),
        );
        connected.header("heart-beat", &format!("{server_send},{server_receive}"));
        self.push(OutFrame {
            bytes: connected.finish(false, b""),
            text: true,
            close: None,
        })?;
        Ok(Flow::Continue)
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
