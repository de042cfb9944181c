//! The writer: a bounded queue from the query path to one thread that
//! renders, chains, writes, rotates, fsyncs and prunes.
//!
//! Sequence numbers are handed out on the query path, under a mutex held
//! only for the counter bump and a non-blocking `try_send`: that keeps the
//! queue in seq order (so the file is too) and makes every overflow visible
//! as a gap. The writer takes seqs for its own records (checkpoint,
//! retention) from the same counter and first writes everything queued
//! before them. A run of seqs that never reached the file is closed by a
//! `lost` record that takes the run's last seq, so the sequence stays dense:
//! each seq is either a line or inside exactly one `lost` range.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::{AuditPath, AuditSettings, ClientMode, load_key};
use super::reader::{list_files, read_first_line, read_tail};
use super::record::{
    CheckpointLine, GENESIS, Hash, HitLine, LostLine, RetentionLine, StartLine, TornRef, canonical,
    file_name, hash_line, hex32, key_id, parse_record, qtype_name,
};
use super::time::{day_of, format_ts, micros_of, now_micros};
use super::{AuditError, AuditStats, HitRecord};

const REASON_QUEUE: u8 = 1;
const REASON_WRITE: u8 = 2;
const MAX_BATCH_MSGS: usize = 4096;
// Small enough that little sits in memory at a crash, large enough that
// the syscall cost is noise.
const MAX_BATCH_BYTES: usize = 256 * 1024;
const MAX_TICK: Duration = Duration::from_millis(100);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const WARN_EVERY: Duration = Duration::from_secs(10);
const AGE_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Handle to the audit log. Cloning is cheap; the writer thread stops when
/// [`AuditLog::shutdown`] or [`AuditLog::flush_and_close`] is called, or when
/// the last handle is dropped (which also flushes and joins).
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    join: Mutex<Option<JoinHandle<()>>>,
}

enum Msg {
    Hit {
        seq: u64,
        /// Seqs lost to a full queue just before this one.
        lost: Option<(u64, u64)>,
        /// A seq reserved for a count checkpoint just before this one.
        checkpoint: Option<u64>,
        hit: Box<HitRecord>,
    },
    Flush(SyncSender<()>),
    Shutdown,
}

struct SeqState {
    next: u64,
    /// Seqs handed out whose records did not fit in the queue; always the
    /// run just below `next`.
    pending_lost: Option<(u64, u64)>,
    closed: bool,
    /// Count checkpoints: every `checkpoint_every` seqs, the next hit
    /// carries a reserved seq for one. Reserving it here, rather than in
    /// the writer, puts it exactly in place without draining the queue.
    checkpoint_every: u64,
    next_checkpoint: u64,
}

