//! Hot reload with real third-party data, through the library reloader
//! (`sinkhole::list::reload::Reloader`): the Roskomnadzor registry a week
//! apart, and 31 days of ScamSniffer additions pushed one file a day.
//!
//! The expected blocked sets are computed here from the raw fixture bytes
//! (cp1251 decoded with `encoding_rs`, JSON with `serde_json`, names
//! normalised as `blocklists/FORMAT.md` says), not taken from sinkhole's
//! parser, and compared with the enforced snapshot after every step: the
//! set of name rules, and a lookup of every name involved.
//!
//! Steps are applied with `reload(false)` so they are deterministic; one
//! step of each data set goes through the file watcher instead.

use std::collections::BTreeSet;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::gate;
use sinkhole::list::Scope;
use sinkhole::list::reload::{ReloadReport, ReloadSettings, Reloader, StartSource};
use sinkhole::policy::Action;

/// A real third-party fixture in tests/data/real.
fn real(rel: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/real")).join(rel)
}

/// Reloader settings for `paths`, with short debounce and settle times.
fn settings(paths: Vec<PathBuf>, state: &Path) -> ReloadSettings {
    ReloadSettings {
        paths,
        state_dir: Some(state.to_path_buf()),
        debounce: Duration::from_millis(50),
        settle: Duration::from_millis(20),
        ..ReloadSettings::default()
    }
}

/// Write beside and rename over, as a ministry push does (`*.tmp` files
/// are never read as lists).
fn push(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).expect("write temp list");
    fs::rename(&tmp, path).expect("rename list into place");
}

/// A list entry normalised as FORMAT.md says: trimmed, one trailing dot
/// off, lowercase, Unicode to punycode (UTS-46).
fn norm(raw: &str) -> String {
    let s = raw.trim();
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(s).unwrap_or_else(|e| panic!("fixture name {s:?}: {e:?}"))
    }
}

/// A bare IP address (an IP rule, not a name).
fn is_ip(s: &str) -> bool {
    s.trim().parse::<IpAddr>().is_ok()
}

/// The reference matcher: is `name` or one of its ancestors in `set`
/// (every rule in these lists is a subtree block)?
fn covered(set: &BTreeSet<String>, name: &str) -> bool {
    let mut rest = name;
    loop {
        if set.contains(rest) {
            return true;
        }
        match rest.split_once('.') {
            Some((_, parent)) => rest = parent,
            None => return false,
        }
    }
}

/// The name rules in force, as a set; every one must be a subtree block.
fn enforced_names(r: &Reloader) -> BTreeSet<String> {
    let snap = r.current();
    let mut out = BTreeSet::new();
    for (name, scope, id) in snap.name_rules() {
        assert_eq!(scope, Scope::Subtree, "{name}: unexpected scope");
        assert!(
            !snap.rule(id).action().is_allow(),
            "{name}: an allow rule in a block list"
        );
        out.insert(name);
    }
    out
}

/// Every name rule in force is exactly `want`, and every name in `probe`
/// (and a child of it) is blocked exactly when the reference says so.
fn assert_enforces(r: &Reloader, want: &BTreeSet<String>, probe: &BTreeSet<String>, step: &str) {
    let got = enforced_names(r);
    if got != *want {
        let missing: Vec<_> = want.difference(&got).take(10).collect();
        let extra: Vec<_> = got.difference(want).take(10).collect();
        panic!(
            "{step}: {} rules enforced, {} expected; missing {missing:?}, unexpected {extra:?}",
            got.len(),
            want.len()
        );
    }
    let snap = r.current();
    for name in probe {
        for q in [name.clone(), format!("www.{name}")] {
            let m = snap.lookup(q.as_bytes());
            let expect = covered(want, &q);
            assert_eq!(m.is_some(), expect, "{step}: lookup({q}) = {m:?}");
            if let Some(m) = m {
                assert_eq!(m.action, Action::Block, "{step}: {q}");
            }
        }
    }
}

