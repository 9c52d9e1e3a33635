//! STOMP protocol versions, their negotiation and their WebSocket subprotocol names.

use std::fmt;

/// A STOMP protocol version. Ordered: `V1_0 < V1_1 < V1_2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escaping, no heart-beats, no NACK.
    V1_0,
    /// STOMP 1.1: escapes `\n \c \\`, heart-beats, NACK.
    V1_1,
    /// STOMP 1.2: adds the `\r` escape, ACK by `id`, CRLF line ends.
    V1_2,
}

impl Version {
    /// Every version we speak, oldest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The version number as written in `version` and `accept-version` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// The WebSocket subprotocol that names this version (`v12.stomp`, ...).
    pub fn subprotocol(self) -> &'static str {
        match self {
            Version::V1_0 => "v10.stomp",
            Version::V1_1 => "v11.stomp",
            Version::V1_2 => "v12.stomp",
        }
    }

    /// Parses a subprotocol name; `None` for anything that is not ours.
    pub fn from_subprotocol(name: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.subprotocol() == name)
    }

    /// Parses one version number such as `1.2`.
    pub fn from_number(number: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.as_str() == number)
    }

    /// Chooses the highest version in an `accept-version` list that is also
    /// in `allowed`. A missing header means 1.0 (STOMP 1.1, "Protocol Negotiation").
    pub fn negotiate(accept_version: Option<&str>, allowed: &[Version]) -> Option<Version> {
        let offered: Vec<Version> = match accept_version {
            None => vec![Version::V1_0],
            Some(list) => list
                .split(',')
                .filter_map(|v| Version::from_number(v.trim()))
                .collect(),
        };
        offered.into_iter().filter(|v| allowed.contains(v)).max()
    }

    /// The comma list of `versions` for an ERROR's `version` header.
    pub fn list(versions: &[Version]) -> String {
        let names: Vec<&str> = versions.iter().map(|v| v.as_str()).collect();
        names.join(",")
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_highest_common_version() {
        let all = Version::ALL;
        assert_eq!(
            Version::negotiate(Some("1.0,1.1,1.2"), &all),
            Some(Version::V1_2)
        );
        assert_eq!(
            Version::negotiate(Some("1.2,1.0"), &all[..2]),
            Some(Version::V1_0)
        );
        assert_eq!(Version::negotiate(None, &all), Some(Version::V1_0));
        assert_eq!(Version::negotiate(Some("2.0"), &all), None);
        assert_eq!(Version::negotiate(Some(""), &all), None);
    }

    #[test]
    fn subprotocol_names_round_trip() {
        for v in Version::ALL {
            assert_eq!(Version::from_subprotocol(v.subprotocol()), Some(v));
        }
        assert_eq!(Version::from_subprotocol("mqtt"), None);
    }
}
