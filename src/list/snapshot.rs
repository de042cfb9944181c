//! The compiled, immutable rule set. One byte blob (owned after a compile,
//! memory-mapped after a restart) holds everything; the structs here are
//! views into it, so opening a saved snapshot reads no text and allocates
//! next to nothing.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! header (HEADER_LEN bytes)
//!   magic "SNKHOLE\x01" | format u32 | crc32 of everything after the header u32
//!   list version u64 | created (unix s) u64 | 8 × u64 counts | 6 × (offset u64, len u64) sections
//! sections
//!   fst      reversed-label keys + scope byte → rule ordinal
//!   rules    6 bytes per rule: u32 (line: 27 bits | duplicate: 1 bit | action: 3 bits |
//!            has-meta: 1 bit) | file u16. "duplicate" marks a rule whose key
//!            was listed more than once (the others lost to it), which an
//!            incremental reload must not simply delete.
//!   meta     32 bytes per rule with metadata, sorted by rule:
//!            rule u32 | decision | authority | date | category | entry | included | addresses
//!            (string offsets, u32::MAX = none; the fields of `RuleMeta::fields`, in its order,
//!            then the rule's own addresses)
//!   strings  u16 length + bytes, addressed by offset
//!   files    per file: list-name offset u32 | path offset u32 (top bit: an RPZ file,
//!            whose wildcards follow DNS wildcard rules, see `lookup`)
//!   extra    keyword rule ids + strings, then URL rules (with action and
//!            provenance, see `snapshot/urls.rs`) and IP/RPZ-other rules kept for later
//!   bloom    blocked Bloom filter over every name with a rule (see `bloom.rs`)
//! ```
//!
//! A key is the name's labels in reverse order joined by `.`, then one scope
//! byte (1 exact, 2 subtree, 3 subdomains). Scope bytes sort before every
//! name byte, so one walk over the reversed query name meets every rule that
//! can match it, label boundary by label boundary. Rules are numbered in key
//! order, which makes the fst value the rule's row in the rules table and
//! lets a rule's name be recovered from its number (`name_of`).

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use fst::raw::{Fst, Output};
use thiserror::Error;

use super::bloom;
use super::{Action, Counts, META_FIELDS, RuleMeta, Scope};

mod urls;
pub(crate) use urls::url_line;
pub use urls::{UrlIndex, UrlRule, UrlRuleView};

pub(crate) const MAGIC: &[u8; 8] = b"SNKHOLE\x01";
/// 5: URL rules carry their action and provenance (issue 12); an RPZ
/// file's flag in the files table (issue 14). 6: provenance names the
/// registry entry and when it was included (meta rows and URL rules). A
/// saved snapshot of another format is refused (`BadFormat`) and the lists
/// are compiled again (`list::reload`).
pub(crate) const FORMAT: u32 = 6;
pub(crate) const SECTIONS: usize = 7;
pub(crate) const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8 * 8 + SECTIONS * 16;
pub(crate) const RULE_LEN: usize = 6;
/// String offsets in a meta row: the [`RuleMeta`] fields, then the
/// rule's own addresses.
pub(crate) const META_STRINGS: usize = META_FIELDS + 1;
/// A meta row: the rule number, then [`META_STRINGS`] string offsets.
pub(crate) const META_LEN: usize = 4 + 4 * META_STRINGS;
/// Where a meta row's fields are, by [`RuleMeta::fields`] order.
const META_DECISION: usize = 0;
const META_AUTHORITY: usize = 1;
const META_DATE: usize = 2;
const META_CATEGORY: usize = 3;
const META_ENTRY: usize = 4;
const META_INCLUDED: usize = 5;
const META_ADDRESSES: usize = META_FIELDS;

/// The strings of a meta row, in row order: `meta`'s fields, then the
/// rule's own addresses (comma-separated).
pub(crate) fn meta_row_strings<'a>(
    meta: &'a RuleMeta,
    addresses: Option<&'a str>,
) -> [Option<&'a str>; META_STRINGS] {
    let fields = meta.fields();
    std::array::from_fn(|i| {
        if i < META_FIELDS {
            fields[i]
        } else {
            addresses
        }
    })
}
pub(crate) const NO_STRING: u32 = u32::MAX;

pub(crate) const SCOPE_EXACT: u8 = 1;
pub(crate) const SCOPE_SUBTREE: u8 = 2;
pub(crate) const SCOPE_SUBDOMAINS: u8 = 3;
/// Largest line number a rule row holds (27 bits).
pub(crate) const MAX_LINE: u32 = (1 << 27) - 1;
/// Bit of the row word: other entries with the same key lost to this rule.
pub(crate) const DUP_BIT: u32 = 1 << 27;
const ACTION_SHIFT: u32 = 28;
/// Bit of the row word: the rule has a row in the meta table.
pub(crate) const META_BIT: u32 = 1 << 31;
/// Bit of a file's path offset: the file is an RPZ zone.
pub(crate) const RPZ_FILE_BIT: u32 = 1 << 31;

/// The row word of a rule.
pub(crate) fn row_word(line: u32, action: u8, has_meta: bool, dup: bool) -> u32 {
    (line & MAX_LINE)
        | (u32::from(action & 7) << ACTION_SHIFT)
        | if has_meta { META_BIT } else { 0 }
        | if dup { DUP_BIT } else { 0 }
}

pub(crate) const SEC_FST: usize = 0;
pub(crate) const SEC_RULES: usize = 1;
pub(crate) const SEC_META: usize = 2;
pub(crate) const SEC_STRINGS: usize = 3;
pub(crate) const SEC_FILES: usize = 4;
pub(crate) const SEC_EXTRA: usize = 5;
pub(crate) const SEC_BLOOM: usize = 6;

/// A rule's number in a snapshot. Only meaningful with the snapshot that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub u32);

/// An action's code in a rule row (part of the snapshot format: the
/// numbers never change meaning).
pub(crate) fn action_code(a: Action) -> u8 {
    match a {
        Action::Allow => 0,
        Action::Block => 1,
        Action::Nxdomain => 2,
        Action::Nodata => 3,
        Action::Refused => 4,
        Action::Drop => 5,
        Action::Address => 6,
    }
}

