//! Prometheus metrics, `/healthz` and `/readyz` (`[metrics] listen`, e.g.
//! `127.0.0.1:9153`, CoreDNS's port), served by the shared HTTP stack
//! ([`crate::http`]) through the router in [`http`].
//!
//! # Metrics
//!
//! Served at `/metrics` in the OpenMetrics text format
//! (`application/openmetrics-text`), which Prometheus, VictoriaMetrics and
//! the Grafana agent all scrape. Names follow CoreDNS/Blocky.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `sinkhole_queries_total` | counter | `transport` (`udp`, `tcp`), `type` (`A` `AAAA` `CNAME` `MX` `TXT` `HTTPS` `SVCB` `PTR` `SRV` `NS` `SOA` `ANY` `other`) | queries received that parsed as DNS queries |
//! | `sinkhole_responses_total` | counter | `rcode` (`NOERROR` `FORMERR` `SERVFAIL` `NXDOMAIN` `NOTIMP` `REFUSED` … `BADVERS` `other`) | responses sent, by response code |
//! | `sinkhole_blocked_total` | counter | `list` (list name), `action` (`nxdomain` `nodata` `address` `refused` `drop`) | queries blocked, by the list of the winning rule and what was answered |
//! | `sinkhole_cache_hits_total` | counter | | answers served from the packet cache |
//! | `sinkhole_cache_misses_total` | counter | | queries that had to go upstream |
//! | `sinkhole_cache_entries` | gauge | | answers in the cache now |
//! | `sinkhole_upstream_request_duration_seconds` | histogram | `upstream` (`ADDR:PORT`) | time from sending a query upstream to its accepted answer |
//! | `sinkhole_upstream_errors_total` | counter | `upstream` | upstream exchanges that failed (timeout, network error) |
//! | `sinkhole_inflight_queries` | gauge | | upstream exchanges holding a `server.max_inflight` slot now |
//! | `sinkhole_inflight_queries_peak` | gauge | | the most exchanges ever in flight at once (never above `server.max_inflight`) |
//! | `sinkhole_shed_queries_total` | counter | | queries answered SERVFAIL "overload" because `server.max_inflight` was reached (an older exchange shed, or no slot) |
//! | `sinkhole_bypass_signal_total` | counter | `signal` (`firefox-canary` `icloud-private-relay`) | bypass-signal names answered NXDOMAIN (`policy.bypass_signals`), never sent upstream |
//! | `sinkhole_local_answers_total` | counter | `zone` (`localhost` `test` `invalid` `onion` `home.arpa` `private-reverse`) | special-use names answered locally (`policy.local_zones`), never sent upstream |
//! | `sinkhole_upstream_ratelimited_total` | counter | `zone` (the first 100 zones limited, then `other`) | queries answered SERVFAIL over `limits.upstream_qps_per_zone` instead of going upstream |
//! | `sinkhole_ratelimited_total` | counter | `limit` (`qps`, `tcp_connections`) | queries dropped (UDP) or refused (TCP) over `limits.qps_per_client`, and TCP connections closed over `limits.tcp_connections_per_client` |
//! | `sinkhole_stale_answers_total` | counter | | expired cached answers served because no upstream answered (`cache.serve_stale_secs`, RFC 8767) |
//! | `sinkhole_list_entries` | gauge | `list` | rules loaded from each list in the snapshot in force |
//! | `sinkhole_list_version` | gauge | | version of the snapshot in force |
//! | `sinkhole_list_last_reload_success_timestamp_seconds` | gauge | | Unix time of the last accepted reload |
//! | `sinkhole_list_reloads_total` | counter | | accepted reloads |
//! | `sinkhole_list_reload_failures_total` | counter | `reason` (`io` `compile` `skipped_ratio` `shrink` `unsettled` `persist` `nothing_to_serve`) | rejected reloads; the previous snapshot stayed in force |
//! | `sinkhole_audit_records_written_total` | counter | | audit log lines written |
//! | `sinkhole_audit_records_lost_total` | counter | | audit records lost (queue full, write errors) |
//! | `sinkhole_audit_write_errors_total` | counter | | failed audit writes and fsyncs |
//! | `sinkhole_audit_queue_depth` | gauge | | audit records waiting for the writer |
//! | `sinkhole_dnstap_messages_sent_total` | counter | | dnstap messages written to the collector (`[dnstap]`) |
//! | `sinkhole_dnstap_messages_dropped_total` | counter | | dnstap messages lost: queue full, or the connection failed mid-write |
//! | `sinkhole_dnstap_connects_total` / `sinkhole_dnstap_connect_failures_total` | counter | | collector connections made (handshake done) / attempts failed |
//! | `sinkhole_dnstap_connected` | gauge | | 1 while a collector is connected |
//! | `sinkhole_rpz_serve_serial` / `sinkhole_rpz_serve_records` | gauge | | serial and record count of the RPZ zone served (`[rpz.serve]`) |
//! | `sinkhole_rpz_serve_transfers_total` | counter | `kind` (`axfr` `ixfr` `ixfr_full`) | zone transfers answered (`ixfr_full`: an IXFR answered with the whole zone) |
//! | `sinkhole_rpz_serve_refused_total` | counter | | queries for the zone refused (outside `allow_transfer`, no or bad TSIG) |
//! | `sinkhole_rpz_serve_notifies_total` | counter | `outcome` (`answered` `failed`) | NOTIFYs to followers |
//! | `sinkhole_rpz_serve_rules_left_out` | gauge | `kind` (`keyword` `url` `other`) | rules the zone cannot express |
//! | `sinkhole_web_tls_connections_total` | counter | `outcome` (`passed` `refused` `not_steered` `no_sni` `not_tls` `hello_timeout` `client_closed` `origin_error` `denied` `over_capacity`) | TLS front connections by how they ended (present with `[web] tls_listen`) |
//! | `sinkhole_web_tls_open_connections` | gauge | | TLS front connections open now |
//! | `sinkhole_web_tls_bytes_total` | counter | `direction` (`client_to_origin` `origin_to_client`) | bytes the TLS front passed through |
//! | `sinkhole_build_info` | info | `version` | always 1; the running version |
//! | `sinkhole_steered_total` | counter | | A/AAAA/HTTPS/SVCB queries for names with URL rules answered for the web front (`[web]`) |
//! | `sinkhole_web_requests_total` | counter | `outcome` (`blocked` `proxied` `misdirected` `notice` `refused` `error`) | HTTP requests at the web front |
//! | `sinkhole_web_upstream_duration_seconds` | histogram | | proxied requests: connecting to the origin to its response head |
//! | `sinkhole_web_http_open_connections` | gauge | | connections open at the HTTP front (sampled every second) |
//!
//! Gauges fed at scrape time (cache entries, list and audit figures) are
//! absent until the server registers the hook that provides them.
//!
//! # Key queries (Grafana)
//!
//! ```text
//! sum by (transport) (rate(sinkhole_queries_total[1m]))              # QPS
//! sum by (type) (rate(sinkhole_queries_total[5m]))                   # query mix
//! sum by (rcode) (rate(sinkhole_responses_total[1m]))                # answers by rcode
//! sum by (list) (rate(sinkhole_blocked_total[5m]))                   # blocks per list
//! sum(rate(sinkhole_blocked_total[5m])) / sum(rate(sinkhole_queries_total[5m]))   # block ratio
//! rate(sinkhole_cache_hits_total[5m]) / (rate(sinkhole_cache_hits_total[5m]) + rate(sinkhole_cache_misses_total[5m]))  # cache hit ratio
//! histogram_quantile(0.99, sum by (le, upstream) (rate(sinkhole_upstream_request_duration_seconds_bucket[5m])))      # upstream p99
//! sum by (upstream) (rate(sinkhole_upstream_errors_total[5m]))       # upstream failures
//! sinkhole_inflight_queries ; rate(sinkhole_shed_queries_total[1m])  # saturation
//! sum by (limit) (rate(sinkhole_ratelimited_total[1m]))              # per-client limits at work
//! rate(sinkhole_stale_answers_total[5m]) > 0                         # alert: serving stale (upstreams down)
//! sinkhole_list_version ; sum(sinkhole_list_entries)                 # what is enforced
//! time() - sinkhole_list_last_reload_success_timestamp_seconds      # list age (alert if large)
//! increase(sinkhole_list_reload_failures_total[1h]) > 0              # alert: reload rejected
//! increase(sinkhole_audit_records_lost_total[5m]) > 0                # alert: audit loss
//! ```
//!
//! # Feeding it
//!
//! The query path calls [`Metrics::query`], [`Metrics::response`],
//! [`Metrics::blocked`], [`Metrics::cache_hit`]/[`Metrics::cache_miss`],
//! [`Metrics::upstream_ok`]/[`Metrics::upstream_error`], [`Metrics::shed`]
//! and sets [`Metrics::set_inflight`] as exchanges take and free slots. Those are
//! atomic increments on counters created up front (indexed by small enums):
//! no allocation and no lock. Figures other parts already keep (cache size,
//! reload stats, audit stats, snapshot version) are read at scrape time
//! through hooks registered with [`Metrics::on_scrape`].
//!
//! # Health
//!
//! `/healthz` answers 200 while the process runs. `/readyz` answers 200 when
//! the `ready` closure passed to [`http::router`] says so ([`Readiness`]
//! provides one: listeners bound, a snapshot loaded, upstreams not failing),
//! 503 otherwise.
//!
//! # Layout
//!
//! This file holds the registry and the hot path; [`config`] the
//! `[metrics]` table, [`scrape`] the figures read at scrape time,
//! [`http`] the endpoints, [`exposition`] a reader of the text format.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use thiserror::Error;

