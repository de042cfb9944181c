//! Listeners and the per-query path shared by UDP and TCP.
//!
//! Hot path (inline in the UDP worker threads, no allocation): parse → ACL →
//! policy → sinkhole answer or packet-cache hit. Only cache misses leave the
//! worker: they become a tokio task (bounded by `server.max_inflight`) that
//! asks the upstreams and sends the reply itself. hickory-server's `Server`
//! was not used: it re-encodes every reply, runs one task per UDP socket and
//! has no bound on in-flight work (see the README's design section).

#[doc(hidden)]
pub mod fuzzing;
mod limits;
mod tcp;
mod udp;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::sync::{Semaphore, watch};
use tokio::task::AbortHandle;

use crate::acl::Acl;
use crate::audit::{AuditLog, HitRecord, Transport};
use crate::cache::{self, Cache};
use crate::config::{Config, PolicyConfig};
use crate::forward::{Forwarder, UpstreamQuery};
use crate::list::{RuleId, Snapshot};
use crate::metrics::{self, BlockAction, Limit, Metrics};
use crate::policy::{self, BlockKind, Decision, Query};
use crate::sinkhole;
use crate::wire::{self, Request, RequestError};

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

/// Plain counters, one set for the whole server (exported by a later
/// metrics issue).
#[derive(Debug, Default)]
pub struct Counters {
    pub udp_queries: AtomicU64,
    pub tcp_queries: AtomicU64,
    /// Replies by RCODE (low 4 bits).
    pub rcodes: [AtomicU64; 16],
    pub blocked: AtomicU64,
    /// Blocked because a CNAME target in the upstream answer was.
    pub blocked_cname: AtomicU64,
    /// Blocked with action `drop` (no reply).
    pub dropped_by_policy: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// No upstream answered (SERVFAIL, or a stale answer).
    pub upstream_failures: AtomicU64,
    /// Stale answers served (RFC 8767) when no upstream answered.
    pub stale: AtomicU64,
    /// Packets dropped as garbage (short, or QR=1).
    pub garbage: AtomicU64,
    pub formerr: AtomicU64,
    /// Upstream exchanges cancelled (oldest first) because `max_inflight` was reached.
    pub shed: AtomicU64,
    pub acl_refused: AtomicU64,
    /// Cache misses that joined a query already on its way upstream.
    pub coalesced: AtomicU64,
    /// Replies cut to TC=1 for a UDP client.
    pub truncated: AtomicU64,
    pub tcp_connections: AtomicU64,
    pub tcp_rejected: AtomicU64,
    pub accept_errors: AtomicU64,
}

