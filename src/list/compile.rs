//! Rules → one immutable [`Snapshot`] blob (see `snapshot.rs` for the layout).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::bloom;
use super::parse::NameSink;
use super::snapshot::{
    FORMAT, HEADER_LEN, MAGIC, MAX_LINE, META_LEN, META_STRINGS, NO_STRING, RPZ_FILE_BIT, RULE_LEN,
    SCOPE_EXACT, SCOPE_SUBDOMAINS, SCOPE_SUBTREE, SECTIONS, Snapshot, meta_row_strings, row_word,
    url_line,
};
use super::{Counts, Format, META_FIELDS, ParsedList, Rule, RuleMeta, Scope, Target};
use crate::policy::Action;

/// Why a set of lists could not be compiled. Bad lines never get here (the
/// parser skips them); these are limits of the snapshot format.
#[derive(Debug, Error)]
pub enum CompileError {
    #[error("too many list files ({0}); at most 65535")]
    TooManyFiles(usize),
    #[error("too many rules ({0}); at most 4294967294")]
    TooManyRules(usize),
    #[error(
        "name keys beyond what a snapshot can hold (4 GiB), or a key over 255 octets, at {0:?}"
    )]
    KeysTooLarge(String),
    #[error("{file}: line {line} is beyond the last line a snapshot can name ({MAX_LINE})")]
    LineTooLarge { file: String, line: u32 },
    #[error("string too long for the snapshot ({0} bytes) at {1}")]
    StringTooLong(usize, String),
    #[error("building the name index: {0}")]
    Fst(#[from] fst::Error),
    #[error("snapshot: {0}")]
    Snapshot(#[from] super::SnapshotError),
}

/// A name rule on its way into the fst: 12 bytes, with its key in a
/// shared arena, so a million names cost a few large allocations rather
/// than a `String` and a rule struct each. Its metadata, which most names
/// lack, is in [`Builder::name_extras`].
#[derive(Clone, Copy)]
struct NameRow {
    key_start: u32,
    line: u32,
    file: u16,
    action: u8,
    /// A key is a name (at most 253 octets) plus its scope byte.
    key_len: u8,
}

const NO_EXTRA: u32 = u32::MAX;

/// Metadata interned per rule (string offsets).
#[derive(Clone, Copy)]
struct MetaRow([u32; META_STRINGS]);

#[derive(Default)]
struct Strings {
    bytes: Vec<u8>,
    index: HashMap<String, u32>,
}

impl Strings {
    fn intern(&mut self, s: &str) -> Result<u32, CompileError> {
        if let Some(&off) = self.index.get(s) {
            return Ok(off);
        }
        if s.len() > u16::MAX as usize {
            return Err(CompileError::StringTooLong(
                s.len(),
                s.chars().take(40).collect(),
            ));
        }
        let off = self.bytes.len() as u32;
        self.bytes
            .extend_from_slice(&(s.len() as u16).to_le_bytes());
        self.bytes.extend_from_slice(s.as_bytes());
        self.index.insert(s.to_string(), off);
        Ok(off)
    }
    fn opt(&mut self, s: Option<&str>) -> Result<u32, CompileError> {
        s.map_or(Ok(NO_STRING), |s| self.intern(s))
    }
}

/// Append the reversed-label key of `name` plus its scope byte.
pub(crate) fn push_key(arena: &mut Vec<u8>, name: &str, scope: Scope) {
    let mut first = true;
    for label in name.rsplit('.') {
        if !first {
            arena.push(b'.');
        }
        first = false;
        arena.extend_from_slice(label.as_bytes());
    }
    arena.push(match scope {
        Scope::Exact => SCOPE_EXACT,
        Scope::Subtree => SCOPE_SUBTREE,
        Scope::Subdomains => SCOPE_SUBDOMAINS,
    });
}

/// Compile lists into a snapshot with version 1 (see [`compile_versioned`]).
pub fn compile(lists: &[ParsedList]) -> Result<Snapshot, CompileError> {
    compile_versioned(lists, 1)
}

/// Compile lists, in order (earlier lists win ties), into a snapshot that
/// carries `version`.
pub fn compile_versioned(lists: &[ParsedList], version: u64) -> Result<Snapshot, CompileError> {
    if lists.len() > u16::MAX as usize {
        return Err(CompileError::TooManyFiles(lists.len()));
    }
    let mut builder = Builder::default();
    for list in lists {
        builder.begin_list(&list.name, &list.path, list.format);
        builder.end_list(&list.rules, list.counts())?;
    }
    builder.finish(version)
}

/// Builds a snapshot from lists fed one after another: [`Builder::begin_list`],
/// then the list's name rules streamed in through [`NameSink`] as the
/// parser meets them (the large line formats), then [`Builder::end_list`]
/// with the rules the parser kept as structs. Earlier lists and earlier
/// rules win ties, as in [`compile_versioned`].
#[derive(Default)]
pub(crate) struct Builder {
    strings: Strings,
    files: Vec<u8>,
    file_count: usize,
    /// The current list's path, for errors.
    path: String,
    counts: Counts,
    /// Reversed-label keys of every name rule, back to back.
    arena: Vec<u8>,
    /// One row per name rule, in input order.
    rows: Vec<NameRow>,
    /// (row, index into `extras`) for the name rules that carry metadata,
    /// in row order.
    name_extras: Vec<(u32, u32)>,
    extras: Vec<MetaRow>,
    keywords: Vec<(String, u16, u32, u8, u32)>,
    deferred: Vec<String>,
    /// The first error met while names were streamed in (a sink cannot
    /// fail); [`Builder::end_list`] returns it.
    error: Option<CompileError>,
}

impl NameSink for Builder {
    fn begin_list(&mut self, name: &str, path: &Path, format: Format) {
        if let Err(e) = self.try_begin_list(name, path, format) {
            self.error.get_or_insert(e);
        }
    }

    fn name(&mut self, line: u32, name: &str, scope: Scope, action: Action, meta: &RuleMeta) {
        if self.error.is_some() {
            return;
        }
        let action = super::snapshot::action_code(action);
        if let Err(e) = self.push_name(line, name, scope, action, meta, &[]) {
            self.error = Some(e);
        }
    }
}

impl Builder {
    fn try_begin_list(
        &mut self,
        name: &str,
        path: &Path,
        format: Format,
    ) -> Result<(), CompileError> {
        if self.file_count >= u16::MAX as usize {
            return Err(CompileError::TooManyFiles(self.file_count + 1));
        }
        self.file_count += 1;
        self.path = path.display().to_string();
        self.files
            .extend_from_slice(&self.strings.intern(name)?.to_le_bytes());
        let path = self.strings.intern(&self.path)?;
        // An RPZ zone's wildcards follow DNS rules at lookup (`Snapshot::lookup`).
        let path = if format == Format::Rpz {
            path | RPZ_FILE_BIT
        } else {
            path
        };
        self.files.extend_from_slice(&path.to_le_bytes());
        Ok(())
    }

    /// The list's file number in the snapshot.
    fn file(&self) -> u16 {
        self.file_count.saturating_sub(1) as u16
    }

    /// Finish the current list: add the rules its parser kept as structs
    /// (after any names streamed in) and the list's counts.
    pub(crate) fn end_list(&mut self, rules: &[Rule], counts: Counts) -> Result<(), CompileError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if let Some(r) = rules.iter().find(|r| r.line > MAX_LINE) {
            return Err(self.line_too_large(r.line));
        }
        self.counts = self.counts + counts;
        for rule in rules {
            self.rule(rule)?;
        }
        Ok(())
    }

    fn line_too_large(&self, line: u32) -> CompileError {
        CompileError::LineTooLarge {
            file: self.path.clone(),
            line,
        }
    }

    fn rule(&mut self, rule: &Rule) -> Result<(), CompileError> {
        let action = super::snapshot::action_code(rule.action);
        let file = self.file();
        match &rule.target {
            Target::Name { name, scope } => {
                return self.push_name(
                    rule.line,
                    name,
                    *scope,
                    action,
                    rule.meta(),
                    &rule.local_data,
                );
            }
            Target::Keyword(k) => {
                let extra = self.extra(rule.meta(), &rule.local_data)?;
                self.keywords
                    .push((k.clone(), file, rule.line, action, extra));
            }
            Target::Url(u) => {
                // The provenance follows as string offsets so the
                // front can quote the decision.
                let mut offs = [NO_STRING; META_FIELDS];
                for (off, s) in offs.iter_mut().zip(rule.meta().fields()) {
                    *off = self.strings.opt(s)?;
                }
                self.deferred
                    .push(url_line(usize::from(file), rule.line, u, action, offs));
            }
            Target::Ip(net) => self
                .deferred
                .push(format!("ip\t{file}\t{}\t{net}", rule.line)),
            Target::RpzOther { trigger, owner } => {
                let kind = match trigger {
                    super::RpzTrigger::Ip => "rpz-ip",
                    super::RpzTrigger::ClientIp => "rpz-client-ip",
                    super::RpzTrigger::Nsdname => "rpz-nsdname",
                    super::RpzTrigger::Nsip => "rpz-nsip",
                };
                self.deferred
                    .push(format!("{kind}\t{file}\t{}\t{owner}", rule.line));
            }
        }
        Ok(())
    }

    /// Intern a rule's metadata; [`NO_EXTRA`] when it has none.
    fn extra(&mut self, meta: &RuleMeta, local_data: &[IpAddr]) -> Result<u32, CompileError> {
        Ok(match meta_row(&mut self.strings, meta, local_data)? {
            Some(row) => {
                self.extras.push(row);
                self.extras.len() as u32 - 1
            }
            None => NO_EXTRA,
        })
    }

    fn push_name(
        &mut self,
        line: u32,
        name: &str,
        scope: Scope,
        action: u8,
        meta: &RuleMeta,
        local_data: &[IpAddr],
    ) -> Result<(), CompileError> {
        if line > MAX_LINE {
            return Err(self.line_too_large(line));
        }
        if self.rows.len() >= u32::MAX as usize - 1 {
            return Err(CompileError::TooManyRules(self.rows.len()));
        }
        let extra = self.extra(meta, local_data)?;
        let start = self.arena.len();
        push_key(&mut self.arena, name, scope);
        let key_len = self.arena.len() - start;
        let (Ok(key_start), Ok(key_len)) = (u32::try_from(start), u8::try_from(key_len)) else {
            self.arena.truncate(start);
            return Err(CompileError::KeysTooLarge(name.chars().take(40).collect()));
        };
        if extra != NO_EXTRA {
            self.name_extras.push((self.rows.len() as u32, extra));
        }
        let file = self.file();
        self.rows.push(NameRow {
            key_start,
            line,
            file,
            action,
            key_len,
        });
        Ok(())
    }

    /// Sort the name rules, build the fst straight into the snapshot blob,
    /// and append the other sections.
    pub(crate) fn finish(self, version: u64) -> Result<Snapshot, CompileError> {
        let Builder {
            mut strings,
            files,
            counts,
            arena,
            rows,
            name_extras,
            extras,
            keywords,
            deferred,
            error,
            ..
        } = self;
        if let Some(e) = error {
            return Err(e);
        }
        if rows.len() + keywords.len() >= u32::MAX as usize {
            return Err(CompileError::TooManyRules(rows.len() + keywords.len()));
        }
        let key = |i: u32| {
            let r = &rows[i as usize];
            &arena[r.key_start as usize..r.key_start as usize + r.key_len as usize]
        };
        let name_of = |i: u32| {
            let k = key(i);
            &k[..k.len() - 1]
        };
        // Sort by key, then so that the winner of a duplicate key comes
        // first: an allow beats a block, otherwise the first listed wins.
        let mut order: Vec<u32> = (0..rows.len() as u32).collect();
        radix_sort(&mut order, &key, &|a: &u32, b: &u32| {
            let (ra, rb) = (&rows[*a as usize], &rows[*b as usize]);
            (ra.action != 0)
                .cmp(&(rb.action != 0))
                .then_with(|| a.cmp(b))
        });
        // Keep each key's winner; a name may carry several scopes, and the
        // filter takes one entry per distinct name.
        let mut dup = Vec::with_capacity(order.len());
        let mut winners = 0;
        let mut distinct = 0;
        let mut i = 0;
        while i < order.len() {
            let first = order[i];
            let mut j = i + 1;
            while j < order.len() && key(order[j]) == key(first) {
                j += 1;
            }
            if winners == 0 || name_of(order[winners - 1]) != name_of(first) {
                distinct += 1;
            }
            dup.push(j - i > 1);
            order[winners] = first;
            winners += 1;
            i = j;
        }
        order.truncate(winners);
        order.shrink_to_fit();

        let mut blob = Vec::with_capacity(HEADER_LEN + arena.len() / 2);
        blob.resize(HEADER_LEN, 0);
        let mut rules = Vec::with_capacity((order.len() + keywords.len()) * RULE_LEN);
        let mut meta = Vec::new();
        let mut filter = vec![0u8; bloom::size_for(distinct)];
        {
            let mut fst = fst::MapBuilder::new(&mut blob)?;
            for (ord, &r) in order.iter().enumerate() {
                fst.insert(key(r), ord as u64)?;
                let row = &rows[r as usize];
                let extra = name_extras
                    .binary_search_by_key(&r, |&(row, _)| row)
                    .map_or(NO_EXTRA, |i| name_extras[i].1);
                push_rule(
                    &mut rules, &mut meta, &extras, ord as u32, row.line, row.file, row.action,
                    extra, dup[ord],
                );
                if ord == 0 || name_of(order[ord - 1]) != name_of(r) {
                    bloom::insert(&mut filter, bloom::key_hash(name_of(r)));
                }
            }
            fst.finish()?;
        }
        let fst_len = blob.len() - HEADER_LEN;
        let names = order.len();
        drop((order, dup, arena, rows, name_extras));

        let mut extra_sec = Vec::new();
        extra_sec.extend_from_slice(&(keywords.len() as u32).to_le_bytes());
        for (i, (kw, file, line, action, extra)) in keywords.iter().enumerate() {
            let id = (names + i) as u32;
            push_rule(
                &mut rules, &mut meta, &extras, id, *line, *file, *action, *extra, false,
            );
            extra_sec.extend_from_slice(&id.to_le_bytes());
            extra_sec.extend_from_slice(&strings.intern(kw)?.to_le_bytes());
        }
        for d in &deferred {
            extra_sec.extend_from_slice(d.as_bytes());
            extra_sec.push(b'\n');
        }

        let rest: [&[u8]; SECTIONS - 1] =
            [&rules, &meta, &strings.bytes, &files, &extra_sec, &filter];
        blob.reserve_exact(rest.iter().map(|s| s.len()).sum());
        let mut lens = [0usize; SECTIONS];
        lens[0] = fst_len;
        for (len, s) in lens[1..].iter_mut().zip(rest) {
            *len = s.len();
            blob.extend_from_slice(s);
        }
        let crc = crc32fast::hash(&blob[HEADER_LEN..]);
        blob[..HEADER_LEN].copy_from_slice(&header_for(lens, crc, version, counts));
        Ok(Snapshot::from_blob(blob, "compiled snapshot")?)
    }
}