pub mod config;
pub mod exposition;
pub(crate) mod http;
pub mod rpz;
pub(crate) mod scrape;
pub mod web;

pub use config::{MetricsConfig, RawMetricsConfig};
pub use exposition::{Exposition, ParsedSample};
pub use http::MetricsServer;
pub use scrape::DnstapSample;
pub use scrape::RpzServeSample;
pub use scrape::Sample;

use scrape::ScrapeCollector;

use crate::policy::Action;
use crate::wire::Transport;

#[derive(Debug, Error)]
pub enum MetricsError {
    /// Binding a `metrics.listen` address failed (names it).
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("cannot encode metrics")]
    Encode,
}

// ------------------------------------------------------------ label enums

/// Which per-client limit turned something away (`limit` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// `limits.qps_per_client`: a query.
    Qps = 0,
    /// `limits.tcp_connections_per_client`: a connection.
    TcpConnections = 1,
}

impl Limit {
    const ALL: [Limit; 2] = [Limit::Qps, Limit::TcpConnections];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Qps => "qps",
            Limit::TcpConnections => "tcp_connections",
        }
    }
}

/// Query type label values: the common types by name, the rest `other`,
/// so a client cycling through all 65536 types cannot blow up cardinality.
const QTYPES: [(u16, &str); 12] = [
    (1, "A"),
    (28, "AAAA"),
    (5, "CNAME"),
    (15, "MX"),
    (16, "TXT"),
    (65, "HTTPS"),
    (64, "SVCB"),
    (12, "PTR"),
    (33, "SRV"),
    (2, "NS"),
    (6, "SOA"),
    (255, "ANY"),
];
const QTYPE_LABELS: usize = QTYPES.len() + 1;

