//! Keeping the enforced snapshot current: watch the list files, re-parse
//! and compile off the query path, check the guards, persist the accepted
//! version as the "last good" snapshot, and swap it in atomically.
//!
//! Queries hold an `Arc<Snapshot>` for as long as they need it, so a swap
//! never waits for them and they finish on the version they started with.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::load::{LoadError, load_with};
use super::parse;
use super::{Counts, ListOptions, Snapshot, SnapshotError, diff};

/// How reloads behave; `[lists]` in the configuration.
#[derive(Clone)]
pub struct ReloadSettings {
    pub paths: Vec<PathBuf>,
    /// List options per file (format, action, exact-only).
    pub options: Arc<dyn Fn(&Path) -> ListOptions + Send + Sync>,
    /// Reject a list set whose skipped lines exceed this share of all lines with content.
    pub max_skipped_ratio: f64,
    /// Reject a list set that shrinks by more than this fraction against the version in force.
    pub max_shrink_ratio: f64,
    /// Where the last good snapshot and its manifest are kept (None: not persisted).
    pub state_dir: Option<PathBuf>,
    /// Quiet time after the last file event before a reload starts.
    pub debounce: Duration,
    /// A file must keep the same size and mtime for this long before it is read.
    pub settle: Duration,
}

impl std::fmt::Debug for ReloadSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadSettings")
            .field("paths", &self.paths)
            .field("max_skipped_ratio", &self.max_skipped_ratio)
            .field("max_shrink_ratio", &self.max_shrink_ratio)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl Default for ReloadSettings {
    fn default() -> Self {
        ReloadSettings {
            paths: Vec::new(),
            options: Arc::new(|_| ListOptions::default()),
            max_skipped_ratio: 0.10,
            max_shrink_ratio: 0.50,
            state_dir: None,
            debounce: Duration::from_millis(150),
            settle: Duration::from_millis(100),
        }
    }
}

/// Why a reload did not take effect. The version in force keeps serving.
#[derive(Debug, Error)]
pub enum ReloadError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(
        "rejected: {skipped} of {total} lines skipped ({pct:.1}% > {limit:.1}% allowed); first: {first}"
    )]
    TooManySkipped {
        skipped: usize,
        total: usize,
        pct: f64,
        limit: f64,
        first: String,
    },
    #[error(
        "rejected: the lists shrink from {old} to {new} rules ({pct:.1}% fewer > {limit:.1}% allowed); use `sinkhole reload --force` if intended"
    )]
    Shrunk {
        old: usize,
        new: usize,
        pct: f64,
        limit: f64,
    },
    #[error("files are still being written: {0}")]
    Unsettled(String),
    #[error("saving the last good snapshot: {0}")]
    Persist(String),
    #[error("no usable lists and no last good snapshot: {0}")]
    NothingToServe(String),
}

impl ReloadError {
    /// A short label for metrics (`reason` label).
    pub fn reason(&self) -> &'static str {
        match self {
            ReloadError::Load(LoadError::Parse(_)) | ReloadError::Load(LoadError::NoFiles(_)) => {
                "io"
            }
            ReloadError::Load(_) => "compile",
            ReloadError::TooManySkipped { .. } => "skipped_ratio",
            ReloadError::Shrunk { .. } => "shrink",
            ReloadError::Unsettled(_) => "unsettled",
            ReloadError::Persist(_) => "persist",
            ReloadError::NothingToServe(_) => "nothing_to_serve",
        }
    }
}

/// What an accepted reload did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReloadReport {
    pub version: u64,
    pub counts: Counts,
    pub rules: usize,
    pub added: usize,
    pub removed: usize,
    pub skipped: Vec<String>,
    pub took_ms: u64,
    pub forced: bool,
}

