//! Authentication on CONNECT and the permissions it grants.
//!
//! Credentials, in this order: a JWT as CONNECT's `passcode`; `login` and
//! `passcode` against argon2 hashes; a JWT from the WebSocket handshake
//! (`Authorization: Bearer`, or `access_token` in the query, which browsers
//! can set); else the anonymous policy. Failed logins all get the same text
//! ("authentication failed"); password checks are throttled per address and
//! per (address, login) before they run (see `throttle`).

pub mod acl;
pub mod jwt;
pub mod password;
mod throttle;

use crate::config::{Anonymous, AuthConfig};
use crate::model::destination::DestinationLimits;
pub use acl::Permissions;
use jwt::{looks_like_jwt, JwtValidator};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;
use throttle::LoginThrottle;
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
    /// The handshake's `Origin` (browsers only).
    pub origin: Option<&'a str>,
}

impl Credentials<'_> {
    /// How these credentials authenticate (for the failed-login metric):
    /// a login is a password check, a passcode or bearer alone a token.
    pub fn method(&self) -> crate::metrics::AuthMethod {
        use crate::metrics::AuthMethod;
        if self.login.is_some() {
            AuthMethod::Password
        } else if self.passcode.is_some() || self.bearer.is_some() {
            AuthMethod::Token
        } else {
            AuthMethod::Anonymous
        }
    }
}

/// Who a client is and what it may do.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The login or the token's subject; none for anonymous clients.
    pub name: Option<String>,
    /// Its permissions.
    pub permissions: Permissions,
    /// When its credentials stop being valid (a token's `exp`): the session
    /// ends then.
    pub expires: Option<SystemTime>,
    /// A user with the `admin` role, or a token with the admin claim: may
    /// use the admin listener.
    pub admin: bool,
}

struct User {
    hash: String,
    permissions: Permissions,
    admin: bool,
}

