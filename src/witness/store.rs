//! The witness's storage: append-only files in its directory, one per key.
//!
//! | file | what |
//! |---|---|
//! | `<key id, 64 hex>.jsonl` | every signed record accepted for that key, in the order received |
//! | `refused.jsonl` | validly signed records refused because they conflict with what is held (evidence) |
//! | `.lock` | held by the running witness |
//!
//! Each line is `{"received":"<RFC 3339 UTC>","verified":<bool>,"line":"<the record line, as a JSON string>"}`:
//! `line` is the exact bytes the node wrote and signed, so anyone can
//! re-check its signature; `verified` is true when the key was on the
//! witness's `--allow-key` list. Refused lines add `"reason"` and the
//! chain head the witness already held (`"held"`). A line is written and
//! fsynced before the witness answers 2xx (or 409 for a refusal), so an
//! acknowledged record is on disk. An unterminated last line (a crash
//! mid-append, never acknowledged) is cut off when the witness starts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::record::{Body, Hash, hex32, parse_record};
use crate::audit::sign::{AuditPublicKey, SignedFields, SignedKind, key_id_of};

use super::WitnessError;

const REFUSED_FILE: &str = "refused.jsonl";

#[derive(Serialize, Deserialize)]
struct Stored {
    received: String,
    verified: bool,
    line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    held: Option<String>,
}

/// One record the witness holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub seq: u64,
    /// The chain head it signs (its `prev`).
    pub head: Hash,
    /// `start` or `checkpoint`.
    pub kind: &'static str,
}

/// A signed record as posted, checked for form and signature.
#[derive(Debug)]
pub(crate) struct Submission {
    pub key_id: Hash,
    pub held: Held,
    pub line: String,
}

/// What became of a submission.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// New, stored.
    Stored,
    /// The witness already holds exactly this record (a retry).
    AlreadyHeld,
    /// Refused: the key is not on the allow list.
    UnknownKey,
    /// Refused: the signature does not verify.
    BadSignature,
    /// Refused and kept as evidence: a different chain head for a seq it
    /// holds.
    Conflict { held: Hash },
    /// Refused and kept as evidence: a seq below the newest it holds.
    Backwards { newest: u64 },
}

/// Parses and checks one posted line (a `start` or `checkpoint` record
/// with `sig_pub` and `sig`); `Err` with a reason for a malformed one,
/// `Ok(Err(verdict))` for a well-formed one that fails its signature.
pub(crate) fn check(line: &[u8]) -> Result<Result<Submission, Verdict>, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8")?;
    let text = text.trim_end_matches(['\r', '\n']);
    if text.contains('\n') {
        return Err("one record per request".into());
    }
    let p = parse_record(text.as_bytes())?;
    let (kind, sig, records, lost) = match &p.body {
        Body::Start { sig, .. } => (SignedKind::Start, sig, 0, 0),
        Body::Checkpoint {
            sig,
            records,
            lost,
            hash,
        } => {
            if *hash != p.prev {
                return Err("checkpoint hash differs from its prev".into());
            }
            (SignedKind::Checkpoint, sig, *records, *lost)
        }
        _ => return Err("only start and checkpoint records are anchored".into()),
    };
    let sig = sig.as_ref().ok_or("the record is not signed")?;
    let key_id = key_id_of(&sig.public);
    let Some(key) = AuditPublicKey::from_bytes(&sig.public) else {
        return Ok(Err(Verdict::BadSignature));
    };
    let fields = SignedFields {
        kind,
        key_id: &key_id,
        seq: p.seq,
        head: &p.prev,
        ts: &sig.ts,
        records,
        lost,
    };
    if !key.verify(&fields, &sig.sig) {
        return Ok(Err(Verdict::BadSignature));
    }
    Ok(Ok(Submission {
        key_id,
        held: Held {
            seq: p.seq,
            head: p.prev,
            kind: match kind {
                SignedKind::Start => "start",
                SignedKind::Checkpoint => "checkpoint",
            },
        },
        line: text.to_string(),
    }))
}

struct KeyLog {
    file: File,
    by_seq: BTreeMap<u64, Hash>,
}

/// The witness's state: what it holds per key, and its open files.
pub struct Store {
    dir: PathBuf,
    allowed: HashSet<Hash>,
    keys: HashMap<Hash, KeyLog>,
    refused: Option<File>,
    _lock: crate::dirlock::DirLock,
}

fn key_file(dir: &Path, key_id: &Hash) -> PathBuf {
    dir.join(format!("{}.jsonl", hex32(key_id).as_str()))
}

fn now_rfc3339() -> String {
    let t = crate::audit::time::format_ts(crate::audit::time::now_micros());
    t.as_str().to_string()
}

