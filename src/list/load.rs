//! Paths → parsed lists → one compiled snapshot, with a report of what was
//! read. [`load`] is the only way list files become a snapshot: the CLI
//! (`compile`, `lookup`, `diff`), the server's start-up and every full
//! reload go through it, so they cannot drift apart in what they accept.
//! (An incremental reload starts from a snapshot this built and re-parses
//! only changed lines; see `delta.rs`.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::compile::Builder;
use super::parse::{self, ParseError};
use super::state::FileStat;
use super::{CompileError, Counts, Format, ListOptions, Snapshot};

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("no list files found in {0}")]
    NoFiles(String),
}

/// What one file contributed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub format: Format,
    pub counts: Counts,
}

/// The outcome of a load.
#[derive(Debug)]
pub struct Loaded {
    pub snapshot: Snapshot,
    pub files: Vec<FileReport>,
    /// `FILE:LINE: reason` for every skipped line, in file order.
    pub skipped: Vec<String>,
    pub parse_time: Duration,
    pub compile_time: Duration,
}

impl Loaded {
    pub fn counts(&self) -> Counts {
        self.files
            .iter()
            .fold(Counts::default(), |a, f| a + f.counts)
    }
}

/// Per-file list options (a configuration can set format, action and
/// exact-only per file).
pub type OptionsFor<'a> = &'a (dyn Fn(&Path) -> ListOptions + Send + Sync);

/// One list file as [`load`] read it, shown to the caller before the next
/// file is read. The reloader keeps a byte copy of it (the baseline of the
/// next incremental reload) from exactly the bytes that were parsed, so
/// the copy can never disagree with the snapshot.
pub struct FileRead<'a> {
    /// Position among the files `paths` expanded to.
    pub index: usize,
    pub path: &'a Path,
    pub options: &'a ListOptions,
    /// `stat` taken before reading, when its time is old enough to trust
    /// (a write after it shows as a change next time, never as "unchanged").
    pub stat: Option<FileStat>,
    pub bytes: &'a [u8],
    pub format: Format,
    /// What the file contributed (its name rules were streamed into the
    /// snapshot being built, so no parsed list holds them all).
    pub counts: Counts,
}

/// Called with each file as it is read.
pub type OnRead<'a> = &'a mut dyn FnMut(&FileRead<'_>);

/// Parse every file under `paths` (directories are expanded, in name
/// order) with the options `options_for` gives it, and compile them into a
/// snapshot carrying `version`. `on_read`, if given, sees each file's
/// bytes, format and counts before its bytes are dropped.
pub fn load(
    paths: &[PathBuf],
    options_for: OptionsFor<'_>,
    version: u64,
    mut on_read: Option<OnRead<'_>>,
) -> Result<Loaded, LoadError> {
    let t0 = Instant::now();
    let files = parse::list_files(paths)?;
    if files.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(LoadError::NoFiles(shown.join(", ")));
    }
    // Each file is parsed straight into the builder: its name rules become
    // key bytes and a small row as they are read, and its bytes are
    // dropped before the next file is read.
    let mut builder = Builder::default();
    let mut reports = Vec::with_capacity(files.len());
    let mut skipped = Vec::new();
    for (index, path) in files.iter().enumerate() {
        let options = options_for(path);
        let stat = FileStat::trusted(path);
        let bytes = std::fs::read(path).map_err(|source| ParseError::Io {
            path: path.clone(),
            source,
        })?;
        let (parsed, streamed) = parse::parse_bytes_into(path, &bytes, &options, &mut builder);
        let counts = parsed.counts() + streamed;
        if let Some(observe) = on_read.as_mut() {
            observe(&FileRead {
                index,
                path,
                options: &options,
                stat,
                bytes: &bytes,
                format: parsed.format,
                counts,
            });
        }
        drop(bytes);
        builder.end_list(&parsed.rules, counts)?;
        skipped.extend(parsed.skip_messages());
        reports.push(FileReport {
            path: parsed.path,
            format: parsed.format,
            counts,
        });
    }
    let parse_time = t0.elapsed();
    let t1 = Instant::now();
    let snapshot = builder.finish(version)?;
    let compile_time = t1.elapsed();
    Ok(Loaded {
        snapshot,
        files: reports,
        skipped,
        parse_time,
        compile_time,
    })
}
