//! Metrics of followed RPZ zones (`[[rpz.follow]]`), read at scrape time
//! from each zone's status (`rpz::ZoneStatus`).

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// One followed zone at scrape time.
#[derive(Clone, Debug, Default)]
pub struct RpzZoneSample {
    pub zone: String,
    /// None until the first transfer.
    pub serial: Option<u32>,
    pub records: u64,
    /// None: no primary reached yet.
    pub seconds_since_refresh: Option<u64>,
    pub expired: bool,
    pub unsigned: bool,
    /// `(kind, outcome, count)`.
    pub transfers: Vec<(&'static str, &'static str, u64)>,
    /// Applied IXFRs enforced as a layer, and those applied by rewriting
    /// the zone file and reloading it.
    pub ixfr_layer: u64,
    pub ixfr_rewrite: u64,
}

fn gauges(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    zones: &[RpzZoneSample],
    value: impl Fn(&RpzZoneSample) -> Option<u64>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for z in zones {
        if let Some(v) = value(z) {
            let labels = [("zone", z.zone.as_str())];
            ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

pub(super) fn encode(
    enc: &mut DescriptorEncoder<'_>,
    zones: &[RpzZoneSample],
) -> Result<(), std::fmt::Error> {
    if zones.is_empty() {
        return Ok(());
    }
    gauges(
        enc,
        "rpz_zone_serial",
        "SOA serial of the followed zone in force.",
        None,
        zones,
        |z| z.serial.map(u64::from),
    )?;
    gauges(
        enc,
        "rpz_zone_records",
        "Records in the followed zone in force.",
        None,
        zones,
        |z| Some(z.records),
    )?;
    gauges(
        enc,
        "rpz_since_last_refresh",
        "Seconds since a primary of the zone was last reached (transfer or SOA check).",
        Some(&Unit::Seconds),
        zones,
        |z| z.seconds_since_refresh,
    )?;
    gauges(
        enc,
        "rpz_zone_expired",
        "1 when no primary was reached for longer than the SOA expire (the last zone is still enforced).",
        None,
        zones,
        |z| Some(u64::from(z.expired)),
    )?;
    gauges(
        enc,
        "rpz_zone_unsigned",
        "1 when the zone is transferred without TSIG (no tsig_key_file).",
        None,
        zones,
        |z| Some(u64::from(z.unsigned)),
    )?;
    let mut m = enc.encode_descriptor(
        "rpz_transfers",
        "Zone refreshes by kind (soa, ixfr, axfr) and outcome.",
        None,
        MetricType::Counter,
    )?;
    for z in zones {
        for (kind, outcome, n) in &z.transfers {
            let labels = [
                ("zone", z.zone.as_str()),
                ("kind", kind),
                ("outcome", outcome),
            ];
            ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
        }
    }
    let mut m = enc.encode_descriptor(
        "rpz_ixfr_applied",
        "Applied IXFRs by how: as a layer over the snapshot, or by rewriting the zone file and reloading it (a change a layer cannot say exactly).",
        None,
        MetricType::Counter,
    )?;
    for z in zones {
        for (how, n) in [("layer", z.ixfr_layer), ("rewrite", z.ixfr_rewrite)] {
            let labels = [("zone", z.zone.as_str()), ("how", how)];
            ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}
