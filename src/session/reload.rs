//! A configuration reload seen from a session: its permissions are looked
//! up again (a password user's in the new `[[auth.users]]`, an anonymous
//! session's in the new `[auth]`; a token's stay what the token says), its
//! publish rate buckets are rebuilt from the new rules, and if it lost read
//! access to a destination it subscribes to, or its user is gone, it gets
//! ERROR and is closed (documented in docs/operations.md). Other
//! subscriptions are never cut silently.

use super::{CloseReason, Session, SessionError};
use crate::auth::{Credentials, Identity};
use crate::metrics::AuthMethod;

/// How a session authenticated, as far as a reload cares.
#[derive(Debug, Clone)]
pub enum Authenticated {
    /// A `[[auth.users]]` login.
    User(String),
    /// A JWT: its claims do not change with the configuration.
    Token,
    /// No credentials.
    Anonymous,
}

impl Authenticated {
    /// From CONNECT's credentials and what they proved.
    pub fn of(credentials: &Credentials<'_>, identity: &Identity) -> Authenticated {
        match (credentials.method(), &identity.name) {
            (AuthMethod::Password, Some(login)) => Authenticated::User(login.clone()),
            (AuthMethod::Anonymous, _) => Authenticated::Anonymous,
            _ => Authenticated::Token,
        }
    }
}

impl Session {
    /// Applies a reload to this session; `Err` ends it with that ERROR.
    pub fn reloaded(&mut self) -> Result<(), SessionError> {
        let Some(authenticated) = self.authenticated.clone() else {
            // Not connected yet: CONNECT will use the new configuration.
            return Ok(());
        };
        let auth = self.context.auth.load_full();
        let permissions = match &authenticated {
            Authenticated::User(login) => auth.user_permissions(login).ok_or_else(|| {
                SessionError::new(
                    format!("user '{login}' removed by a configuration reload"),
                    CloseReason::PolicyViolation,
                )
            })?,
            Authenticated::Anonymous => auth.anonymous_permissions().ok_or_else(|| {
                SessionError::new(
                    "anonymous access turned off by a configuration reload",
                    CloseReason::PolicyViolation,
                )
            })?,
            Authenticated::Token => return Ok(()),
        };
        let limits = &self.context.destination_limits;
        if let Some(destination) = self
            .subscriptions
            .values()
            .find(|destination| !permissions.can_read(destination, limits))
        {
            return Err(SessionError::new(
                format!("read access to '{destination}' revoked by a configuration reload"),
                CloseReason::PolicyViolation,
            ));
        }
        self.permissions = permissions;
        let user = match &authenticated {
            Authenticated::User(login) => Some(login.as_str()),
            _ => None,
        };
        self.publish_limiter = self
            .context
            .publish_rules
            .load()
            .limiter(user, tokio::time::Instant::now());
        Ok(())
    }
}
