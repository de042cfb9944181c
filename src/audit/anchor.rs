//! The anchor client: sends every signed `start` and `checkpoint` line, as
//! written, to the witness (`[audit] anchor_url`) from a thread of its own.
//!
//! The writer hands a line over only once it is fsynced (a witness must
//! never hold a checkpoint the log could lose in a power cut, or the log
//! would look rolled back), by pushing it into a bounded in-memory backlog:
//! a lock taken once per checkpoint, never on the hit path, and never
//! waiting for the network. The client posts the backlog oldest first,
//! one line per `POST`, with `Content-Type: application/json`:
//!
//! - 2xx: delivered (200 for a line the witness already holds: resends
//!   after a lost reply are normal);
//! - 4xx: the witness refuses the line (bad signature, unknown key, a seq
//!   that conflicts with what it holds). Counted as `rejected`, logged as
//!   an error, and not retried: resending would not change the answer;
//! - anything else (connection refused, timeout, 5xx): counted as
//!   `failed`, retried with backoff from 500 ms to 30 s.
//!
//! A full backlog drops its oldest line (`dropped`). Nothing of the
//! anchoring is lost by that: each checkpoint commits to the whole chain
//! before it, so the next delivered one anchors everything the dropped one
//! did. The backlog is kept in memory only: after a restart the new signed
//! `start` record and every later checkpoint anchor the chain before them
//! in the same way. At shutdown the client keeps trying for at most
//! [`CLOSE_GRACE`] to deliver the final checkpoint, then gives up with a
//! warning naming how many lines it did not deliver.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::AuditError;
use super::config::AnchorSettings;

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the witness.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Anchor client counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnchorStats {
    /// Lines the witness accepted.
    pub delivered: u64,
    /// Attempts that failed (network, timeout, 5xx) and will be retried.
    pub failed: u64,
    /// Lines the witness refused (4xx); not retried.
    pub rejected: u64,
    /// Lines dropped from a full backlog.
    pub dropped: u64,
    /// Lines waiting.
    pub backlog: u64,
}

struct State {
    queue: VecDeque<Vec<u8>>,
    closing: bool,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    capacity: usize,
    delivered: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn stats(&self) -> AnchorStats {
        AnchorStats {
            delivered: self.delivered.load(Relaxed),
            failed: self.failed.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            backlog: lock(&self.state).queue.len() as u64,
        }
    }
}

/// The writer's end: push lines, close on drop.
pub(crate) struct AnchorClient {
    shared: Arc<Shared>,
    join: Option<JoinHandle<()>>,
}

impl AnchorClient {
    /// Reads the CA file (so a bad one fails `open`) and starts the thread.
    pub(crate) fn start(cfg: &AnchorSettings) -> Result<AnchorClient, AuditError> {
        let ca = match &cfg.ca_file {
            Some(p) => {
                let pem = std::fs::read(p).map_err(|e| AuditError::io(p, e))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    AuditError::Config(format!("audit.anchor_ca_file {}: {e}", p.display()))
                })?;
                if certs.is_empty() {
                    return Err(AuditError::Config(format!(
                        "audit.anchor_ca_file {}: no certificate found",
                        p.display()
                    )));
                }
                Some(certs)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closing: false,
            }),
            wake: Condvar::new(),
            capacity: cfg.backlog,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let (sh, url) = (shared.clone(), cfg.url.clone());
        let join = std::thread::Builder::new()
            .name("sinkhole-anchor".into())
            .spawn(move || run(&sh, &url, ca))
            .map_err(|e| AuditError::Internal(format!("cannot start the anchor thread: {e}")))?;
        Ok(AnchorClient {
            shared,
            join: Some(join),
        })
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Queues one fsynced signed line; drops the oldest when full.
    pub(crate) fn push(&self, line: Vec<u8>) {
        let mut st = lock(&self.shared.state);
        st.queue.push_back(line);
        while st.queue.len() > self.shared.capacity {
            st.queue.pop_front();
            self.shared.dropped.fetch_add(1, Relaxed);
        }
        drop(st);
        self.shared.wake.notify_one();
    }
}

impl Drop for AnchorClient {
    fn drop(&mut self) {
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_one();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

enum Outcome {
    Delivered,
    Rejected(String),
    Failed(String),
}

fn post(client: &reqwest::blocking::Client, url: &str, line: &[u8]) -> Outcome {
    let res = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(line.to_vec())
        .send();
    match res {
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) if r.status().is_client_error() => {
            let status = r.status();
            let mut body = r.text().unwrap_or_default();
            body.truncate(200);
            Outcome::Rejected(format!("{status}: {}", body.trim()))
        }
        Ok(r) => Outcome::Failed(format!("HTTP {}", r.status())),
        Err(e) => Outcome::Failed(error_chain(&e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn build_client(
    ca: Option<Vec<reqwest::Certificate>>,
) -> reqwest::Result<reqwest::blocking::Client> {
    let mut b = reqwest::blocking::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("sinkhole/", env!("CARGO_PKG_VERSION")));
    if let Some(certs) = ca {
        // A private CA is the only trust anchor for the witness.
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
}

fn run(sh: &Shared, url: &str, ca: Option<Vec<reqwest::Certificate>>) {
    let client = match build_client(ca) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "audit anchor client unavailable; checkpoints are not anchored");
            return;
        }
    };
    let mut backoff = BACKOFF_MIN;
    let mut last_warn: Option<Instant> = None;
    let mut close_deadline: Option<Instant> = None;
    loop {
        let line = {
            let mut st = lock(&sh.state);
            loop {
                if st.closing && close_deadline.is_none() {
                    close_deadline = Some(Instant::now() + CLOSE_GRACE);
                }
                if let Some(l) = st.queue.front() {
                    break l.clone();
                }
                if st.closing {
                    return;
                }
                st = sh.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let outcome = post(&client, url, &line);
        let done = !matches!(outcome, Outcome::Failed(_));
        match outcome {
            Outcome::Delivered => {
                sh.delivered.fetch_add(1, Relaxed);
                backoff = BACKOFF_MIN;
            }
            Outcome::Rejected(why) => {
                sh.rejected.fetch_add(1, Relaxed);
                tracing::error!(witness = url, reason = %why, "the witness refused a signed audit checkpoint");
                backoff = BACKOFF_MIN;
            }
            Outcome::Failed(why) => {
                sh.failed.fetch_add(1, Relaxed);
                if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    last_warn = Some(Instant::now());
                    tracing::warn!(witness = url, error = %why, backlog = lock(&sh.state).queue.len(), "cannot reach the audit witness, retrying");
                }
            }
        }
        let mut st = lock(&sh.state);
        if done {
            // The line may have been dropped meanwhile by a full backlog.
            if st.queue.front() == Some(&line) {
                st.queue.pop_front();
            }
            continue;
        }
        if let Some(d) = close_deadline {
            if Instant::now() >= d {
                tracing::warn!(
                    undelivered = st.queue.len(),
                    "stopping with signed audit checkpoints not delivered to the witness"
                );
                return;
            }
        }
        // Back off, unless shutdown begins (then retry at once, briefly).
        let wait = match close_deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(BACKOFF_MIN),
            None => backoff,
        };
        let was_closing = st.closing;
        let (st2, _) = sh
            .wake
            .wait_timeout_while(st, wait, |s| s.closing == was_closing)
            .unwrap_or_else(PoisonError::into_inner);
        drop(st2);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
