//! Header value escaping, which differs by version and by command.
//!
//! STOMP 1.2, "Value Encoding": `\r` → CR, `\n` → LF, `\c` → `:`, `\\` → `\`;
//! any other escape is a fatal protocol error. STOMP 1.1 has the same rules
//! without `\r`. STOMP 1.0 has no escaping at all, and neither do CONNECT,
//! STOMP and CONNECTED frames in any version.

use crate::error::DecodeError;
use crate::frame::Command;
use crate::version::Version;
use bytes::{BufMut, BytesMut};

/// Which escape rules apply to a frame's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escaping {
    /// Bytes as they are (STOMP 1.0; CONNECT/STOMP/CONNECTED in every version).
    None,
    /// `\n \c \\` (STOMP 1.1).
    V1_1,
    /// `\r \n \c \\` (STOMP 1.2).
    V1_2,
}

impl Escaping {
    /// The rules for `command` in a session of `version`.
    pub fn for_frame(version: Version, command: Command) -> Escaping {
        if !command.escapes_headers() {
            return Escaping::None;
        }
        match version {
            Version::V1_0 => Escaping::None,
            Version::V1_1 => Escaping::V1_1,
            Version::V1_2 => Escaping::V1_2,
        }
    }
}

/// Decodes one header name or value: validates UTF-8, then undoes escapes.
///
/// Grammar (STOMP 1.2): `header-name = 1*<any OCTET except CR or LF or ":">`,
/// with `\r`, `\n`, `\c` and `\\` the only escapes.
pub fn unescape(raw: &[u8], escaping: Escaping) -> Result<String, DecodeError> {
    let text =
        std::str::from_utf8(raw).map_err(|_| DecodeError::invalid("header is not valid UTF-8"))?;
    if escaping == Escaping::None || !text.contains('\\') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some('r') if escaping == Escaping::V1_2 => out.push('\r'),
            Some(other) => {
                return Err(DecodeError::invalid(format!(
                    "undefined escape sequence \\{other} in header"
                )))
            }
            None => return Err(DecodeError::invalid("header ends in a lone backslash")),
        }
    }
    Ok(out)
}

/// Appends `value` escaped by `escaping` to `out`.
///
/// Returns `false`, writing nothing, when the value cannot be represented:
/// a CR or LF under [`Escaping::None`] (it would end the header line), or a CR
/// under [`Escaping::V1_1`]. The caller then leaves that header out.
pub fn escape_into(value: &str, escaping: Escaping, out: &mut BytesMut) -> bool {
    let needs_work = value
        .bytes()
        .any(|b| matches!(b, b'\r' | b'\n' | b':' | b'\\'));
    if !needs_work {
        out.put_slice(value.as_bytes());
        return true;
    }
    match escaping {
        Escaping::None => {
            if value.bytes().any(|b| b == b'\r' || b == b'\n') {
                return false;
            }
            out.put_slice(value.as_bytes());
        }
        Escaping::V1_1 if value.contains('\r') => return false,
        Escaping::V1_1 | Escaping::V1_2 => {
            for b in value.bytes() {
                match b {
                    b'\r' => out.put_slice(b"\\r"),
                    b'\n' => out.put_slice(b"\\n"),
                    b':' => out.put_slice(b"\\c"),
                    b'\\' => out.put_slice(b"\\\\"),
                    other => out.put_u8(other),
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_value_encoding_escapes_decode() {
        let got = unescape(br"a\r\n\c\\b", Escaping::V1_2).unwrap();
        assert_eq!(got, "a\r\n:\\b");
    }

    #[test]
    fn spec_undefined_escape_is_fatal() {
        assert!(matches!(
            unescape(br"a\tb", Escaping::V1_2),
            Err(DecodeError::Invalid(_))
        ));
        assert!(unescape(br"a\", Escaping::V1_2).is_err());
    }

    #[test]
    fn spec_1_1_has_no_cr_escape() {
        assert!(unescape(br"\r", Escaping::V1_1).is_err());
        assert_eq!(unescape(br"\n", Escaping::V1_1).unwrap(), "\n");
    }

    #[test]
    fn spec_connect_headers_are_literal() {
        assert_eq!(unescape(br"pa\css", Escaping::None).unwrap(), r"pa\css");
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert!(unescape(&[0x66, 0xff], Escaping::None).is_err());
    }

    #[test]
    fn escape_round_trips_and_refuses_unrepresentable() {
        let mut out = BytesMut::new();
        assert!(escape_into("a:b\nc\\d\re", Escaping::V1_2, &mut out));
        assert_eq!(&out[..], br"a\cb\nc\\d\re");
        assert_eq!(unescape(&out, Escaping::V1_2).unwrap(), "a:b\nc\\d\re");
        assert!(!escape_into("x\ny", Escaping::None, &mut BytesMut::new()));
        assert!(!escape_into("x\ry", Escaping::V1_1, &mut BytesMut::new()));
    }
}
