//! What the list pipeline keeps between reloads and across restarts, and
//! the only code that writes into `[lists] state_dir`.
//!
//! * The **last good snapshot** and its **manifest**: the version in force,
//!   saved so that a restart serves at once (memory-mapped, nothing
//!   parsed) even when the list files have since become unusable. The
//!   manifest names each list file with its hash, size and options, so a
//!   restart can tell whether the files are still the ones it was compiled
//!   from.
//! * **Byte copies** of the list files in force: the baseline an
//!   incremental reload (`delta.rs`) diffs a push against. A reload writes
//!   its new copies beside the old ones (`N.list.new`) and they replace
//!   them only once the version is in force; a rejected version's copies
//!   are discarded.
//!
//! Layout of `state_dir`:
//!
//! | file | what |
//! |---|---|
//! | `last-good.snapshot` | the last version saved |
//! | `last-good.json` | its manifest, written last: a crash in between leaves a manifest that does not match, and the lists are re-read |
//! | `merged.snapshot` | a background merge being written; renamed to `last-good.snapshot` |
//! | `lists/N.list` | the copy of list file N as in force (`N.list.new` while a version is decided) |
//! | `.lock` | locked by the running server ([`lock_state_dir`]); holds its pid |
//!
//! Without `state_dir` the copies live in a private temporary directory
//! that is removed with the state, and nothing survives a restart.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::load::{FileRead, LoadError, Loaded, OptionsFor, load};
use super::{Counts, Format, ListOptions, Snapshot, SnapshotError, parse};

pub(crate) const SNAPSHOT_FILE: &str = "last-good.snapshot";
const MANIFEST_FILE: &str = "last-good.json";
/// Where a background merge writes, inside `state_dir`.
const MERGED_FILE: &str = "merged.snapshot";
/// Where a background merge writes without `state_dir` (in the copies'
/// temporary directory; nothing is saved).
const MERGED_TEMP_FILE: &str = "current.snapshot";
const COPIES_DIR: &str = "lists";

/// Takes the exclusive lock on `state_dir` (see [`crate::dirlock`]): the
/// server holds it for its life, so a second server with the same
/// `state_dir` refuses to start instead of overwriting the first one's
/// snapshot and copies.
pub fn lock_state_dir(dir: &Path) -> Result<crate::dirlock::DirLock, crate::dirlock::DirLockError> {
    crate::dirlock::lock_dir(dir, "lists state_dir")
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
    /// The format it was read as, and what it held: present only when its
    /// byte copy was kept, so that a restart can take the copies as the
    /// baseline of an incremental reload (absent in manifests written
    /// before incremental reloads; those reload in full once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
}

impl ManifestFile {
    /// Same file, same bytes, same options.
    fn same_content(&self, other: &ManifestFile) -> bool {
        self.path == other.path
            && self.sha256 == other.sha256
            && self.bytes == other.bytes
            && self.options == other.options
    }

    /// A list file as it is on disk now.
    fn fingerprint(path: &Path, options: &ListOptions) -> io::Result<ManifestFile> {
        let bytes = fs::read(path)?;
        Ok(ManifestFile {
            sha256: hex::encode(Sha256::digest(&bytes)),
            bytes: bytes.len() as u64,
            options: format!("{options:?}"),
            path: path.to_path_buf(),
            format: None,
            counts: None,
        })
    }

    /// The entry for a file as it was read; `copied`: its byte copy is in
    /// place, so the entry may describe a baseline.
    fn of_record(rec: &FileRecord, copied: bool) -> ManifestFile {
        ManifestFile {
            path: rec.path.clone(),
            sha256: rec.sha256.clone(),
            bytes: rec.bytes,
            options: rec.options.clone(),
            format: copied.then_some(rec.format),
            counts: copied.then_some(rec.counts),
        }
    }
}