impl Counters {
    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything a query needs, shared by all workers and tasks.
pub struct Shared {
    pub policy: PolicyConfig,
    pub acl: Acl,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub cache: Cache,
    pub forwarder: Forwarder,
    pub counters: Counters,
    /// Prometheus metrics (labelled counters; cheap atomics on the hot path).
    pub metrics: Arc<Metrics>,
    /// Every block is recorded here (the hit log).
    pub audit: Option<AuditLog>,
    /// Questions on their way upstream, with the clients waiting for them.
    waiting: Mutex<HashMap<Box<[u8]>, Vec<Waiter>>>,
    inflight: Arc<Inflight>,
    /// `limits.qps_per_client`, when set.
    qps: Option<limits::QpsLimiter>,
    /// `limits.tcp_connections_per_client`, when set.
    conns: Option<Arc<limits::ConnLimiter>>,
    /// `cache.serve_stale_secs` (zero: off).
    serve_stale: std::time::Duration,
}

/// What the transport should do after [`Shared::handle`].
pub(crate) enum Outcome {
    /// Send `out`.
    Reply,
    /// Send nothing.
    Silent,
    /// A cache miss: run [`Shared::complete`] somewhere that may wait.
    Forward(Pending),
}

/// A query waiting for an upstream: the request is kept as bytes and
/// re-parsed on completion (cheaper than owning every parsed field).
pub(crate) struct Pending {
    pub packet: Vec<u8>,
    pub client: SocketAddr,
    pub udp: bool,
}

fn key_bits(req: &Request<'_>) -> u8 {
    let mut b = 0;
    if req.dnssec_ok() {
        b |= cache::KEY_DO;
    }
    if req.cd() {
        b |= cache::KEY_CD;
    }
    if req.ad() {
        b |= cache::KEY_AD;
    }
    if req.edns.is_some() {
        b |= cache::KEY_EDNS;
    }
    b
}

impl Shared {
    pub fn new(
        config: &Config,
        snapshot: Arc<ArcSwap<Snapshot>>,
        audit: Option<AuditLog>,
        metrics: Arc<Metrics>,
    ) -> Shared {
        Shared {
            policy: config.policy.clone(),
            acl: Acl::new(&config.acl),
            snapshot,
            cache: Cache::new(&config.cache),
            forwarder: Forwarder::new(&config.upstream, metrics.clone()),
            counters: Counters::default(),
            metrics,
            audit,
            waiting: Mutex::new(HashMap::new()),
            inflight: Arc::new(Inflight {
                max: config.server.max_inflight,
                live: AtomicUsize::new(0),
                tasks: Mutex::new(VecDeque::new()),
            }),
            qps: limits::QpsLimiter::new(&config.limits),
            conns: limits::ConnLimiter::new(&config.limits),
            serve_stale: config.cache.serve_stale,
        }
    }

    fn count_reply(&self, out: &[u8]) {
        if out.len() >= 4 {
            Counters::inc(&self.counters.rcodes[(out[3] & 0x0f) as usize]);
            self.metrics.response(u16::from(out[3] & 0x0f));
        }
    }

    /// The inline part of a query. Writes any immediate reply into `out`.
    pub(crate) fn handle(
        &self,
        snap: &Snapshot,
        packet: &[u8],
        client: SocketAddr,
        udp: bool,
        out: &mut Vec<u8>,
    ) -> Outcome {
        if let Some(limiter) = &self.qps
            && !limiter.allow(client.ip(), Instant::now())
        {
            return self.over_qps_limit(packet, udp, out);
        }
        let req = match wire::parse_request(packet) {
            Ok(r) => r,
            Err(e) if e.is_drop() => {
                Counters::inc(&self.counters.garbage);
                return Outcome::Silent;
            }
            Err(RequestError::NotImp(_)) => {
                wire::header_only_reply(out, packet, wire::RCODE_NOTIMP);
                self.count_reply(out);
                return Outcome::Reply;
            }
            Err(_) => {
                Counters::inc(&self.counters.formerr);
                wire::header_only_reply(out, packet, wire::RCODE_FORMERR);
                self.count_reply(out);
                return Outcome::Reply;
            }
        };
        self.metrics.query(
            if udp {
                metrics::Transport::Udp
            } else {
                metrics::Transport::Tcp
            },
            req.qtype,
        );
        if !self.acl.allows(client.ip()) {
            Counters::inc(&self.counters.acl_refused);
            sinkhole::refused_prohibited(out, &req);
            self.count_reply(out);
            return Outcome::Reply;
        }
        if req.edns.is_some_and(|e| e.version != 0) {
            sinkhole::badvers_answer(out, &req);
            self.metrics.response(16);
            return Outcome::Reply;
        }
        let limit = if udp {
            req.udp_limit()
        } else {
            u16::MAX as usize
        };
        let q = Query {
            name: req.dotted(),
            qtype: req.qtype,
        };
        if let Decision::Block(rule, kind) = policy::decide(snap, &q) {
            return self.block(snap, &req, client, udp, rule, kind, None, limit, out);
        }
        let mut key = [0u8; cache::MAX_KEY];
        let klen = cache::make_key(
            &mut key,
            req.lower_wire(),
            req.qtype,
            req.qclass,
            key_bits(&req),
        );
        if let Some(hit) =
            self.cache
                .get_into(&key[..klen], out, req.id, req.qname_wire(), Instant::now())
        {
            Counters::inc(&self.counters.cache_hits);
            self.metrics.cache_hit();
            // The snapshot may have changed since the answer was cached.
            if hit.has_cname
                && let Some((rule, kind, via)) = cname_block(snap, out, req.qtype)
            {
                return self.block(snap, &req, client, udp, rule, kind, Some(&via), limit, out);
            }
            self.finish_forwarded(
                out,
                &req,
                hit.flags,
                hit.opt_class_offset.map(usize::from),
                limit,
            );
            return Outcome::Reply;
        }
        Counters::inc(&self.counters.cache_misses);
        self.metrics.cache_miss();
        Outcome::Forward(Pending {
            packet: packet.to_vec(),
            client,
            udp,
        })
    }

