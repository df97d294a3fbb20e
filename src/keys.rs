//! The server's ed25519 signing key: generated on first start and kept in the
//! data dir as `signing.key` (`ed25519 <version> <base64 PKCS#8>`).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ruma::signatures::Ed25519KeyPair;

pub struct SigningKey {
    pub key_pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Key id as used in signatures, e.g. `ed25519:a_AbCd`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.key_pair.version())
    }

    pub fn load_or_generate(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("signing.key");
        if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            let mut parts = text.split_whitespace();
            let (Some("ed25519"), Some(version), Some(b64)) =
                (parts.next(), parts.next(), parts.next())
            else {
                anyhow::bail!(
                    "{}: expected `ed25519 <version> <base64 key>`",
                    path.display()
                );
            };
            let der = STANDARD_NO_PAD
                .decode(b64.trim_end_matches('='))
                .map_err(|e| anyhow::anyhow!("{}: bad base64: {e}", path.display()))?;
            let key_pair = Ed25519KeyPair::from_der(&der, version.to_owned())
                .map_err(|e| anyhow::anyhow!("{}: bad key: {e}", path.display()))?;
            return Ok(Self { key_pair });
        }
        let der = Ed25519KeyPair::generate();
        let version = format!("a_{}", &hex::encode(rand::random::<[u8; 3]>())[..4]);
        let line = format!("ed25519 {version} {}\n", STANDARD_NO_PAD.encode(&der[..]));
        write_private(&path, &line)?;
        let key_pair = Ed25519KeyPair::from_der(&der, version)
            .map_err(|e| anyhow::anyhow!("generated key: {e}"))?;
        tracing::info!(path = %path.display(), "generated a new server signing key");
        Ok(Self { key_pair })
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}
