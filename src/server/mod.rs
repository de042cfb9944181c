//! Listeners and the I/O around the query core ([`query`]).
//!
//! Hot path (inline in the UDP worker threads, no allocation): the sans-IO
//! [`query::QueryCore`] parses, checks the ACL, decides, answers from the
//! sinkhole or the packet cache. Only cache misses leave the worker: they
//! become a tokio task (bounded by `server.max_inflight`) that asks the
//! upstreams and sends the reply itself. hickory-server's `Server`
//! was not used: it re-encodes every reply, runs one task per UDP socket and
//! has no bound on in-flight work (see the README's design section).

// Public for the fuzz targets; in a plain test build `server` is private,
// so the harness's `pub` items are unreachable there by design.
#[cfg(any(test, feature = "fuzzing"))]
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))]
pub mod fuzzing;
pub(crate) mod limits;
pub(crate) mod query;
mod tcp;
mod udp;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::sync::{Semaphore, watch};
use tokio::task::AbortHandle;

use crate::acl::Acl;
use crate::audit::AuditLog;
use crate::cache::{CacheConfig, CacheKey};
use crate::forward::{Forwarder, UpstreamConfig, UpstreamQuery};
use crate::list::Snapshot;
use crate::metrics::Metrics;
use crate::policy::PolicyConfig;

use self::limits::LimitsConfig;
use self::query::{Pending, QueryCore};

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: io::Error,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// `[server]`, validated.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    /// Resolved: never 0.
    pub workers: usize,
    pub tcp_idle_timeout: Duration,
    pub tcp_max_connections: usize,
    pub tcp_max_pipeline: usize,
    pub max_inflight: usize,
    pub control_socket: Option<PathBuf>,
}

/// What the listeners and the query path need, validated (the daemon
/// builds it from the configuration).
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub server: ServerConfig,
    pub policy: PolicyConfig,
    pub acl: Vec<ipnet::IpNet>,
    pub cache: CacheConfig,
    pub limits: LimitsConfig,
    pub upstream: UpstreamConfig,
}

/// Everything a query needs, shared by all workers and tasks: the sans-IO
/// core plus the I/O around it (upstreams, waiting clients, in-flight
/// exchanges, TCP connection limits).
pub(crate) struct Shared {
    pub core: QueryCore,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub forwarder: Forwarder,
    /// Every block is recorded here (the hit log); the core holds it as
    /// its [`HitSink`], the shell flushes it at shutdown.
    pub audit: Option<AuditLog>,
    /// Questions on their way upstream, with the clients waiting for them.
    waiting: Mutex<HashMap<CacheKey, Vec<Waiter>>>,
    inflight: Arc<Inflight>,
    /// `limits.tcp_connections_per_client`, when set.
    conns: Option<Arc<limits::ConnLimiter>>,
}

impl Shared {
    pub(crate) fn new(
        settings: &ServerSettings,
        snapshot: Arc<ArcSwap<Snapshot>>,
        audit: Option<AuditLog>,
        metrics: Arc<Metrics>,
    ) -> Shared {
        let hits = audit
            .clone()
            .map(|a| Arc::new(a) as Arc<dyn query::HitSink>);
        Shared {
            core: QueryCore::new(
                settings.policy.clone(),
                Acl::new(&settings.acl),
                &settings.cache,
                &settings.limits,
                metrics.clone(),
                hits,
            ),
            snapshot,
            forwarder: Forwarder::new(&settings.upstream, metrics),
            audit,
            waiting: Mutex::new(HashMap::new()),
            inflight: Arc::new(Inflight {
                max: settings.server.max_inflight,
                live: AtomicUsize::new(0),
                tasks: Mutex::new(VecDeque::new()),
            }),
            conns: limits::ConnLimiter::new(&settings.limits),
        }
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        self.core.metrics()
    }

    /// Ask the upstreams for `p`'s question and cache the answer.
    async fn fetch(&self, p: &Pending) -> Fetched {
        let req = &p.request;
        let q = UpstreamQuery {
            name: req.lower_wire(),
            qtype: req.qtype,
            qclass: req.qclass,
            rd: req.rd(),
            cd: req.cd(),
            ad: req.ad(),
            edns: req.edns.map(|e| e.dnssec_ok),
        };
        match self.forwarder.resolve(&q).await {
            Ok((bytes, scan)) => {
                self.core.store(&p.key, &bytes, &scan, Instant::now());
                Some((bytes, scan))
            }
            Err(e) => {
                tracing::debug!(error = %e, qname = %String::from_utf8_lossy(req.dotted()), "upstream failed");
                None
            }
        }
    }

