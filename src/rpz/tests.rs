//! The followed zone through the list pipeline: an IXFR applied to the
//! zone file reloads as an incremental layer (the line-diff path), and
//! RPZ files that the line path cannot read exactly reload in full.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::fold::{Delta, apply, net_change};
use super::store::{ZoneFiles, header};
use crate::list::reload::tests::{blocked, settings, write};
use crate::list::reload::{ReloadSettings, Reloader};

fn with_sources(dir: &Path) -> ReloadSettings {
    ReloadSettings {
        sources_dir: Some(dir.join("state/sources")),
        ..settings(dir)
    }
}

fn zone_text(n: usize) -> String {
    let mut t = header("rpz.test");
    for i in 0..n {
        t.push_str(&format!("n{i}.example CNAME .\n"));
    }
    t
}

fn ixfr(
    files: &ZoneFiles,
    r: &Arc<Reloader>,
    deleted: &[&str],
    added: &[&str],
) -> crate::list::reload::ReloadReport {
    let change = net_change(&[Delta {
        from: 1,
        to: 2,
        deleted: deleted.iter().map(|s| s.to_string()).collect(),
        added: added.iter().map(|s| s.to_string()).collect(),
    }]);
    let old = std::io::BufReader::new(fs::File::open(&files.source).unwrap());
    let out = fs::File::create(&files.tmp).unwrap();
    apply(old, out, &change, 1_000_000).unwrap();
    files.install_tmp().unwrap();
    let report = r.reload_sources(false).unwrap();
    files.drop_prev();
    report
}

#[test]
fn an_ixfr_reloads_as_an_incremental_layer() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("lists")).unwrap();
    write(&dir.path().join("lists/local.txt"), "local.example\n");
    let files = ZoneFiles::new(&dir.path().join("state"), "rpz.test");
    files.create_dirs().unwrap();
    write(&files.source, &zone_text(2000));
    let (r, _) = Reloader::start(with_sources(dir.path())).unwrap();
    assert!(blocked(&r, "n5.example"));
    assert!(blocked(&r, "local.example"));
    let names: Vec<_> = r
        .current()
        .rules_per_list()
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert!(names.contains(&"rpz.test".to_string()), "{names:?}");

    let report = ixfr(
        &files,
        &r,
        &["n5.example CNAME ."],
        &["new.example CNAME .", "*.wild.example CNAME ."],
    );
    assert!(report.incremental, "{report:?}");
    assert_eq!((report.added, report.removed), (2, 1));
    assert!(!blocked(&r, "n5.example"));
    assert!(blocked(&r, "new.example"));
    assert!(blocked(&r, "a.wild.example"));

    // Local data changes take the full path (one rule per owner), still right.
    let report = ixfr(&files, &r, &[], &["ld.example A 192.0.2.1"]);
    assert!(!report.incremental, "{report:?}");
    assert!(blocked(&r, "ld.example"));
    assert!(blocked(&r, "new.example"));
}

#[test]
fn rpz_files_with_origin_or_parentheses_reload_in_full() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("lists")).unwrap();
    let list = dir.path().join("lists/zone.rpz");
    let body: String = (0..2000).map(|i| format!("n{i} CNAME .\n")).collect();
    let cases = [
        format!("$ORIGIN rpz.test.\n{body}"),
        format!("@ SOA ns. host. (1 60 60 600 60)\n{body}"),
    ];
    for text in cases {
        write(&list, &text);
        let (r, _) = Reloader::start(settings(dir.path())).unwrap();
        write(&list, &format!("{text}added CNAME .\n"));
        let report = r.reload(false).unwrap();
        assert!(!report.incremental, "{text:.40}");
        assert!(blocked(&r, "added"));
        assert!(blocked(&r, "n7"));
        drop(r);
        fs::remove_dir_all(dir.path().join("state")).unwrap();
    }
}

