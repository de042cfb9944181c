use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::audit::query::{
    OutputFormat, SearchFilter, StatsBy, parse_client, search, search_files, stats,
};
use crate::audit::record::HitLine;
use crate::audit::time::format_ts;

const T0: i64 = 1_740_787_200_000_000; // 2025-03-01T00:00:00Z
const HOUR: i64 = 3_600_000_000;
const DECISIONS: [Option<&str>; 4] = [Some("2025/17"), Some("KZ-9"), None, Some("a,b\"c")];
const LISTS: [&str; 3] = ["court", "registry", "ads"];
const ACTIONS: [&str; 3] = ["nxdomain", "nodata", "refused"];
const NAMES: [&str; 5] = [
    "Ads.Example.COM.",
    "example.com",
    "x.bad.test",
    "bad.test",
    "we\"ird.test",
];
const CLIENTS: [&str; 5] = [
    "192.0.2.7",
    "192.0.2.200",
    "198.51.100.1",
    "2001:db8::1",
    "hmac:00112233445566778899aabbccddeeff",
];

/// One generated hit: indices into the tables above, and an hour offset.
type Gen = (usize, usize, usize, usize, usize, i64);

fn hit_line(seq: u64, g: &Gen) -> String {
    let (d, l, a, n, c, h) = *g;
    // Anywhere in the hour, not in seq order: files are ordered by hour
    // only, as a log written across clock steps can be.
    let ts = format_ts(T0 + h * HOUR + (seq as i64 * 7_919_000_003) % HOUR);
    let prev = "0".repeat(64);
    serde_json::to_string(&HitLine {
        seq,
        ts: ts.as_str(),
        kind: "hit",
        client: CLIENTS[c],
        port: 5353,
        transport: "udp",
        qname: NAMES[n],
        qtype: "A",
        action: ACTIONS[a],
        rule: "rule",
        list: LISTS[l],
        file: "/lists/x",
        line: 3,
        decision: DECISIONS[d],
        authority: None,
        category: None,
        date: None,
        entry: None,
        included: None,
        path: None,
        sni: None,
        list_version: (h / 10) as u64 + 1,
        prev: &prev,
    })
    .unwrap()
}

