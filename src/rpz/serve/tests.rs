use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::zone::{DROP, NODATA, NXDOMAIN, PASSTHRU, Verdict, ZoneRecord, follower_decides};
use super::*;
use crate::list::{Format, ListOptions};
use crate::policy::Action;

fn policy() -> PolicyConfig {
    PolicyConfig {
        action: Action::Nxdomain,
        ttl: 60,
        address_v4: Ipv4Addr::new(198, 51, 100, 1),
        address_v6: "2001:db8::1".parse().unwrap(),
        ede_code: 16,
        ede_text: crate::sinkhole::Template::parse("{list}").unwrap(),
        local_zones: crate::special::LocalZones::default(),
        bypass_signals: crate::bypass::BypassSignals::default(),
    }
}

/// (list name, format, action override, exact_only, content): nested
/// allow and block rules of every kind and scope, overlapping.
const LISTS: &[(&str, Format, Option<Action>, bool, &str)] = &[
    (
        "court",
        Format::Plain,
        None,
        false,
        "a.example\nbad.example\ndeep.x.y.z.example\nshared.example\n",
    ),
    (
        "allow",
        Format::Adblock,
        None,
        false,
        "@@||ok.b.a.example^\n@@||fine.bad.example^\n@@||y.z.example^\n",
    ),
    (
        "inner",
        Format::Plain,
        Some(Action::Nodata),
        false,
        "worse.fine.bad.example\n",
    ),
    (
        "dropper",
        Format::Plain,
        Some(Action::Drop),
        false,
        "drop.a.example\n",
    ),
    (
        "exact",
        Format::Plain,
        Some(Action::Address),
        true,
        "page.example\nonly.a.example\n",
    ),
    (
        "zone",
        Format::Rpz,
        None,
        false,
        "$TTL 300\n@ SOA localhost. root.localhost. 1 43200 3600 86400 300\n  NS localhost.\n\
         w.example CNAME .\n*.w.example CNAME *.\n\
         pass.w.example CNAME rpz-passthru.\n\
         *.lo.example CNAME .\nlocal.lo.example A 192.0.2.10\nlocal.lo.example AAAA 2001:db8::10\n\
         *.shared.example CNAME rpz-passthru.\n",
    ),
];

fn snapshot() -> Snapshot {
    snapshot_of(|_| true)
}

/// The snapshot of the lists `keep` says yes to.
fn snapshot_of(keep: impl Fn(&str) -> bool) -> Snapshot {
    let lists: Vec<_> = LISTS
        .iter()
        .filter(|(name, ..)| keep(name))
        .map(|(name, format, action, exact, text)| {
            let opts = ListOptions {
                format: Some(*format),
                name: Some((*name).to_string()),
                action: *action,
                exact_only: *exact,
            };
            crate::list::parse::parse_bytes(Path::new(name), text.as_bytes(), &opts)
        })
        .collect();
    crate::list::compile::compile(&lists).unwrap()
}

/// What sinkhole itself does for `name`, in the zone's vocabulary.
fn sinkhole_decides(snap: &Snapshot, policy: &PolicyConfig, name: &str) -> Verdict {
    match snap.lookup(name.as_bytes()) {
        None => Verdict::Pass,
        Some(m) if m.action.is_allow() => Verdict::Pass,
        Some(m) => {
            let mut data = match m.action.resolve(policy.action) {
                Action::Nxdomain | Action::Refused => vec![RpzData::Cname(NXDOMAIN)],
                Action::Nodata => vec![RpzData::Cname(NODATA)],
                Action::Drop => vec![RpzData::Cname(DROP)],
                Action::Address => {
                    let own = snap.rule(m.rule).addresses();
                    if own.is_empty() {
                        vec![
                            RpzData::Addr(IpAddr::V4(policy.address_v4)),
                            RpzData::Addr(IpAddr::V6(policy.address_v6)),
                        ]
                    } else {
                        own.into_iter().map(RpzData::Addr).collect()
                    }
                }
                Action::Allow | Action::Block => unreachable!(),
            };
            data.sort();
            Verdict::Block(data)
        }
    }
}

/// Every rule name, its ancestors, names just below each (a fresh label,
/// and two labels deep), and a few unrelated names.
fn probe_names(snap: &Snapshot) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (name, _, _) in snap.name_rules() {
        let mut n = Some(name.as_str());
        while let Some(m) = n {
            names.insert(m.to_string());
            names.insert(format!("fresh.{m}"));
            names.insert(format!("p.q.{m}"));
            names.insert(format!("ok.{m}"));
            n = m.split_once('.').map(|(_, p)| p);
        }
    }
    for n in ["example", "other.test", "x.example.net"] {
        names.insert(n.to_string());
    }
    names
}

