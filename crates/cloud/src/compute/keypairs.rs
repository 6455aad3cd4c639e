//! Keypairs (Nova's `os-keypairs`): per user, imported or generated.
//!
//! An imported SSH key is checked (its blob decodes and names the same
//! algorithm) and fingerprinted here (MD5 of the blob, as Nova); a key
//! generated for the caller comes from `ssh-keygen` (RSA 2048, as Nova) and
//! its private half is returned once, never stored. x509 keypairs are
//! certificates made and fingerprinted (SHA-1 of the DER) by `openssl`.

use std::path::Path;

use base64::Engine;
use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::keypair::{validate_name, Keypair};
use domain::{Error, ErrorKind, Result, UserId};
use md5::{Digest, Md5};

use crate::Cloud;

/// What `POST /os-keypairs` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewKeypair {
    pub name: String,
    /// `ssh` (default) or `x509`.
    pub key_type: Option<String>,
    /// None: generate one.
    pub public_key: Option<String>,
    /// Another user's id (admins only).
    pub user_id: Option<String>,
}

impl Cloud {
    /// The user whose keypairs a request is about: the caller, or (admins)
    /// the one named.
    fn keypair_owner(&self, caller: &Caller, user_id: Option<&str>) -> Result<UserId> {
        match user_id {
            Some(u) if u != caller.user_id.to_string() => {
                caller.require(Role::Admin, "manage another user's keypairs")?;
                u.parse()
            }
            _ => Ok(caller.user_id),
        }
    }

    /// Creates a keypair: returns it and, when generated, its private key.
    pub async fn create_keypair(
        &self,
        caller: &Caller,
        new: NewKeypair,
    ) -> Result<(Keypair, Option<String>)> {
        caller.require(Role::Member, "create keypairs")?;
        let owner = self.keypair_owner(caller, new.user_id.as_deref())?;
        validate_name(&new.name)?;
        let key_type = new.key_type.unwrap_or_else(|| "ssh".into());
        if key_type != "ssh" && key_type != "x509" {
            return Err(Error::invalid(format!(
                "Invalid input for field/attribute type. Value: {key_type}. '{key_type}' is not one of ['ssh', 'x509']"
            )));
        }
        if self.store.keypair(owner, &new.name).await.is_ok() {
            return Err(Error::conflict(format!(
                "Key pair '{}' already exists.",
                new.name
            )));
        }
        let project = caller.project()?;
        let held = self.store.keypairs(owner).await?.len() as i64;
        self.check_keypair_quota(project, held + 1).await?;
        let (public_key, fingerprint, private_key) = match (new.public_key, key_type.as_str()) {
            (Some(key), "ssh") => {
                let fp = ssh_fingerprint(&key)?;
                (key.trim().to_string(), fp, None)
            }
            (Some(cert), _) => {
                let fp = x509_fingerprint(&cert).await?;
                (cert, fp, None)
            }
            (None, "ssh") => {
                let (public, private) = generate_ssh(&new.name).await?;
                let fp = ssh_fingerprint(&public)?;
                (public, fp, Some(private))
            }
            (None, _) => {
                let (cert, private) = generate_x509(&new.name).await?;
                let fp = x509_fingerprint(&cert).await?;
                (cert, fp, Some(private))
            }
        };
        let keypair = Keypair {
            id: 0,
            user_id: owner,
            name: new.name,
            key_type,
            public_key,
            fingerprint,
            created_at: Utc::now(),
        };
        let stored = self.store.insert_keypair(&keypair).await?;
        // Checked again once it counts (as Nova): two racing for the last
        // key pair may both go, never both stay.
        let held = self.store.keypairs(owner).await?.len() as i64;
        if let Err(e) = self.check_keypair_quota(project, held).await {
            self.store.delete_keypair(owner, &stored.name).await?;
            return Err(e);
        }
        Ok((stored, private_key))
    }

    pub async fn keypairs(&self, caller: &Caller, user_id: Option<&str>) -> Result<Vec<Keypair>> {
        caller.require(Role::Reader, "list keypairs")?;
        let owner = self.keypair_owner(caller, user_id)?;
        self.store.keypairs(owner).await
    }

