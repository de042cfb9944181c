//! Watching the list files: a change on disk reloads the lists by itself.
//!
//! Every configured path's directory is watched (not the file: a push
//! that writes a temporary file and renames it over the list replaces the
//! inode a file watch would hold). Events are collected into bursts
//! (`debounce`, shorter for bursts of renames), files still being written
//! are waited for (`wait_until_settled`), and a watched directory that is
//! removed and comes back is watched again. The reload itself is
//! [`Reloader`]'s; this only decides when.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::parse;
use super::reload::{ReloadError, Reloader};

impl Reloader {
    /// Watch every configured path (the directory of a file, so
    /// rename-over-old is seen) and reload after each burst of changes.
    /// For a configured file only events on that file count: other files
    /// in its directory (the server's own log, an editor's swap file) must
    /// not trigger reloads, or a log written next to the list would make
    /// every reload trigger the next one.
    /// The returned watcher must be kept alive.
    pub fn watch(self: &Arc<Self>) -> Result<ListWatch, notify::Error> {
        use notify::{RecursiveMode, Watcher};
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let mut dirs: Vec<PathBuf> = Vec::new();
        // Directories whose every file is a list, and single list files.
        let mut list_dirs: Vec<PathBuf> = Vec::new();
        let mut list_files: Vec<PathBuf> = Vec::new();
        for p in &self.settings().paths {
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
                    // A push's temp file in a list directory is not a change;
                    // its rename onto the list is.
                    let ignored = q
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(parse::ignored_file_name);
                    list_files.contains(&q)
                        || (!ignored
                            && q.parent().is_some_and(|d| list_dirs.iter().any(|l| l == d)))
                        || list_dirs.contains(&q)
                })
        };
        // (when, whether the event was a rename: a file renamed into place
        // is complete, so a burst of renames need not wait to settle).
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, bool)>();
        // Watched directories whose removal was seen: their watch is gone
        // even if a new directory soon stands there with the same inode.
        let lost: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
        let (lost_in_callback, watched_abs) = (
            lost.clone(),
            dirs.iter().map(|d| abs(d)).collect::<Vec<_>>(),
        );
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let Ok(ev) = &res
                    && matches!(ev.kind, notify::EventKind::Remove(_))
                {
                    for p in &ev.paths {
                        let p = abs(p);
                        if watched_abs.contains(&p) {
                            lost_in_callback
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(p);
                        }
                    }
                }
                if let Ok(ev) = res
                    && !matches!(ev.kind, notify::EventKind::Access(_))
                    && relevant(&ev.paths)
                {
                    let renamed = matches!(
                        ev.kind,
                        notify::EventKind::Modify(notify::event::ModifyKind::Name(_))
                    );
                    let _ = tx.send((Instant::now(), renamed));
                }
            })?;
        for dir in &dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        let watch = ListWatch {
            watcher: Arc::new(Mutex::new(watcher)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let watched: Vec<(PathBuf, Option<u64>)> =
            dirs.into_iter().map(|d| (d.clone(), dir_id(&d))).collect();
        let (me, w, stop) = (Arc::clone(self), watch.watcher.clone(), watch.stop.clone());
        std::thread::Builder::new()
            .name("list-watch".into())
            .spawn(move || me.watch_loop(rx, w, watched, lost, stop))
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(watch)
    }

    fn watch_loop(
        self: &Arc<Self>,
        rx: std::sync::mpsc::Receiver<(Instant, bool)>,
        watcher: Arc<Mutex<notify::RecommendedWatcher>>,
        mut watched: Vec<(PathBuf, Option<u64>)>,
        lost: Arc<Mutex<Vec<PathBuf>>>,
        stop: Arc<AtomicBool>,
    ) {
        use notify::Watcher;
        use std::sync::mpsc::RecvTimeoutError;
        let debounce = self.settings().debounce;
        loop {
            let (first, renamed) = match rx.recv_timeout(DIR_CHECK) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // A watched directory that was removed takes its watch
                    // with it; when one comes back (or is replaced), watch it
                    // again and read what it holds.
                    let mut changed = false;
                    let gone: Vec<PathBuf> =
                        std::mem::take(&mut *lost.lock().unwrap_or_else(|e| e.into_inner()));
                    for (dir, id) in &mut watched {
                        let abs_dir = std::path::absolute(&*dir).unwrap_or_else(|_| dir.clone());
                        if gone.contains(&abs_dir) {
                            // Watch lost, whatever the inode says now.
                            *id = None;
                        }
                        let now = dir_id(dir);
                        if now != *id {
                            if now.is_some() {
                                let mut w = watcher.lock().unwrap_or_else(|p| p.into_inner());
                                if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
                                    tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the list directory again");
                                    continue;
                                }
                                tracing::info!(dir = %dir.display(), "list directory is back: watching it again");
                            }
                            *id = now;
                            changed = true;
                        }
                    }
                    if !changed {
                        continue;
                    }
                    (Instant::now(), false)
                }
            };
            if stop.load(Ordering::Relaxed) {
                return;
            }
            // Collect the burst: wait until no event for `debounce`, or for
            // RENAME_QUIET while it holds only renames: a file renamed into
            // place is complete, and the renames of a multi-file push come
            // back to back.
            let mut renames_only = renamed;
            loop {
                let quiet = if renames_only {
                    debounce.min(RENAME_QUIET)
                } else {
                    debounce
                };
                match rx.recv_timeout(quiet) {
                    Ok((_, renamed)) => renames_only &= renamed,
                    Err(_) => break,
                }
            }
            let mut attempts = 0;
            loop {
                let started = Instant::now();
                let base = self.current().version();
                // After an Unsettled retry, settle as usual.
                let settle = !renames_only || attempts > 0;
                match self.reload_inner(false, true, base, settle) {
                    Err(ReloadError::Unsettled(_)) if attempts < 50 => {
                        attempts += 1;
                        std::thread::sleep(self.settings().settle);
                    }
                    Ok(r) => {
                        tracing::info!(
                            version = r.version,
                            change_to_enforced_ms =
                                started.duration_since(first).as_millis() as u64 + r.enforced_ms,
                            incremental = r.incremental,
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

/// Quiet time that ends a burst of renames (see `watch_loop`).
const RENAME_QUIET: Duration = Duration::from_millis(25);

/// How often the watcher checks that its directories are still the ones it
/// watches.
const DIR_CHECK: Duration = Duration::from_secs(1);

/// A directory's inode, to notice it was removed or replaced.
fn dir_id(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| m.ino())
}

/// Keeps list watching alive; dropping it stops the watcher (within a
/// second for the thread).
pub struct ListWatch {
    watcher: Arc<Mutex<notify::RecommendedWatcher>>,
    stop: Arc<AtomicBool>,
}

impl Drop for ListWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Stat every list file twice, `settle` apart; a file whose size or mtime
/// moves is still being written.
pub(super) fn wait_until_settled(paths: &[PathBuf], settle: Duration) -> Result<(), ReloadError> {
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::reload::tests::{blocked, names, settings, wait_blocked, write};
    use super::*;
    use crate::list::reload::ReloadSettings;

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
        write(&list, &text);
        wait_blocked(&r, "new-name.example", Duration::from_secs(5));
        // The one-second bound is asserted end to end in tests/integration/reload.rs.
        assert!(blocked(&r, "www.new-name.example"));
        // A new file in the directory is picked up too.
        fs::write(dir.path().join("lists/extra.txt"), "extra.example\n").expect("write");
        wait_blocked(&r, "extra.example", Duration::from_secs(5));
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
        wait_blocked(&r, "new-name.example", Duration::from_secs(5));
        assert!(blocked(&r, "new-name.example"));
        assert_eq!(r.current().version(), 2);
    }

    #[test]
    fn watcher_follows_a_list_directory_that_is_removed_and_recreated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lists = dir.path().join("lists");
        fs::create_dir_all(&lists).expect("mkdir");
        write(&lists.join("gov.txt"), &names(20, "a"));
        let (r, _) = Reloader::start(settings(dir.path())).expect("start");
        let _w = r.watch().expect("watch");
        // The directory goes (a deploy replacing it, an operator's mistake):
        // the old version keeps serving.
        fs::remove_dir_all(&lists).expect("rm");
        std::thread::sleep(Duration::from_millis(300));
        assert!(blocked(&r, "a5.example"));
        // It comes back with new content: picked up without a SIGHUP.
        fs::create_dir_all(&lists).expect("mkdir");
        let mut text = names(20, "a");
        text.push_str("back-again.example\n");
        write(&lists.join("gov.txt"), &text);
        wait_blocked(&r, "back-again.example", Duration::from_secs(10));
        assert!(
            blocked(&r, "back-again.example"),
            "not reloaded after the directory came back"
        );
        // And it is watched again: a later push is seen too.
        text.push_str("later.example\n");
        write(&lists.join("gov.txt"), &text);
        wait_blocked(&r, "later.example", Duration::from_secs(10));
        assert!(
            blocked(&r, "later.example"),
            "the new directory is not watched"
        );
    }
}
