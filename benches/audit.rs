//! Audit log throughput: `cargo bench --bench audit`.
//!
//! 1. paced: hits offered at a fixed rate (default 50,000/s) for a few
//!    seconds with the default queue and fsync settings; prints the rate
//!    achieved and the lost count, which must be 0.
//! 2. burst: two producers as fast as they can; prints the rate the writer
//!    sustains and what the queue dropped (loss is expected here).
//! 3. read: builds a log of N records, then times `verify`, `search` and
//!    `stats` over it (records/s).
//! 4. cpu: what the log costs per record at a fixed rate (default 40,000
//!    hits/s from 2 producer threads, each offering hits one at a time as
//!    the server's workers do): on the producer side the time spent inside
//!    `AuditLog::record` (mean and percentiles; the hits are built outside
//!    the measured span), on the writer thread its whole run time from the
//!    kernel's per-thread accounting, and how often the writer was woken.
//!    `cargo bench --bench audit -- cpu` runs only this part.
//! 5. signing: the writer's throughput (records/s, writing N hits as fast
//!    as the writer takes them, without loss) with and without
//!    `signing_key`, alternating runs in the same process, at the default
//!    `checkpoint_every` (10,000) and at 100 (a hundred times more
//!    signatures); then the paced run with signing and an `anchor_url`
//!    nobody answers (the witness down), which must lose nothing.
//!    `cargo bench --bench audit -- signing` runs only this part.
//!
//! Environment: AUDIT_BENCH_RATE (50000), AUDIT_BENCH_SECS (5),
//! AUDIT_BENCH_RECORDS (2000000; use 10000000 for the figure),
//! AUDIT_BENCH_DIR (a directory to write in; default a temporary one),
//! AUDIT_BENCH_CPU_RATE (40000) and AUDIT_BENCH_PRODUCERS (2) for `cpu`,
//! AUDIT_BENCH_SIGN_RECORDS (1000000) for `signing`.

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
        date: None,
        entry: None,
        included: None,
        list_version: 42,
        time: SystemTime::now(),
        path: None,
        sni: None,
    }
}

fn paced(dir: &Path, rate: u64, secs: u64) {
    paced_with(&AuditSettings::dir(dir), "paced", rate, secs);
}

fn paced_with(settings: &AuditSettings, label: &str, rate: u64, secs: u64) {
    let log = AuditLog::open(settings).expect("open audit log");
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
    let anchor = log.anchor_stats();
    log.shutdown();
    let total = start.elapsed();
    println!(
        "{label}: offered {sent} hits in {:.2}s = {:.0} hits/s; lost {}; write errors {}; \
         max lag to close {:.0} ms",
        offered.as_secs_f64(),
        sent as f64 / offered.as_secs_f64(),
        st.lost,
        st.write_errors,
        (total - offered).as_secs_f64() * 1000.0
    );
    if st.lost != 0 {
        println!("{label}: FAIL: records were lost at {rate}/s");
    }
    if let Some(a) = anchor {
        println!(
            "{label}: anchor: {} delivered, {} failed attempts, {} in backlog, {} dropped",
            a.delivered, a.failed, a.backlog, a.dropped
        );
    }
}