/// Every probe name: what a follower of `records` does equals what
/// sinkhole does with `snap`. Returns how many the table blocks.
fn assert_follower_agrees(snap: &Snapshot, records: &[ZoneRecord]) -> usize {
    let policy = policy();
    let names = probe_names(snap);
    assert!(names.len() > 40, "{}", names.len());
    let mut blocked = 0;
    for name in &names {
        let want = sinkhole_decides(snap, &policy, name);
        if want != Verdict::Pass {
            blocked += 1;
        }
        assert_eq!(
            follower_decides(records, name),
            want,
            "{name}; zone:\n{}",
            zone::zone_text("rpz.test", 1, 60, records)
        );
    }
    blocked
}

#[test]
fn a_follower_of_the_zone_answers_every_name_as_sinkhole_does() {
    // Every list exported (the default): the snapshot's own lookup is
    // the oracle, so the zone follows whatever semantics each list
    // format has in the matcher.
    let snap = snapshot();
    let policy = policy();
    let cfg = config(Path::new("/nonexistent"));
    let (records, left) = build(&snap, &cfg, &policy, 14);
    assert_eq!(left.other, 0, "nothing too long");
    let blocked = assert_follower_agrees(&snap, &records);
    assert!(blocked > 30, "the table blocks {blocked} names only");
}

#[test]
fn the_builders_own_reading_of_suffix_lists_matches_the_snapshot() {
    // The reading used for an export of some lists, checked on the
    // plain/AdBlock lists (suffix semantics; RPZ files' wildcards follow
    // the matcher's own rules).
    let snap = snapshot_of(|name| name != "zone");
    let policy = policy();
    let (rules, _) = Rules::from_snapshot(&snap, &[], &policy);
    for name in probe_names(&snap) {
        assert_eq!(
            rules.decide(&name),
            sinkhole_decides(&snap, &policy, &name),
            "{name}"
        );
    }
    let (records, _) = rules.zone(14);
    assert!(assert_follower_agrees(&snap, &records) > 20);
}

#[test]
fn the_issue_example_gets_triggers_at_the_empty_non_terminal() {
    let snap = snapshot();
    let (records, _) = build(&snap, &config(Path::new("/nonexistent")), &policy(), 14);
    let has = |owner: &str, data: &str| {
        records
            .iter()
            .any(|(o, d)| o == owner && d.rdata_text() == data)
    };
    assert!(has("a.example", "CNAME ."));
    assert!(has("*.a.example", "CNAME ."));
    assert!(
        has("*.b.a.example", "CNAME ."),
        "below the empty non-terminal"
    );
    assert!(has("ok.b.a.example", "CNAME rpz-passthru."));
    assert!(has("*.ok.b.a.example", "CNAME rpz-passthru.") || !has("*.ok.b.a.example", "CNAME ."));
    assert!(has("drop.a.example", "CNAME rpz-drop."));
    assert!(has("page.example", "A 198.51.100.1"));
    assert!(has("page.example", "AAAA 2001:db8::1"));
    assert!(
        !records.iter().any(|(o, _)| o == "*.page.example"),
        "exact-only"
    );
    assert!(has("local.lo.example", "A 192.0.2.10"));
    // Nothing to say about the top: no triggers at `example`.
    assert!(
        !records
            .iter()
            .any(|(o, _)| o == "example" || o == "*.example")
    );
}

#[test]
fn only_the_named_lists_are_exported() {
    let snap = snapshot();
    let policy = policy();
    let (rules, _) = Rules::from_snapshot(&snap, &["dropper".to_string()], &policy);
    let (records, _) = rules.zone(14);
    assert_eq!(
        records,
        vec![
            ("*.drop.a.example".to_string(), RpzData::Cname(DROP)),
            ("drop.a.example".to_string(), RpzData::Cname(DROP)),
        ]
    );
}

#[test]
fn keyword_and_url_rules_are_left_out_and_counted() {
    let opts = ListOptions {
        format: Some(Format::Plain),
        name: Some("kw".into()),
        ..ListOptions::default()
    };
    let kw =
        crate::list::parse::parse_bytes(Path::new("kw"), b"keyword:binance\nx.example\n", &opts);
    let csv_opts = ListOptions {
        format: Some(Format::Csv),
        name: Some("reg".into()),
        ..ListOptions::default()
    };
    let csv = crate::list::parse::parse_bytes(
        Path::new("reg.csv"),
        b"domain;url\n;http://page.example/offer\n",
        &csv_opts,
    );
    let snap = crate::list::compile::compile(&[kw, csv]).unwrap();
    let (rules, left) = Rules::from_snapshot(&snap, &[], &policy());
    assert_eq!(left.keyword, 1);
    assert_eq!(left.url, 1);
    let (records, _) = rules.zone(14);
    assert_eq!(records.len(), 2, "{records:?}");
}

