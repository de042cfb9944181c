//! Figures other parts of the server already keep (cache size, reload
//! and audit statistics, the snapshot version), read when Prometheus
//! scrapes: hooks registered with `Metrics::on_scrape` fill a [`Sample`],
//! and [`ScrapeCollector`] encodes it into the exposition.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use super::lock;
use crate::audit::{AnchorStats, AuditStats};
use crate::list::Snapshot;
use crate::list::reload::ReloadStats;

/// Figures read at scrape time from the parts that keep them. Hooks fill in
/// what they know; `None`/empty fields are left out of the exposition.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub cache_entries: Option<u64>,
    /// Bytes the packet cache holds, as counted against `cache.max_bytes`.
    pub cache_bytes: Option<u64>,
    pub list_version: Option<u64>,
    /// Rules per list name in the snapshot in force.
    pub list_entries: Vec<(String, u64)>,
    pub last_reload_success_unix: Option<u64>,
    pub reloads_accepted: Option<u64>,
    /// Rejected reloads by reason (a running total per reason).
    pub reload_failures: Vec<(String, u64)>,
    /// The audit writer's figures (`AuditLog::stats()`).
    pub audit_written: Option<u64>,
    pub audit_lost: Option<u64>,
    pub audit_write_errors: Option<u64>,
    pub audit_queue_depth: Option<u64>,
    /// The witness client's figures, with `[audit] anchor_url`.
    pub anchor: Option<AnchorStats>,
    /// Pushed and pulled lists' figures (issue 13).
    pub intake: Option<crate::intake::apply::IntakeFigures>,
    /// Followed RPZ zones (`[[rpz.follow]]`).
    pub rpz_zones: Vec<super::rpz::RpzZoneSample>,
    /// dnstap's figures, with `[dnstap]`.
    pub dnstap: Option<DnstapSample>,
    /// `[rpz.serve]`'s figures.
    pub rpz_serve: Option<RpzServeSample>,
    /// The TLS front's connections by outcome (`[web] tls_listen`).
    pub tls_connections: Vec<(&'static str, u64)>,
    /// The TLS front's open connections.
    pub tls_open_connections: Option<u64>,
    /// Bytes the TLS front passed through, by direction.
    pub tls_bytes: Vec<(&'static str, u64)>,
}

/// `[rpz.serve]`'s counters (`crate::rpz::serve::RpzServeStats`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RpzServeSample {
    pub serial: u64,
    pub records: u64,
    pub axfr: u64,
    pub ixfr: u64,
    pub ixfr_fallback: u64,
    pub refused: u64,
    pub notify_sent: u64,
    pub notify_failed: u64,
    /// Rules the zone cannot express, by kind.
    pub left_out: [(&'static str, u64); 3],
}

/// dnstap's counters (`crate::dnstap::DnstapStats`).
#[derive(Clone, Copy, Debug, Default)]
pub struct DnstapSample {
    pub sent: u64,
    pub dropped: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub connected: bool,
}

/// `ReloadError::reason()` values, exported as zero until they happen so
/// that `increase()` sees the first failure.
const RELOAD_REASONS: [&str; 7] = [
    "io",
    "compile",
    "skipped_ratio",
    "shrink",
    "unsettled",
    "persist",
    "nothing_to_serve",
];

impl Sample {
    /// Reload figures from the reloader's counters.
    pub fn reload_stats(&mut self, s: &ReloadStats) {
        let last = s.last_success_unix.load(Ordering::Relaxed);
        self.last_reload_success_unix = (last > 0).then_some(last);
        self.reloads_accepted = Some(s.accepted.load(Ordering::Relaxed));
        let mut by: BTreeMap<String, u64> =
            RELOAD_REASONS.iter().map(|r| (r.to_string(), 0)).collect();
        for (reason, n) in lock(&s.failures_by_reason).iter() {
            by.insert(reason.to_string(), *n);
        }
        self.reload_failures = by.into_iter().collect();
    }

    /// The version of the snapshot in force.
    pub fn snapshot(&mut self, s: &Snapshot) {
        self.list_version = Some(s.version());
    }

    /// The audit writer's figures (`AuditLog::stats()`).
    pub fn audit_stats(&mut self, s: &AuditStats) {
        self.audit_written = Some(s.written);
        self.audit_lost = Some(s.lost);
        self.audit_write_errors = Some(s.write_errors);
        self.audit_queue_depth = Some(s.queue_depth);
    }
}

pub(super) type Hook = Box<dyn Fn(&mut Sample) + Send + Sync>;

/// Runs the hooks and encodes what they found, on every scrape.
pub(super) struct ScrapeCollector {
    pub(super) hooks: Mutex<Vec<Hook>>,
}

impl std::fmt::Debug for ScrapeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeCollector")
            .field("hooks", &lock(&self.hooks).len())
            .finish()
    }
}

