//! Keeping the enforced snapshot current: re-read the lists off the query
//! path (every file through `load.rs`, or only the changed lines through
//! `delta.rs` with a background merge after), check the guards
//! (`guards.rs`), put the new version in force with one atomic swap
//! (`Reloader::swap`), and save it as the last good snapshot
//! (`state.rs`). When to reload is decided by the file watcher
//! (`watch.rs`), SIGHUP and the control socket.
//!
//! Queries hold an `Arc<Snapshot>` for as long as they need it, so a swap
//! never waits for them and they finish on the version they started with.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::delta::{self, Delta};
use super::guards::{self, Candidate, GuardError, Limits};
use super::load::{LoadError, Loaded, load};
use super::state::{ListState, SaveError};
use super::watch::wait_until_settled;
use super::{Counts, ListOptions, Snapshot, diff, merge};

/// A source's change as lines ([`Reloader::apply_source_change`]).
pub(crate) use super::delta::LineChange;
/// The saved state is `state.rs`'s; re-exported for callers of this path.
pub use super::state::{Manifest, ManifestFile, open_last_good};

/// The background merge's nice value: behind the query workers, but not so
/// far that a busy core never lets it finish.
const MERGE_NICE: libc::c_int = 10;

/// The largest overlay a reload stacks on before merging first.
fn max_layer_rules(rules: usize) -> usize {
    (rules / 20).max(50_000)
}

/// A push that changes more than this share of a file's lines is reloaded
/// in full: past it, diffing costs about as much as parsing.
const MAX_DELTA_RATIO: f64 = 0.25;

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
    /// Where non-file sources (pushed and pulled lists, followed RPZ zones)
    /// keep their current content, one file per list: read like a list
    /// directory, never watched (each source reloads through
    /// [`Reloader::reload_sources`] after writing its file). Metadata must
    /// live elsewhere, since every file here is parsed as a list.
    pub sources_dir: Option<PathBuf>,
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
            .field("sources_dir", &self.sources_dir)
            .finish_non_exhaustive()
    }
}