fn qtype_index(qtype: u16) -> usize {
    QTYPES
        .iter()
        .position(|&(t, _)| t == qtype)
        .unwrap_or(QTYPES.len())
}

fn qtype_label(i: usize) -> &'static str {
    QTYPES.get(i).map_or("other", |&(_, n)| n)
}

/// RCODE label values (RFC 6895 names); BADVERS is EDNS's extended 16.
const RCODES: [&str; 12] = [
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "DSOTYPENI",
];
const RCODE_BADVERS: usize = RCODES.len();
const RCODE_OTHER: usize = RCODES.len() + 1;
const RCODE_LABELS: usize = RCODES.len() + 2;

fn rcode_index(rcode: u16) -> usize {
    match rcode {
        r if (r as usize) < RCODES.len() => r as usize,
        16 => RCODE_BADVERS,
        _ => RCODE_OTHER,
    }
}

fn rcode_label(i: usize) -> &'static str {
    match i {
        RCODE_BADVERS => "BADVERS",
        RCODE_OTHER => "other",
        i => RCODES.get(i).copied().unwrap_or("other"),
    }
}

/// The slot of a resolved action in a list's `blocked` counters (the
/// order of [`Action::ANSWERS`]). `None` for `allow` and the unresolved
/// `block`, which are never an answer.
fn answer_slot(action: Action) -> Option<usize> {
    Action::ANSWERS.iter().position(|&a| a == action)
}

/// A poisoned lock only means another thread panicked mid-update of a
/// counter map; the numbers are still worth exporting.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

// ------------------------------------------------------------ the registry

/// Lists seen beyond this share one `list="other"` series: list names come
/// from files, and a directory of generated files must not create
/// unbounded series.
const MAX_LISTS: usize = 1000;

/// Zones over `limits.upstream_qps_per_zone` with a series of their own;
/// later ones share `zone="other"` (a flood can name any number of zones).
pub const MAX_LIMITED_ZONES: usize = 100;

