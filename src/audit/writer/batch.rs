//! The batch: lines rendered into one buffer and written with one `write`,
//! with the chain state after each line so that a write that fails
//! halfway keeps what reached the file and accounts for the rest as lost.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crate::audit::record::{Hash, hash_line};

use super::render::Line;
use super::rotation::Sink;
use super::{BACKOFF_MAX, BACKOFF_MIN, REASON_WRITE, Writer};

/// One rendered line waiting in the batch, with the state after it (the
/// state to fall back to if a write fails after this line).
pub(super) struct LineMeta {
    pub(super) end: usize,
    pub(super) seq: u64,
    /// First seq this line accounts for: its own, or a `lost` range's first.
    pub(super) covers_from: u64,
    pub(super) is_lost: bool,
    pub(super) head: Hash,
    pub(super) session_records: u64,
    pub(super) session_lost: u64,
}

/// State as of the last line that reached the file.
#[derive(Clone, Copy)]
pub(super) struct Persisted {
    pub(super) head: Hash,
    pub(super) last_seq: Option<u64>,
    pub(super) session_records: u64,
    pub(super) session_lost: u64,
}

/// Seqs that could not be written (a failing sink), waiting to be
/// accounted for by one `lost` record once writing works again.
#[derive(Clone, Copy)]
pub(super) struct Dropped {
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) reason: u8,
}

impl Writer {
    pub(super) fn emit_lost(&mut self, first: u64, last: u64, reason: u8) {
        let (mut first, mut reason) = (first, reason);
        // A write failure that dropped the seqs just before this range: one
        // record for the whole run.
        if let Some(d) = self
            .dropped
            .filter(|d| d.last.checked_add(1) == Some(first))
        {
            self.dropped = None;
            first = d.first;
            reason |= d.reason;
        }
        self.emit(last, first, Line::Lost { first, reason });
    }

    fn drop_range(&mut self, from: u64, to: u64, newly_lost: u64, reason: u8) {
        self.shared.lost.fetch_add(newly_lost, Relaxed);
        match &mut self.dropped {
            Some(d) => {
                d.first = d.first.min(from);
                d.last = d.last.max(to);
                d.reason |= reason;
            }
            None => {
                self.dropped = Some(Dropped {
                    first: from,
                    last: to,
                    reason,
                })
            }
        }
    }

    /// Renders one line into the batch (or accounts it as lost while the
    /// sink is failing), rotating first when it would not fit.
    pub(super) fn emit(&mut self, seq: u64, covers_from: u64, line: Line<'_>) {
        let is_lost = matches!(line, Line::Lost { .. });
        if self.failing {
            self.drop_range(covers_from, seq, u64::from(!is_lost), REASON_WRITE);
            return;
        }
        if !is_lost {
            if let Some(d) = self.dropped.take() {
                // Writing works again: account for what was dropped first.
                self.emit_lost(d.first, d.last, d.reason);
                if self.failing {
                    self.drop_range(covers_from, seq, 1, REASON_WRITE);
                    return;
                }
            }
        }
        // Rendered straight into the batch: no copy per line.
        let mut start = self.batch.len();
        if !self.render(seq, &line) {
            self.batch.truncate(start);
            self.drop_range(covers_from, seq, u64::from(!is_lost), REASON_WRITE);
            return;
        }
        if self.needs_rotation(start, (self.batch.len() - start) as u64 + 1) {
            // The line goes first in the next file: set it aside while the
            // batch before it goes to this one.
            self.scratch.clear();
            self.scratch.extend_from_slice(&self.batch[start..]);
            self.batch.truncate(start);
            self.flush_batch();
            self.close_current();
            self.retention_due = true;
            if self.failing {
                self.drop_range(covers_from, seq, u64::from(!is_lost), REASON_WRITE);
                return;
            }
            start = self.batch.len();
            self.batch.extend_from_slice(&self.scratch);
        }
        let h = hash_line(&self.batch[start..]);
        if self.anchor.is_some()
            && self.signer.is_some()
            && matches!(line, Line::Start { .. } | Line::Checkpoint { .. })
        {
            self.anchor_pending
                .push((seq, self.batch[start..].to_vec()));
        }
        self.batch.push(b'\n');
        self.head = h;
        self.session_records += 1;
        self.since_checkpoint += 1;
        if matches!(line, Line::Start { .. } | Line::Lost { .. }) && !self.pending_torn.is_empty() {
            self.torn_carrier = Some(seq);
        }
        match line {
            Line::Lost { first, .. } => {
                self.session_lost += seq - first + 1;
            }
            Line::Checkpoint { .. } => {
                self.since_checkpoint = 0;
                self.last_checkpoint = Instant::now();
            }
            _ => {}
        }
        self.lines.push(LineMeta {
            end: self.batch.len(),
            seq,
            covers_from,
            is_lost,
            head: h,
            session_records: self.session_records,
            session_lost: self.session_lost,
        });
    }

