//! `[lists]` as the list pipeline understands it, validated by `config`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ListOptions;

#[derive(Clone, Debug)]
pub struct ListFileConfig {
    pub path: PathBuf,
    pub options: ListOptions,
}

#[derive(Clone, Debug)]
pub struct ListsConfig {
    pub paths: Vec<PathBuf>,
    pub exact_only: bool,
    pub files: Vec<ListFileConfig>,
    pub max_skipped_ratio: f64,
    pub max_shrink_ratio: f64,
    pub state_dir: Option<PathBuf>,
    pub watch: bool,
    pub debounce: Duration,
}

impl ListsConfig {
    /// Every path to read: `paths` plus `[[lists.file]]` paths not already named.
    pub fn all_paths(&self) -> Vec<PathBuf> {
        let mut paths = self.paths.clone();
        for f in &self.files {
            if !paths.contains(&f.path) {
                paths.push(f.path.clone());
            }
        }
        paths
    }

    /// The options for one list file: a `[[lists.file]]` entry naming the
    /// same path wins, else the global `exact_only`.
    pub fn options_for(&self, path: &Path) -> ListOptions {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let want = canon(path);
        self.files
            .iter()
            .find(|f| f.path == path || canon(&f.path) == want)
            .map(|f| f.options.clone())
            .unwrap_or_else(|| ListOptions {
                exact_only: self.exact_only,
                ..ListOptions::default()
            })
    }
}