    /// A query over `limits.qps_per_client`. Over UDP it is dropped: the
    /// source may be spoofed, and even a small REFUSED would let a flood be
    /// reflected at whoever it names (a real client's stub retries). Over
    /// TCP the source is proven by the handshake, so the client gets
    /// REFUSED rather than a pipeline slot held until it gives up.
    #[cold]
    fn over_qps_limit(&self, packet: &[u8], udp: bool, out: &mut Vec<u8>) -> Outcome {
        self.metrics.ratelimited(Limit::Qps);
        if udp {
            return Outcome::Silent;
        }
        match wire::parse_request(packet) {
            Ok(req) => sinkhole::error_answer(out, &req, wire::RCODE_REFUSED),
            Err(e) if e.is_drop() => return Outcome::Silent,
            Err(_) => wire::header_only_reply(out, packet, wire::RCODE_REFUSED),
        }
        self.count_reply(out);
        Outcome::Reply
    }

    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        snap: &Snapshot,
        req: &Request<'_>,
        client: SocketAddr,
        udp: bool,
        rule: RuleId,
        kind: BlockKind,
        via_cname: Option<&str>,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Outcome {
        Counters::inc(&self.counters.blocked);
        if via_cname.is_some() {
            Counters::inc(&self.counters.blocked_cname);
        }
        let view = snap.rule(rule);
        self.metrics.blocked(
            view.list(),
            BlockAction::from_kind(kind, self.policy.action),
        );
        self.record_hit(snap, req, client, udp, &view, kind, via_cname);
        if sinkhole::block_answer(
            out,
            req,
            &self.policy,
            &view,
            kind,
            snap.version() as u32,
            limit,
        ) {
            self.count_reply(out);
            Outcome::Reply
        } else {
            Counters::inc(&self.counters.dropped_by_policy);
            Outcome::Silent
        }
    }

    /// Hand the block to the hit log (non-blocking; the audit writer thread
    /// does the formatting and I/O).
    #[allow(clippy::too_many_arguments)]
    fn record_hit(
        &self,
        snap: &Snapshot,
        req: &Request<'_>,
        client: SocketAddr,
        udp: bool,
        rule: &crate::list::RuleView<'_>,
        kind: BlockKind,
        via_cname: Option<&str>,
    ) {
        if let Some(via) = via_cname {
            tracing::debug!(client = %client.ip(), via, list = rule.list(), line = rule.line(), "blocked through CNAME");
        }
        let Some(audit) = &self.audit else { return };
        audit.record(HitRecord {
            client: client.ip(),
            port: client.port(),
            transport: if udp { Transport::Udp } else { Transport::Tcp },
            qname: wire::presentation(req.qname_wire()),
            qtype: req.qtype,
            action: sinkhole::action_name(kind, self.policy.action),
            rule: rule.text(),
            list: rule.list().to_string(),
            file: rule.file().to_string(),
            line: rule.line(),
            decision: rule.decision().map(str::to_string),
            authority: rule.authority().map(str::to_string),
            category: rule.category().map(str::to_string),
            list_version: snap.version(),
            time: std::time::SystemTime::now(),
        });
    }

