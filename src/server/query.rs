//! The query core, sans I/O: a packet, the client, the transport and the
//! time go in; a reply written into the caller's buffer, silence, or "ask
//! the upstreams this parsed question" comes out. No sockets, no clock
//! reads, no tasks: the UDP workers, the TCP connections, the tests and the
//! fuzzer drive it the same way (quinn-proto's shape).
//!
//! Effects that leave the core: hits go to a [`HitSink`] (the audit log in
//! the daemon, a vector in tests); metrics are in-memory counters
//! ([`Metrics`]) the shell exposes; cache reads and inserts are the core's
//! own state ([`QueryCore::store`] after an upstream answered).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::acl::Acl;
use crate::audit::{AuditLog, HitRecord};
use crate::cache::{self, Cache, CacheConfig, CacheKey};
use crate::dnstap::{TapPolicy, TapSink, Tapped};
use crate::list::{MatchedKey, RuleId, RuleView, Snapshot};
use crate::metrics::{Limit, Metrics};
use crate::policy::{self, Action, Decision, PolicyConfig, Query};
use crate::sinkhole;
use crate::wire::{self, Request, RequestError, ResponseScan, StoredRequest, Transport};

use super::limits::{LimitsConfig, QpsLimiter, ZoneLimiter, ZoneVerdict};

thread_local! {
    /// Set when a block was handed to dnstap during the current
    /// [`QueryCore::handle`] or [`QueryCore::complete`] (both run on one
    /// thread without yielding), so `messages = "all"` does not tap it
    /// twice. Only touched when dnstap is configured.
    static BLOCK_TAPPED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Where the core hands every block for the hit log.
pub(crate) trait HitSink: Send + Sync {
    fn record(&self, hit: HitRecord);
}

impl HitSink for AuditLog {
    fn record(&self, hit: HitRecord) {
        AuditLog::record(self, hit)
    }
}

/// One query as it arrived.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Inbound<'a> {
    pub packet: &'a [u8],
    pub client: SocketAddr,
    pub transport: Transport,
    /// Monotonic time (cache expiry, rate limits).
    pub now: Instant,
    /// Wall-clock time (the hit log's timestamp).
    pub wall: SystemTime,
}

/// What the transport does after [`QueryCore::handle`].
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Send the reply written into `out`.
    Reply,
    /// Send nothing.
    Silent,
    /// A cache miss: ask the upstreams, then [`QueryCore::complete`].
    Forward(Box<Pending>),
    /// A zone transfer (`[rpz.serve]`, TCP only): run the job off the
    /// async workers and send the messages it emits, in order.
    Transfer(TransferJob),
}

/// Produces a zone transfer's messages one at a time into the callback,
/// which returns false once the connection is gone (the job then stops).
pub(crate) struct TransferJob(pub Box<dyn FnOnce(Emit<'_>) + Send>);

/// Where a [`TransferJob`] puts each message; false: stop.
pub(crate) type Emit<'a> = &'a mut dyn FnMut(Vec<u8>) -> bool;

impl TransferJob {
    /// Every message, collected (tests and the fuzz harness).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn collect(self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        (self.0)(&mut |m| {
            out.push(m);
            true
        });
        out
    }
}

impl std::fmt::Debug for TransferJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransferJob")
    }
}

/// Why a forwarded query has no upstream answer. Each becomes SERVFAIL
/// with its RFC 8914 code rather than silence: a stub that hears nothing
/// retries (typically twice more, and often at the next resolver in its
/// list), so silence under a flood multiplies the load it came from, while
/// a SERVFAIL ends the client's transaction at once and the EDE tells the
/// operator reading a capture why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No upstream answered within `upstream.timeout_ms`: EDE 22 (No
    /// Reachable Authority).
    Timeout,
    /// Every upstream failed at the network level (refused, unreachable):
    /// EDE 23 (Network Error).
    Network,
    /// Shed at `server.max_inflight` (or past the waiters one question may
    /// have): EDE 0 with the text "overload".
    Overload,
}

impl Failure {
    fn ede(self) -> (u16, &'static [u8]) {
        match self {
            Failure::Timeout => (sinkhole::EDE_NO_REACHABLE_AUTHORITY, b""),
            Failure::Network => (sinkhole::EDE_NETWORK_ERROR, b""),
            Failure::Overload => (sinkhole::EDE_OTHER, b"overload"),
        }
    }
}

/// A query waiting for an upstream: the parsed question and its cache key,
/// so nothing is parsed or keyed twice.
#[derive(Clone)]
pub(crate) struct Pending {
    pub request: StoredRequest,
    /// The cache key, shared with the waiting map and its guard (one small
    /// allocation per exchange rather than three 272-octet copies).
    pub key: Arc<[u8]>,
    pub client: SocketAddr,
    pub transport: Transport,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("qname", &wire::presentation(self.request.qname_wire()))
            .field("qtype", &self.request.qtype)
            .field("client", &self.client)
            .field("transport", &self.transport)
            .finish()
    }
}

