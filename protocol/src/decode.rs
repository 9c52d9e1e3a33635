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
        Err(nom::Err::Incomplete(_)) => {
            unfinished_line(input, 0, limits)?;
            return Err(DecodeError::Incomplete);
        }
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
            Err(nom::Err::Incomplete(_)) => {
                unfinished_line(input, consumed, limits)?;
                return Err(DecodeError::Incomplete);
            }
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
                unfinished_line(input, consumed, limits)?;
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

/// The limit that the unfinished last line of a head breaks, if any, so that
/// an endless line is refused before it is buffered. The line starts at
/// `line_start` (0: the command line) and holds no LF; [`head`] and the
/// [`Decoder`] (which skips [`head`] while no line ends) share this one rule.
fn unfinished_line(input: &[u8], line_start: usize, limits: &Limits) -> Result<(), DecodeError> {
    let over = |limit: &'static str, max: usize| DecodeError::TooLarge { limit, max };
    if line_start == 0 {
        if input.len() > limits.max_command_bytes + 1 {
            return Err(over("max_command_bytes", limits.max_command_bytes));
        }
        return Ok(());
    }
    let line = input.get(line_start..).unwrap_or_default();
    if line.is_empty() || line == b"\r" {
        // Perhaps the blank line that ends the head: no header line yet.
        return Ok(());
    }
    if line.len() > limits.max_header_line_bytes + 1 {
        return Err(over("max_header_line_bytes", limits.max_header_line_bytes));
    }
    if input.len() > limits.max_header_bytes {
        return Err(over("max_header_bytes", limits.max_header_bytes));
    }
    Ok(())
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
    let body = BodyStart {
        command: head.command,
        start: head.body_start,
        content_length: content_length(&head, limits)?,
    };
    let mut scanned = body.start;
    frame_end(input, &body, &mut scanned, limits)
}

/// What [`check`] learnt from a whole head: enough to find the frame's end.
#[derive(Debug, Clone, Copy)]
struct BodyStart {
    command: Command,
    /// Where the body starts in the frame.
    start: usize,
    /// The first `content-length`, if any.
    content_length: Option<usize>,
}

