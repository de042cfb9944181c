//! Where a followed zone lives on disk (the non-file source convention):
//! the enforced zone as RPZ text at `STATE_DIR/sources/ZONE.rpz`, parsed
//! by the list pipeline like any list file, and its serial and metadata
//! at `STATE_DIR/rpz/ZONE.json` (never in `sources/`, where every file is
//! read as a list). Every write is a temporary file in the same directory,
//! fsynced, then renamed; the previous zone is kept as `ZONE.rpz.prev`
//! until the reload that puts the new one in force succeeds.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::fold::{ApplyError, Delta, NetChange, Soa};
use super::journal;

/// The first line of every zone file: says what the file is and where its
/// serial is (the serial itself is not here, so the line never changes
/// and an IXFR diffs to exactly its records).
pub fn header(zone: &str) -> String {
    format!("; RPZ zone {zone} followed from its primaries; serial and source in rpz/{zone}.json\n")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneMeta {
    pub zone: String,
    pub soa: Soa,
    pub records: u64,
    /// Of the zone file; a mismatch at start means it is not the one the
    /// serial describes (a crash between the two writes): AXFR again.
    pub sha256: String,
    pub primary: String,
    /// `axfr` or `ixfr`.
    pub kind: String,
    pub signed: bool,
    pub transferred_unix: u64,
    /// The last time a primary was reached (a transfer or an SOA check);
    /// the SOA expire counts from here.
    #[serde(default)]
    pub refreshed_unix: u64,
    /// The number the next added record line takes: the zone file's lines
    /// plus the journal's added lines, plus one (0: not known yet, counted
    /// at start).
    #[serde(default)]
    pub next_line: u64,
    /// The serial the zone file itself holds when the journal
    /// (`rpz/ZONE.journal`) takes it on to `soa.serial`; `None`: no
    /// journal, the file is at `soa.serial`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_serial: Option<u32>,
    /// Record lines (removed and added) in the journal.
    #[serde(default)]
    pub journal_lines: u64,
}

#[derive(Clone, Debug)]
pub struct ZoneFiles {
    pub source: PathBuf,
    pub prev: PathBuf,
    pub tmp: PathBuf,
    pub meta: PathBuf,
    /// Changes applied since the zone file was written (`journal.rs`).
    pub journal: PathBuf,
}

impl ZoneFiles {
    pub fn new(state_dir: &Path, zone: &str) -> ZoneFiles {
        let sources = state_dir.join("sources");
        ZoneFiles {
            source: sources.join(format!("{zone}.rpz")),
            prev: sources.join(format!("{zone}.rpz.prev")),
            // A leading dot: the list pipeline never reads it.
            tmp: sources.join(format!(".{zone}.rpz.tmp")),
            meta: state_dir.join("rpz").join(format!("{zone}.json")),
            journal: state_dir.join("rpz").join(format!("{zone}.journal")),
        }
    }

    pub fn create_dirs(&self) -> std::io::Result<()> {
        for p in [&self.source, &self.meta] {
            if let Some(d) = p.parent() {
                fs::create_dir_all(d)?;
            }
        }
        Ok(())
    }

    /// The persisted zone, if its file is the one the metadata describes.
    pub fn load(&self) -> Option<ZoneMeta> {
        let text = fs::read_to_string(&self.meta).ok()?;
        let meta: ZoneMeta = match serde_json::from_str(&text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(path = %self.meta.display(), error = %e, "unreadable zone metadata; transferring the whole zone");
                return None;
            }
        };
        match sha256_file(&self.source) {
            Ok(sum) if sum == meta.sha256 => Some(meta),
            Ok(_) => {
                tracing::warn!(zone = %meta.zone, "the zone file does not match its serial; transferring the whole zone");
                None
            }
            Err(_) => None,
        }
    }

    pub fn save_meta(&self, meta: &ZoneMeta) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(meta).map_err(std::io::Error::other)?;
        write_atomic(&self.meta, text.as_bytes())
    }

    /// Put the finished temporary file in place, keeping the old one as
    /// `prev` (a hard link: no copy of a large zone).
    pub fn install_tmp(&self) -> std::io::Result<()> {
        File::open(&self.tmp)?.sync_all()?;
        let _ = fs::remove_file(&self.prev);
        if self.source.exists() {
            fs::hard_link(&self.source, &self.prev)?;
        }
        fs::rename(&self.tmp, &self.source)?;
        sync_dir(&self.source)
    }

    /// The new zone was not accepted: the previous one comes back (or, on
    /// a first transfer, the file goes).
    pub fn restore_prev(&self) -> std::io::Result<()> {
        if self.prev.exists() {
            fs::rename(&self.prev, &self.source)?;
        } else {
            let _ = fs::remove_file(&self.source);
        }
        sync_dir(&self.source)
    }

    pub fn drop_prev(&self) {
        let _ = fs::remove_file(&self.prev);
    }
}