/// Are the list files under `paths` (names, contents and options) the
/// ones `manifest` describes?
fn manifest_matches(manifest: &Manifest, paths: &[PathBuf], options: OptionsFor<'_>) -> bool {
    let Ok(files) = parse::list_files(paths) else {
        return false;
    };
    files.len() == manifest.files.len()
        && files.iter().zip(&manifest.files).all(|(path, want)| {
            // Cheap size check first: most changes change the size.
            fs::metadata(path).is_ok_and(|m| m.len() == want.bytes)
                && ManifestFile::fingerprint(path, &options(path))
                    .is_ok_and(|got| got.same_content(want))
        })
}

/// Open the last good snapshot saved in `dir` and its manifest.
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

/// Save `snap` (unless `save_snapshot` is false: it is already in place)
/// and then the manifest of `files` in `dir`.
fn write_last_good(
    dir: &Path,
    snap: &Snapshot,
    files: &[FileRecord],
    copied: bool,
    counts: Counts,
    save_snapshot: bool,
) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    if save_snapshot {
        snap.save(&dir.join(SNAPSHOT_FILE))
            .map_err(|e| io::Error::other(e.to_string()))?;
    }
    let manifest = Manifest {
        version: snap.version(),
        created_unix: now_unix(),
        files: files
            .iter()
            .map(|f| ManifestFile::of_record(f, copied))
            .collect(),
        counts,
        rules: snap.rule_count(),
    };
    let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    serde_json::to_writer_pretty(&mut f, &manifest).map_err(io::Error::other)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    fs::rename(tmp, dir.join(MANIFEST_FILE))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the version in force was built from, per list file.
#[derive(Clone, Debug)]
pub(crate) struct FileRecord {
    pub path: PathBuf,
    pub format: Format,
    /// `{:?}` of the list options it was read with.
    pub options: String,
    pub counts: Counts,
    pub sha256: String,
    pub bytes: u64,
    /// What `stat` said before the file was read (see [`FileStat`]).
    pub stat: Option<FileStat>,
}

impl FileRecord {
    fn of(f: &FileRead<'_>) -> FileRecord {
        FileRecord {
            path: f.path.to_path_buf(),
            format: f.format,
            options: format!("{:?}", f.options),
            counts: f.counts,
            sha256: hex::encode(Sha256::digest(f.bytes)),
            bytes: f.bytes.len() as u64,
            stat: f.stat,
        }
    }
}

/// A file's size, inode and modification time. A file with the same
/// `stat` as when it was read is taken as unchanged without reading it,
/// but only if its time was already [`STAT_TRUST`] old when it was read:
/// file systems stamp times coarsely, so a file rewritten within the same
/// tick can look untouched ("racy git").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub len: u64,
    pub ino: u64,
    pub mtime: SystemTime,
}

/// How old a modification time must be, when the file is read, before an
/// unchanged `stat` is trusted later.
const STAT_TRUST: Duration = Duration::from_secs(2);

impl FileStat {
    /// `stat` a file about to be read: `None` unless its time is old
    /// enough to be trusted later.
    pub fn trusted(path: &Path) -> Option<FileStat> {
        let stat = FileStat::now(path)?;
        let age = SystemTime::now().duration_since(stat.mtime).ok()?;
        (age >= STAT_TRUST).then_some(stat)
    }

    /// `stat` a file to compare with a trusted one.
    pub(crate) fn now(path: &Path) -> Option<FileStat> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).ok()?;
        Some(FileStat {
            len: m.len(),
            ino: m.ino(),
            mtime: m.modified().ok()?,
        })
    }
}

/// The files of the version in force and where their byte copies are.
#[derive(Clone, Debug)]
pub(crate) struct Baseline {
    pub files: Vec<FileRecord>,
    copies: PathBuf,
}

impl Baseline {
    /// The byte copy of file `i` as it is in force.
    pub(crate) fn copy_path(&self, i: usize) -> PathBuf {
        copy_at(&self.copies, i)
    }

    /// Create the new copy of file `i`, to be kept if the version it
    /// belongs to is put in force.
    pub(crate) fn create_pending_copy(&self, i: usize) -> io::Result<(fs::File, PathBuf)> {
        let path = pending_copy_at(&self.copies, i);
        Ok((fs::File::create(&path)?, path))
    }