/// The fuzz seeds of `rpz_ixfr` (wire messages, as a primary sends them)
/// fold as they were written to: the conversion from the wire is the one
/// the transfer client uses.
#[test]
fn fuzz_seeds_fold_from_the_wire() {
    use super::fold::{XfrRecord, fold_ixfr, record_line};
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/rpz_ixfr");
    let records = |name: &str| -> (u32, Vec<XfrRecord>) {
        let data = fs::read(seeds.join(name)).unwrap();
        let (serial, mut rest) = data.split_first_chunk::<4>().unwrap();
        let mut out = Vec::new();
        while let Some((len, tail)) = rest.split_first_chunk::<2>() {
            let (msg, tail) = tail.split_at(usize::from(u16::from_be_bytes(*len)));
            rest = tail;
            let m = hickory_proto::op::Message::from_vec(msg).unwrap();
            out.extend(m.answers.iter().map(|r| record_line("rpz.test", r)));
        }
        (u32::from_be_bytes(*serial), out)
    };
    let (serial, recs) = records("two_deltas");
    let ixfr = fold_ixfr(serial, &recs).unwrap();
    assert_eq!(ixfr.soa.serial, 3);
    assert_eq!(ixfr.deltas.len(), 2);
    assert_eq!(
        ixfr.deltas[0].deleted,
        vec!["a.example CNAME .".to_string()]
    );
    assert_eq!(
        ixfr.deltas[1].added,
        vec!["*.d.example CNAME rpz-passthru.".to_string()]
    );
    let (serial, recs) = records("current");
    assert!(fold_ixfr(serial, &recs).unwrap().deltas.is_empty());
    let (_, recs) = records("axfr");
    assert_eq!(
        recs.iter()
            .filter(|r| matches!(r, XfrRecord::Line(_)))
            .count(),
        2
    );
}

/// The zone of the BIND comparison (`tests/integration/rpz_follow.rs`
/// runs the same zone in `named` and checks the same answers): overlapping
/// exact, wildcard, passthru and local-data triggers, names at and below
/// empty non-terminals.
pub(crate) const SEMANTICS_ZONE: &str = "\
*.x.test CNAME .
deep.a.x.test CNAME rpz-passthru.
exact.y.test CNAME .
*.y.test CNAME *.
ld.y.test A 192.0.2.7
z.test CNAME .
*.z.test CNAME .
*.w.test CNAME .
*.sub.w.test CNAME rpz-passthru.
";

/// How each name is answered: `None` = passed (no rule), else the action.
pub(crate) const SEMANTICS: &[(&str, Option<crate::policy::Action>)] = {
    use crate::policy::Action::*;
    &[
        // The example: a.x.test is the empty non-terminal above
        // deep.a.x.test, which stops *.x.test at and below it.
        ("a.x.test", None),
        ("b.a.x.test", None),
        ("deep.a.x.test", Some(Allow)),
        ("c.deep.a.x.test", None),
        ("c.x.test", Some(Nxdomain)),
        ("d.c.x.test", Some(Nxdomain)),
        ("x.test", None),
        ("exact.y.test", Some(Nxdomain)),
        ("s.exact.y.test", None),
        ("o.y.test", Some(Nodata)),
        ("ld.y.test", Some(Address)),
        ("s.ld.y.test", None),
        ("z.test", Some(Nxdomain)),
        ("q.z.test", Some(Nxdomain)),
        // sub.w.test exists (above *.sub.w.test): *.w.test stops there.
        ("sub.w.test", None),
        ("k.sub.w.test", Some(Allow)),
        ("v.w.test", Some(Nxdomain)),
        ("other.test", None),
    ]
};

fn semantics_lists(extra_plain: &str) -> Vec<crate::list::ParsedList> {
    use crate::list::{Format, ListOptions, parse::parse_bytes};
    let rpz = ListOptions {
        format: Some(Format::Rpz),
        ..ListOptions::default()
    };
    let plain = ListOptions {
        format: Some(Format::Plain),
        ..ListOptions::default()
    };
    vec![
        parse_bytes(Path::new("zone.rpz"), SEMANTICS_ZONE.as_bytes(), &rpz),
        parse_bytes(Path::new("plain.txt"), extra_plain.as_bytes(), &plain),
    ]
}

#[test]
fn rpz_wildcards_follow_dns_wildcard_rules_as_bind_does() {
    use crate::list::reference::ReferenceMatcher;
    let lists = semantics_lists("");
    let snap = crate::list::compile(&lists).unwrap();
    let reference = ReferenceMatcher::new(&lists);
    for &(name, want) in SEMANTICS {
        let got = snap.lookup(name.as_bytes()).map(|m| m.action);
        assert_eq!(got, want, "{name}");
        assert_eq!(
            reference.lookup(name).map(|h| h.action),
            want,
            "reference: {name}"
        );
    }
}

