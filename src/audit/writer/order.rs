//! Writing strictly in seq order: hits that arrive ahead of a seq a
//! producer still holds wait in the reorder buffer, count checkpoints are
//! written at their reserved seqs, runs of lost seqs become one `lost`
//! record each, and a seq never handed over is written off after
//! `STALE_AFTER` so the log can never stop.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Instant;

use crate::audit::HitRecord;

use super::render::Line;
use super::{IN_FLIGHT_POLL, MAX_BATCH_MSGS, REASON_QUEUE, RUN_WAIT, STALE_AFTER, Writer, lock};

impl Writer {
    pub(super) fn accept(&mut self, seq: u64, hit: HitRecord) {
        self.dequeued += 1;
        if seq == self.frontier {
            // The common case: in order.
            self.emit(seq, seq, Line::Hit(&hit));
            self.frontier += 1;
            if !self.reorder.is_empty()
                || !self.lost_seqs.is_empty()
                || self.shared.is_checkpoint_seq(self.frontier)
            {
                self.advance();
            }
        } else if seq > self.frontier {
            self.reorder.insert(seq, hit);
        } else {
            // Arrived after `check_stale` wrote its seq off: the `lost`
            // record covering it is written, only the count is left.
            self.shared.lost.fetch_add(1, Relaxed);
        }
    }

    /// Moves the frontier over everything resolved: buffered hits, count
    /// checkpoint seqs that producers have passed, and runs of lost seqs.
    /// Stops at a seq a producer still holds, or one not handed out yet.
    pub(super) fn advance(&mut self) {
        loop {
            let f = self.frontier;
            if let Some(e) = self.reorder.first_entry() {
                if *e.key() == f {
                    let hit = e.remove();
                    self.emit(f, f, Line::Hit(&hit));
                    self.frontier += 1;
                    continue;
                }
            }
            // After shutdown closed the counter, `taken` is meaningless and
            // the reserved seq is the final checkpoint's.
            if self.shared.is_checkpoint_seq(f)
                && f < self.shared.taken()
                && self.reserved != Some(f)
            {
                self.emit(f, f, Line::Checkpoint { reason: "count" });
                self.frontier += 1;
                continue;
            }
            if self.shared.lost_pending.load(Relaxed) {
                self.take_lost();
            }
            let Some((a, b)) = self.lost_seqs.first() else {
                return;
            };
            if b < f {
                // Reported after `check_stale` wrote it off.
                self.lost_seqs.pop_first();
                continue;
            }
            if a > f {
                // f itself is still out.
                return;
            }
            if !self.run_ends(b + 1) {
                // The run may grow: a producer holding b + 1 may be losing
                // it right now, and one `lost` record for the whole run is
                // easier to read. But not for long: while the frontier
                // waits here the queue window stays full, so every new
                // record would be lost and extend the run for ever.
                let since = match self.run_wait {
                    Some((s, t)) if s == f => t,
                    _ => {
                        let t = Instant::now();
                        self.run_wait = Some((f, t));
                        t
                    }
                };
                if since.elapsed() < RUN_WAIT {
                    return;
                }
            }
            self.run_wait = None;
            self.lost_seqs.pop_first();
            self.emit_lost(f, b, REASON_QUEUE);
            self.frontier = b + 1;
        }
    }

    /// Whether a run of lost seqs ending just before `seq` is complete:
    /// `seq` is known not to be lost, or not handed out yet.
    pub(super) fn run_ends(&self, seq: u64) -> bool {
        self.reserved == Some(seq)
            || self.shared.is_checkpoint_seq(seq)
            || self.reorder.contains_key(&seq)
            || seq >= self.shared.taken()
    }

    pub(super) fn take_lost(&mut self) {
        // Cleared before taking, so a report that lands after the take sets
        // it again.
        self.shared.lost_pending.store(false, SeqCst);
        let ranges = std::mem::take(&mut *lock(&self.shared.lost_seqs));
        for (a, b) in ranges.0 {
            self.lost_seqs.insert(a, b);
        }
    }

    /// Writes everything below `limit`, waiting for producers that hold a
    /// seq below it but have not handed its record over yet.
    pub(super) fn settle(&mut self, limit: u64) {
        loop {
            self.drain(MAX_BATCH_MSGS);
            // Producers measure the queue window from this.
            self.publish();
            if self.frontier >= limit {
                return;
            }
            if !self.check_stale() {
                std::thread::park_timeout(IN_FLIGHT_POLL);
            }
        }
    }

    /// Writes off the frontier seq as lost when it has been out for
    /// [`STALE_AFTER`]. Producers resolve a seq right after taking it
    /// without waiting on anything, so this is a safety net, not a path
    /// taken in operation. Returns true if it moved the frontier.
    pub(super) fn check_stale(&mut self) -> bool {
        let f = self.frontier;
        if f >= self.shared.taken() || self.reserved == Some(f) {
            self.blocked = None;
            return false;
        }
        // Blocked on f itself, or on the seq after a run of lost ones.
        let (run, held) = match self.lost_seqs.first() {
            Some((a, b)) if a <= f && b >= f => (true, b + 1),
            _ => (false, f),
        };
        match self.blocked {
            Some((s, since)) if s == held => {
                if since.elapsed() < STALE_AFTER {
                    return false;
                }
            }
            _ => {
                self.blocked = Some((held, Instant::now()));
                return false;
            }
        }
        self.blocked = None;
        if run {
            self.lost_seqs.pop_first();
        }
        self.warn(&format!(
            "audit seq {held} was never handed to the writer; recording it as lost"
        ));
        // Not counted in `lost` here: whichever way it turns up later (a
        // late hit in `accept`, or its producer's own overflow report), it
        // is counted then.
        self.emit_lost(f, held, REASON_QUEUE);
        self.frontier = held + 1;
        self.advance();
        true
    }
}
