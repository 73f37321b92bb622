//! Dashboard accounts from the command line: argon2id password hashes (PHC strings, salted
//! from the operating system's random source) and generated passwords. `lodestar demo` makes
//! its advisor here, and API tokens.

use anyhow::anyhow;
use argon2::Argon2;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHasher, SaltString};

/// `len` characters drawn uniformly from `alphabet` (rejection sampling keeps every character
/// equally likely).
fn random_string(alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| {
            loop {
                let b = (OsRng.next_u32() & 0xff) as usize;
                if b < 256 - 256 % alphabet.len() {
                    return alphabet[b % alphabet.len()] as char;
                }
            }
        })
        .collect()
}

/// A new random password: 16 characters from an alphabet without look-alikes.
pub(crate) fn new_password() -> String {
    random_string(
        b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789",
        16,
    )
}

/// A new API token: `lds_` and 40 characters (about 238 bits) from the operating system's
/// random source.
pub(crate) fn new_token() -> String {
    let body = random_string(
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        40,
    );
    format!("lds_{body}")
}

/// The argon2id hash of a password, as a PHC string.
pub(crate) fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow!("hashing the password: {e}"))
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};

    use super::*;

    #[test]
    fn hashes_verify_only_their_own_password_and_passwords_differ() {
        let p = new_password();
        assert_eq!(p.len(), 16);
        assert_ne!(p, new_password());
        let hash = hash_password(&p).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(
            Argon2::default()
                .verify_password(p.as_bytes(), &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong", &parsed)
                .is_err()
        );
        assert_ne!(hash, hash_password(&p).unwrap(), "salted");
        let t = new_token();
        assert!(t.starts_with("lds_") && t.len() == 44, "{t}");
        assert_ne!(t, new_token());
    }
}
