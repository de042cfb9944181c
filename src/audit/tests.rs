//! End-to-end tests of the writer and the readers on real files.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use clap::Parser;
use serde_json::{Value, json};

use super::reader::list_files;
use super::*;

/// 2025-03-01T12:00:00Z
const T0: u64 = 1_740_830_400;

const ACTIONS: [&str; 5] = ["nxdomain", "nodata", "refused", "drop", "address"];

fn hit(i: u64) -> HitRecord {
    HitRecord {
        client: format!("192.0.2.{}", i % 7 + 1).parse().unwrap(),
        port: 1000u16.wrapping_add(i as u16),
        transport: if i % 2 == 0 {
            Transport::Udp
        } else {
            Transport::Tcp
        },
        qname: format!("Ads{}.Example.com", i % 5),
        qtype: [1, 28, 65, 65534][i as usize % 4],
        action: ACTIONS[i as usize % 5],
        rule: "*.example.com".into(),
        list: "court".into(),
        file: "/etc/sinkhole/court.csv".into(),
        line: 10u32.wrapping_add(i as u32),
        decision: (i % 3 == 0).then(|| "2025/17".to_string()),
        authority: (i % 3 == 0).then(|| "AFM".to_string()),
        category: (i % 3 == 0).then(|| "gambling".to_string()),
        date: None,
        entry: None,
        included: None,
        list_version: 7,
        time: UNIX_EPOCH + Duration::from_micros(T0 * 1_000_000 + i * 1_000_001),
        path: None,
        sni: None,
    }
}

fn settings(dir: &Path) -> AuditSettings {
    let mut s = AuditSettings::dir(dir);
    s.checkpoint_every = 0;
    s.checkpoint_interval = None;
    s
}

fn write_log(s: &AuditSettings, hits: std::ops::Range<u64>) {
    let log = AuditLog::open(s).unwrap();
    for i in hits {
        log.record(hit(i));
    }
    log.shutdown();
}

/// Every record of the log in chain order, with its file name.
fn records(dir: &Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for f in list_files(dir).unwrap() {
        let text = std::fs::read_to_string(&f.path).unwrap();
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                out.push((f.name.clone(), v));
            }
        }
    }
    out
}

fn kinds(dir: &Path) -> Vec<String> {
    records(dir)
        .into_iter()
        .map(|(_, v)| v["kind"].as_str().unwrap().to_string())
        .collect()
}

fn check_intact(dir: &Path) -> VerifyReport {
    let r = verify(dir).unwrap();
    assert!(r.is_intact(), "{r}");
    r
}

#[test]
fn records_carry_every_field_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    write_log(&settings(dir.path()), 0..10);
    let recs = records(dir.path());
    let hits: Vec<&Value> = recs
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["kind"] == "hit")
        .collect();
    assert_eq!(hits.len(), 10);
    for (i, h) in hits.iter().enumerate() {
        let i = i as u64;
        let want = hit(i);
        assert_eq!(h["seq"], i + 1);
        assert_eq!(h["client"], want.client.to_string());
        assert_eq!(h["port"], want.port);
        assert_eq!(h["transport"], want.transport.as_str());
        assert_eq!(h["qname"], want.qname);
        assert_eq!(h["action"], want.action);
        assert_eq!(h["rule"], "*.example.com");
        assert_eq!(h["list"], "court");
        assert_eq!(h["file"], "/etc/sinkhole/court.csv");
        assert_eq!(h["line"], want.line);
        assert_eq!(h["list_version"], 7);
        assert_eq!(h["decision"].as_str(), want.decision.as_deref());
        assert_eq!(h["authority"].as_str(), want.authority.as_deref());
        assert_eq!(h["category"].as_str(), want.category.as_deref());
        assert_eq!(h["date"].as_str(), want.date.as_deref());
        assert_eq!(h["entry"].as_str(), want.entry.as_deref());
        assert_eq!(h["included"].as_str(), want.included.as_deref());
        assert_eq!(h["prev"].as_str().unwrap().len(), 64);
        let ts = h["ts"].as_str().unwrap();
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(
            ts.starts_with("2025-03-01T12:00:") && ts.ends_with('Z'),
            "{ts}"
        );
    }
    // Every action and both transports appear; qtype mnemonics and RFC 3597 form.
    for a in ACTIONS {
        assert!(hits.iter().any(|h| h["action"] == a));
    }
    for t in ["udp", "tcp"] {
        assert!(hits.iter().any(|h| h["transport"] == t));
    }
    let qtypes: Vec<&str> = hits.iter().map(|h| h["qtype"].as_str().unwrap()).collect();
    assert_eq!(&qtypes[..4], ["A", "AAAA", "HTTPS", "TYPE65534"]);
    assert_eq!(hits[1]["ts"], "2025-03-01T12:00:01.000001Z");
    // Optional legal fields are absent, not null.
    for field in ["decision", "date", "entry", "included"] {
        assert!(hits[1].get(field).is_none(), "{field}");
    }

    let k = kinds(dir.path());
    assert_eq!(k.first().map(String::as_str), Some("start"));
    assert_eq!(k.last().map(String::as_str), Some("checkpoint"));
    assert_eq!(recs[0].1["prev"], "0".repeat(64));
    let r = check_intact(dir.path());
    assert_eq!(r.hits, 10);
    assert_eq!(r.records, 12);
    assert_eq!(r.chain_start, ChainStart::Genesis);
    assert!(r.warnings.is_empty(), "{r}");
}

