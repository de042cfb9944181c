//! `audit verify`: walks the chain over every file and names the first
//! place it breaks.
//!
//! Each record is judged against the one before it, with one record of
//! lookahead to tell the cases apart:
//! - a line whose bytes changed no longer hashes to the next line's `prev`
//!   while the seqs around it stay consecutive (`edited`; the lookahead tells
//!   whether the changed line is this one or the one before);
//! - a removed line leaves a seq gap and a `prev` mismatch (`dropped`); at a
//!   file boundary that is a deleted or cut file (`missing-file`);
//! - swapped lines show a seq going backwards, or a gap that the very next
//!   record fills (`reordered`);
//! - an unterminated last line is a torn write (`truncated` inside the
//!   chain unless the next record acknowledges it; only a warning at the very
//!   end of the newest file, where a crash leaves it).

use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::AuditError;
use super::reader::{Event, LogFile, lines, list_files, scan};
use super::record::{
    Body, GENESIS, Hash, Parsed, Sig, hash_line, hex32, parse_hit_fast, parse_record,
};
use super::sign::{AuditPublicKey, SignedFields, SignedKind, key_id_of, short_id};

/// What is wrong at the first bad place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// A line's bytes were changed (or it is not a valid record).
    Edited,
    /// Records are missing inside a file: a seq gap with no `lost` record.
    Dropped,
    /// Records are out of order.
    Reordered,
    /// A file other than the newest ends in the middle of a line.
    Truncated,
    /// The chain breaks between two files, or the oldest file does not
    /// start the chain and no `retention` record says why: a file was
    /// deleted (or cut short at a line boundary).
    MissingFile,
    /// No audit records at all.
    Empty,
    /// A `start` or `checkpoint` signature does not verify with the given
    /// key, is by another key, or is missing where the log is signed.
    BadSignature,
    /// The witness holds a checkpoint the log does not have as it was
    /// signed: the log was rewritten, truncated or rolled back.
    WitnessMismatch,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Edited => "edited",
            ProblemKind::Dropped => "dropped",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Truncated => "truncated",
            ProblemKind::MissingFile => "missing-file",
            ProblemKind::Empty => "empty",
            ProblemKind::BadSignature => "bad-signature",
            ProblemKind::WitnessMismatch => "witness-mismatch",
        }
    }
}

/// The first place the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// File name (within the log directory).
    pub file: String,
    /// 1-based line number in that file.
    pub line: u64,
    pub kind: ProblemKind,
    pub detail: String,
}

/// Where the verified chain begins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum ChainStart {
    /// No records.
    None,
    /// The first record chains from 64 zeros: the log's very beginning.
    Genesis,
    /// Older files were deleted by retention; a `retention` record names
    /// this record as the new start.
    Retention { seq: u64, recorded_by: u64 },
    /// The oldest record chains from something that is not there and no
    /// retention record accounts for it.
    Unrecorded { seq: u64 },
}

/// The result of [`verify`]. `problem` is `None` when the chain is intact;
/// `warnings` lists torn lines and other things that are not tampering.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub path: PathBuf,
    pub files: usize,
    pub records: u64,
    pub hits: u64,
    pub checkpoints: u64,
    /// Records declared lost by `lost` records (queue overflow or write
    /// errors at the time): known gaps, not tampering.
    pub lost: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub chain_start: ChainStart,
    /// Torn (incomplete) lines found, acknowledged or at the very end.
    pub torn: u64,
    pub warnings: Vec<String>,
    /// With `--key`: what the signatures showed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures: Option<SignatureReport>,
    /// With `--anchors`: what the witness holds and how much of the log it
    /// covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchors: Option<AnchorReport>,
    pub problem: Option<Problem>,
}

/// Signature checks against the auditor's public key.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureReport {
    /// The full key id (SHA-256 of the public key), hex.
    pub key_id: String,
    /// `start` and `checkpoint` records whose signature verified.
    pub verified: u64,
    /// Unsigned ones before the first signed `start` (signing was
    /// configured later): not covered by a signature.
    pub unsigned_before_signing: u64,
}