fn action_from_code(c: u8) -> Action {
    match c {
        0 => Action::Allow,
        2 => Action::Nxdomain,
        3 => Action::Nodata,
        4 => Action::Refused,
        5 => Action::Drop,
        6 => Action::Address,
        _ => Action::Block,
    }
}

/// A name rule that matches, with what decides between matches: the
/// deeper suffix wins, then the lower rank (allow, then narrower scope).
#[derive(Clone, Copy, Debug)]
struct Candidate {
    ord: u32,
    rank: u8,
    depth: u16,
    /// The scope byte of the matched key.
    scope: u8,
}

impl Candidate {
    fn beats(&self, other: &Candidate) -> bool {
        self.depth > other.depth || (self.depth == other.depth && self.rank < other.rank)
    }
}

/// Whether a `*.x` trigger of RPZ file `file`, matched at `depth` labels
/// (`x` has `depth` labels), is stopped for `name` by a name of the same
/// zone that exists strictly below `x` and at or above `name`. The base
/// (less its tombstones) and the overlay both count.
fn rpz_wildcard_stopped(
    base: &Snapshot,
    layer: Option<&Layer>,
    name: &[u8],
    depth: u16,
    file: u16,
) -> bool {
    let labels: Vec<&[u8]> = name.split(|&b| b == b'.').collect();
    let mut rev: Vec<u8> = Vec::with_capacity(name.len());
    for (i, label) in labels.iter().rev().enumerate() {
        if i > 0 {
            rev.push(b'.');
        }
        rev.extend(label.iter().map(u8::to_ascii_lowercase));
        if i < depth as usize {
            continue;
        }
        let tombstones = layer.map_or(&[][..], |l| &l.tombstones[..]);
        if base.file_has_owner_at_or_below(&rev, file, tombstones)
            || layer.is_some_and(|l| l.overlay.file_has_owner_at_or_below(&rev, file, &[]))
        {
            return true;
        }
    }
    false
}

/// The last `labels` labels of a dotted name, if it has that many (and
/// they are ASCII, as every name the matcher walks is).
fn label_suffix(name: &[u8], labels: u16) -> Option<&[u8]> {
    if labels == 0 || !name.is_ascii() {
        return None;
    }
    let mut seen = 0u16;
    for (i, &b) in name.iter().enumerate().rev() {
        if b == b'.' {
            seen += 1;
            if seen == labels {
                return Some(&name[i + 1..]);
            }
        }
    }
    (seen + 1 == labels).then_some(name)
}

/// How a name rule matched: over how many trailing labels of the name,
/// and with which scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchedKey {
    pub labels: u16,
    pub scope: Scope,
}

impl Candidate {
    fn matched_key(&self) -> Option<MatchedKey> {
        let scope = match self.scope {
            SCOPE_EXACT => Scope::Exact,
            SCOPE_SUBTREE => Scope::Subtree,
            SCOPE_SUBDOMAINS => Scope::Subdomains,
            _ => return None,
        };
        Some(MatchedKey {
            labels: self.depth,
            scope,
        })
    }
}

/// The winning rule for a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    pub rule: RuleId,
    pub action: Action,
    /// What of the looked-up name the rule's key covers (`None` for a
    /// keyword rule): with the name, this gives the rule's text without
    /// walking the fst back from the rule ([`RuleView::text_matched`]).
    pub key: Option<MatchedKey>,
}

/// Why a snapshot could not be opened.
#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not a sinkhole snapshot (bad magic)")]
    BadMagic(String),
    #[error("{path}: snapshot format {found} is not supported (want {FORMAT})")]
    BadFormat { path: String, found: u32 },
    #[error(
        "{path}: checksum mismatch (stored {stored:08x}, computed {computed:08x}); the file is damaged"
    )]
    Checksum {
        path: String,
        stored: u32,
        computed: u32,
    },
    #[error("{path}: corrupt snapshot: {what}")]
    Corrupt { path: String, what: String },
}