/// Poll (bounded) until the watcher has put a version newer than `after`
/// in force whose name rules are `want`; the time it took.
fn wait_for_watcher(r: &Reloader, after: u64, want: &BTreeSet<String>, step: &str) -> Duration {
    let t0 = Instant::now();
    let limit = Duration::from_secs(15);
    loop {
        if r.current().version() > after && enforced_names(r) == *want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{step}: the watcher did not apply the change within {limit:?} (version {})",
            r.current().version()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------ Roskomnadzor

/// One registry dump as the test reads it.
struct Dump {
    /// Every value of the domain column (trimmed), whatever the row orders.
    domains: BTreeSet<String>,
    /// Normalised names sinkhole must block: the domain of a row with no
    /// URL or a root URL (`scheme://host[/]`), when it is not a bare IP.
    blocked: BTreeSet<String>,
    /// Domain-column values that are bare IP addresses (IP rules).
    ips: BTreeSet<String>,
}

/// `scheme://host[:port]` followed by nothing or `/`: an order for the whole
/// site. The fragment is dropped first (browsers never send it), so
/// `http://osnova21vek.biz/#/reagent/` names its whole host.
fn is_root_url(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    match rest.find(['/', '?', '#']) {
        None => true,
        Some(i) => &rest[i..] == "/",
    }
}

/// Read a registry dump as the reference (see [`Dump`]).
fn read_dump(file: &str) -> Dump {
    let bytes = fs::read(real(file)).expect("read registry fixture");
    // The dump is cp1251, not UTF-8.
    assert!(
        std::str::from_utf8(&bytes).is_err(),
        "{file} should be cp1251"
    );
    let (text, _, bad) = encoding_rs::WINDOWS_1251.decode(&bytes);
    assert!(!bad, "{file}: undecodable bytes");
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.starts_with("Updated: 2014-04-"), "{file}: {first:?}");
    let mut d = Dump {
        domains: BTreeSet::new(),
        blocked: BTreeSet::new(),
        ips: BTreeSet::new(),
    };
    for line in lines.filter(|l| !l.trim().is_empty()) {
        // IPs;domain;URL;authority;decision;date — no quoting in these files.
        let fields: Vec<&str> = line.split(';').collect();
        assert_eq!(fields.len(), 6, "{file}: {line:?}");
        let domain = fields[1].trim();
        assert!(!domain.is_empty(), "{file}: {line:?}");
        d.domains.insert(domain.to_string());
        let urls: Vec<&str> = fields[2]
            .split('|')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        if !(urls.is_empty() || urls.iter().any(|u| is_root_url(u))) {
            continue; // page orders only: URL rules, nothing at DNS level
        }
        if is_ip(domain) {
            d.ips.insert(domain.to_string());
        } else {
            d.blocked.insert(norm(domain));
        }
    }
    d
}

/// Reload now; the report, or a panic naming the step.
fn step_report(r: &Arc<Reloader>, step: &str) -> ReloadReport {
    r.reload(false)
        .unwrap_or_else(|e| panic!("{step}: reload refused: {e}"))
}

#[test]
fn roskomnadzor_registry_a_week_apart() {
    let _gate = gate::shared();
    let old = read_dump("zapret-info-dump-2014-04-15.csv");
    let new = read_dump("zapret-info-dump-2014-04-22.csv");

    // The numbers are by distinct value of the domain column.
    let dom_added: BTreeSet<String> = new.domains.difference(&old.domains).cloned().collect();
    let dom_removed: BTreeSet<String> = old.domains.difference(&new.domains).cloned().collect();
    assert_eq!((dom_added.len(), dom_removed.len()), (36, 38));

    // What DNS enforcement sees instead: only whole-site orders block.
    let added: BTreeSet<String> = new.blocked.difference(&old.blocked).cloned().collect();
    let removed: BTreeSet<String> = old.blocked.difference(&new.blocked).cloned().collect();
    assert_eq!((old.blocked.len(), new.blocked.len()), (818, 798));
    assert_eq!((old.ips.len(), new.ips.len()), (3, 3));
    assert_eq!((added.len(), removed.len()), (13, 33));
    // Why 36/38 become 13/33:
    //  - of the 36 new domains, 8 come with a whole-site order; 28 only
    //    with page orders (URLs with a path), which never block a host;
    //  - 5 domains already in the registry for page orders got a
    //    whole-site order this week (korenakim.com, uhhim.com, …);
    //  - of the 38 domains gone, 32 were blocked, 6 had page orders only;
    //  - segodel.com stays in the registry but only for a page: unblocked.
    //  - no bare-IP domain changed (those are IP rules either way).
    let new_and_blocked = dom_added.iter().filter(|d| new.blocked.contains(&norm(d)));
    assert_eq!(new_and_blocked.count(), 8);
    let gone_and_was_blocked = dom_removed
        .iter()
        .filter(|d| old.blocked.contains(&norm(d)));
    assert_eq!(gone_and_was_blocked.count(), 32);
    let upgraded: Vec<&String> = added
        .iter()
        .filter(|n| old.domains.iter().any(|d| norm(d) == **n))
        .collect();
    assert_eq!(
        upgraded,
        [
            "korenakim.com",
            "uhhim.com",
            "www.aromaticmix.com",
            "www.mirumix.com",
            "www.mixesshop.com"
        ]
    );
    let downgraded: Vec<&String> = removed
        .iter()
        .filter(|n| new.domains.iter().any(|d| norm(d) == **n))
        .collect();
    assert_eq!(downgraded, ["segodel.com"]);
    assert!(dom_added.iter().chain(&dom_removed).all(|d| !is_ip(d)));

    // Probe every name either week lists, blocked or not.
    let probe: BTreeSet<String> = old
        .domains
        .iter()
        .chain(&new.domains)
        .filter(|d| !is_ip(d))
        .map(|d| norm(d))
        .collect();

    let dir = tempfile::tempdir().expect("tempdir");
    let lists = dir.path().join("lists");
    fs::create_dir(&lists).expect("mkdir lists");
    let list = lists.join("registry.csv");
    push(
        &list,
        &fs::read(real("zapret-info-dump-2014-04-15.csv")).expect("fixture"),
    );
    let state = dir.path().join("state");
    let (r, src) = Reloader::start(settings(vec![list.clone()], &state)).expect("start");
    let StartSource::Lists(first) = src else {
        panic!("no state yet, the lists must be read: {src:?}");
    };
    assert_eq!(first.version, 1);
    // Rules as parsed, one per whole-site row: 905 rows name 818 distinct
    // domains (a domain with several orders has several rows).
    assert_eq!(first.counts.names, 905);
    assert_eq!(first.counts.ips, 3);
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    assert_enforces(&r, &old.blocked, &probe, "2014-04-15");

    // A week later: the new dump renamed over the old one.
    push(
        &list,
        &fs::read(real("zapret-info-dump-2014-04-22.csv")).expect("fixture"),
    );
    let rep = step_report(&r, "2014-04-22");
    assert_eq!(rep.version, 2);
    assert_eq!((rep.added, rep.removed), (13, 33), "{rep:?}");
    assert_eq!(rep.counts.names, 880);
    assert!(rep.skipped.is_empty(), "{:?}", rep.skipped);
    assert_enforces(&r, &new.blocked, &probe, "2014-04-22");

    let snap = r.current();
    let blocked = |n: &str| snap.lookup(n.as_bytes()).is_some();
    // Added: new whole-site orders, one of them on an IDN-looking label.
    for n in [
        "7ted.com",
        "forparty.net",
        "www.legalizer.info",
        "xn----ptbafbbfndir3h9b.fuckrkn.me",
        "korenakim.com",
        "m.uhhim.com",
    ] {
        assert!(blocked(n), "{n} must be blocked after 2014-04-22");
    }
    // Removed: gone from the registry, or down to a page order.
    for n in [
        "7-ka.org",
        "allrc.cc",
        "www.ru.legalizer.info",
        "zelomix.com",
        "segodel.com",
    ] {
        assert!(!blocked(n), "{n} must not be blocked after 2014-04-22");
    }
    // New in the registry but for pages only: the host stays resolvable.
    for n in ["azartreview.com", "www.imagefap.com", "rabotamoskva.com"] {
        assert!(!blocked(n), "{n}: a page order must not block the host");
    }
    // A page-only row for www.korenakim.com blocks nothing itself, but
    // the new whole-site order on korenakim.com covers it.
    assert!(blocked("www.korenakim.com"));
    // Unchanged across the week, with the trailing space and the U-label.
    assert!(blocked("navalny.co.uk") && blocked("www.navalny.co.uk"));
    assert!(blocked("xn--80affxdmh4i.com"), "легально.com");
    drop(snap);

    // And back to the older week, through the file watcher this time.
    let _watcher = r.watch().expect("watch");
    push(
        &list,
        &fs::read(real("zapret-info-dump-2014-04-15.csv")).expect("fixture"),
    );
    let took = wait_for_watcher(&r, 2, &old.blocked, "back to 2014-04-15");
    eprintln!("watcher applied the registry diff in {took:?}");
    assert_enforces(&r, &old.blocked, &probe, "back to 2014-04-15");
    assert_eq!(r.stats.rejected.load(Ordering::Relaxed), 0);

    // The accepted version was persisted as the last good one.
    let manifest = wait_saved(&r, &state);
    assert_eq!(manifest.counts.names, 905);
}

// -------------------------------------------------------------- ScamSniffer

/// The names one daily file adds (bare IPs skipped: they are IP rules).
fn day_names(path: &Path) -> (BTreeSet<String>, usize) {
    let text = fs::read_to_string(path).expect("read day file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("day file is JSON");
    let entries = v
        .get("domains")
        .and_then(|d| d.as_array())
        .unwrap_or_else(|| panic!("{}: no \"domains\" array", path.display()));
    let mut names = BTreeSet::new();
    let mut ips = 0;
    for e in entries {
        let s = e.as_str().expect("string entry");
        if is_ip(s) {
            ips += 1;
        } else {
            names.insert(norm(s));
        }
    }
    (names, ips)
}

#[test]
fn scamsniffer_daily_additions_in_date_order() {
    // Its watcher steps count every rejected reload; apart from the
    // machine-loading test, as the server tests are (it failed twice in
    // 5 full runs while reload_load ran beside it, never alone).
    let _gate = gate::shared();
    let mut days: Vec<PathBuf> = fs::read_dir(real("scamsniffer-archive"))
        .expect("archive dir")
        .map(|e| e.expect("dirent").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    days.sort();
    assert_eq!(days.len(), 31);
    let day_sets: Vec<(String, BTreeSet<String>)> = days
        .iter()
        .map(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).expect("file name");
            (name.to_string(), day_names(p).0)
        })
        .collect();
    let total_ips: usize = days.iter().map(|p| day_names(p).1).sum();
    assert_eq!(total_ips, 3);
    let everything: BTreeSet<String> = day_sets.iter().flat_map(|(_, s)| s.clone()).collect();
    assert_eq!(everything.len(), 3_212);

    let dir = tempfile::tempdir().expect("tempdir");
    let lists = dir.path().join("lists");
    fs::create_dir(&lists).expect("mkdir lists");
    let state = dir.path().join("state");
    let add_day = |i: usize| {
        let bytes = fs::read(&days[i]).expect("fixture");
        push(&lists.join(&day_sets[i].0), &bytes);
    };

    add_day(0);
    let (r, src) = Reloader::start(settings(vec![lists.clone()], &state)).expect("start");
    assert!(matches!(src, StartSource::Lists(_)), "{src:?}");
    let mut union = day_sets[0].1.clone();
    assert_enforces(&r, &union, &everything, &day_sets[0].0);

    // Days 2..=28 directly, the last three through the watcher.
    let direct = 28;
    for (i, (day, names)) in day_sets.iter().enumerate().take(direct).skip(1) {
        add_day(i);
        let rep = step_report(&r, day);
        let new: usize = names.difference(&union).count();
        union.extend(names.iter().cloned());
        assert_eq!(rep.version, i as u64 + 1, "{day}");
        assert_eq!((rep.added, rep.removed), (new, 0), "{day}: {rep:?}");
        assert!(rep.skipped.is_empty(), "{day}: {:?}", rep.skipped);
        assert_enforces(&r, &union, &everything, day);
    }

    assert_eq!(r.stats.rejected.load(Ordering::Relaxed), 0);

    // The guards were armed all along: losing all but the latest day's
    // file shrinks the rules by more than half and is refused.
    let version = r.current().version();
    for (day, _) in &day_sets[..direct - 1] {
        fs::remove_file(lists.join(day)).expect("remove day file");
    }
    let err = r.reload(false).expect_err("a >50% shrink must be refused");
    assert_eq!(err.reason(), "shrink", "{err}");
    assert_eq!(r.current().version(), version);
    assert_enforces(&r, &union, &everything, "after the refused shrink");
    // The files back: the same rules, nothing added or removed.
    for i in 0..direct - 1 {
        add_day(i);
    }
    let rep = step_report(&r, "files restored");
    assert_eq!((rep.added, rep.removed), (0, 0), "{rep:?}");
    assert_enforces(&r, &union, &everything, "files restored");

    let _watcher = r.watch().expect("watch");
    for (i, (day, names)) in day_sets.iter().enumerate().skip(direct) {
        let before = r.current().version();
        add_day(i);
        union.extend(names.iter().cloned());
        let took = wait_for_watcher(&r, before, &union, day);
        eprintln!("{day}: watcher applied it in {took:?}");
        assert_enforces(&r, &union, &everything, day);
    }
    assert_eq!(union, everything);
    assert_eq!(
        r.stats.rejected.load(Ordering::Relaxed),
        1,
        "only the deliberate shrink may be refused: {:?}",
        r.stats.failures_by_reason
    );
    wait_saved(&r, &state);
}

/// The version in force, once it is saved as the last good one: a reload
/// swaps first and saves after (a layer is saved when its merge is done),
/// so on a busy machine the save can trail the enforcement it follows.
fn wait_saved(
    r: &sinkhole::list::reload::Reloader,
    state: &Path,
) -> sinkhole::list::reload::Manifest {
    let t0 = std::time::Instant::now();
    loop {
        let want = r.current().version();
        match sinkhole::list::reload::open_last_good(state) {
            Ok((saved, manifest)) if saved.version() == want => return manifest,
            Ok((saved, _)) if t0.elapsed() > std::time::Duration::from_secs(60) => {
                panic!(
                    "version {want} in force, {} saved after 60 s",
                    saved.version()
                )
            }
            Err(e) if t0.elapsed() > std::time::Duration::from_secs(60) => {
                panic!("no last good snapshot after 60 s: {e}")
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}
