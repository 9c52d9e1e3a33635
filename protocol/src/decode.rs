//! Decoding in two steps: `check` finds a whole frame and enforces the limits,
//! `parse` builds the [`Frame`] from a buffer `check` accepted.
//!
//! STOMP 1.2, "Augmented BNF":
//! ```text
//! frame  = command EOL *( header EOL ) EOL *OCTET NULL *( EOL )
//! EOL    = [CR] LF
//! header = header-name ":" header-value
//! ```
//! EOLs before a frame are heart-beats and are skipped by [`Decoder::decode`].

use crate::error::DecodeError;
use crate::frame::{Command, Frame, Headers};
use crate::header::{unescape, Escaping};
use crate::limits::Limits;
use crate::version::Version;
use bytes::{Buf, Bytes, BytesMut};
use nom::branch::alt;
use nom::bytes::streaming::{tag, take_till, take_till1};
use nom::sequence::{separated_pair, terminated};
use nom::{IResult, Parser};

type Input<'a> = &'a [u8];

/// `EOL = [CR] LF`
fn eol(input: Input) -> IResult<Input, Input> {
    alt((tag(&b"\r\n"[..]), tag(&b"\n"[..]))).parse(input)
}

/// `command = client-command | server-command`, then EOL.
fn command_line(input: Input) -> IResult<Input, Input> {
    terminated(take_till1(|b| b == b'\r' || b == b'\n'), eol).parse(input)
}

/// `header = header-name ":" header-value`, then EOL.
///
/// The value runs to the end of the line: a `:` inside a value is kept as
/// data rather than refused, as 1.0 clients put URLs and times in values.
fn header_line(input: Input) -> IResult<Input, (Input, Input)> {
    terminated(
        separated_pair(
            take_till1(|b| b == b':' || b == b'\r' || b == b'\n'),
            tag(&b":"[..]),
            take_till(|b| b == b'\r' || b == b'\n'),
        ),
        eol,
    )
    .parse(input)
}

/// A frame's command and raw (still escaped) headers, and where its body starts.
struct Head<'a> {
    command: Command,
    headers: Vec<(Input<'a>, Input<'a>)>,
    body_start: usize,
}

/// Parses command and header lines, enforcing the head limits as it goes so
/// that an endless line or header list is refused without being buffered.
fn head<'a>(input: Input<'a>, limits: &Limits) -> Result<Head<'a>, DecodeError> {
    let over = |limit: &'static str, max: usize| DecodeError::TooLarge { limit, max };
    let (mut rest, command) = match command_line(input) {
        Ok(done) => done,
        Err(nom::Err::Incomplete(_)) if input.len() > limits.max_command_bytes + 1 => {
            return Err(over("max_command_bytes", limits.max_command_bytes))
        }
        Err(nom::Err::Incomplete(_)) => return Err(DecodeError::Incomplete),
        Err(_) => return Err(DecodeError::invalid("expected a command line")),
    };
    if command.len() > limits.max_command_bytes {
        return Err(over("max_command_bytes", limits.max_command_bytes));
    }
    let command = Command::from_bytes(command).ok_or_else(|| {
        DecodeError::invalid(format!(
            "unknown command '{}'",
            String::from_utf8_lossy(command)
        ))
    })?;

    let mut headers = Vec::new();
    loop {
        let consumed = input.len() - rest.len();
        if consumed > limits.max_header_bytes {
            return Err(over("max_header_bytes", limits.max_header_bytes));
        }
        match eol(rest) {
            Ok((body, _)) => {
                return Ok(Head {
                    command,
                    headers,
                    body_start: input.len() - body.len(),
                })
            }
            Err(nom::Err::Incomplete(_)) => return Err(DecodeError::Incomplete),
            Err(_) => {}
        }
        match header_line(rest) {
            Ok((next, (name, value))) => {
                let line_len = name.len() + 1 + value.len();
                if line_len > limits.max_header_line_bytes {
                    return Err(over("max_header_line_bytes", limits.max_header_line_bytes));
                }
                if headers.len() == limits.max_headers {
                    return Err(over("max_headers", limits.max_headers));
                }
                headers.push((name, value));
                rest = next;
            }
            Err(nom::Err::Incomplete(_)) => {
                if rest.len() > limits.max_header_line_bytes + 1 {
                    return Err(over("max_header_line_bytes", limits.max_header_line_bytes));
                }
                if consumed + rest.len() > limits.max_header_bytes {
                    return Err(over("max_header_bytes", limits.max_header_bytes));
                }
                return Err(DecodeError::Incomplete);
            }
            Err(_) => {
                return Err(DecodeError::invalid(
                    "header line is not 'name:value' (or a CR is not followed by LF)",
                ))
            }
        }
    }
}

