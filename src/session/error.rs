//! The session's error: everything needed to write the ERROR frame and to
//! close the connection fittingly.

use stomp_protocol::DecodeError;

use crate::model::close::CloseReason;

/// An error that ends the session with an ERROR frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionError {
    /// The ERROR frame's `message` header: what was wrong, in a line.
    pub message: String,
    /// An optional body with more detail.
    pub detail: Option<String>,
    /// The `receipt` of the frame that failed, echoed as `receipt-id`.
    pub receipt_id: Option<String>,
    /// A `version` header (only for failed version negotiation).
    pub version: Option<String>,
    /// How to close afterwards.
    pub close: CloseReason,
}

impl SessionError {
    /// A protocol error with this message.
    pub fn protocol(message: impl Into<String>) -> Self {
        SessionError::new(message, CloseReason::ProtocolError)
    }

    /// An error with this message and close reason.
    pub fn new(message: impl Into<String>, close: CloseReason) -> Self {
        SessionError {
            message: message.into(),
            detail: None,
            receipt_id: None,
            version: None,
            close,
        }
    }

    /// A required header is missing.
    pub fn missing_header(command: &str, header: &str) -> Self {
        SessionError::protocol(format!("{command} frame requires a '{header}' header"))
    }

    /// Adds a body.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Echoes the failed frame's receipt.
    pub fn with_receipt(mut self, receipt: Option<String>) -> Self {
        if self.receipt_id.is_none() {
            self.receipt_id = receipt;
        }
        self
    }
}

impl From<DecodeError> for SessionError {
    fn from(error: DecodeError) -> Self {
        let close = match error {
            DecodeError::TooLarge { .. } => CloseReason::TooBig,
            _ => CloseReason::ProtocolError,
        };
        SessionError::new(error.to_string(), close)
    }
}
