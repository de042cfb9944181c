//! One log file's summary: what the console needs to answer overviews and
//! per-order reports without reading the records again, and what a search
//! needs to skip files that cannot match.
//!
//! Summaries are mergeable (counts add, spans widen, client sets unite), so
//! a file can be summarised in chunks on every core, and a file that grows
//! (the one the writer is appending to) is extended from where its summary
//! stopped instead of being read again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::record::{HitView, Raw, parse_hit, raw_str};

/// Bumped whenever the layout or the meaning of a field changes; a summary
/// of another version is rebuilt.
pub const FORMAT_VERSION: u32 = 1;

/// The decision key of hits whose rule carries none (as `audit stats --by
/// decision` shows them).
pub const NO_DECISION: &str = "-";

/// Hit counts by the keys the console shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HitCounts {
    pub total: u64,
    /// `YYYY-MM-DDTHH:00Z` (the key of `audit stats --by hour`).
    pub hours: BTreeMap<String, u64>,
    pub actions: BTreeMap<String, u64>,
    pub lists: BTreeMap<String, u64>,
    /// Lowercased, without the trailing dot (`audit stats --by name`).
    pub names: BTreeMap<String, u64>,
}

impl HitCounts {
    fn add(&mut self, h: &HitFields<'_>, hour: &str, name: &str) {
        self.total += 1;
        bump(&mut self.hours, hour);
        bump(&mut self.actions, h.action);
        bump(&mut self.lists, h.list);
        bump(&mut self.names, name);
    }

    pub fn merge(&mut self, o: &HitCounts) {
        self.total += o.total;
        for (mine, theirs) in [
            (&mut self.hours, &o.hours),
            (&mut self.actions, &o.actions),
            (&mut self.lists, &o.lists),
            (&mut self.names, &o.names),
        ] {
            for (k, c) in theirs {
                add_count(mine, k, *c);
            }
        }
    }
}

/// The hits of one decision reference. For [`NO_DECISION`] only `total`
/// and `hours` are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionSummary {
    pub counts: HitCounts,
    /// XXH3-64 of each distinct `client` value, sorted. Distinct clients
    /// over any set of files is the size of the union; 64 bits make a
    /// collision among even a billion subscribers unlikely (p ≈ 3·10⁻²).
    pub clients: Vec<u64>,
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
}

impl DecisionSummary {
    pub fn merge(&mut self, o: &DecisionSummary) {
        self.counts.merge(&o.counts);
        self.clients = union_sorted(&self.clients, &o.clients);
        widen(
            &mut self.first_ts,
            &mut self.last_ts,
            &o.first_ts,
            &o.last_ts,
        );
    }
}

/// When a list version was seen in force (from the hits that name it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    pub hits: u64,
}

/// Everything the index keeps about one log file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSummary {
    pub version: u32,
    /// The file name (no directory).
    pub file: String,
    /// Bytes of complete lines summarised, from the start of the file.
    pub bytes: u64,
    /// Hex SHA-256 of the first line, so a file replaced by another of the
    /// same name is noticed.
    pub head: String,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Over every record with a timestamp.
    pub ts_min: Option<String>,
    pub ts_max: Option<String>,
    /// Records by `kind`.
    pub kinds: BTreeMap<String, u64>,
    /// Seqs declared lost by `lost` records.
    pub lost: u64,
    pub hits: HitCounts,
    /// By decision reference ([`NO_DECISION`] for rules without one).
    pub decisions: BTreeMap<String, DecisionSummary>,
    /// List name → list version → when hits saw it in force.
    pub versions: BTreeMap<String, BTreeMap<u64, Span>>,
    /// `list` (list change) and `console` records, exactly as stored: rare,
    /// and shown whole.
    pub events: Vec<String>,
    /// The last checkpoint: `(seq, hash)`.
    pub last_checkpoint: Option<(u64, String)>,
    /// Per hour of hits: the byte offset where its first hit line starts
    /// and where its last one ends, so a search for a time range reads
    /// only that part of the file.
    pub hour_spans: BTreeMap<String, (u64, u64)>,
    /// Where the line being added starts (while summarising only).
    #[serde(skip)]
    at: u64,
}

impl FileSummary {
    pub fn empty(file: &str) -> FileSummary {
        FileSummary {
            version: FORMAT_VERSION,
            file: file.to_string(),
            bytes: 0,
            head: String::new(),
            records: 0,
            first_seq: None,
            last_seq: None,
            ts_min: None,
            ts_max: None,
            kinds: BTreeMap::new(),
            lost: 0,
            hits: HitCounts::default(),
            decisions: BTreeMap::new(),
            versions: BTreeMap::new(),
            events: Vec::new(),
            last_checkpoint: None,
            hour_spans: BTreeMap::new(),
            at: 0,
        }
    }

    /// Adds the complete lines of `chunk` (each ending in `\n`), the bytes
    /// that follow the ones summarised so far.
    pub fn add_chunk(&mut self, chunk: &[u8]) {
        let mut pos = self.bytes;
        for l in crate::audit::reader::lines(chunk) {
            self.at = pos;
            self.add_line(l);
            pos += l.len() as u64 + 1;
        }
        self.bytes = pos;
        self.at = 0;
    }

