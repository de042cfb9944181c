//! Incremental reload: diff a pushed file against a byte copy of the
//! version in force, parse only the lines that changed, and enforce them as
//! a [`Layer`] over the current snapshot.
//!
//! A ministry push is usually yesterday's list with a few hundred lines
//! added or removed; re-parsing and recompiling a million names for that
//! costs seconds of CPU on the core that also answers queries and a full
//! parse tree of memory. Here a reload hashes every line (one pass over
//! each of the old copy and the new file), parses the changed lines only,
//! and compiles them into a small overlay: enforcement follows within
//! milliseconds of the diff. `merge::flatten` then folds the layer into a
//! new flat snapshot in one streaming pass.
//!
//! The fast path is taken only when it is exact. Anything it cannot prove
//! equal to a full compile falls back to one (`Delta::Full` with the
//! reason): another format than the line formats (plain, hosts, AdBlock,
//! and CSV whose changed rows can be parsed alone under the unchanged
//! header: see `CsvScan`), changed list options or
//! file set, keyword/URL/IP lines among the changes, a removed rule whose
//! key was also listed elsewhere (the duplicate bit), an added key that is
//! already listed, a copy that does not match its recorded hash, or more
//! changed lines than `max_changed_ratio` of the file.
//!
//! The byte copies diffed against, and the new copies written while
//! diffing, are kept by `state.rs`: a new copy replaces the old one only
//! once its version is in force.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::compile::{compile_versioned, push_key};
use super::parse;
use super::snapshot::{Layer, LineMap, MAX_LINE, OverlayRule};
use super::state::{Baseline, FileRecord, FileStat, PendingCopies};
use super::{Counts, Format, ListOptions, ParsedList, Rule, Snapshot, Target};

/// An incremental reload ready to enforce.
pub(crate) struct Applied {
    /// The current snapshot with the changes as a layer.
    pub snapshot: Snapshot,
    /// The new records (every file, changed or not).
    pub files: Vec<FileRecord>,
    /// New copies to move into place once the version is accepted.
    pub pending_copies: PendingCopies,
    pub added: usize,
    pub removed: usize,
    /// `FILE:LINE: reason` for skipped lines among the changed lines.
    pub skipped: Vec<String>,
    pub counts: Counts,
}

impl Applied {
    /// Forget the pending copies (the version was rejected).
    pub(crate) fn discard(&self) {
        self.pending_copies.discard();
    }
}

/// The outcome of an attempt.
pub(crate) enum Delta {
    Apply(Box<Applied>),
    /// The fast path does not apply; reload fully. The reason is for the log.
    Full(String),
}

/// Lines of one file that changed, parsed.
struct FileDiff {
    added: ParsedList,
    removed: ParsedList,
    lines: LineMap,
    sha256: String,
    bytes: u64,
}

enum FileOutcome {
    Unchanged { sha256: String, bytes: u64 },
    Changed(Box<FileDiff>),
}

fn line_hash(line: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(line)
}

/// How far past the previous match a line is looked for before it counts
/// as a miss.
const WINDOW: usize = 64;
/// Misses in a row (lines that are new, or a long removed block) before
/// the whole old file is searched for a resync.
const MISSES_BEFORE_SEARCH: usize = 4;

/// A line without its `\n`, a `\r` before it, or (on line 1) a BOM; as the
/// parser sees it.
fn content(raw: &[u8], line_no: u32) -> &[u8] {
    let l = raw.strip_suffix(b"\n").unwrap_or(raw);
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    if line_no == 1 {
        l.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(l)
    } else {
        l
    }
}

fn counts_sub(a: Counts, b: Counts) -> Counts {
    Counts {
        names: a.names.saturating_sub(b.names),
        wildcards: a.wildcards.saturating_sub(b.wildcards),
        allows: a.allows.saturating_sub(b.allows),
        keywords: a.keywords.saturating_sub(b.keywords),
        urls: a.urls.saturating_sub(b.urls),
        ips: a.ips.saturating_sub(b.ips),
        rpz_other: a.rpz_other.saturating_sub(b.rpz_other),
        skipped: a.skipped.saturating_sub(b.skipped),
    }
}

const READ_BUF: usize = 256 << 10;

