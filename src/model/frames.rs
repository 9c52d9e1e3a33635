//! The frames the broker writes of its own accord, RECEIPT and ERROR, encoded
//! in this one place whoever sends them (session, router, store completion).

use bytes::Bytes;
use stomp_protocol::{Command, FrameEncoder, Version};

/// A RECEIPT for `receipt_id`.
pub fn receipt(version: Version, receipt_id: &str) -> Bytes {
    receipt_with(version, receipt_id, None)
}

/// A RECEIPT frame with one more header (a SUBSCRIBE's `x-recovered`).
pub fn receipt_with(version: Version, receipt_id: &str, header: Option<(&str, &str)>) -> Bytes {
    let mut frame = FrameEncoder::begin(Command::Receipt, version, 64 + receipt_id.len());
    frame.header("receipt-id", receipt_id);
    if let Some((name, value)) = header {
        frame.header(name, value);
    }
    frame.finish(false, b"")
}

/// What an ERROR frame says.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorFrame<'a> {
    /// The `message` header: what was wrong, in a line.
    pub message: &'a str,
    /// The failed frame's `receipt`, echoed as `receipt-id`.
    pub receipt_id: Option<&'a str>,
    /// A `version` header (only for failed version negotiation).
    pub versions: Option<&'a str>,
    /// A plain-text body with more detail.
    pub detail: Option<&'a str>,
}

/// An ERROR frame. Before CONNECT no escaping is agreed: pass 1.0 then.
pub fn error(version: Version, error: &ErrorFrame) -> Bytes {
    let detail = error.detail.unwrap_or("");
    let mut frame = FrameEncoder::begin(
        Command::Error,
        version,
        128 + error.message.len() + detail.len(),
    );
    frame.header("message", error.message);
    if let Some(receipt) = error.receipt_id {
        frame.header("receipt-id", receipt);
    }
    if let Some(versions) = error.versions {
        frame.header("version", versions);
    }
    if !detail.is_empty() {
        frame.header("content-type", "text/plain");
    }
    frame.finish(true, detail.as_bytes())
}
