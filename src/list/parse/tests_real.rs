//! The real third-party files, copied byte for byte from
//! `../shared/data/real/` into `tests/data/real/` (see its SOURCES.md) so a
//! clean checkout has them. Every count below was computed once and checked by an
//! independent Python count (json/csv modules, `idna` with UTS-46, the
//! issue's URL rules), not just copied from this parser's output.

use std::path::{Path, PathBuf};

use super::{list_files, parse_bytes, parse_file};
use crate::list::{Action, Counts, Format, ListOptions, ParsedList, Rule, RuleMeta, Scope, Target};

fn real(rel: &str) -> PathBuf {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/real"));
    assert!(
        dir.is_dir(),
        "real-data fixtures missing: {} must exist (it is part of the repository)",
        dir.display()
    );
    dir.join(rel)
}

fn load(rel: &str) -> ParsedList {
    let path = real(rel);
    parse_file(&path, &ListOptions::default())
        .unwrap_or_else(|e| panic!("cannot read fixture: {e}"))
}

fn at(list: &ParsedList, line: u32) -> Vec<&Rule> {
    list.rules.iter().filter(|r| r.line == line).collect()
}

fn name(n: &str, scope: Scope) -> Target {
    Target::Name {
        name: n.into(),
        scope,
    }
}

fn has_name(list: &ParsedList, n: &str) -> bool {
    list.rules
        .iter()
        .any(|r| matches!(&r.target, Target::Name { name, .. } if name == n))
}

#[test]
fn hagezi_rpz() {
    let p = load("hagezi-fake.rpz.txt");
    // `.txt` extension: detected from content (`$TTL`).
    assert_eq!(p.format, Format::Rpz);
    assert_eq!(p.name, "hagezi-fake.rpz");
    assert_eq!(
        p.counts(),
        Counts {
            names: 10_001,
            wildcards: 10_001,
            ..Counts::default()
        }
    );
    assert!(p.skipped.is_empty(), "{:?}", p.skipped.first());
    assert!(p.rules.iter().all(|r| r.action == Action::Nxdomain));
    let exact = p
        .rules
        .iter()
        .filter(|r| {
            matches!(
                r.target,
                Target::Name {
                    scope: Scope::Exact,
                    ..
                }
            )
        })
        .count();
    assert_eq!(exact, 10_001);
    assert_eq!(at(&p, 15)[0].target, name("bitcoin360.ai", Scope::Exact));
    assert_eq!(
        at(&p, 16)[0].target,
        name("bitcoin360.ai", Scope::Subdomains)
    );
    let last = at(&p, 20_016);
    assert_eq!(
        last[0].target,
        name("worldwidemoving.co.za", Scope::Subdomains)
    );
}

#[test]
fn polkadot_json() {
    let p = load("polkadot-js-phishing-all.json");
    assert_eq!(p.format, Format::Json);
    // deny: 54,863 = 54,859 names + 4 bare IPv4; allow: 29; denySub: 2 URLs.
    assert_eq!(
        p.counts(),
        Counts {
            names: 54_859,
            allows: 29,
            urls: 2,
            ips: 4,
            ..Counts::default()
        }
    );
    assert_eq!(p.rules.len(), 54_894);
    assert!(p.skipped.is_empty(), "{:?}", p.skipped.first());

    let one = |line| {
        let rules = at(&p, line);
        assert_eq!(rules.len(), 1, "line {line}: {rules:?}");
        (rules[0].target.clone(), rules[0].action)
    };
    // Unicode U-labels, trailing dot, mixed case: normalised name rules.
    assert_eq!(
        one(399),
        (name("xn--aav-8la.com", Scope::Subtree), Action::Block)
    );
    assert_eq!(
        one(315),
        (name("xn--5re-jua.com", Scope::Subtree), Action::Block)
    );
    assert_eq!(one(88), (name("0xarb.xyz", Scope::Subtree), Action::Block));
    assert_eq!(
        one(24_406),
        (name("imxtoken.net", Scope::Subtree), Action::Block)
    );
    assert_eq!(
        one(114),
        (
            Target::Ip("104.168.169.107/32".parse().expect("net")),
            Action::Block
        )
    );
    assert_eq!(one(3), (name("fleek.co", Scope::Subdomains), Action::Allow));
    assert!(
        p.rules
            .iter()
            .any(|r| r.target == name("pages.dev", Scope::Subtree) && r.action.is_allow())
    );
    // denySub URL paths stay URLs; the hosts are never name rules.
    assert_eq!(
        one(54_899),
        (
            Target::Url("twitter.com/AcalaNetworks".into()),
            Action::Block
        )
    );
    assert_eq!(
        one(54_900),
        (Target::Url("x.com/AcalaNetworks".into()), Action::Block)
    );
    assert!(!has_name(&p, "twitter.com"));
    assert!(!has_name(&p, "x.com"));
}