/// Try the incremental path for the files under `paths` against `base`,
/// which describes `current`. `max_changed_ratio`: the share of a file's
/// lines that may change before a full reload is cheaper.
pub(crate) fn try_delta(
    base: &Baseline,
    current: &Snapshot,
    paths: &[PathBuf],
    options: &(dyn Fn(&Path) -> ListOptions + Send + Sync),
    version: u64,
    max_changed_ratio: f64,
) -> Delta {
    let files = match same_files(base, paths) {
        Ok(f) => f,
        Err(reason) => return Delta::Full(reason),
    };
    let mut records = Vec::with_capacity(files.len());
    let mut diffs: Vec<Option<FileDiff>> = Vec::with_capacity(files.len());
    for (i, (path, rec)) in files.iter().zip(&base.files).enumerate() {
        let opts = options(path);
        if format!("{opts:?}") != rec.options {
            return Delta::Full(format!("{}: list options changed", path.display()));
        }
        if rec.stat.is_some() && FileStat::now(path) == rec.stat {
            records.push(rec.clone());
            diffs.push(None);
            continue;
        }
        // Taken before reading, as in a full reload.
        let stat = FileStat::trusted(path);
        if !matches!(
            rec.format,
            Format::Plain | Format::Hosts | Format::Adblock | Format::Csv | Format::Rpz
        ) {
            return Delta::Full(format!(
                "{}: {} is not a line format",
                path.display(),
                rec.format
            ));
        }
        match diff_file(base, i, path, rec, &opts, max_changed_ratio) {
            Err(reason) => {
                base.remove_pending_copy(i);
                return Delta::Full(reason);
            }
            Ok(FileOutcome::Unchanged { sha256, bytes }) => {
                base.remove_pending_copy(i);
                records.push(FileRecord {
                    sha256,
                    bytes,
                    stat,
                    ..rec.clone()
                });
                diffs.push(None);
            }
            Ok(FileOutcome::Changed(d)) => {
                let counts = rec.counts + d.added.counts();
                let counts = counts_sub(counts, d.removed.counts());
                records.push(FileRecord {
                    counts,
                    sha256: d.sha256.clone(),
                    bytes: d.bytes,
                    stat,
                    ..rec.clone()
                });
                diffs.push(Some(*d));
            }
        }
    }
    let pending_copies = base.pending_copies(
        diffs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.is_some())
            .map(|(i, _)| i),
    );
    apply_layer(
        current,
        &files,
        &diffs,
        records,
        pending_copies,
        options,
        version,
    )
}

/// The changed files' diffs as a layer over `current`, with the new file
/// records and the copies to keep once it is in force; a diff the layer
/// cannot take exactly discards the copies and asks for a full compile.
fn apply_layer(
    current: &Snapshot,
    files: &[PathBuf],
    diffs: &[Option<FileDiff>],
    records: Vec<FileRecord>,
    pending_copies: PendingCopies,
    options: &(dyn Fn(&Path) -> ListOptions + Send + Sync),
    version: u64,
) -> Delta {
    match layer_for(current, files, diffs, options, version) {
        Ok((layer, added, removed)) => {
            let counts = records.iter().fold(Counts::default(), |a, r| a + r.counts);
            let skipped = diffs
                .iter()
                .flatten()
                .flat_map(|d| d.added.skip_messages())
                .collect();
            Delta::Apply(Box::new(Applied {
                snapshot: current.with_layer(layer, version, counts),
                files: records,
                pending_copies,
                added,
                removed,
                skipped,
                counts,
            }))
        }
        Err(reason) => {
            pending_copies.discard();
            Delta::Full(reason)
        }
    }
}

/// The list files now, when they are the baseline's files in its order
/// (a layer can only change rules within the same file set).
fn same_files(base: &Baseline, paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let files = parse::list_files(paths).map_err(|e| format!("listing files: {e}"))?;
    if files.len() != base.files.len() || files.iter().zip(&base.files).any(|(f, r)| *f != r.path) {
        return Err("the set of list files changed".into());
    }
    Ok(files)
}

/// One file's change given as its lines removed and added (a followed
/// RPZ zone's IXFR, folded): the source knows the change, so nothing is
/// read or diffed and the cost follows the change, not the file.
pub(crate) struct LineChange<'a> {
    pub path: &'a Path,
    pub removed: &'a [String],
    pub added: &'a [String],
    /// The number the first added line takes. The file itself is not
    /// rewritten: added lines are numbered past every line used so far
    /// (where a rewrite would append them), removed lines leave gaps, so
    /// numbers never shift and "first listed wins" orders as a rewrite
    /// would.
    pub first_added_line: u32,
}

/// Every line keeps its number (see [`LineChange::first_added_line`]).
fn identity_lines() -> LineMap {
    LineMap {
        runs: vec![(1, 1, MAX_LINE)],
    }
}