#[test]
fn other_lists_neither_stop_nor_lose_their_suffix_semantics() {
    use crate::list::reference::ReferenceMatcher;
    use crate::policy::Action;
    // A plain list's names under an RPZ wildcard do not stop it (BIND
    // applies zones one by one), and a plain list's own `*.name` keeps
    // matching every subdomain whatever exists below it.
    let lists = semantics_lists("*.m.x.test\nblocked.plain.test\n*.plain.test\n");
    let snap = crate::list::compile(&lists).unwrap();
    let reference = ReferenceMatcher::new(&lists);
    let list_of = |name: &str| {
        snap.lookup(name.as_bytes())
            .map(|m| snap.rule(m.rule).list().to_string())
    };
    let cases: &[(&str, Option<(&str, Action)>)] = &[
        ("m.x.test", Some(("zone", Action::Nxdomain))),
        ("n.m.x.test", Some(("plain", Action::Block))),
        ("a.x.test", None),
        ("q.blocked.plain.test", Some(("plain", Action::Block))),
    ];
    for &(name, want) in cases {
        let got = snap.lookup(name.as_bytes()).map(|m| m.action);
        assert_eq!(got, want.map(|w| w.1), "{name}");
        assert_eq!(list_of(name).as_deref(), want.map(|w| w.0), "{name}");
        assert_eq!(
            reference.lookup(name).map(|h| h.action),
            want.map(|w| w.1),
            "reference: {name}"
        );
    }
}

/// Owners added and removed by an incremental reload (a layer over the
/// snapshot) stop and release wildcards exactly as a full compile does.
#[test]
fn wildcard_stops_follow_incremental_reloads() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("lists")).unwrap();
    write(&dir.path().join("lists/local.txt"), "local.example\n");
    let files = ZoneFiles::new(&dir.path().join("state"), "rpz.test");
    files.create_dirs().unwrap();
    let mut text = zone_text(2000);
    text.push_str("*.x.test CNAME .\n");
    write(&files.source, &text);
    let (r, _) = Reloader::start(with_sources(dir.path())).unwrap();
    assert!(blocked(&r, "b.a.x.test"));
    let report = ixfr(&files, &r, &[], &["deep.a.x.test CNAME rpz-passthru."]);
    assert!(report.incremental, "{report:?}");
    assert!(
        !blocked(&r, "b.a.x.test"),
        "the new owner stops the wildcard"
    );
    assert!(blocked(&r, "c.x.test"));
    let report = ixfr(&files, &r, &["deep.a.x.test CNAME rpz-passthru."], &[]);
    assert!(report.incremental, "{report:?}");
    assert!(
        blocked(&r, "b.a.x.test"),
        "gone again: the wildcard matches"
    );
    assert!(r.wait_merged(std::time::Duration::from_secs(10)));
    assert!(blocked(&r, "b.a.x.test"));
    let report = ixfr(&files, &r, &[], &["deep.a.x.test CNAME rpz-passthru."]);
    assert!(report.incremental);
    assert!(r.wait_merged(std::time::Duration::from_secs(10)));
    assert!(!blocked(&r, "b.a.x.test"), "after the merge too");
}

/// A transferred zone that empties most of the zone is refused by the list
/// guards (shrink ratio), the previous file comes back, the old zone stays
/// enforced, and the next good transfer diffs against it.
#[test]
fn a_shrunken_zone_is_refused_and_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("lists")).unwrap();
    write(&dir.path().join("lists/local.txt"), "local.example\n");
    let files = ZoneFiles::new(&dir.path().join("state"), "rpz.test");
    files.create_dirs().unwrap();
    write(&files.source, &zone_text(2000));
    let (r, _) = Reloader::start(with_sources(dir.path())).unwrap();
    // What follow.rs does with an AXFR: the new file in place, reload, roll back.
    fs::write(&files.tmp, zone_text(10)).unwrap();
    files.install_tmp().unwrap();
    let e = r.reload_sources(false).unwrap_err();
    assert_eq!(e.reason(), "shrink");
    files.restore_prev().unwrap();
    assert!(blocked(&r, "n1500.example"), "the old zone keeps serving");
    assert_eq!(fs::read_to_string(&files.source).unwrap(), zone_text(2000));
    assert!(!files.prev.exists());
    let report = ixfr(
        &files,
        &r,
        &["n3.example CNAME ."],
        &["after.example CNAME ."],
    );
    assert!(report.incremental, "{report:?}");
    assert!(blocked(&r, "after.example") && !blocked(&r, "n3.example"));
}

mod random {
    use proptest::prelude::*;

    use crate::list::reference::ReferenceMatcher;
    use crate::list::{Format, ListOptions, parse::parse_bytes};
    use std::path::Path;