#[test]
fn zapret_dump_2014_04_22() {
    let p = load("zapret-info-dump-2014-04-22.csv");
    assert_eq!(p.format, Format::Csv);
    // 2,150 rows: 880 root-URL rows → names (one is
    // `http://osnova21vek.biz/#/reagent/`: the fragment is dropped, browsers
    // never send it, so it names the host), 3 root-URL rows on a bare IP
    // → IP rules, the rest → 1,365 URL rules (one row holds 54 URLs).
    assert_eq!(
        p.counts(),
        Counts {
            names: 880,
            urls: 1_365,
            ips: 3,
            ..Counts::default()
        }
    );
    assert!(p.skipped.is_empty(), "{:?}", p.skipped.first());
    // Every rule carries the row's legal metadata.
    assert!(p.rules.iter().all(|r| r.meta().decision.is_some()
        && r.meta().authority.is_some()
        && r.meta().date.is_some()));

    let r = at(&p, 2045);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].target, name("xn--80affxdmh4i.com", Scope::Subtree));
    assert_eq!(
        *r[0].meta(),
        RuleMeta {
            decision: Some("2/1/11-15934".into()),
            authority: Some("ФСКН".into()),
            date: Some("2014-02-03".into()),
            ..RuleMeta::default()
        }
    );
    // Trailing spaces in the domain and URL.
    assert_eq!(at(&p, 904)[0].target, name("navalny.co.uk", Scope::Subtree));
    assert_eq!(
        at(&p, 904)[0].meta().authority.as_deref(),
        Some("Генпрокуратура")
    );
    // Page orders: URL rules only, the host is never blocked for them.
    let r = at(&p, 2);
    assert_eq!(r[0].target, Target::Url("http://0chan.hk/h/".into()));
    assert_eq!(r[0].meta().decision.as_deref(), Some("9843-URL-on"));
    assert_eq!(r[0].meta().authority.as_deref(), Some("Роскомнадзор"));
    assert!(!has_name(&p, "0chan.hk"));
    // A bare IP as the domain.
    assert_eq!(
        at(&p, 7)[0].target,
        Target::Ip("200.63.44.21/32".parse().expect("net"))
    );
    assert_eq!(
        at(&p, 2062)[0].target,
        Target::Url("https://94.102.63.77/h/res/68.html".into())
    );
    // Several URLs in one field: one URL rule each.
    let nnm = at(&p, 925);
    assert!(nnm.len() > 1);
    assert!(nnm.iter().all(
        |r| matches!(&r.target, Target::Url(u) if u.starts_with("http://nnm-club.me/forum/"))
    ));
}

#[test]
fn zapret_dump_2014_04_15() {
    let p = load("zapret-info-dump-2014-04-15.csv");
    assert_eq!(
        p.counts(),
        Counts {
            // As on 04-22, the fragment-only URL names its host.
            names: 905,
            urls: 1_350,
            ips: 3,
            ..Counts::default()
        }
    );
}