/// Enforce `change` as a layer over `current`, exactly as a full compile of
/// the changed file would answer, or say why not (`Delta::Full`: the caller
/// then writes the file and reloads it). The file on disk and its byte copy
/// are left as they are: the source keeps the change (a journal) until it
/// rewrites the file and calls [`super::reload::Reloader::adopt_source`].
pub(crate) fn try_line_change(
    base: &Baseline,
    current: &Snapshot,
    paths: &[PathBuf],
    options: &(dyn Fn(&Path) -> ListOptions + Send + Sync),
    version: u64,
    change: &LineChange<'_>,
) -> Delta {
    let files = match same_files(base, paths) {
        Ok(f) => f,
        Err(reason) => return Delta::Full(reason),
    };
    let Some(fi) = files.iter().position(|f| f == change.path) else {
        return Delta::Full(format!("{} is not a list file", change.path.display()));
    };
    let rec = &base.files[fi];
    let opts = options(change.path);
    if format!("{opts:?}") != rec.options {
        return Delta::Full(format!("{}: list options changed", change.path.display()));
    }
    match line_change_diff(current, fi, rec, &opts, change) {
        Ok(diff) => {
            let mut records = base.files.clone();
            records[fi].counts =
                counts_sub(rec.counts + diff.added.counts(), diff.removed.counts());
            let mut diffs: Vec<Option<FileDiff>> = (0..files.len()).map(|_| None).collect();
            diffs[fi] = Some(diff);
            apply_layer(
                current,
                &files,
                &diffs,
                records,
                PendingCopies::default(),
                options,
                version,
            )
        }
        Err(reason) => Delta::Full(format!("{}: {reason}", change.path.display())),
    }
}

/// The parsed lines of a [`LineChange`]: removed rules at the line they are
/// in force from, added rules at their new numbers.
fn line_change_diff(
    current: &Snapshot,
    fi: usize,
    rec: &FileRecord,
    opts: &ListOptions,
    change: &LineChange<'_>,
) -> Result<FileDiff, String> {
    if !matches!(
        rec.format,
        Format::Plain | Format::Hosts | Format::Adblock | Format::Rpz
    ) {
        return Err(format!("{} lines are not changed alone", rec.format));
    }
    let last = u64::from(change.first_added_line) + change.added.len() as u64;
    if change.first_added_line == 0 || last > u64::from(MAX_LINE) {
        return Err("added lines past the largest line number".into());
    }
    let rpz = rec.format == Format::Rpz;
    let join = |lines: &[String]| -> Result<Vec<u8>, String> {
        let mut text = Vec::new();
        for l in lines {
            let l = l.as_bytes();
            if l.contains(&b'\n') || l.contains(&b'\r') {
                return Err("a changed line holds a line break".into());
            }
            if rpz {
                rpz_line_in_context(l)?;
                rpz_line_alone(l)?;
            }
            text.extend_from_slice(l);
            text.push(b'\n');
        }
        Ok(text)
    };
    let forced = ListOptions {
        format: Some(rec.format),
        ..opts.clone()
    };
    let added_lines: Vec<u32> = (0..change.added.len() as u32)
        .map(|i| change.first_added_line + i)
        .collect();
    let added = renumber(
        parse::parse_bytes(change.path, &join(change.added)?, &forced),
        &added_lines,
    );
    let mut removed = parse::parse_bytes(change.path, &join(change.removed)?, &forced);
    // Where each removed rule is in force from: the layer's entry of this
    // file, else the base row (through the layer's line map). A rule in
    // force from another file, or not at all, is left for `layer_for` to
    // refuse.
    let layer = current.layer();
    let no_map = LineMap::default();
    let map = layer.and_then(|l| l.remap.get(fi)).unwrap_or(&no_map);
    let key_of = |target: &Target| -> Result<Vec<u8>, String> {
        let Target::Name { name, scope } = target else {
            return Err("a changed line is not a name rule".into());
        };
        let mut key = Vec::with_capacity(name.len() + 1);
        push_key(&mut key, name, *scope);
        Ok(key)
    };
    // A removed record is known by its key only: where a key is listed
    // more than once in the file, which entry went cannot be told, so that
    // change is not a layer.
    let ambiguous = "a removed line's name is listed more than once";
    let mut in_layer: HashMap<Vec<u8>, Option<(u32, crate::policy::Action)>> = HashMap::new();
    for r in layer.and_then(|l| l.rules.get(fi)).into_iter().flatten() {
        let entry = (!r.hidden_losers).then_some((r.rule.line, r.rule.action));
        in_layer
            .entry(key_of(&r.rule.target)?)
            .and_modify(|e| *e = None)
            .or_insert(entry);
    }
    for rule in &mut removed.rules {
        let key = key_of(&rule.target)?;
        let (line, action) = match in_layer.get(&key) {
            Some(Some(found)) => *found,
            Some(None) => return Err(ambiguous.into()),
            None => {
                let ord = current
                    .base_get(&key)
                    .filter(|ord| layer.is_none_or(|l| l.tombstones.binary_search(ord).is_err()))
                    .ok_or("a removed line is not in force")?;
                let (file, line, dup) = current.base_row(ord);
                if usize::from(file) != fi {
                    return Err("a removed line is in force from another file".into());
                }
                if dup {
                    return Err(ambiguous.into());
                }
                (map.map(line), current.rule(super::RuleId(ord)).action())
            }
        };
        if action != rule.action {
            return Err("a removed line is not the rule in force".into());
        }
        rule.line = line;
    }
    // Skipped lines of the removed side only count; their numbers are not kept.
    if rpz
        && added
            .rules
            .iter()
            .chain(&removed.rules)
            .any(|r| r.action == crate::policy::Action::Address)
    {
        return Err("RPZ local data changed".into());
    }
    Ok(FileDiff {
        added,
        removed,
        lines: identity_lines(),
        sha256: rec.sha256.clone(),
        bytes: rec.bytes,
    })
}

