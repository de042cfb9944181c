//! What the pages and the JSON API show, computed from the index (counts)
//! and from the log itself (search rows, through `audit search`'s own
//! code, so the console and the CLI agree by construction). Everything
//! here blocks: handlers call it on a blocking thread.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::audit::index::{self, AuditIndex, IndexedFile, NO_DECISION, Prune};
use crate::audit::{AuditError, OutputFormat, SearchFilter, VerifyReport, parse_client};

use super::auth::Role;

/// A key and its count, for top-N tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyCount {
    pub key: String,
    pub count: u64,
}

/// The `n` largest counts, ties by key (as `audit stats` orders them).
pub fn top(map: &BTreeMap<String, u64>, n: usize) -> Vec<KeyCount> {
    let mut v: Vec<KeyCount> = map
        .iter()
        .map(|(k, c)| KeyCount {
            key: k.clone(),
            count: *c,
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    v.truncate(n);
    v
}

/// Hour counts (`YYYY-MM-DDTHH:00Z`) summed per UTC day, in time order.
pub fn by_day(hours: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut days: BTreeMap<String, u64> = BTreeMap::new();
    for (h, c) in hours {
        *days
            .entry(h.get(..10).unwrap_or(h).to_string())
            .or_default() += c;
    }
    days.into_iter().collect()
}

/// The chain as the background verification last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChainStatus {
    /// `pending` (not checked yet), `intact`, `broken` or `error`.
    pub state: String,
    pub checked_at: Option<String>,
    /// Every record up to this seq verified.
    pub verified_to_seq: Option<u64>,
    pub records: u64,
    pub hits: u64,
    /// Seqs declared lost by `lost` records.
    pub lost: u64,
    pub torn: u64,
    pub warnings: usize,
    /// The first problem, as `audit verify` words it.
    pub problem: Option<String>,
    /// With `[audit] anchor_url`: what the anchor client has sent to the
    /// witness (the witness's own view is `audit verify --anchors` on the
    /// auditor's side).
    pub anchoring: Option<Anchoring>,
}

/// The anchor client's counters, as the console shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Anchoring {
    /// Signed records the witness accepted.
    pub delivered: u64,
    /// Waiting to be sent.
    pub backlog: u64,
    /// Refused by the witness.
    pub rejected: u64,
    /// Dropped from a full backlog.
    pub dropped: u64,
    /// Failed attempts (retried).
    pub failed: u64,
}

impl From<crate::audit::AnchorStats> for Anchoring {
    fn from(a: crate::audit::AnchorStats) -> Anchoring {
        Anchoring {
            delivered: a.delivered,
            backlog: a.backlog,
            rejected: a.rejected,
            dropped: a.dropped,
            failed: a.failed,
        }
    }
}

impl ChainStatus {
    pub fn pending() -> ChainStatus {
        ChainStatus {
            state: "pending".into(),
            ..ChainStatus::default()
        }
    }

    pub fn from_report(r: &VerifyReport, at: String) -> ChainStatus {
        ChainStatus {
            state: if r.is_intact() { "intact" } else { "broken" }.into(),
            checked_at: Some(at),
            verified_to_seq: if r.is_intact() { r.last_seq } else { None },
            records: r.records,
            hits: r.hits,
            lost: r.lost,
            torn: r.torn,
            warnings: r.warnings.len(),
            problem: r
                .problem
                .as_ref()
                .map(|p| format!("{}:{}: {:?}: {}", p.file, p.line, p.kind, p.detail)),
            anchoring: None,
        }
    }

    pub fn error(e: &AuditError, at: String) -> ChainStatus {
        ChainStatus {
            state: "error".into(),
            checked_at: Some(at),
            problem: Some(e.to_string()),
            ..ChainStatus::default()
        }
    }
}

