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

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
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
        let (tx, rx) = channel();
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

/// Sets of seqs as sorted, disjoint, non-adjacent inclusive ranges.
/// Producers lose seqs nearly in order, so the set stays a handful of
/// ranges however many records a stalled writer costs.
#[derive(Default, Debug, PartialEq, Eq)]
struct SeqRanges(Vec<(u64, u64)>);

impl SeqRanges {
    fn insert(&mut self, a: u64, b: u64) {
        let v = &mut self.0;
        // Seqs stay below 2^63, so `+ 1` cannot overflow.
        // First range that touches or follows [a, b]…
        let i = v.partition_point(|r| r.1 + 1 < a);
        // …and first range wholly after it.
        let j = v.partition_point(|r| r.0 <= b + 1);
        if i == j {
            v.insert(i, (a, b));
        } else {
            let merged = (a.min(v[i].0), b.max(v[j - 1].1));
            v.splice(i..j, [merged]);
        }
    }

    fn first(&self) -> Option<(u64, u64)> {
        self.0.first().copied()
    }

    fn pop_first(&mut self) {
        if !self.0.is_empty() {
            self.0.remove(0);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
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

    fn accept(&mut self, seq: u64, hit: HitRecord) {
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
    fn advance(&mut self) {
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
    fn run_ends(&self, seq: u64) -> bool {
        self.reserved == Some(seq)
            || self.shared.is_checkpoint_seq(seq)
            || self.reorder.contains_key(&seq)
            || seq >= self.shared.taken()
    }

    fn take_lost(&mut self) {
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
    fn settle(&mut self, limit: u64) {
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
    fn check_stale(&mut self) -> bool {
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

    /// Answers flush requests (and notes shutdown) once everything queued
    /// before them is written and fsynced. Returns true on shutdown.
    fn run_deferred(&mut self) -> bool {
        if self.deferred.is_empty() {
            return false;
        }
        // Every record whose `record` call returned before the request has
        // a seq below this.
        let upto = self.shared.taken();
        self.settle(upto);
        self.flush_batch();
        self.fsync();
        let mut shutdown = false;
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
        let res = match line {
            Line::Hit(hit) => {
                let ts = format_ts(micros_of(hit.time));
                self.client_buf.clear();
                render_client(&mut self.client_buf, self.mac.as_ref(), hit.client);
                let qtype = qtype_name(hit.qtype);
                serde_json::to_writer(
                    &mut self.batch,
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
                &mut self.batch,
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
                &mut self.batch,
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
                &mut self.batch,
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
                &mut self.batch,
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

    /// Whether a line of `add` bytes must start a new file, with `batched`
    /// bytes of the batch going to the current one.
    fn needs_rotation(&self, batched: usize, add: u64) -> bool {
        let Sink::Dir(d) = &self.sink else {
            return false;
        };
        let in_file = d.cur.as_ref().map_or(0, |c| c.bytes) + batched as u64;
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
                    let (file, name) =
                        create_file(&d.dir, self.now, first_seq).map_err(|e| (0, e))?;
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
    match (mac, ip) {
        // The common case by far, without the formatting machinery (the
        // same dotted quad `Display` writes).
        (None, IpAddr::V4(a)) => {
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if o >= 100 {
                    out.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    out.push(char::from(b'0' + o / 10 % 10));
                }
                out.push(char::from(b'0' + o % 10));
            }
        }
        (None, IpAddr::V6(_)) => {
            let _ = write!(out, "{ip}");
        }
        (Some(mac), _) => {
            let mut mac = mac.clone();
            match ip {
                IpAddr::V4(a) => mac.update(&a.octets()),
                IpAddr::V6(a) => mac.update(&a.octets()),
            }
            let tag = mac.finalize().into_bytes();
            let mut hex = [0u8; 32];
            out.push_str("hmac:");
            // 16 bytes always fit 32 hex digits, which are ASCII.
            if hex::encode_to_slice(&tag[..16], &mut hex).is_ok() {
                out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
            }
        }
    }
}

/// Creates the file whose first record is `first_seq`. The name can be
/// taken already when a crash came between creating a file and writing its
/// first line, and the restart (which resumes from the line before, so
/// with the same first seq) comes within the same second. An empty file of
/// that name holds nothing and is taken over; one holding only a torn line
/// is evidence and is left alone: the new file is named a second later,
/// which still sorts after it (files order by first seq, then name).
fn create_file(dir: &Path, now: i64, first_seq: u64) -> io::Result<(File, String)> {
    const TRIES: i64 = 5;
    let mut last = None;
    for k in 0..TRIES {
        let name = file_name(now + k * 1_000_000, first_seq);
        let path = dir.join(&name);
        match OpenOptions::new().append(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, name)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == 0) {
                    let f = OpenOptions::new().append(true).open(&path)?;
                    return Ok((f, name));
                }
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free audit file name")))
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

#[cfg(test)]
mod unit_tests {
    use super::{SeqRanges, create_file, render_client};
    use crate::audit::reader::list_files;
    use std::io::Write;

    fn of(seqs: &[u64]) -> SeqRanges {
        let mut r = SeqRanges::default();
        for &s in seqs {
            r.insert(s, s);
        }
        r
    }

    #[test]
    fn merges_in_any_order() {
        assert_eq!(of(&[5, 6, 7]).0, vec![(5, 7)]);
        assert_eq!(of(&[7, 5, 6]).0, vec![(5, 7)]);
        assert_eq!(of(&[9, 5, 7]).0, vec![(5, 5), (7, 7), (9, 9)]);
        assert_eq!(of(&[9, 5, 7, 6, 8]).0, vec![(5, 9)]);
        assert_eq!(of(&[1, 3, 2, 3, 10]).0, vec![(1, 3), (10, 10)]);
        let mut r = of(&[1, 5, 9]);
        r.insert(2, 8);
        assert_eq!(r.0, vec![(1, 9)]);
        r.insert(11, 12);
        r.insert(0, 0);
        assert_eq!(r.0, vec![(0, 9), (11, 12)]);
        r.pop_first();
        assert_eq!(r.first(), Some((11, 12)));
    }

    /// A crash between creating a file and writing to it, then a restart
    /// within the same second, asks for the same name again.
    #[test]
    fn file_name_collisions_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_740_830_400_000_000;
        let (_, a) = create_file(dir.path(), now, 7).unwrap();
        // Empty: taken over.
        let (mut f, b) = create_file(dir.path(), now, 7).unwrap();
        assert_eq!(a, b);
        // Holding a torn line: kept, and the new file sorts after it.
        f.write_all(b"{\"seq\":7").unwrap();
        let (_, c) = create_file(dir.path(), now, 7).unwrap();
        assert_ne!(b, c);
        let names: Vec<_> = list_files(dir.path())
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, vec![b, c]);
    }

    #[test]
    fn client_addresses_render_like_display() {
        let mut out = String::new();
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "192.0.2.7",
            "2001:db8::1",
            "::ffff:10.1.2.3",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            out.clear();
            render_client(&mut out, None, ip);
            assert_eq!(out, ip.to_canonical().to_string());
        }
        for n in 0..=255u8 {
            let ip = std::net::IpAddr::from([n, n / 3, n / 10, 255 - n]);
            out.clear();
            render_client(&mut out, None, ip);
            assert_eq!(out, ip.to_string());
        }
    }
}