    pub async fn keypair(
        &self,
        caller: &Caller,
        name: &str,
        user_id: Option<&str>,
    ) -> Result<Keypair> {
        caller.require(Role::Reader, "read keypairs")?;
        let owner = self.keypair_owner(caller, user_id)?;
        self.store.keypair(owner, name).await
    }

    pub async fn delete_keypair(
        &self,
        caller: &Caller,
        name: &str,
        user_id: Option<&str>,
    ) -> Result<()> {
        caller.require(Role::Member, "delete keypairs")?;
        let owner = self.keypair_owner(caller, user_id)?;
        self.store.delete_keypair(owner, name).await
    }

    /// The `key_name` of a new server: one of the caller's keypairs (400
    /// otherwise, as Nova).
    pub(crate) async fn server_key_name(&self, caller: &Caller, name: String) -> Result<String> {
        match self.store.keypair(caller.user_id, &name).await {
            Ok(k) => Ok(k.name),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(Error::invalid("Invalid key_name provided."))
            }
            Err(e) => Err(e),
        }
    }
}

/// `aa:bb:…` of MD5 over the key blob of `<type> <base64> [comment]`,
/// after checking the blob names `<type>`.
fn ssh_fingerprint(key: &str) -> Result<String> {
    let invalid = || Error::invalid("Keypair data is invalid: failed to generate fingerprint");
    let mut words = key.split_whitespace();
    let (kind, data) = (
        words.next().ok_or_else(invalid)?,
        words.next().ok_or_else(invalid)?,
    );
    let blob = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| invalid())?;
    let len = blob
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(invalid)?;
    if blob.get(4..4 + len) != Some(kind.as_bytes()) {
        return Err(invalid());
    }
    Ok(colon_hex(&Md5::digest(&blob)))
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

async fn run(program: &str, args: &[&str], dir: &Path) -> Result<String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::unavailable(format!("Cannot run {program}: {e}.")))?;
    if !out.status.success() {
        return Err(Error::internal(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A private scratch directory, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("snapstack-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir)
            .map_err(|e| Error::internal(format!("Cannot create {}: {e}.", dir.display())))?;
        Ok(Scratch(dir))
    }

    fn read(&self, name: &str) -> Result<String> {
        std::fs::read_to_string(self.0.join(name))
            .map_err(|e| Error::internal(format!("Cannot read the generated key: {e}.")))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (public key line, private key PEM).
async fn generate_ssh(name: &str) -> Result<(String, String)> {
    let dir = Scratch::new()?;
    let comment = format!("Generated-by-Nova {name}");
    run(
        "ssh-keygen",
        &[
            "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-C", &comment, "-f", "key",
        ],
        &dir.0,
    )
    .await?;
    Ok((dir.read("key.pub")?.trim().to_string(), dir.read("key")?))
}

/// (certificate PEM, private key PEM).
async fn generate_x509(name: &str) -> Result<(String, String)> {
    let dir = Scratch::new()?;
    let subject = format!("/CN={}", name.replace('/', "_"));
    run(
        "openssl",
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", &subject,
            "-keyout", "key.pem", "-out", "cert.pem",
        ],
        &dir.0,
    )
    .await?;
    Ok((dir.read("cert.pem")?, dir.read("key.pem")?))
}

/// SHA-1 of the certificate's DER, `aa:bb:…`.
async fn x509_fingerprint(cert: &str) -> Result<String> {
    let dir = Scratch::new()?;
    std::fs::write(dir.0.join("cert.pem"), cert)
        .map_err(|e| Error::internal(format!("Cannot write the certificate: {e}.")))?;
    let out = run(
        "openssl",
        &["x509", "-noout", "-fingerprint", "-sha1", "-in", "cert.pem"],
        &dir.0,
    )
    .await
    .map_err(|_| Error::invalid("Keypair data is invalid: failed to generate fingerprint"))?;
    let fp = out
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    Ok(fp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test@host";

    #[test]
    fn fingerprint_when_valid_key_then_md5_of_blob() {
        let fp = ssh_fingerprint(KEY).unwrap();

        assert_eq!(fp.split(':').count(), 16);
    }

    #[test]
    fn fingerprint_when_blob_names_other_type_then_invalid() {
        let wrong = KEY.replace("ssh-ed25519", "ssh-rsa");

        assert!(ssh_fingerprint(&wrong).is_err());
    }
}
