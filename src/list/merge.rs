//! Folding an incremental reload's layer into a new flat snapshot.
//!
//! A layered snapshot (`Snapshot::with_layer`) is enforced the moment an
//! incremental reload has diffed the pushed file; this merge then rebuilds
//! one blob from the base's fst and the overlay's fst, both already sorted,
//! in one streaming pass: no list text is parsed and no rule is held in
//! memory as a `Rule`, so a reload of a million names needs about one more
//! blob's worth of memory, not the full compile's parse tree.

use std::fs;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use fst::Streamer;

use super::SnapshotError;
use super::bloom;
use super::compile::{CompileError, header_for};
use super::snapshot::{
    DUP_BIT, HEADER_LEN, Layer, MAX_LINE, META_BIT, META_LEN, NO_STRING, RULE_LEN, SEC_EXTRA,
    SEC_FILES, SEC_STRINGS, Snapshot,
};

/// Which input a merged rule comes from.
#[derive(Clone, Copy)]
enum Side {
    Base,
    Overlay,
}

/// Merge `snap`'s layer into a new flat snapshot with the same version,
/// counts and answers, in memory (tests compare it with a full compile;
/// the server merges to a file with [`flatten_to`]). A snapshot without a
/// layer is copied.
#[cfg(test)]
pub(crate) fn flatten(snap: &Snapshot) -> Result<Snapshot, CompileError> {
    let merged = merge(snap, Vec::with_capacity(snap.fst_len() + 4096))?;
    let rest = merged.rest(snap);
    let sections = [
        merged.fst.as_slice(),
        rest[0],
        rest[1],
        rest[2],
        rest[3],
        rest[4],
        rest[5],
    ];
    let blob = super::compile::assemble(&sections, snap.version(), snap.counts());
    Ok(Snapshot::from_blob(blob, "merged snapshot")?)
}

/// As [`flatten`], written to `path` (temp file, fsync, rename) and
/// memory-mapped from there. The fst streams straight into the file, so the
/// merge holds only the rule table and filter in memory, and the mapping is
/// not read through for a checksum (it was computed while writing): pages
/// come in as lookups need them.
pub(crate) fn flatten_to(snap: &Snapshot, path: &Path) -> Result<Snapshot, CompileError> {
    let io = |source| {
        CompileError::Snapshot(SnapshotError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let tmp = path.with_extension("tmp");
    let file = fs::File::create(&tmp).map_err(io)?;
    let mut out = CrcWriter {
        inner: BufWriter::with_capacity(256 << 10, file),
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    // Room for the header, written last.
    out.inner.write_all(&[0u8; HEADER_LEN]).map_err(io)?;
    let Merged {
        fst: mut out,
        rules,
        meta,
        strings,
        extra,
        filter,
    } = merge(snap, out)?;
    let fst_len = out.len;
    let rest = [
        rules.as_slice(),
        &meta,
        &strings,
        snap.section_bytes(SEC_FILES),
        &extra,
        &filter,
    ];
    for s in rest {
        out.write_all(s).map_err(io)?;
    }
    let mut lens = [fst_len, 0, 0, 0, 0, 0, 0];
    for (l, s) in lens[1..].iter_mut().zip(rest) {
        *l = s.len();
    }
    let head = header_for(
        lens,
        out.crc.clone().finalize(),
        snap.version(),
        snap.counts(),
    );
    let mut file = out.inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&head).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io)?;
    Ok(Snapshot::open_unverified(path)?)
}

/// Counts and checksums what passes through.
struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: usize,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A merge's fst (in whatever it was written to) and the other sections
/// that differ from the base's.
struct Merged<W> {
    fst: W,
    rules: Vec<u8>,
    meta: Vec<u8>,
    strings: Vec<u8>,
    extra: Vec<u8>,
    filter: Vec<u8>,
}

#[cfg(test)]
impl<W> Merged<W> {
    /// Every section after the fst, in layout order.
    fn rest<'a>(&'a self, base: &'a Snapshot) -> [&'a [u8]; super::snapshot::SECTIONS - 1] {
        [
            &self.rules,
            &self.meta,
            &self.strings,
            base.section_bytes(SEC_FILES),
            &self.extra,
            &self.filter,
        ]
    }
}