/// The witness's view.
#[derive(Clone, Debug, Serialize)]
pub struct AnchorReport {
    pub witness_file: PathBuf,
    /// Signed records the witness holds for this key.
    pub held: u64,
    /// Held records found in the log with the same seq and chain head.
    pub matched: u64,
    /// Held records older than the log's chain start (files removed by
    /// retention): nothing to compare against.
    pub before_chain_start: u64,
    /// The newest seq the witness confirms.
    pub last_anchored_seq: Option<u64>,
    /// Records after it, which only the chain (not the witness) vouches
    /// for: a running log always has some.
    pub unanchored_records: u64,
    pub unanchored_first_seq: Option<u64>,
    pub unanchored_last_seq: Option<u64>,
}

/// What `verify` checks besides the chain.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Check every signed record against this key (`--key audit.pub`).
    pub key: Option<AuditPublicKey>,
    /// A witness directory (`--anchors`): compare what it holds for the
    /// key. Needs `key`.
    pub anchors: Option<PathBuf>,
}

/// Exit code for an intact log with an unanchored tail under
/// `--require-anchored`.
pub const EXIT_UNANCHORED: i32 = 3;

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }

    /// 0 intact (warnings allowed), 1 broken.
    pub fn exit_code(&self) -> i32 {
        if self.is_intact() { 0 } else { 1 }
    }

    /// Like [`VerifyReport::exit_code`], and with `require_anchored` 3 for
    /// an intact log with records the witness does not confirm.
    pub fn exit_code_requiring_anchors(&self, require_anchored: bool) -> i32 {
        let tail = self
            .anchors
            .as_ref()
            .is_none_or(|a| a.unanchored_records > 0);
        match self.exit_code() {
            0 if require_anchored && tail => EXIT_UNANCHORED,
            c => c,
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seqs = match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => format!(", seq {a}..={b}"),
            _ => String::new(),
        };
        writeln!(
            f,
            "{}: {} file(s), {} records ({} hits, {} checkpoints, {} declared lost){seqs}",
            self.path.display(),
            self.files,
            self.records,
            self.hits,
            self.checkpoints,
            self.lost
        )?;
        match &self.chain_start {
            ChainStart::None => {}
            ChainStart::Genesis => writeln!(f, "chain start: genesis")?,
            ChainStart::Retention { seq, recorded_by } => writeln!(
                f,
                "chain start: seq {seq}, older files removed by retention (recorded at seq {recorded_by})"
            )?,
            ChainStart::Unrecorded { seq } => writeln!(f, "chain start: seq {seq}, not recorded")?,
        }
        if let Some(sr) = &self.signatures {
            let id = sr.key_id.get(..16).unwrap_or(&sr.key_id);
            write!(
                f,
                "signatures: {} start/checkpoint record(s) verified with key {id}",
                sr.verified
            )?;
            if sr.unsigned_before_signing > 0 {
                write!(
                    f,
                    " ({} unsigned before signing began)",
                    sr.unsigned_before_signing
                )?;
            }
            writeln!(f)?;
        }
        if let Some(a) = &self.anchors {
            write!(
                f,
                "anchors: the witness holds {} record(s), {} found in the log",
                a.held, a.matched
            )?;
            if a.before_chain_start > 0 {
                write!(f, ", {} before the chain start", a.before_chain_start)?;
            }
            match a.last_anchored_seq {
                Some(s) => writeln!(f, "; anchored through seq {s}")?,
                None => writeln!(f, "; nothing in the log is anchored yet")?,
            }
            match (a.unanchored_first_seq, a.unanchored_last_seq) {
                (Some(x), Some(y)) if a.unanchored_records > 0 => writeln!(
                    f,
                    "unanchored tail: {} record(s), seq {x}..={y} (vouched for by the chain only)",
                    a.unanchored_records
                )?,
                _ => writeln!(f, "unanchored tail: none")?,
            }
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        match &self.problem {
            None if self.anchors.is_some() => writeln!(f, "OK: chain intact, signed and anchored"),
            None if self.signatures.is_some() => writeln!(f, "OK: chain intact and signed"),
            None => writeln!(f, "OK: chain intact"),
            Some(p) => writeln!(
                f,
                "BROKEN: {} line {}: {}: {}",
                p.file,
                p.line,
                p.kind.as_str(),
                p.detail
            ),
        }
    }
}

/// What a worker computes for one line.
pub(crate) struct LineRes {
    hash: Hash,
    parsed: Result<Parsed, String>,
}

pub(crate) fn check_chunk(chunk: &[u8]) -> Vec<LineRes> {
    lines(chunk)
        .map(|l| LineRes {
            hash: hash_line(l),
            parsed: parse_hit_fast(l).map_or_else(|| parse_record(l), Ok),
        })
        .collect()
}