/// The manifest stored next to the last good snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u64,
    pub created_unix: u64,
    pub files: Vec<ManifestFile>,
    pub counts: Counts,
    pub rules: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    /// The list options the file was read with (format, action, scope).
    pub options: String,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct ReloadStats {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub last_success_unix: AtomicU64,
    pub last_failure_reason: Mutex<Option<&'static str>>,
    pub failures_by_reason: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

/// The owner of the enforced snapshot.
pub struct Reloader {
    settings: ReloadSettings,
    current: Arc<ArcSwap<Snapshot>>,
    /// Serialises reloads; the query path never takes it.
    busy: Mutex<()>,
    pub stats: ReloadStats,
}

/// How the server started.
#[derive(Debug)]
pub enum StartSource {
    /// No last good snapshot: the lists were loaded now.
    Lists(ReloadReport),
    /// The last good snapshot, and the list files are as when it was saved.
    LastGoodCurrent { version: u64 },
    /// The last good snapshot; the list files changed since (or are gone):
    /// run [`Reloader::catch_up`].
    LastGoodStale { version: u64 },
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn total_rules(c: &Counts) -> usize {
    c.names + c.wildcards + c.allows + c.keywords
}

impl Reloader {
    /// Load at start. With a last good snapshot in `state_dir` it is put
    /// in force at once (memory-mapped, nothing parsed): if the list files
    /// are unchanged since it was saved that is all
    /// ([`StartSource::LastGoodCurrent`]); if they changed, the caller
    /// should run [`Reloader::catch_up`] in the background
    /// ([`StartSource::LastGoodStale`]), which applies them through the
    /// usual guards or, if they are unusable, logs loudly that the last good
    /// version keeps serving. Without a last good snapshot the lists are
    /// loaded now and must load.
    pub fn start(settings: ReloadSettings) -> Result<(Arc<Reloader>, StartSource), ReloadError> {
        let last_good = settings
            .state_dir
            .as_deref()
            .and_then(|d| match open_last_good(d) {
                Ok(found) => Some(found),
                Err(SnapshotError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    None
                }
                Err(e) => {
                    tracing::error!(error = %e, "last good snapshot unusable; loading the lists");
                    None
                }
            });
        if let Some((snap, manifest)) = last_good {
            let version = snap.version();
            let current = manifest_matches(&manifest, &settings);
            let reloader = Reloader::with_snapshot(settings, snap);
            let source = if current {
                StartSource::LastGoodCurrent { version }
            } else {
                StartSource::LastGoodStale { version }
            };
            return Ok((reloader, source));
        }
        let empty = super::compile(&[]).map_err(|e| ReloadError::NothingToServe(e.to_string()))?;
        let reloader = Reloader::with_snapshot(settings, empty);
        match reloader.reload_inner(false, false, 0) {
            Ok(report) => Ok((reloader, StartSource::Lists(report))),
            Err(e) => Err(ReloadError::NothingToServe(e.to_string())),
        }
    }

    fn with_snapshot(settings: ReloadSettings, snap: Snapshot) -> Arc<Reloader> {
        Arc::new(Reloader {
            settings,
            current: Arc::new(ArcSwap::from_pointee(snap)),
            busy: Mutex::new(()),
            stats: ReloadStats::default(),
        })
    }

    /// After a [`StartSource::LastGoodStale`] start: apply the changed lists,
    /// or say loudly that the last good version keeps serving.
    pub fn catch_up(&self) -> Result<ReloadReport, ReloadError> {
        let result = self.reload(false);
        if let Err(e) = &result {
            tracing::error!(
                error = %e,
                version = self.current().version(),
                "list files unusable at start; SERVING THE LAST GOOD SNAPSHOT"
            );
        }
        result
    }

    /// The shared handle queries read from.
    pub fn handle(&self) -> Arc<ArcSwap<Snapshot>> {
        self.current.clone()
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn settings(&self) -> &ReloadSettings {
        &self.settings
    }

    /// Re-read the lists now. `force` skips the guards.
    pub fn reload(&self, force: bool) -> Result<ReloadReport, ReloadError> {
        let base = self.current.load().version();
        self.reload_inner(force, true, base)
    }

    fn reload_inner(
        &self,
        force: bool,
        guard: bool,
        base_version: u64,
    ) -> Result<ReloadReport, ReloadError> {
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let result = self.build(force, guard, base_version, started);
        // The parsed text and the old snapshot are gone now; hand the pages back.
        crate::memory::release_freed_memory();
        match &result {
            Ok(r) => {
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .last_success_unix
                    .store(now_unix(), Ordering::Relaxed);
                tracing::info!(
                    version = r.version,
                    rules = r.rules,
                    added = r.added,
                    removed = r.removed,
                    skipped = r.skipped.len(),
                    took_ms = r.took_ms,
                    forced = r.forced,
                    "lists reloaded"
                );
            }
            Err(e) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                *self
                    .stats
                    .last_failure_reason
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(e.reason());
                *self
                    .stats
                    .failures_by_reason
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(e.reason())
                    .or_default() += 1;
                tracing::warn!(error = %e, reason = e.reason(), "list reload rejected; previous version keeps serving");
            }
        }
        result
    }

    fn build(
        &self,
        force: bool,
        guard: bool,
        base_version: u64,
        started: Instant,
    ) -> Result<ReloadReport, ReloadError> {
        let s = &self.settings;
        wait_until_settled(&s.paths, s.settle)?;
        let version = base_version + 1;
        let loaded = load_with(&s.paths, &*s.options, version, false)?;
        let new_counts = loaded.counts();
        let old = self.current.load_full();
        if guard && !force {
            let lines = total_rules(&new_counts)
                + new_counts.urls
                + new_counts.ips
                + new_counts.rpz_other
                + new_counts.skipped;
            if lines > 0 {
                let ratio = new_counts.skipped as f64 / lines as f64;
                if ratio > s.max_skipped_ratio {
                    return Err(ReloadError::TooManySkipped {
                        skipped: new_counts.skipped,
                        total: lines,
                        pct: ratio * 100.0,
                        limit: s.max_skipped_ratio * 100.0,
                        first: loaded.skipped.first().cloned().unwrap_or_default(),
                    });
                }
            }
            let old_n = old.rule_count();
            let new_n = loaded.snapshot.rule_count();
            if old_n > 0 && (new_n as f64) < old_n as f64 * (1.0 - s.max_shrink_ratio) {
                return Err(ReloadError::Shrunk {
                    old: old_n,
                    new: new_n,
                    pct: (1.0 - new_n as f64 / old_n as f64) * 100.0,
                    limit: s.max_shrink_ratio * 100.0,
                });
            }
        }
        let changes = diff(&old, &loaded.snapshot);
        if let Some(dir) = &s.state_dir {
            save_last_good(dir, &loaded.snapshot, &s.paths, &*s.options, new_counts)
                .map_err(|e| ReloadError::Persist(e.to_string()))?;
        }
        let rules = loaded.snapshot.rule_count();
        self.current.store(Arc::new(loaded.snapshot));
        Ok(ReloadReport {
            version,
            counts: new_counts,
            rules,
            added: changes.added.len(),
            removed: changes.removed.len(),
            skipped: loaded.skipped,
            took_ms: started.elapsed().as_millis() as u64,
            forced: force,
        })
    }

    /// Watch every configured path (the directory of a file, so
    /// rename-over-old is seen) and reload after each burst of changes.
    /// For a configured file only events on that file count: other files
    /// in its directory (the server's own log, an editor's swap file) must
    /// not trigger reloads, or a log written next to the list would make
    /// every reload trigger the next one.
    /// The returned watcher must be kept alive.
    pub fn watch(self: &Arc<Self>) -> Result<notify::RecommendedWatcher, notify::Error> {
        use notify::{RecursiveMode, Watcher};
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let mut dirs: Vec<PathBuf> = Vec::new();
        // Directories whose every file is a list, and single list files.
        let mut list_dirs: Vec<PathBuf> = Vec::new();
        let mut list_files: Vec<PathBuf> = Vec::new();
        for p in &self.settings.paths {
            let dir = if p.is_dir() {
                list_dirs.push(abs(p));
                p.clone()
            } else {
                list_files.push(abs(p));
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            };
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        let relevant = move |paths: &[PathBuf]| {
            // No path (e.g. an overflow/rescan notice): reload to be safe.
            paths.is_empty()
                || paths.iter().any(|q| {
                    let q = abs(q);
                    list_files.contains(&q)
                        || q.parent().is_some_and(|d| list_dirs.iter().any(|l| l == d))
                        || list_dirs.contains(&q)
                })
        };
        let (tx, rx) = std::sync::mpsc::channel::<Instant>();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let Ok(ev) = res
                    && !matches!(ev.kind, notify::EventKind::Access(_))
                    && relevant(&ev.paths)
                {
                    let _ = tx.send(Instant::now());
                }
            })?;
        for dir in &dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("list-watch".into())
            .spawn(move || me.watch_loop(rx))
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(watcher)
    }

    fn watch_loop(&self, rx: std::sync::mpsc::Receiver<Instant>) {
        let debounce = self.settings.debounce;
        while let Ok(first) = rx.recv() {
            // Collect the burst: wait until no event for `debounce`.
            while rx.recv_timeout(debounce).is_ok() {}
            let mut attempts = 0;
            loop {
                match self.reload(false) {
                    Err(ReloadError::Unsettled(_)) if attempts < 50 => {
                        attempts += 1;
                        std::thread::sleep(self.settings.settle);
                    }
                    Ok(r) => {
                        tracing::info!(
                            version = r.version,
                            change_to_enforced_ms = first.elapsed().as_millis() as u64,
                            "file change enforced"
                        );
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

/// Stat every list file twice, `settle` apart; a file whose size or mtime
/// moves is still being written.
fn wait_until_settled(paths: &[PathBuf], settle: Duration) -> Result<(), ReloadError> {
    let stat = || -> Vec<(PathBuf, u64, Option<SystemTime>)> {
        parse::list_files(paths)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let m = fs::metadata(&p).ok();
                let len = m.as_ref().map_or(0, |m| m.len());
                let mtime = m.and_then(|m| m.modified().ok());
                (p, len, mtime)
            })
            .collect()
    };
    let before = stat();
    // A file modified within `settle` may still be growing: look again.
    let fresh = before.iter().any(|(_, _, t)| {
        t.and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < settle)
    });
    if !fresh {
        return Ok(());
    }
    std::thread::sleep(settle);
    let after = stat();
    if before != after {
        let moving: Vec<String> = after
            .iter()
            .filter(|a| !before.contains(a))
            .map(|a| a.0.display().to_string())
            .collect();
        return Err(ReloadError::Unsettled(moving.join(", ")));
    }
    Ok(())
}

const SNAPSHOT_FILE: &str = "last-good.snapshot";
const MANIFEST_FILE: &str = "last-good.json";

/// Fingerprint of one list file as the manifest records it.
fn manifest_file(path: &Path, options: &ListOptions) -> std::io::Result<ManifestFile> {
    let bytes = fs::read(path)?;
    Ok(ManifestFile {
        sha256: hex::encode(Sha256::digest(&bytes)),
        bytes: bytes.len() as u64,
        options: format!("{options:?}"),
        path: path.to_path_buf(),
    })
}

/// Are the list files (names, contents and options) the ones `manifest`
/// describes?
fn manifest_matches(manifest: &Manifest, settings: &ReloadSettings) -> bool {
    let Ok(files) = parse::list_files(&settings.paths) else {
        return false;
    };
    files.len() == manifest.files.len()
        && files.iter().zip(&manifest.files).all(|(path, want)| {
            // Cheap size check first: most changes change the size.
            fs::metadata(path).is_ok_and(|m| m.len() == want.bytes)
                && manifest_file(path, &(settings.options)(path)).is_ok_and(|got| got == *want)
        })
}

/// Save `snap` as the last good snapshot in `dir`, with a manifest of the
/// list files it was compiled from (written last, so a crash in between
/// leaves a manifest that does not match and the lists are re-read).
pub fn save_last_good(
    dir: &Path,
    snap: &Snapshot,
    paths: &[PathBuf],
    options: &(dyn Fn(&Path) -> ListOptions + Send + Sync),
    counts: Counts,
) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    snap.save(&dir.join(SNAPSHOT_FILE))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut files = Vec::new();
    for p in parse::list_files(paths).map_err(|e| std::io::Error::other(e.to_string()))? {
        files.push(manifest_file(&p, &options(&p))?);
    }
    let manifest = Manifest {
        version: snap.version(),
        created_unix: now_unix(),
        files,
        counts,
        rules: snap.rule_count(),
    };
    let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    serde_json::to_writer_pretty(&mut f, &manifest).map_err(std::io::Error::other)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    fs::rename(tmp, dir.join(MANIFEST_FILE))
}

/// Open the persisted last good snapshot and its manifest.
pub fn open_last_good(dir: &Path) -> Result<(Snapshot, Manifest), SnapshotError> {
    let snap = Snapshot::open(&dir.join(SNAPSHOT_FILE))?;
    let mpath = dir.join(MANIFEST_FILE);
    let text = fs::read_to_string(&mpath).map_err(|source| SnapshotError::Io {
        path: mpath.display().to_string(),
        source,
    })?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| SnapshotError::Corrupt {
        path: mpath.display().to_string(),
        what: e.to_string(),
    })?;
    Ok((snap, manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        // Write beside and rename over, as a ministry push does.
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text).expect("write");
        fs::rename(&tmp, path).expect("rename");
    }

    fn names(n: usize, prefix: &str) -> String {
        (0..n).map(|i| format!("{prefix}{i}.example\n")).collect()
    }

    fn settings(dir: &Path) -> ReloadSettings {
        ReloadSettings {
            paths: vec![dir.join("lists")],
            state_dir: Some(dir.join("state")),
            debounce: Duration::from_millis(50),
            settle: Duration::from_millis(20),
            ..ReloadSettings::default()
        }
    }

    fn blocked(r: &Reloader, name: &str) -> bool {
        r.current().lookup(name.as_bytes()).is_some()
    }

    #[test]
    fn guards_reject_and_keep_the_old_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("lists")).expect("mkdir");
        let list = dir.path().join("lists/gov.txt");
        write(&list, &names(100, "a"));
        let (r, src) = Reloader::start(settings(dir.path())).expect("start");
        assert!(matches!(src, StartSource::Lists(_)));
        assert_eq!(r.current().version(), 1);

        // Truncated push: 100 → 10 names is a 90% shrink.
        write(&list, &names(10, "a"));
        let err = r.reload(false).expect_err("shrink must be rejected");
        assert_eq!(err.reason(), "shrink");
        assert!(blocked(&r, "a50.example"), "old list keeps serving");
        assert_eq!(r.current().version(), 1);

        // Empty file: never silently unblocks everything.
        write(&list, "");
        assert!(r.reload(false).is_err());
        assert!(blocked(&r, "a50.example"));

        // Garbage: too many skipped lines.
        let garbage: String = names(100, "a") + &"bad line with spaces\n".repeat(30);
        write(&list, &garbage);
        let err = r.reload(false).expect_err("skip ratio");
        assert_eq!(err.reason(), "skipped_ratio");
        assert!(err.to_string().contains("gov.txt:101"), "{err}");

        // --force overrides the guard.
        write(&list, &names(10, "b"));
        let rep = r.reload(true).expect("forced");
        assert!(rep.forced);
        assert_eq!(rep.version, 2);
        assert_eq!((rep.added, rep.removed), (10, 100));
        assert!(blocked(&r, "b5.example"));
        assert!(!blocked(&r, "a50.example"));
        assert_eq!(r.stats.rejected.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn last_good_snapshot_serves_when_lists_are_unusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("lists")).expect("mkdir");
        let list = dir.path().join("lists/gov.txt");
        write(&list, &names(50, "a"));
        {
            let (r, _) = Reloader::start(settings(dir.path())).expect("start");
            write(&list, &names(60, "a"));
            assert_eq!(r.reload(false).expect("reload").version, 2);
        }
        let (snap, manifest) = open_last_good(&dir.path().join("state")).expect("last good");
        assert_eq!((snap.version(), manifest.version), (2, 2));
        assert_eq!(manifest.files.len(), 1);
        assert_eq!(manifest.files[0].sha256.len(), 64);

        // Unchanged lists: the saved snapshot is used as is, nothing parsed.
        let (r, src) = Reloader::start(settings(dir.path())).expect("start");
        assert!(
            matches!(src, StartSource::LastGoodCurrent { version: 2 }),
            "{src:?}"
        );
        assert!(blocked(&r, "a55.example"));
        drop(r);

        // The list is truncated while the server is down: start on the last
        // good version at once; catching up is refused by the guard.
        write(&list, &names(3, "a"));
        let (r, src) = Reloader::start(settings(dir.path())).expect("start");
        assert!(
            matches!(src, StartSource::LastGoodStale { version: 2 }),
            "{src:?}"
        );
        assert!(blocked(&r, "a55.example"));
        assert_eq!(r.catch_up().expect_err("shrink").reason(), "shrink");
        assert!(blocked(&r, "a55.example"));
        drop(r);

        // Lists gone entirely: still the last good version.
        fs::remove_file(&list).expect("rm");
        let (r, src) = Reloader::start(settings(dir.path())).expect("start");
        assert!(matches!(src, StartSource::LastGoodStale { .. }));
        assert!(r.catch_up().is_err());
        assert!(blocked(&r, "a55.example"));
        drop(r);

        // A grown list (passes the guards) is applied by catch_up.
        write(&list, &names(70, "a"));
        let (r, _) = Reloader::start(settings(dir.path())).expect("start");
        assert_eq!(r.catch_up().expect("catch up").version, 3);
        assert!(blocked(&r, "a65.example"));

        // No last good snapshot and no lists: an error, not an empty resolver.
        let empty = tempfile::tempdir().expect("tempdir");
        assert!(Reloader::start(settings(empty.path())).is_err());
    }

    #[test]
    fn watcher_applies_a_renamed_file_and_a_new_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("lists")).expect("mkdir");
        let list = dir.path().join("lists/gov.txt");
        write(&list, &names(20, "a"));
        let (r, _) = Reloader::start(settings(dir.path())).expect("start");
        let _w = r.watch().expect("watch");
        let mut text = names(20, "a");
        text.push_str("new-name.example\n");
        let t0 = Instant::now();
        write(&list, &text);
        while !blocked(&r, "new-name.example") && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The one-second bound is asserted end to end in tests/reload.rs.
        assert!(blocked(&r, "www.new-name.example"));
        // A new file in the directory is picked up too.
        fs::write(dir.path().join("lists/extra.txt"), "extra.example\n").expect("write");
        let t0 = Instant::now();
        while !blocked(&r, "extra.example") && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(blocked(&r, "extra.example"));
    }

    #[test]
    fn watcher_ignores_other_files_beside_a_listed_file() {
        // A list given as a file shares its directory with other files (here
        // a log written on every reload): only the list file may trigger.
        let dir = tempfile::tempdir().expect("tempdir");
        let list = dir.path().join("gov.txt");
        write(&list, &names(20, "a"));
        let s = ReloadSettings {
            paths: vec![list.clone()],
            ..settings(dir.path())
        };
        let (r, _) = Reloader::start(s).expect("start");
        let _w = r.watch().expect("watch");
        let log = dir.path().join("server.log");
        for i in 0..10 {
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("open log");
            writeln!(f, "line {i}").expect("append");
            std::thread::sleep(Duration::from_millis(30));
        }
        fs::write(dir.path().join("other.txt"), "other.example\n").expect("write");
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(
            r.current().version(),
            1,
            "reloaded for a file that is not a list"
        );
        // The list itself, renamed over, still is.
        let mut text = names(20, "a");
        text.push_str("new-name.example\n");
        write(&list, &text);
        let t0 = Instant::now();
        while !blocked(&r, "new-name.example") && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(blocked(&r, "new-name.example"));
        assert_eq!(r.current().version(), 2);
    }
}