fn const_gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, unit, g.metric_type())?)
}

fn const_counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut s = Sample::default();
        for hook in lock(&self.hooks).iter() {
            hook(&mut s);
        }
        if let Some(v) = s.cache_entries {
            const_gauge(
                &mut enc,
                "cache_entries",
                "Answers in the packet cache.",
                None,
                v,
            )?;
        }
        if let Some(v) = s.cache_bytes {
            const_gauge(
                &mut enc,
                "cache_size",
                "Bytes the packet cache holds (bounded by cache.max_bytes).",
                Some(&Unit::Bytes),
                v,
            )?;
        }
        if let Some(v) = s.list_version {
            const_gauge(
                &mut enc,
                "list_version",
                "Version of the list snapshot in force.",
                None,
                v,
            )?;
        }
        if !s.list_entries.is_empty() {
            let mut m = enc.encode_descriptor(
                "list_entries",
                "Rules loaded from each list in the snapshot in force.",
                None,
                MetricType::Gauge,
            )?;
            for (list, n) in &s.list_entries {
                let labels = [("list", list.as_str())];
                ConstGauge::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        if let Some(v) = s.last_reload_success_unix {
            const_gauge(
                &mut enc,
                "list_last_reload_success_timestamp",
                "Unix time of the last accepted list reload.",
                Some(&Unit::Seconds),
                v,
            )?;
        }
        if let Some(v) = s.reloads_accepted {
            const_counter(&mut enc, "list_reloads", "Accepted list reloads.", v)?;
        }
        if !s.reload_failures.is_empty() {
            let mut m = enc.encode_descriptor(
                "list_reload_failures",
                "Rejected list reloads by reason (the previous snapshot stayed in force).",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in &s.reload_failures {
                let labels = [("reason", reason.as_str())];
                ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        if let Some(v) = s.audit_written {
            const_counter(
                &mut enc,
                "audit_records_written",
                "Audit log lines written.",
                v,
            )?;
        }
        if let Some(v) = s.audit_lost {
            const_counter(
                &mut enc,
                "audit_records_lost",
                "Audit records lost (queue full or write errors).",
                v,
            )?;
        }
        if let Some(v) = s.audit_write_errors {
            const_counter(
                &mut enc,
                "audit_write_errors",
                "Failed audit log writes and fsyncs.",
                v,
            )?;
        }
        if let Some(v) = s.audit_queue_depth {
            const_gauge(
                &mut enc,
                "audit_queue_depth",
                "Audit records waiting for the writer.",
                None,
                v,
            )?;
        }
        if let Some(a) = &s.anchor {
            const_counter(
                &mut enc,
                "audit_anchor_delivered",
                "Signed audit lines the witness accepted.",
                a.delivered,
            )?;
            const_counter(
                &mut enc,
                "audit_anchor_failures",
                "Deliveries to the witness that failed and will be retried.",
                a.failed,
            )?;
            const_counter(
                &mut enc,
                "audit_anchor_refused",
                "Signed audit lines the witness refused (not retried).",
                a.rejected,
            )?;
            const_counter(
                &mut enc,
                "audit_anchor_dropped",
                "Signed audit lines dropped from a full backlog.",
                a.dropped,
            )?;
            const_gauge(
                &mut enc,
                "audit_anchor_backlog",
                "Signed audit lines waiting for the witness.",
                None,
                a.backlog,
            )?;
        }
        if let Some(i) = &s.intake {
            const_counter(
                &mut enc,
                "intake_applied",
                "Pushed or pulled list versions put in force.",
                i.applied,
            )?;
            const_counter(
                &mut enc,
                "intake_rejected",
                "Pushed or pulled list versions refused (the version in force kept serving).",
                i.rejected,
            )?;
            const_counter(
                &mut enc,
                "intake_pull_failures",
                "List pulls that failed to fetch, verify or apply.",
                i.pull_failures,
            )?;
            const_gauge(
                &mut enc,
                "intake_expired_lists",
                "Managed lists past their signed expiry, still enforced.",
                None,
                i.expired,
            )?;
        }
        super::rpz::encode(&mut enc, &s.rpz_zones)?;
        if let Some(d) = &s.dnstap {
            const_counter(
                &mut enc,
                "dnstap_messages_sent",
                "dnstap messages written to the collector.",
                d.sent,
            )?;
            const_counter(
                &mut enc,
                "dnstap_messages_dropped",
                "dnstap messages lost (queue full, or the connection failed mid-write).",
                d.dropped,
            )?;
            const_counter(
                &mut enc,
                "dnstap_connects",
                "Connections to the dnstap collector (handshake completed).",
                d.connects,
            )?;
            const_counter(
                &mut enc,
                "dnstap_connect_failures",
                "Failed attempts to connect to the dnstap collector.",
                d.connect_failures,
            )?;
            const_gauge(
                &mut enc,
                "dnstap_connected",
                "1 while a dnstap collector is connected.",
                None,
                u64::from(d.connected),
            )?;
        }
        if let Some(r) = &s.rpz_serve {
            const_gauge(
                &mut enc,
                "rpz_serve_serial",
                "Serial of the RPZ zone served ([rpz.serve]).",
                None,
                r.serial,
            )?;
            const_gauge(
                &mut enc,
                "rpz_serve_records",
                "Records in the RPZ zone served (SOA and NS not counted).",
                None,
                r.records,
            )?;
            let mut m = enc.encode_descriptor(
                "rpz_serve_transfers",
                "Zone transfers answered, by kind (ixfr_full: an IXFR answered with the whole zone).",
                None,
                MetricType::Counter,
            )?;
            for (kind, n) in [
                ("axfr", r.axfr),
                ("ixfr", r.ixfr),
                ("ixfr_full", r.ixfr_fallback),
            ] {
                ConstCounter::new(n).encode(m.encode_family(&[("kind", kind)])?)?;
            }
            const_counter(
                &mut enc,
                "rpz_serve_refused",
                "Queries for the served zone from outside rpz.serve.allow_transfer.",
                r.refused,
            )?;
            let mut m = enc.encode_descriptor(
                "rpz_serve_notifies",
                "NOTIFY messages to followers, by outcome.",
                None,
                MetricType::Counter,
            )?;
            for (outcome, n) in [("answered", r.notify_sent), ("failed", r.notify_failed)] {
                ConstCounter::new(n).encode(m.encode_family(&[("outcome", outcome)])?)?;
            }
            let mut m = enc.encode_descriptor(
                "rpz_serve_rules_left_out",
                "Rules the RPZ zone cannot express (keyword, url, other), left out of it.",
                None,
                MetricType::Gauge,
            )?;
            for (kind, n) in r.left_out {
                ConstGauge::new(n).encode(m.encode_family(&[("kind", kind)])?)?;
            }
        }
        if !s.tls_connections.is_empty() {
            let mut m = enc.encode_descriptor(
                "web_tls_connections",
                "TLS front connections by how they ended.",
                None,
                MetricType::Counter,
            )?;
            for (outcome, n) in &s.tls_connections {
                let labels = [("outcome", *outcome)];
                ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        if let Some(v) = s.tls_open_connections {
            const_gauge(
                &mut enc,
                "web_tls_open_connections",
                "TLS front connections open now (reading a hello or passing through).",
                None,
                v,
            )?;
        }
        if !s.tls_bytes.is_empty() {
            let mut m = enc.encode_descriptor(
                "web_tls",
                "Bytes the TLS front passed through, by direction.",
                Some(&Unit::Bytes),
                MetricType::Counter,
            )?;
            for (direction, n) in &s.tls_bytes {
                let labels = [("direction", *direction)];
                ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
