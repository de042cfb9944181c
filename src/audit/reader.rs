//! Reading log files: listing, the tail and head of one file (for the
//! writer), and an ordered parallel scan of many files (for the CLI).
//!
//! The scan reads files in large chunks cut at line boundaries on the
//! calling thread and hands each chunk to a small worker pool (one worker
//! per core) that does the expensive part — SHA-256 and JSON parsing. Results
//! come back in order through per-chunk reply channels, so the caller sees
//! one ordered stream while both cores work. At most a fixed number of
//! chunks are in flight: memory stays constant whatever the log size.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::AuditError;
use super::record::file_seq;

/// One log file in chain order.
#[derive(Clone, Debug)]
pub(crate) struct LogFile {
    pub path: PathBuf,
    pub name: String,
    /// Only the bytes `[from, to)` (cut at line starts; `to` past the end
    /// means to the end): the console's index narrows a search to the
    /// lines of the hours it asks for. `None`: the whole file.
    pub range: Option<(u64, u64)>,
}

/// The audit files of `dir` in chain order (by first seq, then name); a
/// plain file is taken as a one-file log.
pub(crate) fn list_files(path: &Path) -> Result<Vec<LogFile>, AuditError> {
    let meta = std::fs::metadata(path).map_err(|e| AuditError::io(path, e))?;
    if meta.is_file() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        return Ok(vec![LogFile {
            path: path.to_path_buf(),
            name,
            range: None,
        }]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| AuditError::io(path, e))? {
        let entry = entry.map_err(|e| AuditError::io(path, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(seq) = file_seq(&name) else { continue };
        files.push((seq, name, entry.path()));
    }
    files.sort();
    Ok(files
        .into_iter()
        .map(|(_, name, path)| LogFile {
            path,
            name,
            range: None,
        })
        .collect())
}

/// The end of one file: its last complete line (if any) and the length of
/// the unterminated bytes after it.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    pub last_line: Option<Vec<u8>>,
    pub torn: u64,
}

/// Reads backwards in growing windows until the last complete line is in
/// view, so resuming costs a few KiB whatever the file size.
pub(crate) fn read_tail(path: &Path) -> io::Result<Tail> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = size.saturating_sub(window);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((size - start) as usize);
        (&mut f).take(size - start).read_to_end(&mut buf)?;
        let whole = start == 0;
        match memchr::memrchr(b'\n', &buf) {
            None if whole => {
                return Ok(Tail {
                    last_line: None,
                    torn: buf.len() as u64,
                });
            }
            None => {}
            Some(end) => {
                let torn = (buf.len() - end - 1) as u64;
                match memchr::memrchr(b'\n', &buf[..end]) {
                    Some(begin) => {
                        return Ok(Tail {
                            last_line: Some(buf[begin + 1..end].to_vec()),
                            torn,
                        });
                    }
                    None if whole => {
                        return Ok(Tail {
                            last_line: Some(buf[..end].to_vec()),
                            torn,
                        });
                    }
                    None => {}
                }
            }
        }
        window = window.saturating_mul(4);
    }
}

/// The first complete line of a file, if it has one.
pub(crate) fn read_first_line(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut f = File::open(path)?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        let from = buf.len();
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
            buf.truncate(from + i);
            return Ok(Some(buf));
        }
    }
}

/// What the scan hands to its consumer, in file and line order.
pub(crate) enum Event<R> {
    /// The worker's result for the next run of complete lines of `file`.
    Chunk { file: usize, result: R },
    /// `file` ended; `torn` bytes after its last newline were not a line.
    End { file: usize, torn: u64 },
}

enum Slot<R> {
    Pending(usize, Receiver<(R, Vec<u8>)>),
    End(usize, u64),
}

/// A chunk and where to send its result; the buffer comes back with the
/// result for reuse (fresh 1 MiB buffers cost a page fault per 4 KiB).
type Job<R> = (Vec<u8>, SyncSender<(R, Vec<u8>)>);

const CHUNK: usize = 1 << 20;

fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Reads `files` in order, runs `work` on every chunk of complete lines on a
/// worker pool, and feeds the results to `sink` in order. `sink` may stop
/// the scan early with `ControlFlow::Break`.
pub(crate) fn scan<R, W, S>(files: &[LogFile], work: W, mut sink: S) -> Result<(), AuditError>
where
    R: Send,
    W: Fn(&[u8]) -> R + Sync,
    S: FnMut(Event<R>) -> ControlFlow<()>,
{
    let n = workers();
    let (job_tx, job_rx) = sync_channel::<Job<R>>(n * 2);
    let job_rx = Mutex::new(job_rx);
    std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| {
                loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((data, reply)) = job else { return };
                    // The consumer may have stopped early; nobody to tell.
                    let result = work(&data);
                    let _ = reply.send((result, data));
                }
            });
        }
        // Moving the sender in means every return path closes the job
        // channel, so the workers end and the scope can join them.
        let job_tx = job_tx;
        let mut inflight: VecDeque<Slot<R>> = VecDeque::new();
        let limit = n * 3;
        let mut pool: Vec<Vec<u8>> = Vec::new();
        let deliver = |slot: Slot<R>,
                       sink: &mut S,
                       pool: &mut Vec<Vec<u8>>|
         -> Result<ControlFlow<()>, AuditError> {
            Ok(match slot {
                Slot::Pending(file, rx) => {
                    let (result, mut buf) = rx
                        .recv()
                        .map_err(|_| AuditError::Internal("reader worker died".into()))?;
                    buf.clear();
                    pool.push(buf);
                    sink(Event::Chunk { file, result })
                }
                Slot::End(file, torn) => sink(Event::End { file, torn }),
            })
        };
        for (idx, lf) in files.iter().enumerate() {
            let mut f = File::open(&lf.path).map_err(|e| AuditError::io(&lf.path, e))?;
            let span = match lf.range {
                Some((from, to)) => {
                    f.seek(SeekFrom::Start(from))
                        .map_err(|e| AuditError::io(&lf.path, e))?;
                    to.saturating_sub(from)
                }
                None => u64::MAX,
            };
            let mut f = f.take(span);
            let mut carry: Vec<u8> = Vec::new();
            loop {
                let mut buf = pool
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(CHUNK + 64 * 1024));
                buf.append(&mut carry);
                let eof = fill(&mut f, &mut buf, CHUNK).map_err(|e| AuditError::io(&lf.path, e))?;
                let cut = memchr::memrchr(b'\n', &buf).map(|i| i + 1);
                match cut {
                    Some(c) => {
                        carry = buf.split_off(c);
                        let (tx, rx) = sync_channel(1);
                        if job_tx.send((buf, tx)).is_err() {
                            return Err(AuditError::Internal("reader workers died".into()));
                        }
                        inflight.push_back(Slot::Pending(idx, rx));
                    }
                    None => carry = buf,
                }
                while inflight.len() > limit {
                    if let Some(slot) = inflight.pop_front() {
                        if deliver(slot, &mut sink, &mut pool)?.is_break() {
                            return Ok(());
                        }
                    }
                }
                if eof {
                    inflight.push_back(Slot::End(idx, carry.len() as u64));
                    break;
                }
            }
        }
        while let Some(slot) = inflight.pop_front() {
            if deliver(slot, &mut sink, &mut pool)?.is_break() {
                return Ok(());
            }
        }
        Ok(())
    })
}

/// Reads until `buf` holds at least `want` more bytes or the file ends;
/// returns whether it ended. A line longer than a chunk just grows `buf`.
fn fill(f: &mut impl Read, buf: &mut Vec<u8>, want: usize) -> io::Result<bool> {
    let target = buf.len() + want;
    while buf.len() < target {
        let n = f
            .by_ref()
            .take((target - buf.len()) as u64)
            .read_to_end(buf)?;
        if n == 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Splits a chunk of complete lines (each ending in `\n`) into lines
/// without their terminators.
pub(crate) fn lines(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = chunk;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or(&[]);
        Some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tail_and_head() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        // (content, last complete line, torn bytes, first line)
        type Case<'a> = (&'a [u8], Option<&'a [u8]>, u64, Option<&'a [u8]>);
        let table: &[Case] = &[
            (b"", None, 0, None),
            (b"abc", None, 3, None),
            (b"a\n", Some(b"a"), 0, Some(b"a")),
            (b"a\nbb\ncc", Some(b"bb"), 2, Some(b"a")),
            (b"a\nbb\n", Some(b"bb"), 0, Some(b"a")),
        ];
        for &(content, last, torn, first) in table {
            std::fs::write(&p, content).unwrap();
            let t = read_tail(&p).unwrap();
            assert_eq!(t.last_line.as_deref(), last, "{content:?}");
            assert_eq!(t.torn, torn);
            assert_eq!(read_first_line(&p).unwrap().as_deref(), first);
        }
        // A last line far longer than the first window.
        let long = vec![b'x'; 300_000];
        let mut f = File::create(&p).unwrap();
        f.write_all(b"first\n").unwrap();
        f.write_all(&long).unwrap();
        f.write_all(b"\ntor").unwrap();
        drop(f);
        let t = read_tail(&p).unwrap();
        assert_eq!(t.last_line.unwrap().len(), 300_000);
        assert_eq!(t.torn, 3);
    }

    #[test]
    fn scan_keeps_order_across_chunks_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut want = Vec::new();
        for f in 0..3u64 {
            let mut text = String::new();
            for i in 0..40_000u64 {
                let line = format!("{f}-{i}-{}", "y".repeat((i % 50) as usize));
                text.push_str(&line);
                text.push('\n');
                want.push(line);
            }
            if f == 1 {
                text.push_str("torn");
            }
            std::fs::write(dir.path().join(format!("audit-x-{f:020}.jsonl")), text).unwrap();
        }
        std::fs::write(dir.path().join("README"), "not a log").unwrap();
        let files = list_files(dir.path()).unwrap();
        assert_eq!(files.len(), 3);
        let mut got = Vec::new();
        let mut ends = Vec::new();
        scan(
            &files,
            |chunk| {
                lines(chunk)
                    .map(|l| String::from_utf8(l.to_vec()).unwrap())
                    .collect::<Vec<_>>()
            },
            |ev| {
                match ev {
                    Event::Chunk { result, .. } => got.extend(result),
                    Event::End { file, torn } => ends.push((file, torn)),
                }
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        assert_eq!(got, want);
        assert_eq!(ends, vec![(0, 0), (1, 4), (2, 0)]);
    }
}