/// Buckets below this size are finished by a comparison sort.
const RADIX_MIN: usize = 64;

/// Sort row numbers by their key bytes, equal keys by `tie`: an MSD radix
/// sort. Reversed-label keys share long prefixes (`com.`, `com.example.`),
/// over which a comparison sort would compare the same bytes again at every
/// level of its recursion; a radix pass reads each key byte once.
fn radix_sort<'k>(
    order: &mut [u32],
    key: &impl Fn(u32) -> &'k [u8],
    tie: &impl Fn(&u32, &u32) -> std::cmp::Ordering,
) {
    let mut scratch = vec![0u32; order.len()];
    radix_pass(order, &mut scratch, 0, key, tie);
}

/// The bucket of a key at `depth`: 0 once the key has ended (it sorts
/// before every longer key), else the byte plus one.
fn bucket(key: &[u8], depth: usize) -> usize {
    key.get(depth).map_or(0, |&b| usize::from(b) + 1)
}

fn radix_pass<'k>(
    order: &mut [u32],
    scratch: &mut [u32],
    depth: usize,
    key: &impl Fn(u32) -> &'k [u8],
    tie: &impl Fn(&u32, &u32) -> std::cmp::Ordering,
) {
    if order.len() < RADIX_MIN {
        order.sort_unstable_by(|a, b| {
            key(*a)[depth.min(key(*a).len())..]
                .cmp(&key(*b)[depth.min(key(*b).len())..])
                .then_with(|| tie(a, b))
        });
        return;
    }
    let mut counts = [0usize; 257];
    for &i in order.iter() {
        counts[bucket(key(i), depth)] += 1;
    }
    let only = bucket(key(order[0]), depth);
    if counts[only] == order.len() {
        // One bucket (a shared prefix byte): no scatter needed.
        if only == 0 {
            order.sort_unstable_by(tie);
        } else {
            radix_pass(order, scratch, depth + 1, key, tie);
        }
        return;
    }
    let mut starts = [0usize; 257];
    let mut sum = 0;
    for (start, count) in starts.iter_mut().zip(counts) {
        *start = sum;
        sum += count;
    }
    let mut next = starts;
    for &i in order.iter() {
        let b = bucket(key(i), depth);
        scratch[next[b]] = i;
        next[b] += 1;
    }
    order.copy_from_slice(&scratch[..order.len()]);
    for (b, (&start, &count)) in starts.iter().zip(&counts).enumerate() {
        if count < 2 {
            continue;
        }
        let range = start..start + count;
        if b == 0 {
            order[range].sort_unstable_by(tie);
        } else {
            radix_pass(
                &mut order[range.clone()],
                &mut scratch[range],
                depth + 1,
                key,
                tie,
            );
        }
    }
}

