//! Fuzzes header unescaping under every escaping rule: never panics, and
//! whatever unescapes re-escapes to something that unescapes the same.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stomp_protocol::{escape_into, unescape, Escaping};

fuzz_target!(|data: &[u8]| {
    for escaping in [Escaping::None, Escaping::V1_1, Escaping::V1_2] {
        let Ok(text) = unescape(data, escaping) else { continue };
        let mut again = BytesMut::new();
        if escape_into(&text, escaping, &mut again) {
            assert_eq!(unescape(&again, escaping).as_deref(), Ok(text.as_str()));
        }
    }
});
