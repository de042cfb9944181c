//! The writer: a lock-free queue from the query path to one thread that
//! orders, renders, chains, writes, rotates, fsyncs and prunes.
//!
//! # Producers
//!
//! A record's seq comes from one atomic counter (`fetch_add`), and the
//! record goes into an unbounded lock-free MPSC queue; no lock is taken on
//! the query path. Two producers can therefore hand their records over in
//! the opposite order of their seqs, so the writer keeps a small reorder
//! buffer and writes strictly in seq order. Every seq handed out is
//! *resolved* promptly and without waiting: either its record is queued,
//! or — when the queue is full — the seq goes into a shared set of lost
//! seqs (the only lock, taken only on overflow). The writer closes each run
//! of lost seqs with a `lost` record that takes the run's last seq, so the
//! sequence stays dense: each seq is either a line or inside exactly one
//! `lost` range, and a full queue is never silent.
//!
//! The queue bound (`queue_capacity`) is a window of seqs ahead of the
//! writer: a record whose seq is `queue_capacity` or more past the first
//! seq the writer has not finished is lost. That bounds memory (queue plus
//! reorder buffer) exactly like a bounded channel, without a shared
//! occupancy counter.
//!
//! Count checkpoints sit at fixed seqs (every `checkpoint_every + 1`-th
//! seq after the `start` record) that producers skip; the writer writes the
//! checkpoint when it reaches that seq, so it lands exactly in place without
//! draining anything. The writer's own records (timed checkpoints,
//! retention, shutdown) take seqs from the same counter and first write
//! everything below them. Shutdown sets a bit in the counter, so no
//! producer can take a seq after the final checkpoint's.
//!
//! # Waking the writer
//!
//! The writer wakes at most every [`BATCH_WINDOW`] under load: after a
//! round that wrote something it naps for that long while records pile up,
//! then drains everything queued, renders it into one buffer and writes it
//! with one `write`. Producers wake it only when it is idle (parked with an
//! empty queue: the first record after a quiet spell is written at once)
//! or when the queue is more than half full during a nap. Flush and
//! shutdown always wake it.
//!
//! # Layout
//!
//! This file holds the handle, the shared queue state and the writer
//! thread's loop (wake-ups, draining, timed checkpoints, flush and
//! shutdown). The rest is split by concern: `order` (writing strictly in
//! seq order, lost runs, stale seqs), `render` (a record as a JSON line),
//! `batch` (lines into one write, and accounting for one that fails),
//! `rotation` (the files: create, rotate, write, fsync, abandon),
//! `retention` (deleting the oldest files), `resume` (where the chain
//! continues after a restart) and `seq_ranges` (lost seqs as ranges).

mod batch;
mod order;
mod render;
mod resume;
mod retention;
mod rotation;
mod seq_ranges;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU64,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::anchor::{AnchorClient, AnchorStats};
use super::config::{AuditPath, AuditSettings, ClientMode, load_key};
use super::record::{Hash, TornRef, key_id};
use super::sign::AuditSigner;
use super::time::{day_of, now_micros};
use super::{AuditError, AuditStats, ConsoleRecord, HitRecord, ListRecord};
use batch::{Dropped, LineMeta, Persisted};
use render::{Line, Meta};
use resume::{Resume, resume_dir};
use rotation::{DirSink, Sink};
use seq_ranges::SeqRanges;

// `lost` record reasons, as bits (a run can have both).
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
/// How long records may accumulate after a busy round before the writer
/// looks again: bounds wake-ups and `write` calls to about 500/s under any
/// load, while a full default queue (65536) would take over a second to
/// fill even at 50,000 hits/s.
const BATCH_WINDOW: Duration = Duration::from_millis(2);
/// Poll interval while the next seq is held by a producer between taking
/// it and handing its record over (normally nanoseconds; a preempted
/// producer can take longer).
const IN_FLIGHT_POLL: Duration = Duration::from_micros(200);
/// A seq still unresolved after this long is written off as lost, so a
/// bug elsewhere can never stop the log (or hang shutdown).
const STALE_AFTER: Duration = Duration::from_secs(5);
/// How long a run of lost seqs may wait for the seq after it to resolve
/// (it may be lost too, and one record per run reads better).
const RUN_WAIT: Duration = Duration::from_millis(1);

