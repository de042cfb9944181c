//! The files the log is written to: creating the next one (one per day,
//! or when `max_file_bytes` would be passed), writing to it, fsyncing it,
//! and abandoning it after a failed write.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crate::audit::record::{TornRef, file_name};

use super::Writer;

/// Where the lines go.
pub(super) enum Sink {
    Stdout(io::Stdout),
    Dir(DirSink),
}

/// A directory of files, one of them being written.
pub(super) struct DirSink {
    pub(super) dir: PathBuf,
    pub(super) cur: Option<CurFile>,
}

/// The file being written: its name, how much it holds, and the day it
/// belongs to.
pub(super) struct CurFile {
    pub(super) file: File,
    pub(super) name: String,
    pub(super) bytes: u64,
    pub(super) day: i64,
}

impl Writer {
    /// Whether a line of `add` bytes must start a new file, with `batched`
    /// bytes of the batch going to the current one.
    pub(super) fn needs_rotation(&self, batched: usize, add: u64) -> bool {
        let Sink::Dir(d) = &self.sink else {
            return false;
        };
        let in_file = d.cur.as_ref().map_or(0, |c| c.bytes) + batched as u64;
        let new_day = d.cur.as_ref().is_some_and(|c| c.day != self.today);
        new_day || (in_file > 0 && in_file + add > self.max_file_bytes)
    }

    pub(super) fn close_current(&mut self) {
        if let Sink::Dir(d) = &mut self.sink {
            if let Some(c) = d.cur.take() {
                if self.dirty {
                    if let Err(e) = c.file.sync_data() {
                        self.shared.write_errors.fetch_add(1, Relaxed);
                        self.warn(&format!("fsync {}: {e}", c.name));
                    }
                    self.dirty = false;
                    self.last_fsync = Instant::now();
                }
            }
        }
    }

    pub(super) fn sink_write(
        &mut self,
        first_seq: u64,
        len: usize,
    ) -> Result<(), (usize, io::Error)> {
        let buf = &self.batch[..len];
        match &mut self.sink {
            Sink::Stdout(out) => {
                let mut lock = out.lock();
                write_all_counted(&mut lock, buf)?;
                lock.flush().map_err(|e| (len, e))
            }
            Sink::Dir(d) => {
                if d.cur.is_none() {
                    let (file, name) =
                        create_file(&d.dir, self.now, first_seq).map_err(|e| (0, e))?;
                    // Make the new name itself durable.
                    if let Ok(dirf) = File::open(&d.dir) {
                        let _ = dirf.sync_all();
                    }
                    d.cur = Some(CurFile {
                        file,
                        name,
                        bytes: 0,
                        day: self.today,
                    });
                }
                let Some(c) = &mut d.cur else {
                    return Err((0, io::Error::other("no current file")));
                };
                write_all_counted(&mut c.file, buf)
            }
        }
    }

    /// Leaves a file after a failed write so the next write starts a fresh
    /// one whose first line names any torn tail left behind.
    pub(super) fn abandon(&mut self, ok_bytes: u64, partial: u64) {
        let halfway_hook = self.shared.fail_halfway.load(Relaxed);
        let Sink::Dir(d) = &mut self.sink else {
            return;
        };
        let Some(c) = d.cur.take() else { return };
        let good = c.bytes + ok_bytes;
        if partial > 0 {
            // The test hook leaves the partial line in place, as a crash
            // or a failing truncate would.
            let cut = !halfway_hook && c.file.set_len(good).is_ok();
            if !cut {
                self.pending_torn.push(TornRef {
                    file: c.name.clone(),
                    bytes: partial,
                });
            }
        }
        let _ = c.file.sync_data();
    }

    pub(super) fn fsync(&mut self) {
        if !self.dirty {
            return;
        }
        let res = match &mut self.sink {
            Sink::Stdout(_) => Ok(()),
            Sink::Dir(d) => match &d.cur {
                Some(c) => c.file.sync_data(),
                None => Ok(()),
            },
        };
        self.last_fsync = Instant::now();
        self.dirty = false;
        if let Err(e) = res {
            self.shared.write_errors.fetch_add(1, Relaxed);
            self.warn(&format!("audit log fsync failed: {e}"));
        }
    }
}

/// Creates the file whose first record is `first_seq`. The name can be
/// taken already when a crash came between creating a file and writing its
/// first line, and the restart (which resumes from the line before, so
/// with the same first seq) comes within the same second. An empty file of
/// that name holds nothing and is taken over; one holding only a torn line
/// is evidence and is left alone: the new file is named a second later,
/// which still sorts after it (files order by first seq, then name).
fn create_file(dir: &Path, now: i64, first_seq: u64) -> io::Result<(File, String)> {
    const TRIES: i64 = 5;
    let mut last = None;
    for k in 0..TRIES {
        let name = file_name(now + k * 1_000_000, first_seq);
        let path = dir.join(&name);
        match OpenOptions::new().append(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, name)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == 0) {
                    let f = OpenOptions::new().append(true).open(&path)?;
                    return Ok((f, name));
                }
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free audit file name")))
}

/// `write_all` that reports how much got through before an error.
fn write_all_counted(w: &mut dyn Write, buf: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut done = 0;
    while done < buf.len() {
        match w.write(&buf[done..]) {
            Ok(0) => return Err((done, io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((done, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::create_file;
    use crate::audit::reader::list_files;

    /// A crash between creating a file and writing to it, then a restart
    /// within the same second, asks for the same name again.
    #[test]
    fn file_name_collisions_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_740_830_400_000_000;
        let (_, a) = create_file(dir.path(), now, 7).unwrap();
        // Empty: taken over.
        let (mut f, b) = create_file(dir.path(), now, 7).unwrap();
        assert_eq!(a, b);
        // Holding a torn line: kept, and the new file sorts after it.
        f.write_all(b"{\"seq\":7").unwrap();
        let (_, c) = create_file(dir.path(), now, 7).unwrap();
        assert_ne!(b, c);
        let names: Vec<_> = list_files(dir.path())
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, vec![b, c]);
    }
}
