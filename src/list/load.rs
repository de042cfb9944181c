//! Paths → parsed lists → one compiled snapshot, with a report of what was
//! read. Shared by the CLI, the server's start-up and reloads.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::parse::{self, ParseError};
use super::{
    CompileError, Counts, Format, ListOptions, ParsedList, Snapshot, compile::compile_versioned,
};

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("no list files found in {0}")]
    NoFiles(String),
    #[error("{count} line(s) skipped in strict mode; first: {first}")]
    Strict { count: usize, first: String },
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
pub type OptionsFor<'a> = &'a (dyn Fn(&std::path::Path) -> ListOptions + Send + Sync);

/// Parse every file under `paths` (directories are expanded) with `opts`.
pub fn parse_all(paths: &[PathBuf], opts: &ListOptions) -> Result<Vec<ParsedList>, LoadError> {
    parse_all_with(paths, &|_| opts.clone())
}

/// Parse every file under `paths` with options chosen per file.
pub fn parse_all_with(
    paths: &[PathBuf],
    opts_for: OptionsFor<'_>,
) -> Result<Vec<ParsedList>, LoadError> {
    let files = parse::list_files(paths)?;
    if files.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(LoadError::NoFiles(shown.join(", ")));
    }
    files
        .iter()
        .map(|f| parse::parse_file(f, &opts_for(f)).map_err(LoadError::from))
        .collect()
}

/// Load, and compile into a snapshot carrying `version`. With `strict`, any
/// skipped line fails the load.
pub fn load(
    paths: &[PathBuf],
    opts: &ListOptions,
    version: u64,
    strict: bool,
) -> Result<Loaded, LoadError> {
    load_with(paths, &|_| opts.clone(), version, strict)
}

/// [`load`] with options chosen per file.
pub fn load_with(
    paths: &[PathBuf],
    opts_for: OptionsFor<'_>,
    version: u64,
    strict: bool,
) -> Result<Loaded, LoadError> {
    let t0 = Instant::now();
    let lists = parse_all_with(paths, opts_for)?;
    let parse_time = t0.elapsed();
    let skipped: Vec<String> = lists.iter().flat_map(|l| l.skip_messages()).collect();
    if strict && let Some(first) = skipped.first() {
        return Err(LoadError::Strict {
            count: skipped.len(),
            first: first.clone(),
        });
    }
    let t1 = Instant::now();
    let snapshot = compile_versioned(&lists, version)?;
    let compile_time = t1.elapsed();
    let files = lists
        .iter()
        .map(|l| FileReport {
            path: l.path.clone(),
            format: l.format,
            counts: l.counts(),
        })
        .collect();
    Ok(Loaded {
        snapshot,
        files,
        skipped,
        parse_time,
        compile_time,
    })
}