struct Rec {
    file: usize,
    line: u64,
    hash: Hash,
    parsed: Result<Parsed, String>,
    /// Torn tails between the previous record and this one.
    torn_before: Vec<TornSeen>,
}

impl Rec {
    fn ok(&self) -> Option<&Parsed> {
        self.parsed.as_ref().ok()
    }
}

#[derive(Clone, Copy)]
struct TornSeen {
    file: usize,
    line: u64,
    bytes: u64,
}

#[derive(Clone, Copy)]
struct Prev {
    file: usize,
    line: u64,
    hash: Hash,
    seq: u64,
}

enum Start {
    Unseen,
    Genesis,
    Pending { seq: u64, prev: Hash, file: usize },
    Confirmed { seq: u64, recorded_by: u64 },
}

const MAX_WARNINGS: usize = 100;

/// The chain walk, fed one record at a time in file order.
pub(crate) struct Checker {
    names: Vec<String>,
    prev: Option<Prev>,
    held: Option<Rec>,
    pending_torn: Vec<TornSeen>,
    /// Records and lost seqs since the last `start`, for checkpoints.
    session: Option<(u64, u64)>,
    start: Start,
    key: Option<AuditPublicKey>,
    /// The seq of the first signed `start`: from there on every start and
    /// checkpoint must be signed (a stripped signature is tampering).
    signing_since: Option<u64>,
    signed_ok: u64,
    unsigned_before: u64,
    /// Every start and checkpoint: seq → (chain head, records up to and
    /// including it, file, line), for the witness comparison.
    points: std::collections::BTreeMap<u64, Point>,
    report: VerifyReport,
}

#[derive(Clone, Copy)]
pub(crate) struct Point {
    head: Hash,
    through: u64,
    file: usize,
    line: u64,
}

impl Checker {
    pub(crate) fn new(path: &Path, names: Vec<String>) -> Checker {
        Checker {
            report: VerifyReport {
                path: path.to_path_buf(),
                files: names.len(),
                records: 0,
                hits: 0,
                checkpoints: 0,
                lost: 0,
                first_seq: None,
                last_seq: None,
                chain_start: ChainStart::None,
                torn: 0,
                warnings: Vec::new(),
                signatures: None,
                anchors: None,
                problem: None,
            },
            names,
            prev: None,
            held: None,
            pending_torn: Vec::new(),
            session: None,
            start: Start::Unseen,
            key: None,
            signing_since: None,
            signed_ok: 0,
            unsigned_before: 0,
            points: std::collections::BTreeMap::new(),
        }
    }

    pub(crate) fn with_key(mut self, key: Option<AuditPublicKey>) -> Checker {
        self.key = key;
        self
    }

    fn warn(&mut self, w: String) {
        if self.report.warnings.len() < MAX_WARNINGS {
            self.report.warnings.push(w);
        } else if self.report.warnings.len() == MAX_WARNINGS {
            self.report.warnings.push("further warnings omitted".into());
        }
    }

    fn fail(&mut self, file: usize, line: u64, kind: ProblemKind, detail: String) {
        if self.report.problem.is_none() {
            self.report.problem = Some(Problem {
                file: self.names.get(file).cloned().unwrap_or_default(),
                line,
                kind,
                detail,
            });
        }
    }

    fn broken(&self) -> bool {
        self.report.problem.is_some()
    }

    pub(crate) fn push(&mut self, file: usize, line: u64, res: LineRes) -> ControlFlow<()> {
        let rec = Rec {
            file,
            line,
            hash: res.hash,
            parsed: res.parsed,
            torn_before: std::mem::take(&mut self.pending_torn),
        };
        if let Some(held) = self.held.take() {
            self.judge(held, Some(&rec));
            if self.broken() {
                return ControlFlow::Break(());
            }
        }
        self.held = Some(rec);
        ControlFlow::Continue(())
    }

    /// `file` ended after `lines` complete lines and `torn` more bytes.
    pub(crate) fn end_file(&mut self, file: usize, lines: u64, torn: u64) {
        if torn > 0 {
            self.pending_torn.push(TornSeen {
                file,
                line: lines + 1,
                bytes: torn,
            });
        }
    }

    pub(crate) fn finish(self) -> VerifyReport {
        self.finish_with_points().0
    }