    /// Adds one complete line (without its `\n`). Lines that are not
    /// records are counted and otherwise ignored: the index describes, it
    /// does not judge (that is `verify`'s job).
    fn add_line(&mut self, line: &[u8]) {
        self.records += 1;
        match raw_str(line, b"\"kind\":") {
            Raw::Plain("hit") => {
                if let Some(f) = HitFields::fast(line) {
                    self.add_hit(&f, line.len() as u64);
                    return;
                }
            }
            Raw::Plain(_) | Raw::Missing => {
                self.add_other(line);
                return;
            }
            Raw::Complex => {}
        }
        match parse_hit(line) {
            Some(v) => self.add_hit(&HitFields::of(&v), line.len() as u64),
            None => self.add_other(line),
        }
    }

    fn add_hit(&mut self, h: &HitFields<'_>, len: u64) {
        // Keys built once per hit, without allocating in the common case.
        let mut hour_buf = [0u8; 17];
        let hour = hour_key_into(h.ts, &mut hour_buf);
        let (start, end) = (self.at, self.at + len + 1);
        match self.hour_spans.get_mut(hour) {
            Some(span) => {
                span.0 = span.0.min(start);
                span.1 = span.1.max(end);
            }
            None => {
                self.hour_spans.insert(hour.to_string(), (start, end));
            }
        }
        let name = name_key_cow(h.qname);
        self.note(h.seq, h.ts, "hit");
        self.hits.add(h, hour, &name);
        let key = h.decision.unwrap_or(NO_DECISION);
        let d = match self.decisions.get_mut(key) {
            Some(d) => d,
            None => self.decisions.entry(key.to_string()).or_default(),
        };
        if key == NO_DECISION {
            // No report is made for hits without a decision: their names
            // are in the file's counts already, and their clients (most of
            // the subscriber base) would dominate the index.
            d.counts.total += 1;
            bump(&mut d.counts.hours, hour);
        } else {
            d.counts.add(h, hour, &name);
            let c = xxhash_rust::xxh3::xxh3_64(h.client.as_bytes());
            if let Err(i) = d.clients.binary_search(&c) {
                d.clients.insert(i, c);
            }
        }
        widen_str(&mut d.first_ts, &mut d.last_ts, h.ts);
        let versions = match self.versions.get_mut(h.list) {
            Some(v) => v,
            None => self.versions.entry(h.list.to_string()).or_default(),
        };
        let span = versions.entry(h.list_version).or_default();
        span.hits += 1;
        widen_str(&mut span.first_ts, &mut span.last_ts, h.ts);
    }

    fn add_other(&mut self, line: &[u8]) {
        #[derive(Deserialize)]
        struct Other {
            seq: Option<u64>,
            ts: Option<String>,
            kind: Option<String>,
            count: Option<u64>,
            hash: Option<String>,
        }
        let Ok(o) = serde_json::from_slice::<Other>(line) else {
            bump(&mut self.kinds, "invalid");
            return;
        };
        let kind = o.kind.unwrap_or_default();
        self.note(o.seq, o.ts.as_deref().unwrap_or(""), &kind);
        match kind.as_str() {
            "lost" => self.lost += o.count.unwrap_or(0),
            "checkpoint" => {
                if let (Some(s), Some(h)) = (o.seq, o.hash) {
                    self.last_checkpoint = Some((s, h));
                }
            }
            "list" | "console" => {
                self.events.push(String::from_utf8_lossy(line).into_owned());
            }
            _ => {}
        }
    }

    fn note(&mut self, seq: Option<u64>, ts: &str, kind: &str) {
        if let Some(s) = seq {
            self.first_seq.get_or_insert(s);
            self.last_seq = Some(s);
        }
        if !ts.is_empty() {
            widen_str(&mut self.ts_min, &mut self.ts_max, ts);
        }
        bump(&mut self.kinds, kind);
    }

    /// Appends `later`, the summary of the lines that follow this one's.
    pub fn append(&mut self, later: &FileSummary) {
        let shift = self.bytes;
        for (h, &(a, b)) in &later.hour_spans {
            match self.hour_spans.get_mut(h) {
                Some(span) => {
                    span.0 = span.0.min(a + shift);
                    span.1 = span.1.max(b + shift);
                }
                None => {
                    self.hour_spans.insert(h.clone(), (a + shift, b + shift));
                }
            }
        }
        self.bytes += later.bytes;
        self.records += later.records;
        if self.first_seq.is_none() {
            self.first_seq = later.first_seq;
        }
        if later.last_seq.is_some() {
            self.last_seq = later.last_seq;
        }
        widen(
            &mut self.ts_min,
            &mut self.ts_max,
            &later.ts_min,
            &later.ts_max,
        );
        for (k, c) in &later.kinds {
            add_count(&mut self.kinds, k, *c);
        }
        self.lost += later.lost;
        self.hits.merge(&later.hits);
        for (k, d) in &later.decisions {
            match self.decisions.get_mut(k) {
                Some(mine) => mine.merge(d),
                None => {
                    self.decisions.insert(k.clone(), d.clone());
                }
            }
        }
        for (list, versions) in &later.versions {
            let mine = match self.versions.get_mut(list) {
                Some(m) => m,
                None => self.versions.entry(list.clone()).or_default(),
            };
            for (v, s) in versions {
                let m = mine.entry(*v).or_default();
                m.hits += s.hits;
                widen(&mut m.first_ts, &mut m.last_ts, &s.first_ts, &s.last_ts);
            }
        }
        self.events.extend(later.events.iter().cloned());
        if later.last_checkpoint.is_some() {
            self.last_checkpoint.clone_from(&later.last_checkpoint);
        }
    }
}

