//! The audit index: per-file summaries, derived from the log and
//! rebuildable from it at any time (`sinkhole audit reindex`).
//!
//! # Why per-file summaries
//!
//! The log is already cut into files by time (at least one per UTC day)
//! and closed files never change. A summary per file — seq and time range,
//! counts by hour, action, list, name and decision, and per decision the
//! set of distinct clients (64-bit hashes) — answers the overview and a
//! per-order report by merging a few dozen small summaries instead of
//! reading millions of records, and lets a search read only the files
//! whose time range (and decisions, lists, actions) can match. An embedded
//! database would index every record: larger than these summaries, a
//! second copy of the evidence to keep consistent, and a dependency the
//! writer would have to feed. Summaries need no change to the writer: the
//! console extends them lazily — a file that grew (the one being written)
//! is summarised from where its summary stopped — and `verify` never reads
//! them.
//!
//! Summaries of closed files are stored as JSON in `.index/` inside the
//! audit directory (`<log file name>.summary.json`); the one of the file
//! being written is kept in memory only. A stored summary is used when its
//! format version, its first-line hash and its length still fit the file;
//! otherwise it is rebuilt, so a deleted or damaged index costs one scan
//! and nothing else.

mod summary;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

pub use summary::{DecisionSummary, FORMAT_VERSION, FileSummary, HitCounts, NO_DECISION, Span};

use super::AuditError;
use super::reader::{Event, LogFile, lines, list_files, read_first_line, scan};

/// The index directory inside an audit directory.
pub const INDEX_DIR: &str = ".index";
const SUFFIX: &str = ".summary.json";

/// The summaries of one audit directory, kept current on demand.
#[derive(Debug)]
pub struct AuditIndex {
    dir: PathBuf,
    cache: Mutex<HashMap<String, Arc<FileSummary>>>,
    /// One refresh at a time: requests arriving during the first (cold)
    /// build wait for it instead of summarising the same files again.
    refreshing: Mutex<()>,
}

/// A file of the log and its summary, in chain order.
#[derive(Clone, Debug)]
pub struct IndexedFile {
    pub path: PathBuf,
    pub summary: Arc<FileSummary>,
}

/// What `reindex` did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReindexReport {
    pub files: usize,
    pub records: u64,
    /// Bytes of log summarised, and of summaries written.
    pub log_bytes: u64,
    pub index_bytes: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AuditIndex {
    pub fn new(dir: &Path) -> AuditIndex {
        AuditIndex {
            dir: dir.to_path_buf(),
            cache: Mutex::new(HashMap::new()),
            refreshing: Mutex::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index_dir(&self) -> PathBuf {
        self.dir.join(INDEX_DIR)
    }

    fn stored_path(&self, file: &str) -> PathBuf {
        self.index_dir().join(format!("{file}{SUFFIX}"))
    }

    /// Every file of the log with a summary covering all its complete
    /// lines, building or extending what is missing. Blocking (file I/O and
    /// scans): call it from a blocking thread.
    pub fn refresh(&self) -> Result<Vec<IndexedFile>, AuditError> {
        let _one = lock(&self.refreshing);
        let files = list_files(&self.dir)?;
        let newest = files.last().map(|f| f.name.clone());
        let mut out = Vec::with_capacity(files.len());
        let mut live = HashSet::new();
        for lf in &files {
            live.insert(lf.name.clone());
            let cached = lock(&self.cache).get(&lf.name).cloned();
            let is_newest = newest.as_deref() == Some(lf.name.as_str());
            let summary = self.current(lf, cached, !is_newest)?;
            lock(&self.cache).insert(lf.name.clone(), summary.clone());
            out.push(IndexedFile {
                path: lf.path.clone(),
                summary,
            });
        }
        // Files removed by retention: forget their summaries too.
        lock(&self.cache).retain(|k, _| live.contains(k));
        if let Ok(rd) = std::fs::read_dir(self.index_dir()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(f) = name.strip_suffix(SUFFIX) {
                    if !live.contains(f) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        Ok(out)
    }

    /// The summary of `lf` as the file is now: the cached or stored one if
    /// it still fits, extended if the file grew, rebuilt otherwise.
    fn current(
        &self,
        lf: &LogFile,
        cached: Option<Arc<FileSummary>>,
        persist: bool,
    ) -> Result<Arc<FileSummary>, AuditError> {
        let len = std::fs::metadata(&lf.path)
            .map_err(|e| AuditError::io(&lf.path, e))?
            .len();
        let known = match cached {
            Some(s) => Some(s),
            None => self.load(lf).map(Arc::new),
        };
        let known = known.filter(|s| s.version == FORMAT_VERSION && s.bytes <= len);
        let summary = match known {
            Some(s) if s.bytes == len => return Ok(s),
            Some(s) => {
                let tail = summarize_tail(&lf.path, &lf.name, s.bytes, len)?;
                if tail.bytes == 0 {
                    // Only a torn or still-unterminated last line.
                    return Ok(s);
                }
                let mut s = Arc::unwrap_or_clone(s);
                if s.bytes == 0 {
                    s.head = tail.head.clone();
                }
                s.append(&tail);
                s
            }
            None => summarize_file(lf)?,
        };
        if persist {
            // Best effort: an unwritable index only costs a rescan later.
            let _ = self.store(&summary);
        }
        Ok(Arc::new(summary))
    }

    fn load(&self, lf: &LogFile) -> Option<FileSummary> {
        let text = std::fs::read(self.stored_path(&lf.name)).ok()?;
        let s: FileSummary = serde_json::from_slice(&text).ok()?;
        let head = read_first_line(&lf.path).ok()?.unwrap_or_default();
        let head = if s.bytes == 0 {
            String::new()
        } else {
            hex::encode(Sha256::digest(&head))
        };
        (s.head == head && s.file == lf.name).then_some(s)
    }

    fn store(&self, s: &FileSummary) -> Result<u64, AuditError> {
        let dir = self.index_dir();
        std::fs::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, e))?;
        let path = self.stored_path(&s.file);
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec(s).map_err(|e| AuditError::Internal(e.to_string()))?;
        let mut f = File::create(&tmp).map_err(|e| AuditError::io(&tmp, e))?;
        f.write_all(&body).map_err(|e| AuditError::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| AuditError::io(&path, e))?;
        Ok(body.len() as u64)
    }

    /// Drops every summary and builds them all again from the log.
    pub fn reindex(&self) -> Result<ReindexReport, AuditError> {
        let _one = lock(&self.refreshing);
        let dir = self.index_dir();
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AuditError::io(&dir, e)),
        }
        lock(&self.cache).clear();
        let mut report = ReindexReport {
            files: 0,
            records: 0,
            log_bytes: 0,
            index_bytes: 0,
        };
        for lf in list_files(&self.dir)? {
            let s = summarize_file(&lf)?;
            report.files += 1;
            report.records += s.records;
            report.log_bytes += s.bytes;
            report.index_bytes += self.store(&s)?;
            lock(&self.cache).insert(lf.name.clone(), Arc::new(s));
        }
        Ok(report)
    }
}