    /// A name of 1 to 4 labels from a 3-letter alphabet under `t`: small
    /// enough that owners, wildcards and queries overlap all the time.
    fn name() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..=4)
            .prop_map(|labels| format!("{}.t", labels.join(".")))
    }

    fn zone_line() -> impl Strategy<Value = String> {
        (any::<bool>(), name(), 0u8..3).prop_map(|(wild, n, action)| {
            let owner = if wild { format!("*.{n}") } else { n };
            let rdata = ["CNAME .", "CNAME rpz-passthru.", "CNAME *."][action as usize];
            format!("{owner} {rdata}\n")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random RPZ zones (two of them) beside a plain list: the snapshot
        /// answers every name as the naive reference does.
        #[test]
        fn snapshot_matches_the_reference(
            zone1 in proptest::collection::vec(zone_line(), 0..12),
            zone2 in proptest::collection::vec(zone_line(), 0..6),
            plain in proptest::collection::vec(name(), 0..4),
            queries in proptest::collection::vec(name(), 1..40),
        ) {
            let rpz = ListOptions { format: Some(Format::Rpz), ..ListOptions::default() };
            let txt = ListOptions { format: Some(Format::Plain), ..ListOptions::default() };
            let plain: String = plain.iter().map(|n| format!("{n}\n")).collect();
            let lists = vec![
                parse_bytes(Path::new("z1.rpz"), zone1.concat().as_bytes(), &rpz),
                parse_bytes(Path::new("z2.rpz"), zone2.concat().as_bytes(), &rpz),
                parse_bytes(Path::new("p.txt"), plain.as_bytes(), &txt),
            ];
            let snap = crate::list::compile(&lists).unwrap();
            let reference = ReferenceMatcher::new(&lists);
            for q in &queries {
                let got = snap.lookup(q.as_bytes()).map(|m| {
                    let v = snap.rule(m.rule);
                    (v.list().to_string(), v.line(), m.action)
                });
                let want = reference.lookup(q).map(|h| {
                    (lists[h.file_index].name.clone(), h.line, h.action)
                });
                prop_assert_eq!(got, want, "{}", q);
            }
        }
    }
}

/// IXFRs enforced as layers straight from their folded change (no zone
/// file rewrite, no diff: `follow.rs`), with the journal folded into the
/// zone file now and then and full reloads between: every answer, list and
/// line included, is what a full compile of the zone file with the journal
/// applied gives.
#[test]
fn ixfr_layers_equal_full_compiles_of_the_folded_zone() {
    use super::fold::NetChange;
    use super::follow::{fold_journal, layer_change};
    use super::journal;
    use super::store::{ZoneDisk, ZoneMeta, sha256_file};
    use crate::list::{ListOptions, parse};

    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("lists")).unwrap();
    let plain = dir.path().join("lists/local.txt");
    write(&plain, "b.a.t\n*.c.t\n");
    let files = ZoneFiles::new(&dir.path().join("state"), "rpz.test");
    files.create_dirs().unwrap();

    // A small name universe, so owners, wildcards and stops overlap.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let labels = ["a", "b", "c"];
    let random_line = |next: &mut dyn FnMut(usize) -> usize| {
        let depth = 1 + next(3);
        let name: Vec<&str> = (0..depth).map(|_| labels[next(3)]).collect();
        let owner = format!(
            "{}{}.t",
            if next(3) == 0 { "*." } else { "" },
            name.join(".")
        );
        let rdata = ["CNAME .", "CNAME rpz-passthru.", "CNAME *."][next(3)];
        format!("{owner} {rdata}")
    };
    let mut live: Vec<String> = Vec::new();
    for _ in 0..12 {
        let l = random_line(&mut next);
        if !live.contains(&l) {
            live.push(l);
        }
    }
    let mut text = header("rpz.test");
    for l in &live {
        text.push_str(l);
        text.push('\n');
    }
    write(&files.source, &text);
    let soa = |serial| super::fold::Soa {
        serial,
        refresh: 60,
        retry: 10,
        expire: 600,
        minimum: 5,
    };
    files
        .save_meta(&ZoneMeta {
            zone: "rpz.test".into(),
            soa: soa(1),
            records: live.len() as u64,
            sha256: sha256_file(&files.source).unwrap(),
            primary: "192.0.2.1:53".into(),
            kind: "axfr".into(),
            signed: false,
            transferred_unix: 1,
            refreshed_unix: 1,
            next_line: live.len() as u64 + 2,
            file_serial: None,
            journal_lines: 0,
        })
        .unwrap();
    let disk = Arc::new(ZoneDisk::open(files.clone()));
    assert!(disk.meta().is_some());
    let (r, _) = Reloader::start(with_sources(dir.path())).unwrap();
    let hook_disk = disk.clone();
    r.before_full_reload(Box::new(move || {
        hook_disk.compact().unwrap();
    }));

    // What a full compile of the zone file with its journal says.
    let probes: Vec<String> = {
        let mut out = vec!["t".to_string()];
        let mut level = vec!["t".to_string()];
        for _ in 0..4 {
            level = level
                .iter()
                .flat_map(|p| ["a", "b", "c", "d"].map(|l| format!("{l}.{p}")))
                .collect();
            out.extend(level.iter().cloned());
        }
        out
    };
    let answers = |snap: &crate::list::Snapshot| -> Vec<String> {
        probes
            .iter()
            .map(|p| match snap.lookup(p.as_bytes()) {
                Some(m) => {
                    let v = snap.rule(m.rule);
                    format!("{p} {:?} {}:{} {}", m.action, v.list(), v.line(), v.text())
                }
                None => format!("{p} -"),
            })
            .collect()
    };
    let expected = |disk: &ZoneDisk| -> Vec<String> {
        let meta = disk.meta().unwrap();
        let entries = match meta.file_serial {
            Some(_) => journal::read(&files.journal).unwrap(),
            None => Vec::new(),
        };
        let mut zone = Vec::new();
        journal::rewrite(
            std::io::BufReader::new(fs::File::open(&files.source).unwrap()),
            &mut zone,
            &entries,
        )
        .unwrap();
        let opts = ListOptions::default();
        let lists = vec![
            parse::parse_file(&plain, &opts).unwrap(),
            parse::parse_bytes(&files.source, &zone, &opts),
        ];
        answers(&crate::list::compile(&lists).unwrap())
    };
    assert_eq!(answers(&r.current()), expected(&disk));

    let (mut layered, mut rewritten) = (0, 0);
    for step in 2..80u32 {
        let mut change = NetChange::default();
        for _ in 0..1 + next(3) {
            if !live.is_empty() && next(2) == 0 {
                let gone = live.remove(next(live.len()));
                // Added and removed in one IXFR: no change at all.
                match change.add.iter().position(|a| *a == gone) {
                    Some(i) => {
                        change.add.remove(i);
                    }
                    None => {
                        change.delete.insert(gone);
                    }
                }
            } else {
                let l = random_line(&mut next);
                if !live.contains(&l) && !change.delete.contains(&l) {
                    live.push(l.clone());
                    change.add.push(l);
                }
            }
        }
        let meta = disk.meta().unwrap();
        let first = meta.next_line;
        let new_meta = ZoneMeta {
            soa: soa(step),
            next_line: first + change.add.len() as u64,
            file_serial: Some(meta.file_serial.unwrap_or(meta.soa.serial)),
            journal_lines: meta.journal_lines + (change.add.len() + change.delete.len()) as u64,
            ..meta.clone()
        };
        match layer_change(&disk, &r, &change, step - 1, new_meta, first as u32).unwrap() {
            Some(report) => {
                assert!(report.incremental);
                layered += 1;
            }
            None => {
                // What the follower does then: fold, rewrite, reload.
                rewritten += 1;
                if disk.has_journal() {
                    fold_journal(&disk, &r).unwrap();
                }
                let entry = Delta {
                    from: step - 1,
                    to: step,
                    deleted: change.delete.iter().cloned().collect(),
                    added: change.add.clone(),
                };
                let old = std::io::BufReader::new(fs::File::open(&files.source).unwrap());
                let mut out = fs::File::create(&files.tmp).unwrap();
                let w = journal::rewrite(old, &mut out, &[entry]).unwrap();
                files.install_tmp().unwrap();
                r.reload_sources(false).unwrap();
                files.drop_prev();
                disk.set_meta(ZoneMeta {
                    soa: soa(step),
                    sha256: sha256_file(&files.source).unwrap(),
                    next_line: w.lines + 1,
                    file_serial: None,
                    journal_lines: 0,
                    ..meta
                })
                .unwrap();
            }
        }
        assert_eq!(answers(&r.current()), expected(&disk), "step {step}");
        match next(8) {
            0 if disk.has_journal() => {
                fold_journal(&disk, &r).unwrap();
                assert!(!disk.has_journal());
                assert_eq!(answers(&r.current()), expected(&disk), "folded {step}");
            }
            1 => {
                assert!(r.wait_merged(std::time::Duration::from_secs(10)));
                assert_eq!(answers(&r.current()), expected(&disk), "merged {step}");
            }
            2 => {
                // A full reload folds the journal in first (the hook the
                // follower registers), then reads every file.
                r.reload_sources_in_full(false).unwrap();
                assert!(!disk.has_journal());
                assert_eq!(answers(&r.current()), expected(&disk), "full {step}");
            }
            _ => {}
        }
    }
    assert!(layered > 40, "layered {layered}, rewritten {rewritten}");
}
