//! Size limits that the decoder enforces while checking, before buffering a frame whole.

/// Limits on one received frame. The broker fills these from `broker.toml`;
/// exceeding any of them is [`crate::DecodeError::TooLarge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line, in bytes (without its EOL).
    pub max_command_bytes: usize,
    /// Most header lines in one frame.
    pub max_headers: usize,
    /// Longest header line, in bytes (name, colon and value, without the EOL).
    pub max_header_line_bytes: usize,
    /// Most bytes of command and headers together.
    pub max_header_bytes: usize,
    /// Largest body, in bytes; also the largest `content-length` accepted.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_command_bytes: 64,
            max_headers: 64,
            max_header_line_bytes: 8 * 1024,
            max_header_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
        }
    }
}

impl Limits {
    /// The largest frame these limits admit, in bytes: what a transport's own
    /// message-size limit must at least allow.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_header_bytes + self.max_body_bytes + 2
    }
}