/// The hand edit seen upstream (branch `patch-2`): free text typed right
/// after the `Updated:` line costs that line only.
#[test]
fn zapret_dump_with_a_clerks_note() {
    let path = real("zapret-info-dump-2014-04-22.csv");
    let bytes = std::fs::read(&path).expect("fixture");
    let first_nl = bytes.iter().position(|&b| b == b'\n').expect("newline") + 1;
    let (note, _, _) =
        encoding_rs::WINDOWS_1251.encode("http://esl-bits.net/ - Добавьте пожалуйста в список.\n");
    let mut edited = bytes[..first_nl].to_vec();
    edited.extend_from_slice(&note);
    edited.extend_from_slice(&bytes[first_nl..]);
    let p = parse_bytes(&path, &edited, &ListOptions::default());
    assert_eq!(p.rules.len(), 2_248);
    assert_eq!(p.skipped.len(), 1);
    let msg = p.skip_messages().next().expect("one skip");
    assert!(
        msg.ends_with(
            "zapret-info-dump-2014-04-22.csv:2: expected 6 fields, found 1: \
             \"http://esl-bits.net/ - Добавьте пожалуйста в список.\""
        ),
        "{msg}"
    );
    // Every real row moved down one line.
    assert_eq!(
        at(&p, 2046)[0].target,
        name("xn--80affxdmh4i.com", Scope::Subtree)
    );
}

#[test]
fn scamsniffer_daily_files() {
    let files = list_files(&[real("scamsniffer-archive")]).expect("list");
    assert_eq!(files.len(), 31);
    assert!(files[0].ends_with("2026-07-16.json"));
    assert!(files[30].ends_with("2026-08-15.json"));
    let mut total = Counts::default();
    for f in &files {
        let p = parse_file(f, &ListOptions::default()).expect("read");
        assert_eq!(p.format, Format::Json, "{}", f.display());
        assert!(p.skipped.is_empty(), "{}: {:?}", f.display(), p.skipped);
        assert!(!p.rules.is_empty(), "{}", f.display());
        total = total + p.counts();
    }
    // 3,779 entries: 3,776 names and 3 bare IPv4 addresses.
    assert_eq!(
        total,
        Counts {
            names: 3_776,
            ips: 3,
            ..Counts::default()
        }
    );
    let first = parse_file(&files[0], &ListOptions::default()).expect("read");
    assert_eq!(
        first.rules[0].target,
        name("coincommunity-l8.netlify.app", Scope::Subtree)
    );
    assert_eq!(first.rules[0].line, 3);
}

#[test]
fn whole_directory_loads() {
    let files = list_files(&[real("")]).expect("list");
    // SOURCES.md is documentation and the archive is a sub-directory.
    let names: Vec<_> = files
        .iter()
        .filter_map(|f| f.file_name()?.to_str())
        .collect();
    assert_eq!(
        names,
        vec![
            "hagezi-fake.rpz.txt",
            "polkadot-js-phishing-all.json",
            "zapret-info-dump-2014-04-15.csv",
            "zapret-info-dump-2014-04-22.csv",
        ]
    );
}

#[test]
fn exact_only_and_action_on_a_real_list() {
    let path = real("polkadot-js-phishing-all.json");
    let p = parse_file(
        &path,
        &ListOptions {
            exact_only: true,
            action: Some(Action::Refused),
            name: Some("polkadot".into()),
            format: None,
        },
    )
    .expect("read");
    assert_eq!(p.name, "polkadot");
    assert!(!p.rules.iter().any(|r| matches!(
        r.target,
        Target::Name {
            scope: Scope::Subtree,
            ..
        }
    )));
    assert!(!p.rules.iter().any(|r| r.action == Action::Block));
    assert_eq!(
        p.rules
            .iter()
            .filter(|r| r.action == Action::Refused)
            .count(),
        54_865
    );
}