/// `GET /api/overview`.
#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    pub files: usize,
    pub records: u64,
    pub log_bytes: u64,
    pub hits: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    /// Records by kind (hit, start, checkpoint, lost, console, …).
    pub kinds: BTreeMap<String, u64>,
    pub lost: u64,
    pub last_checkpoint_seq: Option<u64>,
    pub last_checkpoint_hash: Option<String>,
    /// Records after the last checkpoint: protected by no checkpoint yet.
    pub unanchored_tail: Option<u64>,
    pub hits_by_day: Vec<(String, u64)>,
    /// The last 48 hours that had hits.
    pub hits_by_hour: Vec<(String, u64)>,
    pub top_decisions: Vec<KeyCount>,
    pub top_lists: Vec<KeyCount>,
    pub top_names: Vec<KeyCount>,
    pub actions: Vec<KeyCount>,
    pub distinct_names: usize,
    pub chain: ChainStatus,
}

pub const TOP: usize = 10;

pub fn overview(files: &[IndexedFile], chain: ChainStatus) -> Overview {
    let t = index::totals(files);
    let hours: Vec<(String, u64)> = t.hits.hours.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let last48 = hours[hours.len().saturating_sub(48)..].to_vec();
    let (cp_seq, cp_hash) = match &t.last_checkpoint {
        Some((s, h)) => (Some(*s), Some(h.clone())),
        None => (None, None),
    };
    Overview {
        files: t.files,
        records: t.records,
        log_bytes: t.log_bytes,
        hits: t.hits.total,
        first_seq: t.first_seq,
        last_seq: t.last_seq,
        first_ts: t.ts_min,
        last_ts: t.ts_max,
        kinds: t.kinds,
        lost: t.lost,
        unanchored_tail: match (t.last_seq, cp_seq) {
            (Some(l), Some(c)) => Some(l.saturating_sub(c)),
            (Some(l), None) => t.first_seq.map(|f| l - f + 1),
            _ => None,
        },
        last_checkpoint_seq: cp_seq,
        last_checkpoint_hash: cp_hash,
        hits_by_day: by_day(&t.hits.hours),
        hits_by_hour: last48,
        top_decisions: top(&t.decisions, TOP),
        top_lists: top(&t.hits.lists, TOP),
        top_names: top(&t.hits.names, TOP),
        actions: top(&t.hits.actions, usize::MAX),
        distinct_names: t.hits.names.len(),
        chain,
    }
}

/// `GET /api/report?decision=REF`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub decision: String,
    pub hits: u64,
    pub distinct_clients: u64,
    pub distinct_names: usize,
    /// First and last hit: when the order's rules were seen in force.
    pub first_hit: Option<String>,
    pub last_hit: Option<String>,
    pub hits_by_day: Vec<(String, u64)>,
    /// Every name asked, most asked first (at most 1000).
    pub names: Vec<KeyCount>,
    pub lists: Vec<KeyCount>,
    pub actions: Vec<KeyCount>,
    /// `list` (list change) records that name this decision.
    pub list_changes: Vec<serde_json::Value>,
}

pub const REPORT_NAMES: usize = 1000;

pub fn report(files: &[IndexedFile], reference: &str) -> Report {
    let d = index::decision(files, reference);
    let list_changes = index::list_events(files)
        .into_iter()
        .filter(|e| e.contains(&format!("\"{reference}\"")))
        .filter_map(|e| serde_json::from_str(&e).ok())
        .collect();
    Report {
        decision: reference.to_string(),
        hits: d.counts.total,
        distinct_clients: d.clients.len() as u64,
        distinct_names: d.counts.names.len(),
        first_hit: d.first_ts,
        last_hit: d.last_ts,
        hits_by_day: by_day(&d.counts.hours),
        names: top(&d.counts.names, REPORT_NAMES),
        lists: top(&d.counts.lists, usize::MAX),
        actions: top(&d.counts.actions, usize::MAX),
        list_changes,
    }
}