    pub(crate) fn finish_with_points(
        mut self,
    ) -> (VerifyReport, std::collections::BTreeMap<u64, Point>) {
        let report = self.finish_chain();
        (report, self.points)
    }

    fn finish_chain(&mut self) -> VerifyReport {
        if let Some(held) = self.held.take() {
            self.judge(held, None);
        }
        if let Some(k) = &self.key {
            self.report.signatures = Some(SignatureReport {
                key_id: hex::encode(k.key_id()),
                verified: self.signed_ok,
                unsigned_before_signing: self.unsigned_before,
            });
            if !self.broken() && self.signing_since.is_none() && self.report.records > 0 {
                let last = self.names.len().saturating_sub(1);
                let detail = format!(
                    "no start record is signed with key {}: the log was not written with this \
                     key, or its signatures were removed",
                    short_id(k.key_id())
                );
                self.fail(last, 0, ProblemKind::BadSignature, detail);
            }
        }
        if self.broken() {
            return self.report.clone();
        }
        for t in std::mem::take(&mut self.pending_torn) {
            self.report.torn += 1;
            let name = self.names[t.file].clone();
            self.warn(format!(
                "{name} line {}: torn last line ({} bytes): an incomplete write (crash or \
                 power loss), not tampering; everything before it verifies",
                t.line, t.bytes
            ));
        }
        match self.start {
            Start::Unseen => {
                self.report.problem = Some(Problem {
                    file: self.names.first().cloned().unwrap_or_default(),
                    line: 0,
                    kind: ProblemKind::Empty,
                    detail: "no audit records found".into(),
                })
            }
            Start::Genesis => self.report.chain_start = ChainStart::Genesis,
            Start::Confirmed { seq, recorded_by } => {
                self.report.chain_start = ChainStart::Retention { seq, recorded_by }
            }
            Start::Pending { seq, prev, file } => {
                self.report.chain_start = ChainStart::Unrecorded { seq };
                let name = self.names[file].clone();
                self.fail(
                    file,
                    1,
                    ProblemKind::MissingFile,
                    format!(
                        "the oldest record (seq {seq}) chains from {} which is not in the log, \
                         and no retention record accounts for it: earlier files were deleted \
                         (first file present: {name})",
                        hex32(&prev).as_str()
                    ),
                );
            }
        }
        self.report.clone()
    }

    fn judge(&mut self, r: Rec, next: Option<&Rec>) {
        let p = match &r.parsed {
            Ok(p) => p,
            Err(e) => {
                let detail = format!("not a valid audit record ({e})");
                self.fail(r.file, r.line, ProblemKind::Edited, detail);
                return;
            }
        };
        for t in &r.torn_before {
            let name = &self.names[t.file];
            let acked = p
                .torn()
                .iter()
                .any(|a| a.file == *name && a.bytes == t.bytes);
            if acked || self.prev.is_none() {
                self.report.torn += 1;
                let how = if acked {
                    format!("acknowledged by the record at seq {}", p.seq)
                } else {
                    "before the first record".into()
                };
                let w = format!(
                    "{name} line {}: torn line ({} bytes), an incomplete write, {how}; not tampering",
                    t.line, t.bytes
                );
                self.warn(w);
            } else {
                let detail = format!(
                    "the file ends inside a line ({} bytes) and the next record does not \
                     acknowledge a torn write: the file was cut short",
                    t.bytes
                );
                self.fail(t.file, t.line, ProblemKind::Truncated, detail);
                return;
            }
        }
        let next_ok = next.and_then(Rec::ok);
        match self.prev {
            None => {
                if p.prev == GENESIS {
                    self.start = Start::Genesis;
                } else {
                    self.start = Start::Pending {
                        seq: p.seq,
                        prev: p.prev,
                        file: r.file,
                    };
                }
                self.report.first_seq = Some(p.seq);
            }
            Some(prev) => {
                if !self.link(&prev, &r, p, next_ok) {
                    return;
                }
            }
        }
        if !self.body(&r, p) {
            return;
        }
        self.report.records += 1;
        self.report.last_seq = Some(p.seq);
        if matches!(p.body, Body::Start { .. } | Body::Checkpoint { .. }) {
            self.points.insert(
                p.seq,
                Point {
                    head: p.prev,
                    through: self.report.records,
                    file: r.file,
                    line: r.line,
                },
            );
        }
        self.prev = Some(Prev {
            file: r.file,
            line: r.line,
            hash: r.hash,
            seq: p.seq,
        });
    }