impl ReloadSettings {
    /// Every path a reload reads: the configured list paths, then the
    /// sources directory once it exists (the daemon creates it at start;
    /// a CLI reading the same configuration may run before that).
    pub fn list_paths(&self) -> Vec<PathBuf> {
        let mut paths = self.paths.clone();
        if let Some(dir) = self.sources_dir.as_ref().filter(|d| d.is_dir()) {
            paths.push(dir.clone());
        }
        paths
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
            sources_dir: None,
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
    #[error(transparent)]
    Guard(#[from] GuardError),
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
            ReloadError::Guard(GuardError::TooManySkipped { .. }) => "skipped_ratio",
            ReloadError::Guard(GuardError::Shrunk { .. }) => "shrink",
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
    /// From the start of the reload until the new version answered queries.
    #[serde(default)]
    pub enforced_ms: u64,
    /// Only the changed lines were parsed (see `delta.rs`).
    #[serde(default)]
    pub incremental: bool,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct ReloadStats {
    pub accepted: AtomicU64,
    /// Versions put in force that could not be saved as the last good one.
    pub persist_failures: AtomicU64,
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
    /// The last good snapshot and the copies incremental reloads diff against.
    state: ListState,
    /// A background merge is running.
    merging: AtomicBool,
    /// Told of every reload's outcome (see [`Reloader::on_reload`]).
    hook: std::sync::OnceLock<ReloadHook>,
    /// Run before a full reload reads the files (see
    /// [`Reloader::before_full_reload`]).
    before_full: Mutex<Vec<SourceHook>>,
}

/// What [`Reloader::on_reload`] is told after each reload.
pub struct ReloadEvent<'a> {
    /// Asked for by a non-file source ([`Reloader::reload_sources`]),
    /// which reports its own change; otherwise the file watcher, SIGHUP,
    /// `sinkhole reload` or the catch-up at start.
    pub for_source: bool,
    pub forced: bool,
    pub result: &'a Result<ReloadReport, ReloadError>,
}

/// A reload observer (the intake puts file-list changes on the record).
pub type ReloadHook = Box<dyn Fn(&ReloadEvent<'_>) + Send + Sync>;

/// A source's work on its own file that must come before a full reload
/// reads it (a followed zone writes its journal into its zone file).
pub type SourceHook = Box<dyn Fn() + Send + Sync>;

/// How a snapshot came to be put in force (see `Reloader::swap`).
#[derive(Clone, Copy, Debug)]
enum Swap {
    /// A full reload: every file parsed and compiled.
    Full,
    /// An incremental reload: the changes as a layer over the snapshot in force.
    Layer,
    /// A background merge folded the layer into a flat snapshot.
    Merged,
}

impl Swap {
    fn as_str(self) -> &'static str {
        match self {
            Swap::Full => "full",
            Swap::Layer => "incremental",
            Swap::Merged => "merged",
        }
    }
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
        let state = ListState::new(settings.state_dir.clone());
        let last_good = state.last_good().unwrap_or_else(|e| {
            tracing::error!(error = %e, "last good snapshot unusable; loading the lists");
            None
        });
        if let Some((snap, manifest)) = last_good {
            let version = snap.version();
            let source = if state.resume(
                version,
                &manifest,
                &settings.list_paths(),
                &*settings.options,
            ) {
                StartSource::LastGoodCurrent { version }
            } else {
                StartSource::LastGoodStale { version }
            };
            return Ok((Reloader::new(settings, state, snap), source));
        }
        let base_version = state.saved_version();
        let empty = super::compile(&[]).map_err(|e| ReloadError::NothingToServe(e.to_string()))?;
        let reloader = Reloader::new(settings, state, empty);
        match reloader.reload_inner(false, false, base_version, true) {
            Ok(report) => Ok((reloader, StartSource::Lists(report))),
            Err(e) => Err(ReloadError::NothingToServe(e.to_string())),
        }
    }

    fn new(settings: ReloadSettings, state: ListState, snap: Snapshot) -> Arc<Reloader> {
        Arc::new(Reloader {
            settings,
            current: Arc::new(ArcSwap::from_pointee(snap)),
            busy: Mutex::new(()),
            stats: ReloadStats::default(),
            state,
            merging: AtomicBool::new(false),
            hook: std::sync::OnceLock::new(),
            before_full: Mutex::new(Vec::new()),
        })
    }

    /// After a [`StartSource::LastGoodStale`] start: apply the changed lists,
    /// or say loudly that the last good version keeps serving.
    pub fn catch_up(self: &Arc<Self>) -> Result<ReloadReport, ReloadError> {
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

    /// Wait until no incremental reload is waiting to be merged and saved
    /// (tests, and a clean shutdown). False if `limit` passed first.
    pub fn wait_merged(&self, limit: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            let idle =
                !self.merging.load(Ordering::Acquire) && self.current.load().layer().is_none();
            if idle {
                return true;
            }
            if t0.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
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
    pub fn reload(self: &Arc<Self>, force: bool) -> Result<ReloadReport, ReloadError> {
        let base = self.current.load().version();
        self.reload_inner(force, true, base, true)
    }

    /// Re-read the lists now on behalf of a non-file source that has just
    /// renamed its new content into the sources directory: no settle wait
    /// (the rename is atomic), the same guards and incremental path as any
    /// reload. `force` skips the guards. On an error the version in force
    /// keeps serving and the caller restores its previous file.
    pub fn reload_sources(self: &Arc<Self>, force: bool) -> Result<ReloadReport, ReloadError> {
        let base = self.current.load().version();
        self.reload_inner(force, true, base, false)
    }

    pub(super) fn reload_inner(
        self: &Arc<Self>,
        force: bool,
        guard: bool,
        base_version: u64,
        settle: bool,
    ) -> Result<ReloadReport, ReloadError> {
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let result = self.build(force, guard, base_version, started, settle);
        self.reloaded(force, !settle, result)
    }

    /// Log, count and tell the observer of one reload's outcome; the
    /// caller holds `busy`.
    fn reloaded(
        &self,
        force: bool,
        for_source: bool,
        result: Result<ReloadReport, ReloadError>,
    ) -> Result<ReloadReport, ReloadError> {
        // The parsed text and the old snapshot are gone now; hand the pages back.
        crate::memory::release_freed_memory();
        match &result {
            Ok(r) => {
                tracing::info!(
                    version = r.version,
                    rules = r.rules,
                    added = r.added,
                    removed = r.removed,
                    skipped = r.skipped.len(),
                    incremental = r.incremental,
                    enforced_ms = r.enforced_ms,
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
        if let Some(hook) = self.hook.get() {
            hook(&ReloadEvent {
                for_source,
                forced: force,
                result: &result,
            });
        }
        result
    }

    /// Enforce one source file's change given as its removed and added
    /// lines (a followed zone's IXFR) as a layer over the snapshot in
    /// force, without reading or diffing the file; the guards apply as to
    /// any reload. `persist` runs once the guards passed and before the
    /// swap, under the reload lock (the source records the change there:
    /// its file is not rewritten). `Ok(None)`: the change cannot be
    /// enforced exactly as a layer (the reason is logged); nothing
    /// changed, and the caller writes its file and reloads it in full.
    pub(crate) fn apply_source_change(
        self: &Arc<Self>,
        change: &delta::LineChange<'_>,
        force: bool,
        persist: &mut dyn FnMut() -> std::io::Result<()>,
    ) -> Result<Option<ReloadReport>, ReloadError> {
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let old = self.merge_if_large(self.current.load_full());
        let Some(base) = self.state.baseline() else {
            tracing::info!(file = %change.path.display(), "no baseline for a layer; the source reloads in full");
            return Ok(None);
        };
        let s = &self.settings;
        let version = old.version() + 1;
        let applied = match delta::try_line_change(
            &base,
            &old,
            &s.list_paths(),
            &*s.options,
            version,
            change,
        ) {
            Delta::Apply(applied) => applied,
            Delta::Full(reason) => {
                tracing::info!(%reason, "the source's change is not a layer; it reloads in full");
                return Ok(None);
            }
        };
        let result = self.apply_delta(*applied, &old, force, true, started, persist);
        self.reloaded(force, true, result).map(Some)
    }

    /// A source rewrote its file to what is already in force (a followed
    /// zone folding its journal in): `write` puts the new file in place,
    /// under the reload lock, and returns its SHA-256 and length; the file
    /// becomes the baseline of the next incremental reload without a
    /// reload. Its line numbers must be those the snapshot in force gives
    /// its rules.
    pub(crate) fn adopt_source(
        &self,
        path: &Path,
        write: &mut dyn FnMut() -> std::io::Result<(String, u64)>,
    ) -> std::io::Result<()> {
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let (sha256, bytes) = write()?;
        let current = self.current.load_full();
        self.state.adopt_file(path, sha256, bytes, &current)
    }

    /// Run `f` with no reload running (a source changing its file and
    /// what it keeps beside it in one step).
    pub(crate) fn with_reloads_held<R>(&self, f: impl FnOnce() -> R) -> R {
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// Like [`Reloader::reload_sources`], but every file is parsed: for a
    /// source that cannot tell whether the snapshot in force already holds
    /// its file's last change (a followed zone replaying its journal at
    /// start).
    pub(crate) fn reload_sources_in_full(
        self: &Arc<Self>,
        force: bool,
    ) -> Result<ReloadReport, ReloadError> {
        self.state.forget_baseline();
        self.reload_sources(force)
    }

    /// Register work a full reload runs first, under the reload lock (it
    /// must not call the reloader).
    pub fn before_full_reload(&self, hook: SourceHook) {
        self.before_full
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
    }

    /// Pushes faster than merges stack layers; past a bound, merge first
    /// so a layer's overlay stays small to recompile and to keep. The
    /// caller holds `busy`; returns the snapshot in force after.
    fn merge_if_large(&self, old: Arc<Snapshot>) -> Arc<Snapshot> {
        if let Some(layer) = old.layer()
            && layer.overlay.rule_count() > max_layer_rules(old.rule_count())
        {
            let started = Instant::now();
            match self.flatten(&old) {
                Ok((flat, target)) => {
                    self.commit_merged(flat, &target, started);
                    return self.current.load_full();
                }
                Err(e) => tracing::error!(error = %e, "merging before the next reload failed"),
            }
        }
        old
    }

    /// Register the one observer of every later reload's outcome. It runs
    /// on the reloading thread after the swap, while the next reload waits:
    /// keep it short (an fsync is fine). A second call is ignored.
    pub fn on_reload(&self, hook: ReloadHook) {
        if self.hook.set(hook).is_err() {
            tracing::warn!("a reload observer is already registered; ignoring another");
        }
    }

    fn build(
        self: &Arc<Self>,
        force: bool,
        guard: bool,
        base_version: u64,
        started: Instant,
        settle: bool,
    ) -> Result<ReloadReport, ReloadError> {
        let s = &self.settings;
        if settle {
            wait_until_settled(&s.list_paths(), s.settle)?;
        }
        let version = base_version + 1;
        let old = self.merge_if_large(self.current.load_full());
        if let Some(base) = &self.state.baseline() {
            match delta::try_delta(
                base,
                &old,
                &s.list_paths(),
                &*s.options,
                version,
                MAX_DELTA_RATIO,
            ) {
                Delta::Apply(applied) => {
                    return self.apply_delta(*applied, &old, force, guard, started, &mut || Ok(()));
                }
                Delta::Full(reason) => {
                    tracing::info!(%reason, "reloading every list in full");
                }
            }
        }
        self.build_full(&old, version, force, guard, started)
    }

    /// Enforce an incremental reload at once; a background merge folds the
    /// layer into a flat snapshot and saves it (see [`Reloader::merge_soon`]).
    fn apply_delta(
        self: &Arc<Self>,
        applied: delta::Applied,
        old: &Snapshot,
        force: bool,
        guard: bool,
        started: Instant,
        persist: &mut dyn FnMut() -> std::io::Result<()>,
    ) -> Result<ReloadReport, ReloadError> {
        if guard
            && let Err(e) = self.check_guards(
                &applied.counts,
                applied.snapshot.rule_count(),
                old.rule_count(),
                applied.skipped.first(),
                force,
            )
        {
            applied.discard();
            return Err(e.into());
        }
        if let Err(e) = persist() {
            applied.discard();
            return Err(ReloadError::Persist(e.to_string()));
        }
        let delta::Applied {
            snapshot,
            files,
            pending_copies,
            added,
            removed,
            skipped,
            counts,
        } = applied;
        let version = snapshot.version();
        let rules = snapshot.rule_count();
        self.swap(Arc::new(snapshot), Swap::Layer);
        let enforced_ms = started.elapsed().as_millis() as u64;
        // The copies are the next diff's baseline now; the snapshot and
        // manifest follow when the merge is done.
        if self.state.keep_layer(files, &pending_copies, counts) {
            self.merge_soon();
        }
        Ok(ReloadReport {
            version,
            counts,
            rules,
            added,
            removed,
            skipped,
            took_ms: started.elapsed().as_millis() as u64,
            forced: force,
            enforced_ms,
            incremental: true,
        })
    }

    /// Put `next` in force: every new snapshot goes through here (a full
    /// reload, an incremental reload's layer, a finished merge). Queries
    /// holding the old one finish on it. The caller holds `busy`.
    fn swap(&self, next: Arc<Snapshot>, how: Swap) {
        let (version, rules) = (next.version(), next.rule_count());
        self.current.store(next);
        // A merge changes no answer, so it is not an accepted reload.
        if !matches!(how, Swap::Merged) {
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            self.stats
                .last_success_unix
                .store(now_unix(), Ordering::Relaxed);
        }
        tracing::info!(version, rules, how = how.as_str(), "list version in force");
    }

    /// Start the background merge unless one is running (it picks up the
    /// newest layer when it finishes the one it has).
    fn merge_soon(self: &Arc<Self>) {
        if self.merging.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("list-merge".into())
            .spawn(move || me.merge_loop());
        if let Err(e) = spawned {
            self.merging.store(false, Ordering::Release);
            tracing::error!(error = %e, "cannot start the list merge; the layer keeps serving");
        }
    }

    /// Fold the current layer into a flat snapshot, off every lock and at
    /// a low CPU priority so queries come first; swap it in only if no
    /// reload replaced the layer meanwhile, then save it as the last good
    /// snapshot with its manifest.
    fn merge_loop(&self) {
        // SAFETY: setpriority on this thread (tid) only; no memory involved.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, MERGE_NICE);
        }
        loop {
            let layered = self.current.load_full();
            if layered.layer().is_some() {
                self.merge_once(&layered);
            }
            self.merging.store(false, Ordering::Release);
            // A layer stored after the check above found `merging` set and
            // left it to us.
            if self.current.load().layer().is_none() || self.merging.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }

    fn merge_once(&self, layered: &Arc<Snapshot>) {
        let started = Instant::now();
        let (flat, target) = match self.flatten(layered) {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "merging an incremental reload failed; the layer keeps serving");
                return;
            }
        };
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&self.current.load_full(), layered) {
            tracing::debug!("merge superseded by a newer reload");
            self.state.discard_merged(&target);
            return;
        }
        self.commit_merged(flat, &target, started);
    }

    /// Merge `layered` into a flat snapshot file; no lock is needed.
    fn flatten(&self, layered: &Snapshot) -> Result<(Snapshot, PathBuf), String> {
        let target = self.state.merge_target().map_err(|e| e.to_string())?;
        let flat = merge::flatten_to(layered, &target).map_err(|e| e.to_string())?;
        Ok((flat, target))
    }

    /// Put a merged snapshot in force and save it; the caller holds `busy`
    /// and has checked that it merges the snapshot in force.
    fn commit_merged(&self, flat: Snapshot, target: &Path, started: Instant) {
        let flat = Arc::new(flat);
        self.swap(flat.clone(), Swap::Merged);
        if let Err(e) = self.state.save_merged(&flat, target) {
            self.persist_failed(&e);
        }
        tracing::info!(
            version = flat.version(),
            merge_ms = started.elapsed().as_millis() as u64,
            "incremental reload merged and saved"
        );
        crate::memory::release_freed_memory();
    }

    /// The guards over a candidate version (see `guards.rs`).
    fn check_guards(
        &self,
        counts: &Counts,
        new_rules: usize,
        old_rules: usize,
        first_skip: Option<&String>,
        force: bool,
    ) -> Result<(), GuardError> {
        let limits = Limits {
            max_skipped_ratio: self.settings.max_skipped_ratio,
            max_shrink_ratio: self.settings.max_shrink_ratio,
        };
        let candidate = Candidate::new(counts, new_rules, first_skip.map(String::as_str));
        guards::check(limits, old_rules, &candidate, force)
    }

    /// Parse every file and compile from scratch, recording each file (and
    /// a byte copy of it) as the baseline for the next incremental reload.
    fn build_full(
        &self,
        old: &Snapshot,
        version: u64,
        force: bool,
        guard: bool,
        started: Instant,
    ) -> Result<ReloadReport, ReloadError> {
        for hook in self
            .before_full
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            hook();
        }
        let s = &self.settings;
        let mut recorder = self.state.recorder();
        let loaded = match load(
            &s.list_paths(),
            &*s.options,
            version,
            Some(&mut |f| recorder.record(f)),
        ) {
            Ok(loaded) => loaded,
            Err(e) => {
                recorder.discard();
                return Err(e.into());
            }
        };
        let counts = loaded.counts();
        let Loaded {
            snapshot, skipped, ..
        } = loaded;
        if guard
            && let Err(e) = self.check_guards(
                &counts,
                snapshot.rule_count(),
                old.rule_count(),
                skipped.first(),
                force,
            )
        {
            recorder.discard();
            return Err(e.into());
        }
        let rules = snapshot.rule_count();
        let snapshot = Arc::new(snapshot);
        self.swap(snapshot.clone(), Swap::Full);
        let enforced_ms = started.elapsed().as_millis() as u64;
        let changes = diff(old, &snapshot);
        if let Err(e) = self.state.save_full(&snapshot, recorder, counts) {
            self.persist_failed(&e);
        }
        Ok(ReloadReport {
            version,
            counts,
            rules,
            added: changes.added.len(),
            removed: changes.removed.len(),
            skipped,
            took_ms: started.elapsed().as_millis() as u64,
            forced: force,
            enforced_ms,
            incremental: false,
        })
    }

    /// A version in force could not be saved as the last good one: it keeps
    /// serving, but a restart re-reads the lists.
    fn persist_failed(&self, e: &SaveError) {
        tracing::error!(error = %e, "a restart will re-read the lists");
        self.stats.persist_failures.fetch_add(1, Ordering::Relaxed);
    }
}
#[cfg(test)]
pub(crate) mod tests {
    use std::fs;

    use super::super::{ParsedList, parse};
    use super::*;

    pub(crate) fn write(path: &Path, text: &str) {
        // Write beside and rename over, as a ministry push does.
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text).expect("write");
        fs::rename(&tmp, path).expect("rename");
    }

    pub(crate) fn names(n: usize, prefix: &str) -> String {
        (0..n).map(|i| format!("{prefix}{i}.example\n")).collect()
    }

    pub(crate) fn settings(dir: &Path) -> ReloadSettings {
        ReloadSettings {
            paths: vec![dir.join("lists")],
            state_dir: Some(dir.join("state")),
            debounce: Duration::from_millis(50),
            settle: Duration::from_millis(20),
            ..ReloadSettings::default()
        }
    }

    pub(crate) fn blocked(r: &Reloader, name: &str) -> bool {
        r.current().lookup(name.as_bytes()).is_some()
    }

    /// Poll until `name` is blocked or `limit` passes; whether it is.
    pub(crate) fn wait_blocked(r: &Reloader, name: &str, limit: Duration) -> bool {
        let t0 = Instant::now();
        while !blocked(r, name) && t0.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
        blocked(r, name)
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
    fn a_source_file_is_read_with_the_lists_and_its_previous_copy_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("lists")).expect("mkdir");
        write(&dir.path().join("lists/gov.txt"), &names(20, "a"));
        let sources = dir.path().join("state/sources");
        let mut s = settings(dir.path());
        s.sources_dir = Some(sources.clone());
        // Not created yet: the lists alone load.
        let (r, _) = Reloader::start(s).expect("start");
        assert!(blocked(&r, "a1.example"));

        fs::create_dir_all(&sources).expect("mkdir sources");
        write(&sources.join("afm.txt"), &names(5, "pushed"));
        // Kept until a reload succeeds; never a list of its own.
        write(&sources.join("afm.txt.prev"), &names(5, "old"));
        let report = r.reload_sources(false).expect("reload");
        assert_eq!(report.added, 5);
        assert!(blocked(&r, "pushed4.example"));
        assert!(blocked(&r, "a1.example"));
        assert!(!blocked(&r, "old1.example"));
        let lists = r.current().rules_per_list();
        assert!(lists.contains(&("afm".to_string(), 5)), "{lists:?}");

        // A rejected source reload keeps the version in force.
        write(&sources.join("afm.txt"), "");
        write(&dir.path().join("lists/gov.txt"), "");
        assert!(r.reload_sources(false).is_err());
        assert!(blocked(&r, "pushed4.example"));
    }

    /// A last good snapshot of an older format (saved before an upgrade)
    /// is refused, the lists are compiled again under the next version, and
    /// the snapshot saved then is of the current format.
    #[test]
    fn an_older_snapshot_format_is_compiled_again_from_the_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("lists")).expect("mkdir");
        let list = dir.path().join("lists/gov.txt");
        write(&list, &names(50, "a"));
        {
            let (r, _) = Reloader::start(settings(dir.path())).expect("start");
            write(&list, &names(60, "a"));
            assert_eq!(r.reload(false).expect("reload").version, 2);
            assert!(r.wait_merged(Duration::from_secs(30)), "merge");
        }
        let state = dir.path().join("state");
        let saved = state.join(super::super::state::SNAPSHOT_FILE);
        let mut bytes = fs::read(&saved).expect("read");
        let older = super::super::snapshot::FORMAT - 1;
        bytes[8..12].copy_from_slice(&older.to_le_bytes());
        fs::write(&saved, &bytes).expect("write");
        assert!(matches!(
            open_last_good(&state),
            Err(crate::list::SnapshotError::BadFormat { found, .. }) if found == older
        ));

