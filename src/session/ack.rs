//! ACK and NACK: header checks per version.
//!
//! Topic deliveries are not redelivered, so an ACK or NACK of one has nothing
//! to settle; queue semantics (redelivery, strict unknown-id errors) arrive
//! with queues. Receipts are honoured.

use super::send::transactions_unsupported;
use super::{required, Flow, Session, SessionError};
use stomp_protocol::{Command, Frame, Version};

impl Session {
    pub(super) async fn on_ack(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let version = self.connected_version();
        if frame.command == Command::Nack && version == Version::V1_0 {
            return Err(SessionError::protocol("NACK is not part of STOMP 1.0"));
        }
        match version {
            // 1.2 acknowledges by the MESSAGE's `ack` header, sent back as `id`.
            Version::V1_2 => required(frame, "id")?,
            // 1.0 and 1.1 acknowledge by `message-id` (1.1 adds `subscription`).
            Version::V1_0 | Version::V1_1 => required(frame, "message-id")?,
        };
        if frame.get("transaction").is_some() {
            return Err(transactions_unsupported());
        }
        self.receipt(frame).await?;
        Ok(Flow::Continue)
    }
}
