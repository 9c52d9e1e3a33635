//! Short, header-safe text for numbers the broker makes up: message ids and
//! feed epochs go out in every MESSAGE, so each byte saved is saved per
//! delivery.

/// The digits of [`push_base62`]: ASCII letters and digits only, so that a
/// value needs no STOMP escaping and is safe in URLs and SSE event ids.
const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Appends `n` in base 62 (most significant digit first; `0` for zero).
pub fn push_base62(out: &mut String, mut n: u64) {
    // u64::MAX has 11 base-62 digits.
    let mut digits = [0u8; 11];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = DIGITS[(n % 62) as usize];
        n /= 62;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base62(n: u64) -> String {
        let mut out = String::new();
        push_base62(&mut out, n);
        out
    }

    #[test]
    fn base62_digits() {
        assert_eq!(base62(0), "0");
        assert_eq!(base62(61), "z");
        assert_eq!(base62(62), "10");
        assert_eq!(base62(u64::MAX), "LygHa16AHYF");
    }

    #[test]
    fn distinct_numbers_give_distinct_text() {
        let all: std::collections::HashSet<String> = (0..10_000).map(base62).collect();
        assert_eq!(all.len(), 10_000);
    }
}
