//! `[auth]`: anonymous access, `[[auth.users]]`, and `[auth.jwt]` with its
//! keys.

use super::values::{duration, duration_text};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Who may connect without credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anonymous {
    /// Nobody.
    Never,
    /// Clients on this machine (127.0.0.0/8, ::1).
    Loopback,
    /// Anyone.
    Any,
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Who may connect without credentials.
    pub anonymous: Anonymous,
    /// Destination patterns anonymous clients may read (SUBSCRIBE).
    pub anonymous_read: Vec<String>,
    /// Destination patterns anonymous clients may write (SEND).
    pub anonymous_write: Vec<String>,
    /// Delay before answering a failed login, doubled per recent failure
    /// from the same address.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub failure_delay: Duration,
    /// Cap of that delay.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub failure_delay_max: Duration,
    /// Users with argon2 password hashes and permissions.
    pub users: Vec<UserConfig>,
    /// JWT bearer tokens.
    pub jwt: Option<JwtConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            anonymous: Anonymous::Loopback,
            anonymous_read: vec!["/topic/#".into(), "/queue/#".into()],
            anonymous_write: vec!["/topic/#".into(), "/queue/#".into()],
            failure_delay: Duration::from_millis(250),
            failure_delay_max: Duration::from_secs(5),
            users: Vec::new(),
            jwt: None,
        }
    }
}

/// `[[auth.users]]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// CONNECT's `login`.
    pub login: String,
    /// An argon2 PHC string (`stomphub hash-password` prints one).
    pub password_hash: String,
    /// Destination patterns this user may read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Destination patterns this user may write.
    #[serde(default)]
    pub write: Vec<String>,
    /// Roles: `admin` opens the admin listener (metrics, API) to this user.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `[auth.jwt]`: what every token must satisfy, and its verification key(s):
/// one given here (`algorithm` with a key), and/or several in `keys`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `HS256`, `RS256` or `ES256`, for the key given in this section (none: only `keys`).
    pub algorithm: Option<String>,
    /// The HS256 shared secret.
    pub secret: Option<String>,
    /// A file holding the HS256 shared secret.
    pub secret_file: Option<std::path::PathBuf>,
    /// The RS256/ES256 public key (PEM).
    pub public_key_file: Option<std::path::PathBuf>,
    /// A JWKS file; keys are chosen by the token's `kid`.
    pub jwks_file: Option<std::path::PathBuf>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Claim with the patterns the bearer may read.
    #[serde(default = "default_read_claim")]
    pub read_claim: String,
    /// Claim with the patterns the bearer may write.
    #[serde(default = "default_write_claim")]
    pub write_claim: String,
    /// Boolean claim that makes the bearer an admin of the admin listener.
    #[serde(default = "default_admin_claim")]
    pub admin_claim: String,
    /// Clock skew tolerated for `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// More verification keys (`[[auth.jwt.keys]]`), for key rotation and
    /// several issuers' algorithms.
    #[serde(default)]
    pub keys: Vec<JwtKeyConfig>,
    /// A cookie holding a token, sent by browsers with the WebSocket
    /// handshake of pages from the same site; honoured only where the
    /// Origin check can tell our pages from others. None: no cookie.
    #[serde(default)]
    pub cookie: Option<String>,
}

/// `[[auth.jwt.keys]]`: one verification key (or a JWKS file of several).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// `HS256`, `RS256` or `ES256`.
    pub algorithm: String,
    /// An HS256 shared secret.
    pub secret: Option<String>,
    /// A file holding an HS256 shared secret.
    pub secret_file: Option<std::path::PathBuf>,
    /// An RS256/ES256 public key (PEM).
    pub public_key_file: Option<std::path::PathBuf>,
    /// A JWKS file; each key's `kid` and `alg` come from the file.
    pub jwks_file: Option<std::path::PathBuf>,
    /// The `kid` a token must carry to be checked with this key (none: any).
    pub kid: Option<String>,
}

fn default_read_claim() -> String {
    "stomp_read".into()
}

fn default_write_claim() -> String {
    "stomp_write".into()
}

fn default_admin_claim() -> String {
    "stomp_admin".into()
}

fn default_leeway() -> u64 {
    30
}
