//! argon2id password hashes (PHC strings): made, checked at start against a
//! minimum cost, and verified in constant time.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::SaltString;
use argon2::{Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier};

/// The least memory an accepted hash may use, in KiB (19 MiB): OWASP's
/// minimum for argon2id, and what `stomphub hash-password` uses.
pub const MIN_MEMORY_KIB: u32 = 19_456;
/// The fewest passes an accepted hash may use (OWASP's minimum with 19 MiB).
pub const MIN_PASSES: u32 = 2;

/// A new argon2id hash of `password`, for `[[auth.users]] password_hash`.
pub fn hash(password: &str) -> Result<String, String> {
    hash_with(password, Params::default())
}

/// A new argon2id hash of `password` with `params`.
pub fn hash_with(password: &str, params: Params) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash: {e}"))
}

/// Checks that `hash` is an argon2id PHC string at or above the minimum
/// cost; returns its parameters. The error is one line, without the hash.
pub fn validate(hash: &str) -> Result<Params, String> {
    let parsed = PasswordHash::new(hash).map_err(|_| {
        "not a PHC hash string (plain text?); only argon2id hashes are supported \
         (stomphub hash-password makes one)"
            .to_owned()
    })?;
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return Err(format!(
            "a {} hash; only argon2id is supported (stomphub hash-password makes one)",
            parsed.algorithm
        ));
    }
    if parsed
        .version
        .is_some_and(|v| v != u32::from(argon2::Version::V0x13))
    {
        return Err("an argon2id hash of an old version; only v=19 is supported".into());
    }
    let params = Params::try_from(&parsed)
        .map_err(|e| format!("an argon2id hash with bad parameters: {e}"))?;
    if params.m_cost() < MIN_MEMORY_KIB || params.t_cost() < MIN_PASSES {
        return Err(format!(
            "too weak: m={} KiB, t={}; the minimum is m={MIN_MEMORY_KIB} KiB, t={MIN_PASSES} \
             (re-hash with stomphub hash-password)",
            params.m_cost(),
            params.t_cost()
        ));
    }
    Ok(params)
}

/// The costliest of `params` (memory × passes, then lanes), for the dummy
/// hash that unknown logins are checked against.
pub fn strongest<'a>(params: impl IntoIterator<Item = &'a Params>) -> Option<&'a Params> {
    params
        .into_iter()
        .max_by_key(|p| (u64::from(p.m_cost()) * u64::from(p.t_cost()), p.p_cost()))
}

/// Whether `password` matches `hash` (constant-time comparison inside; the
/// hash's own parameters are used).
pub fn verify(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password() {
        let hashed = hash("s3cret").expect("hashes");
        assert!(hashed.starts_with("$argon2id$"));
        assert!(validate(&hashed).is_ok());
        assert!(verify("s3cret", &hashed));
        assert!(!verify("s3cret!", &hashed));
        assert!(!verify("s3cret", "not a hash"));
    }

    #[test]
    fn the_default_cost_is_the_minimum() {
        let defaults = Params::default();
        assert_eq!(
            (defaults.m_cost(), defaults.t_cost()),
            (MIN_MEMORY_KIB, MIN_PASSES)
        );
    }
}
