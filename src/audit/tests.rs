//! Writer tests on real files. The chain is checked here with a minimal
//! walk (hash of each line = next line's prev, dense seqs or `lost` ranges).

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use super::reader::list_files;
use super::record::{GENESIS, hash_line, hex32};
use super::*;

/// 2025-03-01T12:00:00Z
const T0: u64 = 1_740_830_400;

const ACTIONS: [&str; 5] = ["nxdomain", "nodata", "refused", "drop", "local-data"];

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
        list_version: 7,
        time: UNIX_EPOCH + Duration::from_micros(T0 * 1_000_000 + i * 1_000_001),
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

/// Walks the chain over complete lines; returns the records.
fn chain(dir: &Path) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut head: Option<[u8; 32]> = None;
    let mut last_seq: Option<u64> = None;
    for f in list_files(dir).unwrap() {
        let text = std::fs::read(&f.path).unwrap();
        let complete = match text.iter().rposition(|&b| b == b'\n') {
            Some(i) => &text[..i],
            None => continue,
        };
        for line in complete.split(|&b| b == b'\n') {
            let v: Value = serde_json::from_slice(line).unwrap();
            let prev = v["prev"].as_str().unwrap();
            match head {
                Some(h) => assert_eq!(prev, hex32(&h).as_str(), "{}: {v}", f.name),
                None if v["kind"] == "retention" || out.is_empty() => {}
                None => unreachable!(),
            }
            let seq = v["seq"].as_u64().unwrap();
            if let Some(l) = last_seq {
                if v["kind"] == "lost" {
                    assert_eq!(v["first"].as_u64().unwrap(), l + 1, "{v}");
                    assert_eq!(v["last"].as_u64().unwrap(), seq);
                } else {
                    assert_eq!(seq, l + 1, "{v}");
                }
            }
            head = Some(hash_line(line));
            last_seq = Some(seq);
            out.push(v);
        }
    }
    out
}

fn of_kind<'a>(recs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    recs.iter().filter(|v| v["kind"] == kind).collect()
}

#[test]
fn records_carry_every_field() {
    let dir = tempfile::tempdir().unwrap();
    write_log(&settings(dir.path()), 0..10);
    let recs = chain(dir.path());
    assert_eq!(recs[0]["kind"], "start");
    assert_eq!(recs[0]["prev"], hex32(&GENESIS).as_str());
    assert_eq!(recs.last().unwrap()["kind"], "checkpoint");
    let hits = of_kind(&recs, "hit");
    assert_eq!(hits.len(), 10);
    for (i, h) in hits.iter().enumerate() {
        let want = hit(i as u64);
        assert_eq!(h["client"], want.client.to_string());
        assert_eq!(h["port"], want.port);
        assert_eq!(h["transport"], want.transport.as_str());
        assert_eq!(h["qname"], want.qname);
        assert_eq!(h["action"], want.action);
        assert_eq!(h["line"], want.line);
        assert_eq!(h["list_version"], 7);
        assert_eq!(h["decision"].as_str(), want.decision.as_deref());
        assert_eq!(h["ts"].as_str().unwrap().len(), 27);
    }
    assert_eq!(hits[3]["qtype"], "TYPE65534");
}

#[test]
fn rotation_retention_and_restart_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_file_bytes = 4096;
    write_log(&s, 0..100);
    assert!(list_files(dir.path()).unwrap().len() > 5);
    assert_eq!(of_kind(&chain(dir.path()), "hit").len(), 100);
    s.max_files = 3;
    write_log(&s, 100..200);
    assert!(list_files(dir.path()).unwrap().len() <= 3);
    let recs = chain(dir.path());
    let ret = of_kind(&recs, "retention");
    let last = ret.last().unwrap();
    assert_eq!(last["start_seq"], recs[0]["seq"]);
    assert_eq!(last["start_prev"], recs[0]["prev"]);
}

#[test]
fn torn_tail_is_acknowledged_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    write_log(&s, 0..10);
    let newest = list_files(dir.path()).unwrap().pop().unwrap();
    let mut text = std::fs::read(&newest.path).unwrap();
    text.extend_from_slice(br#"{"seq":12,"ts":"2025"#);
    std::fs::write(&newest.path, &text).unwrap();
    write_log(&s, 10..15);
    let recs = chain(dir.path());
    let start = of_kind(&recs, "start")[1];
    assert_eq!(start["torn"][0]["file"], newest.name.as_str());
    assert_eq!(start["torn"][0]["bytes"], 20);
}

#[test]
fn queue_overflow_leaves_an_explained_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.queue_capacity = 4;
    let log = AuditLog::open(&s).unwrap();
    log.flush();
    log.set_stalled(true);
    for i in 0..100 {
        log.record(hit(i));
    }
    assert_eq!(log.stats().lost, 96);
    log.set_stalled(false);
    while log.stats().queue_depth > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    log.record(hit(100));
    log.shutdown();
    let recs = chain(dir.path());
    let lost = of_kind(&recs, "lost");
    assert_eq!(lost.len(), 1);
    assert_eq!(
        (lost[0]["first"].as_u64(), lost[0]["count"].as_u64()),
        (Some(5), Some(96))
    );
}

#[test]
fn write_errors_become_lost_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&settings(dir.path())).unwrap();
    log.flush();
    log.set_fail_writes(true, false);
    for i in 0..20 {
        log.record(hit(i));
    }
    log.flush();
    log.set_fail_writes(false, false);
    std::thread::sleep(Duration::from_millis(250));
    log.record(hit(20));
    let st = log.stats();
    log.shutdown();
    assert!(st.write_errors > 0 && st.lost >= 20);
    let recs = chain(dir.path());
    let lost = of_kind(&recs, "lost");
    assert_eq!(lost[0]["reason"], "write_error");
}

#[test]
fn many_producers_no_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.queue_capacity = 100_000;
    s.checkpoint_every = 1000;
    let log = AuditLog::open(&s).unwrap();
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let log = log.clone();
            sc.spawn(move || (0..5000).for_each(|i| log.record(hit(t * 5000 + i))));
        }
    });
    log.shutdown();
    let recs = chain(dir.path());
    assert_eq!(of_kind(&recs, "hit").len(), 20_000);
    assert_eq!(of_kind(&recs, "checkpoint").len(), 21);
}

#[test]
fn hmac_pseudonyms() {
    let keys = tempfile::tempdir().unwrap();
    let k = keys.path().join("k");
    std::fs::write(&k, "first secret key for tests\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.client = ClientMode::Hmac;
    s.hmac_key_file = Some(k);
    let log = AuditLog::open(&s).unwrap();
    let a: IpAddr = "192.0.2.77".parse().unwrap();
    for i in 0..2 {
        let mut h = hit(i);
        h.client = a;
        log.record(h);
    }
    log.shutdown();
    let recs = chain(dir.path());
    let hits = of_kind(&recs, "hit");
    assert_eq!(hits[0]["client"], hits[1]["client"]);
    assert_eq!(
        hits[0]["client"],
        pseudonym(b"first secret key for tests", a).as_str()
    );
    for f in list_files(dir.path()).unwrap() {
        assert!(
            !std::fs::read_to_string(f.path)
                .unwrap()
                .contains("192.0.2.77")
        );
    }
}
