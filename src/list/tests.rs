//! Matcher tables and properties, each run against the compiled snapshot and
//! the naive reference matcher.

use std::net::IpAddr;
use std::path::PathBuf;

use proptest::prelude::*;

use super::reference::{RefHit, ReferenceMatcher};
use super::*;

fn name_rule(name: &str, scope: Scope, action: Action, line: u32) -> Rule {
    Rule {
        target: Target::Name {
            name: name.to_string(),
            scope,
        },
        action,
        local_data: Vec::new(),
        line,
        meta: None,
    }
}

/// An `address` rule with its own addresses (RPZ local data).
fn local_rule(name: &str, scope: Scope, addrs: Vec<IpAddr>, line: u32) -> Rule {
    Rule {
        local_data: addrs,
        ..name_rule(name, scope, Action::Address, line)
    }
}

fn list(name: &str, rules: Vec<Rule>) -> ParsedList {
    ParsedList {
        name: name.to_string(),
        path: PathBuf::from(format!("/lists/{name}.txt")),
        format: Format::Plain,
        rules,
        skipped: vec![],
    }
}

/// The two matchers agree on `name`; returns the shared answer.
fn both(lists: &[ParsedList], snap: &Snapshot, name: &str) -> Option<RefHit> {
    let reference = ReferenceMatcher::new(lists).lookup(name).cloned();
    let got = snap.lookup(name.as_bytes()).map(|m| {
        let v = snap.rule(m.rule);
        let file_index = lists
            .iter()
            .position(|l| l.path.display().to_string() == v.file())
            .expect("file of a matched rule");
        RefHit {
            file_index,
            line: v.line(),
            action: v.action(),
        }
    });
    assert_eq!(
        got, reference,
        "snapshot and reference disagree on {name:?}"
    );
    got
}

fn sample() -> Vec<ParsedList> {
    use Action::*;
    use Scope::*;
    let block = list(
        "gov",
        vec![
            name_rule("example.com", Subtree, Block, 1),
            name_rule("exact.org", Exact, Nxdomain, 2),
            name_rule("wild.net", Subdomains, Nodata, 3),
            name_rule("scam.pages.dev", Subtree, Block, 4),
            name_rule("bad.allowed.example.com", Subtree, Drop, 5),
            local_rule(
                "local.test",
                Exact,
                vec!["192.0.2.7".parse::<IpAddr>().unwrap()],
                6,
            ),
            Rule {
                target: Target::Keyword("binance".into()),
                action: Block,
                local_data: Vec::new(),
                line: 7,
                meta: None,
            },
            name_rule("dup.com", Subtree, Block, 8),
            name_rule("both.com", Subtree, Block, 9),
            name_rule("both.com", Exact, Nxdomain, 10),
        ],
    );
    let allow = list(
        "allow",
        vec![
            name_rule("pages.dev", Subtree, Allow, 1),
            name_rule("allowed.example.com", Subtree, Allow, 2),
            name_rule("dup.com", Subtree, Allow, 3),
            name_rule("www.binance.com", Exact, Allow, 4),
        ],
    );
    vec![block, allow]
}

#[test]
fn table_against_reference() {
    let lists = sample();
    let snap = compile(&lists).expect("compile");
    // (name, expected action, expected list index, line); None = no match.
    type Expected<'a> = Option<(&'a str, usize, u32)>;
    let table: &[(&str, Expected)] = &[
        ("example.com", Some(("block", 0, 1))),
        ("EXAMPLE.com.", Some(("block", 0, 1))),
        ("www.example.com", Some(("block", 0, 1))),
        ("a.b.c.example.com", Some(("block", 0, 1))),
        ("xexample.com", None),
        ("com", None),
        ("", None),
        (".", None),
        ("exact.org", Some(("nxdomain", 0, 2))),
        ("www.exact.org", None),
        ("wild.net", None),
        ("a.wild.net", Some(("nodata", 0, 3))),
        ("a.b.wild.net", Some(("nodata", 0, 3))),
        ("pages.dev", Some(("allow", 1, 1))),
        ("other.pages.dev", Some(("allow", 1, 1))),
        ("scam.pages.dev", Some(("block", 0, 4))),
        ("www.scam.pages.dev", Some(("block", 0, 4))),
        ("allowed.example.com", Some(("allow", 1, 2))),
        ("x.allowed.example.com", Some(("allow", 1, 2))),
        ("bad.allowed.example.com", Some(("drop", 0, 5))),
        ("local.test", Some(("address", 0, 6))),
        ("www.local.test", None),
        ("binance.org", Some(("block", 0, 7))),
        ("my-binance-login.io", Some(("block", 0, 7))),
        ("www.binance.com", Some(("allow", 1, 4))),
        ("bin.ance.com", None),
        ("dup.com", Some(("allow", 1, 3))),
        ("both.com", Some(("nxdomain", 0, 10))),
        ("www.both.com", Some(("block", 0, 9))),
    ];
    for (name, want) in table {
        let got = both(&lists, &snap, name);
        let got = got.map(|h| (h.action.as_str(), h.file_index, h.line));
        assert_eq!(got, *want, "lookup {name:?}");
    }
}

