//! One encoded frame on its way to a connection, and the close order a
//! final frame carries.

use crate::model::close::CloseReason;
use crate::model::frames;
use bytes::Bytes;
use stomp_protocol::Version;

/// One encoded STOMP frame: exactly one WebSocket message.
#[derive(Debug, Clone)]
pub struct OutFrame {
    /// The frame's bytes, ending in NUL. Shared between subscribers.
    pub bytes: Bytes,
    /// The whole frame is valid UTF-8 and may go out as a text message.
    pub text: bool,
    /// Set on a final frame (an ERROR from the router or the store writer):
    /// close the connection after it, as this says.
    pub close: Option<Box<CloseAfter>>,
}

impl OutFrame {
    /// A frame that is neither final nor droppable.
    pub fn new(bytes: Bytes, text: bool) -> Self {
        OutFrame {
            bytes,
            text,
            close: None,
        }
    }

    /// A final ERROR saying `message` (with `receipt_id`, if any): the
    /// connection closes after it with `reason`.
    pub fn final_error(
        version: Version,
        message: String,
        receipt_id: Option<&str>,
        reason: CloseReason,
    ) -> Self {
        let bytes = frames::error(
            version,
            &frames::ErrorFrame {
                message: &message,
                receipt_id,
                ..frames::ErrorFrame::default()
            },
        );
        OutFrame {
            bytes,
            text: true,
            close: Some(Box::new(CloseAfter { reason, message })),
        }
    }
}

/// The close order a final frame carries: after writing it, the connection
/// closes with this reason (its close code) and message (its close text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseAfter {
    /// The close code's meaning.
    pub reason: CloseReason,
    /// The close reason text (the ERROR's `message`).
    pub message: String,
}
