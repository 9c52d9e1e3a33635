//! JWT bearer tokens: HS256 with a shared secret, RS256/ES256 with a public
//! key or a JWKS file. `exp`, `nbf`, `aud` and `iss` are checked; two claims
//! carry the bearer's read and write destination patterns.

use crate::config::JwtConfig;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// `sub`.
    pub subject: Option<String>,
    /// Destination patterns it may read.
    pub read: Vec<String>,
    /// Destination patterns it may write.
    pub write: Vec<String>,
}

enum Keys {
    One(DecodingKey),
    /// By `kid`.
    Set(Vec<(Option<String>, DecodingKey)>),
}

/// Validates tokens against the configured key(s).
pub struct JwtValidator {
    keys: Keys,
    validation: Validation,
    read_claim: String,
    write_claim: String,
}

impl std::fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are secrets: never printed.
        f.debug_struct("JwtValidator")
            .field("read_claim", &self.read_claim)
            .finish_non_exhaustive()
    }
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("auth.jwt.{what} {}: {e}", path.display()))
}

/// Whether `text` has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| !p.is_empty())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

impl JwtValidator {
    /// Loads the key(s) named in `config`.
    pub fn new(config: &JwtConfig) -> Result<JwtValidator, String> {
        let algorithm = match config.algorithm.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => {
                return Err(format!(
                    "auth.jwt.algorithm '{other}' is not HS256, RS256 or ES256"
                ))
            }
        };
        let keys = match (
            algorithm,
            &config.secret,
            &config.secret_file,
            &config.public_key_file,
            &config.jwks_file,
        ) {
            (Algorithm::HS256, Some(secret), _, _, _) => {
                Keys::One(DecodingKey::from_secret(secret.as_bytes()))
            }
            (Algorithm::HS256, None, Some(file), _, _) => {
                let secret = read(file, "secret_file")?;
                let trimmed = secret.trim_ascii_end();
                Keys::One(DecodingKey::from_secret(trimmed))
            }
            (Algorithm::RS256, _, _, Some(file), _) => Keys::One(
                DecodingKey::from_rsa_pem(&read(file, "public_key_file")?)
                    .map_err(|e| format!("auth.jwt.public_key_file: {e}"))?,
            ),
            (Algorithm::ES256, _, _, Some(file), _) => Keys::One(
                DecodingKey::from_ec_pem(&read(file, "public_key_file")?)
                    .map_err(|e| format!("auth.jwt.public_key_file: {e}"))?,
            ),
            (_, _, _, _, Some(file)) => {
                let set: JwkSet = serde_json::from_slice(&read(file, "jwks_file")?)
                    .map_err(|e| format!("auth.jwt.jwks_file: {e}"))?;
                Keys::Set(
                    set.keys
                        .iter()
                        .map(|jwk| {
                            DecodingKey::from_jwk(jwk)
                                .map(|key| (jwk.common.key_id.clone(), key))
                                .map_err(|e| format!("auth.jwt.jwks_file: {e}"))
                        })
                        .collect::<Result<_, _>>()?,
                )
            }
            _ => {
                return Err(format!(
                    "auth.jwt: {} needs {}",
                    config.algorithm,
                    if algorithm == Algorithm::HS256 {
                        "secret or secret_file"
                    } else {
                        "public_key_file or jwks_file"
                    }
                ))
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_seconds;
        validation.validate_nbf = true;
        match &config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(JwtValidator {
            keys,
            validation,
            read_claim: config.read_claim.clone(),
            write_claim: config.write_claim.clone(),
        })
    }

    /// Checks `token`; the error says why it was refused (never the token).
    pub fn validate(&self, token: &str) -> Result<TokenClaims, String> {
        let key = match &self.keys {
            Keys::One(key) => key,
            Keys::Set(keys) => {
                let kid = decode_header(token)
                    .map_err(|_| "malformed token".to_owned())?
                    .kid;
                keys.iter()
                    .find(|(id, _)| kid.is_none() || *id == kid)
                    .map(|(_, key)| key)
                    .ok_or_else(|| "no key for the token's kid".to_owned())?
            }
        };
        let data = decode::<Map<String, Value>>(token, key, &self.validation).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => "token expired",
                ErrorKind::ImmatureSignature => "token not yet valid",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidSignature => "invalid signature",
                ErrorKind::InvalidAlgorithm => "wrong algorithm",
                ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
                _ => "malformed token",
            }
            .to_owned()
        })?;
        let patterns = |claim: &str| -> Vec<String> {
            match data.claims.get(claim) {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                Some(Value::String(list)) => list.split_whitespace().map(str::to_owned).collect(),
                _ => Vec::new(),
            }
        };
        Ok(TokenClaims {
            subject: data
                .claims
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_owned),
            read: patterns(&self.read_claim),
            write: patterns(&self.write_claim),
        })
    }
}
