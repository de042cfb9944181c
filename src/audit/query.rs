//! `audit search` and `audit stats`: streaming filters over the hit records.
//!
//! Both run on the ordered parallel scan: workers parse and filter chunks,
//! the calling thread only writes output (search) or merges per-chunk
//! counts (stats). Torn tails and non-hit records are skipped; checking the
//! chain is `verify`'s job.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::path::Path;

use ipnet::IpNet;
use serde::Serialize;

use super::AuditError;
use super::reader::{Event, LogFile, lines, list_files, scan};
use super::record::{HitView, Raw, parse_hit, raw_str};
use super::time::{format_ts, parse_rfc3339};

/// Output format of `search` and `stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// JSON: for search the matching records exactly as stored, one per line.
    Json,
    Csv,
    /// Aligned columns for people.
    Table,
}

/// Which client(s) to match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMatch {
    /// An address or a CIDR prefix (full-address logs).
    Net(IpNet),
    /// The exact `client` string, e.g. an `hmac:` pseudonym.
    Exact(String),
}

/// Record filter shared by search and stats. All given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchFilter {
    /// Inclusive lower bound, as a record timestamp string.
    since: Option<String>,
    /// Exclusive upper bound.
    until: Option<String>,
    client: Option<ClientMatch>,
    /// Lowercase, no leading or trailing dot; empty matches every name.
    name: Option<String>,
    decision: Option<String>,
    /// Exact list name (the console's filter; the CLI has none).
    list: Option<String>,
    /// Exact action (`nxdomain`, …).
    action: Option<String>,
}

impl SearchFilter {
    /// `since`/`until` are RFC 3339 (or bare dates); `since` is inclusive,
    /// `until` exclusive.
    pub fn new(
        since: Option<&str>,
        until: Option<&str>,
        client: Option<ClientMatch>,
        name: Option<&str>,
        decision: Option<&str>,
    ) -> Result<SearchFilter, AuditError> {
        let ts = |s: &str| -> Result<String, AuditError> {
            let us = parse_rfc3339(s).map_err(AuditError::Arg)?;
            Ok(format_ts(us).as_str().to_string())
        };
        Ok(SearchFilter {
            since: since.map(ts).transpose()?,
            until: until.map(ts).transpose()?,
            client,
            name: name.map(|n| n.trim_matches('.').to_ascii_lowercase()),
            decision: decision.map(str::to_string),
            list: None,
            action: None,
        })
    }

    /// Also require this list name (exact).
    pub fn with_list(mut self, list: Option<&str>) -> SearchFilter {
        self.list = list.map(str::to_string);
        self
    }

    /// Also require this action (exact).
    pub fn with_action(mut self, action: Option<&str>) -> SearchFilter {
        self.action = action.map(str::to_string);
        self
    }

    /// The bounds as record timestamps, for index pruning.
    pub fn since(&self) -> Option<&str> {
        self.since.as_deref()
    }

    pub fn until(&self) -> Option<&str> {
        self.until.as_deref()
    }

    pub fn decision(&self) -> Option<&str> {
        self.decision.as_deref()
    }

    pub fn list(&self) -> Option<&str> {
        self.list.as_deref()
    }

    pub fn action(&self) -> Option<&str> {
        self.action.as_deref()
    }

    pub fn client(&self) -> Option<&ClientMatch> {
        self.client.as_ref()
    }

    fn time_ok(&self, ts: &str) -> bool {
        // Timestamps share one fixed-width UTC format: string order is time order.
        self.since.as_deref().is_none_or(|s| ts >= s)
            && self.until.as_deref().is_none_or(|u| ts < u)
    }

    fn client_ok(&self, client: &str) -> bool {
        match &self.client {
            None => true,
            Some(ClientMatch::Exact(c)) => client == c,
            Some(ClientMatch::Net(net)) => client
                .parse::<IpAddr>()
                .is_ok_and(|ip| net.contains(&ip.to_canonical()) || net.contains(&ip)),
        }
    }