type BlockedLabels = [(&'static str, String); 2];
type UpstreamLabels = [(&'static str, String); 1];

struct UpstreamSlot {
    addr: SocketAddr,
    duration: Histogram,
    errors: Counter,
}

/// Every metric the server exports. Share it as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    queries: [[Counter; QTYPE_LABELS]; 2],
    responses: [Counter; RCODE_LABELS],
    blocked_family: Family<BlockedLabels, Counter>,
    /// Per list, one counter per answering [`Action`]; replaced (copy on write)
    /// when a new list name shows up, which happens once per list.
    blocked: ArcSwap<HashMap<Box<str>, [Counter; 5]>>,
    blocked_grow: Mutex<()>,
    cache_hits: Counter,
    cache_misses: Counter,
    /// The configured upstreams; any other address is counted as
    /// `upstream="other"` through the families (created on first use).
    upstreams: Vec<UpstreamSlot>,
    upstream_durations: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    upstream_errors: Family<UpstreamLabels, Counter>,
    inflight: Gauge,
    inflight_peak: Gauge,
    shed: Counter,
    local_answers: Family<[(&'static str, &'static str); 1], Counter>,
    bypass_signals: Family<[(&'static str, &'static str); 1], Counter>,
    zone_limited_family: Family<[(&'static str, String); 1], Counter>,
    /// The zones with a series of their own (at most [`MAX_LIMITED_ZONES`]).
    zone_limited: Mutex<HashMap<Box<str>, Counter>>,
    /// By [`Limit`].
    ratelimited: [Counter; 2],
    stale_answers: Counter,
    scrape: Arc<ScrapeCollector>,
    start: Instant,
    /// Milliseconds since `start` + 1 of the last upstream answer / failure (0: never).
    last_upstream_ok: AtomicU64,
    last_upstream_err: AtomicU64,
    /// The web front's series (issue 12).
    pub web: web::WebMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn upstream_buckets() -> impl Iterator<Item = f64> {
    // 0.5 ms … 4.1 s: a LAN resolver answers in under a millisecond, a
    // cold recursive lookup in tens to hundreds, and the default overall
    // timeout is 1.5 s.
    exponential_buckets(0.0005, 2.0, 14)
}

impl Metrics {
    /// Counters for a server forwarding to `upstreams`.
    pub fn new(upstreams: &[SocketAddr]) -> Metrics {
        let mut registry = Registry::with_prefix("sinkhole");

        let queries_family = Family::<[(&'static str, &'static str); 2], Counter>::default();
        let queries = Transport::ALL.map(|t| {
            std::array::from_fn(|i| {
                queries_family
                    .get_or_create_owned(&[("transport", t.as_str()), ("type", qtype_label(i))])
            })
        });
        registry.register(
            "queries",
            "DNS queries received, by transport and query type",
            queries_family,
        );

        let responses_family = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let responses = std::array::from_fn(|i| {
            responses_family.get_or_create_owned(&[("rcode", rcode_label(i))])
        });
        registry.register(
            "responses",
            "DNS responses sent, by RCODE",
            responses_family,
        );

        let blocked_family = Family::<BlockedLabels, Counter>::default();
        registry.register(
            "blocked",
            "Queries blocked, by the list of the winning rule and the action taken",
            blocked_family.clone(),
        );

        let cache_hits = Counter::default();
        registry.register(
            "cache_hits",
            "Answers served from the packet cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "cache_misses",
            "Queries not in the packet cache (forwarded upstream)",
            cache_misses.clone(),
        );

        let durations = Family::<UpstreamLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(upstream_buckets())) as fn() -> Histogram,
        );
        let errors = Family::<UpstreamLabels, Counter>::default();
        let mut slots: Vec<UpstreamSlot> = Vec::with_capacity(upstreams.len());
        for &addr in upstreams {
            if slots.iter().any(|s| s.addr == addr) {
                continue;
            }
            let label = [("upstream", addr.to_string())];
            slots.push(UpstreamSlot {
                addr,
                duration: durations.get_or_create_owned(&label),
                errors: errors.get_or_create_owned(&label),
            });
        }
        registry.register_with_unit(
            "upstream_request_duration",
            "Time from sending a query upstream to its accepted answer",
            Unit::Seconds,
            durations.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream exchanges that failed (timeout or network error)",
            errors.clone(),
        );

        let inflight = Gauge::default();
        registry.register(
            "inflight_queries",
            "Queries waiting for an upstream answer",
            inflight.clone(),
        );
        let inflight_peak = Gauge::default();
        registry.register(
            "inflight_queries_peak",
            "The most upstream exchanges in flight at once since start",
            inflight_peak.clone(),
        );
        let shed = Counter::default();
        registry.register(
            "shed_queries",
            "Queries answered SERVFAIL (overload) because server.max_inflight was reached",
            shed.clone(),
        );
        let local_answers = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "local_answers",
            "Special-use names answered locally (policy.local_zones), never sent upstream",
            local_answers.clone(),
        );
        let bypass_signals = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "bypass_signal",
            "Bypass-signal names answered NXDOMAIN (policy.bypass_signals), never sent upstream",
            bypass_signals.clone(),
        );
        // Present at zero from the start, so that increase() sees the first.
        for signal in crate::bypass::BypassSignal::ALL {
            let _ = bypass_signals.get_or_create(&[("signal", signal.as_str())]);
        }
        let zone_limited_family = Family::<[(&'static str, String); 1], Counter>::default();
        registry.register(
            "upstream_ratelimited",
            "Queries answered SERVFAIL over limits.upstream_qps_per_zone instead of going upstream",
            zone_limited_family.clone(),
        );

        let ratelimited_family = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let ratelimited =
            Limit::ALL.map(|l| ratelimited_family.get_or_create_owned(&[("limit", l.as_str())]));
        registry.register(
            "ratelimited",
            "Queries dropped or refused, and TCP connections closed, over a per-client limit",
            ratelimited_family,
        );
        let stale_answers = Counter::default();
        registry.register(
            "stale_answers",
            "Expired cached answers served because no upstream answered (RFC 8767)",
            stale_answers.clone(),
        );

        registry.register(
            "build",
            "Build information",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );

        let scrape = Arc::new(ScrapeCollector {
            hooks: Mutex::new(Vec::new()),
        });
        registry.register_collector(Box::new(scrape.clone()));
        let web = web::WebMetrics::register(&mut registry);

        Metrics {
            registry,
            queries,
            responses,
            blocked_family,
            blocked: ArcSwap::from_pointee(HashMap::new()),
            blocked_grow: Mutex::new(()),
            cache_hits,
            cache_misses,
            upstreams: slots,
            upstream_durations: durations,
            upstream_errors: errors,
            inflight,
            inflight_peak,
            shed,
            local_answers,
            bypass_signals,
            zone_limited_family,
            zone_limited: Mutex::new(HashMap::new()),
            ratelimited,
            stale_answers,
            scrape,
            start: Instant::now(),
            last_upstream_ok: AtomicU64::new(0),
            last_upstream_err: AtomicU64::new(0),
            web,
        }
    }

    /// A query was steered to the web front.
    #[inline]
    pub fn steered(&self) {
        self.web.steered();
    }

    // ---------------------------------------------------------- hot path

    /// A query arrived (`qtype` as on the wire).
    #[inline]
    pub fn query(&self, transport: Transport, qtype: u16) {
        let t = match transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
        };
        self.queries[t][qtype_index(qtype)].inc();
    }

    /// A response was sent with `rcode` (header RCODE, or 16 for BADVERS).
    #[inline]
    pub fn response(&self, rcode: u16) {
        self.responses[rcode_index(rcode)].inc();
    }

    /// A query was blocked by a rule from `list`.
    #[inline]
    pub fn blocked(&self, list: &str, action: Action) {
        let Some(i) = answer_slot(action) else {
            debug_assert!(false, "blocked with an unresolved action {action}");
            return;
        };
        if let Some(c) = self.blocked.load().get(list) {
            c[i].inc();
            return;
        }
        self.blocked_slow(list)[i].inc();
    }

    /// First block from a list: create its counters.
    #[cold]
    fn blocked_slow(&self, list: &str) -> [Counter; 5] {
        let _g = lock(&self.blocked_grow);
        let cur = self.blocked.load_full();
        if let Some(c) = cur.get(list) {
            return c.clone();
        }
        let key = if cur.len() < MAX_LISTS { list } else { "other" };
        if let Some(c) = cur.get(key) {
            return c.clone();
        }
        let counters = Action::ANSWERS.map(|a| {
            self.blocked_family.get_or_create_owned(&[
                ("list", key.to_string()),
                ("action", a.as_str().to_string()),
            ])
        });
        let mut next = (*cur).clone();
        next.insert(key.into(), counters.clone());
        self.blocked.store(Arc::new(next));
        counters
    }

    /// Create the `blocked` series for these lists now (at zero), so rates
    /// exist before the first block; call when a snapshot is loaded.
    pub fn register_lists<'a>(&self, lists: impl IntoIterator<Item = &'a str>) {
        for l in lists {
            if self.blocked.load().get(l).is_none() {
                self.blocked_slow(l);
            }
        }
    }

    #[inline]
    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    #[inline]
    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    fn slot(&self, upstream: SocketAddr) -> Option<&UpstreamSlot> {
        self.upstreams.iter().find(|s| s.addr == upstream)
    }

    fn other_upstream() -> UpstreamLabels {
        [("upstream", "other".to_string())]
    }

    fn now_mark(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// `upstream` answered after `took`.
    pub fn upstream_ok(&self, upstream: SocketAddr, took: Duration) {
        match self.slot(upstream) {
            Some(s) => s.duration.observe(took.as_secs_f64()),
            None => self
                .upstream_durations
                .get_or_create(&Self::other_upstream())
                .observe(took.as_secs_f64()),
        }
        self.last_upstream_ok
            .store(self.now_mark(), Ordering::Relaxed);
    }

    /// An exchange with `upstream` failed (timeout, network error).
    pub fn upstream_error(&self, upstream: SocketAddr) {
        match self.slot(upstream) {
            Some(s) => {
                s.errors.inc();
            }
            None => {
                self.upstream_errors
                    .get_or_create(&Self::other_upstream())
                    .inc();
            }
        }
        self.last_upstream_err
            .store(self.now_mark(), Ordering::Relaxed);
    }

    /// A query was not forwarded because `max_inflight` was reached.
    #[inline]
    pub fn shed(&self) {
        self.shed.inc();
    }

    /// A query or connection was turned away by a per-client limit.
    #[inline]
    pub fn ratelimited(&self, limit: Limit) {
        self.ratelimited[limit as usize].inc();
    }

    /// A stale cached answer was served (RFC 8767).
    #[inline]
    pub fn stale_answer(&self) {
        self.stale_answers.inc();
    }

    /// Upstream exchanges in flight now, and the most ever at once.
    pub fn set_inflight(&self, live: usize, peak: usize) {
        self.inflight.set(i64::try_from(live).unwrap_or(i64::MAX));
        self.inflight_peak
            .set(i64::try_from(peak).unwrap_or(i64::MAX));
    }

    /// A special-use name was answered locally; `zone` is one of the
    /// fixed `policy.local_zones` names.
    pub fn local_answer(&self, zone: &'static str) {
        self.local_answers.get_or_create(&[("zone", zone)]).inc();
    }

    /// A bypass-signal name was answered NXDOMAIN; `signal` is one of the
    /// fixed `policy.bypass_signals` names.
    pub fn bypass_signal(&self, signal: &'static str) {
        self.bypass_signals
            .get_or_create(&[("signal", signal)])
            .inc();
    }

    /// A query for `zone` was answered SERVFAIL over the per-zone
    /// upstream rate limit.
    pub fn upstream_ratelimited(&self, zone: &str) {
        let mut zones = lock(&self.zone_limited);
        if let Some(c) = zones.get(zone) {
            c.inc();
            return;
        }
        let key = if zones.len() < MAX_LIMITED_ZONES {
            zone
        } else {
            "other"
        };
        let c = zones
            .entry(key.into())
            .or_insert_with(|| {
                self.zone_limited_family
                    .get_or_create_owned(&[("zone", key.to_string())])
            })
            .clone();
        c.inc();
    }

    // ---------------------------------------------------------- scrape side

    /// Run `hook` on every scrape to fill in figures kept elsewhere. Keep it
    /// cheap: it runs while the scrape waits.
    pub fn on_scrape(&self, hook: impl Fn(&mut Sample) + Send + Sync + 'static) {
        lock(&self.scrape.hooks).push(Box::new(hook));
    }

    /// The exposition, as served at `/metrics`.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|_| MetricsError::Encode)?;
        Ok(out)
    }

    fn within(&self, mark: u64, window: Duration) -> bool {
        mark != 0 && u128::from(self.now_mark().saturating_sub(mark)) <= window.as_millis()
    }

    /// Did any upstream answer within `window`?
    pub fn upstream_answered_within(&self, window: Duration) -> bool {
        self.within(self.last_upstream_ok.load(Ordering::Relaxed), window)
    }

    /// Upstreams are usable unless exchanges failed within `window` and none
    /// succeeded. A server with no recent traffic counts as healthy: with no
    /// queries there is no evidence either way, and calling it unready would
    /// keep a load balancer from ever sending the queries that prove it.
    pub fn upstream_healthy(&self, window: Duration) -> bool {
        self.upstream_answered_within(window)
            || !self.within(self.last_upstream_err.load(Ordering::Relaxed), window)
    }
}

// ------------------------------------------------------------ readiness

/// What `/readyz` checks: listeners bound, a snapshot loaded, upstreams not
/// failing (see [`Metrics::upstream_healthy`]).
#[derive(Debug)]
pub struct Readiness {
    listeners: AtomicBool,
    snapshot: AtomicBool,
    metrics: Arc<Metrics>,
    upstream_window: Duration,
}

impl Readiness {
    pub fn new(metrics: Arc<Metrics>, upstream_window: Duration) -> Arc<Readiness> {
        Arc::new(Readiness {
            listeners: AtomicBool::new(false),
            snapshot: AtomicBool::new(false),
            metrics,
            upstream_window,
        })
    }

    pub fn set_listeners_bound(&self, bound: bool) {
        self.listeners.store(bound, Ordering::Relaxed);
    }

    pub fn set_snapshot_loaded(&self, loaded: bool) {
        self.snapshot.store(loaded, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.listeners.load(Ordering::Relaxed)
            && self.snapshot.load(Ordering::Relaxed)
            && self.metrics.upstream_healthy(self.upstream_window)
    }

    /// The closure [`http::router`] takes.
    pub fn check(self: &Arc<Self>) -> Arc<dyn Fn() -> bool + Send + Sync> {
        let me = self.clone();
        Arc::new(move || me.is_ready())
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditStats;
    use crate::list::reload::ReloadStats;

    fn up(i: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, i], 53))
    }

    fn parse(m: &Metrics) -> Exposition {
        let text = m.render().unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn hot_path_counters_reach_the_exposition() {
        let m = Metrics::new(&[up(1), up(2), up(1)]);
        m.query(Transport::Udp, 1);
        m.query(Transport::Udp, 1);
        m.query(Transport::Tcp, 28);
        m.query(Transport::Udp, 65534);
        m.response(0);
        m.response(3);
        m.response(3);
        m.response(16);
        m.response(4000);
        m.blocked("court-orders", Action::Nxdomain);
        m.blocked("court-orders", Action::Nxdomain);
        m.blocked("ads", Action::Address);
        m.cache_hit();
        m.cache_miss();
        m.cache_miss();
        m.upstream_ok(up(1), Duration::from_millis(3));
        m.upstream_ok(up(2), Duration::from_millis(700));
        m.upstream_error(up(2));
        m.upstream_error(up(9));
        m.shed();
        m.set_inflight(1, 2);

        let e = parse(&m);
        let v = |n: &str, l: &[(&str, &str)]| e.value(n, l);
        assert_eq!(
            v(
                "sinkhole_queries_total",
                &[("transport", "udp"), ("type", "A")]
            ),
            Some(2.0)
        );
        assert_eq!(
            v(
                "sinkhole_queries_total",
                &[("transport", "tcp"), ("type", "AAAA")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v(
                "sinkhole_queries_total",
                &[("transport", "udp"), ("type", "other")]
            ),
            Some(1.0)
        );
        // Pre-registered at zero, so rate() works from the first scrape.
        assert_eq!(
            v(
                "sinkhole_queries_total",
                &[("transport", "tcp"), ("type", "HTTPS")]
            ),
            Some(0.0)
        );
        assert_eq!(v("sinkhole_queries_total", &[]), Some(4.0));
        assert_eq!(
            e.types.get("sinkhole_queries").map(String::as_str),
            Some("counter")
        );
        assert_eq!(
            v("sinkhole_responses_total", &[("rcode", "NXDOMAIN")]),
            Some(2.0)
        );
        assert_eq!(
            v("sinkhole_responses_total", &[("rcode", "NOERROR")]),
            Some(1.0)
        );
        assert_eq!(
            v("sinkhole_responses_total", &[("rcode", "BADVERS")]),
            Some(1.0)
        );
        assert_eq!(
            v("sinkhole_responses_total", &[("rcode", "other")]),
            Some(1.0)
        );
        assert_eq!(
            v(
                "sinkhole_blocked_total",
                &[("list", "court-orders"), ("action", "nxdomain")]
            ),
            Some(2.0)
        );
        assert_eq!(
            v(
                "sinkhole_blocked_total",
                &[("list", "court-orders"), ("action", "drop")]
            ),
            Some(0.0)
        );
        assert_eq!(
            v(
                "sinkhole_blocked_total",
                &[("list", "ads"), ("action", "address")]
            ),
            Some(1.0)
        );
        assert_eq!(v("sinkhole_cache_hits_total", &[]), Some(1.0));
        assert_eq!(v("sinkhole_cache_misses_total", &[]), Some(2.0));
        let u1 = up(1).to_string();
        let u2 = up(2).to_string();
        assert_eq!(
            v(
                "sinkhole_upstream_request_duration_seconds_count",
                &[("upstream", &u1)]
            ),
            Some(1.0)
        );
        assert_eq!(
            v(
                "sinkhole_upstream_request_duration_seconds_bucket",
                &[("upstream", &u1), ("le", "0.004")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v(
                "sinkhole_upstream_request_duration_seconds_bucket",
                &[("upstream", &u2), ("le", "0.512")]
            ),
            Some(0.0)
        );
        assert_eq!(
            v(
                "sinkhole_upstream_request_duration_seconds_bucket",
                &[("upstream", &u2), ("le", "+Inf")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v("sinkhole_upstream_errors_total", &[("upstream", &u2)]),
            Some(1.0)
        );
        assert_eq!(
            v("sinkhole_upstream_errors_total", &[("upstream", &u1)]),
            Some(0.0)
        );
        // An address not in the configuration lands in `other`.
        assert_eq!(
            v("sinkhole_upstream_errors_total", &[("upstream", "other")]),
            Some(1.0)
        );
        assert_eq!(v("sinkhole_inflight_queries", &[]), Some(1.0));
        assert_eq!(v("sinkhole_inflight_queries_peak", &[]), Some(2.0));
        m.set_inflight(0, 2);
        assert_eq!(parse(&m).value("sinkhole_inflight_queries", &[]), Some(0.0));
        assert_eq!(v("sinkhole_shed_queries_total", &[]), Some(1.0));
        assert_eq!(
            v(
                "sinkhole_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            Some(1.0)
        );
        // Scrape-time gauges are absent until a hook provides them.
        assert_eq!(v("sinkhole_cache_entries", &[]), None);
    }

    #[test]
    fn scrape_hooks_fill_gauges() {
        let m = Metrics::new(&[up(1)]);
        let reload = Arc::new(ReloadStats::default());
        reload.accepted.store(4, Ordering::Relaxed);
        reload
            .last_success_unix
            .store(1_700_000_000, Ordering::Relaxed);
        lock(&reload.failures_by_reason).insert("shrink", 2);
        let r = reload.clone();
        m.on_scrape(move |s| {
            s.reload_stats(&r);
            s.cache_entries = Some(42);
            s.cache_bytes = Some(4096);
            s.list_version = Some(7);
            s.list_entries = vec![("court-orders".into(), 1200), ("ads \"x\"".into(), 3)];
        });
        m.on_scrape(|s| {
            s.audit_stats(&AuditStats {
                enqueued: 10,
                written: 12,
                lost: 1,
                queue_depth: 2,
                write_errors: 3,
            });
            s.anchor = Some(crate::audit::AnchorStats {
                delivered: 5,
                failed: 6,
                rejected: 7,
                dropped: 8,
                backlog: 9,
            });
        });
        m.register_lists(["court-orders", "ads"]);
        let e = parse(&m);
        let v = |n: &str, l: &[(&str, &str)]| e.value(n, l);
        assert_eq!(v("sinkhole_cache_entries", &[]), Some(42.0));
        assert_eq!(v("sinkhole_cache_size_bytes", &[]), Some(4096.0));
        assert_eq!(v("sinkhole_audit_anchor_delivered_total", &[]), Some(5.0));
        assert_eq!(v("sinkhole_audit_anchor_failures_total", &[]), Some(6.0));
        assert_eq!(v("sinkhole_audit_anchor_refused_total", &[]), Some(7.0));
        assert_eq!(v("sinkhole_audit_anchor_dropped_total", &[]), Some(8.0));
        assert_eq!(v("sinkhole_audit_anchor_backlog", &[]), Some(9.0));
        assert_eq!(v("sinkhole_list_version", &[]), Some(7.0));
        assert_eq!(
            v("sinkhole_list_entries", &[("list", "court-orders")]),
            Some(1200.0)
        );
        assert_eq!(
            v("sinkhole_list_entries", &[("list", "ads \"x\"")]),
            Some(3.0)
        );
        assert_eq!(
            v("sinkhole_list_last_reload_success_timestamp_seconds", &[]),
            Some(1_700_000_000.0)
        );
        assert_eq!(v("sinkhole_list_reloads_total", &[]), Some(4.0));
        assert_eq!(
            v(
                "sinkhole_list_reload_failures_total",
                &[("reason", "shrink")]
            ),
            Some(2.0)
        );
        assert_eq!(
            v("sinkhole_list_reload_failures_total", &[("reason", "io")]),
            Some(0.0)
        );
        assert_eq!(v("sinkhole_audit_records_written_total", &[]), Some(12.0));
        assert_eq!(v("sinkhole_audit_records_lost_total", &[]), Some(1.0));
        assert_eq!(v("sinkhole_audit_write_errors_total", &[]), Some(3.0));
        assert_eq!(v("sinkhole_audit_queue_depth", &[]), Some(2.0));
        assert_eq!(
            v(
                "sinkhole_blocked_total",
                &[("list", "ads"), ("action", "nodata")]
            ),
            Some(0.0)
        );
        for family in [
            "sinkhole_list_last_reload_success_timestamp_seconds",
            "sinkhole_upstream_request_duration_seconds",
        ] {
            assert!(
                e.types.contains_key(family),
                "{family}: {:?}",
                e.types.keys()
            );
        }
        assert_eq!(
            e.types.get("sinkhole_build").map(String::as_str),
            Some("info")
        );
    }

    #[test]
    fn limit_and_stale_counters() {
        let m = Metrics::new(&[up(1)]);
        assert_eq!(
            parse(&m).value("sinkhole_ratelimited_total", &[("limit", "qps")]),
            Some(0.0),
            "present at zero before the first hit"
        );
        m.ratelimited(Limit::Qps);
        m.ratelimited(Limit::Qps);
        m.ratelimited(Limit::TcpConnections);
        m.stale_answer();
        let e = parse(&m);
        assert_eq!(
            e.value("sinkhole_ratelimited_total", &[("limit", "qps")]),
            Some(2.0)
        );
        assert_eq!(
            e.value(
                "sinkhole_ratelimited_total",
                &[("limit", "tcp_connections")]
            ),
            Some(1.0)
        );
        assert_eq!(e.value("sinkhole_stale_answers_total", &[]), Some(1.0));
    }

    #[test]
    fn list_cardinality_is_capped() {
        let m = Metrics::new(&[]);
        for i in 0..MAX_LISTS + 20 {
            m.blocked(&format!("l{i}"), Action::Drop);
        }
        let e = parse(&m);
        let lists: std::collections::BTreeSet<_> = e
            .samples
            .iter()
            .filter(|s| s.name == "sinkhole_blocked_total")
            .filter_map(|s| s.labels.get("list").cloned())
            .collect();
        assert_eq!(lists.len(), MAX_LISTS + 1);
        assert_eq!(
            e.value(
                "sinkhole_blocked_total",
                &[("list", "other"), ("action", "drop")]
            ),
            Some(20.0)
        );
    }

    #[test]
    fn labels_and_actions() {
        assert_eq!(qtype_label(qtype_index(64)), "SVCB");
        assert_eq!(qtype_label(qtype_index(99)), "other");
        assert_eq!(rcode_label(rcode_index(5)), "REFUSED");
        assert_eq!(rcode_label(rcode_index(11)), "DSOTYPENI");
        assert_eq!(answer_slot(Action::Nxdomain), Some(0));
        assert_eq!(answer_slot(Action::Drop), Some(4));
        assert_eq!(answer_slot(Action::Block), None);
        assert_eq!(answer_slot(Action::Allow), None);
    }

    #[test]
    fn upstream_health() {
        let m = Metrics::new(&[up(1)]);
        let w = Duration::from_secs(30);
        // No traffic yet: no evidence against the upstreams.
        assert!(m.upstream_healthy(w));
        assert!(!m.upstream_answered_within(w));
        m.upstream_error(up(1));
        assert!(!m.upstream_healthy(w));
        m.upstream_ok(up(1), Duration::from_millis(1));
        assert!(m.upstream_healthy(w));
        assert!(m.upstream_answered_within(w));
        let m = Arc::new(m);
        let r = Readiness::new(m.clone(), w);
        assert!(!r.is_ready());
        r.set_listeners_bound(true);
        assert!(!r.is_ready());
        r.set_snapshot_loaded(true);
        assert!(r.is_ready());
        assert!((r.check())());
    }
}
