//! TSIG (RFC 8945) for `[rpz.serve]` transfers: the key from a BIND key
//! file, the request's MAC checked with hickory-proto's `TSigner`, and
//! every message of the answer signed, the first over the request's MAC
//! and the full TSIG variables, each later one over the previous MAC and
//! the timers only (RFC 8945 §5.3.1), as BIND signs and `dig` checks.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::op::Message;
use hickory_proto::rr::TSigResponseContext;
use hickory_proto::rr::TSigner;
use hickory_proto::rr::rdata::tsig::{TSIG, TsigAlgorithm, TsigError, make_tsig_record};
use hickory_proto::rr::{Name, Record};
use thiserror::Error;

/// Seconds of clock difference accepted (BIND's default).
const FUDGE: u16 = 300;

#[derive(Debug, Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// A key as BIND's key files hold it: `key "NAME" { algorithm ALG;
/// secret "BASE64"; };` (what `tsig-keygen` writes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyFile {
    pub name: String,
    pub algorithm: String,
    pub secret: Vec<u8>,
}

/// Parse a BIND key file's text (`# //` and `/* */` comments allowed).
pub(crate) fn parse_key_file(text: &str) -> Result<KeyFile, String> {
    use base64::Engine as _;
    // Comments out, then split into words and punctuation.
    let mut clean = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else if rest.starts_with("//") || rest.starts_with('#') {
            rest = rest.find('\n').map_or("", |i| &rest[i..]);
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            clean.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let spaced = clean
        .replace('{', " { ")
        .replace('}', " } ")
        .replace(';', " ; ");
    let words: Vec<&str> = spaced.split_whitespace().collect();
    let unquote = |w: &str| w.trim_matches('"').to_string();
    let mut name = None;
    let mut algorithm = None;
    let mut secret = None;
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            "key" if name.is_none() => {
                name = words.get(i + 1).map(|w| unquote(w));
                i += 2;
            }
            "algorithm" => {
                algorithm = words.get(i + 1).map(|w| unquote(w).to_ascii_lowercase());
                i += 2;
            }
            "secret" => {
                secret = words.get(i + 1).map(|w| unquote(w));
                i += 2;
            }
            _ => i += 1,
        }
    }
    let name = name
        .filter(|n| !n.is_empty() && n != "{")
        .ok_or("no `key \"NAME\"`")?;
    let algorithm = algorithm.ok_or("no `algorithm`")?;
    let secret = secret.ok_or("no `secret`")?;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(secret.as_bytes())
        .map_err(|e| format!("the secret is not base64: {e}"))?;
    if secret.is_empty() {
        return Err("empty secret".into());
    }
    Ok(KeyFile {
        name,
        algorithm,
        secret,
    })
}

/// The key a zone is served with.
#[derive(Clone)]
pub(crate) struct Key {
    signer: TSigner,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Key")
            .field("name", self.signer.signer_name())
            .finish_non_exhaustive()
    }
}

/// Why a request is not let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// No TSIG at all: REFUSED.
    Unsigned,
    /// Another key or algorithm, a bad MAC, or a time outside the fudge:
    /// NOTAUTH.
    BadSignature,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Key {
    /// Read a BIND key file (hmac-sha256, hmac-sha384 or hmac-sha512).
    pub(crate) fn load(path: &Path) -> Result<Key, KeyFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: p.clone(),
            source,
        })?;
        let invalid = |message: String| KeyFileError::Invalid {
            path: p.clone(),
            message,
        };
        let kf = parse_key_file(&text).map_err(&invalid)?;
        Key::new(&kf).map_err(invalid)
    }

    pub(crate) fn new(kf: &KeyFile) -> Result<Key, String> {
        let algorithm = match kf.algorithm.as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(format!(
                    "algorithm {other} (hmac-sha256, hmac-sha384 or hmac-sha512)"
                ));
            }
        };
        let name = Name::from_ascii(&kf.name).map_err(|e| format!("key name: {e}"))?;
        let signer =
            TSigner::new(kf.secret.clone(), algorithm, name, FUDGE).map_err(|e| e.to_string())?;
        Ok(Key { signer })
    }

    /// Check a request's TSIG; the request's MAC (what the answer is
    /// signed over) when it is good.
    pub(crate) fn verify(&self, packet: &[u8]) -> Result<Vec<u8>, Rejected> {
        let Ok(m) = Message::from_vec(packet) else {
            return Err(Rejected::Unsigned);
        };
        if m.signature().is_none() {
            return Err(Rejected::Unsigned);
        }
        let (mac, _, valid) = self
            .signer
            .verify_message_byte(packet, None, true)
            .map_err(|_| Rejected::BadSignature)?;
        if !valid.contains(&now()) {
            return Err(Rejected::BadSignature);
        }
        Ok(mac)
    }

    /// A signer for the messages of one answer, in order; `request_mac`
    /// from [`Key::verify`].
    pub(crate) fn chain(&self, request_mac: Vec<u8>) -> ChainSigner {
        ChainSigner {
            signer: self.signer.clone(),
            request_mac,
            previous: None,
            time: now(),
        }
    }

    /// Sign the messages of one answer in order (each gets a TSIG record
    /// as its last additional).
    #[cfg(test)]
    pub(crate) fn sign_all(&self, request_mac: &[u8], messages: Vec<Message>) -> Vec<Vec<u8>> {
        let mut chain = self.chain(request_mac.to_vec());
        messages.into_iter().filter_map(|m| chain.sign(m)).collect()
    }
}

