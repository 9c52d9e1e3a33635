//! How values are written in `broker.toml` beyond plain TOML: durations
//! (`"250ms"`, `"10s"`, `"5m"` or milliseconds) and STOMP version lists.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;
use stomp_protocol::Version;

/// Reads a duration written as `"250ms"`, `"10s"`, `"5m"` or a number of milliseconds.
pub(super) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Millis(u64),
        Text(String),
    }
    let text = match Written::deserialize(deserializer)? {
        Written::Millis(ms) => return Ok(Duration::from_millis(ms)),
        Written::Text(text) => text,
    };
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "'{text}' is not a duration like \"10s\" or \"250ms\""
        ))
    })?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => number
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| serde::de::Error::custom(format!("'{text}' is too long"))),
        _ => Err(serde::de::Error::custom(format!(
            "'{text}' has no unit ms, s or m"
        ))),
    }
}

pub(super) fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

/// Writes a duration the way [`duration`] reads it: whole minutes as
/// `"5m"`, whole seconds as `"10s"`, otherwise `"250ms"`.
pub(super) fn duration_text<S: Serializer>(
    value: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let millis = value.as_millis();
    let text = if millis != 0 && millis.is_multiple_of(60_000) {
        format!("{}m", millis / 60_000)
    } else if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    };
    serializer.serialize_str(&text)
}

/// Writes an optional duration (absent stays absent).
pub(super) fn optional_duration_text<S: Serializer>(
    value: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => duration_text(value, serializer),
        None => serializer.serialize_none(),
    }
}

/// Writes versions as their numbers (`["1.1", "1.2"]`).
pub(super) fn versions_text<S: Serializer>(
    value: &[Version],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(value.iter().map(|v| v.as_str()))
}

/// Reads a list of version numbers such as `["1.1", "1.2"]`.
pub(super) fn versions<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Version>, D::Error> {
    let names = Vec::<String>::deserialize(deserializer)?;
    let mut versions = names
        .iter()
        .map(|n| {
            Version::from_number(n).ok_or_else(|| {
                serde::de::Error::custom(format!("unknown STOMP version '{n}' (1.0, 1.1, 1.2)"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    versions.sort();
    versions.dedup();
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn durations_read_units_and_milliseconds() {
        let config = Config::from_toml(
            "[listener]\nhandshake_timeout = \"250ms\"\nconnect_timeout = 1500\n",
            "t",
        )
        .expect("parses");
        assert_eq!(
            config.listener.handshake_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(config.listener.connect_timeout, Duration::from_millis(1500));
        assert!(Config::from_toml("[shutdown]\ngrace = \"5 parsecs\"\n", "t").is_err());
        assert!(Config::from_toml("[shutdown]\ngrace = \"999999999999999999m\"\n", "t").is_err());
    }
}
