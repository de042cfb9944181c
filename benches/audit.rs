//! Audit log throughput: `cargo bench --bench audit`.
//!
//! 1. paced: hits offered at a fixed rate (default 50,000/s) for a few
//!    seconds with the default queue and fsync settings; prints the rate
//!    achieved and the lost count, which must be 0.
//! 2. burst: two producers as fast as they can; prints the rate the writer
//!    sustains and what the queue dropped (loss is expected here).
//! 3. read: builds a log of N records, then times `verify`, `search` and
//!    `stats` over it (records/s).
//!
//! Environment: AUDIT_BENCH_RATE (50000), AUDIT_BENCH_SECS (5),
//! AUDIT_BENCH_RECORDS (2000000; use 10000000 for the figure),
//! AUDIT_BENCH_DIR (a directory to write in; default a temporary one).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use sinkhole::audit::{
    AuditLog, AuditSettings, HitRecord, OutputFormat, SearchFilter, StatsBy, Transport, search,
    stats, verify,
};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn hit(i: u64) -> HitRecord {
    HitRecord {
        client: std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + (i % 65_521) as u32)),
        port: (i % 60_000) as u16 + 1024,
        transport: if i % 8 == 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        },
        qname: format!("host{}.tracker{}.example.com", i % 997, i % 89),
        qtype: if i % 3 == 0 { 28 } else { 1 },
        action: "nxdomain",
        rule: format!("*.tracker{}.example.com", i % 89),
        list: "court-orders".into(),
        file: "/etc/sinkhole/lists/court-orders.csv".into(),
        line: (i % 5000) as u32 + 1,
        decision: (i % 4 == 0).then(|| format!("2025/{}", i % 40)),
        authority: (i % 4 == 0).then(|| "Gaming Authority".to_string()),
        category: (i % 4 == 0).then(|| "gambling".to_string()),
        list_version: 42,
        time: SystemTime::now(),
    }
}

fn paced(dir: &Path, rate: u64, secs: u64) {
    let log = AuditLog::open(&AuditSettings::dir(dir)).expect("open audit log");
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut sent = 0u64;
    while Instant::now() < end {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            log.record(hit(sent));
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let offered = start.elapsed();
    let st = log.stats();
    log.shutdown();
    let total = start.elapsed();
    println!(
        "paced: offered {sent} hits in {:.2}s = {:.0} hits/s; lost {}; write errors {}; \
         max lag to close {:.0} ms",
        offered.as_secs_f64(),
        sent as f64 / offered.as_secs_f64(),
        st.lost,
        st.write_errors,
        (total - offered).as_secs_f64() * 1000.0
    );
    if st.lost != 0 {
        println!("paced: FAIL: records were lost at {rate}/s");
    }
}

fn burst(dir: &Path, secs: u64) {
    let log = AuditLog::open(&AuditSettings::dir(dir)).expect("open audit log");
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let log = log.clone();
            s.spawn(move || {
                let mut i = t;
                while Instant::now() < end {
                    for _ in 0..256 {
                        log.record(hit(i));
                        i += 2;
                    }
                }
            });
        }
    });
    log.flush_and_close();
    let el = start.elapsed().as_secs_f64();
    let st = log.stats();
    println!(
        "burst: 2 producers for {secs}s: offered {} hits, written {} lines = {:.0} lines/s \
         sustained; lost {} (queue full)",
        st.enqueued + st.lost,
        st.written,
        st.written as f64 / el,
        st.lost
    );
}

/// Writes `n` hits without loss by waiting when the queue is half full.
fn build(dir: &Path, n: u64) {
    let mut s = AuditSettings::dir(dir);
    s.queue_capacity = 1 << 16;
    let log = AuditLog::open(&s).expect("open audit log");
    for i in 0..n {
        log.record(hit(i));
        if i % 1024 == 0 {
            while log.stats().queue_depth > 1 << 15 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    log.shutdown();
}

/// Process CPU seconds (user + system), to tell a slow phase from a
/// machine busy with other work.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Sink(u64);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn read(dir: &Path, n: u64) {
    let t = Instant::now();
    build(dir, n);
    let bytes: u64 = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    println!(
        "read: wrote {n} hits ({:.0} MiB) in {:.1}s",
        bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    // Floor: read and SHA-256 every line on one core, nothing else.
    let (t, c) = (Instant::now(), cpu_secs());
    let mut lines = 0u64;
    let mut acc = 0u8;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).expect("read");
        for l in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            acc ^= Sha256::digest(l)[0];
            lines += 1;
        }
    }
    let (el, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - c);
    println!(
        "baseline: read + SHA-256 of {lines} lines on one core in {el:.2}s = {:.0} lines/s \
         ({cpu:.2} CPU-s) [{acc}]",
        lines as f64 / el
    );

    let (t, c) = (Instant::now(), cpu_secs());
    let r = verify(dir).expect("verify");
    let (el, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - c);
    println!(
        "verify: {} records in {el:.2}s = {:.0} records/s ({:.0} MiB/s, {cpu:.2} CPU-s), intact: {}",
        r.records,
        r.records as f64 / el,
        bytes as f64 / 1048576.0 / el,
        r.is_intact()
    );

    let filter =
        SearchFilter::new(None, None, None, Some("tracker7.example.com"), None).expect("filter");
    let mut sink = Sink(0);
    let (t, c) = (Instant::now(), cpu_secs());
    let m = search(dir, &filter, OutputFormat::Json, &mut sink).expect("search");
    let (el, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - c);
    println!(
        "search --name: {} records scanned in {el:.2}s = {:.0} records/s ({cpu:.2} CPU-s), {m} matched",
        r.records,
        r.records as f64 / el
    );

    let (t, c) = (Instant::now(), cpu_secs());
    let s = stats(dir, &SearchFilter::default(), StatsBy::Name, Some(10)).expect("stats");
    let (el, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - c);
    println!(
        "stats --by name: {} hits in {el:.2}s = {:.0} records/s ({cpu:.2} CPU-s), {} distinct",
        s.total,
        r.records as f64 / el,
        s.distinct
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects parts.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |p: &str| only.is_empty() || only.iter().any(|o| p.contains(o.as_str()));
    let rate = env_u64("AUDIT_BENCH_RATE", 50_000);
    let secs = env_u64("AUDIT_BENCH_SECS", 5);
    let n = env_u64("AUDIT_BENCH_RECORDS", 2_000_000);
    let base = std::env::var_os("AUDIT_BENCH_DIR");
    let tmp = match &base {
        Some(b) => tempfile::tempdir_in(b),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory");
    println!(
        "audit bench: {} cores, dir {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        tmp.path().display()
    );
    if want("paced") {
        let d = tmp.path().join("paced");
        paced(&d, rate, secs);
    }
    if want("burst") {
        let d = tmp.path().join("burst");
        burst(&d, secs.min(3));
    }
    if want("read") {
        let d = tmp.path().join("read");
        read(&d, n);
    }
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
        println!("peak RSS: {} MiB", ru.ru_maxrss / 1024);
    }
}