enum Backing {
    Owned(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl AsRef<[u8]> for Backing {
    fn as_ref(&self) -> &[u8] {
        match self {
            Backing::Owned(v) => v,
            Backing::Mapped(m) => m,
        }
    }
}

/// A window into the shared blob, so the fst can own its bytes cheaply.
#[derive(Clone)]
struct Slice {
    blob: Arc<Backing>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for Slice {
    fn as_ref(&self) -> &[u8] {
        &self.blob.as_ref().as_ref()[self.start..self.end]
    }
}

/// The compiled rule set. Cheap to share (`Arc<Snapshot>`), never mutated.
pub struct Snapshot {
    blob: Arc<Backing>,
    fst: Fst<Slice>,
    sections: [(usize, usize); SECTIONS],
    fst_rules: u32,
    keywords: Option<AhoCorasick>,
    /// Rule id of keyword pattern i.
    keyword_rules: Vec<u32>,
    version: u64,
    created: u64,
    counts: Counts,
    per_list: std::sync::OnceLock<Vec<(String, u64)>>,
    /// Changes applied on top of this blob by an incremental reload, until
    /// they are merged into a new blob (`merge.rs`).
    layer: Option<Arc<Layer>>,
    /// URL rules by host (`urls.rs`), built on first use.
    urls: std::sync::OnceLock<Arc<UrlIndex>>,
}

/// An incremental reload's changes over a base snapshot: rules added (a
/// small snapshot of their own, numbered after the base's rows), base rules
/// removed, and where the base's surviving lines moved in their files.
pub(crate) struct Layer {
    pub(crate) overlay: Snapshot,
    /// Base rule numbers that no longer apply, sorted.
    pub(crate) tombstones: Vec<u32>,
    /// Per file id: the base's line numbers → current ones.
    pub(crate) remap: Vec<LineMap>,
    /// Rows in the base; overlay rule `i` is `RuleId(base_rows + i)`.
    pub(crate) base_rows: u32,
    /// What the overlay was compiled from, per file, at current line
    /// numbers: the next incremental reload edits this and recompiles it.
    pub(crate) rules: Vec<Vec<OverlayRule>>,
}

/// A rule of a layer's overlay.
#[derive(Clone, Debug)]
pub(crate) struct OverlayRule {
    pub(crate) rule: super::Rule,
    /// A base rule moved into the overlay that had beaten other entries of
    /// its key; those entries are not stored, so removing this rule needs a
    /// full compile.
    pub(crate) hidden_losers: bool,
}

/// Runs of lines that moved together: old `old..old+len` are now `new..`.
/// Empty means unchanged.
#[derive(Clone, Debug, Default)]
pub(crate) struct LineMap {
    /// (old start, new start, len), sorted by old start.
    pub(crate) runs: Vec<(u32, u32, u32)>,
}

impl LineMap {
    pub(crate) fn map(&self, line: u32) -> u32 {
        if self.runs.is_empty() {
            return line;
        }
        self.get(line).unwrap_or(line)
    }

    /// Where `line` went; `None` if it is not in any run (it was removed).
    pub(crate) fn get(&self, line: u32) -> Option<u32> {
        let i = self.runs.partition_point(|r| r.0 <= line);
        match i.checked_sub(1).map(|i| self.runs[i]) {
            Some((old, new, len)) if line - old < len => Some(new + (line - old)),
            _ => None,
        }
    }

    /// `then` after `self`: old lines of `self` → new lines of `then`.
    /// Both maps keep order (runs increase in both coordinates), so this is
    /// one pass over each.
    pub(crate) fn then(&self, then: &LineMap) -> LineMap {
        let mut runs = Vec::new();
        let mut j = 0usize;
        for &(old, mid, len) in &self.runs {
            let (mut o, mut m, mut left) = (old, mid, len);
            // Skip `then` runs that end before `m`.
            while j < then.runs.len() && then.runs[j].0 + then.runs[j].2 <= m {
                j += 1;
            }
            let mut k = j;
            while left > 0 && k < then.runs.len() {
                let (t_old, t_new, t_len) = then.runs[k];
                if t_old >= m + left {
                    break;
                }
                if t_old > m {
                    // Lines m..t_old went in the second step.
                    let gap = t_old - m;
                    o += gap;
                    m += gap;
                    left -= gap;
                }
                let take = (t_old + t_len - m).min(left);
                runs.push((o, t_new + (m - t_old), take));
                o += take;
                m += take;
                left -= take;
                k += 1;
            }
        }
        LineMap { runs }
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("rules", &self.rule_count())
            .field("bytes", &self.byte_len())
            .finish()
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Snapshot {
    /// Build from a serialised blob, checking structure (and the checksum
    /// when `verify`): a damaged file is an error, never a panic.
    pub(crate) fn from_blob(blob: Vec<u8>, origin: &str) -> Result<Snapshot, SnapshotError> {
        Snapshot::from_backing(Backing::Owned(blob), origin, false)
    }

    fn from_backing(
        backing: Backing,
        origin: &str,
        verify: bool,
    ) -> Result<Snapshot, SnapshotError> {
        let corrupt = |what: &str| SnapshotError::Corrupt {
            path: origin.to_string(),
            what: what.to_string(),
        };
        let b = backing.as_ref();
        if b.len() < HEADER_LEN || &b[..8] != MAGIC {
            return Err(SnapshotError::BadMagic(origin.to_string()));
        }
        let format = le_u32(b, 8);
        if format != FORMAT {
            return Err(SnapshotError::BadFormat {
                path: origin.to_string(),
                found: format,
            });
        }
        if verify {
            let stored = le_u32(b, 12);
            let computed = crc32fast::hash(&b[HEADER_LEN..]);
            if stored != computed {
                return Err(SnapshotError::Checksum {
                    path: origin.to_string(),
                    stored,
                    computed,
                });
            }
        }
        let version = le_u64(b, 16);
        let created = le_u64(b, 24);
        let mut c = [0usize; 8];
        for (i, slot) in c.iter_mut().enumerate() {
            *slot = le_u64(b, 32 + i * 8) as usize;
        }
        let counts = Counts {
            names: c[0],
            wildcards: c[1],
            allows: c[2],
            keywords: c[3],
            urls: c[4],
            ips: c[5],
            rpz_other: c[6],
            skipped: c[7],
        };
        let mut sections = [(0usize, 0usize); SECTIONS];
        for (i, s) in sections.iter_mut().enumerate() {
            let off = le_u64(b, 96 + i * 16) as usize;
            let len = le_u64(b, 96 + i * 16 + 8) as usize;
            if off < HEADER_LEN || off.checked_add(len).is_none_or(|e| e > b.len()) {
                return Err(corrupt("section out of bounds"));
            }
            *s = (off, len);
        }
        if sections[SEC_RULES].1 % RULE_LEN != 0
            || sections[SEC_META].1 % META_LEN != 0
            || sections[SEC_BLOOM].1 % bloom::BLOCK_BYTES != 0
        {
            return Err(corrupt("table length is not a whole number of rows"));
        }
        let blob = Arc::new(backing);
        let (fo, fl) = sections[SEC_FST];
        let fst = Fst::new(Slice {
            blob: blob.clone(),
            start: fo,
            end: fo + fl,
        })
        .map_err(|e| corrupt(&format!("fst: {e}")))?;
        let fst_rules = fst.len() as u32;
        let mut snap = Snapshot {
            blob,
            fst,
            sections,
            fst_rules,
            keywords: None,
            keyword_rules: Vec::new(),
            version,
            created,
            counts,
            per_list: std::sync::OnceLock::new(),
            layer: None,
            urls: std::sync::OnceLock::new(),
        };
        if (snap.fst_rules as usize) > snap.row_count() {
            return Err(corrupt("fst refers to more rules than the table holds"));
        }
        // Keywords: count u32, then per keyword rule id u32 + string offset u32.
        let extra = snap.section(SEC_EXTRA);
        if extra.len() < 4 {
            return Err(corrupt("extra section too short"));
        }
        let n = le_u32(extra, 0) as usize;
        if extra.len() < 4 + n * 8 {
            return Err(corrupt("keyword table too short"));
        }
        let mut patterns = Vec::with_capacity(n);
        let mut keyword_rules = Vec::with_capacity(n);
        for i in 0..n {
            let rule = le_u32(extra, 4 + i * 8);
            let s = le_u32(extra, 8 + i * 8);
            if rule as usize >= snap.row_count() {
                return Err(corrupt("keyword rule out of range"));
            }
            let text = snap.string(s).ok_or_else(|| corrupt("keyword string"))?;
            patterns.push(text.to_string());
            keyword_rules.push(rule);
        }
        snap.keyword_rules = keyword_rules;
        if !patterns.is_empty() {
            let ac = AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(&patterns)
                .map_err(|e| corrupt(&format!("keywords: {e}")))?;
            snap.keywords = Some(ac);
        }
        // Every rule's file id must resolve, so provenance lookups cannot fail later.
        let files = snap.section(SEC_FILES).len() / 8;
        let rules = snap.section(SEC_RULES);
        for row in rules.chunks_exact(RULE_LEN) {
            if le_u16(row, 4) as usize >= files || (le_u32(row, 0) >> ACTION_SHIFT) & 7 > 6 {
                return Err(corrupt("rule refers to an unknown file"));
            }
        }
        Ok(snap)
    }

    /// Open a saved snapshot by memory-mapping it; the checksum is verified
    /// before use.
    pub fn open(path: &Path) -> Result<Snapshot, SnapshotError> {
        Snapshot::map(path, true)
    }

    /// Open a snapshot this process has just written (and checksummed while
    /// writing): structure is checked, but the blob is not read through, so
    /// its pages stay out of memory until lookups touch them.
    pub(crate) fn open_unverified(path: &Path) -> Result<Snapshot, SnapshotError> {
        Snapshot::map(path, false)
    }

    fn map(path: &Path, verify: bool) -> Result<Snapshot, SnapshotError> {
        let io = |source| SnapshotError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = fs::File::open(path).map_err(io)?;
        // SAFETY: the snapshot file is written once to a temp name and renamed
        // into place, never modified in place, so the mapping stays valid.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Snapshot::from_backing(Backing::Mapped(map), &path.display().to_string(), verify)
    }

    /// Write the snapshot atomically (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), SnapshotError> {
        let io = |source| SnapshotError::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(self.bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)?;
        Ok(())
    }

    /// The serialised form (what `save` writes).
    pub fn bytes(&self) -> &[u8] {
        self.blob.as_ref().as_ref()
    }

    pub fn byte_len(&self) -> usize {
        self.bytes().len()
    }

    /// The list version this snapshot enforces.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When it was compiled (seconds since the Unix epoch).
    pub fn created(&self) -> u64 {
        self.created
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Number of rules in force (name and keyword rules).
    pub fn rule_count(&self) -> usize {
        match &self.layer {
            None => self.row_count(),
            Some(l) => self.row_count() - l.tombstones.len() + l.overlay.row_count(),
        }
    }

    /// Rows in this blob's rule table (without a layer's changes).
    pub(crate) fn row_count(&self) -> usize {
        self.sections[SEC_RULES].1 / RULE_LEN
    }

    /// The same base with `layer` applied, as list `version` with `counts`.
    /// Shares the blob: no copy of the base.
    pub(crate) fn with_layer(&self, layer: Layer, version: u64, counts: Counts) -> Snapshot {
        Snapshot {
            blob: self.blob.clone(),
            fst: self.fst.clone(),
            sections: self.sections,
            fst_rules: self.fst_rules,
            keywords: self.keywords.clone(),
            keyword_rules: self.keyword_rules.clone(),
            version,
            created: self.created,
            counts,
            per_list: std::sync::OnceLock::new(),
            layer: Some(Arc::new(layer)),
            // A layer never changes URL rules (a changed URL line forces a
            // full compile); line moves are applied on read.
            urls: self.urls.clone(),
        }
    }

    pub(crate) fn layer(&self) -> Option<&Layer> {
        self.layer.as_deref()
    }

    /// The base rule keyed exactly `key` (reversed labels + scope byte).
    pub(crate) fn base_get(&self, key: &[u8]) -> Option<u32> {
        self.fst.get(key).map(|o| o.value() as u32)
    }

    /// A base row as (file id, line, duplicate bit).
    pub(crate) fn base_row(&self, rule: u32) -> (u16, u32, bool) {
        let row = self.row(rule);
        let w = le_u32(row, 0);
        (le_u16(row, 4), w & MAX_LINE, w & DUP_BIT != 0)
    }

    pub(crate) fn fst(&self) -> &Fst<impl AsRef<[u8]>> {
        &self.fst
    }

    pub(crate) fn fst_rule_count(&self) -> u32 {
        self.fst_rules
    }

    pub(crate) fn section_bytes(&self, i: usize) -> &[u8] {
        self.section(i)
    }

    /// The raw meta row of a base rule ([`META_LEN`] bytes), if it has one.
    pub(crate) fn meta_bytes(&self, rule: u32) -> Option<&[u8]> {
        self.meta_row(rule)
    }

    /// The raw row word and file of a base rule.
    pub(crate) fn row_parts(&self, rule: u32) -> (u32, u16) {
        let row = self.row(rule);
        (le_u32(row, 0), le_u16(row, 4))
    }

    /// Rules (name and keyword) per list name, computed once per snapshot.
    pub fn rules_per_list(&self) -> Vec<(String, u64)> {
        self.per_list
            .get_or_init(|| {
                let files = self.section(SEC_FILES).len() / 8;
                let mut per_file = vec![0u64; files];
                for row in self.section(SEC_RULES).chunks_exact(RULE_LEN) {
                    if let Some(n) = per_file.get_mut(le_u16(row, 4) as usize) {
                        *n += 1;
                    }
                }
                if let Some(l) = &self.layer {
                    for &t in &l.tombstones {
                        if let Some(n) = per_file.get_mut(self.base_row(t).0 as usize) {
                            *n = n.saturating_sub(1);
                        }
                    }
                    for row in l.overlay.section(SEC_RULES).chunks_exact(RULE_LEN) {
                        if let Some(n) = per_file.get_mut(le_u16(row, 4) as usize) {
                            *n += 1;
                        }
                    }
                }
                let mut by_list: std::collections::BTreeMap<String, u64> = Default::default();
                for (file, n) in per_file.into_iter().enumerate() {
                    let name = self.string(self.file_entry(file as u16).0).unwrap_or("");
                    *by_list.entry(name.to_string()).or_default() += n;
                }
                by_list.into_iter().collect()
            })
            .clone()
    }

    /// Number of distinct name keys in force.
    pub fn name_rule_count(&self) -> usize {
        match &self.layer {
            None => self.fst_rules as usize,
            Some(l) => self.fst_rules as usize - l.tombstones.len() + l.overlay.fst_rules as usize,
        }
    }

    /// Bytes of the fst alone.
    pub fn fst_len(&self) -> usize {
        self.sections[SEC_FST].1
    }

    fn section(&self, i: usize) -> &[u8] {
        let (o, l) = self.sections[i];
        &self.bytes()[o..o + l]
    }

    fn string(&self, off: u32) -> Option<&str> {
        if off == NO_STRING {
            return None;
        }
        let s = self.section(SEC_STRINGS);
        let off = off as usize;
        s.get(off..off + 2)?;
        let len = le_u16(s, off) as usize;
        let bytes = s.get(off + 2..off + 2 + len)?;
        std::str::from_utf8(bytes).ok()
    }

    /// Find the winning rule for `name` (dotted text, any case, trailing
    /// dot optional). Most specific name rule wins: the deepest matching
    /// suffix; at equal depth an allow beats a block and a narrower scope
    /// beats `Subtree`. Keyword rules apply only when no name rule matched.
    pub fn lookup(&self, name: &[u8]) -> Option<Match> {
        let name = name.strip_suffix(b".").unwrap_or(name);
        if name.is_empty() {
            return None;
        }
        let Some(layer) = &self.layer else {
            if let Some(best) = self.best_rule_rpz(name, &[], None) {
                return Some(self.make_match(best.ord, best.matched_key()));
            }
            return self.keyword_match(name);
        };
        let base = self.best_rule_rpz(name, &layer.tombstones, Some(layer));
        let over = layer.overlay.best_rule_rpz_in(self, name, &[], Some(layer));
        match (base, over) {
            (Some(b), Some(o)) if b.beats(&o) => Some(self.make_match(b.ord, b.matched_key())),
            (_, Some(o)) => {
                let m = layer.overlay.make_match(o.ord, o.matched_key());
                Some(Match {
                    rule: RuleId(layer.base_rows + o.ord),
                    action: m.action,
                    key: m.key,
                })
            }
            (Some(b), None) => Some(self.make_match(b.ord, b.matched_key())),
            (None, None) => self.keyword_match(name),
        }
    }

    /// [`Self::best_name_rule`] of the base blob, with RPZ wildcards
    /// stopped as DNS stops them (see [`Self::best_rule_rpz_in`]).
    fn best_rule_rpz(&self, name: &[u8], skip: &[u32], layer: Option<&Layer>) -> Option<Candidate> {
        self.best_rule_rpz_in(self, name, skip, layer)
    }

    /// The best name rule of this blob (the base, or the layer's overlay;
    /// `base` is the snapshot that owns the file table)
    /// for `name`. A `*.x` trigger of an RPZ file matches a name below `x`
    /// only when no name of the same zone exists between them (RFC 4592,
    /// as BIND applies RPZ): an owner at or below a name in `(x, name]`,
    /// or the empty non-terminal above one, stops it. A stopped wildcard is
    /// skipped and the walk looks again (a shallower rule of another list
    /// may still match). Other lists keep their suffix semantics.
    ///
    /// One key holds one rule: an owner listed by two zones exists here
    /// only for the zone whose entry won the key (an allow, else the first
    /// listed), so it stops only that zone's wildcards. BIND, evaluating
    /// each zone on its own, would stop both.
    fn best_rule_rpz_in(
        &self,
        base: &Snapshot,
        name: &[u8],
        skip: &[u32],
        layer: Option<&Layer>,
    ) -> Option<Candidate> {
        let mut best = self.best_name_rule(name, skip)?;
        let mut skipped: Option<Vec<u32>> = None;
        loop {
            if best.scope != SCOPE_SUBDOMAINS {
                return Some(best);
            }
            let file = self.base_row(best.ord).0;
            if !base.file_is_rpz(file) || !rpz_wildcard_stopped(base, layer, name, best.depth, file)
            {
                return Some(best);
            }
            let s = skipped.get_or_insert_with(|| skip.to_vec());
            let at = s.partition_point(|&o| o < best.ord);
            s.insert(at, best.ord);
            best = self.best_name_rule(name, s)?;
        }
    }

    fn keyword_match(&self, name: &[u8]) -> Option<Match> {
        let ac = self.keywords.as_ref()?;
        let m = ac.find(name)?;
        let rule = *self.keyword_rules.get(m.pattern().as_usize())?;
        Some(self.make_match(rule, None))
    }

    /// The best name rule of this blob for `name`, ignoring `skip` (sorted
    /// rule numbers). Pass 1 probes the Bloom filter with every suffix; the
    /// deepest positive bounds the fst walk, and no positive means no rule.
    fn best_name_rule(&self, name: &[u8], skip: &[u32]) -> Option<Candidate> {
        let filter = self.section(SEC_BLOOM);
        let mut h = bloom::FNV_OFFSET;
        let mut end = name.len();
        let mut labels = 0usize;
        let mut deepest = 0usize;
        loop {
            let start = name[..end]
                .iter()
                .rposition(|&b| b == b'.')
                .map_or(0, |p| p + 1);
            if labels > 0 {
                h = bloom::fnv(h, b'.');
            }
            for &b in &name[start..end] {
                h = bloom::fnv(h, b.to_ascii_lowercase());
            }
            labels += 1;
            if bloom::may_contain(filter, h) {
                deepest = labels;
            }
            if start == 0 {
                break;
            }
            end = start - 1;
        }
        if deepest == 0 {
            return None;
        }
        self.walk(name, deepest, skip)
    }

    /// Walk the fst over the reversed name for at most `max_labels` labels,
    /// returning the best candidate: deeper always replaces.
    fn walk(&self, name: &[u8], max_labels: usize, skip: &[u32]) -> Option<Candidate> {
        let fst = &self.fst;
        let mut node = fst.root();
        let mut out = Output::zero();
        let mut best: Option<Candidate> = None;
        let mut end = name.len();
        let mut depth = 0usize;
        'labels: loop {
            let start = name[..end]
                .iter()
                .rposition(|&b| b == b'.')
                .map_or(0, |p| p + 1);
            if depth > 0 {
                match node.find_input(b'.') {
                    Some(i) => {
                        let t = node.transition(i);
                        out = out.cat(t.out);
                        node = fst.node(t.addr);
                    }
                    None => break 'labels,
                }
            }
            for &b in &name[start..end] {
                match node.find_input(b.to_ascii_lowercase()) {
                    Some(i) => {
                        let t = node.transition(i);
                        out = out.cat(t.out);
                        node = fst.node(t.addr);
                    }
                    None => break 'labels,
                }
            }
            depth += 1;
            let whole = start == 0;
            let mut level: Option<Candidate> = None;
            let scopes: [u8; 2] = if whole {
                [SCOPE_EXACT, SCOPE_SUBTREE]
            } else {
                [SCOPE_SUBDOMAINS, SCOPE_SUBTREE]
            };
            for (narrow, scope) in scopes.into_iter().enumerate() {
                if let Some(i) = node.find_input(scope) {
                    let t = node.transition(i);
                    let n = fst.node(t.addr);
                    if n.is_final() {
                        let ord = out.cat(t.out).cat(n.final_output()).value() as u32;
                        if !skip.is_empty() && skip.binary_search(&ord).is_ok() {
                            continue;
                        }
                        // rank: allow first, then the narrower scope.
                        let allow = self.action_code(ord) == 0;
                        let rank = (u8::from(!allow) << 1) | narrow as u8;
                        if level.is_none_or(|c| rank < c.rank) {
                            level = Some(Candidate {
                                ord,
                                rank,
                                depth: depth as u16,
                                scope,
                            });
                        }
                    }
                }
            }
            if level.is_some() {
                best = level;
            }
            if whole || depth >= max_labels {
                break;
            }
            end = start - 1;
        }
        best
    }

    fn make_match(&self, rule: u32, key: Option<MatchedKey>) -> Match {
        Match {
            rule: RuleId(rule),
            key,
            action: action_from_code(self.action_code(rule)),
        }
    }

    fn row(&self, rule: u32) -> &[u8] {
        let at = rule as usize * RULE_LEN;
        &self.section(SEC_RULES)[at..at + RULE_LEN]
    }

    fn action_code(&self, rule: u32) -> u8 {
        ((le_u32(self.row(rule), 0) >> ACTION_SHIFT) & 7) as u8
    }

    /// Provenance of a rule.
    ///
    /// # Panics
    /// If `id` did not come from this snapshot's `lookup` (out of range).
    pub fn rule(&self, id: RuleId) -> RuleView<'_> {
        match &self.layer {
            Some(l) if id.0 >= l.base_rows => RuleView {
                snap: &l.overlay,
                local: RuleId(id.0 - l.base_rows),
                id,
                lines: None,
            },
            Some(l) => RuleView {
                snap: self,
                local: id,
                id,
                lines: Some(&l.remap),
            },
            None => RuleView {
                snap: self,
                local: id,
                id,
                lines: None,
            },
        }
    }

    /// The meta row of a rule, if it has one (binary search by rule id).
    fn meta_row(&self, rule: u32) -> Option<&[u8]> {
        if le_u32(self.row(rule), 0) & META_BIT == 0 {
            return None;
        }
        let meta = self.section(SEC_META);
        let rows = meta.len() / META_LEN;
        let (mut lo, mut hi) = (0usize, rows);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let r = le_u32(meta, mid * META_LEN);
            match r.cmp(&rule) {
                std::cmp::Ordering::Equal => {
                    return Some(&meta[mid * META_LEN..(mid + 1) * META_LEN]);
                }
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    /// Recover a name rule's key from its ordinal by walking the fst,
    /// following at each node the last transition whose output does not
    /// overshoot (values are ordinals in key order).
    fn key_of(&self, ord: u64) -> Option<Vec<u8>> {
        let fst = &self.fst;
        let mut node = fst.root();
        let mut acc = 0u64;
        let mut key = Vec::with_capacity(32);
        loop {
            if node.is_final() && acc + node.final_output().value() == ord {
                return Some(key);
            }
            let mut chosen = None;
            for t in node.transitions() {
                if acc + t.out.value() <= ord {
                    chosen = Some(t);
                } else {
                    break;
                }
            }
            let t = chosen?;
            acc += t.out.value();
            key.push(t.inp);
            node = fst.node(t.addr);
            if key.len() > 300 {
                return None;
            }
        }
    }

    /// Iterate over every name rule in force as (name, scope, id), in key
    /// order (a layer's changes included).
    pub fn name_rules(&self) -> impl Iterator<Item = (String, Scope, RuleId)> + '_ {
        use fst::Streamer;
        let mut all: Vec<(Vec<u8>, RuleId)> = Vec::new();
        let skip: &[u32] = self.layer.as_ref().map_or(&[], |l| &l.tombstones);
        let mut stream = self.fst.stream();
        while let Some((k, v)) = stream.next() {
            let ord = v.value() as u32;
            if skip.binary_search(&ord).is_err() {
                all.push((k.to_vec(), RuleId(ord)));
            }
        }
        if let Some(l) = &self.layer {
            let mut stream = l.overlay.fst.stream();
            while let Some((k, v)) = stream.next() {
                all.push((k.to_vec(), RuleId(l.base_rows + v.value() as u32)));
            }
            all.sort();
        }
        all.into_iter()
            .filter_map(|(k, id)| decode_key(&k).map(|(name, scope)| (name, scope, id)))
    }

    /// Rules kept for later enforcement (URLs, IPs, other RPZ triggers),
    /// as (kind, text, file, line).
    pub fn deferred_rules(&self) -> Vec<(String, String, String, u32)> {
        let extra = self.section(SEC_EXTRA);
        let n = le_u32(extra, 0) as usize;
        let rest = &extra[4 + n * 8..];
        let mut out = Vec::new();
        for line in rest.split(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(line);
            let mut parts = text.splitn(4, '\t');
            if let (Some(kind), Some(file), Some(line), Some(rule)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            {
                let file = file
                    .parse::<u32>()
                    .ok()
                    .map(|f| self.file_path(f as u16).to_string())
                    .unwrap_or_default();
                // URL lines carry their action and provenance after the URL.
                let rule = rule.split('\t').next().unwrap_or(rule);
                out.push((
                    kind.to_string(),
                    rule.to_string(),
                    file,
                    line.parse().unwrap_or(0),
                ));
            }
        }
        out
    }

    fn file_entry(&self, file: u16) -> (u32, u32) {
        let files = self.section(SEC_FILES);
        let at = file as usize * 8;
        if at + 8 > files.len() {
            return (NO_STRING, NO_STRING);
        }
        (le_u32(files, at), le_u32(files, at + 4) & !RPZ_FILE_BIT)
    }

    /// Whether `file` is an RPZ zone (BIND's wildcard semantics).
    fn file_is_rpz(&self, file: u16) -> bool {
        let files = self.section(SEC_FILES);
        let at = file as usize * 8 + 4;
        at + 4 <= files.len() && le_u32(files, at) & RPZ_FILE_BIT != 0
    }

    /// Whether a rule of `file` (not in `skip`) has its owner at or below
    /// the name whose reversed key is `rev` (`com.example`): that name
    /// exists in the zone, as an owner or an empty non-terminal.
    fn file_has_owner_at_or_below(&self, rev: &[u8], file: u16, skip: &[u32]) -> bool {
        use fst::{IntoStreamer, Streamer};
        let mut lo = rev.to_vec();
        let mut hi = rev.to_vec();
        // The name's own keys (scope bytes 1..=3), then its descendants
        // (`rev.` followed by anything; `/` is the byte after `.`).
        for (a, b) in [(SCOPE_EXACT, SCOPE_SUBDOMAINS + 1), (b'.', b'/')] {
            lo.truncate(rev.len());
            hi.truncate(rev.len());
            lo.push(a);
            hi.push(b);
            let mut keys = self.fst.range().ge(&lo).lt(&hi).into_stream();
            while let Some((_, out)) = keys.next() {
                let ord = out.value() as u32;
                if (skip.is_empty() || skip.binary_search(&ord).is_err())
                    && self.base_row(ord).0 == file
                {
                    return true;
                }
            }
        }
        false
    }

    fn file_path(&self, file: u16) -> &str {
        self.string(self.file_entry(file).1).unwrap_or("")
    }
}

/// Split a key back into name and scope.
pub(crate) fn decode_key(key: &[u8]) -> Option<(String, Scope)> {
    let (&scope, rev) = key.split_last()?;
    let scope = match scope {
        SCOPE_EXACT => Scope::Exact,
        SCOPE_SUBTREE => Scope::Subtree,
        SCOPE_SUBDOMAINS => Scope::Subdomains,
        _ => return None,
    };
    let rev = std::str::from_utf8(rev).ok()?;
    let mut labels: Vec<&str> = rev.split('.').collect();
    labels.reverse();
    Some((labels.join("."), scope))
}

/// Provenance and details of one rule.
#[derive(Clone, Copy)]
pub struct RuleView<'s> {
    /// The blob holding the row (a layer's overlay for rules it added).
    snap: &'s Snapshot,
    /// The row in `snap`.
    local: RuleId,
    /// The id the caller holds.
    id: RuleId,
    /// Where the base's lines moved since it was compiled.
    lines: Option<&'s [LineMap]>,
}

impl<'s> RuleView<'s> {
    pub fn id(&self) -> RuleId {
        self.id
    }
    fn row(&self) -> &'s [u8] {
        self.snap.row(self.local.0)
    }
    /// 1-based line in the source file.
    pub fn line(&self) -> u32 {
        let line = le_u32(self.row(), 0) & MAX_LINE;
        let file = le_u16(self.row(), 4) as usize;
        match self.lines.and_then(|m| m.get(file)) {
            Some(map) => map.map(line),
            None => line,
        }
    }
    /// The list's name.
    pub fn list(&self) -> &'s str {
        let file = le_u16(self.row(), 4);
        self.snap.string(self.snap.file_entry(file).0).unwrap_or("")
    }
    /// The source file as given to the loader.
    pub fn file(&self) -> &'s str {
        self.snap.file_path(le_u16(self.row(), 4))
    }
    /// Keyword rules are numbered after every name rule.
    pub fn is_keyword(&self) -> bool {
        self.local.0 >= self.snap.fst_rules
    }
    /// The scope of a name rule (read back from its key; not for hot paths).
    pub fn scope(&self) -> Option<Scope> {
        if self.is_keyword() {
            return None;
        }
        self.snap
            .key_of(u64::from(self.local.0))
            .and_then(|k| decode_key(&k))
            .map(|(_, scope)| scope)
    }
    /// The rule in list syntax: `example.com`, `*.example.com`,
    /// `=example.com` (exact only) or `keyword:text`.
    pub fn text(&self) -> String {
        if self.is_keyword() {
            let kw = self
                .snap
                .keyword_rules
                .iter()
                .position(|&r| r == self.local.0)
                .and_then(|i| {
                    let extra = self.snap.section(SEC_EXTRA);
                    self.snap.string(le_u32(extra, 8 + i * 8))
                })
                .unwrap_or("");
            return format!("keyword:{kw}");
        }
        match self
            .snap
            .key_of(u64::from(self.local.0))
            .and_then(|k| decode_key(&k))
        {
            Some((name, Scope::Subtree)) => name,
            Some((name, Scope::Subdomains)) => format!("*.{name}"),
            Some((name, Scope::Exact)) => format!("={name}"),
            None => String::new(),
        }
    }
    /// [`RuleView::text`] for a rule that matched `name` as `key` says
    /// ([`Match::key`]): the rule's name is that suffix of the (lowercased)
    /// name, so nothing is read back from the fst. Used for every hit-log
    /// record; falls back to [`RuleView::text`] for keyword rules or when
    /// `key` does not fit `name`.
    pub fn text_matched(&self, name: &[u8], key: Option<MatchedKey>) -> String {
        let name = name.strip_suffix(b".").unwrap_or(name);
        let Some((scope, suffix)) =
            key.and_then(|k| Some((k.scope, label_suffix(name, k.labels)?)))
        else {
            return self.text();
        };
        let mut text = String::with_capacity(suffix.len() + 2);
        match scope {
            Scope::Subtree => {}
            Scope::Subdomains => text.push_str("*."),
            Scope::Exact => text.push('='),
        }
        text.extend(suffix.iter().map(|b| char::from(b.to_ascii_lowercase())));
        text
    }
    /// The name a name rule is keyed on (without scope markers).
    pub fn name(&self) -> Option<String> {
        self.snap
            .key_of(u64::from(self.local.0))
            .and_then(|k| decode_key(&k))
            .map(|(n, _)| n)
    }
    fn meta_str(&self, field: usize) -> Option<&'s str> {
        let row = self.snap.meta_row(self.local.0)?;
        self.snap.string(le_u32(row, 4 + field * 4))
    }
    pub fn decision(&self) -> Option<&'s str> {
        self.meta_str(META_DECISION)
    }
    pub fn authority(&self) -> Option<&'s str> {
        self.meta_str(META_AUTHORITY)
    }
    pub fn date(&self) -> Option<&'s str> {
        self.meta_str(META_DATE)
    }
    pub fn category(&self) -> Option<&'s str> {
        self.meta_str(META_CATEGORY)
    }
    /// The registry entry's id (a dump's `<content id>`).
    pub fn entry(&self) -> Option<&'s str> {
        self.meta_str(META_ENTRY)
    }
    /// When the registry entry was included (a dump's `includeTime`).
    pub fn included(&self) -> Option<&'s str> {
        self.meta_str(META_INCLUDED)
    }
    pub fn meta(&self) -> RuleMeta {
        RuleMeta::from_fields(std::array::from_fn(|i| self.meta_str(i)))
    }
    /// The rule's own addresses (RPZ local data); empty for rules without.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.meta_str(META_ADDRESSES)
            .map(|s| s.split(',').filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default()
    }
    /// The action the rule carries (`block` still means "the default").
    pub fn action(&self) -> Action {
        action_from_code(self.snap.action_code(self.local.0))
    }
}

