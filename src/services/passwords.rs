//! Password policy and hashing: argon2id for new hashes; argon2 and bcrypt
//! (accounts imported from Synapse or Dendrite) are both verified.

use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::PasswordHashingConfig;
use crate::error::{MatrixError, Result};

/// Longest password accepted, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 512;
/// Shortest password accepted, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;

/// The policy every password passes, wherever it is set.
pub fn validate(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(MatrixError::missing_param("Expecting a non-empty password"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(MatrixError::bad_json(format!(
            "Password too long: at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if password.len() < MIN_PASSWORD_BYTES {
        return Err(MatrixError::weak_password(format!(
            "Password too weak: at least {MIN_PASSWORD_BYTES} characters"
        )));
    }
    Ok(())
}

#[derive(Clone)]
pub struct PasswordHasherService {
    params: Params,
    /// At most one hash per core at a time: a burst of logins then peaks at
    /// cores x the memory cost instead of requests x the memory cost.
    permits: std::sync::Arc<tokio::sync::Semaphore>,
}

impl PasswordHasherService {
    pub fn new(cfg: &PasswordHashingConfig) -> Self {
        let params = Params::new(cfg.memory_kib, cfg.iterations, 1, None)
            .expect("password hashing parameters are validated with the config");
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            params,
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes on the blocking pool: argon2 is deliberately slow.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let argon = self.argon2();
        let password = password.to_owned();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(MatrixError::internal)?;
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
        })
        .await
        .map_err(MatrixError::internal)?
        .map_err(MatrixError::internal)
    }

    /// Checks a password against an argon2 or bcrypt hash. An unknown hash
    /// format never matches.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool> {
        let password = password.to_owned();
        let hash = hash.to_owned();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(MatrixError::internal)?;
        tokio::task::spawn_blocking(move || {
            if hash.starts_with("$argon2") {
                PasswordHash::new(&hash)
                    .map(|parsed| {
                        Argon2::default()
                            .verify_password(password.as_bytes(), &parsed)
                            .is_ok()
                    })
                    .unwrap_or(false)
            } else if hash.starts_with("$2") {
                bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false)
            } else {
                false
            }
        })
        .await
        .map_err(MatrixError::internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn argon2_and_bcrypt_verify() {
        let h = PasswordHasherService::new(&PasswordHashingConfig {
            memory_kib: 64,
            iterations: 1,
        });
        let hash = h.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(h.verify("correct horse", &hash).await.unwrap());
        assert!(!h.verify("wrong horse", &hash).await.unwrap());
        let bc = bcrypt::hash("imported pw", 4).unwrap();
        assert!(h.verify("imported pw", &bc).await.unwrap());
        assert!(!h.verify("other", &bc).await.unwrap());
        assert!(!h.verify("x", "plaintext").await.unwrap());
    }

    #[test]
    fn policy() {
        assert_eq!(validate("").unwrap_err().errcode(), "M_MISSING_PARAM");
        assert_eq!(validate("short").unwrap_err().errcode(), "M_WEAK_PASSWORD");
        assert_eq!(
            validate(&"x".repeat(513)).unwrap_err().errcode(),
            "M_BAD_JSON"
        );
        assert!(validate("longenough").is_ok());
    }
}
