//! The STOMP 1.0, 1.1 and 1.2 frame codec of stomphub.
//!
//! Bytes in, frames out, and back: this crate does no I/O. A session keeps one
//! [`bytes::BytesMut`] of received bytes and calls [`Decoder::decode`] until it
//! answers `Ok(None)` (read more). The decoder first *checks* that a whole frame
//! is buffered and within the [`Limits`], and only then *parses* it, so nothing
//! large is built from a frame that will be refused.
//!
//! nom is an implementation detail: its error types never leave this crate.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod decode;
mod encode;
mod error;
mod frame;
mod header;
mod limits;
mod version;

pub use decode::{check, parse, Decoder};
pub use encode::{encode, FrameEncoder};
pub use error::DecodeError;
pub use frame::{Command, Frame, Headers};
pub use header::{escape_into, unescape, Escaping};
pub use limits::Limits;
pub use version::Version;