/// A log of several small files to tamper with.
fn multi_file_log() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_file_bytes = 4096;
    s.checkpoint_every = 7;
    write_log(&s, 0..80);
    let files: Vec<PathBuf> = list_files(dir.path())
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert!(files.len() >= 5, "{}", files.len());
    (dir, files)
}

fn file_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(p, text).unwrap();
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

type Tamper = fn(&[PathBuf]) -> (String, u64);

#[test]
fn verify_names_the_first_tampering() {
    let table: &[(&str, Tamper, Option<ProblemKind>)] = &[
        (
            "one byte edited",
            |f| {
                let mut l = file_lines(&f[1]);
                l[2] = l[2].replacen("Ads", "Bds", 1);
                write_lines(&f[1], &l);
                (name(&f[1]), 3)
            },
            Some(ProblemKind::Edited),
        ),
        (
            "prev of a line edited",
            |f| {
                let mut l = file_lines(&f[1]);
                // The last hex digit of `prev` (lines end in `…x"}`).
                let mut chars: Vec<char> = l[2].chars().collect();
                let n = chars.len();
                chars[n - 3] = if chars[n - 3] == '0' { '1' } else { '0' };
                l[2] = chars.into_iter().collect();
                write_lines(&f[1], &l);
                (name(&f[1]), 3)
            },
            Some(ProblemKind::Edited),
        ),
        (
            "last line of a rotated file edited",
            |f| {
                let mut l = file_lines(&f[1]);
                let n = l.len();
                l[n - 1] = l[n - 1].replacen("Ads", "ADS", 1);
                write_lines(&f[1], &l);
                (name(&f[1]), n as u64)
            },
            Some(ProblemKind::Edited),
        ),
        (
            "line made invalid",
            |f| {
                let mut l = file_lines(&f[2]);
                l[1].pop();
                write_lines(&f[2], &l);
                (name(&f[2]), 2)
            },
            Some(ProblemKind::Edited),
        ),
        (
            "one line removed",
            |f| {
                let mut l = file_lines(&f[1]);
                l.remove(2);
                write_lines(&f[1], &l);
                (name(&f[1]), 3)
            },
            Some(ProblemKind::Dropped),
        ),
        (
            "two lines swapped",
            |f| {
                let mut l = file_lines(&f[1]);
                l.swap(2, 3);
                write_lines(&f[1], &l);
                (name(&f[1]), 3)
            },
            Some(ProblemKind::Reordered),
        ),
        (
            "a rotated file deleted",
            |f| {
                std::fs::remove_file(&f[2]).unwrap();
                (name(&f[3]), 1)
            },
            Some(ProblemKind::MissingFile),
        ),
        (
            "the oldest file deleted",
            |f| {
                std::fs::remove_file(&f[0]).unwrap();
                (name(&f[1]), 1)
            },
            Some(ProblemKind::MissingFile),
        ),
        (
            "a rotated file cut mid-line",
            |f| {
                let text = std::fs::read(&f[1]).unwrap();
                std::fs::write(&f[1], &text[..text.len() - 40]).unwrap();
                (name(&f[1]), file_lines(&f[1]).len() as u64)
            },
            Some(ProblemKind::Truncated),
        ),
        (
            "the newest file cut mid-line (torn, not tampering)",
            |f| {
                let last = f.last().unwrap();
                let text = std::fs::read(last).unwrap();
                std::fs::write(last, &text[..text.len() - 40]).unwrap();
                (String::new(), 0)
            },
            None,
        ),
    ];
    for (what, tamper, want) in table {
        let (_dir, files) = multi_file_log();
        let dir = files[0].parent().unwrap().to_path_buf();
        let (file, line) = tamper(&files);
        let r = verify(&dir).unwrap();
        match want {
            None => {
                assert!(r.is_intact(), "{what}: {r}");
                assert_eq!(r.exit_code(), 0);
                assert_eq!(r.torn, 1, "{what}: {r}");
                assert!(r.warnings.iter().any(|w| w.contains("torn")), "{what}: {r}");
            }
            Some(kind) => {
                let p = r
                    .problem
                    .clone()
                    .unwrap_or_else(|| panic!("{what}: not caught\n{r}"));
                assert_eq!(p.kind, *kind, "{what}: {r}");
                assert_eq!(
                    (p.file.as_str(), p.line),
                    (file.as_str(), line),
                    "{what}: {r}"
                );
                assert_eq!(r.exit_code(), 1);
            }
        }
    }
}