    /// Make an upstream (or cached) reply in `out` fit the client: OPT
    /// payload at most 1232, and TC=1 when it is larger than the client takes.
    fn finish_forwarded(
        &self,
        out: &mut Vec<u8>,
        req: &Request<'_>,
        flags: u16,
        opt_class: Option<usize>,
        limit: usize,
    ) {
        if let Some(off) = opt_class {
            wire::clamp_opt_payload(out, off, crate::config::MAX_UDP_PAYLOAD);
        }
        if out.len() > limit {
            Counters::inc(&self.counters.truncated);
            wire::truncated_reply(out, req, flags);
        }
        self.count_reply(out);
    }

    /// Ask the upstreams for `p`'s question and cache the answer.
    async fn fetch(&self, p: &Pending) -> Fetched {
        let Ok(req) = wire::parse_request(&p.packet) else {
            return Err(());
        };
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
                let mut key = [0u8; cache::MAX_KEY];
                let klen = cache::make_key(
                    &mut key,
                    req.lower_wire(),
                    req.qtype,
                    req.qclass,
                    key_bits(&req),
                );
                self.cache
                    .insert(&key[..klen], &bytes, &scan, Instant::now());
                Ok((bytes, scan))
            }
            Err(e) => {
                tracing::debug!(error = %e, qname = %String::from_utf8_lossy(req.dotted()), "upstream failed");
                Err(())
            }
        }
    }

    /// The reply for one waiting client from a fetched answer, if any.
    fn reply_for(&self, p: &Pending, fetched: &Fetched) -> Option<Vec<u8>> {
        let req = wire::parse_request(&p.packet).ok()?;
        let limit = if p.udp {
            req.udp_limit()
        } else {
            u16::MAX as usize
        };
        let mut out = Vec::with_capacity(512);
        match fetched {
            Ok((bytes, scan)) => {
                if scan.has_cname {
                    let snap = self.snapshot.load();
                    if let Some((rule, kind, via)) = cname_block(&snap, bytes, req.qtype) {
                        return match self.block(
                            &snap,
                            &req,
                            p.client,
                            p.udp,
                            rule,
                            kind,
                            Some(&via),
                            limit,
                            &mut out,
                        ) {
                            Outcome::Reply => Some(out),
                            _ => None,
                        };
                    }
                }
                out.extend_from_slice(bytes);
                wire::set_id(&mut out, req.id);
                wire::copy_qname(&mut out, req.qname_wire());
                self.finish_forwarded(&mut out, &req, scan.flags, scan.opt_class_offset, limit);
            }
            Err(()) => {
                Counters::inc(&self.counters.upstream_failures);
                if let Some(outcome) = self.stale_answer(&req, p, limit, &mut out) {
                    return match outcome {
                        Outcome::Reply => Some(out),
                        _ => None,
                    };
                }
                sinkhole::error_answer(&mut out, &req, wire::RCODE_SERVFAIL);
                self.count_reply(&out);
            }
        }
        Some(out)
    }

    /// RFC 8767: no upstream answered, so serve the expired cached answer
    /// (TTL 30) if it expired less than `serve_stale_secs` ago. `None`:
    /// nothing stale to serve (SERVFAIL follows).
    fn stale_answer(
        &self,
        req: &Request<'_>,
        p: &Pending,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Option<Outcome> {
        if self.serve_stale.is_zero() {
            return None;
        }
        let mut key = [0u8; cache::MAX_KEY];
        let klen = cache::make_key(
            &mut key,
            req.lower_wire(),
            req.qtype,
            req.qclass,
            key_bits(req),
        );
        let hit = self.cache.get_stale_into(
            &key[..klen],
            out,
            req.id,
            req.qname_wire(),
            Instant::now(),
            self.serve_stale,
        )?;
        Counters::inc(&self.counters.stale);
        self.metrics.stale_answer();
        // The lists may have changed since the answer was cached.
        if hit.has_cname {
            let snap = self.snapshot.load();
            if let Some((rule, kind, via)) = cname_block(&snap, out, req.qtype) {
                return Some(self.block(
                    &snap,
                    req,
                    p.client,
                    p.udp,
                    rule,
                    kind,
                    Some(&via),
                    limit,
                    out,
                ));
            }
        }
        self.finish_forwarded(
            out,
            req,
            hit.flags,
            hit.opt_class_offset.map(usize::from),
            limit,
        );
        Some(Outcome::Reply)
    }

    /// Forward a cache miss. A question already on its way upstream is not
    /// asked again: the client waits for that answer. Besides saving the
    /// upstream work this denies a spoofer the many parallel identical
    /// queries a birthday attack needs.
    pub(crate) fn forward(self: &Arc<Self>, rt: &tokio::runtime::Handle, waiter: Waiter) {
        let Some(key) = coalesce_key(&waiter.pending.packet) else {
            return;
        };
        {
            let mut map = self.lock_waiting();
            if let Some(list) = map.get_mut(&key) {
                if list.len() < MAX_WAITERS {
                    list.push(waiter);
                    Counters::inc(&self.counters.coalesced);
                } else {
                    Counters::inc(&self.counters.shed);
                    self.metrics.shed();
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

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, HashMap<Box<[u8]>, Vec<Waiter>>> {
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
            Counters::inc(&self.counters.shed);
            self.metrics.shed();
        }
        let guard = InflightGuard(self.inflight.clone());
        let gauge = self.metrics.inflight();
        let handle = rt.spawn(async move {
            let _guard = (guard, gauge);
            fut.await
        });
        self.inflight.track(handle.abort_handle());
    }

    /// Upstream exchanges running now.
    pub fn inflight(&self) -> usize {
        self.inflight.live.load(Ordering::Relaxed)
    }
}

type Fetched = Result<(Vec<u8>, crate::wire::ResponseScan), ()>;

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

/// The coalescing key of a request: its cache key.
fn coalesce_key(packet: &[u8]) -> Option<Box<[u8]>> {
    let req = wire::parse_request(packet).ok()?;
    let mut key = [0u8; cache::MAX_KEY];
    let klen = cache::make_key(
        &mut key,
        req.lower_wire(),
        req.qtype,
        req.qclass,
        key_bits(&req),
    );
    Some(key[..klen].into())
}

struct WaitingGuard {
    shared: Arc<Shared>,
    key: Box<[u8]>,
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

/// The first CNAME owner or target in `msg` that the snapshot blocks.
fn cname_block(snap: &Snapshot, msg: &[u8], qtype: u16) -> Option<(RuleId, BlockKind, String)> {
    wire::for_each_cname_name(msg, |name| {
        match policy::decide(snap, &Query { name, qtype }) {
            Decision::Block(rule, kind) => {
                Some((rule, kind, String::from_utf8_lossy(name).into_owned()))
            }
            _ => None,
        }
    })
}

/// A running server. Dropping it does not stop it; call [`ServerHandle::shutdown`].
pub struct ServerHandle {
    /// Store a new snapshot here to change the policy for every listener.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
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
pub const MAX_DRAIN: std::time::Duration = std::time::Duration::from_millis(3000);

impl ServerHandle {
    /// Stop accepting (UDP workers stop reading, TCP listeners close and
    /// connections stop reading), then let what was already accepted finish:
    /// upstream exchanges get their answer or their SERVFAIL at
    /// `upstream.timeout_ms` (at most [`MAX_DRAIN`]), TCP connections write
    /// their last replies. Last, the audit log writes everything queued, a
    /// final checkpoint and fsyncs.
    pub async fn shutdown(self) {
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
) -> Result<(Vec<std::net::UdpSocket>, tokio::net::TcpListener, SocketAddr), ServeError> {
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
pub fn start(
    config: &Config,
    snapshot: Arc<ArcSwap<Snapshot>>,
    audit: Option<AuditLog>,
    metrics: Arc<Metrics>,
) -> Result<ServerHandle, ServeError> {
    let shared = Arc::new(Shared::new(config, snapshot.clone(), audit, metrics));
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
        snapshot,
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