    /// The authoritative match, on a parsed hit.
    fn matches(&self, h: &HitView<'_>) -> bool {
        self.time_ok(&h.ts)
            && self
                .decision
                .as_ref()
                .is_none_or(|d| h.decision.as_deref() == Some(d.as_str()))
            && self.name.as_ref().is_none_or(|n| name_under(&h.qname, n))
            && self.list.as_ref().is_none_or(|l| h.list == l.as_str())
            && self.action.as_ref().is_none_or(|a| h.action == a.as_str())
            && self.client_ok(&h.client)
    }

    /// The same decision from the raw line, without a JSON parse (which
    /// would dominate a scan): `None` when a needed field has escapes or is
    /// not a string, and only the full parse can tell.
    fn fast_match(&self, line: &[u8]) -> Option<bool> {
        match raw_str(line, b"\"kind\":") {
            Raw::Plain("hit") => {}
            Raw::Complex => return None,
            _ => return Some(false),
        }
        if (self.since.is_some() || self.until.is_some()) && !self.time_ok(field(line, b"\"ts\":")?)
        {
            return Some(false);
        }
        if let Some(d) = &self.decision {
            match raw_str(line, b"\"decision\":") {
                Raw::Plain(v) if v == d => {}
                Raw::Complex => return None,
                _ => return Some(false),
            }
        }
        if let Some(n) = &self.name {
            if !name_under(field(line, b"\"qname\":")?, n) {
                return Some(false);
            }
        }
        if let Some(l) = &self.list {
            if field(line, b"\"list\":")? != l {
                return Some(false);
            }
        }
        if let Some(a) = &self.action {
            if field(line, b"\"action\":")? != a {
                return Some(false);
            }
        }
        if self.client.is_some() && !self.client_ok(field(line, b"\"client\":")?) {
            return Some(false);
        }
        Some(true)
    }
}

/// A string field as the full parse would see it (absent = empty).
fn field<'a>(line: &'a [u8], needle: &[u8]) -> Option<&'a str> {
    match raw_str(line, needle) {
        Raw::Plain(s) => Some(s),
        Raw::Missing => Some(""),
        Raw::Complex => None,
    }
}

/// Parses `--client`: an address, a CIDR prefix, or any other string taken
/// as an exact client value (a pseudonym). With an HMAC key, a single
/// address is turned into its pseudonym so an auditor holding the key can
/// search a pseudonymised log by address.
pub fn parse_client(s: &str, hmac_key: Option<&[u8]>) -> Result<ClientMatch, AuditError> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(match hmac_key {
            Some(k) => ClientMatch::Exact(super::record::pseudonym(k, ip)),
            None => ClientMatch::Net(IpNet::from(ip.to_canonical())),
        });
    }
    if let Ok(net) = s.parse::<IpNet>() {
        if hmac_key.is_some() {
            return Err(AuditError::Arg(format!(
                "--client {s}: a prefix cannot be matched against pseudonyms; give one address"
            )));
        }
        return Ok(ClientMatch::Net(net.trunc()));
    }
    if s.is_empty() {
        return Err(AuditError::Arg("--client is empty".into()));
    }
    Ok(ClientMatch::Exact(s.to_string()))
}

/// Whether `qname` is `suffix` or a name below it, comparing whole labels
/// and ignoring ASCII case and a trailing dot.
pub(crate) fn name_under(qname: &str, suffix: &str) -> bool {
    let q = qname.strip_suffix('.').unwrap_or(qname).as_bytes();
    let s = suffix.as_bytes();
    if s.is_empty() {
        return true;
    }
    if q.len() < s.len() || !q[q.len() - s.len()..].eq_ignore_ascii_case(s) {
        return false;
    }
    q.len() == s.len() || q[q.len() - s.len() - 1] == b'.'
}

