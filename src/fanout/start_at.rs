//! Where a live-feed subscription starts (`x-stream-offset`, RabbitMQ's
//! stream header), as SUBSCRIBE's headers say.

/// Where a SUBSCRIBE starts (`x-stream-offset`, RabbitMQ's stream header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// No header: `last` for every destination with feed state.
    Default,
    /// `next`: only new messages.
    Next,
    /// `last`: the retained value (else the newest kept message) of each
    /// matching destination, marked `x-retained:true`, then live.
    Last,
    /// `first`: every kept message, then live.
    First,
    /// `offset=<n>` with `x-epoch`: from offset `n` of one destination.
    Offset {
        /// The first offset wanted.
        offset: u64,
        /// The epoch the client's offsets belong to.
        epoch: String,
    },
    /// `timestamp=<unix seconds>`: kept messages published at or after it.
    Timestamp {
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
    },
}

impl StartAt {
    /// Reads `x-stream-offset` and `x-epoch`; the error names what is wrong.
    pub fn from_headers(offset: Option<&str>, epoch: Option<&str>) -> Result<StartAt, String> {
        let Some(value) = offset else {
            return Ok(StartAt::Default);
        };
        let number = |text: &str| text.trim().parse::<u64>().ok();
        match value {
            "next" => Ok(StartAt::Next),
            "last" => Ok(StartAt::Last),
            "first" => Ok(StartAt::First),
            _ => {
                if let Some(n) = value.strip_prefix("offset=").and_then(number) {
                    let epoch =
                        epoch.ok_or("x-stream-offset offset=<n> needs an x-epoch header")?;
                    return Ok(StartAt::Offset {
                        offset: n,
                        epoch: epoch.to_owned(),
                    });
                }
                if let Some(seconds) = value.strip_prefix("timestamp=").and_then(number) {
                    return Ok(StartAt::Timestamp {
                        at_ms: seconds.saturating_mul(1000),
                    });
                }
                Err(format!(
                    "x-stream-offset '{value}' is not one of next, last, first, offset=<n>, timestamp=<unix seconds>"
                ))
            }
        }
    }

    /// Whether the client asked for a start (any header at all).
    pub fn is_explicit(&self) -> bool {
        *self != StartAt::Default
    }
}
