//! Checkpoint signatures: the node's ed25519 key, its id, and the exact
//! bytes a `start` or `checkpoint` record's signature covers.
//!
//! # Key files
//!
//! `sinkhole audit keygen -o DIR` writes `audit.key` (mode 0600: the
//! 32-byte ed25519 secret seed as 64 lowercase hex digits and a newline)
//! and `audit.pub` (the 32-byte public key, the same way). The **key id** is
//! SHA-256 of the 32 public-key bytes; it is shown abbreviated (first 16
//! hex digits) and always compared in full.
//!
//! # Signed bytes (version 1)
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 18 | ASCII `sinkhole audit v1` followed by one 0x00 byte (domain separation) |
//! | 18 | 1 | record kind: 0x01 `start`, 0x02 `checkpoint` |
//! | 19 | 32 | key id: SHA-256 of the public key |
//! | 51 | 8 | `seq`, unsigned big-endian |
//! | 59 | 32 | chain head: the record's `prev` (for a checkpoint also its `hash`), raw bytes |
//! | 91 | 27 | `ts` exactly as written (`YYYY-MM-DDTHH:MM:SS.ffffffZ`, ASCII) |
//! | 118 | 8 | `records`, unsigned big-endian (0 for `start`) |
//! | 126 | 8 | `lost`, unsigned big-endian (0 for `start`) |
//!
//! 134 bytes in all, signed with plain Ed25519 (RFC 8032, not prehashed).
//! The record carries the public key as `sig_pub` (64 hex) and the
//! signature as `sig` (128 hex), just before `prev`.

use std::io::Write;
use std::path::Path;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::AuditError;
use super::record::Hash;

/// Length of the signed message.
pub const MESSAGE_LEN: usize = 134;
const CONTEXT: &[u8; 18] = b"sinkhole audit v1\0";
/// The fixed width of `ts`.
pub const TS_LEN: usize = 27;

/// Which record a signature is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignedKind {
    Start,
    Checkpoint,
}

impl SignedKind {
    fn byte(self) -> u8 {
        match self {
            SignedKind::Start => 1,
            SignedKind::Checkpoint => 2,
        }
    }
}

/// What a signature covers, field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedFields<'a> {
    pub kind: SignedKind,
    pub key_id: &'a Hash,
    pub seq: u64,
    pub head: &'a Hash,
    pub ts: &'a str,
    pub records: u64,
    pub lost: u64,
}

impl SignedFields<'_> {
    /// The exact bytes signed (see the module docs); `None` when `ts` is
    /// not the fixed 27-byte form, which no writer produces.
    pub fn message(&self) -> Option<[u8; MESSAGE_LEN]> {
        if self.ts.len() != TS_LEN {
            return None;
        }
        let mut m = [0u8; MESSAGE_LEN];
        m[..18].copy_from_slice(CONTEXT);
        m[18] = self.kind.byte();
        m[19..51].copy_from_slice(self.key_id);
        m[51..59].copy_from_slice(&self.seq.to_be_bytes());
        m[59..91].copy_from_slice(self.head);
        m[91..118].copy_from_slice(self.ts.as_bytes());
        m[118..126].copy_from_slice(&self.records.to_be_bytes());
        m[126..134].copy_from_slice(&self.lost.to_be_bytes());
        Some(m)
    }
}

/// SHA-256 of the public key bytes.
pub fn key_id_of(public: &[u8; 32]) -> Hash {
    Sha256::digest(public).into()
}

/// The abbreviated form people see: the first 16 hex digits.
pub fn short_id(id: &Hash) -> String {
    hex::encode(&id[..8])
}

/// The node's signing key, loaded once by the writer.
pub struct AuditSigner {
    key: SigningKey,
    id: Hash,
    pub_hex: String,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "AuditSigner({})", short_id(&self.id))
    }
}

impl AuditSigner {
    pub fn from_seed(seed: &[u8; 32]) -> AuditSigner {
        let key = SigningKey::from_bytes(seed);
        let public = key.verifying_key().to_bytes();
        AuditSigner {
            id: key_id_of(&public),
            pub_hex: hex::encode(public),
            key,
        }
    }