/// Writer throughput: `n` hits as fast as the writer takes them (the
/// producer waits while the queue is half full, so nothing is lost).
fn throughput(s: &AuditSettings, n: u64) -> f64 {
    let log = AuditLog::open(s).expect("open audit log");
    log.flush();
    let t = Instant::now();
    for i in 0..n {
        log.record(hit(i));
        if i % 1024 == 0 {
            while log.stats().queue_depth > (s.queue_capacity as u64) / 2 {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }
    log.flush();
    let el = t.elapsed().as_secs_f64();
    let lost = log.stats().lost;
    log.shutdown();
    assert_eq!(lost, 0, "throughput runs must not lose records");
    n as f64 / el
}

fn signing(dir: &Path, n: u64, rate: u64, secs: u64) {
    let keys = dir.join("keys");
    sinkhole::audit::sign::keygen(&keys).expect("keygen");
    let mut run = 0;
    for every in [10_000u64, 100] {
        let (mut plain, mut signed) = (Vec::new(), Vec::new());
        // Alternate, so drift in the machine's load hits both alike.
        for _ in 0..3 {
            for sign in [false, true] {
                run += 1;
                let mut s = AuditSettings::dir(dir.join(format!("run{run}")));
                s.checkpoint_every = every;
                if sign {
                    s.signing_key = Some(keys.join("audit.key"));
                }
                let r = throughput(&s, n);
                let _ = std::fs::remove_dir_all(dir.join(format!("run{run}")));
                if sign { signed.push(r) } else { plain.push(r) }
            }
        }
        let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (bp, bs) = (best(&plain), best(&signed));
        let (mp, ms) = (med(&mut plain), med(&mut signed));
        println!(
            "signing: checkpoint_every {every}: {n} hits, unsigned {mp:.0} records/s (best {bp:.0}), \
             signed {ms:.0} records/s (best {bs:.0}): signed/unsigned = {:.1}% median, {:.1}% best",
            ms / mp * 100.0,
            bs / bp * 100.0
        );
    }
    // Paced with signing and a witness that is down: hits must not wait.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(9, |a| a.port());
    let mut s = AuditSettings::dir(dir.join("paced-signed"));
    s.signing_key = Some(keys.join("audit.key"));
    s.checkpoint_every = 1000;
    s.anchor = Some(sinkhole::audit::AnchorSettings {
        url: format!("http://127.0.0.1:{port}/v1/checkpoints"),
        ca_file: None,
        backlog: 1024,
    });
    paced_with(
        &s,
        "signing: paced, checkpoint_every 1000, witness down",
        rate,
        secs,
    );
}

fn burst(dir: &Path, secs: u64) {
    let log = AuditLog::open(&AuditSettings::dir(dir)).expect("open audit log");
    // The writer names its thread itself: once it has answered, it has.
    log.flush();
    let tid = writer_tid();
    let usage = || tid.as_deref().map(thread_usage).unwrap_or_default();
    let w0 = usage();
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
    log.flush();
    let w = usage().run_ns.saturating_sub(w0.run_ns);
    log.flush_and_close();
    let el = start.elapsed().as_secs_f64();
    let st = log.stats();
    println!(
        "burst: 2 producers for {secs}s: offered {} hits, written {} lines = {:.0} lines/s \
         sustained; lost {} (queue full); writer {:.0} ns/line, {:.0}% of a core",
        st.enqueued + st.lost,
        st.written,
        st.written as f64 / el,
        st.lost,
        w as f64 / st.written.max(1) as f64,
        w as f64 / 1e7 / el
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

/// The audit writer thread of this process, found by name (only one log
/// is open at a time here).
fn writer_tid() -> Option<String> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .filter_map(Result::ok)
        .find(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.trim_end() == "sinkhole-audit")
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

/// One thread's run time (ns, from schedstat: nanoseconds, unlike the
/// tick-based stat) and its voluntary and involuntary context switches. A
/// voluntary switch is one sleep, so one wake-up; involuntary ones are
/// preemption by other work on the machine.
#[derive(Clone, Copy, Default)]
struct ThreadUsage {
    run_ns: u64,
    voluntary: u64,
    involuntary: u64,
}

fn thread_usage(tid: &str) -> ThreadUsage {
    let base = Path::new("/proc/self/task").join(tid);
    let run_ns = std::fs::read_to_string(base.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let status = std::fs::read_to_string(base.join("status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    ThreadUsage {
        run_ns,
        voluntary: field("voluntary_ctxt_switches:"),
        involuntary: field("nonvoluntary_ctxt_switches:"),
    }
}

fn cpu(dir: &Path, rate: u64, producers: u64, secs: u64) {
    let log = AuditLog::open(&AuditSettings::dir(dir)).expect("open audit log");
    // The writer names its thread itself: once it has answered, it has.
    log.flush();
    let tid = writer_tid();
    let usage = || tid.as_deref().map(thread_usage).unwrap_or_default();
    let w0 = usage();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let per = rate as f64 / producers as f64;
    let mut times: Vec<u32> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..producers)
            .map(|t| {
                let log = log.clone();
                s.spawn(move || {
                    // Hits reach the server one by one, not in bursts: pace
                    // at the per-producer interval, with the timer slack
                    // cut so the sleeps are about as short as asked.
                    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this
                    // thread's timer slack.
                    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64) };
                    let gap = Duration::from_secs_f64(1.0 / per).max(Duration::from_micros(20));
                    let mut sent = 0u64;
                    let mut times = Vec::with_capacity((per * secs as f64) as usize + 1024);
                    let mut batch = Vec::new();
                    while Instant::now() < end {
                        let due = (start.elapsed().as_secs_f64() * per) as u64;
                        batch.extend((sent..due).map(|i| hit(i * producers + t)));
                        sent = sent.max(due);
                        // Per call, on the vDSO clock (about 20 ns a read,
                        // taken out below): the query path pays exactly
                        // this, and nothing in `record` sleeps, so it is
                        // CPU time unless the thread was preempted (p50
                        // is immune to that).
                        for h in batch.drain(..) {
                            let c = Instant::now();
                            log.record(h);
                            times.push(c.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
                        }
                        std::thread::sleep(gap);
                    }
                    times
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("producer"))
            .collect()
    });
    let offered = start.elapsed().as_secs_f64();
    // Everything offered is written before the writer is measured.
    log.flush();
    let w1 = usage();
    let st = log.stats();
    log.shutdown();
    // The cost of the clock reads themselves.
    let mut empty: Vec<u64> = (0..10_000)
        .map(|_| {
            let c = Instant::now();
            c.elapsed().as_nanos() as u64
        })
        .collect();
    empty.sort_unstable();
    let clock = empty[empty.len() / 2];
    let sent = times.len();
    let n = sent.max(1) as f64;
    times.sort_unstable();
    let pct = |p: f64| {
        let i = ((sent as f64 * p) as usize).min(sent.saturating_sub(1));
        u64::from(times.get(i).copied().unwrap_or(0)).saturating_sub(clock)
    };
    let mean =
        (times.iter().map(|&t| u64::from(t)).sum::<u64>() as f64 / n - clock as f64).max(0.0);
    let w_ns = w1.run_ns.saturating_sub(w0.run_ns);
    println!(
        "cpu: {sent} hits from {producers} producers in {offered:.2}s = {:.0} hits/s; lost {}\n\
         cpu:   producer: record() mean {mean:.0} ns, p50 {} ns, p90 {} ns, p96 {} ns, p99 {} ns, p99.9 {} ns, max {} us\n\
         cpu:   writer:   {:.0} ns/record ({:.1}% of a core), {:.0} wake-ups/s \
         (+{:.0}/s preempted)\n\
         cpu:   total:    {:.0} ns/record",
        n / offered,
        st.lost,
        pct(0.5),
        pct(0.9),
        pct(0.96),
        pct(0.99),
        pct(0.999),
        times.last().map_or(0, |&t| t / 1000),
        w_ns as f64 / n,
        w_ns as f64 / 1e7 / offered,
        w1.voluntary.saturating_sub(w0.voluntary) as f64 / offered,
        w1.involuntary.saturating_sub(w0.involuntary) as f64 / offered,
        mean + w_ns as f64 / n,
    );
    if tid.is_none() {
        println!("cpu: writer thread not found; writer figures are 0");
    }
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
    // `cargo test --all-targets` runs this binary without `--bench`, in a
    // debug build: the figures would mean nothing and take minutes.
    if !std::env::args().any(|a| a == "--bench") {
        println!("audit bench: skipped (run `cargo bench --bench audit`)");
        return;
    }
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
    if want("signing") {
        let d = tmp.path().join("signing");
        let n = env_u64("AUDIT_BENCH_SIGN_RECORDS", 1_000_000);
        signing(&d, n, rate, secs);
    }
    if want("cpu") {
        let d = tmp.path().join("cpu");
        let rate = env_u64("AUDIT_BENCH_CPU_RATE", 40_000);
        let producers = env_u64("AUDIT_BENCH_PRODUCERS", 2).max(1);
        cpu(&d, rate, producers, secs);
    }
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
        println!("peak RSS: {} MiB", ru.ru_maxrss / 1024);
    }
}
