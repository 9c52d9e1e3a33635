//! The nouns every layer shares, below all of them: messages, destination
//! names, connection ids, close reasons. Nothing here knows of sessions,
//! the router or a transport.

pub mod ack_mode;
pub mod close;
pub mod compact;
pub mod destination;
pub mod frames;
pub mod message;
pub mod session_id;