/// The next layer: the current one (if any) with these files' changes.
///
/// Removed lines tombstone their base rule or leave the overlay; added
/// lines join the overlay. An added key already in force in the base is
/// moved into the overlay with it, so every key lives in exactly one of
/// base and overlay and the overlay compile decides between its entries as
/// a full compile would (allow first, then first listed). Overlay rules and
/// the base's line map follow the lines to their new numbers. Anything
/// this cannot decide exactly is an `Err` (reload in full).
fn layer_for(
    current: &Snapshot,
    files: &[PathBuf],
    diffs: &[Option<FileDiff>],
    options: &(dyn Fn(&Path) -> ListOptions + Send + Sync),
    version: u64,
) -> Result<(Layer, usize, usize), String> {
    let prev = current.layer();
    let mut rules: Vec<Vec<OverlayRule>> = match prev {
        Some(l) if l.rules.len() == files.len() => l.rules.clone(),
        Some(_) => return Err("the file set changed under a layer".into()),
        None => vec![Vec::new(); files.len()],
    };
    let mut tombstones: Vec<u32> = prev.map(|l| l.tombstones.clone()).unwrap_or_default();
    let no_map = LineMap::default();
    let prev_map = |file: usize| prev.and_then(|l| l.remap.get(file)).unwrap_or(&no_map);
    let key_of = |target: &Target| -> Result<Vec<u8>, String> {
        let Target::Name { name, scope } = target else {
            return Err("a changed line is not a name rule".into());
        };
        let mut key = Vec::with_capacity(name.len() + 1);
        push_key(&mut key, name, *scope);
        Ok(key)
    };
    // Overlay entries by key.
    let mut in_overlay: HashMap<Vec<u8>, Vec<(usize, u32)>> = HashMap::new();
    for (fi, list) in rules.iter().enumerate() {
        for r in list {
            in_overlay
                .entry(key_of(&r.rule.target)?)
                .or_default()
                .push((fi, r.rule.line));
        }
    }
    let base_in_force = |key: &[u8], tombstones: &[u32]| {
        current
            .base_get(key)
            .filter(|ord| tombstones.binary_search(ord).is_err())
    };
    let before_tombstones = tombstones.clone();
    let in_force_before = |key: &[u8]| {
        in_overlay.contains_key(key) || base_in_force(key, &before_tombstones).is_some()
    };

    // 1. Removed lines, at current line numbers.
    let mut removed_keys = Vec::new();
    let mut drop_from_overlay: Vec<(usize, u32)> = Vec::new();
    for (fi, d) in diffs.iter().enumerate() {
        let Some(d) = d else { continue };
        for rule in &d.removed.rules {
            let key = key_of(&rule.target)?;
            if let Some(entries) = in_overlay.get(&key) {
                if !entries.contains(&(fi, rule.line)) {
                    return Err("a removed entry is not where it was listed".into());
                }
                let hidden = rules[fi]
                    .iter()
                    .any(|r| r.rule.line == rule.line && r.hidden_losers);
                if hidden {
                    return Err("listed more than once, entry in force removed".into());
                }
                drop_from_overlay.push((fi, rule.line));
                removed_keys.push(key);
                continue;
            }
            let Some(ord) = base_in_force(&key, &tombstones) else {
                return Err("removed but not in force".into());
            };
            let (file, line, dup) = current.base_row(ord);
            let line = prev_map(file as usize).map(line);
            if usize::from(file) != fi || line != rule.line {
                if dup {
                    // An entry that lost to the rule in force went; the
                    // rule in force, unchanged, still beats the rest.
                    continue;
                }
                return Err("removed but in force from another line".into());
            }
            if dup {
                // The entry in force went: which of the others wins now is
                // for a full compile to say (the losers are not stored).
                return Err("listed more than once, entry in force removed".into());
            }
            tombstones.push(ord);
            removed_keys.push(key);
        }
    }
    tombstones.sort_unstable();
    tombstones.dedup();
    drop_from_overlay.sort_unstable();
    for (fi, list) in rules.iter_mut().enumerate() {
        list.retain(|r| drop_from_overlay.binary_search(&(fi, r.rule.line)).is_err());
    }

    // 2. Lines that stayed move to their new numbers.
    let moved = |fi: usize, line: u32| -> Result<u32, String> {
        match diffs.get(fi).and_then(|d| d.as_ref()) {
            Some(d) => d
                .lines
                .get(line)
                .ok_or_else(|| format!("line {line} is neither kept nor removed")),
            None => Ok(line),
        }
    };
    for (fi, list) in rules.iter_mut().enumerate() {
        for r in list.iter_mut() {
            r.rule.line = moved(fi, r.rule.line)?;
        }
    }
    let mut in_overlay: HashSet<Vec<u8>> = HashSet::new();
    for list in &rules {
        for r in list {
            in_overlay.insert(key_of(&r.rule.target)?);
        }
    }

    // 3. Added lines, at new line numbers; a key in force in the base
    //    comes into the overlay with them.
    let mut added_keys = Vec::new();
    let mut pulled = Vec::new();
    for (fi, d) in diffs.iter().enumerate() {
        let Some(d) = d else { continue };
        for rule in &d.added.rules {
            let key = key_of(&rule.target)?;
            if !in_overlay.contains(&key)
                && let Some(ord) = base_in_force(&key, &tombstones)
            {
                let view = current.rule(super::RuleId(ord));
                let (file, line, dup) = current.base_row(ord);
                let line = moved(file as usize, prev_map(file as usize).map(line))?;
                let (Some(name), Some(scope)) = (view.name(), view.scope()) else {
                    return Err(format!("rule {ord} has no name"));
                };
                let Some(list) = rules.get_mut(file as usize) else {
                    return Err(format!("rule {ord} names an unknown file"));
                };
                list.push(OverlayRule {
                    rule: Rule {
                        target: Target::Name { name, scope },
                        action: view.action(),
                        local_data: view.addresses(),
                        line,
                        meta: view.meta().boxed(),
                    },
                    hidden_losers: dup,
                });
                pulled.push(ord);
                let pos = tombstones.partition_point(|&t| t < ord);
                tombstones.insert(pos, ord);
            }
            in_overlay.insert(key.clone());
            rules[fi].push(OverlayRule {
                rule: rule.clone(),
                hidden_losers: false,
            });
            added_keys.push(key);
        }
    }
    let in_force_after =
        |key: &[u8]| in_overlay.contains(key) || base_in_force(key, &tombstones).is_some();
    let mut added_keys: Vec<&Vec<u8>> = added_keys
        .iter()
        .filter(|k| !in_force_before(k) && in_force_after(k))
        .collect();
    added_keys.sort();
    added_keys.dedup();
    let mut removed_keys: Vec<&Vec<u8>> =
        removed_keys.iter().filter(|k| !in_force_after(k)).collect();
    removed_keys.sort();
    removed_keys.dedup();

    // 4. Compile the overlay; compose the base's line maps.
    let lists: Vec<ParsedList> = files
        .iter()
        .enumerate()
        .map(|(fi, path)| {
            let mut list = parse::parse_bytes(path, b"", &options(path));
            rules[fi].sort_by_key(|r| r.rule.line);
            list.rules = rules[fi].iter().map(|r| r.rule.clone()).collect();
            list
        })
        .collect();
    let overlay = compile_versioned(&lists, version).map_err(|e| e.to_string())?;
    let remap = (0..files.len())
        .map(|fi| {
            let before = prev_map(fi);
            match diffs.get(fi).and_then(|d| d.as_ref()) {
                None => before.clone(),
                // No runs before: the file had not changed since the base.
                Some(d) if before.runs.is_empty() => d.lines.clone(),
                Some(d) => before.then(&d.lines),
            }
        })
        .collect();
    let layer = Layer {
        overlay,
        tombstones,
        remap,
        base_rows: current.row_count() as u32,
        rules,
    };
    Ok((layer, added_keys.len(), removed_keys.len()))
}