/// Header + sections → one blob with its checksum (layout in `snapshot.rs`).
#[cfg(test)]
pub(crate) fn assemble(sections: &[&[u8]; SECTIONS], version: u64, counts: Counts) -> Vec<u8> {
    let body_len: usize = sections.iter().map(|s| s.len()).sum();
    let mut blob = Vec::with_capacity(HEADER_LEN + body_len);
    blob.extend_from_slice(&header(sections, version, counts));
    for s in sections {
        blob.extend_from_slice(s);
    }
    blob
}

/// The header for these sections, checksum included.
#[cfg(test)]
pub(crate) fn header(sections: &[&[u8]; SECTIONS], version: u64, counts: Counts) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    for s in sections {
        crc.update(s);
    }
    header_for(sections.map(<[u8]>::len), crc.finalize(), version, counts)
}

/// The header for sections of these lengths whose bytes have this CRC-32.
pub(crate) fn header_for(
    lens: [usize; SECTIONS],
    crc: u32,
    version: u64,
    counts: Counts,
) -> Vec<u8> {
    let mut blob = Vec::with_capacity(HEADER_LEN);
    blob.extend_from_slice(MAGIC);
    blob.extend_from_slice(&FORMAT.to_le_bytes());
    blob.extend_from_slice(&crc.to_le_bytes());
    blob.extend_from_slice(&version.to_le_bytes());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    blob.extend_from_slice(&created.to_le_bytes());
    for c in [
        counts.names,
        counts.wildcards,
        counts.allows,
        counts.keywords,
        counts.urls,
        counts.ips,
        counts.rpz_other,
        counts.skipped,
    ] {
        blob.extend_from_slice(&(c as u64).to_le_bytes());
    }
    let mut off = HEADER_LEN;
    for len in lens {
        blob.extend_from_slice(&(off as u64).to_le_bytes());
        blob.extend_from_slice(&(len as u64).to_le_bytes());
        off += len;
    }
    debug_assert_eq!(blob.len(), HEADER_LEN);
    blob
}