#[test]
fn rotation_by_size_keeps_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_file_bytes = 4096;
    write_log(&s, 0..200);
    let files = list_files(dir.path()).unwrap();
    assert!(files.len() > 10);
    for f in &files {
        assert!(std::fs::metadata(&f.path).unwrap().len() <= 4096);
    }
    // Each file is named after its first record's seq.
    for f in &files {
        let first = file_lines(&f.path).remove(0);
        let v: Value = serde_json::from_str(&first).unwrap();
        assert!(
            f.name
                .ends_with(&format!("-{:020}.jsonl", v["seq"].as_u64().unwrap()))
        );
    }
    let r = check_intact(dir.path());
    assert_eq!(r.hits, 200);
    assert_eq!(r.files, files.len());
}

#[test]
fn retention_deletes_oldest_and_records_the_new_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_file_bytes = 4096;
    s.max_files = 3;
    write_log(&s, 0..200);
    let files = list_files(dir.path()).unwrap();
    assert!(files.len() <= 3, "{}", files.len());
    let r = check_intact(dir.path());
    assert!(matches!(r.chain_start, ChainStart::Retention { .. }), "{r}");
    assert!(kinds(dir.path()).iter().any(|k| k == "retention"));
    // Retention across restarts too, and the start stays recorded.
    write_log(&s, 200..260);
    assert!(list_files(dir.path()).unwrap().len() <= 3);
    check_intact(dir.path());

    // Deleting the recorded start file by hand is still caught.
    let files = list_files(dir.path()).unwrap();
    std::fs::remove_file(&files[0].path).unwrap();
    let r = verify(dir.path()).unwrap();
    assert_eq!(r.problem.map(|p| p.kind), Some(ProblemKind::MissingFile));
}

#[test]
fn retention_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_file_bytes = 4096;
    write_log(&s, 0..60);
    let before = list_files(dir.path()).unwrap().len();
    // Age the existing files by a few days.
    let old = std::time::SystemTime::now() - Duration::from_secs(5 * 86_400);
    for f in list_files(dir.path()).unwrap() {
        let fh = std::fs::OpenOptions::new()
            .append(true)
            .open(&f.path)
            .unwrap();
        fh.set_modified(old).unwrap();
    }
    s.max_age = Some(Duration::from_secs(2 * 86_400));
    write_log(&s, 60..62);
    let after = list_files(dir.path()).unwrap();
    assert!(before > 1);
    assert_eq!(after.len(), 1, "{after:?}");
    let r = check_intact(dir.path());
    assert!(matches!(r.chain_start, ChainStart::Retention { .. }), "{r}");
}

#[test]
fn restart_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    {
        let log = AuditLog::open(&s).unwrap();
        for i in 0..10 {
            log.record(hit(i));
        }
        // Dropping the last handle flushes and joins.
    }
    write_log(&s, 10..20);
    let recs = records(dir.path());
    let seqs: Vec<u64> = recs
        .iter()
        .map(|(_, v)| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    let starts: Vec<&Value> = recs
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["kind"] == "start")
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(
        starts[1]["resumed_from"],
        starts[1]["seq"].as_u64().unwrap() - 1
    );
    assert_eq!(list_files(dir.path()).unwrap().len(), 2);
    let r = check_intact(dir.path());
    assert_eq!(r.hits, 20);
}

#[test]
fn torn_tail_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    write_log(&s, 0..10);
    let newest = list_files(dir.path()).unwrap().pop().unwrap();
    let mut text = std::fs::read(&newest.path).unwrap();
    text.extend_from_slice(br#"{"seq":12,"ts":"2025-03-01T12:0"#);
    std::fs::write(&newest.path, &text).unwrap();

    let r = check_intact(dir.path());
    assert_eq!(r.torn, 1);
    assert!(r.warnings[0].contains("torn"), "{r}");

    write_log(&s, 10..15);
    let r = check_intact(dir.path());
    assert_eq!(r.torn, 1);
    assert!(r.warnings[0].contains("acknowledged"), "{r}");
    assert_eq!(r.hits, 15);
    let start = records(dir.path())
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| v["kind"] == "start")
        .nth(1)
        .unwrap();
    assert_eq!(start["torn"][0]["file"], newest.name.as_str());
    assert_eq!(start["torn"][0]["bytes"], 31);
}

#[test]
fn queue_overflow_is_counted_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.queue_capacity = 4;
    let log = AuditLog::open(&s).unwrap();
    log.flush();
    log.set_stalled(true);
    for i in 0..100 {
        log.record(hit(i));
    }
    let st = log.stats();
    assert_eq!((st.enqueued, st.lost, st.queue_depth), (4, 96, 4));
    log.set_stalled(false);
    while log.stats().queue_depth > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    for i in 100..110 {
        log.record(hit(i));
        // Give the writer room so the rest is not lost too.
        while log.stats().queue_depth > 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    log.shutdown();
    let recs = records(dir.path());
    let lost: Vec<&Value> = recs
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["kind"] == "lost")
        .collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(
        (&lost[0]["first"], &lost[0]["last"], &lost[0]["count"]),
        (&Value::from(5), &Value::from(100), &Value::from(96))
    );
    assert_eq!(lost[0]["reason"], "queue_full");
    assert_eq!(lost[0]["seq"], 100);
    let r = check_intact(dir.path());
    assert_eq!((r.hits, r.lost), (14, 96));
}