/// Diff one file against its copy: hash the copy's lines, stream the new
/// file (copying it byte for byte as the next baseline), and parse the
/// lines present on one side only.
fn diff_file(
    base: &Baseline,
    i: usize,
    path: &Path,
    rec: &FileRecord,
    opts: &ListOptions,
    max_changed_ratio: f64,
) -> Result<FileOutcome, String> {
    let copy = base.copy_path(i);
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let rpz = rec.format == Format::Rpz;

    // The copy: each line's hash, by line, and the file's checksum.
    let mut by_line: Vec<u64> = Vec::new();
    let mut sha = Sha256::new();
    let csv = rec.format == Format::Csv;
    let (mut old_scan, mut new_scan) = (CsvScan::new(), CsvScan::new());
    let mut lines = LineReader::open(&copy)?;
    while let Some((n, raw)) = lines.next_line()? {
        sha.update(raw);
        let line = content(raw, n);
        if csv {
            old_scan.line(line);
        }
        by_line.push(line_hash(line));
    }
    let n = lines.n;
    if hex::encode(sha.finalize()) != rec.sha256 {
        return Err(format!(
            "{}: the copy of the version in force is damaged",
            copy.display()
        ));
    }
    let old_lines = n;
    let limit = ((f64::from(old_lines) * max_changed_ratio) as usize).max(1000);
    // Every old line by (hash << 32 | line), sorted: built only when the
    // window below keeps missing (a long block of lines went).
    let mut sorted: Option<Vec<u128>> = None;
    let hash_of = |e: u128| (e >> 32) as u64;
    let mut misses_in_a_row = 0usize;

    // The new file, streamed once: hash, look up, copy.
    let mut lines = LineReader::open(path)?;
    // UTF-16 lines do not split at a `\n` byte; the parser transcodes the
    // whole file instead.
    if parse::is_utf16(lines.head()?) {
        return Err(format!(
            "{}: UTF-16 text is reloaded in full",
            path.display()
        ));
    }
    if opts.format.is_none() {
        let head = lines.head()?;
        let format = parse::detect(path, head);
        if format != rec.format {
            return Err(format!("{}: format changed to {format}", path.display()));
        }
    }
    let (file, pending) = base
        .create_pending_copy(i)
        .map_err(|e| format!("a copy of {}: {e}", path.display()))?;
    let mut out = BufWriter::with_capacity(READ_BUF, file);
    let mut taken = vec![0u64; by_line.len().div_ceil(64)];
    let is_taken = |t: &[u64], i: usize| t[i / 64] & (1 << (i % 64)) != 0;
    // Matches keep the old order: a line matches the first old line with
    // the same text after the previous match. Unchanged lines then keep
    // their relative order, which is what "first listed wins" depends on;
    // a moved line shows as removed and added, never as a silent reorder.
    let mut last_old: u32 = 0;
    let mut runs: Vec<(u32, u32, u32)> = Vec::new();
    let mut added_bytes = Vec::new();
    let mut added_lines: Vec<u32> = Vec::new();
    let mut sha = Sha256::new();
    let mut bytes = 0u64;
    while let Some((n, raw)) = lines.next_line()? {
        bytes += raw.len() as u64;
        sha.update(raw);
        out.write_all(raw).map_err(|e| io(&pending, e))?;
        let line = content(raw, n);
        if csv {
            new_scan.line(line);
        }
        if rpz {
            rpz_line_in_context(line).map_err(|why| format!("{}: {why}", path.display()))?;
        }
        let h = line_hash(line);
        // Most lines of a push follow the previous match within a few
        // lines (`by_line[i]` is old line i + 1); look there first.
        let start = last_old as usize;
        let window = &by_line[start.min(by_line.len())..(start + WINDOW).min(by_line.len())];
        let mut found = window
            .iter()
            .position(|&x| x == h)
            .map(|p| (start + p + 1) as u32);
        if found.is_none() && misses_in_a_row >= MISSES_BEFORE_SEARCH {
            let index = sorted.get_or_insert_with(|| {
                let mut v: Vec<u128> = by_line
                    .iter()
                    .enumerate()
                    .map(|(i, &h)| (u128::from(h) << 32) | (i as u128 + 1))
                    .collect();
                v.sort_unstable();
                v
            });
            let after = (u128::from(h) << 32) | u128::from(last_old);
            let at = index.partition_point(|&e| e <= after);
            found = (at < index.len() && hash_of(index[at]) == h).then(|| index[at] as u32);
        }
        misses_in_a_row = if found.is_some() {
            0
        } else {
            misses_in_a_row + 1
        };
        if let Some(was) = found {
            let idx = was as usize - 1;
            taken[idx / 64] |= 1 << (idx % 64);
            last_old = was;
            match runs.last_mut() {
                Some((o, nw, len)) if *o + *len == was && *nw + *len == n => *len += 1,
                _ => runs.push((was, n, 1)),
            }
        } else {
            if rpz {
                rpz_line_alone(line).map_err(|why| format!("{}: {why}", path.display()))?;
            }
            added_bytes.extend_from_slice(line);
            added_bytes.push(b'\n');
            added_lines.push(n);
            if added_lines.len() > limit {
                return Err(format!(
                    "{}: more than {limit} lines changed",
                    path.display()
                ));
            }
        }
    }
    out.flush().map_err(|e| io(&pending, e))?;
    drop(out);
    let sha256 = hex::encode(sha.finalize());
    if sha256 == rec.sha256 {
        return Ok(FileOutcome::Unchanged { sha256, bytes });
    }

    // Lines of the copy nobody took are the removed ones.
    drop(sorted);
    drop(by_line);
    let gone: Vec<u32> = (0..old_lines as usize)
        .filter(|&i| !is_taken(&taken, i))
        .map(|i| i as u32 + 1)
        .collect();
    if gone.len() > limit {
        return Err(format!(
            "{}: more than {limit} lines changed",
            path.display()
        ));
    }
    let mut removed_bytes = Vec::new();
    if !gone.is_empty() {
        let mut lines = LineReader::open(&copy)?;
        let mut want = gone.iter().peekable();
        while want.peek().is_some() {
            let Some((n, raw)) = lines.next_line()? else {
                break;
            };
            if want.peek() == Some(&&n) {
                want.next();
                if rpz {
                    rpz_line_alone(content(raw, n))
                        .map_err(|why| format!("{}: {why}", path.display()))?;
                }
                removed_bytes.extend_from_slice(content(raw, n));
                removed_bytes.push(b'\n');
            }
        }
    }
    let forced = ListOptions {
        format: Some(rec.format),
        ..opts.clone()
    };
    let (added, removed) = if csv {
        // Changed rows mean what they mean under the file's header: parse
        // them below it, then drop the header's place from the numbering.
        let header =
            csv_header(&old_scan, &new_scan).map_err(|why| format!("{}: {why}", path.display()))?;
        let fragment = |scan: &CsvScan, rows: &[u8], lines: &[u32]| -> Result<ParsedList, String> {
            let mut text = header.to_vec();
            text.push(b'\n');
            text.extend_from_slice(rows);
            if !scan.utf8 && !text.is_ascii() && std::str::from_utf8(&text).is_ok() {
                return Err(format!(
                    "{}: changed rows would be read as UTF-8 in a Windows-1251 file",
                    path.display()
                ));
            }
            let numbers: Vec<u32> = std::iter::once(0).chain(lines.iter().copied()).collect();
            Ok(renumber(parse::parse_bytes(path, &text, &forced), &numbers))
        };
        (
            fragment(&new_scan, &added_bytes, &added_lines)?,
            fragment(&old_scan, &removed_bytes, &gone)?,
        )
    } else {
        (
            renumber(
                parse::parse_bytes(path, &added_bytes, &forced),
                &added_lines,
            ),
            renumber(parse::parse_bytes(path, &removed_bytes, &forced), &gone),
        )
    };
    if rpz
        && added
            .rules
            .iter()
            .chain(&removed.rules)
            .any(|r| r.action == crate::policy::Action::Address)
    {
        // All A/AAAA records of one owner form one local-data rule: a
        // changed one changes a rule the other lines share.
        return Err(format!("{}: RPZ local data changed", path.display()));
    }
    Ok(FileOutcome::Changed(Box::new(FileDiff {
        added,
        removed,
        lines: LineMap { runs },
        sha256,
        bytes,
    })))
}

