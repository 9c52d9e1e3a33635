//! Why a connection ends: one reason, mapped by each transport to its own
//! close code.

/// How a connection ends after an ERROR. The transport maps these to its own
/// codes (for WebSocket: 1002, 1008, 1009, 1007, 1001, 1011).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client broke the protocol.
    ProtocolError,
    /// The client broke a policy (a limit other than size, a timeout, too slow).
    PolicyViolation,
    /// Something the client sent was too big.
    TooBig,
    /// A text message was not valid UTF-8.
    InvalidData,
    /// The server is shutting down.
    GoingAway,
    /// The server could not go on (an internal failure).
    InternalError,
}
