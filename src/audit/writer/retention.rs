//! Retention: deleting the oldest files beyond `max_files` / `max_age`,
//! only ever a prefix, and only after a `retention` record naming them and
//! the record the chain now starts from has reached the disk.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use crate::audit::reader::{list_files, read_first_line};
use crate::audit::record::{Hash, parse_record};

use super::Writer;
use super::render::Meta;
use super::rotation::Sink;

/// The files to delete and the record the chain starts from after them.
pub(super) struct RetentionPlan {
    pub(super) deleted: Vec<String>,
    pub(super) paths: Vec<PathBuf>,
    pub(super) start_file: String,
    pub(super) start_seq: u64,
    pub(super) start_prev: Hash,
}

impl Writer {
    /// Deletes the oldest files beyond `max_files` / `max_age`, after first
    /// writing (and fsyncing) a `retention` record naming them and the record
    /// the chain now starts from. Only a prefix of the oldest files is ever
    /// deleted, so the remaining files stay one unbroken chain.
    pub(super) fn retention(&mut self) {
        if self.max_files == 0 && self.max_age.is_none() {
            self.retention_due = false;
            return;
        }
        self.flush_batch();
        let plan = match self.plan_retention() {
            Ok(Some(p)) => p,
            Ok(None) => {
                // Nothing to do, or no current file yet: look again after
                // the next rotation or age check.
                let has_cur = matches!(&self.sink, Sink::Dir(d) if d.cur.is_some());
                if has_cur {
                    self.retention_due = false;
                }
                return;
            }
            Err(e) => {
                self.retention_due = false;
                self.warn(&format!("audit retention: {e}"));
                return;
            }
        };
        let Some(m) = self.inject(Meta::Retention(Box::new(RetentionPlan {
            deleted: plan.deleted.clone(),
            paths: Vec::new(),
            start_file: plan.start_file.clone(),
            start_seq: plan.start_seq,
            start_prev: plan.start_prev,
        }))) else {
            return;
        };
        self.flush_batch();
        self.fsync();
        if self.persisted.last_seq.is_none_or(|s| s < m) {
            // The record did not reach the disk: keep the files.
            return;
        }
        self.retention_due = false;
        for p in &plan.paths {
            if let Err(e) = std::fs::remove_file(p) {
                self.warn(&format!("audit retention: remove {}: {e}", p.display()));
                break;
            }
        }
        if let Sink::Dir(d) = &self.sink {
            if let Ok(dirf) = File::open(&d.dir) {
                let _ = dirf.sync_all();
            }
        }
    }

    fn plan_retention(&self) -> io::Result<Option<RetentionPlan>> {
        let Sink::Dir(d) = &self.sink else {
            return Ok(None);
        };
        let Some(cur) = &d.cur else { return Ok(None) };
        let files = list_files(&d.dir).map_err(io::Error::other)?;
        let closed: Vec<_> = files.iter().filter(|f| f.name != cur.name).collect();
        let mut n = 0;
        if self.max_files > 0 {
            n = (closed.len() + 1).saturating_sub(self.max_files as usize);
        }
        if let Some(age) = self.max_age {
            let cutoff = std::time::SystemTime::now().checked_sub(age);
            while let Some(cutoff) = cutoff.filter(|_| n < closed.len()) {
                let old = std::fs::metadata(&closed[n].path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < cutoff);
                if !old {
                    break;
                }
                n += 1;
            }
        }
        if n == 0 {
            return Ok(None);
        }
        // The new chain start is the first complete record after the
        // deleted prefix; fragments without one go with the prefix.
        let mut rest = closed[n..]
            .iter()
            .map(|f| (f.path.clone(), f.name.clone()))
            .chain(std::iter::once((d.dir.join(&cur.name), cur.name.clone())));
        let (start_file, line) = loop {
            let Some((path, name)) = rest.next() else {
                return Ok(None);
            };
            match read_first_line(&path)? {
                Some(l) => break (name, l),
                None if name == cur.name => return Ok(None),
                None => n += 1,
            }
        };
        let rec = parse_record(&line).map_err(io::Error::other)?;
        Ok(Some(RetentionPlan {
            deleted: closed[..n].iter().map(|f| f.name.clone()).collect(),
            paths: closed[..n].iter().map(|f| f.path.clone()).collect(),
            start_file,
            start_seq: rec.seq,
            start_prev: rec.prev,
        }))
    }
}
