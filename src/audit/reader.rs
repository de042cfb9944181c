//! Reading log files: listing, and the tail and head of one file (for the
//! writer).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::AuditError;
use super::record::file_seq;

/// One log file in chain order.
#[derive(Clone, Debug)]
pub(crate) struct LogFile {
    pub path: PathBuf,
    pub name: String,
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
        .map(|(_, name, path)| LogFile { path, name })
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
}
