//! API key secrets: how they are made, written and stored.
//!
//! A secret is `sumsvc_` and 64 hex digits: 256 bits from the OS CSPRNG. The prefix lets
//! people and secret scanners recognise one in a paste or a repository.
//!
//! Only the SHA-256 digest of a secret is stored. A fast hash is the right one here, and
//! a slow password hash (bcrypt, scrypt, argon2) would buy nothing: those make each
//! guess of a low-entropy password expensive, and no number of guesses finds a 256-bit
//! random secret. A stolen table of digests tells nothing about the secrets either, as
//! SHA-256 cannot be inverted.
//!
//! Timing: a presented secret is looked up by its digest, never compared with a stored
//! secret. Whatever a lookup's timing gives away is about the digest of the caller's own
//! guess, and matching a stored digest byte by byte would need a preimage of SHA-256.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// What every secret starts with.
pub const PREFIX: &str = "sumsvc_";

/// Random bytes in a secret.
const RANDOM_BYTES: usize = 32;

/// The SHA-256 digest of a secret: all the database holds of it.
pub type Digest = [u8; 32];

/// A new key's secret, to be shown once and then forgotten. `Debug` does not show it.
pub struct Secret(String);

impl Secret {
    /// Draws a new secret from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; RANDOM_BYTES];
        // The OS source does not fail once the kernel has seeded it, which it has long
        // before anyone creates a key.
        getrandom::fill(&mut bytes).expect("the OS random number generator failed");
        let mut text = String::with_capacity(PREFIX.len() + 2 * RANDOM_BYTES);
        text.push_str(PREFIX);
        for byte in bytes {
            text.push_str(&format!("{byte:02x}"));
        }
        Self(text)
    }

    /// The secret itself, for the one place it is shown.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database stores of it.
    pub fn digest(&self) -> Digest {
        digest(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The digest of a presented token, whatever its form: a token that is not a secret of
/// this form simply matches no key.
pub fn digest(token: &str) -> Digest {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_the_prefix_and_64_hex_digits_and_never_repeats() {
        let a = Secret::generate();
        let b = Secret::generate();
        for s in [&a, &b] {
            let hex = s.expose().strip_prefix(PREFIX).unwrap();
            assert_eq!(hex.len(), 64, "{}", s.expose());
            assert!(hex
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn the_digest_is_sha256_of_the_text() {
        // SHA-256("abc"), from FIPS 180-2.
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let hex: String = digest("abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let s = Secret::generate();
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