    /// Checks the link from `prev` to `r`; false (with the problem set) if
    /// it is broken.
    fn link(&mut self, prev: &Prev, r: &Rec, p: &Parsed, next_ok: Option<&Parsed>) -> bool {
        let expect = prev.seq.wrapping_add(1);
        // The next record no longer chains to this one: this line changed.
        let next_breaks = next_ok.is_some_and(|n| n.prev != r.hash);
        if p.prev == prev.hash {
            if p.seq == expect {
                return true;
            }
            if let Body::Lost { first, last, .. } = p.body {
                if first == expect && last == p.seq {
                    return true;
                }
            }
            if next_breaks {
                self.fail(
                    r.file,
                    r.line,
                    ProblemKind::Edited,
                    format!(
                        "seq {} where {expect} was expected, and the line no longer hashes to \
                         the next record's prev: the line was altered",
                        p.seq
                    ),
                );
            } else if p.seq > expect {
                self.fail(
                    r.file,
                    r.line,
                    ProblemKind::Dropped,
                    format!(
                        "seq jumps from {} to {} with no lost record explaining seq {expect}..={}",
                        prev.seq,
                        p.seq,
                        p.seq - 1
                    ),
                );
            } else {
                self.fail(
                    r.file,
                    r.line,
                    ProblemKind::Reordered,
                    format!("seq {} follows seq {}", p.seq, prev.seq),
                );
            }
            return false;
        }
        if p.seq <= prev.seq {
            self.fail(
                r.file,
                r.line,
                ProblemKind::Reordered,
                format!(
                    "seq {} follows seq {} (line {}): records out of order",
                    p.seq, prev.seq, prev.line
                ),
            );
            return false;
        }
        if p.seq > expect {
            let fills = next_ok.is_some_and(|n| n.seq >= expect && n.seq < p.seq);
            let (kind, detail) = if fills {
                (
                    ProblemKind::Reordered,
                    format!(
                        "seq {} comes before seq {}: records out of order",
                        p.seq,
                        next_ok.map_or(0, |n| n.seq)
                    ),
                )
            } else if r.file != prev.file && r.line == 1 {
                (
                    ProblemKind::MissingFile,
                    format!(
                        "the chain breaks between {} and this file: {} record(s) (seq {expect}..={}) \
                         are missing; a rotated file was deleted or {} was cut short",
                        self.names[prev.file],
                        p.seq - expect,
                        p.seq - 1,
                        self.names[prev.file]
                    ),
                )
            } else {
                (
                    ProblemKind::Dropped,
                    format!(
                        "{} record(s) (seq {expect}..={}) removed before this line: its prev \
                         does not match the line before and the seqs jump",
                        p.seq - expect,
                        p.seq - 1
                    ),
                )
            };
            self.fail(r.file, r.line, kind, detail);
            return false;
        }
        // Consecutive seqs, wrong hash: a line was changed in place.
        if next_breaks {
            self.fail(
                r.file,
                r.line,
                ProblemKind::Edited,
                "neither this line's prev nor its own hash fits its neighbours: the line was altered"
                    .into(),
            );
        } else {
            self.fail(
                prev.file,
                prev.line,
                ProblemKind::Edited,
                format!(
                    "the line's SHA-256 does not match the prev of the next record (seq {}): \
                     the line was altered",
                    p.seq
                ),
            );
        }
        false
    }