fn merge<W: Write>(snap: &Snapshot, fst_out: W) -> Result<Merged<W>, CompileError> {
    let empty;
    let layer: &Layer = match snap.layer() {
        Some(l) => l,
        None => {
            empty = Layer {
                overlay: super::compile(&[])?,
                tombstones: Vec::new(),
                remap: Vec::new(),
                base_rows: snap.row_count() as u32,
                rules: Vec::new(),
            };
            &empty
        }
    };
    let over = &layer.overlay;
    let base_strings = snap.section_bytes(SEC_STRINGS);
    let shift = u32::try_from(base_strings.len())
        .map_err(|_| CompileError::TooManyRules(base_strings.len()))?;
    let mut strings =
        Vec::with_capacity(base_strings.len() + over.section_bytes(SEC_STRINGS).len());
    strings.extend_from_slice(base_strings);
    strings.extend_from_slice(over.section_bytes(SEC_STRINGS));

    let names = snap.name_rule_count();
    let mut builder = fst::MapBuilder::new(fst_out)?;
    let mut rules = Vec::with_capacity(snap.rule_count() * RULE_LEN);
    let mut meta = Vec::new();
    let mut filter = vec![0u8; bloom::size_for(names)];
    let mut last_name: Vec<u8> = Vec::new();
    let mut next: u32 = 0;

    // A search in the runs per row: a table per file would be faster but
    // costs 4 bytes per line while the merge already holds the rule table.
    let line_of = |file: u16, line: u32| -> u32 {
        layer
            .remap
            .get(file as usize)
            .map_or(line, |m| m.map(line))
            .min(MAX_LINE)
    };
    let mut emit = |key: &[u8],
                    side: Side,
                    ord: u32,
                    builder: &mut fst::MapBuilder<W>|
     -> Result<(), CompileError> {
        builder.insert(key, u64::from(next))?;
        let (src, row_ord) = match side {
            Side::Base => (snap, ord),
            Side::Overlay => (over, ord),
        };
        push_row(
            &mut rules, &mut meta, src, row_ord, next, side, shift, &line_of,
        );
        // One filter key per distinct name (a name may carry several scopes).
        let name = &key[..key.len().saturating_sub(1)];
        if next == 0 || name != last_name.as_slice() {
            bloom::insert(&mut filter, bloom::key_hash(name));
            last_name.clear();
            last_name.extend_from_slice(name);
        }
        next += 1;
        Ok(())
    };

    let mut a = snap.fst().stream();
    let mut b = over.fst().stream();
    let mut ka: Option<(Vec<u8>, u32)> = a.next().map(|(k, v)| (k.to_vec(), v.value() as u32));
    let mut kb: Option<(Vec<u8>, u32)> = b.next().map(|(k, v)| (k.to_vec(), v.value() as u32));
    loop {
        let take_base = match (&ka, &kb) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            // Equal keys cannot meet (the reload tombstones a replaced base
            // rule); if they did, the overlay's newer rule is the one to keep.
            (Some((x, _)), Some((y, _))) => x < y,
        };
        if take_base {
            if let Some((k, ord)) = ka.take() {
                if layer.tombstones.binary_search(&ord).is_err() {
                    emit(&k, Side::Base, ord, &mut builder)?;
                }
            }
            ka = a.next().map(|(k, v)| (k.to_vec(), v.value() as u32));
        } else {
            if let Some((k, ord)) = kb.take() {
                if ka.as_ref().is_some_and(|(x, _)| *x == k) {
                    // Drop the base rule with the same key.
                    ka = a.next().map(|(k, v)| (k.to_vec(), v.value() as u32));
                }
                emit(&k, Side::Overlay, ord, &mut builder)?;
            }
            kb = b.next().map(|(k, v)| (k.to_vec(), v.value() as u32));
        }
    }
    let fst_bytes = builder.into_inner()?;
    let fst_rules = next;

    // Keyword rules follow the name rules; only the base has them (an
    // incremental reload never adds or removes one).
    let base_extra = snap.section_bytes(SEC_EXTRA);
    let mut extra = base_extra.to_vec();
    let keywords = base_extra
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    for i in 0..keywords as usize {
        let at = 4 + i * 8;
        let Some(old) = base_extra
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        else {
            break;
        };
        let new_id = fst_rules + (old - snap.fst_rule_count());
        push_row(
            &mut rules,
            &mut meta,
            snap,
            old,
            new_id,
            Side::Base,
            shift,
            &line_of,
        );
        extra[at..at + 4].copy_from_slice(&new_id.to_le_bytes());
    }
    debug_assert_eq!(rules.len() / RULE_LEN, snap.rule_count());

    Ok(Merged {
        fst: fst_bytes,
        rules,
        meta,
        strings,
        extra,
        filter,
    })
}