    /// Reads `audit.key` (64 hex digits; surrounding whitespace ignored).
    /// Refuses a key file other users can read.
    pub fn load(path: &Path) -> Result<AuditSigner, AuditError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| AuditError::io(path, e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(AuditError::Config(format!(
                "{}: the signing key must not be readable by group or others (chmod 600)",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| AuditError::io(path, e))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| {
            AuditError::Config(format!(
                "{}: not an audit signing key (64 hex digits expected)",
                path.display()
            ))
        })?;
        Ok(AuditSigner::from_seed(&seed))
    }

    pub fn key_id(&self) -> &Hash {
        &self.id
    }

    pub fn public_hex(&self) -> &str {
        &self.pub_hex
    }

    /// Signs the fields with this key (its id goes into the message).
    pub fn sign(
        &self,
        kind: SignedKind,
        seq: u64,
        head: &Hash,
        ts: &str,
        records: u64,
        lost: u64,
    ) -> Option<[u8; 64]> {
        let m = SignedFields {
            kind,
            key_id: &self.id,
            seq,
            head,
            ts,
            records,
            lost,
        }
        .message()?;
        Some(self.key.sign(&m).to_bytes())
    }
}

/// A public key an auditor trusts (`audit.pub`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditPublicKey {
    key: VerifyingKey,
    id: Hash,
}

impl AuditPublicKey {
    pub fn from_bytes(public: &[u8; 32]) -> Option<AuditPublicKey> {
        let key = VerifyingKey::from_bytes(public).ok()?;
        Some(AuditPublicKey {
            key,
            id: key_id_of(public),
        })
    }

    pub fn from_hex(s: &str) -> Option<AuditPublicKey> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut b).ok()?;
        AuditPublicKey::from_bytes(&b)
    }

    /// Reads `audit.pub` (64 hex digits).
    pub fn load(path: &Path) -> Result<AuditPublicKey, AuditError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuditError::io(path, e))?;
        AuditPublicKey::from_hex(&text).ok_or_else(|| {
            AuditError::Arg(format!(
                "{}: not an audit public key (64 hex digits expected)",
                path.display()
            ))
        })
    }

    pub fn key_id(&self) -> &Hash {
        &self.id
    }

    /// Whether `sig` is this key's signature over `fields` (whose key id
    /// must be this key's).
    pub fn verify(&self, fields: &SignedFields<'_>, sig: &[u8; 64]) -> bool {
        if fields.key_id != &self.id {
            return false;
        }
        let Some(m) = fields.message() else {
            return false;
        };
        self.key
            .verify_strict(&m, &Signature::from_bytes(sig))
            .is_ok()
    }
}