/// Set in the seq counter at shutdown: a producer whose `fetch_add`
/// returns it counts its record as lost instead of queueing it.
const CLOSED: u64 = 1 << 63;

/// Writer states, for producers deciding whether to wake it.
const RUNNING: u8 = 0;
/// Parked with nothing queued: the next record wakes it.
const IDLE: u8 = 1;
/// Parked so records accumulate into one write: only a queue more than
/// half full (or flush/shutdown) wakes it early.
const NAPPING: u8 = 2;

/// Handle to the audit log. Cloning is cheap; the writer thread stops when
/// [`AuditLog::shutdown`] or [`AuditLog::flush_and_close`] is called, or when
/// the last handle is dropped (which also flushes and joins).
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Sender<Msg>,
    shared: Arc<Shared>,
    anchor: Option<Arc<super::anchor::Shared>>,
    join: Mutex<Option<JoinHandle<()>>>,
}

#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is a hit; see the variant's comment"
)]
enum Msg {
    /// The record travels inline: one allocation per queue block rather
    /// than a `Box` per record, allocated on one thread and freed on
    /// another.
    Hit {
        seq: u64,
        hit: HitRecord,
    },
    Flush(SyncSender<()>),
    /// A console query to put on the record; written with a seq of its own
    /// at the end of the round, like a checkpoint.
    Console(Box<ConsoleRecord>),
    /// A list change: written, fsynced, then its seq (or `None` when it
    /// could not be written) is sent back.
    List(Box<ListRecord>, SyncSender<Option<u64>>),
    Shutdown,
}

/// Keeps what it holds on a cache line of its own, so producers bumping
/// the seq counter do not keep stealing the line the writer publishes on.
#[repr(align(64))]
struct Line64<T>(T);

/// Written on every record by producers.
struct Hot {
    /// Next seq to hand out, with [`CLOSED`] once the log is closing.
    next: AtomicU64,
    /// Hits accepted into the queue.
    enqueued: AtomicU64,
}

/// Written by the writer once per round, read by producers.
struct Published {
    /// The first seq not yet written or accounted for as lost.
    frontier: AtomicU64,
    /// Hits taken off the queue (written, dropped or late).
    dequeued: AtomicU64,
    state: AtomicU8,
}

struct Shared {
    hot: Line64<Hot>,
    published: Line64<Published>,
    /// The writer thread, for `unpark`; set by the writer before it first
    /// parks.
    writer: OnceLock<Thread>,
    capacity: u64,
    /// The `start` record's seq; count checkpoint seqs are counted from it.
    start_seq: u64,
    /// `checkpoint_every + 1`, or 0 when count checkpoints are off.
    checkpoint_period: u64,
    /// Seqs whose records did not fit in the queue, not yet seen by the
    /// writer. Locked only on overflow and by the writer when
    /// `lost_pending` says there is something.
    lost_seqs: Mutex<SeqRanges>,
    lost_pending: AtomicBool,
    written: AtomicU64,
    lost: AtomicU64,
    write_errors: AtomicU64,
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

impl Shared {
    /// Whether `seq` is reserved for a count checkpoint.
    fn is_checkpoint_seq(&self, seq: u64) -> bool {
        let p = self.checkpoint_period;
        p != 0 && seq > self.start_seq && (seq - self.start_seq) % p == p - 1
    }

    /// Takes the next seq that is not a count checkpoint's, or `None` once
    /// the log is closing. SeqCst: this is the producer's half of the
    /// handshake in [`Writer::wait_for_work`].
    fn take_seq(&self) -> Option<u64> {
        let s = self.hot.0.next.fetch_add(1, SeqCst);
        if s & CLOSED != 0 {
            return None;
        }
        if !self.is_checkpoint_seq(s) {
            return Some(s);
        }
        // Checkpoint seqs are never adjacent (the period is at least 2).
        let s = self.hot.0.next.fetch_add(1, SeqCst);
        (s & CLOSED == 0).then_some(s)
    }

    /// One past the highest seq handed out so far.
    fn taken(&self) -> u64 {
        self.hot.0.next.load(SeqCst) & !CLOSED
    }

    /// Wakes the writer if it is idle, or napping while the queue passes
    /// half full (`window`: how far `seq` is ahead of the writer).
    fn nudge(&self, window: u64) {
        let st = self.published.0.state.load(SeqCst);
        let wake = st == IDLE || (st == NAPPING && window >= self.capacity / 2);
        if wake
            && self
                .published
                .0
                .state
                .compare_exchange(st, RUNNING, SeqCst, Relaxed)
                .is_ok()
        {
            self.unpark();
        }
    }

