//! K-of-N minisign signatures over a list file.
//!
//! A push or pull carries one or more detached minisign signatures. Each
//! must verify with one of the list's configured signer keys over exactly
//! the bytes received; all must carry the same trusted comment; at least
//! `required_signatures` distinct configured keys must have signed. The
//! file is read in chunks (minisign's prehashed mode, the default since
//! minisign 0.8), so a large registry dump is never held in memory.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use minisign_verify::{PublicKey, Signature};
use thiserror::Error;

use super::comment::{self, CommentError, TrustedComment};

/// One configured signer: its public key and minisign's key id (as
/// `minisign` prints it: the key id in uppercase hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerKey {
    pub id: String,
    pub path: PathBuf,
    pub key: PublicKey,
}

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("{path}: {message}")]
    Bad { path: PathBuf, message: String },
}

/// The key id minisign prints for a base64 public key or signature line:
/// bytes 2..10 as a little-endian number in uppercase hex.
fn key_id_of(b64_line: &str) -> Option<String> {
    let bin = base64::engine::general_purpose::STANDARD
        .decode(b64_line.trim())
        .ok()?;
    let id: [u8; 8] = bin.get(2..10)?.try_into().ok()?;
    Some(format!("{:X}", u64::from_le_bytes(id)))
}

/// Read a minisign `.pub` file.
pub fn load_signer(path: &Path) -> Result<SignerKey, KeyError> {
    let bad = |message: String| KeyError::Bad {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let key =
        PublicKey::decode(&text).map_err(|e| bad(format!("not a minisign public key: {e}")))?;
    let id = text
        .lines()
        .nth(1)
        .and_then(key_id_of)
        .ok_or_else(|| bad("not a minisign public key".into()))?;
    Ok(SignerKey {
        id,
        path: path.to_path_buf(),
        key,
    })
}

/// Why signatures were refused (422).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("no signature (send one Sinkhole-Signature header per signature)")]
    Missing,
    #[error("signature {index} is not a base64 minisign signature file")]
    Malformed { index: usize },
    #[error("signature {index} is in minisign's legacy mode; sign with minisign 0.8 or later")]
    Legacy { index: usize },
    #[error("signature {index} (key {key}) is not from a signer configured for list {list}")]
    UnknownKey {
        index: usize,
        key: String,
        list: String,
    },
    #[error("signature {index} (key {key}) does not verify over these bytes")]
    Invalid { index: usize, key: String },
    #[error("signatures carry different trusted comments ({first:?} and {other:?})")]
    DifferentComments { first: String, other: String },
    #[error("{found} distinct signer(s), {required} required")]
    TooFew { found: usize, required: usize },
    #[error("{0}")]
    Comment(#[from] CommentError),
    #[error("the signed trusted comment is for list {signed:?}, not {list:?}")]
    OtherList { signed: String, list: String },
    #[error("cannot read the received file: {0}")]
    Io(String),
}

/// What verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// `None` for an unsigned list pushed or pulled without a signature.
    pub comment: Option<TrustedComment>,
    /// The signers' key ids, in configuration order.
    pub signers: Vec<String>,
}

/// One received signature and the key id it names (minisign's form).
#[derive(Clone)]
pub struct ReceivedSig {
    pub sig: Signature,
    pub key_id: String,
}

impl std::fmt::Debug for ReceivedSig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedSig")
            .field("key_id", &self.key_id)
            .field("trusted_comment", &self.sig.trusted_comment())
            .finish()
    }
}

/// Decode the `Sinkhole-Signature` header values (base64 of a `.minisig`
/// file) into signatures.
pub fn decode_signatures(headers: &[&[u8]]) -> Result<Vec<ReceivedSig>, SignatureError> {
    let mut out = Vec::with_capacity(headers.len());
    for (index, h) in headers.iter().enumerate() {
        let malformed = || SignatureError::Malformed { index };
        let bin = base64::engine::general_purpose::STANDARD
            .decode(h.trim_ascii())
            .map_err(|_| malformed())?;
        let text = std::str::from_utf8(&bin).map_err(|_| malformed())?;
        out.push(decode_minisig(text).ok_or_else(malformed)?);
    }
    Ok(out)
}