/// Writes a new key pair into `dir` (`audit.key` mode 0600, `audit.pub`),
/// refusing to overwrite either. Returns the signer for the new key.
pub fn keygen(dir: &Path) -> Result<AuditSigner, AuditError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
    let key_path = dir.join("audit.key");
    let pub_path = dir.join("audit.pub");
    if pub_path.exists() {
        return Err(AuditError::Arg(format!(
            "{} exists; one key per node: move it away first",
            pub_path.display()
        )));
    }
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let signer = AuditSigner::from_seed(&seed);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(|e| AuditError::io(&key_path, e))?;
    let mut text = hex::encode(seed);
    text.push('\n');
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| AuditError::io(&key_path, e))?;
    seed.fill(0);
    text.clear();
    std::fs::write(&pub_path, format!("{}\n", signer.public_hex()))
        .map_err(|e| AuditError::io(&pub_path, e))?;
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published test vector (also in the README): seed = 32 bytes of
    /// 0x07, a checkpoint at seq 10001 with head = 32 bytes of 0xab, ts
    /// 2025-03-01T12:00:00.000000Z, records 10000, lost 3. Checked against
    /// an independent implementation (Python `cryptography`'s Ed25519).
    #[test]
    fn test_vector() {
        let seed = [7u8; 32];
        let s = AuditSigner::from_seed(&seed);
        let head = [0xab; 32];
        let ts = "2025-03-01T12:00:00.000000Z";
        let fields = SignedFields {
            kind: SignedKind::Checkpoint,
            key_id: s.key_id(),
            seq: 10_001,
            head: &head,
            ts,
            records: 10_000,
            lost: 3,
        };
        let msg = fields.message().unwrap();
        let sig = s
            .sign(SignedKind::Checkpoint, 10_001, &head, ts, 10_000, 3)
            .unwrap();
        assert_eq!(s.public_hex(), VECTOR_PUB);
        assert_eq!(hex::encode(s.key_id()), VECTOR_KEY_ID);
        assert_eq!(hex::encode(msg), VECTOR_MESSAGE);
        assert_eq!(hex::encode(sig), VECTOR_SIG);
        let p = AuditPublicKey::from_hex(VECTOR_PUB).unwrap();
        assert!(p.verify(&fields, &sig));
    }

    const VECTOR_PUB: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
    const VECTOR_KEY_ID: &str = "fe812c12f3ab4ce6ac5db69ac352f906cb1b11ef43fb33e252ef7ff552263889";
    const VECTOR_MESSAGE: &str = concat!(
        "73696e6b686f6c652061756469742076310002",
        "fe812c12f3ab4ce6ac5db69ac352f906cb1b11ef43fb33e252ef7ff552263889",
        "0000000000002711",
        "abababababababababababababababababababababababababababababababab",
        "323032352d30332d30315431323a30303a30302e3030303030305a",
        "0000000000002710",
        "0000000000000003"
    );
    const VECTOR_SIG: &str = concat!(
        "658972bfbf171598b696e57c038f5a61d6c88e802b91560cbafeb2adc3037ef7",
        "1eaeb073880bb294eba70894efcf3f28ac6978ab9f96fb49401324369e573b03"
    );

    #[test]
    fn any_changed_field_fails() {
        let s = AuditSigner::from_seed(&[1u8; 32]);
        let p = AuditPublicKey::from_hex(s.public_hex()).unwrap();
        let other = AuditSigner::from_seed(&[2u8; 32]);
        let head = [3u8; 32];
        let ts = "2025-03-01T12:00:00.000000Z";
        let good = SignedFields {
            kind: SignedKind::Checkpoint,
            key_id: s.key_id(),
            seq: 5,
            head: &head,
            ts,
            records: 4,
            lost: 0,
        };
        let sig = s.sign(SignedKind::Checkpoint, 5, &head, ts, 4, 0).unwrap();
        assert!(p.verify(&good, &sig));
        let head2 = [4u8; 32];
        let variants = [
            SignedFields {
                kind: SignedKind::Start,
                ..good
            },
            SignedFields { seq: 6, ..good },
            SignedFields {
                head: &head2,
                ..good
            },
            SignedFields {
                ts: "2025-03-01T12:00:00.000001Z",
                ..good
            },
            SignedFields { records: 5, ..good },
            SignedFields { lost: 1, ..good },
            SignedFields {
                key_id: other.key_id(),
                ..good
            },
        ];
        for v in &variants {
            assert!(!p.verify(v, &sig), "{v:?}");
        }
        let forged = other
            .sign(SignedKind::Checkpoint, 5, &head, ts, 4, 0)
            .unwrap();
        assert!(!p.verify(&good, &forged));
        assert!(
            SignedFields {
                ts: "short",
                ..good
            }
            .message()
            .is_none()
        );
    }

    #[test]
    fn keygen_writes_a_private_key_and_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = keygen(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("audit.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = AuditSigner::load(&dir.path().join("audit.key")).unwrap();
        assert_eq!(loaded.key_id(), s.key_id());
        let p = AuditPublicKey::load(&dir.path().join("audit.pub")).unwrap();
        assert_eq!(p.key_id(), s.key_id());
        assert!(keygen(dir.path()).is_err());
        std::fs::set_permissions(
            dir.path().join("audit.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(AuditSigner::load(&dir.path().join("audit.key")).is_err());
    }
}