        let (r, src) = Reloader::start(settings(dir.path())).expect("start");
        let StartSource::Lists(report) = src else {
            panic!("compiled from the lists, not {src:?}");
        };
        assert_eq!((report.version, r.current().version()), (3, 3));
        assert!(blocked(&r, "a55.example"));
        drop(r);
        let (snap, manifest) = open_last_good(&state).expect("saved again, current format");
        assert_eq!((snap.version(), manifest.version), (3, 3));
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
            assert!(r.wait_merged(Duration::from_secs(30)), "merge");
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

    const PROBES: usize = 200;

    /// A tiny deterministic generator (no test-order or seed surprises).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A random list line over a small name universe, so that duplicates,
    /// allow/block pairs, edits of the same key and rule kinds the
    /// incremental path refuses all occur.
    fn random_line(rng: &mut Rng) -> String {
        // Mostly distinct names, some from a small set that collides.
        let n = if rng.below(10) == 0 {
            rng.below(40)
        } else {
            rng.below(PROBES)
        };
        let name = format!("n{n}.ex{}.test", n % 7);
        match rng.below(20) {
            0 => format!("*.{name}"),
            1 => format!("||{name}^"),
            2 => format!("@@||{name}^"),
            3 => "# a comment".to_string(),
            4 => String::new(),
            5 => format!("www.{name}"),
            6 => name.to_uppercase(),
            7 if rng.below(8) == 0 => "keyword:casino".to_string(),
            8 if rng.below(4) == 0 => "not a name at all".to_string(),
            9 => format!("ex{}.test", n % 7),
            _ => name,
        }
    }

