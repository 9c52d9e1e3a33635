//! argon2 password hashes (PHC strings), verified in constant time.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};

/// A new argon2id hash of `password`, for `[[auth.users]] password_hash`.
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash: {e}"))
}

/// Checks that `hash` is a PHC string argon2 can verify against.
pub fn validate(hash: &str) -> Result<(), String> {
    PasswordHash::new(hash)
        .map(|_| ())
        .map_err(|e| format!("not an argon2 PHC string: {e}"))
}

/// Whether `password` matches `hash` (constant-time comparison inside).
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
}