impl fmt::Debug for RuleView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleView")
            .field("rule", &self.text())
            .field("action", &self.action())
            .field("file", &self.file())
            .field("line", &self.line())
            .finish()
    }
}

/// Name rules that differ between two snapshots, as rule text (`@@` marks
/// an allow rule). A rule whose action flipped between allow and block
/// shows as removed and added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// Compare two snapshots by walking both fsts in key order once.
pub fn diff(old: &Snapshot, new: &Snapshot) -> SnapshotDiff {
    use fst::Streamer;
    fn text(snap: &Snapshot, key: &[u8], ord: u64) -> Option<(String, bool)> {
        let (name, scope) = decode_key(key)?;
        let allow = snap.action_code(ord as u32) == 0;
        let body = match scope {
            Scope::Subtree => name,
            Scope::Subdomains => format!("*.{name}"),
            Scope::Exact => format!("={name}"),
        };
        Some((if allow { format!("@@{body}") } else { body }, allow))
    }
    let mut out = SnapshotDiff::default();
    let mut a = old.fst.stream();
    let mut b = new.fst.stream();
    let mut next_a = a.next().map(|(k, v)| (k.to_vec(), v.value()));
    let mut next_b = b.next().map(|(k, v)| (k.to_vec(), v.value()));
    loop {
        match (&next_a, &next_b) {
            (None, None) => break,
            (Some((ka, va)), None) => {
                out.removed.extend(text(old, ka, *va).map(|t| t.0));
                next_a = a.next().map(|(k, v)| (k.to_vec(), v.value()));
            }
            (None, Some((kb, vb))) => {
                out.added.extend(text(new, kb, *vb).map(|t| t.0));
                next_b = b.next().map(|(k, v)| (k.to_vec(), v.value()));
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    out.removed.extend(text(old, ka, *va).map(|t| t.0));
                    next_a = a.next().map(|(k, v)| (k.to_vec(), v.value()));
                }
                std::cmp::Ordering::Greater => {
                    out.added.extend(text(new, kb, *vb).map(|t| t.0));
                    next_b = b.next().map(|(k, v)| (k.to_vec(), v.value()));
                }
                std::cmp::Ordering::Equal => {
                    let ta = text(old, ka, *va);
                    let tb = text(new, kb, *vb);
                    if ta.as_ref().map(|t| t.1) != tb.as_ref().map(|t| t.1) {
                        out.removed.extend(ta.map(|t| t.0));
                        out.added.extend(tb.map(|t| t.0));
                    }
                    next_a = a.next().map(|(k, v)| (k.to_vec(), v.value()));
                    next_b = b.next().map(|(k, v)| (k.to_vec(), v.value()));
                }
            },
        }
    }
    out
}