/// Reads `content-length` from the first header of that name
/// (STOMP 1.2: "If a client or a server receives repeated frame header
/// entries, only the first header entry SHOULD be used").
fn content_length(head: &Head, limits: &Limits) -> Result<Option<usize>, DecodeError> {
    let Some((_, raw)) = head.headers.iter().find(|(n, _)| *n == b"content-length") else {
        return Ok(None);
    };
    if raw.is_empty() || raw.len() > 20 || !raw.iter().all(u8::is_ascii_digit) {
        return Err(DecodeError::invalid(
            "content-length is not a non-negative decimal number",
        ));
    }
    let length = raw.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    match usize::try_from(length) {
        Ok(length) if length <= limits.max_body_bytes => Ok(Some(length)),
        _ => Err(DecodeError::TooLarge {
            limit: "max_body_bytes",
            max: limits.max_body_bytes,
        }),
    }
}

/// Finds the length, up to and including its NUL, of the frame at the start
/// of `input` (which must not start with heart-beat EOLs).
///
/// `Err(Incomplete)` means "read more". Limits are checked before the body is
/// waited for: an announced `content-length` over `max_body_bytes` fails at
/// once, and a body without one fails as soon as more than the limit is buffered.
pub fn check(input: &[u8], limits: &Limits) -> Result<usize, DecodeError> {
    let head = head(input, limits)?;
    let body = &input[head.body_start..];
    let body_len = match content_length(&head, limits)? {
        Some(length) => {
            // `content-length` is authoritative: NULs inside are data.
            match body.get(length) {
                None => return Err(DecodeError::Incomplete),
                Some(0) => length,
                Some(_) => {
                    return Err(DecodeError::invalid(
                        "no NUL after the content-length octets of the body",
                    ))
                }
            }
        }
        None => {
            let window = &body[..body.len().min(limits.max_body_bytes + 1)];
            match window.iter().position(|&b| b == 0) {
                Some(length) => length,
                None if body.len() > limits.max_body_bytes => {
                    return Err(DecodeError::TooLarge {
                        limit: "max_body_bytes",
                        max: limits.max_body_bytes,
                    })
                }
                None => return Err(DecodeError::Incomplete),
            }
        }
    };
    if body_len > 0 && !head.command.may_have_body() {
        return Err(DecodeError::invalid(format!(
            "{} frames must not have a body",
            head.command.as_str()
        )));
    }
    Ok(head.body_start + body_len + 1)
}

/// Builds the frame from `frame`, a buffer of exactly the length [`check`]
/// returned. Headers are unescaped by the rules of `version` and the command;
/// the body is a zero-copy slice of `frame`.
pub fn parse(frame: Bytes, version: Version, limits: &Limits) -> Result<Frame, DecodeError> {
    let (command, headers, body_start) = {
        let head = head(&frame, limits)?;
        let escaping = Escaping::for_frame(version, head.command);
        let headers = head
            .headers
            .iter()
            .map(|(name, value)| Ok((unescape(name, escaping)?, unescape(value, escaping)?)))
            .collect::<Result<Headers, DecodeError>>()?;
        (head.command, headers, head.body_start)
    };
    let body_end = frame.len().saturating_sub(1).max(body_start);
    Ok(Frame {
        command,
        headers,
        body: frame.slice(body_start..body_end),
    })
}

/// How many bytes of heart-beat EOLs (`\n` or `\r\n`) start `input`. A lone
/// trailing CR is not counted: its LF may still arrive.
fn heartbeat_prefix(input: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match input.get(at..) {
            Some([b'\n', ..]) => at += 1,
            Some([b'\r', b'\n', ..]) => at += 2,
            _ => return at,
        }
    }
}

/// A streaming decoder for one connection's received bytes.
///
/// Feed it the connection's buffer after every read. It consumes heart-beats
/// and whole frames from the front and leaves a partial frame in place.
#[derive(Debug, Clone)]
pub struct Decoder {
    limits: Limits,
    version: Version,
}

impl Decoder {
    /// A decoder that unescapes as STOMP 1.2 until told the negotiated version.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            version: Version::V1_2,
        }
    }

    /// Switches header unescaping to the negotiated version.
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes the next whole frame from the front of `buffer`.
    ///
    /// `Ok(None)`: no whole frame yet (heart-beats were consumed); read more.
    /// `Err`: the connection's input is unusable and must be closed.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let skip = heartbeat_prefix(buffer);
        buffer.advance(skip);
        if buffer.is_empty() || &buffer[..] == b"\r" {
            // Nothing, or half of a CRLF heart-beat: wait for the rest.
            return Ok(None);
        }
        match check(buffer, &self.limits) {
            Ok(length) => {
                let frame = buffer.split_to(length).freeze();
                parse(frame, self.version, &self.limits).map(Some)
            }
            Err(DecodeError::Incomplete) => Ok(None),
            Err(error) => Err(error),
        }
    }
}
