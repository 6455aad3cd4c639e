//! Password hashing on a bounded pool, and the lockout of failed logins.
//!
//! Argon2id costs ~19 MiB and tens of milliseconds per hash: a flood of
//! logins must not run them all at once. [`Passwords`] lets at most
//! `hash_workers` run (the rest wait for a permit), and refuses (503) a
//! login once `MAX_WAITING` are already queued, so memory stays bounded.
//! An unknown user name, or a user without a password, is checked against
//! a dummy hash, so the answer takes as long as for a known user.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use domain::{Error, Result};
use tokio::sync::Semaphore;

/// Logins that may wait for a hashing permit before new ones get 503.
const MAX_WAITING: usize = 256;

/// Keystone's `[security_compliance]` settings Snapstack honours.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Shortest password accepted when a user is created or changed.
    pub min_password_length: usize,
    /// Failed logins in a row that lock a user out (0: never).
    pub lockout_failure_attempts: u32,
    /// How long a locked-out user stays locked.
    pub lockout_duration: Duration,
    /// Password hashes computed at once.
    pub hash_workers: usize,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            min_password_length: 0,
            lockout_failure_attempts: 0,
            lockout_duration: Duration::from_secs(1800),
            hash_workers: 2,
        }
    }
}

/// The bounded hashing pool.
#[derive(Debug)]
pub(crate) struct Passwords {
    permits: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Verified against when there is no real hash, to take the same time.
    dummy_hash: String,
}

/// Decrements the waiting count when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn hash_now(password: &[u8]) -> Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(format!("Cannot hash a password: {e}")))
}

impl Passwords {
    pub(crate) fn new(workers: usize) -> Result<Passwords> {
        Ok(Passwords {
            permits: Semaphore::new(workers.max(1)),
            waiting: AtomicUsize::new(0),
            max_waiting: MAX_WAITING,
            dummy_hash: hash_now(b"snapstack-dummy-password")?,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::unavailable(
                "Too many logins at once; try again in a moment.",
            ));
        }
        let waiting = Waiting(&self.waiting);
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::internal("The password pool is closed."))?;
        drop(waiting);
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::internal(format!("Password task failed: {e}")))?
    }

    pub(crate) async fn hash(&self, password: String) -> Result<String> {
        self.run(move || hash_now(password.as_bytes())).await
    }

    /// Whether `password` matches `hash`; `None` (no user, or a user
    /// without a password) never matches but costs the same.
    pub(crate) async fn verify(&self, password: String, hash: Option<String>) -> Result<bool> {
        let real = hash.filter(|h| !h.is_empty());
        let matches_real = real.is_some();
        let hash = real.unwrap_or_else(|| self.dummy_hash.clone());
        let ok = self
            .run(move || {
                let parsed = PasswordHash::new(&hash)
                    .map_err(|e| Error::internal(format!("Corrupt password hash: {e}")))?;
                Ok(Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok())
            })
            .await?;
        Ok(ok && matches_real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verify_when_no_hash_then_false_even_for_dummy_password() {
        let passwords = Passwords::new(1).unwrap();

        let ok = passwords
            .verify("snapstack-dummy-password".into(), None)
            .await
            .unwrap();

        assert!(!ok);
    }

    #[tokio::test]
    async fn hash_when_queue_full_then_503_and_others_finish() {
        let mut passwords = Passwords::new(1).unwrap();
        passwords.max_waiting = 1;

        let (a, b, c) = tokio::join!(
            passwords.hash("one".into()),
            passwords.hash("two".into()),
            passwords.hash("three".into()),
        );

        assert!(a.is_ok());
        assert!(b.is_ok());
        assert_eq!(c.unwrap_err().kind(), domain::ErrorKind::Unavailable);
    }

    #[tokio::test]
    async fn verify_when_hash_of_same_password_then_true() {
        let passwords = Passwords::new(1).unwrap();
        let hash = passwords.hash("s3cret-pw".into()).await.unwrap();

        let ok = passwords
            .verify("s3cret-pw".into(), Some(hash))
            .await
            .unwrap();

        assert!(ok);
    }
}