/// Every decision reference with its hits (for the report index page).
pub fn decisions(files: &[IndexedFile]) -> Vec<KeyCount> {
    let t = index::totals(files);
    let mut d = top(&t.decisions, usize::MAX);
    d.retain(|k| k.key != NO_DECISION);
    d
}

/// `GET /api/lists`: what was enforced, and when.
#[derive(Clone, Debug, Serialize)]
pub struct ListHistory {
    /// `list` records (list changes), oldest first.
    pub changes: Vec<serde_json::Value>,
    /// Every list version that hits saw in force.
    pub versions: Vec<VersionRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VersionRow {
    pub list: String,
    pub version: u64,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub hits: u64,
}

pub fn list_history(files: &[IndexedFile]) -> ListHistory {
    let changes = index::list_events(files)
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    let mut versions = Vec::new();
    for (list, vs) in index::versions(files) {
        for (v, s) in vs {
            versions.push(VersionRow {
                list: list.clone(),
                version: v,
                first_seen: s.first_ts,
                last_seen: s.last_ts,
                hits: s.hits,
            });
        }
    }
    ListHistory { changes, versions }
}

// ------------------------------------------------------------------ search

/// The search parameters of `/search` and `/api/search`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct SearchParams {
    pub since: Option<String>,
    pub until: Option<String>,
    pub client: Option<String>,
    pub name: Option<String>,
    pub decision: Option<String>,
    pub list: Option<String>,
    pub action: Option<String>,
    /// `hit` (default), `list` (list changes) or `console`.
    pub kind: Option<String>,
    /// `json` (a page, default), `jsonl` or `csv` (the whole result, streamed).
    pub format: Option<String>,
    pub limit: Option<usize>,
    pub offset: Option<u64>,
}

/// A refused search.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Which records a search reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hit,
    List,
    Console,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl SearchParams {
    pub fn kind(&self, role: Role) -> Result<Kind, SearchError> {
        match nonempty(&self.kind) {
            None | Some("hit") | Some("dns") => Ok(Kind::Hit),
            Some("list") => Ok(Kind::List),
            Some("console") if role == Role::Viewer => Err(SearchError::Forbidden(
                "console records name the clients auditors searched for: auditors only",
            )),
            Some("console") => Ok(Kind::Console),
            Some(other) => Err(SearchError::BadRequest(format!(
                "kind {other:?}: hit, list or console"
            ))),
        }
    }

    /// Whether any filter is set (an empty search form shows no rows).
    pub fn any(&self) -> bool {
        [
            &self.since,
            &self.until,
            &self.client,
            &self.name,
            &self.decision,
            &self.list,
            &self.action,
        ]
        .iter()
        .any(|v| nonempty(v).is_some())
    }

    pub fn filter(&self, role: Role) -> Result<SearchFilter, SearchError> {
        let client = match nonempty(&self.client) {
            Some(_) if role == Role::Viewer => {
                return Err(SearchError::Forbidden("viewers cannot search by client"));
            }
            Some(c) => Some(parse_client(c, None)?),
            None => None,
        };
        Ok(SearchFilter::new(
            nonempty(&self.since),
            nonempty(&self.until),
            client,
            nonempty(&self.name),
            nonempty(&self.decision),
        )?
        .with_list(nonempty(&self.list))
        .with_action(nonempty(&self.action)))
    }
}

/// What a viewer sees instead of a client address: its /24 (IPv4) or /48
/// (IPv6) prefix; a pseudonym is hidden altogether.
pub fn mask_client(client: &str) -> String {
    match client.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(a)) => {
            let o = a.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        Ok(IpAddr::V6(a)) => {
            let s = a.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
        Err(_) => "(hidden)".to_string(),
    }
}

/// One hit as the console shows it (the stored fields but `prev`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub seq: u64,
    pub ts: String,
    pub client: String,
    pub port: u16,
    pub transport: String,
    pub qname: String,
    pub qtype: String,
    pub action: String,
    pub rule: String,
    pub list: String,
    pub file: String,
    pub line: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub list_version: u64,
}