    /// With a key: a signed record must verify with it; an unsigned one is
    /// tampering once signing has begun (a signed `start` seen). False
    /// (with the problem set) when it fails.
    fn check_sig(
        &mut self,
        r: &Rec,
        p: &Parsed,
        kind: SignedKind,
        sig: Option<&Sig>,
        records: u64,
        lost: u64,
    ) -> bool {
        let Some(key) = &self.key else {
            return true;
        };
        let what = match kind {
            SignedKind::Start => "start",
            SignedKind::Checkpoint => "checkpoint",
        };
        let detail = match sig {
            None if self.signing_since.is_none() => {
                self.unsigned_before += 1;
                return true;
            }
            None => format!(
                "unsigned {what} record at seq {} after signing began at seq {}: its \
                 signature was removed",
                p.seq,
                self.signing_since.unwrap_or_default()
            ),
            Some(s) if key_id_of(&s.public) != *key.key_id() => format!(
                "{what} at seq {} is signed by key {}, not by the given key {}",
                p.seq,
                short_id(&key_id_of(&s.public)),
                short_id(key.key_id())
            ),
            Some(s) => {
                let fields = SignedFields {
                    kind,
                    key_id: key.key_id(),
                    seq: p.seq,
                    head: &p.prev,
                    ts: &s.ts,
                    records,
                    lost,
                };
                if key.verify(&fields, &s.sig) {
                    self.signed_ok += 1;
                    if kind == SignedKind::Start && self.signing_since.is_none() {
                        self.signing_since = Some(p.seq);
                    }
                    return true;
                }
                format!(
                    "the {what} signature at seq {} does not verify: the record or the chain \
                     before it was changed after signing",
                    p.seq
                )
            }
        };
        self.fail(r.file, r.line, ProblemKind::BadSignature, detail);
        false
    }

    /// Per-kind checks and bookkeeping; false if the record is inconsistent.
    fn body(&mut self, r: &Rec, p: &Parsed) -> bool {
        if let Some(s) = &mut self.session {
            s.0 += 1;
        }
        match &p.body {
            Body::Hit => self.report.hits += 1,
            Body::Console | Body::List => {}
            Body::Start { sig, .. } => {
                self.session = Some((1, 0));
                if !self.check_sig(r, p, SignedKind::Start, sig.as_ref(), 0, 0) {
                    return false;
                }
            }
            Body::Lost {
                first, last, count, ..
            } => {
                if first > last || *last != p.seq || last - first + 1 != *count {
                    let detail = format!(
                        "lost record is inconsistent (first {first}, last {last}, count {count})"
                    );
                    self.fail(r.file, r.line, ProblemKind::Edited, detail);
                    return false;
                }
                self.report.lost += count;
                if let Some(s) = &mut self.session {
                    s.1 += count;
                }
            }
            Body::Checkpoint {
                records,
                lost,
                hash,
                sig,
            } => {
                if !self.check_sig(r, p, SignedKind::Checkpoint, sig.as_ref(), *records, *lost) {
                    return false;
                }
                self.report.checkpoints += 1;
                let mut bad =
                    (*hash != p.prev).then(|| "its hash differs from its prev".to_string());
                if let Some((n, l)) = self.session {
                    // `n` already counts this checkpoint.
                    if *records != n - 1 || *lost != l {
                        bad = Some(format!(
                            "it counts {records} records / {lost} lost since start, the log has {} / {l}",
                            n - 1
                        ));
                    }
                }
                if let Some(b) = bad {
                    self.fail(
                        r.file,
                        r.line,
                        ProblemKind::Edited,
                        format!("checkpoint: {b}"),
                    );
                    return false;
                }
            }
            Body::Retention {
                start_seq,
                start_prev,
                deleted,
            } => {
                if let Start::Pending { seq, prev, file } = self.start {
                    let named = *start_seq == seq && *start_prev == prev;
                    let listed = deleted.iter().any(|d| *d == self.names[file]);
                    if named || listed {
                        if listed {
                            let w = format!(
                                "{} was listed for deletion by the retention record at seq {} but is still present",
                                self.names[file], p.seq
                            );
                            self.warn(w);
                        }
                        self.start = Start::Confirmed {
                            seq,
                            recorded_by: p.seq,
                        };
                    }
                }
            }
        }
        true
    }
}

/// Verifies the chain over every audit file in `path` (a directory, or one
/// file). Errors only when files cannot be read; a broken chain is a report
/// with a `problem`.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    verify_with(path, &VerifyOptions::default())
}

/// [`verify`], and with a key every signature, and with a witness
/// directory the comparison against what the witness holds.
pub fn verify_with(path: &Path, opts: &VerifyOptions) -> Result<VerifyReport, AuditError> {
    let files = list_files(path)?;
    let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    let checker = Checker::new(path, names.clone()).with_key(opts.key.clone());
    let (mut report, points) = run_checker(checker, &files)?;
    if let (Some(dir), Some(key)) = (&opts.anchors, &opts.key) {
        if report.is_intact() {
            compare_anchors(&mut report, &points, &names, dir, key)?;
        }
    } else if opts.anchors.is_some() {
        return Err(AuditError::Arg("--anchors needs --key".into()));
    }
    Ok(report)
}