/// One `.minisig` file's text.
pub fn decode_minisig(text: &str) -> Option<ReceivedSig> {
    let sig = Signature::decode(text).ok()?;
    let key_id = text.lines().nth(1).and_then(key_id_of)?;
    Some(ReceivedSig { sig, key_id })
}

/// Verify `sigs` over the file at `path` for the list `list` that needs
/// `required` distinct signers among `keys`.
pub fn verify_file(
    path: &Path,
    sigs: &[ReceivedSig],
    keys: &[SignerKey],
    required: usize,
    list: &str,
) -> Result<Verified, SignatureError> {
    if sigs.is_empty() {
        if required == 0 {
            return Ok(Verified {
                comment: None,
                signers: Vec::new(),
            });
        }
        return Err(SignatureError::Missing);
    }
    let first = sigs[0].sig.trusted_comment();
    if let Some(other) = sigs.iter().find(|s| s.sig.trusted_comment() != first) {
        return Err(SignatureError::DifferentComments {
            first: first.chars().take(100).collect(),
            other: other.sig.trusted_comment().chars().take(100).collect(),
        });
    }
    // Each signature's key among the configured ones.
    let mut verifiers = Vec::with_capacity(sigs.len());
    for (index, received) in sigs.iter().enumerate() {
        let mut found = None;
        for (k, signer) in keys.iter().enumerate() {
            match signer.key.verify_stream(&received.sig) {
                Ok(v) => {
                    found = Some((k, v));
                    break;
                }
                Err(minisign_verify::Error::UnsupportedLegacyMode) => {
                    return Err(SignatureError::Legacy { index });
                }
                Err(_) => {}
            }
        }
        match found {
            Some(f) => verifiers.push(f),
            None => {
                return Err(SignatureError::UnknownKey {
                    index,
                    key: received.key_id.clone(),
                    list: list.to_string(),
                });
            }
        }
    }
    let mut file = std::fs::File::open(path).map_err(|e| SignatureError::Io(e.to_string()))?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| SignatureError::Io(e.to_string()))?;
        if n == 0 {
            break;
        }
        for (_, v) in &mut verifiers {
            v.update(&buf[..n]);
        }
    }
    let mut signed_by = vec![false; keys.len()];
    for (index, (k, mut v)) in verifiers.into_iter().enumerate() {
        if v.finalize().is_err() {
            return Err(SignatureError::Invalid {
                index,
                key: keys[k].id.clone(),
            });
        }
        signed_by[k] = true;
    }
    let signers: Vec<String> = keys
        .iter()
        .zip(&signed_by)
        .filter(|(_, s)| **s)
        .map(|(k, _)| k.id.clone())
        .collect();
    if signers.len() < required {
        return Err(SignatureError::TooFew {
            found: signers.len(),
            required,
        });
    }
    let comment = comment::parse(first)?;
    if comment.list != list {
        return Err(SignatureError::OtherList {
            signed: comment.list,
            list: list.to_string(),
        });
    }
    Ok(Verified {
        comment: Some(comment),
        signers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `minisign -G -W` and `minisign -S -t "list=afm version=3"`
    // over "blocked.example\n".
    const A_PUB: &str = "untrusted comment: minisign public key B5642AFC7538CA3\nRWSjjFPHr0JWC7ZWE831XNdfb/g/dQkrIDcmfOU85PTANMjsJfFejcvV\n";
    const B_PUB: &str = "untrusted comment: minisign public key C1D81AB9A8CAE72F\nRWQv58qouRrYwc1/Holg1uoC1nrJBAESGG0Lki12og2fennEJOtsIUkF\n";
    const A_SIG: &str = "untrusted comment: signature from minisign secret key\nRUSjjFPHr0JWC8Jg/enw3UOeaFHxbSry87OJmB9NsjgVsgYdNXyem8rpMqPAv1mRMSYb1EiqrNEUhAiFsyQRROJ9f8v+u0tJWQk=\ntrusted comment: list=afm version=3\nr0XMl/x1bHtdKIOHB+dHhCJNzRuZQdW5QLgDGBoYYuxEixeioinYmBiFMIEZshcRy1Y23MTmsnrX85v8E+vrDg==\n";
    const B_SIG: &str = "untrusted comment: signature from minisign secret key\nRUQv58qouRrYwX6kM5O386aQ+PZwgYPHhMkvR8R66+/CDLWZdbNGIyrG4fJermxEArTfDg5PNJAOJMWMxKDjz4BP6ku/IqnsiwU=\ntrusted comment: list=afm version=3\nXaj0XCK8zd5A/0RJq/owd+gO519Enouxs3N88spalWhdzMzlmV07oR04X5FwPyZWaFn9/Uix0w98OqhcQYaiDQ==\n";

    fn keys(dir: &Path) -> Vec<SignerKey> {
        [("a.pub", A_PUB), ("b.pub", B_PUB)]
            .iter()
            .map(|(n, t)| {
                let p = dir.join(n);
                std::fs::write(&p, t).unwrap();
                load_signer(&p).unwrap()
            })
            .collect()
    }

    fn header(text: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(text)
            .into_bytes()
    }

    #[test]
    fn k_of_n_over_the_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(dir.path());
        assert_eq!(keys[0].id, "B5642AFC7538CA3");
        assert_eq!(keys[1].id, "C1D81AB9A8CAE72F");
        let file = dir.path().join("list");
        std::fs::write(&file, "blocked.example\n").unwrap();
        let (ha, hb) = (header(A_SIG), header(B_SIG));
        let both = decode_signatures(&[&ha, &hb]).unwrap();
        let v = verify_file(&file, &both, &keys, 2, "afm").unwrap();
        assert_eq!(v.signers, vec!["B5642AFC7538CA3", "C1D81AB9A8CAE72F"]);
        assert_eq!(v.comment.unwrap().version, 3);
        // One signer is not two, even when sent twice.
        let twice = decode_signatures(&[&ha, &ha]).unwrap();
        assert_eq!(
            verify_file(&file, &twice, &keys, 2, "afm").unwrap_err(),
            SignatureError::TooFew {
                found: 1,
                required: 2
            }
        );
        // Another list's name in the comment.
        assert!(matches!(
            verify_file(&file, &both, &keys, 1, "other").unwrap_err(),
            SignatureError::OtherList { .. }
        ));
        // A key that is not configured.
        assert!(matches!(
            verify_file(&file, &both[1..], &keys[..1], 1, "afm").unwrap_err(),
            SignatureError::UnknownKey { index: 0, .. }
        ));
        assert_eq!(
            verify_file(&file, &[], &keys, 1, "afm").unwrap_err(),
            SignatureError::Missing
        );
        assert_eq!(
            verify_file(&file, &[], &keys, 0, "afm").unwrap().comment,
            None
        );
        // One byte changed.
        std::fs::write(&file, "blocked.example.\n").unwrap();
        assert!(matches!(
            verify_file(&file, &both, &keys, 1, "afm").unwrap_err(),
            SignatureError::Invalid { index: 0, .. }
        ));
        assert_eq!(
            decode_signatures(&[b"not base64!"]).unwrap_err(),
            SignatureError::Malformed { index: 0 }
        );
        let garbage = header("hello");
        assert_eq!(
            decode_signatures(&[&garbage]).unwrap_err(),
            SignatureError::Malformed { index: 0 }
        );
    }
}