    fn numbered(text: &str) -> String {
        text.lines()
            .enumerate()
            .map(|(i, l)| format!("{:3} {l}", i + 1))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every probe name's answer: (action, list, line, rule text), or None.
    fn answers(snap: &Snapshot) -> Vec<Option<(String, String, u32, String)>> {
        let mut out = Vec::new();
        for n in 0..PROBES {
            for probe in [
                format!("n{n}.ex{}.test", n % 7),
                format!("www.n{n}.ex{}.test", n % 7),
                format!("a.b.n{n}.ex{}.test", n % 7),
                format!("ex{}.test", n % 7),
                format!("x.ex{}.test", n % 7),
                format!("casino{n}.test"),
            ] {
                out.push(snap.lookup(probe.as_bytes()).map(|m| {
                    let r = snap.rule(m.rule);
                    (
                        format!("{:?}", m.action),
                        r.list().to_string(),
                        r.line(),
                        r.text(),
                    )
                }));
            }
        }
        out
    }

    /// The incremental path must answer exactly as a full compile of the
    /// same files does: with the layer (what is enforced first) and after
    /// the merge (what is enforced and saved next), provenance included.
    #[test]
    fn incremental_reloads_equal_full_compiles() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("lists")).expect("mkdir");
        let paths = [
            dir.path().join("lists/a.txt"),
            dir.path().join("lists/b.txt"),
        ];
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut files: Vec<Vec<String>> = (0..2)
            .map(|_| (0..80).map(|_| random_line(&mut rng)).collect())
            .collect();
        for (p, lines) in paths.iter().zip(&files) {
            write(p, &(lines.join("\n") + "\n"));
        }
        let (r, _) = Reloader::start(settings(dir.path())).expect("start");
        let (mut incremental, mut full) = (0, 0);
        for step in 0..200 {
            let f = rng.below(2);
            let lines = &mut files[f];
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(lines.len() + 1);
                match rng.below(6) {
                    0 | 1 if !lines.is_empty() => {
                        lines.remove(at.min(lines.len() - 1));
                    }
                    2 if !lines.is_empty() => {
                        let i = at.min(lines.len() - 1);
                        lines[i] = random_line(&mut rng);
                    }
                    3 if !lines.is_empty() => {
                        let copy = lines[rng.below(lines.len())].clone();
                        lines.insert(at, copy);
                    }
                    _ => lines.insert(at, random_line(&mut rng)),
                }
            }
            let text = lines.join("\n") + if rng.below(5) == 0 { "" } else { "\n" };
            write(&paths[f], &text);

