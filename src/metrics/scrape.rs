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
        Ok(())
    }
}