    /// The reply for one waiting client from a fetched answer, if any.
    fn reply_for(&self, p: &Pending, fetched: &Fetched) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(512);
        let snap = self.snapshot.load();
        let answer = fetched.as_ref().map(|(b, s)| (b.as_slice(), s));
        self.core
            .complete(
                &snap,
                p,
                answer,
                Instant::now(),
                SystemTime::now(),
                &mut out,
            )
            .then_some(out)
    }

    /// Forward a cache miss. A question already on its way upstream is not
    /// asked again: the client waits for that answer. Besides saving the
    /// upstream work this denies a spoofer the many parallel identical
    /// queries a birthday attack needs.
    pub(crate) fn forward(self: &Arc<Self>, rt: &tokio::runtime::Handle, waiter: Waiter) {
        let key = waiter.pending.key.clone();
        {
            let mut map = self.lock_waiting();
            if let Some(list) = map.get_mut(&key) {
                if list.len() < MAX_WAITERS {
                    list.push(waiter);
                } else {
                    self.metrics().shed();
                }
                return;
            }
            map.insert(key.clone(), Vec::new());
        }
        // Made before the task so it is dropped (and the entry removed)
        // even if the task is cancelled before it first runs.
        let mut guard = WaitingGuard {
            shared: self.clone(),
            key,
            done: false,
        };
        self.spawn_forward(rt, async move {
            let shared = guard.shared.clone();
            let fetched = shared.fetch(&waiter.pending).await;
            let others = guard.take();
            for w in std::iter::once(waiter).chain(others) {
                if let Some(reply) = shared.reply_for(&w.pending, &fetched) {
                    w.to.send(reply, w.pending.client).await;
                }
            }
        });
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Vec<Waiter>>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Run one upstream exchange on the runtime. At `max_inflight` the
    /// oldest exchange still running is cancelled (its client gets no
    /// answer and retries) so fresh queries keep being served and the
    /// number of tasks stays bounded.
    fn spawn_forward<F>(&self, rt: &tokio::runtime::Handle, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if self.inflight.live.fetch_add(1, Ordering::AcqRel) >= self.inflight.max
            && self.inflight.cancel_oldest()
        {
            self.metrics().shed();
        }
        let guard = InflightGuard(self.inflight.clone());
        let gauge = self.metrics().inflight();
        let handle = rt.spawn(async move {
            let _guard = (guard, gauge);
            fut.await
        });
        self.inflight.track(handle.abort_handle());
    }

    /// Upstream exchanges running now.
    pub(crate) fn inflight(&self) -> usize {
        self.inflight.live.load(Ordering::Relaxed)
    }
}

/// An upstream answer and its scan, or `None` when no upstream answered.
type Fetched = Option<(Vec<u8>, crate::wire::ResponseScan)>;

/// Clients waiting for one question beyond the first; more are shed.
const MAX_WAITERS: usize = 256;

/// Where a forwarded answer goes.
pub(crate) enum ReplyTo {
    Udp(Arc<std::net::UdpSocket>),
    /// The connection's writer, and the pipeline slot held until the reply.
    Tcp(
        tokio::sync::mpsc::Sender<Vec<u8>>,
        tokio::sync::OwnedSemaphorePermit,
    ),
}

impl ReplyTo {
    async fn send(self, reply: Vec<u8>, to: SocketAddr) {
        match self {
            ReplyTo::Udp(sock) => udp::send_async_reply(&sock, &reply, to),
            ReplyTo::Tcp(tx, _slot) => {
                let _ = tx.send(tcp::frame(&reply)).await;
            }
        }
    }
}

/// A client waiting for an upstream answer.
pub(crate) struct Waiter {
    pub pending: Pending,
    pub to: ReplyTo,
}

struct WaitingGuard {
    shared: Arc<Shared>,
    key: CacheKey,
    done: bool,
}

impl WaitingGuard {
    /// The waiters, once; the entry is gone afterwards, so the next miss
    /// for this question starts a new exchange.
    fn take(&mut self) -> Vec<Waiter> {
        self.done = true;
        self.shared
            .lock_waiting()
            .remove(&self.key)
            .unwrap_or_default()
    }
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        if !self.done {
            // Cancelled: the waiters get no answer (their clients retry).
            let orphans = self.take();
            drop(orphans);
        }
    }
}

/// The running upstream exchanges, oldest first.
struct Inflight {
    max: usize,
    live: AtomicUsize,
    tasks: Mutex<VecDeque<AbortHandle>>,
}

