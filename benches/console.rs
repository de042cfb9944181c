//! Console latency on a large log: `cargo bench --bench console`.
//!
//! Builds a log of N hits (CONSOLE_BENCH_RECORDS, default 1,000,000; the
//! issue's figure is 10,000,000) spread evenly over 30 days with the real
//! writer (chained, verifiable), one decision holding 1% of the hits, then
//! times what the console's handlers run (the same functions; HTTP adds a
//! request's worth of microseconds):
//!
//! 1. first open: summarising every file (no index yet);
//! 2. the index size as a share of the log (`audit reindex`'s figures);
//! 3. a per-order report for the 1% decision and a one-day search (first
//!    page, and the full result counted as the CSV export streams it):
//!    "cold" = a fresh index object that loads the stored summaries (as
//!    after a restart), "warm" = the same object again;
//! 4. for scale, the same report by full scan (`audit stats`).
//!
//! The page cache is warm in every phase (the log was just written); on a
//! machine where the log is not cached, the one-day search also reads
//! about 1/30 of the log from disk.
//!
//! Environment: CONSOLE_BENCH_RECORDS, CONSOLE_BENCH_DIR (default a
//! temporary directory; the log takes about 330 bytes per record).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use sinkhole::audit::index::AuditIndex;
use sinkhole::audit::{
    AuditLog, AuditSettings, HitRecord, SearchFilter, StatsBy, Transport, stats,
};
use sinkhole::console::Role;
use sinkhole::console::data;

const DAYS: u64 = 30;
const ORDER: &str = "ORDER-2025/1";
/// 2025-03-01T00:00:00Z.
const T0: u64 = 1_740_787_200;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn hit(i: u64, n: u64) -> HitRecord {
    let micros = i * (DAYS * 86_400_000_000 / n.max(1));
    // As in a real log, the rule decides the decision: an order's hits
    // are for the few domains it names, the rest for list entries without
    // one (trackers).
    let (decision, qname, rule) = if i % 100 == 0 {
        (
            Some(ORDER.to_string()),
            format!("host{}.casino{}.example", i % 13, i % 7),
            format!("*.casino{}.example", i % 7),
        )
    } else if i % 4 == 1 {
        let k = i % 40;
        (
            Some(format!("2025/{k}")),
            format!("host{}.site{k}.example", i % 13),
            format!("*.site{k}.example"),
        )
    } else {
        (
            None,
            format!("host{}.tracker{}.example.com", i % 997, i % 89),
            format!("*.tracker{}.example.com", i % 89),
        )
    };
    HitRecord {
        client: IpAddr::V4(Ipv4Addr::from(
            0x0a00_0000 + (i.wrapping_mul(7919) % 200_003) as u32,
        )),
        port: (i % 60_000) as u16 + 1024,
        transport: if i % 8 == 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        },
        qname,
        qtype: if i % 3 == 0 { 28 } else { 1 },
        action: "nxdomain",
        rule,
        list: if i % 100 == 0 {
            "court-orders"
        } else {
            "registry"
        }
        .into(),
        file: "/etc/sinkhole/lists/court-orders.csv".into(),
        line: (i % 5000) as u32 + 1,
        authority: decision.as_ref().map(|_| "Gaming Authority".to_string()),
        category: decision.as_ref().map(|_| "gambling".to_string()),
        decision,
        date: None,
        entry: None,
        included: None,
        list_version: 1 + i * 10 / n.max(1),
        time: SystemTime::UNIX_EPOCH + Duration::from_secs(T0) + Duration::from_micros(micros),
        path: None,
        sni: None,
    }
}

fn build(dir: &Path, n: u64) {
    let mut s = AuditSettings::dir(dir);
    s.queue_capacity = 1 << 16;
    let log = AuditLog::open(&s).expect("open audit log");
    for i in 0..n {
        log.record(hit(i, n));
        if i % 1024 == 0 {
            while log.stats().queue_depth > 1 << 15 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    log.shutdown();
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

struct Sink(u64);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The report and the one-day search on `index`; prints their latency.
fn queries(label: &str, index: &AuditIndex, day: &SearchFilter) {
    let ((files, report), t_report) = timed(|| {
        let files = index.refresh().expect("refresh");
        let r = data::report(&files, ORDER);
        (files, r)
    });
    let (page, t_page) = timed(|| {
        let files = index.refresh().expect("refresh");
        data::search_page(&files, day, Role::Auditor, 0, data::DEFAULT_LIMIT).expect("search")
    });
    let (count, t_all) = timed(|| {
        let files = index.refresh().expect("refresh");
        data::export(&files, day, Role::Auditor, data::Export::Csv, &mut Sink(0)).expect("export")
    });
    println!(
        "{label:>5}: report {ORDER} ({} hits, {} clients, {} days) {}; one-day search: first page ({} rows) {}, all {count} rows as CSV {}  [{} files]",
        report.hits,
        report.distinct_clients,
        report.hits_by_day.len(),
        ms(t_report),
        page.rows.len(),
        ms(t_page),
        ms(t_all),
        files.len(),
    );
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`, in a
    // debug build: building a million records there took minutes of the
    // test suite for figures that mean nothing.
    if !std::env::args().any(|a| a == "--bench") {
        println!("console bench: skipped (run `cargo bench --bench console`)");
        return;
    }
    let n = env_u64("CONSOLE_BENCH_RECORDS", 1_000_000);
    let tmp;
    let dir = match std::env::var_os("CONSOLE_BENCH_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir().expect("tempdir");
            tmp.path().to_path_buf()
        }
    };
    let ((), t) = timed(|| build(&dir, n));
    println!(
        "built {n} records over {DAYS} days in {:.1} s",
        t.as_secs_f64()
    );

    let (files, t_first) = timed(|| AuditIndex::new(&dir).refresh().expect("index"));
    println!(
        "first open (summarise {} files, no index): {}",
        files.len(),
        ms(t_first)
    );
    let report = AuditIndex::new(&dir).reindex().expect("reindex");
    println!(
        "index: {} bytes for {} bytes of log ({:.3}%)",
        report.index_bytes,
        report.log_bytes,
        report.index_bytes as f64 * 100.0 / report.log_bytes.max(1) as f64
    );

    let day = SearchFilter::new(Some("2025-03-15"), Some("2025-03-16"), None, None, None)
        .expect("filter");
    let index = AuditIndex::new(&dir);
    queries("cold", &index, &day);
    queries("warm", &index, &day);
    queries("warm", &index, &day);

    let only = SearchFilter::new(None, None, None, None, Some(ORDER)).expect("filter");
    let (r, t_scan) = timed(|| stats(&dir, &only, StatsBy::Client, Some(1)).expect("stats"));
    println!(
        "for scale, the report's counts by full scan (audit stats --decision --by client): {} hits, {} clients in {}",
        r.total,
        r.distinct,
        ms(t_scan)
    );
}
