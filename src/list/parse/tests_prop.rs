//! Property tests: no input makes a parser panic, and lists of valid
//! names round-trip through every format.

use std::path::Path;

use proptest::prelude::*;

use super::parse_bytes;
use crate::list::name::validate;
use crate::list::{Format, ListOptions, ParsedList, Scope, Target};
use crate::policy::Action;

const FORMATS: [Format; 7] = [
    Format::Plain,
    Format::Hosts,
    Format::Adblock,
    Format::Rpz,
    Format::Csv,
    Format::Json,
    Format::Dump,
];

fn forced(format: Format) -> ListOptions {
    ListOptions {
        format: Some(format),
        ..ListOptions::default()
    }
}

/// What must hold for any output, whatever the input.
fn check_invariants(bytes: &[u8], p: &ParsedList) {
    let lines =
        u32::try_from(bytes.iter().filter(|&&b| b == b'\n').count() + 1).unwrap_or(u32::MAX);
    for r in &p.rules {
        assert!(
            r.line >= 1 && r.line <= lines,
            "rule line {} of {lines}",
            r.line
        );
        match &r.target {
            Target::Name { name, .. } => {
                assert!(validate(name).is_ok(), "invalid name rule {name:?}")
            }
            Target::Keyword(k) => assert!(k.len() >= 3 && !k.contains('.'), "keyword {k:?}"),
            _ => {}
        }
    }
    for s in &p.skipped {
        assert!(
            s.line >= 1 && s.line <= lines,
            "skip line {} of {lines}",
            s.line
        );
        assert!(!s.reason.is_empty());
    }
}

/// Fragments that steer random input into every parser's corners.
fn syntax_soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop::sample::select(vec![
        "\n",
        "\r\n",
        " ",
        "\t",
        "\"",
        "\"\"",
        ";",
        ",",
        "(",
        ")",
        "\\",
        "\\u",
        "\\ud800",
        "{",
        "}",
        "[",
        "]",
        ":",
        "||",
        "@@",
        "^",
        "$important",
        "$",
        "*.",
        "*",
        "@",
        ".",
        "..",
        "#",
        "##",
        "!",
        "/",
        "://",
        "http://",
        "keyword:",
        "CNAME",
        "A",
        "AAAA",
        "IN",
        "300",
        "SOA",
        "NS",
        "$ORIGIN",
        "$TTL",
        "$INCLUDE",
        "rpz-ip",
        "rpz-passthru.",
        "0.0.0.0",
        "::1",
        "192.0.2.1",
        "10.0.0.0/8",
        "example",
        "com",
        "xn--",
        "aavè",
        "ı",
        "я",
        "Updated:",
        "domain",
        "url",
        "deny",
        "allow",
        "domains",
        "true",
        "null",
        "-1e5",
        "\u{feff}",
        "\u{0}",
        "\u{fffd}",
        // Registry dump (dump.xml) syntax.
        "<?xml version=\"1.0\" encoding=\"windows-1251\"?>",
        "<?xml version=\"1.0\" encoding=\"UTF-16\"?>",
        "<reg:register xmlns:reg=\"http://rsoc.ru\">",
        "</reg:register>",
        "<content id=\"1\" blockType=\"domain\">",
        "<content blockType=\"domain-mask\">",
        "<content blockType=\"ip\">",
        "<content>",
        "</content>",
        "<decision date=\"2026-01-01\" number=\"1\" org=\"x &amp; y\"/>",
        "<url>",
        "</url>",
        "<domain>",
        "</domain>",
        "<ip>",
        "</ip>",
        "<ipSubnet>",
        "<delete id=\"1\"/>",
        "<![CDATA[",
        "]]>",
        "&amp;",
        "&#1103;",
        "&bogus;",
        "<!DOCTYPE x [<!ENTITY a \"b\">]>",
        "<!-- c -->",
        "=\"",
    ]);
    prop::collection::vec(piece, 0..64).prop_map(|v| v.concat().into_bytes())
}

fn format() -> impl Strategy<Value = Format> {
    prop::sample::select(FORMATS.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048), format in format()) {
        let p = parse_bytes(Path::new("fuzz"), &bytes, &forced(format));
        check_invariants(&bytes, &p);
    }

    #[test]
    fn never_panics_on_syntax_soup(bytes in syntax_soup(), format in format()) {
        let p = parse_bytes(Path::new("fuzz"), &bytes, &forced(format));
        check_invariants(&bytes, &p);
        // Detection too, with and without a telling extension.
        let _ = parse_bytes(Path::new("fuzz.txt"), &bytes, &ListOptions::default());
    }
}

/// A valid name as written in a list (random case, maybe a trailing dot)
/// and its normal form.
fn written_name() -> impl Strategy<Value = (String, String)> {
    let label = "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?";
    (
        prop::collection::vec(label, 1..4),
        "[a-z]{2,6}",
        prop::collection::vec(any::<bool>(), 64),
        any::<bool>(),
    )
        .prop_map(|(labels, tld, upper, dot)| {
            let normal = format!("{}.{tld}", labels.join("."));
            let mut written: String = normal
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c })
                .collect();
            if dot {
                written.push('.');
            }
            (written, normal)
        })
}