/// The cache-key bits of a request.
fn key_bits(req: &Request) -> u8 {
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

/// The cache key of a parsed request.
pub(crate) fn cache_key(req: &Request) -> CacheKey {
    CacheKey::new(req.lower_wire(), req.qtype, req.qclass, key_bits(req))
}

/// The most a client takes in one reply on this transport.
fn reply_limit(req: &Request, transport: Transport) -> usize {
    match transport {
        Transport::Udp => req.udp_limit(),
        Transport::Tcp => u16::MAX as usize,
    }
}

/// Everything the per-query decision needs, shared by every worker.
pub(crate) struct QueryCore {
    policy: PolicyConfig,
    acl: Acl,
    cache: Cache,
    /// `limits.qps_per_client`, when set.
    qps: Option<QpsLimiter>,
    /// `limits.upstream_qps_per_zone`, when set.
    zones: Option<ZoneLimiter>,
    /// `cache.serve_stale_secs` (zero: off).
    serve_stale: Duration,
    metrics: Arc<Metrics>,
    hits: Option<Arc<dyn HitSink>>,
    /// `[[rpz.follow]]`: NOTIFY from a followed zone's primary (set once at
    /// start; without it NOTIFY is NOTIMP like any other opcode).
    notify: std::sync::OnceLock<Arc<crate::rpz::notify::NotifyRouter>>,
    /// `[dnstap]`, when configured: blocks (and with `messages = "all"`
    /// every answer) are handed to it. `None` costs one branch per reply.
    tap: Option<Arc<dyn TapSink>>,
    /// `[rpz.serve]`, when configured: answers for its zone's apex.
    rpz_serve: Option<Arc<crate::rpz::serve::RpzServe>>,
    /// Names with URL rules go to the web front (`[web]`); `None`: off.
    steer: Option<policy::Steer>,
}

impl QueryCore {
    pub(crate) fn new(
        policy: PolicyConfig,
        acl: Acl,
        cache: &CacheConfig,
        limits: &LimitsConfig,
        metrics: Arc<Metrics>,
        hits: Option<Arc<dyn HitSink>>,
    ) -> QueryCore {
        QueryCore {
            policy,
            acl,
            cache: Cache::new(cache),
            qps: QpsLimiter::new(limits),
            zones: ZoneLimiter::new(limits),
            serve_stale: cache.serve_stale,
            metrics,
            hits,
            steer: None,
            notify: std::sync::OnceLock::new(),
            tap: None,
            rpz_serve: None,
        }
    }

    /// Answer NOTIFY for the followed zones (once; later calls are ignored).
    pub(crate) fn set_notify(&self, router: Arc<crate::rpz::notify::NotifyRouter>) {
        let _ = self.notify.set(router);
    }

    /// Serve an RPZ (see [`crate::rpz::serve`]).
    pub(crate) fn set_rpz_serve(&mut self, serve: Option<Arc<crate::rpz::serve::RpzServe>>) {
        self.rpz_serve = serve;
    }

    /// Stream queries to dnstap (see [`crate::dnstap`]).
    pub(crate) fn set_tap(&mut self, tap: Option<Arc<dyn TapSink>>) {
        self.tap = tap;
    }

    /// Steer names with URL rules to the web front ([`policy::Steer`]).
    pub(crate) fn with_steer(mut self, steer: Option<policy::Steer>) -> QueryCore {
        self.steer = steer;
        self
    }

    pub(crate) fn cache(&self) -> &Cache {
        &self.cache
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn count_reply(&self, out: &[u8]) {
        if out.len() >= 4 {
            self.metrics.response(u16::from(out[3] & 0x0f));
        }
    }

    /// The inline part of a query: parse, ACL, policy, packet cache. Writes
    /// any immediate reply into `out`.
    pub(crate) fn handle(&self, snap: &Snapshot, q: &Inbound<'_>, out: &mut Vec<u8>) -> Outcome {
        let outcome = self.decide_and_answer(snap, q, out);
        if let Some(tap) = &self.tap {
            // Blocks were tapped with their rule already.
            let was_block = BLOCK_TAPPED.with(|b| b.replace(false));
            if tap.wants_all() && !was_block && matches!(outcome, Outcome::Reply) {
                tap.tap(&Tapped {
                    client: q.client,
                    transport: q.transport,
                    wall: q.wall,
                    query: q.packet,
                    response: Some(out),
                    policy: None,
                });
            }
        }
        outcome
    }

    fn decide_and_answer(&self, snap: &Snapshot, q: &Inbound<'_>, out: &mut Vec<u8>) -> Outcome {
        if let Some(limiter) = &self.qps
            && !limiter.allow(q.client.ip(), q.now)
        {
            return self.over_qps_limit(q, out);
        }
        let req = match wire::parse_request(q.packet) {
            Ok(r) => r,
            Err(e) if e.is_drop() => return Outcome::Silent,
            Err(RequestError::NotImp(_))
                if crate::rpz::notify::NotifyRouter::is_notify(q.packet)
                    && let Some(router) = self.notify.get() =>
            {
                let verdict = router.handle(q.packet, q.client.ip(), out);
                tracing::debug!(client = %q.client, ?verdict, "NOTIFY");
                self.count_reply(out);
                return Outcome::Reply;
            }
            Err(RequestError::NotImp(_)) => {
                wire::header_only_reply(out, q.packet, wire::RCODE_NOTIMP);
                self.count_reply(out);
                return Outcome::Reply;
            }
            Err(_) => {
                wire::header_only_reply(out, q.packet, wire::RCODE_FORMERR);
                self.count_reply(out);
                return Outcome::Reply;
            }
        };
        self.metrics.query(q.transport, req.qtype);
        // Before the ACL: followers are admitted by `allow_transfer`.
        if let Some(serve) = &self.rpz_serve
            && let Some(outcome) = serve.answer(&req, q.packet, q.client, q.transport, out)
        {
            if matches!(outcome, Outcome::Reply) {
                self.count_reply(out);
            }
            return outcome;
        }
        if !self.acl.allows(q.client.ip()) {
            sinkhole::refused_prohibited(out, &req);
            self.count_reply(out);
            return Outcome::Reply;
        }
        if req.edns.is_some_and(|e| e.version != 0) {
            sinkhole::badvers_answer(out, &req);
            self.metrics.response(16);
            return Outcome::Reply;
        }
        let limit = reply_limit(&req, q.transport);
        let asker = Asker {
            req: &req,
            packet: Some(q.packet),
            client: q.client,
            transport: q.transport,
            wall: q.wall,
        };
        let asked = Query {
            name: req.dotted(),
            qtype: req.qtype,
        };
        if let Some(signal) = self.policy.bypass_signals.classify(req.dotted()) {
            sinkhole::local_answer(out, &req, crate::special::LocalAnswer::NxDomain);
            self.metrics.bypass_signal(signal.as_str());
            self.count_reply(out);
            return Outcome::Reply;
        }
        match policy::decide_steered(snap, &asked, &self.policy, self.steer.as_ref()) {
            Decision::Block { rule, action, key } => {
                let hit = Hit {
                    snap,
                    asker,
                    rule,
                    action,
                    via_cname: None,
                    matched: (req.dotted(), key),
                };
                return self.block(hit, limit, out);
            }
            Decision::Steer => {
                if let Some(steer) = &self.steer {
                    sinkhole::steer_answer(out, &req, steer, snap.version() as u32);
                    self.metrics.steered();
                    self.count_reply(out);
                    return Outcome::Reply;
                }
            }
            Decision::Pass | Decision::Allow(_) => {}
        }
        if let Some((zone, answer)) = self.policy.local_zones.classify(req.dotted()) {
            sinkhole::local_answer(out, &req, answer);
            self.metrics.local_answer(zone.as_str());
            self.count_reply(out);
            return Outcome::Reply;
        }
        let key = cache_key(&req);
        if let Some(hit) = self
            .cache
            .get_into(key.as_bytes(), out, req.id, req.qname_wire(), q.now)
        {
            self.metrics.cache_hit();
            // The snapshot may have changed since the answer was cached.
            if hit.has_cname
                && let Some(found) = cname_block(snap, out, req.qtype, &self.policy)
            {
                return self.block_via_cname(snap, asker, found, limit, out);
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
        self.metrics.cache_miss();
        if let Some(zones) = &self.zones {
            let zone = zones.zone_of(req.dotted());
            if zones.check(zone, q.now) == ZoneVerdict::Limited {
                return self.over_zone_limit(&req, zone, out);
            }
        }
        Outcome::Forward(Box::new(Pending {
            request: StoredRequest::new(&req),
            key: Arc::from(key.as_bytes()),
            client: q.client,
            transport: q.transport,
        }))
    }

    /// A query over `limits.qps_per_client`. Over UDP it is dropped: the
    /// source may be spoofed, and even a small REFUSED would let a flood be
    /// reflected at whoever it names (a real client's stub retries). Over
    /// TCP the source is proven by the handshake, so the client gets
    /// REFUSED rather than a pipeline slot held until it gives up.
    #[cold]
    fn over_qps_limit(&self, q: &Inbound<'_>, out: &mut Vec<u8>) -> Outcome {
        self.metrics.ratelimited(Limit::Qps);
        if q.transport == Transport::Udp {
            return Outcome::Silent;
        }
        match wire::parse_request(q.packet) {
            Ok(req) => sinkhole::error_answer(out, &req, wire::RCODE_REFUSED),
            Err(e) if e.is_drop() => return Outcome::Silent,
            Err(_) => wire::header_only_reply(out, q.packet, wire::RCODE_REFUSED),
        }
        self.count_reply(out);
        Outcome::Reply
    }

    /// A cache miss over `limits.upstream_qps_per_zone`: SERVFAIL here
    /// rather than upstream work that (under a random-subdomain flood)
    /// would only wait for authorities that do not answer. SERVFAIL, not
    /// silence, for the reason in [`Failure`].
    #[cold]
    fn over_zone_limit(&self, req: &Request, zone: &[u8], out: &mut Vec<u8>) -> Outcome {
        let zone_text = String::from_utf8_lossy(zone);
        let text = format!("upstream rate limit for {zone_text}");
        sinkhole::servfail_with_reason(out, req, sinkhole::EDE_OTHER, text.as_bytes());
        self.metrics.upstream_ratelimited(&zone_text);
        self.count_reply(out);
        Outcome::Reply
    }

    /// Answer a blocked query and hand the hit to the sink.
    fn block(&self, hit: Hit<'_>, limit: usize, out: &mut Vec<u8>) -> Outcome {
        let view = hit.snap.rule(hit.rule);
        self.metrics.blocked(view.list(), hit.action);
        self.record_hit(&hit, &view);
        let replied = sinkhole::block_answer(
            out,
            hit.asker.req,
            &self.policy,
            &view,
            hit.action,
            hit.snap.version() as u32,
            limit,
        );
        if replied {
            self.count_reply(out);
        }
        if let Some(tap) = &self.tap {
            self.tap_block(tap.as_ref(), &hit, &view, replied.then_some(out.as_slice()));
        }
        if replied {
            Outcome::Reply
        } else {
            Outcome::Silent
        }
    }

    #[cold]
    fn tap_block(
        &self,
        tap: &dyn TapSink,
        hit: &Hit<'_>,
        view: &RuleView<'_>,
        reply: Option<&[u8]>,
    ) {
        BLOCK_TAPPED.with(|b| b.set(true));
        let rebuilt;
        let query = match hit.asker.packet {
            Some(p) => p,
            None => {
                rebuilt = crate::dnstap::rebuilt_query(hit.asker.req);
                &rebuilt
            }
        };
        let rule = view.text_matched(hit.matched.0, hit.matched.1);
        tap.tap(&Tapped {
            client: hit.asker.client,
            transport: hit.asker.transport,
            wall: hit.asker.wall,
            query,
            response: reply,
            policy: Some(TapPolicy {
                rule: &rule,
                matched: hit.matched.0,
                action: hit.action,
                list: view.list(),
                list_version: hit.snap.version(),
                decision: view.decision(),
            }),
        });
    }

    /// Answer and record a block found on a CNAME owner or target of a
    /// cached or upstream reply.
    fn block_via_cname(
        &self,
        snap: &Snapshot,
        asker: Asker<'_>,
        (rule, action, key, via): (RuleId, Action, Option<MatchedKey>, String),
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let hit = Hit {
            snap,
            asker,
            rule,
            action,
            via_cname: Some(&via),
            matched: (via.as_bytes(), key),
        };
        self.block(hit, limit, out)
    }

    fn record_hit(&self, hit: &Hit<'_>, rule: &RuleView<'_>) {
        if let Some(via) = hit.via_cname {
            tracing::debug!(client = %hit.asker.client.ip(), via, list = rule.list(), line = rule.line(), "blocked through CNAME");
        }
        let Some(sink) = &self.hits else { return };
        sink.record(HitRecord {
            client: hit.asker.client.ip(),
            port: hit.asker.client.port(),
            transport: hit.asker.transport,
            qname: wire::presentation(hit.asker.req.qname_wire()),
            qtype: hit.asker.req.qtype,
            action: hit.action.as_str(),
            rule: rule.text_matched(hit.matched.0, hit.matched.1),
            list: rule.list().to_string(),
            file: rule.file().to_string(),
            line: rule.line(),
            decision: rule.decision().map(str::to_string),
            authority: rule.authority().map(str::to_string),
            category: rule.category().map(str::to_string),
            date: rule.date().map(str::to_string),
            entry: rule.entry().map(str::to_string),
            included: rule.included().map(str::to_string),
            list_version: hit.snap.version(),
            time: hit.asker.wall,
            path: None,
            sni: None,
        });
    }

    /// Make an upstream (or cached) reply in `out` fit this client: its RD,
    /// AD only if it asked for AD or DO, OPT payload at most 1232, and TC=1
    /// when it is larger than the client takes.
    fn finish_forwarded(
        &self,
        out: &mut Vec<u8>,
        req: &Request,
        flags: u16,
        opt_class: Option<usize>,
        limit: usize,
    ) {
        wire::adopt_reply_flags(out, req);
        if let Some(off) = opt_class {
            wire::clamp_opt_payload(out, off, wire::MAX_UDP_PAYLOAD);
        }
        if out.len() > limit {
            wire::truncated_reply(out, req, flags);
        }
        self.count_reply(out);
    }

    /// Cache an upstream's answer (once per exchange, before the waiting
    /// clients get their replies).
    pub(crate) fn store(&self, key: &[u8], reply: &[u8], scan: &ResponseScan, now: Instant) {
        self.cache.insert(key, reply, scan, now);
        if let Some(zones) = &self.zones
            && scan.soa.is_some()
        {
            learn_zone_cut(zones, reply, scan);
        }
    }

    /// The reply for one waiting client once the upstreams answered
    /// (`Ok`) or why there is no answer (`Err`: SERVFAIL with its EDE,
    /// unless serve-stale has something). Returns false when nothing is to
    /// be sent.
    pub(crate) fn complete(
        &self,
        snap: &Snapshot,
        p: &Pending,
        answer: Result<(&[u8], &ResponseScan), Failure>,
        now: Instant,
        wall: SystemTime,
        out: &mut Vec<u8>,
    ) -> bool {
        // Expanded once: the answer and a dnstap copy of the query need it.
        let req = p.request.expand();
        let sent = self.complete_answer(snap, p, &req, answer, now, wall, out);
        if let Some(tap) = &self.tap {
            // Blocks (on a CNAME in the answer) were tapped with their rule.
            let was_block = BLOCK_TAPPED.with(|b| b.replace(false));
            if tap.wants_all() && !was_block && sent {
                tap.tap(&Tapped {
                    client: p.client,
                    transport: p.transport,
                    wall,
                    query: &crate::dnstap::rebuilt_query(&req),
                    response: Some(out),
                    policy: None,
                });
            }
        }
        sent
    }

    #[allow(clippy::too_many_arguments)]
    fn complete_answer(
        &self,
        snap: &Snapshot,
        p: &Pending,
        req: &Request,
        answer: Result<(&[u8], &ResponseScan), Failure>,
        now: Instant,
        wall: SystemTime,
        out: &mut Vec<u8>,
    ) -> bool {
        let limit = reply_limit(req, p.transport);
        let asker = Asker {
            req,
            packet: None,
            client: p.client,
            transport: p.transport,
            wall,
        };
        let (bytes, scan) = match answer {
            Ok(a) => a,
            Err(failure) => {
                if let Some(outcome) = self.stale_answer(snap, p, req, limit, now, wall, out) {
                    return matches!(outcome, Outcome::Reply);
                }
                let (code, text) = failure.ede();
                sinkhole::servfail_with_reason(out, req, code, text);
                self.count_reply(out);
                return true;
            }
        };
        if scan.has_cname
            && let Some(found) = cname_block(snap, bytes, req.qtype, &self.policy)
        {
            return matches!(
                self.block_via_cname(snap, asker, found, limit, out),
                Outcome::Reply
            );
        }
        out.clear();
        out.extend_from_slice(bytes);
        wire::set_id(out, req.id);
        wire::copy_qname(out, req.qname_wire());
        self.finish_forwarded(out, req, scan.flags, scan.opt_class_offset, limit);
        true
    }

    /// RFC 8767: no upstream answered, so serve the expired cached answer
    /// (TTL 30) if it expired less than `serve_stale_secs` ago. `None`:
    /// nothing stale to serve (SERVFAIL follows).
    #[allow(clippy::too_many_arguments)]
    fn stale_answer(
        &self,
        snap: &Snapshot,
        p: &Pending,
        req: &Request,
        limit: usize,
        now: Instant,
        wall: SystemTime,
        out: &mut Vec<u8>,
    ) -> Option<Outcome> {
        if self.serve_stale.is_zero() {
            return None;
        }
        let hit = self.cache.get_stale_into(
            &p.key,
            out,
            req.id,
            req.qname_wire(),
            now,
            self.serve_stale,
        )?;
        self.metrics.stale_answer();
        let asker = Asker {
            req,
            packet: None,
            client: p.client,
            transport: p.transport,
            wall,
        };
        // The lists may have changed since the answer was cached.
        if hit.has_cname
            && let Some(found) = cname_block(snap, out, req.qtype, &self.policy)
        {
            return Some(self.block_via_cname(snap, asker, found, limit, out));
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
}

/// Teach the zone limiter the zone a negative answer came from.
fn learn_zone_cut(zones: &ZoneLimiter, reply: &[u8], scan: &ResponseScan) {
    let mut owner = [0u8; wire::MAX_NAME];
    let Some(owner_len) = wire::authority_soa_owner(reply, scan, &mut owner) else {
        return;
    };
    let mut qname_wire = [0u8; wire::MAX_NAME];
    let Some((len, _)) = wire::read_name_wire(reply, wire::HEADER_LEN, &mut qname_wire) else {
        return;
    };
    let mut qname = [0u8; wire::MAX_NAME];
    let qname_len = wire::wire_to_dotted(&qname_wire[..len], &mut qname);
    zones.learn(&qname[..qname_len], &owner[..owner_len]);
}

/// Who asked what: what a block answer and its hit record need besides
/// the rule.
#[derive(Clone, Copy)]
struct Asker<'a> {
    req: &'a Request,
    /// The query as received, when the caller still has it (dnstap).
    packet: Option<&'a [u8]>,
    client: SocketAddr,
    transport: Transport,
    wall: SystemTime,
}

/// A block about to be answered and recorded.
struct Hit<'a> {
    snap: &'a Snapshot,
    asker: Asker<'a>,
    rule: RuleId,
    action: Action,
    via_cname: Option<&'a str>,
    /// The name the rule matched (the query's, or a CNAME's in the
    /// reply) and how: the rule's text for the
    /// hit log without reading it back from the fst.
    matched: (&'a [u8], Option<MatchedKey>),
}

/// The first CNAME owner or target in `msg` that the snapshot blocks.
fn cname_block(
    snap: &Snapshot,
    msg: &[u8],
    qtype: u16,
    policy: &PolicyConfig,
) -> Option<(RuleId, Action, Option<MatchedKey>, String)> {
    wire::for_each_cname_name(msg, |name| {
        match policy::decide(snap, &Query { name, qtype }, policy) {
            Decision::Block { rule, action, key } => Some((
                rule,
                action,
                key,
                String::from_utf8_lossy(name).into_owned(),
            )),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;
    use std::sync::Mutex;

    use hickory_proto::op::{Edns, Message, Query as HQuery};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;
    use crate::list::{Format, ListOptions};
    use crate::sinkhole::Template;

    /// Hits the core hands out, kept for the assertions.
    #[derive(Default)]
    struct Hits(Mutex<Vec<HitRecord>>);

    impl HitSink for Hits {
        fn record(&self, hit: HitRecord) {
            self.0.lock().unwrap().push(hit);
        }
    }

    const CLIENT: &str = "192.0.2.1:5300";
    const STRANGER: &str = "203.0.113.9:5300";

    fn core() -> (QueryCore, Snapshot, Arc<Hits>) {
        core_with(&LimitsConfig::default())
    }

    fn core_with(limits: &LimitsConfig) -> (QueryCore, Snapshot, Arc<Hits>) {
        let opts = ListOptions {
            format: Some(Format::Plain),
            name: Some("court".into()),
            ..ListOptions::default()
        };
        let list = crate::list::parse::parse_bytes(
            Path::new("court"),
            b"blocked.kz\nlisted.test\n",
            &opts,
        );
        let snap = crate::list::compile::compile(&[list]).unwrap();
        let policy = PolicyConfig {
            action: Action::Nxdomain,
            ttl: 60,
            address_v4: Ipv4Addr::new(198, 51, 100, 1),
            address_v6: "2001:db8::1".parse().unwrap(),
            ede_code: 16,
            ede_text: Template::parse("{list}").unwrap(),
            local_zones: crate::special::LocalZones::default(),
            bypass_signals: crate::bypass::BypassSignals::default(),
        };
        let cache = CacheConfig {
            max_entries: 100,
            max_bytes: 0,
            max_ttl: 86_400,
            max_negative_ttl: 3600,
            serve_stale: Duration::ZERO,
        };
        let hits = Arc::new(Hits::default());
        let core = QueryCore::new(
            policy,
            Acl::new(&["192.0.2.0/24".parse().unwrap()]),
            &cache,
            limits,
            Arc::new(Metrics::new(&[])),
            Some(hits.clone() as Arc<dyn HitSink>),
        );
        (core, snap, hits)
    }

    fn query(name: &str, rd: bool, ad: bool, edns: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0xbeef;
        m.metadata.recursion_desired = rd;
        m.metadata.authentic_data = ad;
        m.add_query(HQuery::query(
            Name::from_ascii(name).unwrap(),
            RecordType::A,
        ));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn inbound<'a>(packet: &'a [u8], client: &str, now: Instant) -> Inbound<'a> {
        Inbound {
            packet,
            client: client.parse().unwrap(),
            transport: Transport::Udp,
            now,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    /// An upstream's answer to `packet` (upstream ID 7), with RD and AD set.
    fn upstream_answer(packet: &[u8]) -> (Vec<u8>, ResponseScan) {
        let q = Message::from_vec(packet).unwrap();
        let mut m = Message::response(7, hickory_proto::op::OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.metadata.authentic_data = true;
        m.add_query(q.queries[0].clone());
        m.add_answer(Record::from_rdata(
            q.queries[0].name().clone(),
            300,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 80))),
        ));
        let bytes = m.to_vec().unwrap();
        let scan = wire::scan_response(&bytes).unwrap();
        (bytes, scan)
    }

    /// The `Pending` of a query that must be forwarded.
    fn forwarded(core: &QueryCore, snap: &Snapshot, packet: &[u8], now: Instant) -> Box<Pending> {
        let mut out = Vec::new();
        match core.handle(snap, &inbound(packet, CLIENT, now), &mut out) {
            Outcome::Forward(p) => p,
            other => panic!("not forwarded: {other:?}"),
        }
    }

    /// The reply `core` writes for `p` once the upstream answered `packet`
    /// (the answer cached first, as the shell does).
    fn answered(
        core: &QueryCore,
        snap: &Snapshot,
        p: &Pending,
        packet: &[u8],
        now: Instant,
    ) -> Vec<u8> {
        let (answer, scan) = upstream_answer(packet);
        core.store(&p.key, &answer, &scan, now);
        let mut out = Vec::new();
        let sent = core.complete(
            snap,
            p,
            Ok((&answer, &scan)),
            now,
            SystemTime::now(),
            &mut out,
        );
        assert!(sent);
        out
    }

    #[test]
    fn blocked_query_gets_the_sinkhole_answer_and_a_hit() {
        let (core, snap, hits) = core();
        let packet = query("www.blocked.kz.", true, false, false);
        let mut out = Vec::new();
        let outcome = core.handle(&snap, &inbound(&packet, CLIENT, Instant::now()), &mut out);
        assert!(matches!(outcome, Outcome::Reply));
        // ID, then QR RD RA + NXDOMAIN, one question, one SOA.
        assert_eq!(out[..12], [0xbe, 0xef, 0x81, 0x83, 0, 1, 0, 0, 0, 1, 0, 0]);
        assert_eq!(out[12..12 + packet.len() - 12], packet[12..]);
        let hits = hits.0.lock().unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].qname, "www.blocked.kz");
        assert_eq!(hits[0].action, "nxdomain");
        assert_eq!(hits[0].list, "court");
        assert_eq!(hits[0].client, "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    /// Steering, sans I/O: (type, steer on, expected) for a name with URL
    /// rules. A/AAAA get the front's address with the steer TTL, HTTPS/SVCB
    /// NODATA, other types and a server without the front go upstream;
    /// never an EDE, never a hit.
    #[test]
    fn names_with_url_rules_are_steered_to_the_front() {
        let (core, _, hits) = core();
        let core = core.with_steer(Some(policy::Steer {
            v4: Some(Ipv4Addr::new(203, 0, 113, 80)),
            v6: None,
            ttl: 30,
        }));
        let (plain, _, _) = self::core();
        let list = crate::list::parse::parse_bytes(
            Path::new("court"),
            b"pages.kz/offer\n",
            &ListOptions {
                format: Some(Format::Plain),
                ..ListOptions::default()
            },
        );
        let snap = crate::list::compile::compile(&[list]).unwrap();
        let ask = |core: &QueryCore, t: RecordType| {
            let mut m = Message::query();
            m.metadata.id = 1;
            m.add_query(HQuery::query(Name::from_ascii("Pages.KZ.").unwrap(), t));
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.set_edns(e);
            let packet = m.to_vec().unwrap();
            let mut out = Vec::new();
            match core.handle(&snap, &inbound(&packet, CLIENT, Instant::now()), &mut out) {
                Outcome::Reply => Some(Message::from_vec(&out).unwrap()),
                _ => None,
            }
        };
        let a = ask(&core, RecordType::A).expect("answered here");
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].ttl, 30);
        assert_eq!(
            a.answers[0].data,
            RData::A(A(Ipv4Addr::new(203, 0, 113, 80)))
        );
        let opt = a.edns.as_ref().expect("OPT kept");
        assert!(opt.options().as_ref().is_empty(), "no EDE on a steer");
        for t in [RecordType::AAAA, RecordType::HTTPS, RecordType::SVCB] {
            let r = ask(&core, t).expect("answered here");
            assert_eq!(
                r.metadata.response_code,
                hickory_proto::op::ResponseCode::NoError
            );
            assert!(r.answers.is_empty(), "{t}: NODATA");
            assert_eq!(r.authorities.len(), 1, "{t}: with an SOA");
        }
        assert!(ask(&core, RecordType::MX).is_none(), "MX goes upstream");
        assert!(
            ask(&plain, RecordType::A).is_none(),
            "without the front: upstream"
        );
        assert!(hits.0.lock().unwrap().is_empty(), "a steer is no hit");
    }

    #[test]
    fn allowed_query_is_forwarded_with_its_parsed_question_and_key() {
        let (core, snap, hits) = core();
        let packet = query("Example.ORG.", true, false, true);
        let mut out = Vec::new();
        let Outcome::Forward(p) =
            core.handle(&snap, &inbound(&packet, CLIENT, Instant::now()), &mut out)
        else {
            panic!("not forwarded");
        };
        assert_eq!(p.request.question(), &packet[12..12 + 13 + 4]);
        assert_eq!(p.request.lower_wire(), b"\x07example\x03org\x00");
        assert_eq!(p.request.id, 0xbeef);
        let want_key = CacheKey::new(b"\x07example\x03org\x00", 1, 1, cache::KEY_EDNS);
        assert_eq!(&*p.key, want_key.as_bytes());
        assert_eq!(p.client, CLIENT.parse::<SocketAddr>().unwrap());
        assert!(out.is_empty(), "nothing to send yet");
        assert!(hits.0.lock().unwrap().is_empty());
    }

    #[test]
    fn upstream_answer_is_cached_and_a_hit_takes_rd_and_ad_from_its_own_query() {
        let (core, snap, _) = core();
        let now = Instant::now();
        // Filled by a query with RD=1 AD=1.
        let first = query("cached.org.", true, true, false);
        let p = forwarded(&core, &snap, &first, now);
        let mut out = answered(&core, &snap, &p, &first, now);
        assert_eq!(out[..2], [0xbe, 0xef], "client's ID");
        assert_eq!(
            wire::read_u16(&out, 2).unwrap() & wire::FLAG_AD,
            wire::FLAG_AD
        );
        // Answered from the cache for a query with RD=0 and AD=1 (same key):
        // RD is the answering query's.
        let second = query("cached.org.", false, true, false);
        let outcome = core.handle(&snap, &inbound(&second, CLIENT, now), &mut out);
        assert!(matches!(outcome, Outcome::Reply), "a cache hit");
        let flags = wire::read_u16(&out, 2).unwrap();
        assert_eq!(flags & wire::FLAG_RD, 0, "RD from the answering query");
        assert_eq!(flags & wire::FLAG_AD, wire::FLAG_AD, "AD asked for");
        assert_eq!(out[out.len() - 4..], [192, 0, 2, 80]);
    }

    #[test]
    fn shared_upstream_answer_clears_ad_for_a_query_without_ad_or_do() {
        let (core, snap, _) = core();
        let now = Instant::now();
        let packet = query("plain.org.", true, false, false);
        let p = forwarded(&core, &snap, &packet, now);
        let out = answered(&core, &snap, &p, &packet, now);
        let flags = wire::read_u16(&out, 2).unwrap();
        assert_eq!(flags & wire::FLAG_AD, 0, "AD only for AD or DO queries");
        assert_eq!(flags & wire::FLAG_RD, wire::FLAG_RD);
    }

    /// The EDE option of a reply whose only extra record is our OPT
    /// holding one EDE: (code, text).
    fn ede_of(out: &[u8]) -> (u16, Vec<u8>) {
        assert_eq!(out[10..12], [0, 1], "one additional record");
        let opt = wire::skip_name(out, 12).unwrap() + 4;
        assert_eq!(out[opt..opt + 3], [0, 0, 41], "an OPT");
        let rdata = &out[opt + 11..];
        assert_eq!(wire::read_u16(rdata, 0), Some(wire::OPT_EDE));
        let len = wire::read_u16(rdata, 2).unwrap() as usize;
        assert_eq!(rdata.len(), 4 + len);
        (wire::read_u16(rdata, 4).unwrap(), rdata[6..].to_vec())
    }

    #[test]
    fn upstream_failures_are_servfail_with_their_ede() {
        let table: [(Failure, u16, &[u8]); 3] = [
            (Failure::Timeout, 22, b""),
            (Failure::Network, 23, b""),
            (Failure::Overload, 0, b"overload"),
        ];
        let (core, snap, _) = core();
        let now = Instant::now();
        for (failure, code, text) in table {
            // Without EDNS: a plain SERVFAIL, no OPT.
            let packet = query("down.org.", true, false, false);
            let mut out = Vec::new();
            let Outcome::Forward(p) = core.handle(&snap, &inbound(&packet, CLIENT, now), &mut out)
            else {
                panic!("not forwarded");
            };
            assert!(core.complete(&snap, &p, Err(failure), now, SystemTime::now(), &mut out));
            assert_eq!(out[..4], [0xbe, 0xef, 0x81, 0x82], "{failure:?}");
            assert_eq!(out[10..12], [0, 0], "no OPT without EDNS");
            // With EDNS: the reason in an EDE option.
            let packet = query("down.org.", true, false, true);
            let Outcome::Forward(p) = core.handle(&snap, &inbound(&packet, CLIENT, now), &mut out)
            else {
                panic!("not forwarded");
            };
            assert!(core.complete(&snap, &p, Err(failure), now, SystemTime::now(), &mut out));
            assert_eq!(out[3] & 0x0f, 2, "SERVFAIL for {failure:?}");
            assert_eq!(ede_of(&out), (code, text.to_vec()), "{failure:?}");
        }
    }

    fn query_type(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0xbeef;
        m.metadata.recursion_desired = true;
        m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    #[test]
    fn special_use_names_are_answered_locally() {
        use hickory_proto::op::ResponseCode;
        let (core, snap, hits) = core();
        let now = Instant::now();
        let v4: &[u8] = &[127, 0, 0, 1];
        let v6 = std::net::Ipv6Addr::LOCALHOST.octets();
        // name, type, rcode, the answer's rdata (none: an SOA instead)
        let table: &[(&str, RecordType, ResponseCode, Option<&[u8]>)] = &[
            ("localhost.", RecordType::A, ResponseCode::NoError, Some(v4)),
            (
                "db.localhost.",
                RecordType::AAAA,
                ResponseCode::NoError,
                Some(&v6),
            ),
            ("localhost.", RecordType::MX, ResponseCode::NoError, None),
            ("a.test.", RecordType::A, ResponseCode::NXDomain, None),
            ("a.invalid.", RecordType::A, ResponseCode::NXDomain, None),
            ("x.onion.", RecordType::AAAA, ResponseCode::NXDomain, None),
            (
                "nas.home.arpa.",
                RecordType::A,
                ResponseCode::NXDomain,
                None,
            ),
            (
                "4.3.2.10.in-addr.arpa.",
                RecordType::PTR,
                ResponseCode::NXDomain,
                None,
            ),
            (
                "10.in-addr.arpa.",
                RecordType::SOA,
                ResponseCode::NoError,
                None,
            ),
        ];
        for (name, qtype, rcode, rdata) in table {
            let packet = query_type(name, *qtype);
            let mut out = Vec::new();
            let outcome = core.handle(&snap, &inbound(&packet, CLIENT, now), &mut out);
            assert!(matches!(outcome, Outcome::Reply), "{name} answered here");
            let m = Message::from_vec(&out).unwrap();
            assert_eq!(m.metadata.response_code, *rcode, "{name}");
            assert!(m.metadata.authoritative, "{name}");
            match rdata {
                Some(want) => {
                    assert_eq!(m.answers.len(), 1, "{name}");
                    let got: Vec<u8> = match &m.answers[0].data {
                        RData::A(a) => a.0.octets().to_vec(),
                        RData::AAAA(a) => a.0.octets().to_vec(),
                        other => panic!("{name}: {other:?}"),
                    };
                    assert_eq!(&got[..], *want, "{name}");
                }
                None => {
                    assert!(m.answers.is_empty(), "{name}");
                    assert_eq!(m.authorities.len(), 1, "{name}: an SOA");
                }
            }
        }
        assert!(
            hits.0.lock().unwrap().is_empty(),
            "local answers are not blocks"
        );
        // A listed special-use name keeps its block answer and hit.
        let packet = query("listed.test.", true, false, true);
        let mut out = Vec::new();
        core.handle(&snap, &inbound(&packet, CLIENT, now), &mut out);
        assert_eq!(
            hits.0.lock().unwrap().len(),
            1,
            "blocked, not answered locally"
        );
        assert!(
            out.ends_with(b"\x00\x0f\x00\x07\x00\x10court"),
            "EDE 16 court"
        );
    }

    #[test]
    fn local_zones_can_be_turned_off() {
        let (mut core, snap, _) = core();
        core.policy.local_zones = crate::special::LocalZones::none();
        let packet = query_type("4.3.2.10.in-addr.arpa.", RecordType::PTR);
        let mut out = Vec::new();
        let outcome = core.handle(&snap, &inbound(&packet, CLIENT, Instant::now()), &mut out);
        assert!(matches!(outcome, Outcome::Forward(_)));
    }

    #[test]
    fn a_zone_over_its_upstream_limit_gets_servfail_without_going_upstream() {
        let limits = LimitsConfig {
            upstream_qps_per_zone: 5,
            upstream_ratelimit_factor: 10,
            ..LimitsConfig::default()
        };
        let (core, snap, _) = core_with(&limits);
        let now = Instant::now() + Duration::from_secs(1);
        let mut forwarded = 0;
        let mut out = Vec::new();
        for i in 0..105 {
            let packet = query(&format!("r{i}.victim.org."), true, false, true);
            match core.handle(&snap, &inbound(&packet, CLIENT, now), &mut out) {
                Outcome::Forward(_) => forwarded += 1,
                Outcome::Reply => {
                    assert_eq!(out[3] & 0x0f, 2, "SERVFAIL");
                    assert_eq!(
                        ede_of(&out),
                        (0, b"upstream rate limit for victim.org".to_vec())
                    );
                }
                Outcome::Silent | Outcome::Transfer(_) => panic!("limited queries are answered"),
            }
        }
        // The rate (a one-second burst), then one in ten of the 100 over.
        assert_eq!(forwarded, 5 + 10);
        // Other zones are not affected; neither are cache hits.
        let packet = query("www.fine.org.", true, false, true);
        assert!(matches!(
            core.handle(&snap, &inbound(&packet, CLIENT, now), &mut out),
            Outcome::Forward(_)
        ));
    }

    #[test]
    fn the_zone_limit_follows_a_deeper_zone_shown_by_an_soa_owner() {
        use hickory_proto::rr::rdata::SOA;
        let limits = LimitsConfig {
            upstream_qps_per_zone: 1,
            upstream_ratelimit_factor: 0,
            ..LimitsConfig::default()
        };
        let (core, snap, _) = core_with(&limits);
        let now = Instant::now() + Duration::from_secs(1);
        let mut out = Vec::new();
        // An NXDOMAIN for a name under dyn.victim.org from that zone.
        let packet = query("gone.dyn.victim.org.", true, false, true);
        let Outcome::Forward(p) = core.handle(&snap, &inbound(&packet, CLIENT, now), &mut out)
        else {
            panic!("not forwarded");
        };
        let q = Message::from_vec(&packet).unwrap();
        let mut m = Message::response(7, hickory_proto::op::OpCode::Query);
        m.metadata.response_code = hickory_proto::op::ResponseCode::NXDomain;
        m.add_query(q.queries[0].clone());
        let apex = Name::from_ascii("Dyn.Victim.org.").unwrap();
        let soa = SOA::new(apex.clone(), apex.clone(), 1, 3600, 600, 86400, 60);
        m.add_authority(Record::from_rdata(apex, 60, RData::SOA(soa)));
        let bytes = m.to_vec().unwrap();
        let scan = wire::scan_response(&bytes).unwrap();
        core.store(&p.key, &bytes, &scan, now);
        // victim.org itself spent its one token above; dyn.victim.org has its own.
        let packet = query("a.dyn.victim.org.", true, false, true);
        assert!(matches!(
            core.handle(&snap, &inbound(&packet, CLIENT, now), &mut out),
            Outcome::Forward(_)
        ));
        let packet = query("b.dyn.victim.org.", true, false, true);
        assert!(matches!(
            core.handle(&snap, &inbound(&packet, CLIENT, now), &mut out),
            Outcome::Reply
        ));
        assert_eq!(
            ede_of(&out),
            (0, b"upstream rate limit for dyn.victim.org".to_vec())
        );
    }

    #[test]
    fn a_pending_query_stays_small() {
        // What an exchange keeps per waiting client; the budget is
        // 2 KB per exchange, buffers included.
        let size = std::mem::size_of::<Pending>();
        assert!(size <= 1200, "Pending is {size} bytes");
    }

    #[test]
    fn client_outside_the_acl_is_refused_with_ede_18() {
        let (core, snap, hits) = core();
        let packet = query("blocked.kz.", true, false, true);
        let mut out = Vec::new();
        let outcome = core.handle(&snap, &inbound(&packet, STRANGER, Instant::now()), &mut out);
        assert!(matches!(outcome, Outcome::Reply));
        // REFUSED, one question, one OPT carrying EDE 18 (Prohibited).
        assert_eq!(out[..12], [0xbe, 0xef, 0x81, 0x85, 0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(out[out.len() - 6..], [0, 15, 0, 2, 0, 18]);
        assert!(
            hits.0.lock().unwrap().is_empty(),
            "a refusal is not a block"
        );
    }

    #[test]
    fn malformed_packets_get_formerr_or_silence() {
        let (core, snap, _) = core();
        let now = Instant::now();
        let mut out = Vec::new();
        // A header claiming one question and no question: FORMERR, header only.
        let packet = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        let outcome = core.handle(&snap, &inbound(&packet, CLIENT, now), &mut out);
        assert!(matches!(outcome, Outcome::Reply));
        assert_eq!(out, [0x12, 0x34, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0]);
        // Shorter than a header, or a response: nothing at all.
        for packet in [
            &[0x12, 0x34, 0x01][..],
            &[0x12, 0x34, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0],
        ] {
            let outcome = core.handle(&snap, &inbound(packet, CLIENT, now), &mut out);
            assert!(matches!(outcome, Outcome::Silent), "{packet:02x?}");
        }
    }

    #[test]
    fn bypass_signals_are_nxdomain_before_anything_else_and_can_be_turned_off() {
        use hickory_proto::op::ResponseCode;
        let (mut core, snap, hits) = core();
        let now = Instant::now();
        for name in [
            "use-application-dns.net.",
            "USE-Application-DNS.net.",
            "mask.icloud.com.",
            "mask-h2.icloud.com.",
        ] {
            for qtype in [RecordType::A, RecordType::AAAA, RecordType::HTTPS] {
                let packet = query_type(name, qtype);
                let mut out = Vec::new();
                let outcome = core.handle(&snap, &inbound(&packet, CLIENT, now), &mut out);
                assert!(matches!(outcome, Outcome::Reply), "{name} answered here");
                let m = Message::from_vec(&out).unwrap();
                assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
                assert!(m.answers.is_empty(), "{name}");
            }
        }
        // Names below them are ordinary names.
        let packet = query_type("www.use-application-dns.net.", RecordType::A);
        let mut out = Vec::new();
        let outcome = core.handle(&snap, &inbound(&packet, CLIENT, now), &mut out);
        assert!(matches!(outcome, Outcome::Forward(_)));
        assert!(hits.0.lock().unwrap().is_empty(), "signals are not blocks");
        let text = core.metrics.render().unwrap();
        assert!(
            text.contains("sinkhole_bypass_signal_total{signal=\"firefox-canary\"} 6"),
            "{text}"
        );
        assert!(
            text.contains("sinkhole_bypass_signal_total{signal=\"icloud-private-relay\"} 6"),
            "{text}"
        );
        // Only the canary: the Private Relay names go upstream like any other.
        core.policy.bypass_signals =
            crate::bypass::BypassSignals::of(&[crate::bypass::BypassSignal::FirefoxCanary]);
        let packet = query_type("mask.icloud.com.", RecordType::A);
        let outcome = core.handle(&snap, &inbound(&packet, CLIENT, now), &mut out);
        assert!(matches!(outcome, Outcome::Forward(_)));
        let packet = query_type("use-application-dns.net.", RecordType::A);
        let outcome = core.handle(&snap, &inbound(&packet, CLIENT, now), &mut out);
        assert!(matches!(outcome, Outcome::Reply));
    }
}
