//! Who owns client-named state that outlives a connection (durable topic
//! subscriptions): the authenticated principal, not the `client-id` the
//! client claims.
//!
//! A login and a JWT `sub` of the same name are one principal: the operator
//! configures both the users and the trusted issuer, and the issuer is
//! trusted to say who someone is. Every anonymous connection (and a token
//! without `sub`) is the one anonymous principal, distinct from every named
//! one: anonymous clients have nothing that tells them apart, they all
//! hold the same `anonymous_read` permissions, and a durable subscription
//! must be resumable by the next connection of the same application.

/// An owner of durable state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// Every client that connected without credentials.
    Anonymous,
    /// A login or a token's subject.
    Named(String),
}

/// How [`Principal::Anonymous`] is stored.
const ANONYMOUS: &str = "anonymous";
/// The prefix of a named principal as stored (so that a user named
/// `anonymous` is not the anonymous principal).
const NAMED: &str = "user:";

impl Principal {
    /// The principal of an authenticated identity's name.
    pub fn of(name: Option<&str>) -> Principal {
        name.map_or(Principal::Anonymous, |name| {
            Principal::Named(name.to_owned())
        })
    }

    /// The form kept in the store.
    pub fn to_record(&self) -> String {
        match self {
            Principal::Anonymous => ANONYMOUS.to_owned(),
            Principal::Named(name) => format!("{NAMED}{name}"),
        }
    }

    /// Reads the stored form; `None` if it is not one.
    pub fn from_record(text: &str) -> Option<Principal> {
        match text {
            ANONYMOUS => Some(Principal::Anonymous),
            _ => text
                .strip_prefix(NAMED)
                .map(|name| Principal::Named(name.to_owned())),
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Anonymous => f.write_str(ANONYMOUS),
            Principal::Named(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_anonymous_is_not_a_user_named_so() {
        for principal in [
            Principal::Anonymous,
            Principal::of(Some("carol")),
            Principal::of(Some("anonymous")),
            Principal::of(Some("user:x")),
        ] {
            assert_eq!(
                Principal::from_record(&principal.to_record()),
                Some(principal)
            );
        }
        assert_ne!(Principal::of(Some("anonymous")), Principal::Anonymous);
        assert_eq!(Principal::from_record("carol"), None);
    }
}