/// What the incremental path must know about the lines of a CSV file to
/// parse its changed rows alone exactly as the whole file parses them.
struct CsvScan {
    /// The first line that is neither blank nor a `#` comment: the header
    /// (or the `Updated:` line of the dump layout).
    header: Option<Vec<u8>>,
    /// A non-ASCII line at or before the header: whether the parser takes
    /// it for blank depends on the file's encoding, so do not guess.
    unsure_header: bool,
    /// A line with an odd number of `"`: a quoted field may span lines,
    /// and a row is then not a line.
    quotes_span_lines: bool,
    /// Every line is UTF-8 (else the parser reads the file as Windows-1251).
    utf8: bool,
}

impl CsvScan {
    fn new() -> Self {
        CsvScan {
            header: None,
            unsure_header: false,
            quotes_span_lines: false,
            utf8: true,
        }
    }

    fn line(&mut self, line: &[u8]) {
        if self.header.is_none() {
            if !line.is_ascii() {
                self.unsure_header = true;
            } else if !line.trim_ascii().is_empty() && !line.starts_with(b"#") {
                self.header = Some(line.to_vec());
            }
        }
        if memchr::memchr_iter(b'"', line).count() % 2 == 1 {
            self.quotes_span_lines = true;
        }
        if self.utf8 && std::str::from_utf8(line).is_err() {
            self.utf8 = false;
        }
    }
}