fn names(p: &ParsedList) -> Vec<(u32, String, Scope)> {
    p.rules
        .iter()
        .map(|r| {
            assert_eq!(r.action, Action::Block);
            match &r.target {
                Target::Name { name, scope } => (r.line, name.clone(), *scope),
                other => panic!("not a name rule: {other:?}"),
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_names_round_trip(list in prop::collection::vec(written_name(), 0..40)) {
        let written: Vec<&str> = list.iter().map(|(w, _)| w.as_str()).collect();
        let expect = |first_line: u32, scope| -> Vec<(u32, String, Scope)> {
            list.iter()
                .enumerate()
                .map(|(i, (_, n))| (first_line + i as u32, n.clone(), scope))
                .collect()
        };

        let plain = written.join("\n");
        let p = parse_bytes(Path::new("l"), plain.as_bytes(), &forced(Format::Plain));
        prop_assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        prop_assert_eq!(names(&p), expect(1, Scope::Subtree));

        let hosts: String = written.iter().map(|n| format!("0.0.0.0\t{n}\n")).collect();
        let p = parse_bytes(Path::new("l"), hosts.as_bytes(), &forced(Format::Hosts));
        prop_assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        prop_assert_eq!(names(&p), expect(1, Scope::Subtree));

        // All names of a hosts file on one line.
        let one_line = format!("127.0.0.1 {}", written.join(" "));
        let p = parse_bytes(Path::new("l"), one_line.as_bytes(), &forced(Format::Hosts));
        let on_line_one: Vec<String> = names(&p).into_iter().map(|(l, n, _)| { assert_eq!(l, 1); n }).collect();
        let normal: Vec<String> = list.iter().map(|(_, n)| n.clone()).collect();
        prop_assert_eq!(on_line_one, normal);

        let quoted: Vec<String> = written.iter().map(|n| format!("    \"{n}\"")).collect();
        let json = format!("{{\n  \"deny\": [\n{}\n  ]\n}}\n", quoted.join(",\n"));
        let p = parse_bytes(Path::new("l"), json.as_bytes(), &forced(Format::Json));
        prop_assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        prop_assert_eq!(names(&p), expect(3, Scope::Subtree));

        let bare = format!("[{}]", written.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(","));
        let p = parse_bytes(Path::new("l"), bare.as_bytes(), &forced(Format::Json));
        let in_array: Vec<String> = names(&p).into_iter().map(|(_, n, _)| n).collect();
        prop_assert_eq!(in_array, list.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>());

        let csv = format!("Domain;Decision\n{}", written.iter().map(|n| format!("{n};1\n")).collect::<String>());
        let p = parse_bytes(Path::new("l"), csv.as_bytes(), &forced(Format::Csv));
        prop_assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        prop_assert_eq!(names(&p), expect(2, Scope::Subtree));

        let contents: String = written
            .iter()
            .map(|n| format!("<content id=\"1\" blockType=\"domain\">\n<domain><![CDATA[{n}]]></domain>\n</content>\n"))
            .collect();
        let dump = format!("<?xml version=\"1.0\" encoding=\"windows-1251\"?>\n<reg:register>\n{contents}</reg:register>\n");
        let p = parse_bytes(Path::new("l"), dump.as_bytes(), &forced(Format::Dump));
        prop_assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        let want: Vec<_> = expect(3, Scope::Exact)
            .into_iter()
            .enumerate()
            .map(|(i, (_, n, s))| (3 + 3 * i as u32, n, s))
            .collect();
        prop_assert_eq!(names(&p), want);

        let rpz: String = written.iter().map(|n| format!("{n} CNAME .\n")).collect();
        let p = parse_bytes(Path::new("l"), rpz.as_bytes(), &forced(Format::Rpz));
        prop_assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        let got: Vec<_> = p.rules.iter().map(|r| (r.line, r.target.clone(), r.action)).collect();
        let want: Vec<_> = expect(1, Scope::Exact)
            .into_iter()
            .map(|(l, name, scope)| (l, Target::Name { name, scope }, Action::Nxdomain))
            .collect();
        prop_assert_eq!(got, want);
    }
}

/// A large list keeps every line and its line number. Parse speed is
/// measured by the benchmarks (`cargo bench --bench matcher`), not timed here.
#[test]
fn a_large_list_keeps_every_line() {
    let n = 50_000;
    let text: String = (0..n)
        .map(|i| format!("host-{i}.example{}.com\n", i % 97))
        .collect();
    let p = parse_bytes(Path::new("big"), text.as_bytes(), &forced(Format::Plain));
    assert_eq!(p.rules.len(), n);
    assert!(
        p.rules
            .iter()
            .enumerate()
            .all(|(i, r)| r.line == i as u32 + 1)
    );
}