#[test]
fn queue_overflow_with_no_later_hit_is_still_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.queue_capacity = 2;
    let log = AuditLog::open(&s).unwrap();
    log.set_stalled(true);
    for i in 0..10 {
        log.record(hit(i));
    }
    log.set_stalled(false);
    // The writer notices the loss on its own, without a later hit.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !kinds(dir.path()).iter().any(|k| k == "lost") {
        assert!(std::time::Instant::now() < deadline, "no lost record");
        log.flush();
        std::thread::sleep(Duration::from_millis(20));
    }
    log.shutdown();
    let r = check_intact(dir.path());
    assert_eq!((r.hits, r.lost), (2, 8));
}

#[test]
fn write_errors_become_lost_records_and_recover() {
    for halfway in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&settings(dir.path())).unwrap();
        log.record(hit(0));
        log.flush();
        log.set_fail_writes(true, halfway);
        for i in 1..21 {
            log.record(hit(i));
        }
        log.flush();
        log.set_fail_writes(false, false);
        // Past the first backoff.
        std::thread::sleep(Duration::from_millis(250));
        for i in 21..26 {
            log.record(hit(i));
        }
        log.shutdown();
        let recs = records(dir.path());
        let lost: Vec<&Value> = recs
            .iter()
            .map(|(_, v)| v)
            .filter(|v| v["kind"] == "lost")
            .collect();
        assert_eq!(lost.len(), 1, "halfway={halfway}");
        assert_eq!(lost[0]["reason"], "write_error");
        let r = check_intact(dir.path());
        assert_eq!(r.hits + r.lost, 26, "halfway={halfway}: {r}");
        assert!(r.lost > 0);
        if halfway {
            // The partial line stays in the abandoned file, acknowledged.
            assert_eq!(r.torn, 1, "{r}");
            assert!(lost[0]["torn"].is_array());
        }
        assert_eq!(list_files(dir.path()).unwrap().len(), 2);
    }
}

#[test]
fn many_producers_give_a_dense_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.queue_capacity = 100_000;
    s.checkpoint_every = 1000;
    let log = AuditLog::open(&s).unwrap();
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let log = log.clone();
            sc.spawn(move || {
                for i in 0..5000 {
                    log.record(hit(t * 5000 + i));
                }
            });
        }
    });
    let st = log.stats();
    log.shutdown();
    assert_eq!(st.lost, 0);
    let r = check_intact(dir.path());
    assert_eq!(r.hits, 20_000);
    assert_eq!(r.checkpoints, 21, "{r}");
}

