//! What `state_dir` keeps for a managed list, beside its content in
//! `state_dir/sources/NAME.EXT`: `state_dir/managed/NAME.json` with the
//! version in force (rollback and replay protection across restarts), its
//! sha256, signers, expiry and pull validators. Never inside `sources/`,
//! where every file is read as a list.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::list::Counts;

/// `state_dir/managed/NAME.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMeta {
    pub name: String,
    /// `push` or `pull`.
    pub source: String,
    pub version: u64,
    pub sha256: String,
    pub bytes: u64,
    pub format: String,
    /// The content's file name in `state_dir/sources`.
    pub file: String,
    pub signers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// RFC 3339, from the signed trusted comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    pub enforced_at: String,
    pub rules: usize,
    pub counts: Counts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_seq: Option<u64>,
    /// The pull's conditional-request validators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// Write `bytes` to `path` atomically and durably: a temporary file in
/// the same directory, fsynced, renamed over, and the directory fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// fsync a directory, so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

pub fn meta_path(managed_dir: &Path, name: &str) -> PathBuf {
    managed_dir.join(format!("{name}.json"))
}

/// The saved metadata, `None` when the list was never pushed or pulled.
/// An unreadable file is an error: treating it as "no version" would let
/// an old version be replayed.
pub fn load_meta(managed_dir: &Path, name: &str) -> Result<Option<ListMeta>, String> {
    let path = meta_path(managed_dir, name);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

pub fn save_meta(managed_dir: &Path, meta: &ListMeta) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
    write_atomic(&meta_path(managed_dir, &meta.name), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_absent_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_meta(dir.path(), "afm").unwrap(), None);
        let m = ListMeta {
            name: "afm".into(),
            version: 7,
            expires: Some("2027-01-01T00:00:00Z".into()),
            ..ListMeta::default()
        };
        save_meta(dir.path(), &m).unwrap();
        assert_eq!(load_meta(dir.path(), "afm").unwrap(), Some(m));
        // Only the file itself: the temporary one is renamed away.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(meta_path(dir.path(), "bad"), "{").unwrap();
        assert!(load_meta(dir.path(), "bad").is_err());
    }
}
