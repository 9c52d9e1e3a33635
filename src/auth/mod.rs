//! Authentication on CONNECT and the permissions it grants.
//!
//! Credentials, in this order: a JWT as CONNECT's `passcode`; `login` and
//! `passcode` against argon2 hashes; a JWT from the WebSocket handshake
//! (`Authorization: Bearer`, or `access_token` in the query, which browsers
//! can set); else the anonymous policy. Failed logins all get the same text
//! ("authentication failed"), after a delay that grows per address.

pub mod acl;
pub mod jwt;
pub mod password;
mod throttle;

use crate::config::{Anonymous, AuthConfig};
use crate::router::destination::DestinationLimits;
pub use acl::Permissions;
use jwt::{looks_like_jwt, JwtValidator};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use throttle::FailureThrottle;
use tokio::sync::Semaphore;

/// What a client presented.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// CONNECT `login`.
    pub login: Option<&'a str>,
    /// CONNECT `passcode`.
    pub passcode: Option<&'a str>,
    /// A bearer token from the handshake.
    pub bearer: Option<&'a str>,
    /// The client's address.
    pub ip: IpAddr,
}

/// Who a client is and what it may do.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The login or the token's subject; none for anonymous clients.
    pub name: Option<String>,
    /// Its permissions.
    pub permissions: Permissions,
}

/// A refused CONNECT: the ERROR text and how long to wait before sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The ERROR's `message`.
    pub message: String,
    /// Brute-force delay.
    pub delay: Duration,
}

struct User {
    hash: String,
    permissions: Permissions,
}

/// Checks credentials. Shared by all sessions.
pub struct Authenticator {
    anonymous: Anonymous,
    anonymous_permissions: Permissions,
    users: HashMap<String, User>,
    jwt: Option<JwtValidator>,
    throttle: FailureThrottle,
    limits: DestinationLimits,
    /// argon2 is slow on purpose: at most this many verifications at once.
    verifications: Arc<Semaphore>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("anonymous", &self.anonymous)
            .field("users", &self.users.len())
            .field("jwt", &self.jwt.is_some())
            .finish()
    }
}

const FAILED: &str = "authentication failed";

/// An argon2id hash (of a password nobody uses) with the default cost, for
/// unknown logins: verifying against it takes as long as against a real one.
/// A constant, so that no start pays for hashing it.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$2w1Z4YTPGiNc/naYz7y6QA$8GnHj46ixZVbpuPKhd/iDNgwDHGOK73p5MGu/f0OIPU";

impl Authenticator {
    /// Builds from `[auth]`; errors name the key.
    pub fn new(config: &AuthConfig, limits: DestinationLimits) -> Result<Authenticator, String> {
        let mut users = HashMap::new();
        for user in &config.users {
            password::validate(&user.password_hash)
                .map_err(|e| format!("auth.users '{}': password_hash is {e}", user.login))?;
            let permissions = Permissions::new(&user.read, &user.write, &limits)
                .map_err(|e| format!("auth.users '{}': {e}", user.login))?;
            users.insert(
                user.login.clone(),
                User {
                    hash: user.password_hash.clone(),
                    permissions,
                },
            );
        }
        Ok(Authenticator {
            anonymous: config.anonymous,
            anonymous_permissions: Permissions::new(
                &config.anonymous_read,
                &config.anonymous_write,
                &limits,
            )
            .map_err(|e| format!("auth.anonymous_read/write: {e}"))?,
            users,
            jwt: config.jwt.as_ref().map(JwtValidator::new).transpose()?,
            throttle: FailureThrottle::new(config.failure_delay, config.failure_delay_max),
            limits,
            verifications: Arc::new(Semaphore::new(2)),
        })
    }

    /// Authenticates a CONNECT.
    pub async fn authenticate(&self, credentials: Credentials<'_>) -> Result<Identity, Refusal> {
        let result = self.check(credentials).await;
        match &result {
            Ok(_) => self.throttle.succeeded(credentials.ip),
            Err(message) => {
                return Err(Refusal {
                    message: message.clone(),
                    delay: self.throttle.failed(credentials.ip),
                })
            }
        }
        result.map_err(|message| Refusal {
            message,
            delay: Duration::ZERO,
        })
    }