#[test]
fn provenance_and_metadata() {
    let mut lists = sample();
    lists[0].rules.push(Rule {
        target: Target::Name {
            name: "ordered.kz".into(),
            scope: Scope::Subtree,
        },
        action: Action::Block,
        local_data: Vec::new(),
        line: 42,
        meta: Some(Box::new(RuleMeta {
            decision: Some("2025/17".into()),
            authority: Some("AFM".into()),
            date: Some("2025-01-02".into()),
            category: Some("crypto".into()),
            entry: Some("101".into()),
            included: Some("2026-11-30T12:00:00".into()),
        })),
    });
    // A rule with its own addresses and an entry: the two share its row.
    lists[0].rules.push(Rule {
        target: Target::Name {
            name: "entry-local.test".into(),
            scope: Scope::Exact,
        },
        action: Action::Address,
        local_data: vec!["192.0.2.9".parse().unwrap()],
        line: 43,
        meta: Some(Box::new(RuleMeta {
            entry: Some("102".into()),
            ..RuleMeta::default()
        })),
    });
    let snap = compile(&lists).expect("compile");
    let m = snap.lookup(b"www.ordered.kz").expect("blocked");
    let v = snap.rule(m.rule);
    assert_eq!(v.text(), "ordered.kz");
    assert_eq!(v.list(), "gov");
    assert_eq!(v.file(), "/lists/gov.txt");
    assert_eq!(v.line(), 42);
    assert_eq!(v.decision(), Some("2025/17"));
    assert_eq!(v.authority(), Some("AFM"));
    assert_eq!(v.date(), Some("2025-01-02"));
    assert_eq!(v.category(), Some("crypto"));
    assert_eq!(v.entry(), Some("101"));
    assert_eq!(v.included(), Some("2026-11-30T12:00:00"));
    assert_eq!(
        Some(Box::new(v.meta())),
        lists[0].rules[lists[0].rules.len() - 2].meta
    );
    let own = snap.rule(snap.lookup(b"entry-local.test").expect("own").rule);
    assert_eq!(
        (own.entry(), own.decision(), own.included()),
        (Some("102"), None, None)
    );
    assert_eq!(
        own.addresses(),
        vec!["192.0.2.9".parse::<IpAddr>().unwrap()]
    );
    let w = snap.rule(snap.lookup(b"a.wild.net").expect("wild").rule);
    assert_eq!(w.text(), "*.wild.net");
    assert_eq!((w.decision(), w.entry(), w.included()), (None, None, None));
    let e = snap.rule(snap.lookup(b"exact.org").expect("exact").rule);
    assert_eq!(e.text(), "=exact.org");
    let l = snap.lookup(b"local.test").expect("local");
    assert_eq!(l.action, Action::Address);
    assert_eq!(
        snap.rule(l.rule).addresses(),
        vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
    );
    let k = snap.rule(snap.lookup(b"binance.org").expect("kw").rule);
    assert_eq!(k.text(), "keyword:binance");
}

#[test]
fn save_open_roundtrip_and_corruption() {
    let lists = sample();
    let snap = compile_versioned(&lists, 7).expect("compile");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snap.bin");
    snap.save(&path).expect("save");
    let opened = Snapshot::open(&path).expect("open");
    assert_eq!(opened.version(), 7);
    assert_eq!(opened.bytes(), snap.bytes());
    for name in [
        "www.example.com",
        "a.wild.net",
        "binance.org",
        "nothing.example",
    ] {
        assert_eq!(opened.lookup(name.as_bytes()), snap.lookup(name.as_bytes()));
    }
    // One flipped byte in the body: checksum error, not a panic.
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    assert!(matches!(
        Snapshot::open(&path),
        Err(SnapshotError::Checksum { .. })
    ));
    // Truncations anywhere: an error, never a panic.
    for cut in [0, 7, 20, snapshot::HEADER_LEN, bytes.len() / 2] {
        std::fs::write(&path, &bytes[..cut]).expect("write");
        assert!(Snapshot::open(&path).is_err(), "cut at {cut}");
    }
}