    /// Wakes the writer whatever it is doing (flush, shutdown, tests).
    fn wake(&self) {
        self.published.0.state.store(RUNNING, SeqCst);
        self.unpark();
    }

    fn unpark(&self) {
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }
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
        let signer = cfg
            .signing_key
            .as_deref()
            .map(AuditSigner::load)
            .transpose()?;
        let mut dir_lock = None;
        let (sink, resume) = match &cfg.path {
            AuditPath::Stdout => (Sink::Stdout(io::stdout()), Resume::fresh()),
            AuditPath::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
                // Before reading the tail: a second writer must not even
                // resume from a chain another process is extending.
                dir_lock = Some(
                    crate::dirlock::lock_dir(dir, "audit log directory")
                        .map_err(|e| AuditError::Locked(e.to_string()))?,
                );
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
        let checkpoint_period = match cfg.checkpoint_every {
            0 => 0,
            n => n.saturating_add(1),
        };
        let shared = Arc::new(Shared {
            hot: Line64(Hot {
                next: AtomicU64::new(start_seq + 1),
                enqueued: AtomicU64::new(0),
            }),
            published: Line64(Published {
                // Until the writer has written `start`, producers measure
                // the window from the first hit's seq.
                frontier: AtomicU64::new(start_seq + 1),
                dequeued: AtomicU64::new(0),
                state: AtomicU8::new(RUNNING),
            }),
            writer: OnceLock::new(),
            capacity: cfg.queue_capacity as u64,
            start_seq,
            checkpoint_period,
            lost_seqs: Mutex::new(SeqRanges::default()),
            lost_pending: AtomicBool::new(false),
            written: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            stall: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
            fail_halfway: AtomicBool::new(false),
        });
        let anchor = cfg.anchor.as_ref().map(AnchorClient::start).transpose()?;
        let anchor_shared = anchor.as_ref().map(AnchorClient::shared);
        let (tx, rx) = channel();
        let resumed_from = resume.resumed_from;
        let mut writer = Writer::new(cfg, key, sink, rx, shared.clone(), resume);
        writer.signer = signer;
        writer.anchor = anchor;
        writer.dir_lock = dir_lock;
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
                anchor: anchor_shared,
                join: Mutex::new(Some(join)),
            }),
        })
    }

    /// Queues one blocked query. Lock-free and never blocks: if the queue
    /// is full the record is counted as lost and its seq becomes part of a
    /// gap that a later `lost` record explains.
    pub fn record(&self, hit: HitRecord) {
        let sh = &*self.inner.shared;
        let Some(seq) = sh.take_seq() else {
            // Closed: the final checkpoint's seq is already taken.
            sh.lost.fetch_add(1, Relaxed);
            return;
        };
        let window = seq.saturating_sub(sh.published.0.frontier.load(Acquire));
        if window >= sh.capacity {
            lock(&sh.lost_seqs).insert(seq, seq);
            // SeqCst: the producer's half of the handshake in
            // `Writer::wait_for_work`, like `take_seq`.
            sh.lost_pending.store(true, SeqCst);
            sh.lost.fetch_add(1, Relaxed);
            sh.nudge(window);
            // The record is freed here, outside any lock.
            return;
        }
        // Counted before the send so `queue_depth` never goes negative.
        sh.hot.0.enqueued.fetch_add(1, Relaxed);
        if self.inner.tx.send(Msg::Hit { seq, hit }).is_err() {
            // The writer thread is gone (it can only have panicked), so
            // nothing will write this or any later record: count it.
            sh.hot.0.enqueued.fetch_sub(1, Relaxed);
            sh.lost.fetch_add(1, Relaxed);
            return;
        }
        sh.nudge(window);
    }

    /// Counters for metrics.
    pub fn stats(&self) -> AuditStats {
        let sh = &*self.inner.shared;
        // Dequeued first: read the other way round, a record taken off the
        // queue in between would count as dequeued but not enqueued.
        let dequeued = sh.published.0.dequeued.load(Relaxed);
        let enqueued = sh.hot.0.enqueued.load(Relaxed);
        AuditStats {
            enqueued,
            written: sh.written.load(Relaxed),
            lost: sh.lost.load(Relaxed),
            queue_depth: enqueued.saturating_sub(dequeued),
            write_errors: sh.write_errors.load(Relaxed),
        }
    }

    /// Puts a console query on the record (who looked at what, and how
    /// many records it returned). Not for the query path: it costs the
    /// writer a round. After the log is closed it is dropped.
    pub fn record_console(&self, rec: ConsoleRecord) {
        if self.inner.tx.send(Msg::Console(Box::new(rec))).is_ok() {
            self.inner.shared.wake();
        }
    }

    /// Puts a list change on the record and waits until it is written and
    /// fsynced; returns its seq. Blocks the caller (not for the query path
    /// or an async task: use `spawn_blocking`). Never dropped for a full
    /// queue; an error means the log could not write it (closed, or the
    /// disk refused it), and the caller must not claim it was recorded.
    pub fn record_list(&self, rec: ListRecord) -> Result<u64, AuditError> {
        let (tx, rx) = sync_channel(1);
        if self.inner.tx.send(Msg::List(Box::new(rec), tx)).is_err() {
            return Err(AuditError::Internal("the audit log is closed".into()));
        }
        self.inner.shared.wake();
        match rx.recv() {
            Ok(Some(seq)) => Ok(seq),
            Ok(None) => Err(AuditError::Internal(
                "the list record could not be written to the audit log".into(),
            )),
            Err(_) => Err(AuditError::Internal("the audit log closed".into())),
        }
    }

    /// Anchor client counters (`None` without `anchor_url`).
    pub fn anchor_stats(&self) -> Option<AnchorStats> {
        self.inner.anchor.as_ref().map(|a| a.stats())
    }

    /// Writes and fsyncs everything queued so far. Blocks the caller (not
    /// for the query path).
    pub fn flush(&self) {
        let (tx, rx) = sync_channel(1);
        if self.inner.tx.send(Msg::Flush(tx)).is_ok() {
            self.inner.shared.wake();
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
        sh.wake();
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
            self.shared.wake();
            let _ = h.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
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
    /// Signs `start` and `checkpoint` records (`[audit] signing_key`).
    signer: Option<AuditSigner>,
    /// Where signed lines go once fsynced (`[audit] anchor_url`).
    anchor: Option<AnchorClient>,
    /// Signed lines written but not yet fsynced: (seq, line).
    anchor_pending: Vec<(u64, Vec<u8>)>,
    /// The audit directory's lock, released when the writer stops.
    dir_lock: Option<crate::dirlock::DirLock>,

    head: Hash,
    session_records: u64,
    session_lost: u64,
    persisted: Persisted,
    batch: Vec<u8>,
    lines: Vec<LineMeta>,
    /// A rendered line set aside while the batch before it is written.
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

    /// The next seq to write: everything below it is written or
    /// accounted for as lost.
    frontier: u64,
    /// Hits that arrived ahead of a seq a producer still holds.
    reorder: BTreeMap<u64, HitRecord>,
    /// Lost seqs taken over from `Shared::lost_seqs`, not yet written.
    lost_seqs: SeqRanges,
    /// A seq the writer took for a record of its own and is writing
    /// everything below first.
    reserved: Option<u64>,
    /// Hits taken off the queue, published as `Published::dequeued`.
    dequeued: u64,
    /// The frontier seq the writer is waiting for, and since when.
    blocked: Option<(u64, Instant)>,
    /// The start of a lost run waiting to see whether it grows, and since
    /// when.
    run_wait: Option<(u64, Instant)>,
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
            signer: None,
            anchor: None,
            anchor_pending: Vec::new(),
            dir_lock: None,
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
            frontier: resume.next_seq,
            reorder: BTreeMap::new(),
            lost_seqs: SeqRanges::default(),
            reserved: None,
            dequeued: 0,
            blocked: None,
            run_wait: None,
            peeked: None,
            deferred: Vec::new(),
            last_warn: None,
            warn_suppressed: 0,
        }
    }

    fn run(mut self, start_seq: u64, resumed_from: Option<u64>) {
        // Producers unpark the writer through this; set before it can park.
        let _ = self.shared.writer.set(std::thread::current());
        self.refresh();
        self.emit(start_seq, start_seq, Line::Start { resumed_from });
        self.frontier = start_seq + 1;
        self.flush_batch();
        self.fsync();
        self.release_anchors();
        self.publish();
        let tick = if self.fsync_every.is_zero() {
            MAX_TICK
        } else {
            self.fsync_every.min(MAX_TICK)
        };
        let mut nap_until = None;
        let mut shutdown = false;
        while !shutdown {
            while self.shared.stall.load(Relaxed) {
                self.shared.stalled.store(true, Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
            self.shared.stalled.store(false, Relaxed);
            if let Some(until) = nap_until.take() {
                self.nap(until);
            }
            self.wait_for_work(tick);
            self.refresh();
            let n = self.drain(MAX_BATCH_MSGS);
            self.check_stale();
            if let Some(reason) = self.checkpoint_due() {
                self.inject(Meta::Checkpoint(reason));
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
            self.release_anchors();
            self.publish();
            // A full round means more is waiting: no nap then.
            if n > 0 && n < MAX_BATCH_MSGS {
                nap_until = Some(Instant::now() + BATCH_WINDOW);
            }
        }
        self.finish();
    }

    fn refresh(&mut self) {
        self.now = now_micros();
        self.today = day_of(self.now);
        self.failing = self.backoff_until.is_some_and(|t| Instant::now() < t);
    }

    /// Tells producers how far the writer has got (the queue window) and
    /// how many hits it has taken (`queue_depth`).
    fn publish(&self) {
        let p = &self.shared.published.0;
        p.frontier.store(self.frontier, Release);
        p.dequeued.store(self.dequeued, Relaxed);
    }

    fn set_state(&self, state: u8) {
        self.shared.published.0.state.store(state, SeqCst);
    }

    /// Lets records accumulate until `until`, unless a producer finds the
    /// queue half full or a flush/shutdown comes in.
    fn nap(&self, until: Instant) {
        self.set_state(NAPPING);
        loop {
            let now = Instant::now();
            // Anyone who wants the writer sets RUNNING before unparking;
            // other returns from `park_timeout` are spurious.
            if now >= until || self.shared.published.0.state.load(SeqCst) != NAPPING {
                break;
            }
            std::thread::park_timeout(until - now);
        }
        self.set_state(RUNNING);
    }

    /// Parks until a producer, a flush or shutdown wakes the writer, or for
    /// at most `tick` (fsync and checkpoint timers).
    fn wait_for_work(&mut self, tick: Duration) {
        if self.has_input() {
            return;
        }
        // Handshake with producers, all SeqCst: the writer announces IDLE
        // and then looks at the queue and the seq counter; a producer takes
        // its seq, hands the record over and then looks at the state. So
        // either the producer sees IDLE and unparks us, or we see its seq.
        self.set_state(IDLE);
        let in_flight = self.frontier < self.shared.taken();
        if !self.has_input() {
            // With a seq out whose record has not arrived, it will in
            // moments, but its producer may have looked at the state before
            // we set IDLE: poll rather than sleep a whole tick.
            std::thread::park_timeout(if in_flight { IN_FLIGHT_POLL } else { tick });
        }
        self.set_state(RUNNING);
    }

    fn has_input(&mut self) -> bool {
        if self.peeked.is_some()
            || !self.deferred.is_empty()
            || self.shared.lost_pending.load(SeqCst)
        {
            return true;
        }
        match self.rx.try_recv() {
            Ok(m) => {
                self.peeked = Some(m);
                true
            }
            Err(_) => false,
        }
    }

    /// Takes up to `max` hits off the queue and writes (into the batch)
    /// whatever is in seq order; flush and shutdown requests wait for the
    /// end of the round. Returns the number of hits taken.
    fn drain(&mut self, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let msg = match self.peeked.take() {
                Some(m) => m,
                None => match self.rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            match msg {
                Msg::Hit { seq, hit } => {
                    n += 1;
                    self.accept(seq, hit);
                    if self.batch.len() >= MAX_BATCH_BYTES {
                        self.flush_batch();
                        self.publish();
                    }
                }
                other => self.deferred.push(other),
            }
        }
        self.advance();
        n
    }

    /// Answers flush requests (and notes shutdown) once everything queued
    /// before them is written and fsynced. Returns true on shutdown.
    fn run_deferred(&mut self) -> bool {
        if self.deferred.is_empty() {
            return false;
        }
        // Console records first, so a flush requested after one covers it.
        let (console, rest): (Vec<Msg>, Vec<Msg>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|m| matches!(m, Msg::Console(_) | Msg::List(..)));
        self.deferred = rest;
        let errors_before = self.shared.write_errors.load(Relaxed);
        let mut list_acks = Vec::new();
        for m in console {
            match m {
                Msg::Console(rec) => {
                    self.inject(Meta::Console(rec));
                }
                Msg::List(rec, ack) => {
                    let seq = self.inject(Meta::List(rec));
                    list_acks.push((seq, ack));
                }
                _ => {}
            }
        }
        // Every record whose `record` call returned before the request has
        // a seq below this.
        let upto = self.shared.taken();
        self.settle(upto);
        self.flush_batch();
        self.fsync();
        // Written and fsynced only when the line reached the file and no
        // write or fsync failed since it was rendered.
        let clean = self.shared.write_errors.load(Relaxed) == errors_before;
        for (seq, ack) in list_acks {
            let durable = seq.filter(|s| clean && self.persisted.last_seq >= Some(*s));
            let _ = ack.send(durable);
        }
        let mut shutdown = false;
        for m in std::mem::take(&mut self.deferred) {
            match m {
                Msg::Flush(ack) => {
                    let _ = ack.send(());
                }
                Msg::Shutdown => shutdown = true,
                Msg::Hit { .. } | Msg::Console(_) | Msg::List(..) => {}
            }
        }
        shutdown
    }

    /// Timed checkpoints (count checkpoints have their own seqs).
    fn checkpoint_due(&self) -> Option<&'static str> {
        if self.failing || self.since_checkpoint == 0 {
            return None;
        }
        match self.checkpoint_interval {
            Some(iv) if self.last_checkpoint.elapsed() >= iv => Some("interval"),
            _ => None,
        }
    }

    /// Writes a record of the writer's own in seq order: takes a seq, then
    /// first writes everything below it. Returns the seq used.
    fn inject(&mut self, meta: Meta) -> Option<u64> {
        // None only once closed, and only `finish` closes.
        let m = self.shared.take_seq()?;
        self.reserved = Some(m);
        self.settle(m);
        self.reserved = None;
        match meta {
            Meta::Checkpoint(reason) => self.emit(m, m, Line::Checkpoint { reason }),
            Meta::Console(rec) => self.emit(m, m, Line::Console(&rec)),
            Meta::List(rec) => self.emit(m, m, Line::List(&rec)),
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
        self.frontier = m + 1;
        // Hits above m that arrived meanwhile.
        self.advance();
        Some(m)
    }

    /// Closes the log to producers (no seq can be taken after the final
    /// checkpoint's), writes everything they queued before that, then the
    /// final checkpoint, and fsyncs.
    fn finish(&mut self) {
        let m = self.shared.hot.0.next.fetch_or(CLOSED, SeqCst) & !CLOSED;
        // One last attempt whatever the backoff says.
        self.backoff_until = None;
        self.refresh();
        self.reserved = Some(m);
        self.settle(m);
        self.reserved = None;
        self.emit(m, m, Line::Checkpoint { reason: "shutdown" });
        self.frontier = m + 1;
        self.flush_batch();
        self.fsync();
        self.close_current();
        self.release_anchors();
        self.publish();
        if let Some(d) = self.dropped {
            self.warn(&format!(
                "audit log closed with records seq {}..={} unwritten",
                d.first, d.last
            ));
        }
        // Flush requests that came in while closing: everything is written.
        while let Ok(m) = self.rx.try_recv() {
            self.deferred.push(m);
        }
        for m in std::mem::take(&mut self.deferred) {
            if let Msg::Flush(ack) = m {
                let _ = ack.send(());
            }
        }
    }

    /// Hands signed lines to the anchor client once they are on disk:
    /// everything persisted is fsynced when nothing is dirty.
    fn release_anchors(&mut self) {
        if self.anchor_pending.is_empty() || self.dirty {
            return;
        }
        let upto = self.persisted.last_seq;
        let Some(anchor) = &self.anchor else {
            self.anchor_pending.clear();
            return;
        };
        let mut keep = Vec::new();
        for (seq, line) in self.anchor_pending.drain(..) {
            if Some(seq) <= upto {
                anchor.push(line);
            } else {
                keep.push((seq, line));
            }
        }
        self.anchor_pending = keep;
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
