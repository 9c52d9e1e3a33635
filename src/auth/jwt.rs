//! JWT bearer tokens: HS256 with a shared secret, RS256/ES256 with a public
//! key or a JWKS file, and several such keys at once (rotation, several
//! issuers). `exp` is required and checked with `nbf`; `aud` and `iss`, when
//! configured, are required too. Two claims carry the bearer's read and write
//! destination patterns.

use crate::config::{JwtConfig, JwtKeyConfig};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// `sub`.
    pub subject: Option<String>,
    /// Destination patterns it may read.
    pub read: Vec<String>,
    /// Destination patterns it may write.
    pub write: Vec<String>,
    /// When the token stops being valid (`exp` plus the leeway): the
    /// session it opened ends then.
    pub expires: Option<SystemTime>,
    /// The admin claim is `true`: the bearer may use the admin listener.
    pub admin: bool,
}

/// One verification key and the rules a token checked with it must meet.
struct VerificationKey {
    /// Tokens with another `kid` are not checked with this key (none: any).
    kid: Option<String>,
    /// The only algorithm this key verifies (no algorithm confusion).
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

/// Validates tokens against the configured keys.
pub struct JwtValidator {
    /// In configuration order; bounded by the configuration.
    keys: Vec<VerificationKey>,
    read_claim: String,
    write_claim: String,
    admin_claim: String,
    leeway: Duration,
}

impl std::fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are secrets: never printed.
        f.debug_struct("JwtValidator")
            .field("keys", &self.keys.len())
            .field("read_claim", &self.read_claim)
            .finish_non_exhaustive()
    }
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
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

fn algorithm(name: &str, key: &str) -> Result<Algorithm, String> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        other => Err(format!(
            "{key}.algorithm '{other}' is not HS256, RS256 or ES256"
        )),
    }
}

/// The rules every token must meet, for a key of `algorithm`.
fn validation(config: &JwtConfig, algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = config.leeway_seconds;
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    match &config.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    if let Some(issuer) = &config.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    // Without this a token that leaves `aud` or `iss` out passes their check.
    validation.set_required_spec_claims(&required);
    validation
}

/// The key(s) of one key entry; `at` names the entry in errors.
fn load(spec: &JwtKeyConfig, at: &str, config: &JwtConfig) -> Result<Vec<VerificationKey>, String> {
    let algorithm = algorithm(&spec.algorithm, at)?;
    let one = |key: DecodingKey| {
        Ok(vec![VerificationKey {
            kid: spec.kid.clone(),
            algorithm,
            key,
            validation: validation(config, algorithm),
        }])
    };
    match (
        algorithm,
        &spec.secret,
        &spec.secret_file,
        &spec.public_key_file,
        &spec.jwks_file,
    ) {
        (Algorithm::HS256, Some(secret), _, _, _) => {
            one(DecodingKey::from_secret(secret.as_bytes()))
        }
        (Algorithm::HS256, None, Some(file), _, _) => {
            let secret = read(file, &format!("{at}.secret_file"))?;
            one(DecodingKey::from_secret(secret.trim_ascii_end()))
        }
        (Algorithm::RS256, _, _, Some(file), _) => one(DecodingKey::from_rsa_pem(&read(
            file,
            &format!("{at}.public_key_file"),
        )?)
        .map_err(|e| format!("{at}.public_key_file: {e}"))?),
        (Algorithm::ES256, _, _, Some(file), _) => one(DecodingKey::from_ec_pem(&read(
            file,
            &format!("{at}.public_key_file"),
        )?)
        .map_err(|e| format!("{at}.public_key_file: {e}"))?),
        (_, _, _, _, Some(file)) => {
            let what = format!("{at}.jwks_file");
            let set: JwkSet =
                serde_json::from_slice(&read(file, &what)?).map_err(|e| format!("{what}: {e}"))?;
            if set.keys.is_empty() {
                return Err(format!("{what}: the set has no keys"));
            }
            set.keys
                .iter()
                .map(|jwk| {
                    // A key's own `alg` wins over the entry's algorithm.
                    let algorithm = match jwk.common.key_algorithm {
                        None => algorithm,
                        Some(KeyAlgorithm::HS256) => Algorithm::HS256,
                        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
                        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
                        Some(other) => {
                            return Err(format!(
                                "{what}: key alg {other:?} is not HS256, RS256 or ES256"
                            ))
                        }
                    };
                    Ok(VerificationKey {
                        kid: jwk.common.key_id.clone().or_else(|| spec.kid.clone()),
                        algorithm,
                        key: DecodingKey::from_jwk(jwk).map_err(|e| format!("{what}: {e}"))?,
                        validation: validation(config, algorithm),
                    })
                })
                .collect()
        }
        _ => Err(format!(
            "{at}: {} needs {}",
            spec.algorithm,
            if algorithm == Algorithm::HS256 {
                "secret or secret_file"
            } else {
                "public_key_file or jwks_file"
            }
        )),
    }
}