/// Producers race each other (seqs reach the writer out of order) and
/// overflow a small queue while the writer keeps stalling: every seq is
/// still a line or inside a `lost` record, and the counts agree.
#[test]
fn racing_producers_overflowing_give_a_dense_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.queue_capacity = 64;
    s.checkpoint_every = 100;
    let log = AuditLog::open(&s).unwrap();
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let (log, done) = (log.clone(), &done);
            sc.spawn(move || {
                for i in 0..5000 {
                    log.record(hit(t * 5000 + i));
                    if i % 256 == 0 {
                        std::thread::yield_now();
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
        while done.load(std::sync::atomic::Ordering::Relaxed) < 4 {
            log.set_stalled(true);
            std::thread::sleep(Duration::from_millis(1));
            log.set_stalled(false);
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let st = log.stats();
    log.shutdown();
    assert!(st.lost > 0, "the queue never overflowed: {st:?}");
    assert_eq!(st.enqueued + st.lost, 20_000);
    let r = check_intact(dir.path());
    assert_eq!((r.hits, r.lost), (st.enqueued, st.lost), "{r}");
    assert!(r.checkpoints > 1, "{r}");
}

#[test]
fn hmac_pseudonyms() {
    let keys = tempfile::tempdir().unwrap();
    let k1 = keys.path().join("k1");
    let k2 = keys.path().join("k2");
    std::fs::write(&k1, "first secret key for tests\n").unwrap();
    std::fs::write(&k2, "other secret key for tests\n").unwrap();
    let addrs: [IpAddr; 2] = [
        "192.0.2.77".parse().unwrap(),
        "2001:db8::77".parse().unwrap(),
    ];
    let mut seen = Vec::new();
    for key in [&k1, &k1, &k2] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.client = ClientMode::Hmac;
        s.hmac_key_file = Some(key.clone());
        let log = AuditLog::open(&s).unwrap();
        for (i, a) in addrs.iter().enumerate() {
            let mut h = hit(i as u64);
            h.client = *a;
            log.record(h);
        }
        log.shutdown();
        for f in list_files(dir.path()).unwrap() {
            let text = std::fs::read_to_string(&f.path).unwrap();
            assert!(!text.contains("192.0.2.77") && !text.contains("2001:db8::77"));
        }
        let clients: Vec<String> = records(dir.path())
            .into_iter()
            .filter(|(_, v)| v["kind"] == "hit")
            .map(|(_, v)| v["client"].as_str().unwrap().to_string())
            .collect();
        assert!(
            clients
                .iter()
                .all(|c| c.starts_with("hmac:") && c.len() == 37)
        );
        assert_ne!(clients[0], clients[1]);
        check_intact(dir.path());
        // An auditor with the key finds the subscriber by address.
        let mut out = Vec::new();
        let code = run_cli(
            &[
                "search",
                dir.path().to_str().unwrap(),
                "--client",
                "192.0.2.77",
                "--hmac-key-file",
                key.to_str().unwrap(),
                "--format",
                "json",
            ],
            &mut out,
        );
        assert_eq!(code, 0);
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
        seen.push(clients);
    }
    assert_eq!(seen[0], seen[1], "same key, same pseudonyms");
    assert_ne!(seen[0][0], seen[2][0], "another key, other pseudonyms");
}

#[derive(Parser)]
struct TestCli {
    #[command(subcommand)]
    cmd: AuditCommand,
}

fn run_cli(args: &[&str], out: &mut Vec<u8>) -> i32 {
    let mut argv = vec!["audit"];
    argv.extend_from_slice(args);
    let cli = TestCli::try_parse_from(argv).unwrap();
    run(cli.cmd, out).unwrap()
}

const NAMES: [&str; 5] = [
    "ads.example.com",
    "Tracker.Example.COM.",
    "example.com",
    "badexample.com",
    "x.ADS.example.com",
];

/// A log with known contents: hit `i` is at T0 + 2i minutes, port 1000+i.
fn query_log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_file_bytes = 8192;
    let log = AuditLog::open(&s).unwrap();
    for i in 0..60u64 {
        let mut h = hit(i);
        h.time = UNIX_EPOCH + Duration::from_secs(T0 + i * 120);
        h.client = if i % 4 == 3 {
            "2001:db8::5".parse().unwrap()
        } else {
            format!("192.0.2.{}", i % 3 + 1).parse().unwrap()
        };
        h.qname = NAMES[i as usize % 5].into();
        h.decision = match i % 3 {
            0 => Some("2025/17".into()),
            1 => Some("2025/18".into()),
            _ => None,
        };
        h.list = if i % 2 == 0 { "court" } else { "malware" }.into();
        log.record(h);
    }
    log.shutdown();
    dir
}

fn client_of(i: u64) -> String {
    if i % 4 == 3 {
        "2001:db8::5".into()
    } else {
        format!("192.0.2.{}", i % 3 + 1)
    }
}

#[test]
fn search_filters() {
    let dir = query_log();
    let d = dir.path().to_str().unwrap();
    type Want = fn(u64) -> bool;
    let table: &[(&[&str], Want)] = &[
        (&[], |_| true),
        (&["--name", "ads.example.com"], |i| i % 5 == 0 || i % 5 == 4),
        (&["--name", "EXAMPLE.com."], |i| i % 5 != 3),
        (&["--name", "example.com"], |i| i % 5 != 3),
        (&["--name", "ample.com"], |_| false),
        (&["--name", "badexample.com"], |i| i % 5 == 3),
        (&["--client", "192.0.2.0/24"], |i| i % 4 != 3),
        (&["--client", "192.0.2.2"], |i| i % 4 != 3 && i % 3 == 1),
        (&["--client", "2001:db8::/32"], |i| i % 4 == 3),
        (&["--decision", "2025/18"], |i| i % 3 == 1),
        (&["--since", "2025-03-01T13:00:00Z"], |i| i >= 30),
        (&["--until", "2025-03-01T13:00:00Z"], |i| i < 30),
        (
            &[
                "--since",
                "2025-03-01T12:10:00Z",
                "--until",
                "2025-03-01T14:20:00+02:00",
            ],
            |i| (5..10).contains(&i),
        ),
        (
            &[
                "--since",
                "2025-03-01",
                "--name",
                "tracker.example.com",
                "--decision",
                "2025/17",
            ],
            |i| i % 5 == 1 && i % 3 == 0,
        ),
    ];
    for (args, want) in table {
        let expect: Vec<u64> = (0..60).filter(|&i| want(i)).collect();
        // json: the stored lines themselves.
        let mut argv = vec!["search", d, "--format", "json"];
        argv.extend_from_slice(args);
        let mut out = Vec::new();
        assert_eq!(run_cli(&argv, &mut out), 0);
        let text = String::from_utf8(out).unwrap();
        let got: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["port"]
                    .as_u64()
                    .unwrap()
                    - 1000
            })
            .collect();
        assert_eq!(got, expect, "{args:?}");
        // csv: header plus one row per match, ports in column 4.
        let mut argv = vec!["search", d, "--format", "csv"];
        argv.extend_from_slice(args);
        let mut out = Vec::new();
        run_cli(&argv, &mut out);
        let text = String::from_utf8(out).unwrap();
        let mut rows = text.lines();
        assert!(rows.next().unwrap().starts_with("seq,ts,client,port,"));
        let got: Vec<u64> = rows
            .map(|r| r.split(',').nth(3).unwrap().parse::<u64>().unwrap() - 1000)
            .collect();
        assert_eq!(got, expect, "csv {args:?}");
        // table: header, rows, count.
        let mut argv = vec!["search", d];
        argv.extend_from_slice(args);
        let mut out = Vec::new();
        run_cli(&argv, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SEQ"), "{text}");
        assert_eq!(lines.len(), expect.len() + 2, "{text}");
        assert_eq!(
            *lines.last().unwrap(),
            format!("{} matching record(s)", expect.len())
        );
        for (row, i) in lines[1..].iter().zip(&expect) {
            assert!(row.contains(&client_of(*i)), "{row}");
        }
    }
}

#[test]
fn search_argument_errors() {
    let dir = query_log();
    let bad: &[&[&str]] = &[
        &["--since", "yesterday"],
        &["--until", "2025-03-01T13:00:00"],
        &["--client", ""],
    ];
    for args in bad {
        let mut argv = vec!["audit", "search", dir.path().to_str().unwrap()];
        argv.extend_from_slice(args);
        let cli = TestCli::try_parse_from(argv).unwrap();
        assert!(run(cli.cmd, &mut Vec::new()).is_err(), "{args:?}");
    }
    let missing = dir.path().join("nope");
    assert!(verify(&missing).is_err());
}

#[test]
fn stats_tables() {
    let dir = query_log();
    let d = dir.path().to_str().unwrap();
    let count = |f: &dyn Fn(u64) -> bool| (0..60u64).filter(|&i| f(i)).count() as u64;
    type Case<'a> = (&'a [&'a str], Vec<(&'a str, u64)>);
    let table: &[Case] = &[
        (
            &["--by", "name"],
            vec![
                ("ads.example.com", 12),
                ("badexample.com", 12),
                ("example.com", 12),
                ("tracker.example.com", 12),
                ("x.ads.example.com", 12),
            ],
        ),
        (
            &["--by", "name", "--top", "2", "--name", "ads.example.com"],
            vec![("ads.example.com", 12), ("x.ads.example.com", 12)],
        ),
        (
            &["--by", "decision"],
            vec![("-", 20), ("2025/17", 20), ("2025/18", 20)],
        ),
        (&["--by", "list"], vec![("court", 30), ("malware", 30)]),
        (
            &["--by", "hour"],
            vec![("2025-03-01T12:00Z", 30), ("2025-03-01T13:00Z", 30)],
        ),
        (
            &["--by", "hour", "--since", "2025-03-01T12:30:00Z"],
            vec![("2025-03-01T12:00Z", 15), ("2025-03-01T13:00Z", 30)],
        ),
        (
            &["--by", "client", "--top", "1"],
            vec![("192.0.2.1", count(&|i| i % 4 != 3 && i % 3 == 0))],
        ),
    ];
    for (args, want) in table {
        let want: Vec<(String, u64)> = want.iter().map(|(k, c)| (k.to_string(), *c)).collect();
        let mut argv = vec!["stats", d, "--format", "json"];
        argv.extend_from_slice(args);
        let mut out = Vec::new();
        assert_eq!(run_cli(&argv, &mut out), 0);
        let v: Value = serde_json::from_slice(&out).unwrap();
        let got: Vec<(String, u64)> = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().unwrap().to_string(),
                    r["count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, want, "{args:?}");

        let mut argv = vec!["stats", d, "--format", "csv"];
        argv.extend_from_slice(args);
        let mut out = Vec::new();
        run_cli(&argv, &mut out);
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(rows.len(), want.len(), "{text}");
        for (row, (k, c)) in rows.iter().zip(&want) {
            assert!(row.contains(&format!(",{k},{c},")), "{row}");
        }

        let mut argv = vec!["stats", d];
        argv.extend_from_slice(args);
        let mut out = Vec::new();
        run_cli(&argv, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), want.len() + 2, "{text}");
        for (k, c) in &want {
            assert!(
                text.lines()
                    .any(|l| l.contains(k.as_str()) && l.contains(&c.to_string())),
                "{k} {c}\n{text}"
            );
        }
    }
    let r = stats(dir.path(), &SearchFilter::default(), StatsBy::Client, None).unwrap();
    assert_eq!(r.total, 60);
    assert_eq!(r.distinct, 4);
    let sum: u64 = r.rows.iter().map(|(_, c)| c).sum();
    assert_eq!(sum, 60);
}