    pub(crate) fn remove_pending_copy(&self, i: usize) {
        let _ = fs::remove_file(pending_copy_at(&self.copies, i));
    }

    /// The new copies of the files `changed`, as one set to keep or discard.
    pub(crate) fn pending_copies(&self, changed: impl Iterator<Item = usize>) -> PendingCopies {
        PendingCopies(
            changed
                .map(|i| (pending_copy_at(&self.copies, i), copy_at(&self.copies, i)))
                .collect(),
        )
    }
}

fn copy_at(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("{i}.list"))
}

fn pending_copy_at(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("{i}.list.new"))
}

/// New byte copies of a version not yet decided: (written as, kept as).
#[derive(Debug, Default)]
pub(crate) struct PendingCopies(Vec<(PathBuf, PathBuf)>);

impl PendingCopies {
    /// Forget them: the version was rejected or could not be built.
    pub(crate) fn discard(&self) {
        for (pending, _) in &self.0 {
            let _ = fs::remove_file(pending);
        }
    }

    /// Move them into place, the first failure stopping.
    fn keep(&self) -> io::Result<()> {
        for (pending, kept) in &self.0 {
            fs::rename(pending, kept).map_err(|e| {
                io::Error::new(e.kind(), format!("keeping {}: {e}", kept.display()))
            })?;
        }
        Ok(())
    }
}

/// Records each file a full load reads (see [`FileRead`]): what it held,
/// and a pending byte copy of exactly the bytes parsed. A copy that cannot
/// be written costs only the next incremental reload; the records are
/// still complete for the manifest.
pub(crate) struct CopyRecorder {
    copies: PathBuf,
    records: Vec<FileRecord>,
    pending: PendingCopies,
    failed: bool,
}

impl CopyRecorder {
    pub(crate) fn record(&mut self, f: &FileRead<'_>) {
        if !self.failed {
            let written = fs::create_dir_all(&self.copies).and_then(|()| {
                let pending = pending_copy_at(&self.copies, f.index);
                fs::write(&pending, f.bytes)?;
                Ok(pending)
            });
            match written {
                Ok(pending) => self
                    .pending
                    .0
                    .push((pending, copy_at(&self.copies, f.index))),
                Err(e) => {
                    tracing::warn!(error = %e, dir = %self.copies.display(), "cannot keep list copies; the next reload will be a full one");
                    self.failed = true;
                }
            }
        }
        self.records.push(FileRecord::of(f));
    }

    /// The load failed or its version was rejected.
    pub(crate) fn discard(self) {
        self.pending.discard();
    }
}

/// The last good snapshot could not be saved. The version stays in force;
/// a restart re-reads the lists.
#[derive(Debug, Error)]
#[error("saving the last good snapshot in {dir}: {source}")]
pub struct SaveError {
    dir: PathBuf,
    #[source]
    source: io::Error,
}