/// A followed zone on disk as the follower and the list reloader share it:
/// the zone file, its journal and its metadata, changed only under the
/// reload lock (`Reloader::apply_source_change`, `adopt_source`,
/// `with_reloads_held` or a `before_full_reload` hook), so that a full
/// reload never reads the zone file without the journal's changes.
#[derive(Debug)]
pub struct ZoneDisk {
    pub files: ZoneFiles,
    meta: Mutex<Option<ZoneMeta>>,
}

/// Why the journal could not be folded into the zone file.
#[derive(Debug, Error)]
pub enum CompactError {
    #[error("the journal does not take serial {from} to {to}")]
    Chain { from: u32, to: u32 },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ZoneDisk {
    /// The saved zone, if its file is the one its metadata describes and
    /// its journal reaches the saved serial; else nothing (a whole-zone
    /// transfer follows).
    pub fn open(files: ZoneFiles) -> ZoneDisk {
        let mut meta = files.load();
        if let Some(m) = &mut meta {
            match m.file_serial {
                // A journal left by a crash after it was folded in.
                None => {
                    if let Err(e) = journal::clear(&files.journal) {
                        tracing::warn!(zone = %m.zone, error = %e, "cannot remove a folded zone journal");
                    }
                }
                Some(from) => {
                    if let Err(e) = pending_change(&files, from, m.soa.serial) {
                        tracing::warn!(zone = %m.zone, error = %e, "the zone journal is unusable; transferring the whole zone");
                        meta = None;
                    }
                }
            }
        }
        if let Some(m) = meta.as_mut().filter(|m| m.next_line == 0) {
            match count_lines(&files.source) {
                Ok(n) => m.next_line = n + 1 + m.journal_lines,
                Err(_) => meta = None,
            }
        }
        ZoneDisk {
            files,
            meta: Mutex::new(meta),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ZoneMeta>> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn meta(&self) -> Option<ZoneMeta> {
        self.lock().clone()
    }

    /// Save `meta` and keep it as the zone's.
    pub fn set_meta(&self, meta: ZoneMeta) -> std::io::Result<()> {
        self.files.save_meta(&meta)?;
        *self.lock() = Some(meta);
        Ok(())
    }

    /// Changes wait in the journal.
    pub fn has_journal(&self) -> bool {
        self.lock()
            .as_ref()
            .is_some_and(|m| m.file_serial.is_some())
    }

    /// Record an IXFR enforced as a layer: its change goes to the journal
    /// (fsynced), then `meta`, which names the new serial, is saved.
    pub fn append(&self, from: u32, change: &NetChange, meta: ZoneMeta) -> std::io::Result<()> {
        journal::append(&self.files.journal, from, meta.soa.serial, change)?;
        self.set_meta(meta)
    }

    /// Fold the journal into the zone file, keeping every line's number
    /// (see [`journal::rewrite`]); the new file's SHA-256 and length, or
    /// `None` when there was no journal. On an error the zone's copy is
    /// given up (metadata removed): the next refresh transfers it whole.
    pub fn compact(&self) -> Result<Option<(String, u64)>, CompactError> {
        let mut guard = self.lock();
        let Some(meta) = guard.clone() else {
            return Ok(None);
        };
        let Some(from) = meta.file_serial else {
            return Ok(None);
        };
        let result = self.fold_in(&meta, from);
        match result {
            Ok((sum, bytes, written)) => {
                let meta = ZoneMeta {
                    sha256: sum.clone(),
                    records: written.records,
                    next_line: written.lines + 1,
                    file_serial: None,
                    journal_lines: 0,
                    ..meta
                };
                self.files.save_meta(&meta)?;
                *guard = Some(meta);
                journal::clear(&self.files.journal)?;
                Ok(Some((sum, bytes)))
            }
            Err(e) => {
                tracing::error!(zone = %meta.zone, error = %e, "cannot fold the zone journal into the zone file; transferring the whole zone");
                let _ = std::fs::remove_file(&self.files.tmp);
                let _ = std::fs::remove_file(&self.files.meta);
                *guard = None;
                Err(e)
            }
        }
    }

    fn fold_in(
        &self,
        meta: &ZoneMeta,
        from: u32,
    ) -> Result<(String, u64, journal::Rewritten), CompactError> {
        let entries = pending_change(&self.files, from, meta.soa.serial)?;
        let old = BufReader::with_capacity(256 << 10, File::open(&self.files.source)?);
        let mut out = HashingWriter::new(BufWriter::with_capacity(
            256 << 10,
            File::create(&self.files.tmp)?,
        ));
        let written = journal::rewrite(old, &mut out, &entries)?;
        out.flush()?;
        let (w, sum) = out.finish();
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        fs::rename(&self.files.tmp, &self.files.source)?;
        sync_dir(&self.files.source)?;
        Ok((sum, bytes, written))
    }
}

/// The journal's entries from serial `from` (the zone file's) to `to`
/// (the zone's); entries past `to` (appended, then a crash before the
/// metadata named them) are left out.
fn pending_change(files: &ZoneFiles, from: u32, to: u32) -> Result<Vec<Delta>, CompactError> {
    let entries = journal::read(&files.journal)?;
    let mut at = from;
    let mut used = 0;
    for e in &entries {
        if at == to || e.from != at {
            break;
        }
        at = e.to;
        used += 1;
    }
    if at != to {
        return Err(CompactError::Chain { from, to });
    }
    let mut entries = entries;
    entries.truncate(used);
    Ok(entries)
}

fn count_lines(path: &Path) -> std::io::Result<u64> {
    let mut r = BufReader::with_capacity(256 << 10, File::open(path)?);
    let mut n = 0u64;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(n);
        }
        n += memchr::memchr_iter(b'\n', buf).count() as u64;
        let len = buf.len();
        r.consume(len);
    }
}

/// A writer that hashes what goes through it, so a zone file's SHA-256 is
/// known when it is written, without reading a large file back.
pub struct HashingWriter<W: Write> {
    inner: W,
    sha: Sha256,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            sha: Sha256::new(),
        }
    }

    /// The writer and the hex SHA-256 of everything written.
    pub fn finish(self) -> (W, String) {
        (self.inner, hex::encode(self.sha.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut r = BufReader::with_capacity(256 << 10, File::open(path)?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(d) => File::open(d)?.sync_all(),
        None => Ok(()),
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(sha256: String) -> ZoneMeta {
        ZoneMeta {
            zone: "rpz.test".into(),
            soa: Soa {
                serial: 7,
                refresh: 60,
                retry: 10,
                expire: 600,
                minimum: 5,
            },
            records: 1,
            sha256,
            primary: "127.0.0.1:53".into(),
            kind: "axfr".into(),
            signed: true,
            transferred_unix: 1,
            refreshed_unix: 1,
            next_line: 2,
            file_serial: None,
            journal_lines: 0,
        }
    }

    #[test]
    fn hashing_writer_matches_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("z");
        let mut w = HashingWriter::new(std::io::BufWriter::new(File::create(&p).unwrap()));
        for i in 0..10_000 {
            writeln!(w, "n{i}.example CNAME .").unwrap();
        }
        w.flush().unwrap();
        let (_, sum) = w.finish();
        assert_eq!(sum, sha256_file(&p).unwrap());
    }

    #[test]
    fn install_restore_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let f = ZoneFiles::new(dir.path(), "rpz.test");
        f.create_dirs().unwrap();
        assert!(f.load().is_none());
        fs::write(&f.tmp, "a CNAME .\n").unwrap();
        f.install_tmp().unwrap();
        assert!(!f.prev.exists());
        let m = meta(sha256_file(&f.source).unwrap());
        f.save_meta(&m).unwrap();
        assert_eq!(f.load(), Some(m.clone()));

        fs::write(&f.tmp, "b CNAME .\n").unwrap();
        f.install_tmp().unwrap();
        assert_eq!(fs::read_to_string(&f.prev).unwrap(), "a CNAME .\n");
        // The metadata no longer describes the file.
        assert!(f.load().is_none());
        f.restore_prev().unwrap();
        assert_eq!(fs::read_to_string(&f.source).unwrap(), "a CNAME .\n");
        assert_eq!(f.load(), Some(m));
        // Only the zone file is left where lists are read.
        let names: Vec<_> = fs::read_dir(dir.path().join("sources"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["rpz.test.rpz".to_string()]);
    }
}