/// A rule's metadata as interned string offsets; `None` when it has none.
/// The one place a [`RuleMeta`] becomes a snapshot meta row.
fn meta_row(
    strings: &mut Strings,
    meta: &RuleMeta,
    local_data: &[IpAddr],
) -> Result<Option<MetaRow>, CompileError> {
    let addrs = (!local_data.is_empty()).then(|| {
        local_data
            .iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>()
            .join(",")
    });
    if meta.is_empty() && addrs.is_none() {
        return Ok(None);
    }
    let mut row = [NO_STRING; META_STRINGS];
    for (off, s) in row.iter_mut().zip(meta_row_strings(meta, addrs.as_deref())) {
        *off = strings.opt(s)?;
    }
    Ok(Some(MetaRow(row)))
}

#[allow(clippy::too_many_arguments)]
fn push_rule(
    rules: &mut Vec<u8>,
    meta: &mut Vec<u8>,
    extras: &[MetaRow],
    id: u32,
    line: u32,
    file: u16,
    action: u8,
    extra: u32,
    dup: bool,
) {
    let has_meta = extra != NO_EXTRA;
    if has_meta {
        meta.extend_from_slice(&id.to_le_bytes());
        for s in extras[extra as usize].0 {
            meta.extend_from_slice(&s.to_le_bytes());
        }
    }
    debug_assert_eq!(meta.len() % META_LEN, 0);
    rules.extend_from_slice(&row_word(line, action, has_meta, dup).to_le_bytes());
    rules.extend_from_slice(&file.to_le_bytes());
    debug_assert_eq!(rules.len() % RULE_LEN, 0);
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;
    use crate::list::{ListOptions, load, parse};

    /// Every name rule and keyword rule with its provenance, and every
    /// deferred rule, in rule order: what a snapshot answers, independent
    /// of where its strings sit.
    fn answers(snap: &Snapshot) -> Vec<String> {
        let mut out: Vec<String> = (0..snap.rule_count() as u32)
            .map(|id| {
                let v = snap.rule(super::super::RuleId(id));
                format!(
                    "{} {} {} {} {:?} {:?} {:?}",
                    v.text(),
                    v.list(),
                    v.file(),
                    v.line(),
                    v.action(),
                    v.meta(),
                    v.addresses()
                )
            })
            .collect();
        out.extend(snap.deferred_rules().into_iter().map(|d| format!("{d:?}")));
        out
    }

    /// Loading files streams their names into the builder; compiling the
    /// same files' parsed rules must give the same snapshot, byte for byte
    /// where no metadata string is shared between a name and a URL row, and
    /// answer for answer everywhere.
    #[test]
    fn streamed_load_equals_compiling_parsed_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: &[(&str, &str)] = &[
            (
                "a-plain.txt",
                "example.com\n*.wild.net\n@@||ok.example.com^\nexample.com\n\
                 keyword:binance\n192.0.2.1\nhttp://host.test/page\nDup.Example.COM.\n\
                 dup.example.com\n||ad.test^\nbad..name\n",
            ),
            (
                "b.hosts",
                "0.0.0.0 example.com other.test\n127.0.0.1 localhost\n0.0.0.0 wild.net\n",
            ),
            (
                "c-exact.txt",
                "example.com\nexact.test\n*.sub.exact.test\n@@||allowed.test^\n",
            ),
            (
                "d.csv",
                "domain;url;decision;authority;date\n\
                 reg.test;;27-31-2020/Ид2971-20;Роскомнадзор;2020-01-01\n\
                 page.test;http://page.test/x|http://page.test/;1-2;FNS;2021-02-02\n\
                 ;http://urlonly.test/a;3;FNS;2022\n\
                 example.com;;27-31-2020/Ид2971-20;Роскомнадзор;2020-01-01\n",
            ),
            (
                "e.rpz",
                "$ORIGIN rpz.test.\nzone.test CNAME .\n*.zone.test CNAME *.\n\
                 addr.test A 192.0.2.9\nexample.com CNAME rpz-passthru.\n",
            ),
        ];
        let mut paths = Vec::new();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            paths.push(path);
        }
        let options = |p: &Path| -> ListOptions {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            ListOptions {
                exact_only: name.starts_with("c-"),
                action: name.starts_with("c-").then_some(Action::Nodata),
                ..ListOptions::default()
            }
        };
        let loaded = load(&[dir.path().to_path_buf()], &options, 7, None).expect("load");
        let lists: Vec<ParsedList> = paths
            .iter()
            .map(|p| parse::parse_file(p, &options(p)).expect("parse"))
            .collect();
        let compiled = compile_versioned(&lists, 7).expect("compile");

        assert_eq!(answers(&loaded.snapshot), answers(&compiled));
        assert_eq!(loaded.snapshot.counts(), compiled.counts());
        let reported: Vec<Counts> = loaded.files.iter().map(|f| f.counts).collect();
        let parsed: Vec<Counts> = lists.iter().map(ParsedList::counts).collect();
        assert_eq!(reported, parsed);
        let skipped: Vec<String> = lists.iter().flat_map(|l| l.skip_messages()).collect();
        assert_eq!(loaded.skipped, skipped);
        assert!(!skipped.is_empty(), "the bad line is reported");
        for name in [
            "example.com",
            "www.example.com",
            "ok.example.com",
            "a.wild.net",
            "wild.net",
            "exact.test",
            "x.exact.test",
            "a.sub.exact.test",
            "reg.test",
            "page.test",
            "zone.test",
            "x.zone.test",
            "my-binance.io",
            "dup.example.com",
            "nothing.test",
        ] {
            let rule = |s: &Snapshot| {
                s.lookup(name.as_bytes()).map(|m| {
                    let v = s.rule(m.rule);
                    (v.text(), v.list().to_string(), v.line(), v.action())
                })
            };
            assert_eq!(rule(&loaded.snapshot), rule(&compiled), "{name}");
        }
        assert!(loaded.snapshot.lookup(b"www.example.com").is_some());

        // Without a CSV (whose URL rows intern their strings after the
        // streamed names), the two snapshots are the same bytes but for the
        // creation time.
        let plain: Vec<PathBuf> = paths.iter().take(3).cloned().collect();
        let loaded = load(&plain, &options, 7, None).expect("load");
        let compiled = compile_versioned(&lists[..3], 7).expect("compile");
        let (a, b) = (loaded.snapshot.bytes(), compiled.bytes());
        assert_eq!(a.len(), b.len());
        assert_eq!(a[..24], b[..24]);
        assert_eq!(a[32..], b[32..]);
    }

    #[test]
    fn a_line_beyond_the_snapshot_limit_is_an_error_when_streamed() {
        let mut b = Builder::default();
        b.begin_list("l", Path::new("l.txt"), Format::Plain);
        b.name(
            MAX_LINE + 1,
            "a.test",
            Scope::Subtree,
            Action::Block,
            &RuleMeta::default(),
        );
        let err = b
            .end_list(&[], Counts::default())
            .expect_err("line too large");
        assert!(matches!(err, CompileError::LineTooLarge { line, .. } if line == MAX_LINE + 1));
    }

    proptest! {
        /// The radix sort orders exactly as a comparison sort by (key, tie).
        #[test]
        fn radix_sort_orders_like_a_comparison_sort(
            keys in proptest::collection::vec(
                (proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'.'), Just(2u8)], 0..6), any::<bool>()),
                0..300,
            )
        ) {
            let key = |i: u32| keys[i as usize].0.as_slice();
            let tie = |a: &u32, b: &u32| {
                keys[*a as usize].1.cmp(&keys[*b as usize].1).then_with(|| a.cmp(b))
            };
            let mut radix: Vec<u32> = (0..keys.len() as u32).collect();
            radix_sort(&mut radix, &key, &tie);
            let mut want: Vec<u32> = (0..keys.len() as u32).collect();
            want.sort_by(|a, b| key(*a).cmp(key(*b)).then_with(|| tie(a, b)));
            prop_assert_eq!(radix, want);
        }
    }
}