    /// Writes the batch. On failure, keeps what reached the file, drops the
    /// rest into the lost range, abandons the file (cutting a partial line
    /// off when it can, else naming it as torn) and backs off.
    pub(super) fn flush_batch(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        let first_seq = self.lines[0].seq;
        let res = self.write_out(first_seq);
        let written = match res {
            Ok(()) => {
                self.backoff = BACKOFF_MIN;
                self.backoff_until = None;
                self.batch.len()
            }
            Err((n, e)) => {
                self.shared.write_errors.fetch_add(1, Relaxed);
                self.warn(&format!("audit log write failed, retrying: {e}"));
                n
            }
        };
        let ok_lines = self.lines.iter().take_while(|l| l.end <= written).count();
        let ok_bytes = if ok_lines == 0 {
            0
        } else {
            self.lines[ok_lines - 1].end
        };
        if let Some(l) = ok_lines.checked_sub(1).map(|i| &self.lines[i]) {
            self.persisted = Persisted {
                head: l.head,
                last_seq: Some(l.seq),
                session_records: l.session_records,
                session_lost: l.session_lost,
            };
            self.shared.written.fetch_add(ok_lines as u64, Relaxed);
            self.dirty = true;
            if self.torn_carrier.is_some_and(|s| s <= l.seq) {
                self.torn_carrier = None;
                self.pending_torn.clear();
            }
        }
        if written < self.batch.len() {
            let failed = &self.lines[ok_lines..];
            let newly = failed.iter().filter(|l| !l.is_lost).count() as u64;
            let from = failed[0].covers_from;
            let to = failed[failed.len() - 1].seq;
            self.head = self.persisted.head;
            self.session_records = self.persisted.session_records;
            self.session_lost = self.persisted.session_lost;
            self.torn_carrier = None;
            // Signed lines that did not reach the file are never anchored.
            let kept = self.persisted.last_seq;
            self.anchor_pending.retain(|(s, _)| Some(*s) <= kept);
            self.abandon(ok_bytes as u64, (written - ok_bytes) as u64);
            self.drop_range(from, to, newly, REASON_WRITE);
            let now = Instant::now();
            self.backoff_until = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            self.failing = true;
        } else if let Sink::Dir(d) = &mut self.sink {
            if let Some(c) = &mut d.cur {
                c.bytes += written as u64;
            }
        }
        self.batch.clear();
        self.lines.clear();
    }

    fn write_out(&mut self, first_seq: u64) -> Result<(), (usize, io::Error)> {
        if self.shared.fail_writes.load(Relaxed) {
            let half = if self.shared.fail_halfway.load(Relaxed) {
                self.batch.len() / 2
            } else {
                0
            };
            if half > 0 {
                let _ = self.sink_write(first_seq, half);
            }
            return Err((half, io::Error::other("injected write failure")));
        }
        self.sink_write(first_seq, self.batch.len())
    }
}
