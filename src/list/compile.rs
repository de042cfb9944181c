//! Rules → one immutable [`Snapshot`] blob (see `snapshot.rs` for the layout).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::bloom;
use super::snapshot::{
    FORMAT, HEADER_LEN, MAGIC, MAX_LINE, META_LEN, META_STRINGS, NO_STRING, RPZ_FILE_BIT, RULE_LEN,
    SCOPE_EXACT, SCOPE_SUBDOMAINS, SCOPE_SUBTREE, SECTIONS, Snapshot, meta_row_strings, row_word,
    url_line,
};
use super::{Counts, META_FIELDS, ParsedList, RuleMeta, Scope, Target};

/// Why a set of lists could not be compiled. Bad lines never get here (the
/// parser skips them); these are limits of the snapshot format.
#[derive(Debug, Error)]
pub enum CompileError {
    #[error("too many list files ({0}); at most 65535")]
    TooManyFiles(usize),
    #[error("too many rules ({0}); at most 4294967294")]
    TooManyRules(usize),
    #[error("{file}: line {line} is beyond the last line a snapshot can name ({MAX_LINE})")]
    LineTooLarge { file: String, line: u32 },
    #[error("string too long for the snapshot ({0} bytes) at {1}")]
    StringTooLong(usize, String),
    #[error("building the name index: {0}")]
    Fst(#[from] fst::Error),
    #[error("snapshot: {0}")]
    Snapshot(#[from] super::SnapshotError),
}

/// A name rule on its way into the fst. The key lives in a shared arena so a
/// million names cost two allocations, not a million.
struct Pending {
    key_start: u32,
    key_len: u16,
    file: u16,
    line: u32,
    action: u8,
    /// Position in input order, to keep "first listed wins" after sorting.
    seq: u32,
    extra: Option<u32>,
    /// Other entries with this key lost to this one.
    dup: bool,
}

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
    let mut strings = Strings::default();
    let mut files = Vec::with_capacity(lists.len() * 8);
    let mut counts = Counts::default();
    let total_rules: usize = lists.iter().map(|l| l.rules.len()).sum();
    let mut arena = Vec::with_capacity(total_rules * 16);
    let mut pending: Vec<Pending> = Vec::with_capacity(total_rules);
    let mut extras: Vec<MetaRow> = Vec::new();
    let mut keywords: Vec<(String, u16, u32, u8, Option<u32>)> = Vec::new();
    let mut deferred = Vec::new();

    for (fi, list) in lists.iter().enumerate() {
        let file = fi as u16;
        counts = counts + list.counts();
        files.extend_from_slice(&strings.intern(&list.name)?.to_le_bytes());
        let path = strings.intern(&list.path.display().to_string())?;
        // An RPZ zone's wildcards follow DNS rules at lookup (`Snapshot::lookup`).
        let path = if list.format == super::Format::Rpz {
            path | RPZ_FILE_BIT
        } else {
            path
        };
        files.extend_from_slice(&path.to_le_bytes());
        if let Some(r) = list.rules.iter().find(|r| r.line > MAX_LINE) {
            return Err(CompileError::LineTooLarge {
                file: list.path.display().to_string(),
                line: r.line,
            });
        }
        for rule in &list.rules {
            let extra = meta_row(&mut strings, rule.meta(), &rule.local_data)?.map(|row| {
                extras.push(row);
                extras.len() as u32 - 1
            });
            let action = super::snapshot::action_code(rule.action);
            match &rule.target {
                Target::Name { name, scope } => {
                    let start = arena.len();
                    push_key(&mut arena, name, *scope);
                    let len = arena.len() - start;
                    if pending.len() >= u32::MAX as usize - 1 {
                        return Err(CompileError::TooManyRules(pending.len()));
                    }
                    pending.push(Pending {
                        key_start: start as u32,
                        key_len: len as u16,
                        file,
                        line: rule.line,
                        action,
                        seq: pending.len() as u32,
                        extra,
                        dup: false,
                    });
                }
                Target::Keyword(k) => keywords.push((k.clone(), file, rule.line, action, extra)),
                Target::Url(u) => {
                    // The provenance follows as string offsets so the
                    // front can quote the decision.
                    let mut offs = [NO_STRING; META_FIELDS];
                    for (off, s) in offs.iter_mut().zip(rule.meta().fields()) {
                        *off = strings.opt(s)?;
                    }
                    deferred.push(url_line(fi, rule.line, u, action, offs));
                }
                Target::Ip(net) => deferred.push(format!("ip\t{fi}\t{}\t{net}", rule.line)),
                Target::RpzOther { trigger, owner } => {
                    let kind = match trigger {
                        super::RpzTrigger::Ip => "rpz-ip",
                        super::RpzTrigger::ClientIp => "rpz-client-ip",
                        super::RpzTrigger::Nsdname => "rpz-nsdname",
                        super::RpzTrigger::Nsip => "rpz-nsip",
                    };
                    deferred.push(format!("{kind}\t{fi}\t{}\t{owner}", rule.line));
                }
            }
        }
    }

    let key = |p: &Pending| &arena[p.key_start as usize..p.key_start as usize + p.key_len as usize];
    // Sort by key, then so that the winner of a duplicate key comes first:
    // an allow beats a block, otherwise the first listed wins.
    pending.sort_unstable_by(|a, b| {
        key(a)
            .cmp(key(b))
            .then_with(|| (a.action != 0).cmp(&(b.action != 0)))
            .then_with(|| a.seq.cmp(&b.seq))
    });
    pending.dedup_by(|later, first| {
        let same = key(later) == key(first);
        first.dup |= same;
        same
    });

    let mut builder = fst::MapBuilder::memory();
    let mut rules = Vec::with_capacity((pending.len() + keywords.len()) * RULE_LEN);
    let mut meta = Vec::new();
    for (ord, p) in pending.iter().enumerate() {
        builder.insert(key(p), ord as u64)?;
        push_rule(
            &mut rules, &mut meta, &extras, ord as u32, p.line, p.file, p.action, p.extra, p.dup,
        );
    }
    let fst_bytes = builder.into_inner()?;
    // One filter key per distinct name (a name may carry several scopes).
    let name_of = |p: &Pending| &key(p)[..p.key_len as usize - 1];
    let distinct = pending
        .iter()
        .enumerate()
        .filter(|(i, p)| *i == 0 || name_of(&pending[i - 1]) != name_of(p))
        .count();
    let mut filter = vec![0u8; bloom::size_for(distinct)];
    for (i, p) in pending.iter().enumerate() {
        if i == 0 || name_of(&pending[i - 1]) != name_of(p) {
            bloom::insert(&mut filter, bloom::key_hash(name_of(p)));
        }
    }
    drop(arena);

    let mut extra_sec = Vec::new();
    extra_sec.extend_from_slice(&(keywords.len() as u32).to_le_bytes());
    for (i, (kw, file, line, action, extra)) in keywords.iter().enumerate() {
        let id = (pending.len() + i) as u32;
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

    let sections: [&[u8]; SECTIONS] = [
        &fst_bytes,
        &rules,
        &meta,
        &strings.bytes,
        &files,
        &extra_sec,
        &filter,
    ];
    let blob = assemble(&sections, version, counts);
    Ok(Snapshot::from_blob(blob, "compiled snapshot")?)
}

/// Header + sections → one blob with its checksum (layout in `snapshot.rs`).
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

fn meta_row(
    strings: &mut Strings,
    meta: &RuleMeta,
    local_data: &[std::net::IpAddr],
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
    extra: Option<u32>,
    dup: bool,
) {
    if let Some(e) = extra {
        meta.extend_from_slice(&id.to_le_bytes());
        for s in extras[e as usize].0 {
            meta.extend_from_slice(&s.to_le_bytes());
        }
    }
    debug_assert_eq!(meta.len() % META_LEN, 0);
    rules.extend_from_slice(&row_word(line, action, extra.is_some(), dup).to_le_bytes());
    rules.extend_from_slice(&file.to_le_bytes());
    debug_assert_eq!(rules.len() % RULE_LEN, 0);
}