/// Checks credentials. Shared by all sessions.
pub struct Authenticator {
    anonymous: Anonymous,
    anonymous_permissions: Permissions,
    users: HashMap<String, User>,
    jwt: Option<JwtValidator>,
    throttle: LoginThrottle,
    limits: DestinationLimits,
    /// argon2 is slow on purpose: at most this many verifications at once
    /// (and at most one of them per address, see `throttle`).
    verifications: Arc<Semaphore>,
    /// What unknown logins are verified against: a hash with the costliest
    /// parameters in use, so that they take as long as the slowest real one.
    dummy_hash: String,
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
/// unknown logins when no user is configured. A constant, so that such a
/// start pays for no hashing.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$2w1Z4YTPGiNc/naYz7y6QA$8GnHj46ixZVbpuPKhd/iDNgwDHGOK73p5MGu/f0OIPU";

impl Authenticator {
    /// Builds from `[auth]`; errors name the key.
    pub fn new(config: &AuthConfig, limits: DestinationLimits) -> Result<Authenticator, String> {
        let mut users = HashMap::new();
        let mut costs = Vec::new();
        for user in &config.users {
            if let Some(role) = user.roles.iter().find(|role| *role != "admin") {
                return Err(format!(
                    "auth.users '{}': unknown role '{role}' (known: admin)",
                    user.login
                ));
            }
            let cost = password::validate(&user.password_hash)
                .map_err(|e| format!("auth.users '{}': password_hash is {e}", user.login))?;
            costs.push(cost);
            let permissions = Permissions::new(&user.read, &user.write, &limits)
                .map_err(|e| format!("auth.users '{}': {e}", user.login))?;
            users.insert(
                user.login.clone(),
                User {
                    hash: user.password_hash.clone(),
                    permissions,
                    admin: user.roles.iter().any(|role| role == "admin"),
                },
            );
        }
        let dummy_hash = match password::strongest(&costs) {
            None => DUMMY_HASH.to_owned(),
            // A random password nobody knows; hashed once per start.
            Some(cost) => password::hash_with(&dummy_password(), cost.clone())?,
        };
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
            throttle: LoginThrottle::new(config.failure_delay, config.failure_delay_max),
            limits,
            verifications: Arc::new(Semaphore::new(2)),
            dummy_hash,
        })
    }

    /// The permissions user `login` has now (none: no such user), for
    /// sessions that logged in before a reload.
    pub fn user_permissions(&self, login: &str) -> Option<Permissions> {
        self.users.get(login).map(|user| user.permissions.clone())
    }

    /// What anonymous sessions may do now (none: anonymous access is off).
    pub fn anonymous_permissions(&self) -> Option<Permissions> {
        (self.anonymous != Anonymous::Never).then(|| self.anonymous_permissions.clone())
    }

    /// Authenticates a CONNECT; the error is the ERROR frame's `message`.
    pub async fn authenticate(&self, credentials: Credentials<'_>) -> Result<Identity, String> {
        let passcode_token = credentials
            .passcode
            .filter(|p| self.jwt.is_some() && looks_like_jwt(p));
        if let Some(token) = passcode_token {
            return self.token(token);
        }
        if let Some(login) = credentials.login {
            return self
                .password(credentials.ip, login, credentials.passcode.unwrap_or(""))
                .await;
        }
        if let Some(token) = credentials.bearer {
            return self.token(token);
        }
        match self.anonymous {
            Anonymous::Any => {}
            // A page from elsewhere, open in a browser on this machine,
            // connects from loopback too: only this machine's pages count.
            Anonymous::Loopback
                if credentials.ip.to_canonical().is_loopback()
                    && credentials.origin.is_none_or(is_loopback_origin) => {}
            Anonymous::Loopback => {
                return Err(
                    "authentication required: anonymous access is allowed to clients and pages of this machine only"
                        .into(),
                )
            }
            Anonymous::Never => return Err("authentication required".into()),
        }
        Ok(Identity {
            name: None,
            permissions: self.anonymous_permissions.clone(),
            expires: None,
            admin: false,
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
            expires: claims.expires,
            admin: claims.admin,
        })
    }

    async fn password(&self, ip: IpAddr, login: &str, passcode: &str) -> Result<Identity, String> {
        // One check in flight per address: a flood from one address holds at
        // most one verification slot, and its surplus costs nothing.
        let Some(_turn) = self.throttle.turn(ip) else {
            return Err(format!(
                "{FAILED}: another login from this address is being checked; retry later"
            ));
        };
        // Back-off before the check, so throttled guesses are not verified.
        if let Some(at) = self.throttle.not_before(ip, login) {
            tokio::time::sleep_until(at.into()).await;
        }
        let user = self.users.get(login);
        // Unknown logins are checked against a dummy hash: same time, same answer.
        let hash = user.map_or_else(|| self.dummy_hash.clone(), |u| u.hash.clone());
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
            Some(user) if matches => {
                self.throttle.succeeded(ip, login);
                Ok(Identity {
                    name: Some(login.to_owned()),
                    permissions: user.permissions.clone(),
                    expires: None,
                    admin: user.admin,
                })
            }
            _ => {
                self.throttle.failed(ip, login);
                Err(FAILED.to_owned())
            }
        }
    }
}

/// 32 random characters, never told to anyone.
fn dummy_password() -> String {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; 24];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `origin` is a page served from this machine: `http(s)://` with
/// host `localhost`, a 127.0.0.0/8 address or `[::1]`, any port.
pub fn is_loopback_origin(origin: &str) -> bool {
    let origin = origin.to_ascii_lowercase();
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, rest)) if rest.is_empty() || rest.starts_with(':') => host,
            _ => return false,
        },
        None => authority.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

    #[test]
    fn loopback_origins_are_this_machines_pages_only() {
        for local in [
            "http://localhost:8080",
            "https://LOCALHOST",
            "http://127.0.0.1:1",
            "http://127.1.2.3",
            "http://[::1]:8000",
        ] {
            assert!(is_loopback_origin(local), "{local}");
        }
        for foreign in [
            "null",
            "http://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "file://",
            "http://[::1].evil",
        ] {
            assert!(!is_loopback_origin(foreign), "{foreign}");
        }
    }
}