/// Finds the frame's length after its head was checked. Without
/// `content-length`, the bytes before `scanned` are known to hold no NUL;
/// the search resumes there and moves `scanned` on, so a body that arrives
/// in many pieces is searched once.
fn frame_end(
    input: &[u8],
    body: &BodyStart,
    scanned: &mut usize,
    limits: &Limits,
) -> Result<usize, DecodeError> {
    let buffered = input.len().saturating_sub(body.start);
    let body_len = match body.content_length {
        Some(length) => {
            // `content-length` is authoritative: NULs inside are data.
            match body
                .start
                .checked_add(length)
                .and_then(|end| input.get(end))
            {
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
            // The NUL may be at most `max_body_bytes` into the body.
            let window_end = input.len().min(
                body.start
                    .saturating_add(limits.max_body_bytes)
                    .saturating_add(1),
            );
            let from = (*scanned).max(body.start).min(window_end);
            let window = input.get(from..window_end).unwrap_or_default();
            match window.iter().position(|&b| b == 0) {
                Some(at) => from + at - body.start,
                None if buffered > limits.max_body_bytes => {
                    return Err(DecodeError::TooLarge {
                        limit: "max_body_bytes",
                        max: limits.max_body_bytes,
                    })
                }
                None => {
                    *scanned = window_end;
                    return Err(DecodeError::Incomplete);
                }
            }
        }
    };
    if body_len > 0 && !body.command.may_have_body() {
        return Err(DecodeError::invalid(format!(
            "{} frames must not have a body",
            body.command.as_str()
        )));
    }
    Ok(body.start + body_len + 1)
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

/// How far the [`Decoder`] got with the frame at the front of its buffer, so
/// that every byte is examined a bounded number of times however the frame
/// is split across reads (a 1 MiB body in 1-byte WebSocket messages would
/// otherwise be searched from its start a million times).
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Bytes from the frame's start already examined: for line ends while
    /// the head is unfinished, for the NUL in the body after that.
    scanned: usize,
    /// Where the head's unfinished line starts (0: the command line).
    line_start: usize,
    /// Set once the head was checked whole.
    body: Option<BodyStart>,
}

/// A streaming decoder for one connection's received bytes.
///
/// Feed it the connection's buffer after every read: the same buffer each
/// time, with new bytes appended. It consumes heart-beats and whole frames
/// from the front and leaves a partial frame in place. It remembers how far
/// it examined that partial frame, so decoding costs time linear in the
/// bytes received however they are split.
#[derive(Debug, Clone)]
pub struct Decoder {
    limits: Limits,
    version: Version,
    progress: Progress,
    /// Bytes examined so far (unit tests assert the cost is linear).
    #[cfg(test)]
    examined: usize,
}

impl Decoder {
    /// A decoder that unescapes as STOMP 1.2 until told the negotiated version.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            version: Version::V1_2,
            progress: Progress::default(),
            #[cfg(test)]
            examined: 0,
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
        if buffer.len() < self.progress.scanned {
            // Not the buffer fed before (the caller cleared it): start afresh.
            self.progress = Progress::default();
        }
        if self.progress.scanned == 0 {
            let skip = heartbeat_prefix(buffer);
            buffer.advance(skip);
            if buffer.is_empty() || &buffer[..] == b"\r" {
                // Nothing, or half of a CRLF heart-beat: wait for the rest.
                return Ok(None);
            }
        }
        match self.frame_length(buffer) {
            Ok(length) => {
                self.progress = Progress::default();
                let frame = buffer.split_to(length).freeze();
                #[cfg(test)]
                {
                    self.examined += length;
                }
                parse(frame, self.version, &self.limits).map(Some)
            }
            Err(DecodeError::Incomplete) => Ok(None),
            Err(error) => {
                self.progress = Progress::default();
                Err(error)
            }
        }
    }

    /// [`check`], resumed where the last call stopped.
    fn frame_length(&mut self, input: &[u8]) -> Result<usize, DecodeError> {
        let progress = &mut self.progress;
        let body = match progress.body {
            Some(body) => body,
            None => {
                // The head is parsed again only when a CR or LF is among the
                // new bytes or just before them: a line may have ended, a CR
                // may be followed by something other than LF, or a line has
                // begun (its first byte can make it invalid: an empty header
                // name). Otherwise head() would again find the same unfinished
                // line, and only that line's limits can trip. Lines are
                // bounded by `max_headers`, so the head is parsed at most
                // about 3 × max_headers times however it is split.
                let from = progress.scanned.saturating_sub(1);
                let new = input.get(from..).unwrap_or_default();
                let line_end = new.iter().position(|&b| b == b'\r' || b == b'\n');
                #[cfg(test)]
                {
                    self.examined += line_end.map_or(new.len(), |at| at + 1);
                }
                if line_end.is_none() {
                    unfinished_line(input, progress.line_start, &self.limits)?;
                    progress.scanned = input.len();
                    return Err(DecodeError::Incomplete);
                }
                let head = head(input, &self.limits);
                #[cfg(test)]
                {
                    // The head parser reads the head, or all when unfinished.
                    self.examined += head.as_ref().map_or(input.len(), |h| h.body_start);
                }
                let head = match head {
                    Ok(head) => head,
                    Err(DecodeError::Incomplete) => {
                        // An unfinished head is within the head limits, so
                        // this look back for the last LF is short.
                        if let Some(at) = new.iter().rposition(|&b| b == b'\n') {
                            progress.line_start = from + at + 1;
                        }
                        progress.scanned = input.len();
                        return Err(DecodeError::Incomplete);
                    }
                    Err(error) => return Err(error),
                };
                let body = BodyStart {
                    command: head.command,
                    start: head.body_start,
                    content_length: content_length(&head, &self.limits)?,
                };
                progress.body = Some(body);
                progress.scanned = body.start;
                body
            }
        };
        #[cfg(test)]
        let before = progress.scanned;
        let end = frame_end(input, &body, &mut progress.scanned, &self.limits);
        #[cfg(test)]
        {
            self.examined += self.progress.scanned.saturating_sub(before);
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `piece` bytes; returns the frames' count and
    /// the bytes the decoder examined.
    fn feed(wire: &[u8], piece: usize, limits: Limits) -> (usize, usize) {
        let mut decoder = Decoder::new(limits);
        let mut buffer = BytesMut::new();
        let mut frames = 0;
        for chunk in wire.chunks(piece) {
            buffer.extend_from_slice(chunk);
            while let Some(_frame) = decoder.decode(&mut buffer).expect("decodes") {
                frames += 1;
            }
        }
        (frames, decoder.examined)
    }

    #[test]
    fn a_body_fed_byte_by_byte_is_searched_once() {
        let limits = Limits {
            max_body_bytes: 1 << 20,
            ..Limits::default()
        };
        let mut wire = b"SEND\ndestination:/topic/a\n\n".to_vec();
        wire.resize(wire.len() + (1 << 20), b'x');
        wire.push(0);
        let (frames, examined) = feed(&wire, 1, limits);
        assert_eq!(frames, 1);
        // Searching the body from its start on every byte would be ~5 × 10^11.
        assert!(examined < 4 * wire.len(), "examined {examined} bytes");
    }

    #[test]
    fn a_head_fed_byte_by_byte_is_parsed_once_per_line() {
        let mut wire = b"SEND\n".to_vec();
        for i in 0..60 {
            wire.extend_from_slice(format!("h{i}:{}\r\n", "v".repeat(1000)).as_bytes());
        }
        wire.extend_from_slice(b"\r\n\0");
        let (frames, examined) = feed(&wire, 1, Limits::default());
        assert_eq!(frames, 1);
        // Each line's CR, LF and first byte parse the head so far once:
        // about 3 × lines × head / 2; parsing on every byte would be
        // hundreds of times that.
        let lines = 62;
        assert!(
            examined < 2 * lines * wire.len(),
            "examined {examined} bytes for a {}-byte head",
            wire.len()
        );
    }

    #[test]
    fn many_frames_in_one_buffer_cost_linear_time() {
        let one = b"SEND\ndestination:/topic/a\n\nhello\0\n";
        let wire = one.repeat(10_000);
        let (frames, examined) = feed(&wire, wire.len(), Limits::default());
        assert_eq!(frames, 10_000);
        assert!(examined < 4 * wire.len(), "examined {examined} bytes");
    }

    #[test]
    fn an_endless_header_line_is_refused_without_reparsing() {
        let limits = Limits::default();
        let mut decoder = Decoder::new(limits);
        let mut buffer = BytesMut::from(&b"SEND\nx:"[..]);
        let mut result = Ok(None);
        for _ in 0..=limits.max_header_line_bytes {
            buffer.extend_from_slice(b"y");
            result = decoder.decode(&mut buffer);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(
            result,
            Err(DecodeError::TooLarge {
                limit: "max_header_line_bytes",
                max: limits.max_header_line_bytes
            })
        );
        assert!(decoder.examined < 4 * buffer.len());
    }
}
