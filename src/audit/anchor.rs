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
            use std::io::Read as _;
            let status = r.status();
            // The reason, for the log: a few hundred bytes at most.
            let mut body = Vec::new();
            let _ = r.take(200).read_to_end(&mut body);
            let body = String::from_utf8_lossy(&body);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::sign::{AuditSigner, SignedKind};
    use crate::http::TlsSettings;
    use crate::witness::{Witness, WitnessOptions};

    const TS: &str = "2025-03-01T12:00:00.000000Z";

    fn checkpoint(s: &AuditSigner, seq: u64) -> Vec<u8> {
        let head = [seq as u8; 32];
        let sig = s
            .sign(SignedKind::Checkpoint, seq, &head, TS, seq - 1, 0)
            .unwrap();
        let h = hex::encode(head);
        format!(
            r#"{{"seq":{seq},"ts":"{TS}","kind":"checkpoint","reason":"count","records":{},"lost":0,"hash":"{h}","sig_pub":"{}","sig":"{}","prev":"{h}"}}"#,
            seq - 1,
            s.public_hex(),
            hex::encode(sig)
        )
        .into_bytes()
    }

    fn wait(client: &AnchorClient, f: impl Fn(&AnchorStats) -> bool) -> AnchorStats {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = client.shared.stats();
            if f(&st) || Instant::now() >= deadline {
                return st;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Over HTTPS to a witness whose certificate only `anchor_ca_file`
    /// vouches for: delivered, a refusal counted as rejected and not
    /// retried; with the witness gone, a full backlog drops its oldest.
    #[test]
    fn delivers_over_tls_with_a_private_ca_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        let node = AuditSigner::from_seed(&[5; 32]);
        let pubfile = dir.path().join("audit.pub");
        std::fs::write(&pubfile, node.public_hex()).unwrap();

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let opts = WitnessOptions {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            dir: dir.path().join("witness"),
            tls: Some(TlsSettings {
                cert: cert.clone(),
                key,
            }),
            allow_keys: vec![pubfile],
        };
        let w = rt.block_on(Witness::bind(&opts)).unwrap();
        let port = w.local_addrs()[0].port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = rt.spawn(w.serve(async {
            let _ = stopped.await;
        }));

        let client = AnchorClient::start(&AnchorSettings {
            url: format!("https://localhost:{port}/v1/checkpoints"),
            ca_file: Some(cert),
            backlog: 2,
        })
        .unwrap();
        client.push(checkpoint(&node, 10));
        client.push(checkpoint(&node, 10));
        let st = wait(&client, |s| s.delivered == 2);
        assert_eq!((st.delivered, st.failed, st.rejected), (2, 0, 0), "{st:?}");
        // Backwards: refused (409), counted, not retried.
        client.push(checkpoint(&node, 5));
        let st = wait(&client, |s| s.rejected == 1);
        assert_eq!((st.rejected, st.backlog), (1, 0), "{st:?}");

        // The witness goes away: lines wait, the oldest go beyond 2.
        let _ = stop.send(());
        rt.block_on(served).unwrap();
        for seq in 20..25 {
            client.push(checkpoint(&node, seq));
        }
        let st = wait(&client, |s| s.failed >= 1);
        assert!(st.failed >= 1, "{st:?}");
        assert_eq!(st.dropped, 3, "{st:?}");
        assert!(st.backlog <= 2, "{st:?}");
        let t = Instant::now();
        drop(client);
        // Shutdown gives an unreachable witness a bounded grace.
        assert!(t.elapsed() < CLOSE_GRACE + Duration::from_secs(2));
        // What the witness kept: seq 10 once.
        let (_, held) = crate::witness::held(&dir.path().join("witness"), node.key_id()).unwrap();
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn a_bad_ca_file_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let cfg = AnchorSettings {
            url: "https://localhost:1/v1/checkpoints".into(),
            ca_file: Some(ca),
            backlog: 4,
        };
        assert!(AnchorClient::start(&cfg).is_err());
        let cfg = AnchorSettings {
            ca_file: Some(dir.path().join("missing.pem")),
            ..cfg
        };
        assert!(AnchorClient::start(&cfg).is_err());
    }
}