/// The header both versions share, or why their rows cannot be diffed as
/// lines.
fn csv_header<'a>(old: &CsvScan, new: &'a CsvScan) -> Result<&'a [u8], String> {
    if old.quotes_span_lines || new.quotes_span_lines {
        return Err("a quoted CSV field may span lines".into());
    }
    if old.unsure_header || new.unsure_header {
        return Err("non-ASCII text before the CSV header".into());
    }
    let header = match (&old.header, &new.header) {
        (Some(a), Some(b)) if a == b => b,
        _ => return Err("the CSV header changed".into()),
    };
    let text = std::str::from_utf8(header).map_err(|_| "the CSV header is not text")?;
    if !parse::csv_header_is_not_data(text) {
        return Err("the CSV file has no header row".into());
    }
    Ok(header)
}

/// An RPZ file takes the line path only when every record line means
/// the same wherever it stands: no `$ORIGIN` (relative owners would depend
/// on it) and no `( … )` records spanning lines (a changed line inside one
/// is not a record). The zones `rpz::follow` writes are of this kind; other
/// RPZ files reload in full.
fn rpz_line_in_context(line: &[u8]) -> Result<(), &'static str> {
    if line.len() >= 7 && line[..7].eq_ignore_ascii_case(b"$ORIGIN") {
        return Err("an RPZ file with $ORIGIN");
    }
    if line.contains(&b'(') || line.contains(&b')') {
        return Err("an RPZ record spans lines");
    }
    Ok(())
}