/// Summarises a whole file on every core (chunks in order, merged).
pub(crate) fn summarize_file(lf: &LogFile) -> Result<FileSummary, AuditError> {
    let mut total = FileSummary::empty(&lf.name);
    let work = |chunk: &[u8]| -> FileSummary {
        let mut s = FileSummary::empty(&lf.name);
        s.add_chunk(chunk);
        s
    };
    scan(std::slice::from_ref(lf), work, |ev| {
        if let Event::Chunk { result, .. } = ev {
            total.append(&result);
        }
        ControlFlow::Continue(())
    })?;
    if total.bytes > 0 {
        let head = read_first_line(&lf.path)
            .map_err(|e| AuditError::io(&lf.path, e))?
            .unwrap_or_default();
        total.head = hex::encode(Sha256::digest(&head));
    }
    Ok(total)
}

/// Summarises the complete lines in `[from, len)` of a file that grew.
fn summarize_tail(path: &Path, name: &str, from: u64, len: u64) -> Result<FileSummary, AuditError> {
    let io = |e| AuditError::io(path, e);
    let mut f = File::open(path).map_err(io)?;
    f.seek(SeekFrom::Start(from)).map_err(io)?;
    let mut buf = Vec::new();
    f.take(len - from).read_to_end(&mut buf).map_err(io)?;
    let mut s = FileSummary::empty(name);
    let Some(end) = memchr::memrchr(b'\n', &buf) else {
        return Ok(s);
    };
    let done = &buf[..=end];
    s.add_chunk(done);
    if from == 0 {
        let first = lines(done).next().unwrap_or_default();
        s.head = hex::encode(Sha256::digest(first));
    }
    Ok(s)
}

/// The whole log at a glance: every file's summary merged.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub files: usize,
    pub records: u64,
    pub log_bytes: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub ts_min: Option<String>,
    pub ts_max: Option<String>,
    pub kinds: BTreeMap<String, u64>,
    pub lost: u64,
    pub hits: HitCounts,
    /// Hits per decision reference.
    pub decisions: BTreeMap<String, u64>,
    pub last_checkpoint: Option<(u64, String)>,
}

pub fn totals(files: &[IndexedFile]) -> Totals {
    let mut t = Totals {
        files: files.len(),
        ..Totals::default()
    };
    for f in files {
        let s = &f.summary;
        t.records += s.records;
        t.log_bytes += s.bytes;
        if t.first_seq.is_none() {
            t.first_seq = s.first_seq;
        }
        if s.last_seq.is_some() {
            t.last_seq = s.last_seq;
        }
        summary::widen(&mut t.ts_min, &mut t.ts_max, &s.ts_min, &s.ts_max);
        for (k, c) in &s.kinds {
            *t.kinds.entry(k.clone()).or_default() += c;
        }
        t.lost += s.lost;
        t.hits.merge(&s.hits);
        for (d, ds) in &s.decisions {
            *t.decisions.entry(d.clone()).or_default() += ds.counts.total;
        }
        if s.last_checkpoint.is_some() {
            t.last_checkpoint.clone_from(&s.last_checkpoint);
        }
    }
    t
}

