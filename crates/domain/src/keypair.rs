//! Nova keypairs: an SSH (or x509) public key a user registers under a
//! name, given to the servers created with `key_name`.

use chrono::{DateTime, Utc};

use crate::{Error, Result, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keypair {
    /// The row number Nova shows as `id`.
    pub id: i64,
    pub user_id: UserId,
    pub name: String,
    /// `ssh` or `x509`.
    pub key_type: String,
    pub public_key: String,
    /// `aa:bb:…`: MD5 of the key blob, as Nova shows it.
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
}

/// Nova's rule for a keypair name: 1 to 255 characters among letters,
/// digits, space, `_`, `-`, `.`, `@`, not blank.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || " _-.@".contains(c);
    if name.trim().is_empty() || name.len() > 255 || !name.chars().all(ok_char) {
        return Err(Error::invalid(
            "Keypair data is invalid: Keypair name contains unsafe characters or is not 1 to 255 characters long.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_when_blank_or_unsafe_then_invalid() {
        assert!(validate_name("  ").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn name_when_usual_then_valid() {
        assert!(validate_name("my key-1.0_x@y").is_ok());
    }
}