/// Writes the hits into files of `per_file` records, hours increasing, with
/// a checkpoint and a console record among them.
fn write_log(dir: &Path, hits: &[Gen], per_file: usize) {
    let mut sorted = hits.to_vec();
    sorted.sort_by_key(|g| g.5);
    let mut seq = 0u64;
    for (i, chunk) in sorted.chunks(per_file.max(1)).enumerate() {
        let mut text = String::new();
        if i == 0 {
            text.push_str(&format!(
                "{{\"seq\":0,\"ts\":\"{}\",\"kind\":\"start\",\"prev\":\"{}\"}}\n",
                format_ts(T0).as_str(),
                "0".repeat(64)
            ));
            seq = 1;
        }
        for g in chunk {
            text.push_str(&hit_line(seq, g));
            text.push('\n');
            seq += 1;
        }
        text.push_str(&format!(
            "{{\"seq\":{seq},\"ts\":\"{}\",\"kind\":\"console\",\"user\":\"a\",\"query\":\"q\",\"results\":1,\"prev\":\"{}\"}}\n",
            format_ts(T0 + 500 * HOUR).as_str(),
            "0".repeat(64)
        ));
        seq += 1;
        let name = format!("audit-20250301-000000-{:020}.jsonl", seq);
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn hit_gen() -> impl Strategy<Value = Gen> {
    (
        0..4usize,
        0..3usize,
        0..3usize,
        0..5usize,
        0..5usize,
        0..72i64,
    )
}

fn run_search(files: &[LogFile], f: &SearchFilter) -> Vec<u8> {
    let mut out = Vec::new();
    search_files(files, f, OutputFormat::Json, &mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Pruning by the index never changes a search's result, and the
    /// index's counts are those `audit stats` computes by a full scan.
    #[test]
    fn index_agrees_with_a_full_scan(
        hits in proptest::collection::vec(hit_gen(), 1..300),
        per_file in 1usize..80,
        since in proptest::option::of(0..80i64),
        span in 1..80i64,
        d in proptest::option::of(0..4usize),
        l in proptest::option::of(0..3usize),
        a in proptest::option::of(0..3usize),
        name in proptest::option::of(prop_oneof![Just("example.com"), Just("bad.test"), Just("nothing.test")]),
        client in proptest::option::of(prop_oneof![Just("192.0.2.0/24"), Just("2001:db8::/32"), Just("198.51.100.1")]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &hits, per_file);
        let idx = AuditIndex::new(dir.path());
        let files = idx.refresh().unwrap();

        // Bounds inside an hour, so the hour spans must cover partial hours.
        let since_ts = since.map(|s| format_ts(T0 + s * HOUR + HOUR / 3).as_str().to_string());
        let until_ts = since.map(|s| format_ts(T0 + (s + span) * HOUR + HOUR / 2).as_str().to_string());
        let decision = d.and_then(|i| DECISIONS[i]);
        let filter = SearchFilter::new(
            since_ts.as_deref(),
            until_ts.as_deref(),
            client.map(|c| parse_client(c, None).unwrap()),
            name,
            decision,
        )
        .unwrap()
        .with_list(l.map(|i| LISTS[i]))
        .with_action(a.map(|i| ACTIONS[i]));
        let prune = Prune {
            since: filter.since(),
            until: filter.until(),
            decision: filter.decision(),
            list: filter.list(),
            action: filter.action(),
        };
        let mut full = Vec::new();
        search(dir.path(), &filter, OutputFormat::Json, &mut full).unwrap();
        prop_assert_eq!(run_search(&prune.files(&files), &filter), full);

        // Counts: every key of every dimension, as stats computes them.
        let all = SearchFilter::default();
        let t = totals(&files);
        let by = |b| {
            let r = stats(dir.path(), &all, b, Some(usize::MAX)).unwrap();
            r.rows.into_iter().collect::<BTreeMap<_, _>>()
        };
        prop_assert_eq!(t.hits.total, hits.len() as u64);
        prop_assert_eq!(&t.hits.names, &by(StatsBy::Name));
        prop_assert_eq!(&t.hits.lists, &by(StatsBy::List));
        prop_assert_eq!(&t.hits.hours, &by(StatsBy::Hour));
        prop_assert_eq!(&t.decisions, &by(StatsBy::Decision));
        prop_assert_eq!(t.kinds.get("console").copied(), Some(files.len() as u64));

        // A per-order report: hours and distinct clients of one decision.
        let reference = decision.unwrap_or(NO_DECISION);
        if reference != NO_DECISION {
            let ds = super::decision(&files, reference);
            let only = SearchFilter::new(None, None, None, None, Some(reference)).unwrap();
            let hours = stats(dir.path(), &only, StatsBy::Hour, None).unwrap();
            let clients = stats(dir.path(), &only, StatsBy::Client, None).unwrap();
            prop_assert_eq!(ds.counts.total, hours.total);
            prop_assert_eq!(ds.counts.hours, hours.rows.into_iter().collect::<BTreeMap<_, _>>());
            prop_assert_eq!(ds.clients.len() as u64, clients.distinct);
        }
    }
}

#[test]
fn a_deleted_or_damaged_index_is_rebuilt_and_a_growing_file_extended() {
    let dir = tempfile::tempdir().unwrap();
    let hits: Vec<Gen> = (0..200)
        .map(|i| (i % 4, i % 3, i % 3, i % 5, i % 5, (i / 10) as i64))
        .collect();
    write_log(dir.path(), &hits, 64);
    let idx = AuditIndex::new(dir.path());
    let first = idx.refresh().unwrap();
    let stored = dir.path().join(INDEX_DIR);
    // Every file but the newest (still being written) is stored.
    assert_eq!(std::fs::read_dir(&stored).unwrap().count(), first.len() - 1);
    let want: Vec<FileSummary> = first.iter().map(|f| (*f.summary).clone()).collect();

    // Deleted: a fresh index (as after a restart) rebuilds the same.
    std::fs::remove_dir_all(&stored).unwrap();
    let again = AuditIndex::new(dir.path()).refresh().unwrap();
    let got: Vec<FileSummary> = again.iter().map(|f| (*f.summary).clone()).collect();
    assert_eq!(got, want);

    // Damaged: garbage, or a summary of another file under this name.
    let victim = std::fs::read_dir(&stored)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&victim, b"{not json").unwrap();
    let got: Vec<FileSummary> = AuditIndex::new(dir.path())
        .refresh()
        .unwrap()
        .iter()
        .map(|f| (*f.summary).clone())
        .collect();
    assert_eq!(got, want);

    // reindex writes every file, the newest too.
    let r = idx.reindex().unwrap();
    assert_eq!(r.files, want.len());
    assert_eq!(r.records, want.iter().map(|s| s.records).sum::<u64>());
    assert_eq!(std::fs::read_dir(&stored).unwrap().count(), want.len());

    // The newest file grows (plus a torn tail): extended, equal to a scan.
    let newest = again.last().unwrap().path.clone();
    let mut text = std::fs::read_to_string(&newest).unwrap();
    text.push_str(&hit_line(10_000, &(0, 0, 0, 0, 0, 90)));
    text.push('\n');
    text.push_str("{\"seq\":10001,\"ts\"");
    std::fs::write(&newest, &text).unwrap();
    let grown = idx.refresh().unwrap();
    let extended = (*grown.last().unwrap().summary).clone();
    let lf = LogFile {
        name: extended.file.clone(),
        path: newest,
        range: None,
    };
    assert_eq!(extended, summarize_file(&lf).unwrap());
    assert_eq!(extended.hits.total, want.last().unwrap().hits.total + 1);
}

#[test]
fn console_records_join_the_chain_verify_and_reach_the_index() {
    use crate::audit::{AuditLog, AuditSettings, ConsoleRecord, HitRecord, verify};
    use std::time::{Duration, UNIX_EPOCH};
    let dir = tempfile::tempdir().unwrap();
    let mut s = AuditSettings::dir(dir.path());
    s.checkpoint_every = 3;
    s.checkpoint_interval = None;
    let log = AuditLog::open(&s).unwrap();
    let hit = |i: u64| {
        HitRecord::for_test(
            "192.0.2.9".parse().unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_740_787_200 + i),
        )
    };
    for i in 0..5 {
        log.record(hit(i));
    }
    log.record_console(ConsoleRecord {
        user: "alice".into(),
        role: "auditor".into(),
        query: "/api/search?client=192.0.2.9".into(),
        results: 5,
    });
    log.flush();
    log.record(hit(9));
    log.shutdown();
    let report = verify(dir.path()).unwrap();
    assert!(report.is_intact(), "{report}");
    let files = AuditIndex::new(dir.path()).refresh().unwrap();
    let events: Vec<&String> = files.iter().flat_map(|f| f.summary.events.iter()).collect();
    assert_eq!(events.len(), 1);
    let v: serde_json::Value = serde_json::from_str(events[0]).unwrap();
    assert_eq!(v["kind"], "console");
    assert_eq!(v["user"], "alice");
    assert_eq!(v["role"], "auditor");
    assert_eq!(v["query"], "/api/search?client=192.0.2.9");
    assert_eq!(v["results"], 5);
    assert_eq!(totals(&files).hits.total, 6);
}