struct Shared {
    seq: Mutex<SeqState>,
    lost_pending: AtomicBool,
    enqueued: AtomicU64,
    written: AtomicU64,
    lost: AtomicU64,
    write_errors: AtomicU64,
    depth: AtomicI64,
    /// Test hooks: stop the writer; make writes fail, wholly or halfway.
    stall: AtomicBool,
    stalled: AtomicBool,
    fail_writes: AtomicBool,
    fail_halfway: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; a poisoned lock still
    // holds consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AuditLog {
    /// Resumes the chain from the newest file (or starts one), writes a
    /// `start` record and starts the writer thread. Fails only when the
    /// chain cannot be resumed (the directory cannot be created or read, the
    /// last record is unreadable) or the HMAC key cannot be read; a
    /// directory that merely cannot be written is retried in the background.
    pub fn open(cfg: &AuditSettings) -> Result<AuditLog, AuditError> {
        let key = match (cfg.client, &cfg.hmac_key_file) {
            (ClientMode::Hmac, Some(p)) => Some(load_key(p)?),
            (ClientMode::Hmac, None) => {
                return Err(AuditError::Config(
                    "client = \"hmac\" needs hmac_key_file".into(),
                ));
            }
            _ => None,
        };
        let (sink, resume) = match &cfg.path {
            AuditPath::Stdout => (Sink::Stdout(io::stdout()), Resume::fresh()),
            AuditPath::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
                let resume = resume_dir(dir)?;
                (
                    Sink::Dir(DirSink {
                        dir: dir.clone(),
                        cur: None,
                    }),
                    resume,
                )
            }
        };
        let start_seq = resume.next_seq;
        let shared = Arc::new(Shared {
            seq: Mutex::new(SeqState {
                next: start_seq + 1,
                pending_lost: None,
                closed: false,
                checkpoint_every: cfg.checkpoint_every,
                next_checkpoint: start_seq.saturating_add(cfg.checkpoint_every),
            }),
            lost_pending: AtomicBool::new(false),
            enqueued: AtomicU64::new(0),
            written: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            depth: AtomicI64::new(0),
            stall: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
            fail_halfway: AtomicBool::new(false),
        });
        let (tx, rx) = sync_channel(cfg.queue_capacity);
        let resumed_from = resume.resumed_from;
        let writer = Writer::new(cfg, key, sink, rx, shared.clone(), resume);
        let join = std::thread::Builder::new()
            .name("sinkhole-audit".into())
            .spawn(move || writer.run(start_seq, resumed_from))
            .map_err(|e| AuditError::Io {
                path: PathBuf::from("<audit writer thread>"),
                source: e,
            })?;
        Ok(AuditLog {
            inner: Arc::new(Inner {
                tx,
                shared,
                join: Mutex::new(Some(join)),
            }),
        })
    }

    /// Queues one blocked query. Never blocks on I/O: if the queue is full
    /// the record is counted as lost and its seq becomes part of a gap that
    /// a later `lost` record explains.
    pub fn record(&self, hit: HitRecord) {
        let sh = &*self.inner.shared;
        let mut st = lock(&sh.seq);
        if st.closed {
            drop(st);
            sh.lost.fetch_add(1, Relaxed);
            return;
        }
        let checkpoint = (st.checkpoint_every > 0 && st.next >= st.next_checkpoint).then(|| {
            st.next += 1;
            st.next - 1
        });
        let seq = st.next;
        st.next += 1;
        sh.depth.fetch_add(1, Relaxed);
        let res = self.inner.tx.try_send(Msg::Hit {
            seq,
            lost: st.pending_lost,
            checkpoint,
            hit: Box::new(hit),
        });
        match res {
            Ok(()) => {
                st.pending_lost = None;
                if checkpoint.is_some() {
                    st.next_checkpoint = seq.saturating_add(st.checkpoint_every);
                }
                drop(st);
                sh.enqueued.fetch_add(1, Relaxed);
            }
            Err(e) => {
                // The reserved checkpoint seq is lost with the hit; the next
                // hit reserves another.
                let first = st.pending_lost.map_or(checkpoint.unwrap_or(seq), |p| p.0);
                st.pending_lost = Some((first, seq));
                drop(st);
                sh.lost_pending.store(true, Relaxed);
                sh.depth.fetch_sub(1, Relaxed);
                sh.lost.fetch_add(1, Relaxed);
                // Free the record outside the lock.
                drop(match e {
                    TrySendError::Full(m) | TrySendError::Disconnected(m) => m,
                });
            }
        }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> AuditStats {
        let sh = &*self.inner.shared;
        AuditStats {
            enqueued: sh.enqueued.load(Relaxed),
            written: sh.written.load(Relaxed),
            lost: sh.lost.load(Relaxed),
            queue_depth: sh.depth.load(Relaxed).max(0) as u64,
            write_errors: sh.write_errors.load(Relaxed),
        }
    }

    /// Writes and fsyncs everything queued so far. Blocks the caller (not
    /// for the query path).
    pub fn flush(&self) {
        let (tx, rx) = sync_channel(1);
        if self.inner.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Writes everything queued, a final checkpoint, fsyncs and joins the
    /// writer. Later `record` calls count as lost. Idempotent.
    pub fn flush_and_close(&self) {
        self.inner.close();
    }

    /// [`AuditLog::flush_and_close`], consuming this handle.
    pub fn shutdown(self) {
        self.inner.close();
    }

    /// Test hook: parks the writer at the top of its loop (returns once it
    /// is parked) or lets it go.
    #[cfg(test)]
    pub(crate) fn set_stalled(&self, on: bool) {
        let sh = &self.inner.shared;
        sh.stall.store(on, Relaxed);
        while on && !sh.stalled.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[cfg(test)]
    pub(crate) fn set_fail_writes(&self, on: bool, halfway: bool) {
        self.inner.shared.fail_halfway.store(halfway, Relaxed);
        self.inner.shared.fail_writes.store(on, Relaxed);
    }
}

impl Inner {
    fn close(&self) {
        let handle = lock(&self.join).take();
        if let Some(h) = handle {
            let _ = self.tx.send(Msg::Shutdown);
            let _ = h.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// Where the chain continues.
struct Resume {
    next_seq: u64,
    head: Hash,
    resumed_from: Option<u64>,
    torn: Vec<TornRef>,
}

impl Resume {
    fn fresh() -> Resume {
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
fn resume_dir(dir: &Path) -> Result<Resume, AuditError> {
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

enum Sink {
    Stdout(io::Stdout),
    Dir(DirSink),
}

struct DirSink {
    dir: PathBuf,
    cur: Option<CurFile>,
}

struct CurFile {
    file: File,
    name: String,
    bytes: u64,
    day: i64,
}

/// One rendered line waiting in the batch, with the state after it (the
/// state to fall back to if a write fails after this line).
struct LineMeta {
    end: usize,
    seq: u64,
    /// First seq this line accounts for: its own, or a `lost` range's first.
    covers_from: u64,
    is_lost: bool,
    head: Hash,
    session_records: u64,
    session_lost: u64,
}

/// State as of the last line that reached the file.
#[derive(Clone, Copy)]
struct Persisted {
    head: Hash,
    last_seq: Option<u64>,
    session_records: u64,
    session_lost: u64,
}

#[derive(Clone, Copy)]
struct Dropped {
    first: u64,
    last: u64,
    reason: u8,
}

enum Line<'a> {
    Hit(&'a HitRecord),
    Start {
        resumed_from: Option<u64>,
    },
    Checkpoint {
        reason: &'a str,
    },
    Lost {
        first: u64,
        reason: u8,
    },
    Retention {
        deleted: &'a [String],
        start_file: &'a str,
        start_seq: u64,
        start_prev: &'a Hash,
    },
}

struct RetentionPlan {
    deleted: Vec<String>,
    paths: Vec<PathBuf>,
    start_file: String,
    start_seq: u64,
    start_prev: Hash,
}

struct Writer {
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    sink: Sink,
    max_file_bytes: u64,
    max_files: u32,
    max_age: Option<Duration>,
    fsync_every: Duration,
    checkpoint_interval: Option<Duration>,
    client_mode: ClientMode,
    mac: Option<Hmac<Sha256>>,
    key_id: Option<String>,

    head: Hash,
    session_records: u64,
    session_lost: u64,
    persisted: Persisted,
    batch: Vec<u8>,
    lines: Vec<LineMeta>,
    scratch: Vec<u8>,
    client_buf: String,

    dropped: Option<Dropped>,
    /// Torn tails of abandoned files, named by the next file's first line.
    pending_torn: Vec<TornRef>,
    torn_carrier: Option<u64>,
    backoff_until: Option<Instant>,
    backoff: Duration,
    failing: bool,

    now: i64,
    today: i64,
    dirty: bool,
    last_fsync: Instant,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    retention_due: bool,
    last_age_check: Instant,

    peeked: Option<Msg>,
    deferred: Vec<Msg>,
    last_warn: Option<Instant>,
    warn_suppressed: u64,
}

impl Writer {
    fn new(
        cfg: &AuditSettings,
        key: Option<Vec<u8>>,
        sink: Sink,
        rx: Receiver<Msg>,
        shared: Arc<Shared>,
        resume: Resume,
    ) -> Writer {
        let mac = key
            .as_deref()
            .and_then(|k| Hmac::<Sha256>::new_from_slice(k).ok());
        let now = now_micros();
        Writer {
            rx,
            shared,
            sink,
            max_file_bytes: cfg.max_file_bytes,
            max_files: cfg.max_files,
            max_age: cfg.max_age,
            fsync_every: cfg.fsync_every,
            checkpoint_interval: cfg.checkpoint_interval,
            client_mode: cfg.client,
            mac,
            key_id: key.as_deref().map(key_id),
            head: resume.head,
            session_records: 0,
            session_lost: 0,
            persisted: Persisted {
                head: resume.head,
                last_seq: resume.resumed_from,
                session_records: 0,
                session_lost: 0,
            },
            batch: Vec::with_capacity(MAX_BATCH_BYTES + 4096),
            lines: Vec::new(),
            scratch: Vec::with_capacity(1024),
            client_buf: String::with_capacity(64),
            dropped: None,
            pending_torn: resume.torn,
            torn_carrier: None,
            backoff_until: None,
            backoff: BACKOFF_MIN,
            failing: false,
            now,
            today: day_of(now),
            dirty: false,
            last_fsync: Instant::now(),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            retention_due: true,
            last_age_check: Instant::now(),
            peeked: None,
            deferred: Vec::new(),
            last_warn: None,
            warn_suppressed: 0,
        }
    }

    fn run(mut self, start_seq: u64, resumed_from: Option<u64>) {
        self.refresh();
        self.emit(start_seq, start_seq, Line::Start { resumed_from });
        self.flush_batch();
        self.fsync();
        let tick = if self.fsync_every.is_zero() {
            MAX_TICK
        } else {
            self.fsync_every.min(MAX_TICK)
        };
        let mut shutdown = false;
        while !shutdown {
            while self.shared.stall.load(Relaxed) {
                self.shared.stalled.store(true, Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
            self.shared.stalled.store(false, Relaxed);
            let first = match self.peeked.take() {
                Some(m) => Some(m),
                None => match self.rx.recv_timeout(tick) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        shutdown = true;
                        None
                    }
                },
            };
            self.refresh();
            if let Some(m) = first {
                shutdown |= self.handle(m);
            }
            let mut n = 0;
            while !shutdown && self.peeked.is_none() && n < MAX_BATCH_MSGS {
                match self.rx.try_recv() {
                    Ok(m) => shutdown |= self.handle(m),
                    Err(_) => break,
                }
                n += 1;
                if self.batch.len() >= MAX_BATCH_BYTES {
                    self.flush_batch();
                }
            }
            if self.shared.lost_pending.load(Relaxed) {
                self.inject(None);
            }
            if let Some(reason) = self.checkpoint_due() {
                self.inject(Some(Meta::Checkpoint(reason)));
            }
            if self.max_age.is_some() && self.last_age_check.elapsed() >= AGE_CHECK_EVERY {
                self.last_age_check = Instant::now();
                self.retention_due = true;
            }
            if self.retention_due && !self.failing {
                self.retention();
            }
            self.flush_batch();
            if self.dirty && self.last_fsync.elapsed() >= self.fsync_every {
                self.fsync();
            }
            shutdown |= self.run_deferred();
        }
        self.finish();
    }

    fn refresh(&mut self) {
        self.now = now_micros();
        self.today = day_of(self.now);
        self.failing = self.backoff_until.is_some_and(|t| Instant::now() < t);
    }

    /// Returns true on shutdown.
    fn handle(&mut self, m: Msg) -> bool {
        match m {
            Msg::Hit {
                seq,
                lost,
                checkpoint,
                hit,
            } => {
                self.shared.depth.fetch_sub(1, Relaxed);
                if let Some((a, b)) = lost {
                    self.emit_lost(a, b, REASON_QUEUE);
                }
                if let Some(c) = checkpoint {
                    self.emit(c, c, Line::Checkpoint { reason: "count" });
                }
                self.emit(seq, seq, Line::Hit(&hit));
                false
            }
            Msg::Flush(ack) => {
                self.flush_batch();
                self.fsync();
                let _ = ack.send(());
                false
            }
            Msg::Shutdown => true,
        }
    }

    fn run_deferred(&mut self) -> bool {
        let mut shutdown = false;
        if self.deferred.is_empty() {
            return false;
        }
        self.flush_batch();
        self.fsync();
        for m in std::mem::take(&mut self.deferred) {
            match m {
                Msg::Flush(ack) => {
                    let _ = ack.send(());
                }
                Msg::Shutdown => shutdown = true,
                Msg::Hit { .. } => {}
            }
        }
        shutdown
    }

    /// Timed checkpoints (count checkpoints are reserved by producers).
    fn checkpoint_due(&self) -> Option<&'static str> {
        if self.failing || self.since_checkpoint == 0 {
            return None;
        }
        match self.checkpoint_interval {
            Some(iv) if self.last_checkpoint.elapsed() >= iv => Some("interval"),
            _ => None,
        }
    }

    /// Writes a record of the writer's own (and any queue loss not yet
    /// written) in seq order: takes a seq, then first writes every queued
    /// record below it. Everything below the seq is already queued or in
    /// `pending_lost`, because producers take a seq and enqueue under the
    /// same lock. Returns the seq used.
    fn inject(&mut self, meta: Option<Meta>) -> Option<u64> {
        let (m, pending) = {
            let mut st = lock(&self.shared.seq);
            let m = st.next;
            if meta.is_some() {
                st.next += 1;
            }
            self.shared.lost_pending.store(false, Relaxed);
            (m, st.pending_lost.take())
        };
        if meta.is_none() && pending.is_none() {
            return None;
        }
        self.drain_below(m);
        if let Some((a, b)) = pending {
            self.emit_lost(a, b, REASON_QUEUE);
        }
        let meta = meta?;
        match meta {
            Meta::Checkpoint(reason) => self.emit(m, m, Line::Checkpoint { reason }),
            Meta::Retention(plan) => self.emit(
                m,
                m,
                Line::Retention {
                    deleted: &plan.deleted,
                    start_file: &plan.start_file,
                    start_seq: plan.start_seq,
                    start_prev: &plan.start_prev,
                },
            ),
        }
        Some(m)
    }

    fn drain_below(&mut self, m: u64) {
        loop {
            let msg = match self.peeked.take() {
                Some(p) => p,
                None => match self.rx.try_recv() {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            match msg {
                Msg::Hit { seq, .. } if seq >= m => {
                    self.peeked = Some(msg);
                    return;
                }
                Msg::Hit { .. } => {
                    self.handle(msg);
                }
                other => self.deferred.push(other),
            }
        }
    }

    fn emit_lost(&mut self, first: u64, last: u64, reason: u8) {
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
    fn emit(&mut self, seq: u64, covers_from: u64, line: Line<'_>) {
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
        if !self.render(seq, &line) {
            self.drop_range(covers_from, seq, u64::from(!is_lost), REASON_WRITE);
            return;
        }
        if self.needs_rotation(self.scratch.len() as u64 + 1) {
            self.flush_batch();
            self.close_current();
            self.retention_due = true;
            if self.failing {
                self.drop_range(covers_from, seq, u64::from(!is_lost), REASON_WRITE);
                return;
            }
        }
        let h = hash_line(&self.scratch);
        self.batch.extend_from_slice(&self.scratch);
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

    fn render(&mut self, seq: u64, line: &Line<'_>) -> bool {
        let prev = hex32(&self.head);
        let prev = prev.as_str();
        let now = format_ts(self.now);
        self.scratch.clear();
        let res = match line {
            Line::Hit(hit) => {
                let ts = format_ts(micros_of(hit.time));
                self.client_buf.clear();
                render_client(&mut self.client_buf, self.mac.as_ref(), hit.client);
                let qtype = qtype_name(hit.qtype);
                serde_json::to_writer(
                    &mut self.scratch,
                    &HitLine {
                        seq,
                        ts: ts.as_str(),
                        kind: "hit",
                        client: &self.client_buf,
                        port: hit.port,
                        transport: hit.transport.as_str(),
                        qname: &hit.qname,
                        qtype: &qtype,
                        action: hit.action,
                        rule: &hit.rule,
                        list: &hit.list,
                        file: &hit.file,
                        line: hit.line,
                        decision: hit.decision.as_deref(),
                        authority: hit.authority.as_deref(),
                        category: hit.category.as_deref(),
                        list_version: hit.list_version,
                        prev,
                    },
                )
            }
            // Start and lost records open a file after a crash or a failed
            // write, so they carry the acknowledgement of torn tails.
            Line::Start { resumed_from } => serde_json::to_writer(
                &mut self.scratch,
                &StartLine {
                    seq,
                    ts: now.as_str(),
                    kind: "start",
                    version: env!("CARGO_PKG_VERSION"),
                    client_mode: self.client_mode.as_str(),
                    key_id: self.key_id.as_deref(),
                    resumed_from: *resumed_from,
                    torn: &self.pending_torn,
                    prev,
                },
            ),
            Line::Checkpoint { reason } => serde_json::to_writer(
                &mut self.scratch,
                &CheckpointLine {
                    seq,
                    ts: now.as_str(),
                    kind: "checkpoint",
                    reason,
                    records: self.session_records,
                    lost: self.session_lost,
                    hash: prev,
                    prev,
                },
            ),
            Line::Lost { first, reason } => serde_json::to_writer(
                &mut self.scratch,
                &LostLine {
                    seq,
                    ts: now.as_str(),
                    kind: "lost",
                    first: *first,
                    last: seq,
                    count: seq - first + 1,
                    reason: match *reason {
                        REASON_QUEUE => "queue_full",
                        REASON_WRITE => "write_error",
                        _ => "queue_full,write_error",
                    },
                    torn: &self.pending_torn,
                    prev,
                },
            ),
            Line::Retention {
                deleted,
                start_file,
                start_seq,
                start_prev,
            } => serde_json::to_writer(
                &mut self.scratch,
                &RetentionLine {
                    seq,
                    ts: now.as_str(),
                    kind: "retention",
                    deleted,
                    start_file,
                    start_seq: *start_seq,
                    start_prev: hex32(start_prev).as_str(),
                    prev,
                },
            ),
        };
        // Serialising plain structs into a Vec cannot fail; if it ever did,
        // the partial line must not reach the file.
        res.is_ok()
    }

    fn needs_rotation(&self, add: u64) -> bool {
        let Sink::Dir(d) = &self.sink else {
            return false;
        };
        let in_file = d.cur.as_ref().map_or(0, |c| c.bytes) + self.batch.len() as u64;
        let new_day = d.cur.as_ref().is_some_and(|c| c.day != self.today);
        new_day || (in_file > 0 && in_file + add > self.max_file_bytes)
    }

    fn close_current(&mut self) {
        if let Sink::Dir(d) = &mut self.sink {
            if let Some(c) = d.cur.take() {
                if self.dirty {
                    if let Err(e) = c.file.sync_data() {
                        self.shared.write_errors.fetch_add(1, Relaxed);
                        self.warn(&format!("fsync {}: {e}", c.name));
                    }
                    self.dirty = false;
                    self.last_fsync = Instant::now();
                }
            }
        }
    }

    /// Writes the batch. On failure, keeps what reached the file, drops the
    /// rest into the lost range, abandons the file (cutting a partial line
    /// off when it can, else naming it as torn) and backs off.
    fn flush_batch(&mut self) {
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

    fn sink_write(&mut self, first_seq: u64, len: usize) -> Result<(), (usize, io::Error)> {
        let buf = &self.batch[..len];
        match &mut self.sink {
            Sink::Stdout(out) => {
                let mut lock = out.lock();
                write_all_counted(&mut lock, buf)?;
                lock.flush().map_err(|e| (len, e))
            }
            Sink::Dir(d) => {
                if d.cur.is_none() {
                    let name = file_name(self.now, first_seq);
                    let path = d.dir.join(&name);
                    let file = OpenOptions::new()
                        .append(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(|e| (0, e))?;
                    // Make the new name itself durable.
                    if let Ok(dirf) = File::open(&d.dir) {
                        let _ = dirf.sync_all();
                    }
                    d.cur = Some(CurFile {
                        file,
                        name,
                        bytes: 0,
                        day: self.today,
                    });
                }
                let Some(c) = &mut d.cur else {
                    return Err((0, io::Error::other("no current file")));
                };
                write_all_counted(&mut c.file, buf)
            }
        }
    }

    /// Leaves a file after a failed write so the next write starts a fresh
    /// one whose first line names any torn tail left behind.
    fn abandon(&mut self, ok_bytes: u64, partial: u64) {
        let halfway_hook = self.shared.fail_halfway.load(Relaxed);
        let Sink::Dir(d) = &mut self.sink else {
            return;
        };
        let Some(c) = d.cur.take() else { return };
        let good = c.bytes + ok_bytes;
        if partial > 0 {
            // The test hook leaves the partial line in place, as a crash
            // or a failing truncate would.
            let cut = !halfway_hook && c.file.set_len(good).is_ok();
            if !cut {
                self.pending_torn.push(TornRef {
                    file: c.name.clone(),
                    bytes: partial,
                });
            }
        }
        let _ = c.file.sync_data();
    }

    fn fsync(&mut self) {
        if !self.dirty {
            return;
        }
        let res = match &mut self.sink {
            Sink::Stdout(_) => Ok(()),
            Sink::Dir(d) => match &d.cur {
                Some(c) => c.file.sync_data(),
                None => Ok(()),
            },
        };
        self.last_fsync = Instant::now();
        self.dirty = false;
        if let Err(e) = res {
            self.shared.write_errors.fetch_add(1, Relaxed);
            self.warn(&format!("audit log fsync failed: {e}"));
        }
    }

    /// Deletes the oldest files beyond `max_files` / `max_age`, after first
    /// writing (and fsyncing) a `retention` record naming them and the record
    /// the chain now starts from. Only a prefix of the oldest files is ever
    /// deleted, so the remaining files stay one unbroken chain.
    fn retention(&mut self) {
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
        let Some(m) = self.inject(Some(Meta::Retention(Box::new(RetentionPlan {
            deleted: plan.deleted.clone(),
            paths: Vec::new(),
            start_file: plan.start_file.clone(),
            start_seq: plan.start_seq,
            start_prev: plan.start_prev,
        })))) else {
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

    /// Writes everything still queued (the queue is closed to producers
    /// first, so nothing can slip in behind), any unrecorded queue loss and
    /// a final checkpoint.
    fn finish(&mut self) {
        let (m, pending) = {
            let mut st = lock(&self.shared.seq);
            st.closed = true;
            let m = st.next;
            st.next += 1;
            (m, st.pending_lost.take())
        };
        // One last attempt whatever the backoff says.
        self.backoff_until = None;
        self.refresh();
        if let Some(p) = self.peeked.take() {
            self.handle(p);
        }
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Hit { .. } => {
                    self.handle(msg);
                }
                other => self.deferred.push(other),
            }
        }
        if let Some((a, b)) = pending {
            self.emit_lost(a, b, REASON_QUEUE);
        }
        self.emit(m, m, Line::Checkpoint { reason: "shutdown" });
        self.flush_batch();
        self.fsync();
        self.close_current();
        if let Some(d) = self.dropped {
            self.warn(&format!(
                "audit log closed with records seq {}..={} unwritten",
                d.first, d.last
            ));
        }
        for m in std::mem::take(&mut self.deferred) {
            if let Msg::Flush(ack) = m {
                let _ = ack.send(());
            }
        }
    }

    fn warn(&mut self, msg: &str) {
        let now = Instant::now();
        if self
            .last_warn
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            self.warn_suppressed += 1;
            return;
        }
        let s = self.shared.as_ref();
        tracing::warn!(
            suppressed = self.warn_suppressed,
            lost = s.lost.load(Relaxed),
            write_errors = s.write_errors.load(Relaxed),
            "{msg}"
        );
        self.last_warn = Some(now);
        self.warn_suppressed = 0;
    }
}

enum Meta {
    Checkpoint(&'static str),
    Retention(Box<RetentionPlan>),
}

fn render_client(out: &mut String, mac: Option<&Hmac<Sha256>>, ip: IpAddr) {
    use std::fmt::Write as _;
    let ip = canonical(ip);
    match mac {
        None => {
            let _ = write!(out, "{ip}");
        }
        Some(mac) => {
            let mut mac = mac.clone();
            match ip {
                IpAddr::V4(a) => mac.update(&a.octets()),
                IpAddr::V6(a) => mac.update(&a.octets()),
            }
            let tag = mac.finalize().into_bytes();
            out.push_str("hmac:");
            out.push_str(&hex::encode(&tag[..16]));
        }
    }
}

/// `write_all` that reports how much got through before an error.
fn write_all_counted(w: &mut dyn Write, buf: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut done = 0;
    while done < buf.len() {
        match w.write(&buf[done..]) {
            Ok(0) => return Err((done, io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((done, e)),
        }
    }
    Ok(())
}
