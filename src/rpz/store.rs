//! Where a followed zone lives on disk (the non-file source convention):
//! the enforced zone as RPZ text at `STATE_DIR/sources/ZONE.rpz`, parsed
//! by the list pipeline like any list file, and its serial and metadata
//! at `STATE_DIR/rpz/ZONE.json` (never in `sources/`, where every file is
//! read as a list). Every write is a temporary file in the same directory,
//! fsynced, then renamed; the previous zone is kept as `ZONE.rpz.prev`
//! until the reload that puts the new one in force succeeds.

use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fold::Soa;

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
}

#[derive(Clone, Debug)]
pub struct ZoneFiles {
    pub source: PathBuf,
    pub prev: PathBuf,
    pub tmp: PathBuf,
    pub meta: PathBuf,
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
        }
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