/// The fields of a hit the summary uses.
struct HitFields<'a> {
    seq: Option<u64>,
    ts: &'a str,
    client: &'a str,
    qname: &'a str,
    action: &'a str,
    list: &'a str,
    decision: Option<&'a str>,
    list_version: u64,
}

impl<'a> HitFields<'a> {
    /// Straight from the line when every field is a plain string (the
    /// writer's layout); `None` sends the line to the full parse.
    fn fast(line: &'a [u8]) -> Option<HitFields<'a>> {
        let s = |needle: &[u8]| match raw_str(line, needle) {
            Raw::Plain(v) => Some(v),
            Raw::Missing => Some(""),
            Raw::Complex => None,
        };
        let decision = match raw_str(line, b"\"decision\":") {
            Raw::Plain(d) => Some(d),
            Raw::Missing => None,
            Raw::Complex => return None,
        };
        Some(HitFields {
            seq: number(line, b"\"seq\":"),
            ts: s(b"\"ts\":")?,
            client: s(b"\"client\":")?,
            qname: s(b"\"qname\":")?,
            action: s(b"\"action\":")?,
            list: s(b"\"list\":")?,
            decision,
            list_version: number(line, b"\"list_version\":").unwrap_or(0),
        })
    }

    fn of(v: &'a HitView<'a>) -> HitFields<'a> {
        HitFields {
            seq: Some(v.seq),
            ts: &v.ts,
            client: &v.client,
            qname: &v.qname,
            action: &v.action,
            list: &v.list,
            decision: v.decision.as_deref(),
            list_version: v.list_version,
        }
    }
}

/// A non-negative integer field read from the raw line.
fn number(line: &[u8], needle: &[u8]) -> Option<u64> {
    let i = memchr::memmem::find(line, needle)?;
    let rest = &line[i + needle.len()..];
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Adds `c` to `m[k]`, allocating the key only when it is new.
fn add_count(m: &mut BTreeMap<String, u64>, k: &str, c: u64) {
    match m.get_mut(k) {
        Some(n) => *n += c,
        None => {
            m.insert(k.to_string(), c);
        }
    }
}

fn bump(m: &mut BTreeMap<String, u64>, k: &str) {
    match m.get_mut(k) {
        Some(c) => *c += 1,
        None => {
            m.insert(k.to_string(), 1);
        }
    }
}

/// As `audit stats --by name` keys names.
fn name_key_cow(q: &str) -> std::borrow::Cow<'_, str> {
    let q = q.strip_suffix('.').unwrap_or(q);
    if q.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(q.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(q)
    }
}

/// As `audit stats --by hour` keys hours (`YYYY-MM-DDTHH:00Z`), built in
/// `buf`.
pub(crate) fn hour_key_into<'a>(ts: &'a str, buf: &'a mut [u8; 17]) -> &'a str {
    match ts.as_bytes().get(..13) {
        Some(hour) if ts.is_char_boundary(13) => {
            buf[..13].copy_from_slice(hour);
            buf[13..].copy_from_slice(b":00Z");
            std::str::from_utf8(&buf[..]).unwrap_or(ts)
        }
        _ => ts,
    }
}

/// [`widen`] by one timestamp, reusing the strings' buffers.
fn widen_str(lo: &mut Option<String>, hi: &mut Option<String>, ts: &str) {
    match lo {
        Some(l) if ts < l.as_str() => {
            l.clear();
            l.push_str(ts);
        }
        Some(_) => {}
        None => *lo = Some(ts.to_string()),
    }
    match hi {
        Some(h) if ts > h.as_str() => {
            h.clear();
            h.push_str(ts);
        }
        Some(_) => {}
        None => *hi = Some(ts.to_string()),
    }
}

/// Widens `[lo, hi]` to cover `[a, b]`. Timestamps share one fixed-width
/// format, so string order is time order.
pub(crate) fn widen(
    lo: &mut Option<String>,
    hi: &mut Option<String>,
    a: &Option<String>,
    b: &Option<String>,
) {
    if let Some(a) = a {
        if lo.as_ref().is_none_or(|l| a < l) {
            *lo = Some(a.clone());
        }
    }
    if let Some(b) = b {
        if hi.as_ref().is_none_or(|h| b > h) {
            *hi = Some(b.clone());
        }
    }
}

pub(crate) fn union_sorted(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}
