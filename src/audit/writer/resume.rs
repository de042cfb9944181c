//! Where the chain continues after a restart: the last complete record of
//! the newest file, and any torn tails (a crash mid-line) on the way.

use std::path::Path;

use crate::audit::AuditError;
use crate::audit::reader::{list_files, read_tail};
use crate::audit::record::{GENESIS, Hash, TornRef, hash_line, parse_record};

/// Where the chain continues.
pub(super) struct Resume {
    pub(super) next_seq: u64,
    pub(super) head: Hash,
    pub(super) resumed_from: Option<u64>,
    pub(super) torn: Vec<TornRef>,
}

impl Resume {
    pub(super) fn fresh() -> Resume {
        Resume {
            next_seq: 0,
            head: GENESIS,
            resumed_from: None,
            torn: Vec::new(),
        }
    }
}

/// Finds the last complete record in `dir`, newest file first. Unterminated
/// tails passed on the way are torn writes (a crash mid-line); they are left
/// in place as evidence and named in the new `start` record.
pub(super) fn resume_dir(dir: &Path) -> Result<Resume, AuditError> {
    let files = list_files(dir)?;
    let mut torn = Vec::new();
    for f in files.iter().rev() {
        let tail = read_tail(&f.path).map_err(|e| AuditError::io(&f.path, e))?;
        if tail.torn > 0 {
            torn.push(TornRef {
                file: f.name.clone(),
                bytes: tail.torn,
            });
        }
        let Some(line) = tail.last_line else { continue };
        let rec = parse_record(&line).map_err(|e| AuditError::Resume {
            file: f.path.clone(),
            detail: format!(
                "the last complete line is not an audit record ({e}); run `sinkhole audit verify` \
                 and move the damaged file aside"
            ),
        })?;
        torn.reverse();
        return Ok(Resume {
            next_seq: rec.seq + 1,
            head: hash_line(&line),
            resumed_from: Some(rec.seq),
            torn,
        });
    }
    torn.reverse();
    Ok(Resume {
        torn,
        ..Resume::fresh()
    })
}