pub fn decision(files: &[IndexedFile], reference: &str) -> DecisionSummary {
    let mut d = DecisionSummary::default();
    for f in files {
        if let Some(s) = f.summary.decisions.get(reference) {
            d.merge(s);
        }
    }
    d
}

/// `list` records over the whole log, oldest first.
pub fn list_events(files: &[IndexedFile]) -> Vec<String> {
    files
        .iter()
        .flat_map(|f| f.summary.events.iter())
        .filter(|e| {
            matches!(
                super::record::raw_str(e.as_bytes(), b"\"kind\":"),
                super::record::Raw::Plain("list")
            )
        })
        .cloned()
        .collect()
}

/// List name → version → span, over the whole log.
pub fn versions(files: &[IndexedFile]) -> BTreeMap<String, BTreeMap<u64, Span>> {
    let mut out: BTreeMap<String, BTreeMap<u64, Span>> = BTreeMap::new();
    for f in files {
        for (list, vs) in &f.summary.versions {
            let mine = out.entry(list.clone()).or_default();
            for (v, s) in vs {
                let m = mine.entry(*v).or_default();
                m.hits += s.hits;
                summary::widen(&mut m.first_ts, &mut m.last_ts, &s.first_ts, &s.last_ts);
            }
        }
    }
    out
}

/// What a search asks, as far as summaries can tell a file cannot match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prune<'a> {
    /// Record timestamps (`format_ts` form): since inclusive, until exclusive.
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    pub decision: Option<&'a str>,
    pub list: Option<&'a str>,
    pub action: Option<&'a str>,
}

impl Prune<'_> {
    /// Whether the file may hold a matching hit.
    pub fn may_match(&self, s: &FileSummary) -> bool {
        if s.hits.total == 0 {
            return false;
        }
        let (Some(lo), Some(hi)) = (s.ts_min.as_deref(), s.ts_max.as_deref()) else {
            return true;
        };
        if self.since.is_some_and(|since| hi < since) || self.until.is_some_and(|u| lo >= u) {
            return false;
        }
        if self.decision.is_some_and(|d| !s.decisions.contains_key(d)) {
            return false;
        }
        if self.list.is_some_and(|l| !s.hits.lists.contains_key(l)) {
            return false;
        }
        self.action.is_none_or(|a| s.hits.actions.contains_key(a))
    }

    /// The byte range of a file holding every hit in `[since, until)`,
    /// from its hour spans; `None` when no hour of the file is in range.
    pub fn range(&self, s: &FileSummary) -> Option<(u64, u64)> {
        if self.since.is_none() && self.until.is_none() {
            return Some((0, u64::MAX));
        }
        let mut lo_buf = [0u8; 17];
        let mut hi_buf = [0u8; 17];
        let lo = self.since.map(|t| summary::hour_key_into(t, &mut lo_buf));
        let hi = self.until.map(|t| summary::hour_key_into(t, &mut hi_buf));
        let mut range: Option<(u64, u64)> = None;
        for (h, &(a, b)) in &s.hour_spans {
            if lo.is_some_and(|lo| h.as_str() < lo) || hi.is_some_and(|hi| h.as_str() > hi) {
                continue;
            }
            range = Some(match range {
                Some((x, y)) => (x.min(a), y.max(b)),
                None => (a, b),
            });
        }
        // Without an upper bound, read on to the end (the file may grow).
        range.map(|(a, b)| (a, if hi.is_some() { b } else { u64::MAX }))
    }

    /// The files (and the part of each) a search with these conditions has
    /// to read.
    pub(crate) fn files(&self, files: &[IndexedFile]) -> Vec<LogFile> {
        files
            .iter()
            .filter(|f| self.may_match(&f.summary))
            .filter_map(|f| {
                let range = self.range(&f.summary)?;
                Some(LogFile {
                    path: f.path.clone(),
                    name: f.summary.file.clone(),
                    range: Some(range),
                })
            })
            .collect()
    }
}

/// `sinkhole audit reindex DIR`.
#[derive(Clone, Debug, clap::Args)]
pub struct ReindexArgs {
    /// The audit log directory.
    pub dir: PathBuf,
}

/// Rebuilds the index of `args.dir` and prints what it did.
pub fn run_reindex(args: &ReindexArgs, out: &mut dyn Write) -> Result<(), AuditError> {
    let started = std::time::Instant::now();
    let r = AuditIndex::new(&args.dir).reindex()?;
    let share = if r.log_bytes == 0 {
        0.0
    } else {
        r.index_bytes as f64 * 100.0 / r.log_bytes as f64
    };
    writeln!(
        out,
        "indexed {} file(s), {} records, {} log bytes -> {} index bytes ({share:.2}%) in {:.1?}",
        r.files,
        r.records,
        r.log_bytes,
        r.index_bytes,
        started.elapsed()
    )
    .map_err(AuditError::Output)
}