/// Checks every record the witness holds for `key` against the log, and
/// measures the unanchored tail.
fn compare_anchors(
    report: &mut VerifyReport,
    points: &std::collections::BTreeMap<u64, Point>,
    names: &[String],
    dir: &Path,
    key: &AuditPublicKey,
) -> Result<(), AuditError> {
    let (witness_file, held) = crate::witness::held(dir, key.key_id())
        .map_err(|e| AuditError::Arg(format!("reading the witness directory: {e}")))?;
    let first = report.first_seq.unwrap_or(0);
    let last = report.last_seq.unwrap_or(0);
    let newest = names.len().saturating_sub(1);
    let mut a = AnchorReport {
        witness_file,
        held: held.len() as u64,
        matched: 0,
        before_chain_start: 0,
        last_anchored_seq: None,
        unanchored_records: 0,
        unanchored_first_seq: None,
        unanchored_last_seq: None,
    };
    let mut through = 0;
    let mut problem = None;
    for h in &held {
        if h.seq < first {
            a.before_chain_start += 1;
            continue;
        }
        let fail = |file: usize, line: u64, detail: String| Problem {
            file: names.get(file).cloned().unwrap_or_default(),
            line,
            kind: ProblemKind::WitnessMismatch,
            detail,
        };
        match points.get(&h.seq) {
            Some(p) if p.head == h.head => {
                a.matched += 1;
                if a.last_anchored_seq.is_none_or(|s| s < h.seq) {
                    a.last_anchored_seq = Some(h.seq);
                    through = p.through;
                }
            }
            Some(p) => {
                problem = Some(fail(
                    p.file,
                    p.line,
                    format!(
                        "the witness holds the record at seq {} with chain head {}, the log has {}: \
                         the log before seq {} was rewritten",
                        h.seq,
                        hex32(&h.head).as_str(),
                        hex32(&p.head).as_str(),
                        h.seq
                    ),
                ));
                break;
            }
            None if h.seq > last => {
                problem = Some(fail(
                    newest,
                    0,
                    format!(
                        "the witness holds a signed record at seq {} but the log ends at seq {last}: \
                         the log was truncated or rolled back",
                        h.seq
                    ),
                ));
                break;
            }
            None => {
                problem = Some(fail(
                    newest,
                    0,
                    format!(
                        "the witness holds a signed {} at seq {}, the log has no start or checkpoint \
                         there: the log was rewritten",
                        h.kind, h.seq
                    ),
                ));
                break;
            }
        }
    }
    if problem.is_none() {
        a.unanchored_records = report.records.saturating_sub(through);
        if a.unanchored_records > 0 {
            a.unanchored_first_seq = Some(a.last_anchored_seq.map_or(first, |s| s + 1));
            a.unanchored_last_seq = Some(last);
        }
    }
    report.problem = problem;
    report.anchors = Some(a);
    Ok(())
}

fn run_checker(
    mut checker: Checker,
    files: &[LogFile],
) -> Result<(VerifyReport, std::collections::BTreeMap<u64, Point>), AuditError> {
    let mut line_in_file = 0u64;
    let mut cur_file = usize::MAX;
    scan(files, check_chunk, |ev| match ev {
        Event::Chunk { file, result } => {
            if file != cur_file {
                cur_file = file;
                line_in_file = 0;
            }
            for res in result {
                line_in_file += 1;
                if checker.push(file, line_in_file, res).is_break() {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
        Event::End { file, torn } => {
            let lines = if file == cur_file { line_in_file } else { 0 };
            checker.end_file(file, lines, torn);
            ControlFlow::Continue(())
        }
    })?;
    Ok(checker.finish_with_points())
}

/// Verifies one in-memory log (as one file named `input`), on the calling
/// thread. For fuzzing and for logs captured from stdout.
pub fn verify_bytes(data: &[u8]) -> VerifyReport {
    let mut checker = Checker::new(Path::new("input"), vec!["input".into()]);
    let (complete, torn) = match memchr::memrchr(b'\n', data) {
        Some(i) => (&data[..=i], data.len() - i - 1),
        None => (&data[..0], data.len()),
    };
    let mut n = 0;
    for res in check_chunk(complete) {
        n += 1;
        if checker.push(0, n, res).is_break() {
            return checker.finish();
        }
    }
    checker.end_file(0, n, torn as u64);
    checker.finish()
}