/// Signs the messages of one answer as a chain: the first over the
/// request's MAC and the full TSIG variables, each later one over the
/// previous MAC and the timers only (RFC 8945 §5.3.1).
pub(crate) struct ChainSigner {
    signer: TSigner,
    request_mac: Vec<u8>,
    previous: Option<Vec<u8>>,
    time: u64,
}

impl ChainSigner {
    /// The next message, signed and encoded; `None` if it cannot be
    /// encoded or signed (the chain then ends: later messages would not
    /// verify without it).
    pub(crate) fn sign(&mut self, mut m: Message) -> Option<Vec<u8>> {
        let unsigned = m.to_vec().ok()?;
        let time = self.time;
        let record: Box<Record<TSIG>> = match &self.previous {
            None => TSigResponseContext::new(
                m.metadata.id,
                time,
                self.signer.clone(),
                self.request_mac.clone(),
                None,
            )
            .sign(&unsigned)
            .ok()?,
            Some(prev) => {
                let mut tbs = Vec::with_capacity(2 + prev.len() + unsigned.len() + 8);
                tbs.extend_from_slice(&(prev.len() as u16).to_be_bytes());
                tbs.extend_from_slice(prev);
                tbs.extend_from_slice(&unsigned);
                tbs.extend_from_slice(&((time >> 32) as u16).to_be_bytes());
                tbs.extend_from_slice(&(time as u32).to_be_bytes());
                tbs.extend_from_slice(&FUDGE.to_be_bytes());
                let mac = self.signer.sign(&tbs).ok()?;
                let tsig = TSIG::new(
                    self.signer.algorithm().clone(),
                    time,
                    FUDGE,
                    mac,
                    m.metadata.id,
                    None::<TsigError>,
                    Vec::new(),
                );
                Box::new(make_tsig_record(self.signer.signer_name().clone(), tsig))
            }
        };
        self.previous = Some(record.data.mac.clone());
        m.set_signature(record);
        m.to_vec().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "key \"xfr-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0ISE=\";\n};\n";

    #[test]
    fn bind_key_files_parse() {
        let k = parse_key_file(KEY).unwrap();
        assert_eq!(k.name, "xfr-key");
        assert_eq!(k.algorithm, "hmac-sha256");
        assert_eq!(k.secret, b"secret-secret-secret-secret!!");
        let commented = format!("# made by tsig-keygen\n/* a\n b */ {KEY} // end\n");
        assert_eq!(parse_key_file(&commented).unwrap(), k);
        let tight = "key xfr-key{algorithm HMAC-SHA512;secret \"AAEC\";};";
        let k = parse_key_file(tight).unwrap();
        assert_eq!(
            (k.name.as_str(), k.algorithm.as_str()),
            ("xfr-key", "hmac-sha512")
        );
        for bad in [
            "",
            "key \"k\" { algorithm hmac-sha256; };",
            "key \"k\" { secret \"AAEC\"; };",
            "key \"k\" { algorithm hmac-sha256; secret \"!!!\"; };",
            "algorithm hmac-sha256; secret \"AAEC\";",
        ] {
            assert!(parse_key_file(bad).is_err(), "{bad:?}");
        }
        let md5 = KeyFile {
            algorithm: "hmac-md5".into(),
            ..parse_key_file(KEY).unwrap()
        };
        assert!(Key::new(&md5).is_err());
    }

    proptest::proptest! {
        #[test]
        fn key_file_parsing_never_panics(text in "\\PC{0,200}") {
            let _ = parse_key_file(&text);
        }
    }

    #[test]
    fn a_signed_request_verifies_and_the_signed_answer_chain_checks_out() {
        use hickory_proto::op::{Message, Query};
        use hickory_proto::rr::RecordType;
        let key = Key::new(&parse_key_file(KEY).unwrap()).unwrap();
        let apex = Name::from_ascii("rpz.test.").unwrap();
        // A client signs its AXFR request as dig -y would.
        let mut q = Message::query();
        q.metadata.id = 7;
        q.add_query(Query::query(apex.clone(), RecordType::AXFR));
        let (sig, verifier) = key.signer.sign_message(&q, now()).unwrap();
        q.set_signature(sig);
        let packet = q.to_vec().unwrap();
        let mac = key.verify(&packet).unwrap();
        // Three answer messages, signed as a chain; the client's verifier
        // (hickory's, as used for transfers) accepts each in turn.
        let msgs: Vec<Message> = (0..3)
            .map(|_| {
                let mut m = Message::response(7, hickory_proto::op::OpCode::Query);
                m.add_query(Query::query(apex.clone(), RecordType::AXFR));
                m
            })
            .collect();
        let signed = key.sign_all(&mac, msgs);
        assert_eq!(signed.len(), 3);
        let mut verifier = verifier.unwrap();
        for (i, s) in signed.iter().enumerate() {
            verifier
                .verify(s)
                .unwrap_or_else(|e| panic!("message {i}: {e}"));
        }
        // Unsigned, and signed with another secret.
        let mut plain = Message::query();
        plain.add_query(Query::query(apex.clone(), RecordType::AXFR));
        assert_eq!(
            key.verify(&plain.to_vec().unwrap()),
            Err(Rejected::Unsigned)
        );
        let other = Key::new(&KeyFile {
            secret: b"another-secret-entirely".to_vec(),
            ..parse_key_file(KEY).unwrap()
        })
        .unwrap();
        let mut q = Message::query();
        q.add_query(Query::query(apex, RecordType::AXFR));
        let (sig, _) = other.signer.sign_message(&q, now()).unwrap();
        q.set_signature(sig);
        assert_eq!(
            key.verify(&q.to_vec().unwrap()),
            Err(Rejected::BadSignature)
        );
    }
}