            let lists: Vec<ParsedList> = paths
                .iter()
                .map(|p| parse::parse_file(p, &ListOptions::default()).expect("parse"))
                .collect();
            let want = answers(&super::super::compile(&lists).expect("compile"));

            let old = r.current();
            let base = r.state.baseline().expect("baseline");
            let attempt = delta::try_delta(
                &base,
                &old,
                &r.settings.paths,
                &*r.settings.options,
                old.version() + 1,
                MAX_DELTA_RATIO,
            );
            if let Delta::Apply(applied) = attempt {
                let got = answers(&applied.snapshot);
                if got != want {
                    let diffs: Vec<_> = got.iter().zip(&want).filter(|(g, w)| g != w).collect();
                    let old_a = fs::read_to_string(base.copy_path(0)).unwrap_or_default();
                    let old_b = fs::read_to_string(base.copy_path(1)).unwrap_or_default();
                    panic!(
                        "step {step}: layered snapshot differs from a full compile: {diffs:?}\nold a:\n{}\nold b:\n{}\nnew a:\n{}\nnew b:\n{}",
                        numbered(&old_a),
                        numbered(&old_b),
                        numbered(&fs::read_to_string(&paths[0]).unwrap_or_default()),
                        numbered(&fs::read_to_string(&paths[1]).unwrap_or_default())
                    );
                }
                let flat = merge::flatten(&applied.snapshot).expect("flatten");
                assert_eq!(answers(&flat), want, "step {step}: merged snapshot differs");
                applied.discard();
            }
            let report = r.reload(true).expect("reload");
            if report.incremental {
                incremental += 1;
            } else {
                full += 1;
            }
            assert_eq!(
                answers(&r.current()),
                want,
                "step {step}: reloaded snapshot differs"
            );
            assert_eq!(
                r.current().rule_count(),
                super::super::compile(&lists).expect("compile").rule_count(),
                "step {step}: rule count"
            );
        }
        // This list is dense with duplicates on purpose, which sends the
        // removal of a duplicated rule in force to a full reload.
        assert!(
            incremental >= 50,
            "the fast path should carry many reloads: {incremental} incremental, {full} full"
        );
    }

    /// A registry-like push (distinct names, 1 % out, 1 % in, some edits
    /// in place) is always incremental, and lines are reported where they
    /// now are.
    #[test]
    fn daily_pushes_are_incremental() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("lists")).expect("mkdir");
        let list = dir.path().join("lists/gov.txt");
        let mut names: Vec<String> = (0..5000).map(|i| format!("site{i}.example")).collect();
        write(&list, &(names.join("\n") + "\n"));
        let (r, _) = Reloader::start(settings(dir.path())).expect("start");
        let mut next = 5000;
        for day in 0..10 {
            for k in 0..50 {
                names.remove((day * 97 + k * 89) % names.len());
            }
            for k in 0..50 {
                let at = (day * 31 + k * 101) % names.len();
                names.insert(at, format!("new{next}.example"));
                next += 1;
            }
            write(&list, &(names.join("\n") + "\n"));
            let report = r.reload(false).expect("reload");
            assert!(report.incremental, "day {day}: {report:?}");
            assert_eq!((report.added, report.removed), (50, 50), "day {day}");
            let snap = r.current();
            for probe in [0, 1, names.len() / 2, names.len() - 1] {
                let m = snap.lookup(names[probe].as_bytes()).expect("listed");
                assert_eq!(
                    snap.rule(m.rule).line() as usize,
                    probe + 1,
                    "{}",
                    names[probe]
                );
            }
            assert_eq!(snap.rule_count(), 5000);
        }
        // After a restart the saved baseline keeps the next push incremental.
        assert!(r.wait_merged(Duration::from_secs(30)), "merge");
        drop(r);
        let (r, src) = Reloader::start(settings(dir.path())).expect("restart");
        assert!(
            matches!(src, StartSource::LastGoodCurrent { .. }),
            "{src:?}"
        );
        names.remove(7);
        names.push("after-restart.example".into());
        write(&list, &(names.join("\n") + "\n"));
        let report = r.reload(false).expect("reload");
        assert!(report.incremental, "{report:?}");
        assert!(blocked(&r, "www.after-restart.example"));
    }

    /// Timing of one incremental reload at a million names; a measurement,
    /// not a check: `cargo test --release --lib reload_of_a_million -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn reload_of_a_million_names_timing() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("sinkhole=debug")
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("lists")).expect("mkdir");
        let list = dir.path().join("lists/gov.txt");
        let mut names: Vec<String> = (0..1_000_000)
            .map(|i| format!("host{i}.site{}.example", i % 977))
            .collect();
        write(&list, &(names.join("\n") + "\n"));
        let t = Instant::now();
        let (r, _) = Reloader::start(settings(dir.path())).expect("start");
        eprintln!("start (full): {:?}", t.elapsed());
        for round in 0..3 {
            // 1 % out, 1 % in, spread over the file (no O(n²) Vec edits).
            let mut next = Vec::with_capacity(names.len());
            for (i, n) in names.into_iter().enumerate() {
                if i % 100 == 37 {
                    next.push(format!("new{round}-{i}.example"));
                } else if i % 100 != 71 {
                    next.push(n);
                }
            }
            names = next;
            write(&list, &(names.join("\n") + "\n"));
            let t = Instant::now();
            let report = r.reload(false).expect("reload");
            eprintln!(
                "round {round}: incremental={} enforced {} ms, took {} ms (wall {:?})",
                report.incremental,
                report.enforced_ms,
                report.took_ms,
                t.elapsed()
            );
        }
    }

    /// A random registry CSV row over the same name universe, with its
    /// decision (so provenance is compared too), and the rows the
    /// incremental path must send to a full reload: a quoted field, a
    /// field-count mismatch, a URL.
    fn random_csv_row(rng: &mut Rng) -> String {
        let n = if rng.below(10) == 0 {
            rng.below(40)
        } else {
            rng.below(PROBES)
        };
        let name = format!("n{n}.ex{}.test", n % 7);
        let decision = format!("D{}", rng.below(1000));
        match rng.below(24) {
            0 => "# a comment".to_string(),
            1 => String::new(),
            2 => format!("www.{name};{decision};AFM"),
            3 => format!("{};{decision};суд", name.to_uppercase()),
            4 if rng.below(4) == 0 => format!("\"{name}\";\"{decision}; final\";AFM"),
            5 if rng.below(4) == 0 => format!("{name};{decision}"),
            6 if rng.below(8) == 0 => format!("http://{name}/page;{decision};AFM"),
            7 => format!("ex{};{decision};AFM", n % 7),
            _ => format!("{name};{decision};AFM"),
        }
    }

    /// Every probe name's answer with the rule's decision and authority.
    fn answers_with_meta(snap: &Snapshot) -> Vec<Option<(String, u32, String, String)>> {
        let mut out = Vec::new();
        for n in 0..PROBES {
            for probe in [
                format!("n{n}.ex{}.test", n % 7),
                format!("www.n{n}.ex{}.test", n % 7),
                format!("ex{}.test", n % 7),
            ] {
                out.push(snap.lookup(probe.as_bytes()).map(|m| {
                    let r = snap.rule(m.rule);
                    (
                        r.text(),
                        r.line(),
                        r.decision().unwrap_or("").to_string(),
                        r.authority().unwrap_or("").to_string(),
                    )
                }));
            }
        }
        out
    }

    /// CSV takes the incremental path too, and must answer exactly as a
    /// full compile, provenance included; a changed header, quoted fields
    /// and Windows-1251 text send it to a full reload.
    #[test]
    fn incremental_csv_reloads_equal_full_compiles() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("lists")).expect("mkdir");
        let path = dir.path().join("lists/registry.csv");
        let mut rng = Rng(0x5eed_c5f0_0000_0013);
        let header = "# exported by the ministry\ndomain;decision;authority".to_string();
        let mut rows: Vec<String> = (0..120).map(|_| random_csv_row(&mut rng)).collect();
        let text = |h: &str, rows: &[String]| format!("{h}\n{}\n", rows.join("\n"));
        write(&path, &text(&header, &rows));
        let (r, _) = Reloader::start(settings(dir.path())).expect("start");
        let (mut incremental, mut full) = (0, 0);
        for step in 0..150 {
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(rows.len() + 1);
                match rng.below(6) {
                    0 | 1 if !rows.is_empty() => {
                        rows.remove(at.min(rows.len() - 1));
                    }
                    2 if !rows.is_empty() => {
                        let i = at.min(rows.len() - 1);
                        rows[i] = random_csv_row(&mut rng);
                    }
                    _ => rows.insert(at, random_csv_row(&mut rng)),
                }
            }
            // Now and then the columns move: never a line diff.
            let h = if step % 37 == 36 {
                "# exported by the ministry\nauthority;domain;decision".to_string()
            } else {
                header.clone()
            };
            if step % 37 == 36 {
                for row in &mut rows {
                    let f: Vec<&str> = row.split(';').collect();
                    if f.len() == 3 {
                        *row = format!("{};{};{}", f[2], f[0], f[1]);
                    }
                }
            }
            let body = text(&h, &rows);
            let bytes = if step % 29 == 28 {
                encoding_rs::WINDOWS_1251.encode(&body).0.into_owned()
            } else {
                body.into_bytes()
            };
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, &bytes).expect("write");
            fs::rename(&tmp, &path).expect("rename");

            let list = parse::parse_file(&path, &ListOptions::default()).expect("parse");
            let want = answers_with_meta(&super::super::compile(&[list]).expect("compile"));
            let report = r.reload(true).expect("reload");
            if report.incremental {
                incremental += 1;
            } else {
                full += 1;
            }
            assert_eq!(
                answers_with_meta(&r.current()),
                want,
                "step {step} (incremental: {}):\n{}",
                report.incremental,
                numbered(&fs::read_to_string(&path).unwrap_or_default())
            );
            if step % 37 == 36 {
                assert!(
                    !report.incremental,
                    "step {step}: a new header is a full reload"
                );
                for row in &mut rows {
                    let f: Vec<&str> = row.split(';').collect();
                    if f.len() == 3 {
                        *row = format!("{};{};{}", f[1], f[2], f[0]);
                    }
                }
            }
        }
        assert!(
            incremental >= 40,
            "the fast path should carry many CSV reloads: {incremental} incremental, {full} full"
        );
    }

    /// A registry CSV push (1 % out, 1 % in, with decisions) is incremental,
    /// and the new rows carry their provenance.
    #[test]
    fn daily_csv_pushes_are_incremental() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("lists")).expect("mkdir");
        let list = dir.path().join("lists/gov.csv");
        let row = |i: usize| format!("site{i}.example\t2025-{i}/KZ\tАФМ");
        let mut rows: Vec<String> = (0..5000).map(row).collect();
        let text = |rows: &[String]| format!("domain\tdecision\tauthority\n{}\n", rows.join("\n"));
        write(&list, &text(&rows));
        let (r, _) = Reloader::start(settings(dir.path())).expect("start");
        for day in 0..3 {
            for k in 0..50 {
                rows.remove((day * 97 + k * 89) % rows.len());
            }
            for k in 0..50 {
                rows.insert(
                    (day * 31 + k * 101) % rows.len(),
                    row(10_000 + day * 100 + k),
                );
            }
            write(&list, &text(&rows));
            let report = r.reload(false).expect("reload");
            assert!(report.incremental, "day {day}: {report:?}");
            assert_eq!((report.added, report.removed), (50, 50), "day {day}");
            let snap = r.current();
            let name = format!("www.site{}.example", 10_000 + day * 100 + 7);
            let m = snap.lookup(name.as_bytes()).expect("new row enforced");
            let rule = snap.rule(m.rule);
            assert_eq!(
                rule.decision(),
                Some(&*format!("2025-{}/KZ", 10_000 + day * 100 + 7))
            );
            assert_eq!(rule.authority(), Some("АФМ"));
            let at = rows
                .iter()
                .position(|r| r.starts_with(&format!("site{}.", 10_000 + day * 100 + 7)));
            assert_eq!(rule.line() as usize, at.expect("row") + 2);
        }
    }
}