/// The registry provenance columns (date, entry, included) came later
/// than the others and follow them, so a consumer that reads columns by
/// position still finds the first sixteen where they were.
pub(crate) const CSV_HEADER: &str = "seq,ts,client,port,transport,qname,qtype,action,rule,list,file,line,\
                          decision,authority,category,list_version,date,entry,included\n";
/// Columns of the table output.
const TABLE_COLUMNS: usize = 11;
const TABLE_HEADER: [&str; TABLE_COLUMNS] = [
    "SEQ",
    "TIME",
    "CLIENT",
    "PORT",
    "PROTO",
    "QNAME",
    "TYPE",
    "ACTION",
    "LIST:LINE",
    "DECISION",
    "ENTRY",
];
const TABLE_WIDTH_SAMPLE: usize = 1000;

fn csv_field(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        out.push(b'"');
        for c in s.bytes() {
            if c == b'"' {
                out.push(b'"');
            }
            out.push(c);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

pub(crate) fn csv_row(out: &mut Vec<u8>, h: &HitView<'_>) {
    let num = |n: u64| n.to_string();
    let fields: [Cow<'_, str>; 19] = [
        num(h.seq).into(),
        Cow::Borrowed(&*h.ts),
        Cow::Borrowed(&*h.client),
        num(u64::from(h.port)).into(),
        Cow::Borrowed(&*h.transport),
        Cow::Borrowed(&*h.qname),
        Cow::Borrowed(&*h.qtype),
        Cow::Borrowed(&*h.action),
        Cow::Borrowed(&*h.rule),
        Cow::Borrowed(&*h.list),
        Cow::Borrowed(&*h.file),
        num(u64::from(h.line)).into(),
        Cow::Borrowed(h.decision.as_deref().unwrap_or("")),
        Cow::Borrowed(h.authority.as_deref().unwrap_or("")),
        Cow::Borrowed(h.category.as_deref().unwrap_or("")),
        num(h.list_version).into(),
        Cow::Borrowed(h.date.as_deref().unwrap_or("")),
        Cow::Borrowed(h.entry.as_deref().unwrap_or("")),
        Cow::Borrowed(h.included.as_deref().unwrap_or("")),
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        csv_field(out, f);
    }
    out.push(b'\n');
}

/// Control characters in a terminal table could rewrite the screen; names
/// come from the network.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

fn table_row(h: &HitView<'_>) -> [String; TABLE_COLUMNS] {
    [
        h.seq.to_string(),
        printable(&h.ts),
        printable(&h.client),
        h.port.to_string(),
        printable(&h.transport),
        printable(&h.qname),
        printable(&h.qtype),
        printable(&h.action),
        format!("{}:{}", printable(&h.list), h.line),
        printable(h.decision.as_deref().unwrap_or("-")),
        printable(h.entry.as_deref().unwrap_or("-")),
    ]
}

enum SearchOut {
    Bytes(Vec<u8>, u64),
    Rows(Vec<[String; TABLE_COLUMNS]>),
}

fn out_err(e: std::io::Error) -> AuditError {
    AuditError::Output(e)
}

struct Table {
    widths: Option<[usize; TABLE_COLUMNS]>,
    sample: Vec<[String; TABLE_COLUMNS]>,
}

impl Table {
    fn push(&mut self, row: [String; TABLE_COLUMNS], out: &mut dyn Write) -> std::io::Result<()> {
        match &self.widths {
            Some(w) => write_row(out, w, &row),
            None => {
                self.sample.push(row);
                if self.sample.len() >= TABLE_WIDTH_SAMPLE {
                    self.finish(out)?;
                }
                Ok(())
            }
        }
    }

    /// Widths come from the header and the first rows only, so the table
    /// streams; a later, longer value just pushes its line out.
    fn finish(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.widths.is_some() {
            return Ok(());
        }
        let mut w = TABLE_HEADER.map(|h| h.chars().count());
        for row in &self.sample {
            for (i, c) in row.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        write_row(out, &w, &TABLE_HEADER.map(String::from))?;
        for row in std::mem::take(&mut self.sample) {
            write_row(out, &w, &row)?;
        }
        self.widths = Some(w);
        Ok(())
    }
}

fn write_row(
    out: &mut dyn Write,
    w: &[usize; TABLE_COLUMNS],
    row: &[String; TABLE_COLUMNS],
) -> std::io::Result<()> {
    let mut line = String::new();
    for (i, c) in row.iter().enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        line.push_str(c);
        if i + 1 < row.len() {
            let pad = w[i].saturating_sub(c.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// Only lines that the raw check cannot reject get a full parse.
fn parsed_match<'a>(filter: &SearchFilter, line: &'a [u8]) -> Option<HitView<'a>> {
    if filter.fast_match(line) == Some(false) {
        return None;
    }
    parse_hit(line).filter(|h| filter.matches(h))
}

/// Writes the hits in `path` matching `filter`, in log order; returns how
/// many matched.
pub fn search(
    path: &Path,
    filter: &SearchFilter,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u64, AuditError> {
    search_files(&list_files(path)?, filter, format, out)
}

/// [`search`] over the given files (the console passes only those its
/// index says can match).
pub(crate) fn search_files(
    files: &[LogFile],
    filter: &SearchFilter,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u64, AuditError> {
    let work = |chunk: &[u8]| -> SearchOut {
        match format {
            OutputFormat::Table => SearchOut::Rows(
                lines(chunk)
                    .filter_map(|l| parsed_match(filter, l))
                    .map(|h| table_row(&h))
                    .collect(),
            ),
            OutputFormat::Csv => {
                let mut buf = Vec::new();
                let mut n = 0;
                for h in lines(chunk).filter_map(|l| parsed_match(filter, l)) {
                    n += 1;
                    csv_row(&mut buf, &h);
                }
                SearchOut::Bytes(buf, n)
            }
            OutputFormat::Json => {
                let mut buf = Vec::new();
                let mut n = 0;
                for l in lines(chunk) {
                    let hit = match filter.fast_match(l) {
                        Some(m) => m,
                        None => parse_hit(l).is_some_and(|h| filter.matches(&h)),
                    };
                    if hit {
                        n += 1;
                        buf.extend_from_slice(l);
                        buf.push(b'\n');
                    }
                }
                SearchOut::Bytes(buf, n)
            }
        }
    };
    if format == OutputFormat::Csv {
        out.write_all(CSV_HEADER.as_bytes()).map_err(out_err)?;
    }
    let mut matched = 0u64;
    let mut table = Table {
        widths: None,
        sample: Vec::new(),
    };
    let mut failed: Option<std::io::Error> = None;
    scan(files, work, |ev| {
        let res = match ev {
            Event::Chunk {
                result: SearchOut::Bytes(b, n),
                ..
            } => {
                matched += n;
                out.write_all(&b)
            }
            Event::Chunk {
                result: SearchOut::Rows(rows),
                ..
            } => {
                matched += rows.len() as u64;
                rows.into_iter().try_for_each(|r| table.push(r, out))
            }
            Event::End { .. } => Ok(()),
        };
        match res {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                // A closed pipe (`| head`) ends the search; nothing to report.
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = failed {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(matched);
        }
        return Err(out_err(e));
    }
    if format == OutputFormat::Table {
        table.finish(out).map_err(out_err)?;
        writeln!(out, "{matched} matching record(s)").map_err(out_err)?;
    }
    Ok(matched)
}

/// What to group hits by in `stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsBy {
    /// Query name, lowercased, without the trailing dot.
    Name,
    Client,
    /// Decision reference (`-` when the rule has none).
    Decision,
    List,
    /// UTC hour; listed in time order rather than by count.
    Hour,
}

impl StatsBy {
    fn as_str(self) -> &'static str {
        match self {
            StatsBy::Name => "name",
            StatsBy::Client => "client",
            StatsBy::Decision => "decision",
            StatsBy::List => "list",
            StatsBy::Hour => "hour",
        }
    }
}

/// Counts of matching hits per key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatsReport {
    pub by: StatsBy,
    /// Matching hits.
    pub total: u64,
    /// Distinct keys among them.
    pub distinct: u64,
    /// `(key, count)`: the top N by count (ties by key), or for `hour` the
    /// hours in time order.
    pub rows: Vec<(String, u64)>,
}

fn name_key(q: &str) -> Cow<'_, str> {
    let q = q.strip_suffix('.').unwrap_or(q);
    if q.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(q.to_ascii_lowercase())
    } else {
        Cow::Borrowed(q)
    }
}

fn hour_key(ts: &str) -> Cow<'_, str> {
    match ts.get(..13) {
        Some(hour) => Cow::Owned(format!("{hour}:00Z")),
        None => Cow::Borrowed(ts),
    }
}

fn key_of<'a>(by: StatsBy, h: &'a HitView<'_>) -> Cow<'a, str> {
    match by {
        StatsBy::Name => name_key(&h.qname),
        StatsBy::Client => Cow::Borrowed(&h.client),
        StatsBy::Decision => Cow::Borrowed(h.decision.as_deref().unwrap_or("-")),
        StatsBy::List => Cow::Borrowed(&h.list),
        StatsBy::Hour => hour_key(&h.ts),
    }
}

/// [`key_of`] from the raw line, or `None` when it needs the full parse.
fn fast_key(by: StatsBy, line: &[u8]) -> Option<Cow<'_, str>> {
    Some(match by {
        StatsBy::Name => name_key(field(line, b"\"qname\":")?),
        StatsBy::Client => Cow::Borrowed(field(line, b"\"client\":")?),
        StatsBy::Decision => match raw_str(line, b"\"decision\":") {
            Raw::Plain(d) => Cow::Borrowed(d),
            Raw::Missing => Cow::Borrowed("-"),
            Raw::Complex => return None,
        },
        StatsBy::List => Cow::Borrowed(field(line, b"\"list\":")?),
        StatsBy::Hour => hour_key(field(line, b"\"ts\":")?),
    })
}

/// Counts matching hits by `by`. Memory grows with the number of distinct
/// keys, not with the number of records. `top = None` means 10, except for
/// `hour`, where it means every hour.
pub fn stats(
    path: &Path,
    filter: &SearchFilter,
    by: StatsBy,
    top: Option<usize>,
) -> Result<StatsReport, AuditError> {
    let files = list_files(path)?;
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut total = 0u64;
    let work = |chunk: &[u8]| -> (HashMap<String, u64>, u64) {
        let mut m: HashMap<String, u64> = HashMap::new();
        let mut n = 0;
        for l in lines(chunk) {
            let key = match filter.fast_match(l) {
                Some(false) => continue,
                Some(true) => fast_key(by, l),
                None => None,
            };
            let key = match key {
                Some(k) => k,
                None => match parse_hit(l).filter(|h| filter.matches(h)) {
                    Some(h) => Cow::Owned(key_of(by, &h).into_owned()),
                    None => continue,
                },
            };
            // Most keys repeat: look up before allocating.
            match m.get_mut(key.as_ref()) {
                Some(c) => *c += 1,
                None => {
                    m.insert(key.into_owned(), 1);
                }
            }
            n += 1;
        }
        (m, n)
    };
    scan(&files, work, |ev| {
        if let Event::Chunk { result: (m, n), .. } = ev {
            total += n;
            for (k, c) in m {
                *counts.entry(k).or_default() += c;
            }
        }
        ControlFlow::Continue(())
    })?;
    let distinct = counts.len() as u64;
    let mut rows: Vec<(String, u64)> = counts.into_iter().collect();
    let limit = match (by, top) {
        (_, Some(n)) => n,
        (StatsBy::Hour, None) => usize::MAX,
        (_, None) => 10,
    };
    if by == StatsBy::Hour {
        rows.sort();
        if limit < rows.len() {
            // The busiest hours, still shown in time order.
            rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            rows.truncate(limit);
            rows.sort();
        }
    } else {
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(limit);
    }
    Ok(StatsReport {
        by,
        total,
        distinct,
        rows,
    })
}

fn share(count: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        count as f64 * 100.0 / total as f64
    }
}