/// Copy rule `ord` of `src` as rule `id`, its line moved by `line_of`, its
/// meta row renumbered and (for the overlay) its strings relocated.
#[allow(clippy::too_many_arguments)]
fn push_row(
    rules: &mut Vec<u8>,
    meta: &mut Vec<u8>,
    src: &Snapshot,
    ord: u32,
    id: u32,
    side: Side,
    shift: u32,
    line_of: &dyn Fn(u16, u32) -> u32,
) {
    let (word, file) = src.row_parts(ord);
    let word = match side {
        Side::Base => (word & !MAX_LINE) | line_of(file, word & MAX_LINE),
        Side::Overlay => word,
    };
    debug_assert_eq!(word & DUP_BIT & MAX_LINE, 0);
    if word & META_BIT != 0
        && let Some(row) = src.meta_bytes(ord)
    {
        meta.extend_from_slice(&id.to_le_bytes());
        for f in 0..(META_LEN - 4) / 4 {
            let at = 4 + f * 4;
            let mut off = u32::from_le_bytes([row[at], row[at + 1], row[at + 2], row[at + 3]]);
            if matches!(side, Side::Overlay) && off != NO_STRING {
                off += shift;
            }
            meta.extend_from_slice(&off.to_le_bytes());
        }
    }
    rules.extend_from_slice(&word.to_le_bytes());
    rules.extend_from_slice(&file.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::list::parse::parse_bytes;
    use crate::list::url::NormUrl;
    use crate::list::{Format, ListOptions, RuleMeta};

    fn registry(rows: &str) -> crate::list::ParsedList {
        let opts = ListOptions {
            format: Some(Format::Csv),
            ..ListOptions::default()
        };
        let text = format!("id;domain;url;decision;includeTime\n{rows}");
        let p = parse_bytes(Path::new("reg.csv"), text.as_bytes(), &opts);
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        p
    }

    /// (entry, included, decision) of the rule that blocks `name`.
    fn quoted(snap: &Snapshot, name: &str) -> Option<(String, String, String)> {
        let m = snap.lookup(name.as_bytes())?;
        let RuleMeta {
            entry,
            included,
            decision,
            ..
        } = snap.rule(m.rule).meta();
        Some((entry?, included?, decision?))
    }

    fn row(entry: &str, included: &str, decision: &str) -> Option<(String, String, String)> {
        Some((entry.into(), included.into(), decision.into()))
    }

    /// A layer's overlay has its own strings: merged, its meta rows point
    /// at them moved behind the base's, and every field survives, the
    /// registry entry and its inclusion time included, through a save and
    /// a checksummed open.
    #[test]
    fn provenance_survives_a_layer_and_its_merge() {
        let base = super::super::compile(&[registry(
            "1;a.example;;D-1;2026-11-01T00:00:01\n\
             2;b.example;;D-2;2026-11-01T00:00:02\n\
             5;;http://u.example/page;D-5;2026-11-01T00:00:05\n",
        )])
        .expect("compile");
        // b.example leaves; c.example comes with a string the base lacks.
        let overlay =
            super::super::compile(&[registry("\n\n\n3;c.example;;D-3;2026-12-02T09:00:03\n")])
                .expect("compile");
        let b = base.lookup(b"b.example").expect("b").rule.0;
        let layer = Layer {
            overlay,
            tombstones: vec![b],
            remap: Vec::new(),
            base_rows: base.row_count() as u32,
            rules: Vec::new(),
        };
        let layered = base.with_layer(layer, 2, base.counts());
        let want = |snap: &Snapshot| {
            assert_eq!(
                quoted(snap, "a.example"),
                row("1", "2026-11-01T00:00:01", "D-1")
            );
            assert_eq!(quoted(snap, "b.example"), None);
            assert_eq!(
                quoted(snap, "c.example"),
                row("3", "2026-12-02T09:00:03", "D-3")
            );
            let url = NormUrl::parse("http://u.example/page").expect("url");
            let u = snap.match_url(&url).expect("URL rule");
            assert_eq!(
                (u.entry(), u.included(), u.decision()),
                (Some("5"), Some("2026-11-01T00:00:05"), Some("D-5"))
            );
        };
        want(&layered);
        want(&flatten(&layered).expect("flatten"));

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("merged.snapshot");
        flatten_to(&layered, &path).expect("flatten_to");
        want(&Snapshot::open(&path).expect("checksummed open"));
    }
}