struct InflightGuard(Arc<Inflight>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Inflight {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<AbortHandle>> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn track(&self, h: AbortHandle) {
        let mut q = self.lock();
        while q.front().is_some_and(|h| h.is_finished()) {
            q.pop_front();
        }
        // A long-lived task at the front can hide finished ones behind it.
        if q.len() > 4 * self.max {
            q.retain(|h| !h.is_finished());
        }
        q.push_back(h);
    }

    fn cancel_oldest(&self) -> bool {
        let mut q = self.lock();
        while let Some(h) = q.pop_front() {
            if !h.is_finished() {
                h.abort();
                return true;
            }
        }
        false
    }
}

/// A running server. Dropping it does not stop it; call [`ServerHandle::shutdown`].
pub(crate) struct ServerHandle {
    pub shared: Arc<Shared>,
    /// The addresses actually bound (port 0 resolved).
    pub local_addrs: Vec<SocketAddr>,
    stop_flag: Arc<AtomicBool>,
    stop_tx: watch::Sender<bool>,
    udp_threads: Vec<std::thread::JoinHandle<()>>,
    tcp_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Every open TCP connection holds one permit of this.
    conn_limit: Arc<Semaphore>,
    max_connections: usize,
    /// How long shutdown waits for queries already accepted.
    drain: std::time::Duration,
}

/// The longest shutdown waits for queries in flight, so that with the
/// final audit flush the process is gone well within systemd's and the
/// issue's 5 s even when `upstream.timeout_ms` is long.
pub(crate) const MAX_DRAIN: std::time::Duration = std::time::Duration::from_millis(3000);

impl ServerHandle {
    /// Stop accepting (UDP workers stop reading, TCP listeners close and
    /// connections stop reading), then let what was already accepted finish:
    /// upstream exchanges get their answer or their SERVFAIL at
    /// `upstream.timeout_ms` (at most [`MAX_DRAIN`]), TCP connections write
    /// their last replies. Last, the audit log writes everything queued, a
    /// final checkpoint and fsyncs.
    pub(crate) async fn shutdown(self) {
        self.stop_flag.store(true, Ordering::Relaxed);
        let _ = self.stop_tx.send(true);
        for t in self.tcp_tasks {
            let _ = t.await;
        }
        // The UDP workers first: a batch received just before the stop may
        // still start upstream exchanges, which the drain below must see.
        let threads = self.udp_threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        let deadline = tokio::time::Instant::now() + self.drain;
        loop {
            let busy = self.shared.inflight();
            let conns = self
                .max_connections
                .saturating_sub(self.conn_limit.available_permits());
            if busy == 0 && conns == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    upstream_queries = busy,
                    tcp_connections = conns,
                    "shutdown: gave up waiting for queries in flight"
                );
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Last: every hit of the queries above is queued by now. A final
        // checkpoint, everything written and fsynced.
        if let Some(a) = self.shared.audit.clone() {
            let _ = tokio::task::spawn_blocking(move || a.flush_and_close()).await;
        }
    }
}

/// Bind UDP (one socket per worker) and TCP on one address. With port 0
/// the kernel picks the UDP port and TCP must get the same one; if another
/// program holds that TCP port, try another (a few times).
fn bind_udp_and_tcp(
    addr: SocketAddr,
    workers: usize,
) -> Result<
    (
        Vec<std::net::UdpSocket>,
        tokio::net::TcpListener,
        SocketAddr,
    ),
    ServeError,
> {
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let sockets = udp::bind_all(addr, workers)?;
        let bound = sockets
            .first()
            .and_then(|s| s.local_addr().ok())
            .unwrap_or(addr);
        match tcp::bind(bound) {
            Ok(listener) => return Ok((sockets, listener, bound)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(ServeError::Io(io::Error::other("no address to bind"))))
}

/// Bind every listener and start serving. Must run inside a multi-thread
/// tokio runtime (forwarding and TCP run on it).
pub(crate) fn start(
    config: &ServerSettings,
    snapshot: Arc<ArcSwap<Snapshot>>,
    audit: Option<AuditLog>,
    metrics: Arc<Metrics>,
) -> Result<ServerHandle, ServeError> {
    let shared = Arc::new(Shared::new(config, snapshot, audit, metrics));
    let rt = tokio::runtime::Handle::current();
    let stop_flag = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let conn_limit = Arc::new(Semaphore::new(config.server.tcp_max_connections));
    let mut udp_threads = Vec::new();
    let mut tcp_tasks = Vec::new();
    let mut local_addrs = Vec::new();
    for &addr in &config.server.listen {
        let (sockets, listener, bound) = bind_udp_and_tcp(addr, config.server.workers)?;
        local_addrs.push(bound);
        for (i, sock) in sockets.into_iter().enumerate() {
            let shared = shared.clone();
            let rt = rt.clone();
            let stop = stop_flag.clone();
            let t = std::thread::Builder::new()
                .name(format!("udp-{bound}-{i}"))
                .spawn(move || udp::worker(shared, sock, rt, stop))?;
            udp_threads.push(t);
        }
        tcp_tasks.push(tokio::spawn(tcp::accept_loop(
            shared.clone(),
            listener,
            conn_limit.clone(),
            config.server.clone(),
            stop_rx.clone(),
        )));
        tracing::info!(addr = %bound, workers = config.server.workers, "listening (UDP and TCP)");
    }
    Ok(ServerHandle {
        shared,
        local_addrs,
        stop_flag,
        stop_tx,
        udp_threads,
        tcp_tasks,
        conn_limit,
        max_connections: config.server.tcp_max_connections,
        // An exchange started just before the signal ends by the upstream
        // timeout; a little more lets its reply be written.
        drain: (config.upstream.timeout + std::time::Duration::from_millis(250)).min(MAX_DRAIN),
    })
}