/// Reads one key file: every held record, in file order. A torn last line
/// is ignored (`cut` reports its start, for the witness to cut it off).
fn read_key_file(path: &Path) -> Result<(Vec<Held>, Option<u64>), WitnessError> {
    let data = std::fs::read(path).map_err(|e| WitnessError::io(path, e))?;
    let complete = match memchr::memrchr(b'\n', &data) {
        Some(i) => i + 1,
        None => 0,
    };
    let cut = (complete < data.len()).then_some(complete as u64);
    let mut out = Vec::new();
    for (n, l) in data[..complete].split(|&b| b == b'\n').enumerate() {
        if l.is_empty() {
            continue;
        }
        let bad = |why: String| WitnessError::Corrupt {
            path: path.to_path_buf(),
            line: n as u64 + 1,
            detail: why,
        };
        let s: Stored = serde_json::from_slice(l).map_err(|e| bad(e.to_string()))?;
        let p = parse_record(s.line.as_bytes()).map_err(bad)?;
        let kind = match p.body {
            Body::Start { .. } => "start",
            Body::Checkpoint { .. } => "checkpoint",
            _ => return Err(bad("not a start or checkpoint record".into())),
        };
        out.push(Held {
            seq: p.seq,
            head: p.prev,
            kind,
        });
    }
    Ok((out, cut))
}

/// What a witness directory holds for `key_id`, sorted by seq (for
/// `audit verify --anchors`); the file read, and nothing if it is absent.
pub fn held(dir: &Path, key_id: &Hash) -> Result<(PathBuf, Vec<Held>), WitnessError> {
    let path = key_file(dir, key_id);
    if !dir.is_dir() {
        return Err(WitnessError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        ));
    }
    if !path.exists() {
        return Ok((path, Vec::new()));
    }
    let (mut v, _) = read_key_file(&path)?;
    v.sort_by_key(|h| h.seq);
    Ok((path, v))
}

impl Store {
    /// Opens (creating) the directory, takes its lock and loads every key
    /// file. `allowed` empty: any key is accepted, as unverified.
    pub fn open(dir: &Path, allowed: HashSet<Hash>) -> Result<Store, WitnessError> {
        let lock = crate::dirlock::lock_dir(dir, "witness directory")
            .map_err(|e| WitnessError::Locked(e.to_string()))?;
        let mut keys = HashMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| WitnessError::io(dir, e))? {
            let entry = entry.map_err(|e| WitnessError::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".jsonl") else {
                continue;
            };
            let mut id = [0u8; 32];
            if stem.len() != 64 || hex::decode_to_slice(stem, &mut id).is_err() {
                continue;
            }
            let path = entry.path();
            let (held, cut) = read_key_file(&path)?;
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| WitnessError::io(&path, e))?;
            if let Some(len) = cut {
                tracing::warn!(file = %path.display(), "cutting off an unterminated last line (never acknowledged)");
                file.set_len(len).map_err(|e| WitnessError::io(&path, e))?;
            }
            let by_seq = held.into_iter().map(|h| (h.seq, h.head)).collect();
            keys.insert(id, KeyLog { file, by_seq });
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            allowed,
            keys,
            refused: None,
            _lock: lock,
        })
    }

    /// Records held for a key (tests, logs).
    pub fn count(&self, key_id: &Hash) -> usize {
        self.keys.get(key_id).map_or(0, |k| k.by_seq.len())
    }

    /// Decides on one submission and, when it is new or refused as a
    /// conflict, appends and fsyncs it before returning.
    pub(crate) fn submit(&mut self, sub: Submission) -> Result<Verdict, WitnessError> {
        let verified = !self.allowed.is_empty();
        if verified && !self.allowed.contains(&sub.key_id) {
            return Ok(Verdict::UnknownKey);
        }
        let path = key_file(&self.dir, &sub.key_id);
        let log = match self.keys.entry(sub.key_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| WitnessError::io(&path, e))?;
                v.insert(KeyLog {
                    file,
                    by_seq: BTreeMap::new(),
                })
            }
        };
        let verdict = match log.by_seq.get(&sub.held.seq) {
            Some(h) if *h == sub.held.head => return Ok(Verdict::AlreadyHeld),
            Some(h) => Verdict::Conflict { held: *h },
            None => match log.by_seq.last_key_value() {
                Some((&newest, _)) if newest > sub.held.seq => Verdict::Backwards { newest },
                _ => Verdict::Stored,
            },
        };
        let mut rec = Stored {
            received: now_rfc3339(),
            verified,
            line: sub.line,
            reason: None,
            held: None,
        };
        if verdict == Verdict::Stored {
            let mut bytes =
                serde_json::to_vec(&rec).map_err(|e| WitnessError::Internal(e.to_string()))?;
            bytes.push(b'\n');
            log.file
                .write_all(&bytes)
                .and_then(|()| log.file.sync_data())
                .map_err(|e| WitnessError::io(&path, e))?;
            log.by_seq.insert(sub.held.seq, sub.held.head);
            return Ok(verdict);
        }
        // Evidence: someone holding the key signed a different history.
        match &verdict {
            Verdict::Conflict { held } => {
                rec.reason = Some("conflict".into());
                rec.held = Some(hex32(held).as_str().to_string());
            }
            Verdict::Backwards { newest } => {
                rec.reason = Some(format!("backwards (newest held seq {newest})"));
            }
            _ => {}
        }
        let refused_path = self.dir.join(REFUSED_FILE);
        if self.refused.is_none() {
            self.refused = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&refused_path)
                    .map_err(|e| WitnessError::io(&refused_path, e))?,
            );
        }
        if let Some(f) = &mut self.refused {
            let mut bytes =
                serde_json::to_vec(&rec).map_err(|e| WitnessError::Internal(e.to_string()))?;
            bytes.push(b'\n');
            f.write_all(&bytes)
                .and_then(|()| f.sync_data())
                .map_err(|e| WitnessError::io(&refused_path, e))?;
        }
        Ok(verdict)
    }
}