#[test]
fn verify_cli_output_and_exit_codes() {
    let (dir, files) = multi_file_log();
    let d = dir.path().to_str().unwrap();
    let mut out = Vec::new();
    assert_eq!(run_cli(&["verify", d], &mut out), 0);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("OK: chain intact"), "{text}");

    let mut l = file_lines(&files[1]);
    l.remove(1);
    write_lines(&files[1], &l);
    let mut out = Vec::new();
    assert_eq!(run_cli(&["verify", d, "--json"], &mut out), 1);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["problem"]["kind"], "dropped");
    assert_eq!(v["problem"]["line"], 2);
    assert_eq!(v["problem"]["file"], name(&files[1]).as_str());
}

fn single_file_log() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.checkpoint_every = 5;
    write_log(&s, 0..20);
    let f = list_files(dir.path()).unwrap().remove(0);
    std::fs::read(f.path).unwrap()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any change to any byte before the last line is caught.
    #[test]
    fn any_single_byte_change_is_caught(pos in 0usize..1_000_000, delta in 1u8..=255) {
        let log = single_file_log_cached();
        let last_line_start = log[..log.len() - 1].iter().rposition(|&b| b == b'\n').unwrap() + 1;
        let pos = pos % last_line_start;
        let mut bad = log.to_vec();
        bad[pos] = bad[pos].wrapping_add(delta);
        let r = verify_bytes(&bad);
        proptest::prop_assert!(!r.is_intact(), "byte {} changed, not caught: {}", pos, r);
    }

    /// Arbitrary input never panics the reader.
    #[test]
    fn verify_bytes_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000)) {
        let _ = verify_bytes(&data);
    }
}