/// Writes a stats report in `format`.
pub fn write_stats(
    report: &StatsReport,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), AuditError> {
    let by = report.by.as_str();
    let res = (|| -> std::io::Result<()> {
        match format {
            OutputFormat::Json => {
                #[derive(Serialize)]
                struct Row<'a> {
                    rank: usize,
                    key: &'a str,
                    count: u64,
                }
                #[derive(Serialize)]
                struct Out<'a> {
                    by: &'a str,
                    total: u64,
                    distinct: u64,
                    rows: Vec<Row<'a>>,
                }
                let o = Out {
                    by,
                    total: report.total,
                    distinct: report.distinct,
                    rows: report
                        .rows
                        .iter()
                        .enumerate()
                        .map(|(i, (k, c))| Row {
                            rank: i + 1,
                            key: k,
                            count: *c,
                        })
                        .collect(),
                };
                serde_json::to_writer(&mut *out, &o).map_err(std::io::Error::other)?;
                writeln!(out)
            }
            OutputFormat::Csv => {
                writeln!(out, "rank,{by},count,share")?;
                for (i, (k, c)) in report.rows.iter().enumerate() {
                    let mut key = Vec::new();
                    csv_field(&mut key, k);
                    write!(out, "{},", i + 1)?;
                    out.write_all(&key)?;
                    writeln!(out, ",{c},{:.2}", share(*c, report.total))?;
                }
                Ok(())
            }
            OutputFormat::Table => {
                writeln!(
                    out,
                    "{} matching hit(s), {} distinct {by} value(s)",
                    report.total, report.distinct
                )?;
                let kw = report
                    .rows
                    .iter()
                    .map(|(k, _)| k.chars().count())
                    .max()
                    .unwrap_or(0)
                    .max(by.len());
                let cw = report
                    .rows
                    .iter()
                    .map(|(_, c)| c.to_string().len())
                    .max()
                    .unwrap_or(0)
                    .max(5);
                let rw = report.rows.len().to_string().len().max(1);
                writeln!(
                    out,
                    "{:>rw$}  {:<kw$}  {:>cw$}  {:>6}",
                    "#",
                    by.to_uppercase(),
                    "COUNT",
                    "SHARE"
                )?;
                for (i, (k, c)) in report.rows.iter().enumerate() {
                    writeln!(
                        out,
                        "{:>rw$}  {:<kw$}  {:>cw$}  {:>5.1}%",
                        i + 1,
                        printable(k),
                        c,
                        share(*c, report.total)
                    )?;
                }
                Ok(())
            }
        }
    })();
    match res {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(out_err(e)),
        _ => Ok(()),
    }
}

/// Fuzzing entry for the search-side reader: every line of `data` through
/// the hit parser, a filter with every condition, and both row renderers.
#[doc(hidden)]
pub fn fuzz_search(data: &[u8]) -> u64 {
    let filter = SearchFilter {
        since: Some("2000-01-01T00:00:00.000000Z".into()),
        until: Some("2100-01-01T00:00:00.000000Z".into()),
        client: "::/0".parse().ok().map(ClientMatch::Net),
        name: Some("example.com".into()),
        decision: None,
        list: Some("court".into()),
        action: None,
    };
    let mut n = 0;
    let mut buf = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(h) = parse_hit(line) else { continue };
        n += u64::from(filter.matches(&h));
        csv_row(&mut buf, &h);
        n += table_row(&h).iter().map(|c| c.len() as u64).sum::<u64>() % 2;
        n += key_of(StatsBy::Hour, &h).len() as u64 % 2;
        buf.clear();
    }
    n
}