impl Row {
    fn parse(line: &[u8], role: Role) -> Option<Row> {
        let h = crate::audit::record::parse_hit(line)?;
        let client = if role == Role::Viewer {
            mask_client(&h.client)
        } else {
            h.client.into_owned()
        };
        Some(Row {
            seq: h.seq,
            ts: h.ts.into_owned(),
            client,
            port: h.port,
            transport: h.transport.into_owned(),
            qname: h.qname.into_owned(),
            qtype: h.qtype.into_owned(),
            action: h.action.into_owned(),
            rule: h.rule.into_owned(),
            list: h.list.into_owned(),
            file: h.file.into_owned(),
            line: h.line,
            decision: h.decision,
            authority: h.authority,
            category: h.category,
            list_version: h.list_version,
        })
    }
}

/// One page of a hit search.
#[derive(Clone, Debug, Serialize)]
pub struct Page {
    pub offset: u64,
    pub limit: usize,
    pub rows: Vec<Row>,
    /// Whether there are more results after this page.
    pub more: bool,
}

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// Receives `audit search`'s JSON output (the stored lines) and hands
/// each whole line to `each`; `each` returning false stops the search
/// (as a closed pipe does).
struct Lines<F: FnMut(&[u8]) -> io::Result<bool>> {
    partial: Vec<u8>,
    each: F,
}