#[test]
fn empty_snapshot_matches_nothing() {
    let snap = compile(&[]).expect("compile");
    assert_eq!(snap.lookup(b"example.com"), None);
    assert_eq!(snap.rule_count(), 0);
}

fn arb_label() -> impl Strategy<Value = String> {
    prop_oneof![
        // A tiny alphabet so random names collide with rules often.
        "[ab]{1,2}",
        "[a-z0-9]{1,6}",
    ]
}

fn arb_name() -> impl Strategy<Value = String> {
    prop::collection::vec(arb_label(), 1..5).prop_map(|l| l.join("."))
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    (
        arb_name(),
        prop_oneof![
            Just(Scope::Exact),
            Just(Scope::Subtree),
            Just(Scope::Subdomains)
        ],
        prop_oneof![
            Just(Action::Block),
            Just(Action::Allow),
            Just(Action::Nxdomain),
            Just(Action::Drop)
        ],
        1u32..10_000,
    )
        .prop_map(|(n, s, a, line)| name_rule(&n, s, a, line))
}

proptest! {
    #[test]
    fn snapshot_agrees_with_reference(
        a in prop::collection::vec(arb_rule(), 0..40),
        b in prop::collection::vec(arb_rule(), 0..20),
        queries in prop::collection::vec(arb_name(), 1..40),
    ) {
        let lists = vec![list("a", a), list("b", b)];
        let snap = compile(&lists).expect("compile");
        for q in &queries {
            both(&lists, &snap, q);
            both(&lists, &snap, &q.to_ascii_uppercase());
            // The hit log's rule text from the matched labels is the text
            // read back from the fst.
            for asked in [q.clone(), q.to_ascii_uppercase(), format!("{q}.")] {
                if let Some(m) = snap.lookup(asked.as_bytes()) {
                    let view = snap.rule(m.rule);
                    prop_assert!(m.key.is_some());
                    prop_assert_eq!(view.text_matched(asked.as_bytes(), m.key), view.text());
                }
            }
        }
    }

    #[test]
    fn open_never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.bin");
        std::fs::write(&path, &bytes).expect("write");
        let _ = Snapshot::open(&path);
    }
}

#[test]
fn line_numbers_beyond_the_row_format_are_an_error() {
    let big = list(
        "big",
        vec![name_rule(
            "x.example",
            Scope::Subtree,
            Action::Block,
            1 << 27,
        )],
    );
    assert!(matches!(
        compile(&[big]),
        Err(CompileError::LineTooLarge { .. })
    ));
    let ok = list(
        "ok",
        vec![name_rule(
            "x.example",
            Scope::Subtree,
            Action::Block,
            (1 << 27) - 1,
        )],
    );
    let snap = compile(&[ok]).expect("compile");
    let m = snap.lookup(b"x.example").expect("hit");
    assert_eq!(snap.rule(m.rule).line(), (1 << 27) - 1);
    assert_eq!(snap.rule(m.rule).scope(), Some(Scope::Subtree));
}

/// The hit log's rule text comes from the asked name and how the rule
/// matched it, not from the fst: proven by a name the fst does not hold.
#[test]
fn text_matched_is_built_from_the_name_not_the_fst() {
    let snap = compile(&sample()).expect("compile");
    let m = snap.lookup(b"WWW.Example.COM.").expect("hit");
    let key = m.key.expect("a name rule");
    assert_eq!((key.labels, key.scope), (2, Scope::Subtree));
    let view = snap.rule(m.rule);
    assert_eq!(view.text_matched(b"WWW.Example.COM.", m.key), "example.com");
    assert_eq!(view.text_matched(b"a.other.org", m.key), "other.org");
    let exact = MatchedKey {
        labels: 1,
        scope: Scope::Exact,
    };
    assert_eq!(view.text_matched(b"x.org", Some(exact)), "=org");
    // Too few labels or no key: the rule's own text.
    assert_eq!(view.text_matched(b"com", m.key), "example.com");
    assert_eq!(view.text_matched(b"x.org", None), "example.com");
    let kw = snap.lookup(b"my-binance.net").expect("keyword hit");
    assert_eq!(kw.key, None);
    assert_eq!(
        snap.rule(kw.rule).text_matched(b"my-binance.net", kw.key),
        "keyword:binance"
    );
}