fn single_file_log_cached() -> &'static [u8] {
    static LOG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    LOG.get_or_init(single_file_log)
}

#[test]
fn verify_bytes_matches_verify() {
    let log = single_file_log_cached();
    let r = verify_bytes(log);
    assert!(r.is_intact(), "{r}");
    assert_eq!(r.hits, 20);
    assert_eq!(r.checkpoints, 5);
    let r = verify_bytes(b"");
    assert_eq!(r.problem.map(|p| p.kind), Some(ProblemKind::Empty));
}

/// `kill -9` under load: a child process writes as fast as it can and is
/// killed; the chain verifies up to the torn tail, and a restart continues it.
#[test]
fn kill_9_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "audit::tests::child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SINKHOLE_AUDIT_CHILD_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until records are flowing, then kill mid-stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let bytes: u64 = list_files(dir.path())
            .map(|fs| {
                fs.iter()
                    .map(|f| std::fs::metadata(&f.path).map_or(0, |m| m.len()))
                    .sum()
            })
            .unwrap_or(0);
        if bytes > 500_000 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "child wrote nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Kill at an arbitrary point of the stream.
    let jitter = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 300;
    std::thread::sleep(Duration::from_millis(50 + u64::from(jitter)));
    child.kill().unwrap();
    child.wait().unwrap();
    let r = check_intact(dir.path());
    eprintln!("after kill -9: {r}");
    assert!(r.hits > 1000, "{r}");
    // Whatever the kill left, a restart continues the chain.
    write_log(&settings(dir.path()), 0..10);
    let r2 = check_intact(dir.path());
    assert_eq!(r2.hits, r.hits + 10);
}

#[test]
#[ignore = "run by kill_9_under_load in a child process"]
fn child_writer() {
    let Some(dir) = std::env::var_os("SINKHOLE_AUDIT_CHILD_DIR") else {
        return;
    };
    let mut s = settings(Path::new(&dir));
    s.max_file_bytes = 1 << 20;
    s.checkpoint_every = 1000;
    let log = AuditLog::open(&s).unwrap();
    for i in 0.. {
        log.record(hit(i));
        if i % 64 == 0 {
            std::thread::yield_now();
        }
    }
}

/// Values with JSON escapes take the full-parse path; results must agree.
#[test]
fn escaped_values_match_like_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&settings(dir.path())).unwrap();
    let names = [
        "we\"ird.Example.com",
        "plain.example.com",
        "back\\slash.EXAMPLE.com.",
    ];
    for (i, n) in names.iter().enumerate() {
        let mut h = hit(i as u64);
        h.qname = n.to_string();
        h.decision = Some(if i == 0 { "ref \"7\"" } else { "ref 7" }.to_string());
        log.record(h);
    }
    log.shutdown();
    let d = dir.path().to_str().unwrap();
    for format in ["json", "csv", "table"] {
        let mut out = Vec::new();
        run_cli(
            &["search", d, "--name", "example.com", "--format", format],
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let rows = text
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("example"))
            .count();
        assert_eq!(rows, 3, "{format}: {text}");
    }
    let mut out = Vec::new();
    run_cli(
        &["search", d, "--decision", "ref \"7\"", "--format", "json"],
        &mut out,
    );
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
    let r = stats(dir.path(), &SearchFilter::default(), StatsBy::Name, None).unwrap();
    let keys: Vec<&str> = r.rows.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "back\\slash.example.com",
            "plain.example.com",
            "we\"ird.example.com"
        ]
    );
    check_intact(dir.path());
}

mod signed {
    use super::*;
    use crate::audit::sign::{AuditPublicKey, keygen};

    /// Recomputes every `prev` (and checkpoint `hash`) after line edits,
    /// as a tamperer with write access would.
    fn rechain(lines: &mut [String]) {
        for i in 1..lines.len() {
            let h = hex::encode(record::hash_line(lines[i - 1].as_bytes()));
            let at = lines[i].find("\"prev\":\"").unwrap() + 8;
            let old = lines[i][at..at + 64].to_string();
            lines[i] = lines[i].replace(&old, &h);
        }
    }