impl JwtValidator {
    /// Loads the key(s) named in `config`.
    pub fn new(config: &JwtConfig) -> Result<JwtValidator, String> {
        let mut keys = Vec::new();
        match &config.algorithm {
            Some(name) => {
                let own = JwtKeyConfig {
                    algorithm: name.clone(),
                    secret: config.secret.clone(),
                    secret_file: config.secret_file.clone(),
                    public_key_file: config.public_key_file.clone(),
                    jwks_file: config.jwks_file.clone(),
                    kid: None,
                };
                keys.extend(load(&own, "auth.jwt", config)?);
            }
            None if config.secret.is_some()
                || config.secret_file.is_some()
                || config.public_key_file.is_some()
                || config.jwks_file.is_some() =>
            {
                return Err("auth.jwt: a key is given without its algorithm".into())
            }
            None => {}
        }
        for (index, spec) in config.keys.iter().enumerate() {
            keys.extend(load(spec, &format!("auth.jwt.keys[{index}]"), config)?);
        }
        if keys.is_empty() {
            return Err(
                "auth.jwt: no verification key (algorithm with a key, or [[auth.jwt.keys]])".into(),
            );
        }
        Ok(JwtValidator {
            keys,
            read_claim: config.read_claim.clone(),
            write_claim: config.write_claim.clone(),
            admin_claim: config.admin_claim.clone(),
            leeway: Duration::from_secs(config.leeway_seconds),
        })
    }

    /// Checks `token`; the error says why it was refused (never the token).
    pub fn validate(&self, token: &str) -> Result<TokenClaims, String> {
        let header = decode_header(token).map_err(|_| "malformed token".to_owned())?;
        let kid_fits = |key: &&VerificationKey| {
            key.kid.is_none() || header.kid.is_none() || key.kid == header.kid
        };
        if !self.keys.iter().any(|key| kid_fits(&key)) {
            return Err("unknown key id".into());
        }
        let mut candidates = self
            .keys
            .iter()
            .filter(kid_fits)
            .filter(|key| key.algorithm == header.alg)
            .peekable();
        if candidates.peek().is_none() {
            return Err("wrong algorithm".into());
        }
        // Several keys may fit (rotation without kids): the first whose
        // signature matches decides; the claims are checked only after it.
        let mut data = None;
        for key in candidates {
            match decode::<Map<String, Value>>(token, &key.key, &key.validation) {
                Ok(decoded) => {
                    data = Some(decoded);
                    break;
                }
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => continue,
                Err(e) => return Err(reason(e.kind())),
            }
        }
        let data = data.ok_or_else(|| "invalid signature".to_owned())?;
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
        let expires = data
            .claims
            .get("exp")
            .and_then(Value::as_f64)
            .filter(|exp| exp.is_finite() && *exp >= 0.0)
            .and_then(|exp| UNIX_EPOCH.checked_add(Duration::from_secs_f64(exp.min(1e12))))
            .and_then(|at| at.checked_add(self.leeway));
        Ok(TokenClaims {
            subject: data
                .claims
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_owned),
            read: patterns(&self.read_claim),
            write: patterns(&self.write_claim),
            expires,
            admin: data.claims.get(&self.admin_claim) == Some(&Value::Bool(true)),
        })
    }
}

/// The ERROR text for a refused token.
fn reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not yet valid".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidSignature => "invalid signature".into(),
        ErrorKind::InvalidAlgorithm => "wrong algorithm".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim '{claim}'"),
        _ => "malformed token".into(),
    }
}
