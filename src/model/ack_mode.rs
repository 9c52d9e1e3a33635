//! SUBSCRIBE's `ack` header: how a subscription's deliveries are settled.

/// SUBSCRIBE's `ack` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Acknowledged when handed to the connection's writer.
    Auto,
    /// Acknowledged by ACK, cumulatively.
    Client,
    /// Acknowledged by ACK, one message at a time.
    ClientIndividual,
}

impl AckMode {
    /// Parses the header value; `None` for anything undefined.
    pub fn from_header(value: Option<&str>) -> Option<AckMode> {
        match value {
            None | Some("auto") => Some(AckMode::Auto),
            Some("client") => Some(AckMode::Client),
            Some("client-individual") => Some(AckMode::ClientIndividual),
            Some(_) => None,
        }
    }

    /// Whether MESSAGE frames carry an `ack` header for the client to echo.
    pub fn expects_ack(self) -> bool {
        self != AckMode::Auto
    }
}