/// `named-checkzone` (Debian bind9-utils) accepts the zone as BIND would
/// load it: no TXT beside a CNAME, nothing out of zone, valid names.
#[test]
fn named_checkzone_accepts_the_export() {
    let snap = snapshot();
    let (rules, _) = Rules::from_snapshot(&snap, &[], &policy());
    let (records, _) = rules.zone(14);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpz.test.zone");
    std::fs::write(&path, zone::zone_text("rpz.test", 7, 60, &records)).unwrap();
    let out = std::process::Command::new("named-checkzone")
        .arg("rpz.test")
        .arg(&path)
        .output()
        .expect("named-checkzone (Debian bind9-utils; `make test-deps`)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("loaded serial 7"), "{text}");
}

fn config(dir: &Path) -> RpzServeConfig {
    RpzServeConfig {
        zone: "rpz.test".into(),
        lists: Vec::new(),
        allow_transfer: vec!["127.0.0.0/8".parse().unwrap()],
        notify: Vec::new(),
        state_file: dir.join("rpz-serve.json"),
        tsig_key_file: None,
    }
}

fn compile(version: u64, text: &str) -> Snapshot {
    let opts = ListOptions {
        format: Some(Format::Plain),
        name: Some("court".into()),
        ..ListOptions::default()
    };
    let list = crate::list::parse::parse_bytes(Path::new("court"), text.as_bytes(), &opts);
    crate::list::compile::compile_versioned(&[list], version).unwrap()
}

#[test]
fn the_serial_only_increases_across_restarts_and_changes() {
    let dir = tempfile::tempdir().unwrap();
    let one = compile(1, "a.example\n");
    let s = RpzServe::new(config(dir.path()), policy(), &one).unwrap();
    assert_eq!(s.serial(), 1);
    // Restart, same zone: same serial (followers need not transfer).
    let s = RpzServe::new(config(dir.path()), policy(), &one).unwrap();
    assert_eq!(s.serial(), 1);
    // A new snapshot version with the same rules: no new serial.
    assert_eq!(s.refresh(&compile(2, "a.example\n")).unwrap(), None);
    assert_eq!(
        s.refresh(&compile(3, "a.example\nb.example\n")).unwrap(),
        Some(2)
    );
    // Restart with another zone (say the lists changed while down): next.
    let s = RpzServe::new(config(dir.path()), policy(), &compile(1, "c.example\n")).unwrap();
    assert_eq!(s.serial(), 3);
    // A corrupt state file is an error, not a reset to 1.
    std::fs::write(dir.path().join("rpz-serve.json"), b"{").unwrap();
    assert!(RpzServe::new(config(dir.path()), policy(), &one).is_err());
}

fn request(qtype: RecordType, serial: Option<u32>) -> (Request, Vec<u8>) {
    let mut m = Message::query();
    m.metadata.id = 0x4242;
    let apex = Name::from_ascii("rpz.test.").unwrap();
    m.add_query(Query::query(apex.clone(), qtype));
    if let Some(s) = serial {
        let soa = SOA::new(apex.clone(), apex.clone(), s, 1, 1, 1, 1);
        m.add_authority(Record::from_rdata(apex, 0, RData::SOA(soa)));
    }
    let bytes = m.to_vec().unwrap();
    (wire::parse_request(&bytes).unwrap(), bytes)
}

/// The answer records of a transfer, all messages in order, as text.
fn transfer_records(s: &Arc<RpzServe>, qtype: RecordType, serial: Option<u32>) -> Vec<String> {
    let (req, bytes) = request(qtype, serial);
    let mut out = Vec::new();
    let client: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let Some(Outcome::Transfer(job)) = s.answer(&req, &bytes, client, Transport::Tcp, &mut out)
    else {
        panic!("not a transfer");
    };
    let mut recs = Vec::new();
    for m in job.collect() {
        let m = Message::from_vec(&m).unwrap();
        assert_eq!(m.metadata.id, 0x4242);
        assert!(m.metadata.authoritative);
        for r in m.answers {
            let text = match &r.data {
                RData::SOA(soa) => format!("SOA {}", soa.serial),
                RData::CNAME(c) => format!("{} CNAME {}", r.name, c.0),
                RData::NS(_) => "NS".to_string(),
                other => format!("{} {other}", r.name),
            };
            recs.push(text);
        }
    }
    recs
}

#[test]
fn axfr_and_ixfr_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let s =
        Arc::new(RpzServe::new(config(dir.path()), policy(), &compile(1, "a.example\n")).unwrap());
    assert_eq!(
        transfer_records(&s, RecordType::AXFR, None),
        [
            "SOA 1",
            "NS",
            "*.a.example.rpz.test. CNAME .",
            "a.example.rpz.test. CNAME .",
            "SOA 1"
        ]
    );
    s.refresh(&compile(2, "a.example\nb.example\n")).unwrap();
    s.refresh(&compile(3, "b.example\n")).unwrap();
    assert_eq!(s.serial(), 3);
    // From 1: both deltas, each SOA-delimited (RFC 1995).
    assert_eq!(
        transfer_records(&s, RecordType::IXFR, Some(1)),
        [
            "SOA 3",
            "SOA 1",
            "SOA 2",
            "*.b.example.rpz.test. CNAME .",
            "b.example.rpz.test. CNAME .",
            "SOA 2",
            "*.a.example.rpz.test. CNAME .",
            "a.example.rpz.test. CNAME .",
            "SOA 3",
            "SOA 3"
        ]
    );
    // Up to date: the SOA alone.
    assert_eq!(transfer_records(&s, RecordType::IXFR, Some(3)), ["SOA 3"]);
    // A serial the journal does not know: the whole zone.
    let full = transfer_records(&s, RecordType::IXFR, Some(99));
    assert_eq!(full.first().map(String::as_str), Some("SOA 3"));
    assert_eq!(full.len(), 5);
    assert_eq!(s.stats().ixfr_fallback.load(Ordering::Relaxed), 1);
}