/// Why `sinkhole compile --state-dir` failed.
#[derive(Debug, Error)]
pub enum CompileLastGoodError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Save(#[from] SaveError),
    /// A running server (or another compile) holds `state_dir`.
    #[error(transparent)]
    Locked(#[from] crate::dirlock::DirLockError),
}

/// Files and counts of a version in force but not saved yet (an
/// incremental reload's layer, saved when its merge is done).
struct Unsaved {
    files: Vec<FileRecord>,
    counts: Counts,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; a poisoned lock still
    // holds consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The reloader's saved state (see the module documentation).
pub(crate) struct ListState {
    /// `[lists] state_dir`; `None`: nothing is saved.
    dir: Option<PathBuf>,
    /// Where byte copies of the files in force are kept.
    copies: PathBuf,
    /// `copies` is a private temporary directory (no `state_dir`).
    copies_are_temp: bool,
    /// The files of the version in force, for incremental reloads (`None`:
    /// the next reload is a full one).
    baseline: Mutex<Option<Baseline>>,
    unsaved: Mutex<Option<Unsaved>>,
}

impl Drop for ListState {
    fn drop(&mut self) {
        if self.copies_are_temp {
            let _ = fs::remove_dir_all(&self.copies);
        }
    }
}

impl ListState {
    pub(crate) fn new(dir: Option<PathBuf>) -> ListState {
        static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);
        let (copies, copies_are_temp) = match &dir {
            Some(dir) => (dir.join(COPIES_DIR), false),
            None => (
                std::env::temp_dir().join(format!(
                    "sinkhole-lists-{}-{}",
                    std::process::id(),
                    TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
                )),
                true,
            ),
        };
        ListState {
            dir,
            copies,
            copies_are_temp,
            baseline: Mutex::new(None),
            unsaved: Mutex::new(None),
        }
    }

    /// The last good snapshot and its manifest, if one was saved.
    pub(crate) fn last_good(&self) -> Result<Option<(Snapshot, Manifest)>, SnapshotError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        match open_last_good(dir) {
            Ok(found) => Ok(Some(found)),
            Err(SnapshotError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The version the last saved manifest names, read on its own: when the
    /// last good snapshot cannot be used (another snapshot format after an
    /// upgrade, or damage) the lists are compiled again, and the version
    /// they get follows this one, so versions never go back. 0 without a
    /// readable manifest.
    pub(crate) fn saved_version(&self) -> u64 {
        let Some(dir) = &self.dir else { return 0 };
        fs::read_to_string(dir.join(MANIFEST_FILE))
            .ok()
            .and_then(|text| serde_json::from_str::<Manifest>(&text).ok())
            .map_or(0, |m| m.version)
    }

    /// Started from the last good snapshot `version` with `manifest`: are
    /// the list files the ones it was compiled from? If they are, their
    /// copies become the baseline of the next reload.
    pub(crate) fn resume(
        &self,
        version: u64,
        manifest: &Manifest,
        paths: &[PathBuf],
        options: OptionsFor<'_>,
    ) -> bool {
        // A crash between saving a snapshot and its manifest leaves them at
        // different versions: then the files decide.
        let current = manifest.version == version && manifest_matches(manifest, paths, options);
        if current {
            *lock(&self.baseline) = self.baseline_from(manifest);
        }
        current
    }

    /// The baseline a saved manifest describes, if it records formats and
    /// counts and every copy is there (checked byte for byte when used).
    fn baseline_from(&self, manifest: &Manifest) -> Option<Baseline> {
        let mut files = Vec::with_capacity(manifest.files.len());
        for (i, f) in manifest.files.iter().enumerate() {
            let copy_len = fs::metadata(copy_at(&self.copies, i)).ok()?.len();
            if copy_len != f.bytes {
                return None;
            }
            files.push(FileRecord {
                path: f.path.clone(),
                format: f.format?,
                options: f.options.clone(),
                counts: f.counts?,
                sha256: f.sha256.clone(),
                bytes: f.bytes,
                // Just hashed by `manifest_matches`, but when that was is
                // not known precisely enough to trust the time: read it.
                stat: None,
            });
        }
        Some(Baseline {
            files,
            copies: self.copies.clone(),
        })
    }

    /// What the next incremental reload diffs against, if anything.
    pub(crate) fn baseline(&self) -> Option<Baseline> {
        lock(&self.baseline).clone()
    }

    /// A recorder for a full load (pass its `record` to [`load`]).
    pub(crate) fn recorder(&self) -> CopyRecorder {
        CopyRecorder {
            copies: self.copies.clone(),
            records: Vec::new(),
            pending: PendingCopies::default(),
            failed: false,
        }
    }

    /// A full reload's `snap` is in force: its copies become the baseline,
    /// and it is saved as the last good snapshot with its manifest. A
    /// failure does not undo the version in force: without copies the
    /// next reload is a full one, and an unsaved version means a restart
    /// re-reads the lists.
    pub(crate) fn save_full(
        &self,
        snap: &Snapshot,
        recorder: CopyRecorder,
        counts: Counts,
    ) -> Result<(), SaveError> {
        *lock(&self.unsaved) = None;
        let CopyRecorder {
            records,
            pending,
            failed,
            ..
        } = recorder;
        let copied = if failed {
            pending.discard();
            *lock(&self.baseline) = None;
            false
        } else {
            self.keep_copies(&records, &pending)
        };
        match &self.dir {
            Some(dir) => {
                write_last_good(dir, snap, &records, copied, counts, true).map_err(|source| {
                    SaveError {
                        dir: dir.clone(),
                        source,
                    }
                })
            }
            None => Ok(()),
        }
    }

    /// An incremental reload's layer is in force: its copies become the
    /// baseline now; the snapshot and manifest are saved when the merge is
    /// done ([`ListState::save_merged`]). False if the copies could not be
    /// kept: then there is no baseline and nothing to save.
    pub(crate) fn keep_layer(
        &self,
        files: Vec<FileRecord>,
        pending: &PendingCopies,
        counts: Counts,
    ) -> bool {
        let kept = self.keep_copies(&files, pending);
        if kept {
            *lock(&self.unsaved) = Some(Unsaved { files, counts });
        }
        kept
    }

    /// Move the new copies into place and make `files` the baseline; on
    /// failure there is no baseline (the next reload is a full one).
    fn keep_copies(&self, files: &[FileRecord], pending: &PendingCopies) -> bool {
        let mut baseline = lock(&self.baseline);
        *baseline = None;
        if let Err(e) = pending.keep() {
            tracing::error!(error = %e, "keeping a copy of the list failed; the next reload will be a full one");
            return false;
        }
        *baseline = Some(Baseline {
            files: files.to_vec(),
            copies: self.copies.clone(),
        });
        true
    }

    /// The next reload is a full one.
    pub(crate) fn forget_baseline(&self) {
        *lock(&self.baseline) = None;
    }

    /// The list file `path` was rewritten by its source to content already
    /// in force in `current` (see `Reloader::adopt_source`): its byte copy
    /// and record follow, so the next incremental reload diffs against it,
    /// and the manifest describes it (now, if `current` is the saved flat
    /// snapshot; at the merge's save otherwise). Without a baseline holding
    /// the file, nothing is recorded: the next reload is a full one anyway.
    pub(crate) fn adopt_file(
        &self,
        path: &Path,
        sha256: String,
        bytes: u64,
        current: &Snapshot,
    ) -> io::Result<()> {
        let mut baseline = lock(&self.baseline);
        let Some(base) = baseline.as_mut() else {
            return Ok(());
        };
        let Some(i) = base.files.iter().position(|f| f.path == path) else {
            return Ok(());
        };
        // Until the copy is in place there is no baseline to diff against.
        let files = std::mem::take(&mut base.files);
        *baseline = None;
        let pending = pending_copy_at(&self.copies, i);
        fs::copy(path, &pending)?;
        fs::rename(&pending, copy_at(&self.copies, i))?;
        let mut files = files;
        files[i].sha256 = sha256;
        files[i].bytes = bytes;
        files[i].stat = FileStat::now(path);
        let mut unsaved = lock(&self.unsaved);
        match unsaved.as_mut() {
            Some(u) if u.files.len() == files.len() => u.files[i] = files[i].clone(),
            Some(_) => {}
            None => {
                if let Some(dir) = &self.dir
                    && current.layer().is_none()
                {
                    let counts = files.iter().fold(Counts::default(), |a, f| a + f.counts);
                    write_last_good(dir, current, &files, true, counts, false)?;
                }
            }
        }
        *baseline = Some(Baseline {
            files,
            copies: self.copies.clone(),
        });
        Ok(())
    }

    /// Where a background merge writes its flat snapshot (the directory
    /// is created).
    pub(crate) fn merge_target(&self) -> io::Result<PathBuf> {
        let (dir, file) = match &self.dir {
            Some(dir) => (dir, MERGED_FILE),
            None => (&self.copies, MERGED_TEMP_FILE),
        };
        fs::create_dir_all(dir)?;
        Ok(dir.join(file))
    }

    /// A merge that was superseded before it was put in force.
    pub(crate) fn discard_merged(&self, target: &Path) {
        let _ = fs::remove_file(target);
    }

    /// The merged snapshot `flat`, written at `target`, is in force: save
    /// it as the last good snapshot with the manifest of the layer it
    /// merged.
    pub(crate) fn save_merged(&self, flat: &Snapshot, target: &Path) -> Result<(), SaveError> {
        let unsaved = lock(&self.unsaved).take();
        let (Some(dir), Some(Unsaved { files, counts })) = (&self.dir, unsaved) else {
            return Ok(());
        };
        fs::rename(target, dir.join(SNAPSHOT_FILE))
            .and_then(|()| write_last_good(dir, flat, &files, true, counts, false))
            .map_err(|source| SaveError {
                dir: dir.clone(),
                source,
            })
    }
}

/// `sinkhole compile --state-dir`: load `paths` as the server's full
/// reload does and save the result in `dir` as the last good snapshot,
/// with its manifest and the byte copies, so that a server with the same
/// lists and `state_dir` starts from it without parsing anything and its
/// first reload can be an incremental one.
pub fn compile_last_good(
    dir: &Path,
    paths: &[PathBuf],
    options: OptionsFor<'_>,
    version: u64,
) -> Result<Loaded, CompileLastGoodError> {
    // Never under a running server's feet.
    let _lock = lock_state_dir(dir)?;
    let state = ListState::new(Some(dir.to_path_buf()));
    let mut recorder = state.recorder();
    let loaded = match load(paths, options, version, Some(&mut |f| recorder.record(f))) {
        Ok(loaded) => loaded,
        Err(e) => {
            recorder.discard();
            return Err(e.into());
        }
    };
    state.save_full(&loaded.snapshot, recorder, loaded.counts())?;
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::reload::tests::{names, settings, write};
    use crate::list::reload::{Reloader, StartSource};

    /// A snapshot compiled by the CLI into a state directory is what a
    /// server with the same lists starts from, and its first reload is
    /// incremental.
    #[test]
    fn compiled_state_is_a_servers_last_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("lists")).expect("mkdir");
        let list = dir.path().join("lists/gov.txt");
        write(&list, &names(100, "a"));
        let s = settings(dir.path());
        let state = s.state_dir.clone().expect("state dir");
        let loaded =
            compile_last_good(&state, &s.paths, &*s.options, 7).expect("compile into state");
        assert_eq!(loaded.snapshot.version(), 7);
        let (snap, manifest) = open_last_good(&state).expect("last good");
        assert_eq!((snap.version(), manifest.version), (7, 7));
        assert!(manifest.files.iter().all(|f| f.format.is_some()));
        let (r, src) = Reloader::start(s).expect("start");
        assert!(
            matches!(src, StartSource::LastGoodCurrent { version: 7 }),
            "{src:?}"
        );
        write(&list, &(names(100, "a") + "one-more.example\n"));
        let report = r.reload(false).expect("reload");
        assert!(report.incremental, "{report:?}");
        assert_eq!((report.version, report.added), (8, 1));
    }

    #[test]
    fn a_rejected_version_leaves_no_pending_copies() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("lists")).expect("mkdir");
        write(&dir.path().join("lists/gov.txt"), &names(10, "a"));
        let state = ListState::new(Some(dir.path().join("state")));
        let mut recorder = state.recorder();
        let options = |_: &Path| ListOptions::default();
        load(
            &[dir.path().join("lists")],
            &options,
            1,
            Some(&mut |f| recorder.record(f)),
        )
        .expect("load");
        let pending = dir.path().join("state/lists/0.list.new");
        assert!(pending.exists());
        recorder.discard();
        assert!(!pending.exists());
        assert!(!dir.path().join("state/lists/0.list").exists());
    }
}