    async fn check(&self, credentials: Credentials<'_>) -> Result<Identity, String> {
        let passcode_token = credentials
            .passcode
            .filter(|p| self.jwt.is_some() && looks_like_jwt(p));
        if let Some(token) = passcode_token {
            return self.token(token);
        }
        if let Some(login) = credentials.login {
            return self
                .password(login, credentials.passcode.unwrap_or(""))
                .await;
        }
        if let Some(token) = credentials.bearer {
            return self.token(token);
        }
        match self.anonymous {
            Anonymous::Any => {}
            Anonymous::Loopback if credentials.ip.to_canonical().is_loopback() => {}
            Anonymous::Loopback => {
                return Err(
                    "authentication required: anonymous access is allowed from this machine only"
                        .into(),
                )
            }
            Anonymous::Never => return Err("authentication required".into()),
        }
        Ok(Identity {
            name: None,
            permissions: self.anonymous_permissions.clone(),
        })
    }

    fn token(&self, token: &str) -> Result<Identity, String> {
        let Some(jwt) = &self.jwt else {
            return Err(format!("{FAILED}: tokens are not accepted here"));
        };
        let claims = jwt
            .validate(token)
            .map_err(|reason| format!("{FAILED}: {reason}"))?;
        let permissions = Permissions::new(&claims.read, &claims.write, &self.limits)
            .map_err(|e| format!("{FAILED}: the token grants an invalid pattern ({e})"))?;
        Ok(Identity {
            name: claims.subject,
            permissions,
        })
    }

    async fn password(&self, login: &str, passcode: &str) -> Result<Identity, String> {
        let user = self.users.get(login);
        // Unknown logins are checked against a dummy hash: same time, same answer.
        let hash = user.map_or_else(|| DUMMY_HASH.to_owned(), |u| u.hash.clone());
        let passcode = passcode.to_owned();
        // argon2 takes tens of milliseconds: off the runtime, a few at a time.
        let permit = self
            .verifications
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| FAILED.to_owned())?;
        let matches = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            password::verify(&passcode, &hash)
        })
        .await
        .unwrap_or(false);
        match user {
            Some(user) if matches => Ok(Identity {
                name: Some(login.to_owned()),
                permissions: user.permissions.clone(),
            }),
            _ => Err(FAILED.to_owned()),
        }
    }
}

/// Whether `origin` is allowed by `allowed` (`*` alone: any; `scheme://host:*`: any port).
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let origin = origin.to_ascii_lowercase();
    allowed.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        if pattern == "*" || pattern == origin {
            return true;
        }
        match pattern.strip_suffix(":*") {
            Some(prefix) => {
                origin == prefix
                    || origin
                        .strip_prefix(prefix)
                        .and_then(|rest| rest.strip_prefix(':'))
                        .is_some_and(|port| {
                            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
                        })
            }
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_is_a_valid_argon2_hash() {
        assert!(password::validate(DUMMY_HASH).is_ok());
    }

    #[test]
    fn origins_match_exactly_or_by_port_wildcard() {
        let allowed = vec![
            "http://localhost:*".to_owned(),
            "https://app.example.com".to_owned(),
            "null".to_owned(),
        ];
        assert!(origin_allowed("http://localhost:8080", &allowed));
        assert!(origin_allowed("http://localhost", &allowed));
        assert!(origin_allowed("HTTPS://APP.example.com", &allowed));
        assert!(origin_allowed("null", &allowed));
        assert!(!origin_allowed("http://localhost.evil.com", &allowed));
        assert!(!origin_allowed("http://localhost:80x", &allowed));
        assert!(!origin_allowed("https://evil.example.com", &allowed));
        assert!(origin_allowed("https://anything", &["*".to_owned()]));
    }
}