    fn opts(key: &Path) -> VerifyOptions {
        VerifyOptions {
            key: Some(AuditPublicKey::load(key).unwrap()),
            anchors: None,
        }
    }

    #[test]
    fn signatures_verify_and_stripping_or_another_key_fails() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        keygen(&keys).unwrap();
        let other = dir.path().join("other");
        keygen(&other).unwrap();
        let log = dir.path().join("log");
        let mut s = settings(&log);
        s.checkpoint_every = 3;
        // A first session before signing was configured…
        write_log(&s, 0..4);
        // …then two signed ones.
        s.signing_key = Some(keys.join("audit.key"));
        write_log(&s, 4..10);
        write_log(&s, 10..12);

        let r = verify_with(&log, &opts(&keys.join("audit.pub"))).unwrap();
        assert!(r.is_intact(), "{r}");
        let sr = r.signatures.as_ref().unwrap();
        // Unsigned: the first start, its count checkpoint and its shutdown one.
        assert_eq!(sr.unsigned_before_signing, 3, "{r}");
        // Two starts, 2 + 0 count checkpoints, two shutdown checkpoints.
        assert_eq!(sr.verified, 6, "{r}");
        assert!(r.to_string().contains("OK: chain intact and signed"), "{r}");

        let r = verify_with(&log, &opts(&other.join("audit.pub"))).unwrap();
        let p = r.problem.unwrap();
        assert_eq!(p.kind, ProblemKind::BadSignature);
        assert!(p.detail.contains("not by the given key"), "{}", p.detail);

        // Strip the signature off the last checkpoint and rechain.
        let file = list_files(&log).unwrap().pop().unwrap().path;
        let text = std::fs::read_to_string(&file).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let cp = lines
            .iter()
            .rposition(|l| l.contains("\"kind\":\"checkpoint\""))
            .unwrap();
        let at = lines[cp].find(",\"sig_pub\"").unwrap();
        let end = lines[cp].find(",\"prev\"").unwrap();
        lines[cp].replace_range(at..end, "");
        rechain(&mut lines);
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        assert!(verify(&log).unwrap().is_intact());
        let r = verify_with(&log, &opts(&keys.join("audit.pub"))).unwrap();
        let p = r.problem.unwrap();
        assert_eq!(p.kind, ProblemKind::BadSignature);
        assert!(p.detail.contains("signature was removed"), "{}", p.detail);
    }

    #[test]
    fn a_log_never_signed_fails_with_a_key() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path()).unwrap();
        let log = dir.path().join("log");
        write_log(&settings(&log), 0..3);
        let r = verify_with(&log, &opts(&dir.path().join("audit.pub"))).unwrap();
        assert_eq!(r.exit_code_requiring_anchors(false), 1);
        assert_eq!(r.problem.unwrap().kind, ProblemKind::BadSignature);
    }
}

/// A registry rule's hit names its entry and inclusion time in every
/// search format: JSON as stored, CSV in the columns after the sixteen
/// earlier ones, the table as ENTRY; the chain verifies.
#[test]
fn search_shows_the_registry_entry_of_a_hit() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&settings(dir.path())).unwrap();
    // A dump's rule names its registry entry; the next hit's rule has none.
    log.record(HitRecord {
        date: Some("2025-01-02".into()),
        entry: Some("ид-0".into()),
        included: Some("2026-11-30T12:00:00".into()),
        ..hit(0)
    });
    log.record(hit(3));
    log.shutdown();
    check_intact(dir.path());
    let d = dir.path().to_str().unwrap();
    let search = |format: &str| {
        let mut out = Vec::new();
        assert_eq!(run_cli(&["search", d, "--format", format], &mut out), 0);
        String::from_utf8(out).unwrap()
    };

    let json = search("json");
    let rows: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        (&rows[0]["entry"], &rows[0]["included"], &rows[0]["date"]),
        (
            &json!("ид-0"),
            &json!("2026-11-30T12:00:00"),
            &json!("2025-01-02")
        )
    );
    assert!(rows[1].get("entry").is_none());

    let csv = search("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].ends_with(",decision,authority,category,list_version,date,entry,included"),
        "{csv}"
    );
    let first: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(first.len(), 19, "{csv}");
    assert_eq!(
        first[12..],
        [
            "2025/17",
            "AFM",
            "gambling",
            "7",
            "2025-01-02",
            "ид-0",
            "2026-11-30T12:00:00"
        ]
    );
    assert!(lines[2].ends_with(",7,,,"), "{csv}");

    let table = search("table");
    let head: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(head.last(), Some(&"ENTRY"), "{table}");
    let row1: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    let row2: Vec<&str> = table.lines().nth(2).unwrap().split_whitespace().collect();
    assert_eq!(
        (row1.last(), row2.last()),
        (Some(&"ид-0"), Some(&"-")),
        "{table}"
    );
}