#[test]
fn outsiders_are_refused_and_other_names_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let s =
        Arc::new(RpzServe::new(config(dir.path()), policy(), &compile(1, "a.example\n")).unwrap());
    let (req, bytes) = request(RecordType::AXFR, None);
    let mut out = Vec::new();
    let stranger: SocketAddr = "192.0.2.9:5000".parse().unwrap();
    assert!(matches!(
        s.answer(&req, &bytes, stranger, Transport::Tcp, &mut out),
        Some(Outcome::Reply)
    ));
    assert_eq!(out[3] & 0x0f, 5, "REFUSED");
    assert_eq!(s.stats().refused.load(Ordering::Relaxed), 1);
    // SOA over UDP for a follower's refresh check.
    let (req, bytes) = request(RecordType::SOA, None);
    let me: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    assert!(matches!(
        s.answer(&req, &bytes, me, Transport::Udp, &mut out),
        Some(Outcome::Reply)
    ));
    let m = Message::from_vec(&out).unwrap();
    assert!(matches!(&m.answers[0].data, RData::SOA(soa) if soa.serial == 1));
    // AXFR over UDP: NOTIMP.
    let (req, bytes) = request(RecordType::AXFR, None);
    s.answer(&req, &bytes, me, Transport::Udp, &mut out);
    assert_eq!(out[3] & 0x0f, 4);
    // Any other name is not ours.
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("a.example.").unwrap(),
        RecordType::A,
    ));
    let bytes = q.to_vec().unwrap();
    let req = wire::parse_request(&bytes).unwrap();
    assert!(
        s.answer(&req, &bytes, me, Transport::Udp, &mut out)
            .is_none()
    );
    let _ = PASSTHRU;
}

#[test]
fn config_needs_a_state_dir() {
    let raw = RawRpzServeConfig {
        zone: "rpz.sinkhole.".into(),
        ..RawRpzServeConfig::default()
    };
    assert!(
        raw.validate(None)
            .unwrap_err()
            .to_string()
            .contains("state_dir")
    );
    let c = raw
        .validate(Some(Path::new("/var/lib/sinkhole")))
        .unwrap()
        .unwrap();
    assert_eq!(c.zone, "rpz.sinkhole");
    assert_eq!(c.state_file, Path::new("/var/lib/sinkhole/rpz-serve.json"));
    assert_eq!(c.allow_transfer.len(), 2, "loopback only by default");
    let off = RawRpzServeConfig::default();
    assert_eq!(off.validate(None).unwrap(), None);
    let tsig = RawRpzServeConfig {
        tsig_key_file: "/etc/k".into(),
        ..raw.clone()
    };
    let c = tsig.validate(Some(Path::new("/s"))).unwrap().unwrap();
    assert_eq!(c.tsig_key_file.as_deref(), Some(Path::new("/etc/k")));
    let bad = RawRpzServeConfig {
        notify: vec!["follower".into()],
        ..raw
    };
    assert!(
        bad.validate(Some(Path::new("/s")))
            .unwrap_err()
            .to_string()
            .contains("rpz.serve.notify")
    );
}