/// A changed RPZ line must stand alone: not a directive, not a record
/// that borrows the previous line's owner.
fn rpz_line_alone(line: &[u8]) -> Result<(), &'static str> {
    match line.first() {
        Some(b'$') => Err("an RPZ directive changed"),
        Some(b' ' | b'\t') => Err("an RPZ record without its own owner changed"),
        _ => Ok(()),
    }
}

/// A file's lines with their 1-based numbers, `\n` included, as the
/// parser numbers them.
struct LineReader {
    path: PathBuf,
    reader: BufReader<fs::File>,
    raw: Vec<u8>,
    n: u32,
}

impl LineReader {
    fn open(path: &Path) -> Result<LineReader, String> {
        let file = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(LineReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(READ_BUF, file),
            raw: Vec::with_capacity(256),
            n: 0,
        })
    }

    /// The start of the file, without consuming it.
    fn head(&mut self) -> Result<&[u8], String> {
        self.reader
            .fill_buf()
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    fn next_line(&mut self) -> Result<Option<(u32, &[u8])>, String> {
        self.raw.clear();
        let read = self
            .reader
            .read_until(b'\n', &mut self.raw)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        if read == 0 {
            return Ok(None);
        }
        self.n = self.n.checked_add(1).ok_or("too many lines")?;
        Ok(Some((self.n, &self.raw)))
    }
}

/// Lines of a parsed excerpt back to their numbers in the file.
fn renumber(mut list: ParsedList, lines: &[u32]) -> ParsedList {
    let real = |l: u32| {
        l.checked_sub(1)
            .and_then(|i| lines.get(i as usize))
            .copied()
            .unwrap_or(l)
    };
    for r in &mut list.rules {
        r.line = real(r.line);
    }
    for s in &mut list.skipped {
        s.line = real(s.line);
    }
    list
}