impl<F: FnMut(&[u8]) -> io::Result<bool>> Write for Lines<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            let go = if self.partial.is_empty() {
                (self.each)(&rest[..i])?
            } else {
                self.partial.extend_from_slice(&rest[..i]);
                let line = std::mem::take(&mut self.partial);
                (self.each)(&line)?
            };
            if !go {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn pruned(files: &[IndexedFile], f: &SearchFilter) -> Vec<crate::audit::reader::LogFile> {
    Prune {
        since: f.since(),
        until: f.until(),
        decision: f.decision(),
        list: f.list(),
        action: f.action(),
    }
    .files(files)
}

/// One page of hits matching `f`, in log order, reading only the files the
/// index says can match.
pub fn search_page(
    files: &[IndexedFile],
    f: &SearchFilter,
    role: Role,
    offset: u64,
    limit: usize,
) -> Result<Page, AuditError> {
    let mut rows = Vec::new();
    let mut seen = 0u64;
    let mut more = false;
    let mut sink = Lines {
        partial: Vec::new(),
        each: |line: &[u8]| {
            seen += 1;
            if seen <= offset {
                return Ok(true);
            }
            if rows.len() == limit {
                more = true;
                return Ok(false);
            }
            if let Some(r) = Row::parse(line, role) {
                rows.push(r);
            }
            Ok(true)
        },
    };
    crate::audit::query::search_files(&pruned(files, f), f, OutputFormat::Json, &mut sink)?;
    Ok(Page {
        offset,
        limit,
        rows,
        more,
    })
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Export {
    Jsonl,
    Csv,
}

/// Writes every hit matching `f` to `out` (auditors get the lines exactly
/// as stored; viewers the fields with the client masked); returns the count.
pub fn export(
    files: &[IndexedFile],
    f: &SearchFilter,
    role: Role,
    format: Export,
    out: &mut dyn Write,
) -> Result<u64, AuditError> {
    let mut n = 0u64;
    if format == Export::Csv {
        out.write_all(crate::audit::query::CSV_HEADER.as_bytes())
            .map_err(AuditError::Output)?;
    }
    let mut buf = Vec::new();
    let mut sink = Lines {
        partial: Vec::new(),
        each: |line: &[u8]| {
            buf.clear();
            match (format, role) {
                (Export::Jsonl, Role::Auditor) => buf.extend_from_slice(line),
                (Export::Jsonl, Role::Viewer) => {
                    // Only hits reach here; parse_hit accepts what search matched.
                    let Some(r) = Row::parse(line, role) else {
                        return Ok(true);
                    };
                    serde_json::to_writer(&mut buf, &r).map_err(io::Error::other)?;
                }
                (Export::Csv, _) => {
                    let Some(mut h) = crate::audit::record::parse_hit(line) else {
                        return Ok(true);
                    };
                    if role == Role::Viewer {
                        h.client = mask_client(&h.client).into();
                    }
                    crate::audit::query::csv_row(&mut buf, &h);
                    buf.pop();
                }
            }
            buf.push(b'\n');
            n += 1;
            out.write_all(&buf)?;
            Ok(true)
        },
    };
    crate::audit::query::search_files(&pruned(files, f), f, OutputFormat::Json, &mut sink)?;
    Ok(n)
}

/// `list` or `console` records in `[since, until)`, as stored (few: read
/// from the index).
pub fn events(files: &[IndexedFile], kind: Kind, f: &SearchFilter) -> Vec<String> {
    let want = match kind {
        Kind::List => "list",
        Kind::Console => "console",
        Kind::Hit => return Vec::new(),
    };
    files
        .iter()
        .flat_map(|x| x.summary.events.iter())
        .filter(|e| {
            let b = e.as_bytes();
            let kind_ok = matches!(
                crate::audit::record::raw_str(b, b"\"kind\":"),
                crate::audit::record::Raw::Plain(k) if k == want
            );
            let ts = match crate::audit::record::raw_str(b, b"\"ts\":") {
                crate::audit::record::Raw::Plain(t) => t,
                _ => "",
            };
            kind_ok && f.since().is_none_or(|s| ts >= s) && f.until().is_none_or(|u| ts < u)
        })
        .cloned()
        .collect()
}

/// Refreshes the index (blocking).
pub fn refresh(index: &AuditIndex) -> Result<Vec<IndexedFile>, AuditError> {
    index.refresh()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let table = [
            ("192.0.2.77", "192.0.2.0/24"),
            ("::ffff:198.51.100.9", "198.51.100.0/24"),
            ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
            ("hmac:00112233445566778899aabbccddeeff", "(hidden)"),
            ("", "(hidden)"),
        ];
        for (c, want) in table {
            assert_eq!(mask_client(c), want, "{c}");
        }
    }

    #[test]
    fn tops_and_days() {
        let m: BTreeMap<String, u64> = [("b", 2), ("a", 2), ("c", 5)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let t = top(&m, 2);
        assert_eq!(
            t.iter()
                .map(|k| (k.key.as_str(), k.count))
                .collect::<Vec<_>>(),
            [("c", 5), ("a", 2)]
        );
        let h: BTreeMap<String, u64> = [
            ("2025-03-01T00:00Z", 1),
            ("2025-03-01T05:00Z", 2),
            ("2025-03-02T00:00Z", 4),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
        assert_eq!(
            by_day(&h),
            [("2025-03-01".to_string(), 3), ("2025-03-02".to_string(), 4)]
        );
    }

    #[test]
    fn viewers_cannot_filter_by_client_or_read_console_records() {
        let p = SearchParams {
            client: Some("192.0.2.1".into()),
            ..SearchParams::default()
        };
        assert!(matches!(
            p.filter(Role::Viewer),
            Err(SearchError::Forbidden(_))
        ));
        assert!(p.filter(Role::Auditor).is_ok());
        let k = SearchParams {
            kind: Some("console".into()),
            ..SearchParams::default()
        };
        assert!(matches!(
            k.kind(Role::Viewer),
            Err(SearchError::Forbidden(_))
        ));
        assert_eq!(k.kind(Role::Auditor).unwrap(), Kind::Console);
        let bad = SearchParams {
            since: Some("yesterday".into()),
            ..SearchParams::default()
        };
        assert!(matches!(
            bad.filter(Role::Auditor),
            Err(SearchError::Audit(_))
        ));
    }
}
