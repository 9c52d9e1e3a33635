//! The decoder's one error type, and the text each error puts in an ERROR frame.

use std::fmt;

/// Why a buffer could not (yet) be decoded into a frame.
///
/// `Incomplete` is not a failure: the caller reads more bytes and tries again.
/// The other variants are fatal to the connection: the server answers with an
/// ERROR frame whose `message` header is this error's `Display` text, then closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer holds only part of a frame; read more.
    Incomplete,
    /// A configured limit was exceeded. `limit` names the limit (as in the
    /// config file), `max` its value.
    TooLarge {
        /// The name of the limit, e.g. `max_body_bytes`.
        limit: &'static str,
        /// The configured maximum.
        max: usize,
    },
    /// The bytes break the STOMP grammar; the text says how.
    Invalid(String),
}

impl DecodeError {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        DecodeError::Invalid(reason.into())
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete => f.write_str("incomplete frame"),
            DecodeError::TooLarge { limit, max } => {
                write!(f, "frame too large: {limit} is {max}")
            }
            DecodeError::Invalid(reason) => write!(f, "malformed frame: {reason}"),
        }
    }
}

impl std::error::Error for DecodeError {}
