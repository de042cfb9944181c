use std::path::Path;

use super::*;
use crate::list::{Format, ListOptions, ParsedList};

/// A hand-made registry dump, one `<content>` per blockType and the
/// corners real dumps have. Line numbers matter: rules report the line of
/// their `<content>` tag.
const DUMP: &str = r#"<?xml version="1.0" encoding="windows-1251"?>
<reg:register xmlns:reg="http://rsoc.ru" updateTime="2026-12-01T10:00:00+03:00" updateTimeUrgently="2026-12-01T09:00:00+03:00" formatVersion="2.4">
<content id="101" includeTime="2026-11-30T12:00:00" entryType="1" hash="A1">
<decision date="2026-11-29" number="27-31-2026/Ид1-26" org="Роскомнадзор"/>
<url><![CDATA[http://page.example/offer?id=1&x=2]]></url>
<url ts="2026-11-30T12:00:00+03:00"><![CDATA[https://secure.example/login]]></url>
<domain><![CDATA[page.example]]></domain>
<ip>192.0.2.10</ip>
</content>
<content id="102" includeTime="2026-11-30T12:00:01" entryType="1" blockType="default" hash="A2">
<decision date="2026-11-28" number="2-6-27/2026" org="суд"/>
<domain><![CDATA[NoUrl.Example]]></domain>
<ip>192.0.2.11</ip>
</content>
<content id="103" includeTime="2026-11-30T12:00:02" entryType="1" blockType="domain" hash="A3">
<decision date="2026-11-27" number="3" org="Генпрокуратура"/>
<url><![CDATA[http://exact.example/path]]></url>
<domain><![CDATA[exact.example]]></domain>
</content>
<content id="104" includeTime="2026-11-30T12:00:03" entryType="1" blockType="domain-mask" hash="A4">
<decision date="2026-11-26" number="4" org="ФНС"/>
<domain><![CDATA[*.mask.example]]></domain>
</content>
<content id="105" includeTime="2026-11-30T12:00:04" entryType="1" blockType="ip" hash="A5">
<decision date="2026-11-25" number="5" org="МВД &amp; суд"/>
<ip>198.51.100.7</ip>
<ipv6>2001:db8::7</ipv6>
<ipSubnet>203.0.113.9/24</ipSubnet>
<ipv6Subnet>2001:db8:1::/48</ipv6Subnet>
<domain>ip-row.example</domain>
</content>
<content id="106" includeTime="2026-11-30T12:00:05" entryType="1" hash="A6">
<decision date="2026-11-24" number="6" org="Роскомнадзор"/>
<url><![CDATA[http://root.example/]]></url>
<url><![CDATA[https://легально.example/страница]]></url>
</content>
<content id="107" includeTime="2026-11-30T12:00:06" entryType="1" blockType="domain" hash="A7">
<decision date="2026-11-23" number="7" org="Роскомнадзор"/>
<domain><![CDATA[легально.example]]></domain>
</content>
</reg:register>
"#;

fn cp1251(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1251.encode(text);
    assert!(!unmappable, "fixture has characters windows-1251 lacks");
    bytes.into_owned()
}

fn run(bytes: &[u8]) -> ParsedList {
    super::super::parse_bytes(
        Path::new("dump.xml"),
        bytes,
        &ListOptions {
            format: Some(Format::Dump),
            ..ListOptions::default()
        },
    )
}

fn exact(name: &str) -> Target {
    Target::Name {
        name: name.into(),
        scope: Scope::Exact,
    }
}

fn url(u: &str) -> Target {
    Target::Url(u.into())
}

fn net(s: &str) -> Target {
    Target::Ip(s.parse().expect("network"))
}

/// The provenance of a `<content id includeTime>` with `<decision number
/// org date>`.
fn meta((id, included): (&str, &str), number: &str, org: &str, date: &str) -> RuleMeta {
    RuleMeta {
        decision: Some(number.into()),
        authority: Some(org.into()),
        date: Some(date.into()),
        category: None,
        entry: Some(id.into()),
        included: Some(included.into()),
    }
}

fn rules(p: &ParsedList) -> Vec<(u32, Target, RuleMeta)> {
    p.rules
        .iter()
        .map(|r| {
            assert_eq!(r.action, Action::Block);
            (r.line, r.target.clone(), r.meta().clone())
        })
        .collect()
}

fn expected_rules() -> Vec<(u32, Target, RuleMeta)> {
    let m101 = meta(
        ("101", "2026-11-30T12:00:00"),
        "27-31-2026/Ид1-26",
        "Роскомнадзор",
        "2026-11-29",
    );
    let m106 = meta(
        ("106", "2026-11-30T12:00:05"),
        "6",
        "Роскомнадзор",
        "2026-11-24",
    );
    vec![
        // default: one URL rule per <url>, https kept as a URL rule; the
        // domain and the IPs of a URL row are not rules.
        (3, url("http://page.example/offer?id=1&x=2"), m101.clone()),
        (3, url("https://secure.example/login"), m101),
        // default without a URL: the domain, exactly.
        (
            10,
            exact("nourl.example"),
            meta(
                ("102", "2026-11-30T12:00:01"),
                "2-6-27/2026",
                "суд",
                "2026-11-28",
            ),
        ),
        // domain: the host, exactly; its URLs add nothing.
        (
            15,
            exact("exact.example"),
            meta(
                ("103", "2026-11-30T12:00:02"),
                "3",
                "Генпрокуратура",
                "2026-11-27",
            ),
        ),
        // domain-mask: `*.name`, the names below it.
        (
            20,
            Target::Name {
                name: "mask.example".into(),
                scope: Scope::Subdomains,
            },
            meta(("104", "2026-11-30T12:00:03"), "4", "ФНС", "2026-11-26"),
        ),
        // ip: every address and subnet (host bits cleared), not the domain.
        (
            24,
            net("198.51.100.7/32"),
            meta(
                ("105", "2026-11-30T12:00:04"),
                "5",
                "МВД & суд",
                "2026-11-25",
            ),
        ),
        (
            24,
            net("2001:db8::7/128"),
            meta(
                ("105", "2026-11-30T12:00:04"),
                "5",
                "МВД & суд",
                "2026-11-25",
            ),
        ),
        (
            24,
            net("203.0.113.0/24"),
            meta(
                ("105", "2026-11-30T12:00:04"),
                "5",
                "МВД & суд",
                "2026-11-25",
            ),
        ),
        (
            24,
            net("2001:db8:1::/48"),
            meta(
                ("105", "2026-11-30T12:00:04"),
                "5",
                "МВД & суд",
                "2026-11-25",
            ),
        ),
        // A root URL names the host (exactly); a Unicode host is punycode.
        (32, exact("root.example"), m106.clone()),
        // URL rules are stored in canonical form (`list::url`): the
        // non-ASCII path percent-encoded as UTF-8.
        (
            32,
            url("https://xn--80affxdmh4i.example/%D1%81%D1%82%D1%80%D0%B0%D0%BD%D0%B8%D1%86%D0%B0"),
            m106,
        ),
        (
            37,
            exact("xn--80affxdmh4i.example"),
            meta(
                ("107", "2026-11-30T12:00:06"),
                "7",
                "Роскомнадзор",
                "2026-11-23",
            ),
        ),
    ]
}

#[test]
fn windows_1251_dump_every_block_type() {
    let bytes = cp1251(DUMP);
    assert!(std::str::from_utf8(&bytes).is_err(), "fixture is not UTF-8");
    let p = run(&bytes);
    assert!(p.skipped.is_empty(), "{:?}", p.skipped);
    assert_eq!(rules(&p), expected_rules());
}

#[test]
fn utf8_dump_reads_the_same() {
    let utf8 = DUMP.replace("windows-1251", "UTF-8");
    assert_eq!(rules(&run(utf8.as_bytes())), expected_rules());
    // With a BOM and no declaration at all.
    let bare = format!("\u{feff}{}", utf8.split_once('\n').expect("decl").1);
    let p = run(bare.as_bytes());
    let shifted: Vec<_> = expected_rules()
        .into_iter()
        .map(|(l, t, m)| (l - 1, t, m))
        .collect();
    assert_eq!(rules(&p), shifted);
}

#[test]
fn detected_from_content_and_extension() {
    let bytes = cp1251(DUMP);
    for (name, bytes) in [
        ("registry.txt", &bytes[..]),
        ("export.XML", b"example.com\n"),
        ("no-ext", b"  <reg:register/>"),
    ] {
        assert_eq!(
            super::super::detect(Path::new(name), bytes),
            Format::Dump,
            "{name}"
        );
    }
    let p = super::super::parse_bytes(Path::new("r"), &bytes, &ListOptions::default());
    assert_eq!(p.format, Format::Dump);
    assert_eq!(p.rules.len(), expected_rules().len());
}

#[test]
fn parse_file_streams_the_same_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dump.xml");
    std::fs::write(&path, cp1251(DUMP)).expect("write");
    let p = super::super::parse_file(&path, &ListOptions::default()).expect("parse");
    assert_eq!(p.format, Format::Dump);
    assert_eq!(p.name, "dump");
    assert_eq!(rules(&p), expected_rules());
}

/// (input, line, reason substring): what a broken dump reports, and that
/// good rows before the break are kept.
#[test]
fn skips_table() {
    let head = "<?xml version=\"1.0\"?>\n<reg:register>\n";
    let good = "<content id=\"1\" blockType=\"domain\"><domain>ok.example</domain></content>\n";
    let cases: Vec<(String, u32, &str, usize)> = vec![
        (
            format!("{head}{good}<content id=\"2\" blockType=\"weird\"><domain>a.example</domain></content>\n</reg:register>"),
            4,
            "content id=2: unknown blockType \"weird\"",
            1,
        ),
        (
            format!("{head}<content id=\"3\"><decision number=\"1\"/></content>\n{good}</reg:register>"),
            3,
            "content id=3: nothing to block for blockType \"default\"",
            1,
        ),
        (
            format!("{head}<content id=\"4\" blockType=\"ip\"><ip>300.1.1.1</ip><ip>192.0.2.1</ip></content>\n</reg:register>"),
            3,
            "content id=4: <ip> is not an address: \"300.1.1.1\"",
            1,
        ),
        (
            format!("{head}<content id=\"5\" blockType=\"domain\"><domain>bad..name</domain></content>\n</reg:register>"),
            3,
            "content id=5: domain \"bad..name\": empty label",
            0,
        ),
        (
            format!("{head}<content id=\"6\"><url>http://exa mple.com/x</url></content>\n</reg:register>"),
            3,
            "content id=6: URL \"http://exa mple.com/x\"",
            0,
        ),
        (
            "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY x \"y\">]>\n<reg:register><content blockType=\"domain\"><domain>&x;.example</domain></content></reg:register>".into(),
            2,
            "a DOCTYPE is not accepted",
            0,
        ),
        (
            format!("{head}{good}<content id=\"7\" blockType=\"domain\"><domain>a&ent;</domain></content>\n</reg:register>"),
            4,
            "unknown entity &ent;",
            1,
        ),
        (
            format!("{head}{good}<content id=\"8\" blockType=\"domain\"><domain>cut.example"),
            4,
            "the file ends inside <domain> (truncated?)",
            1,
        ),
        (
            format!("{head}{good}"),
            4,
            "ends inside the root element",
            1,
        ),
        (
            format!("{head}{good}<content><url>x</uri></content></reg:register>"),
            4,
            "invalid XML",
            1,
        ),
        (
            format!("{head}<delete id=\"9\"/>\n{good}</reg:register>"),
            3,
            "a <delete> of a dump delta cannot be enforced on its own",
            1,
        ),
        (
            "<?xml version=\"1.0\" encoding=\"UTF-16\"?><r/>".into(),
            1,
            "unsupported encoding \"UTF-16\"",
            0,
        ),
        ("please add a site".into(), 1, "no root element", 0),
        (
            format!("{head}</reg:register>\n<content/>"),
            4,
            "after the root element",
            0,
        ),
    ];
    for (input, line, want, rule_count) in cases {
        let p = run(input.as_bytes());
        assert_eq!(p.rules.len(), rule_count, "{input:?}: {:?}", p.rules);
        assert_eq!(p.skipped.len(), 1, "{input:?}: {:?}", p.skipped);
        assert_eq!(p.skipped[0].line, line, "{input:?}: {:?}", p.skipped);
        assert!(
            p.skipped[0].reason.contains(want),
            "{input:?}: {:?} lacks {want:?}",
            p.skipped[0].reason
        );
    }
}

#[test]
fn utf16_dump_is_transcoded() {
    let text = DUMP.replace("windows-1251", "UTF-16");
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let p = run(&utf16);
    assert!(p.skipped.is_empty(), "{:?}", p.skipped);
    assert_eq!(rules(&p), expected_rules());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dump.xml");
    std::fs::write(&path, &utf16).expect("write");
    let p = super::super::parse_file(&path, &ListOptions::default()).expect("parse");
    assert_eq!(rules(&p), expected_rules());
    // The delta reader streams and says what to do instead.
    let out = dir.path().join("out.xml");
    let err = apply_delta(&path, &path, &out).expect_err("utf-16");
    assert!(err.to_string().contains("UTF-16"), "{err}");
}

#[test]
fn no_entity_expansion_even_without_doctype() {
    // A billion-laughs body without its DOCTYPE: the entity is unknown.
    let input = "<reg:register><content blockType=\"domain\"><domain>&lol9;</domain></content></reg:register>";
    let p = run(input.as_bytes());
    assert!(p.rules.is_empty());
    assert!(
        p.skipped[0].reason.contains("unknown entity"),
        "{:?}",
        p.skipped
    );
}

const DELTA: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<reg:register xmlns:reg="http://rsoc.ru" updateTime="2026-12-02T10:00:00+03:00">
<delete id="102"/>
<delete id="999"/>
<content id="103" includeTime="2026-12-02T09:00:00" entryType="1" blockType="domain" hash="B3">
<decision date="2026-12-01" number="3a" org="Генпрокуратура"/>
<domain><![CDATA[exact2.example]]></domain>
</content>
<content id="108" includeTime="2026-12-02T09:00:01" entryType="1" blockType="domain-mask" hash="B8">
<decision date="2026-12-01" number="8" org="Роскомнадзор"/>
<domain><![CDATA[*.new.example]]></domain>
</content>
</reg:register>
"#;

#[test]
fn delta_applied_to_a_windows_1251_base() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, delta, out) = (
        dir.path().join("dump.xml"),
        dir.path().join("dump_delta.xml"),
        dir.path().join("out.xml"),
    );
    std::fs::write(&base, cp1251(DUMP)).expect("write");
    std::fs::write(&delta, DELTA).expect("write");
    let stats = apply_delta(&base, &delta, &out).expect("apply");
    assert_eq!(
        stats,
        DeltaStats {
            kept: 5,
            deleted: 1,
            replaced: 1,
            added: 2,
            unknown_deletes: 1,
        }
    );
    assert_eq!(stats.contents(), 7);
    assert!(!dir.path().join("out.xml.part").exists());

    let written = std::fs::read_to_string(&out).expect("the result is UTF-8");
    assert!(written.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<reg:register xmlns:reg=\"http://rsoc.ru\" updateTime=\"2026-12-02T10:00:00+03:00\" updateTimeUrgently=\"2026-12-01T09:00:00+03:00\" formatVersion=\"2.4\">"), "{written}");
    // Every attribute of a kept element survives, provenance included.
    assert!(
        written.contains(
            "<content id=\"101\" includeTime=\"2026-11-30T12:00:00\" entryType=\"1\" hash=\"A1\">"
        ),
        "{written}"
    );
    assert!(written.contains("org=\"МВД &amp; суд\""), "{written}");

    let p = super::super::parse_file(&out, &ListOptions::default()).expect("parse");
    assert!(p.skipped.is_empty(), "{:?}", p.skipped);
    let got: Vec<(Target, RuleMeta)> = rules(&p).into_iter().map(|(_, t, m)| (t, m)).collect();
    let mut want: Vec<(Target, RuleMeta)> = expected_rules()
        .into_iter()
        .filter(|(_, t, _)| *t != exact("nourl.example") && *t != exact("exact.example"))
        .map(|(_, t, m)| (t, m))
        .collect();
    want.push((
        exact("exact2.example"),
        meta(
            ("103", "2026-12-02T09:00:00"),
            "3a",
            "Генпрокуратура",
            "2026-12-01",
        ),
    ));
    want.push((
        Target::Name {
            name: "new.example".into(),
            scope: Scope::Subdomains,
        },
        meta(
            ("108", "2026-12-02T09:00:01"),
            "8",
            "Роскомнадзор",
            "2026-12-01",
        ),
    ));
    assert_eq!(got, want);

    // Applying the same delta to the result changes nothing but counts.
    let again = dir.path().join("again.xml");
    let stats = apply_delta(&out, &delta, &again).expect("apply again");
    assert_eq!(
        (stats.kept, stats.deleted, stats.replaced, stats.added),
        (5, 0, 2, 2)
    );
    assert_eq!(
        std::fs::read(&again).expect("read"),
        std::fs::read(&out).expect("read")
    );
}

#[test]
fn a_broken_base_or_delta_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let good = d.join("good.xml");
    std::fs::write(&good, cp1251(DUMP)).expect("write");
    let delta = d.join("delta.xml");
    std::fs::write(&delta, DELTA).expect("write");
    let out = d.join("out.xml");

    let cases: Vec<(&str, &str, &str)> = vec![
        // (base, delta, error substring)
        ("truncated", "", "truncated"),
        ("", "doctype", "DOCTYPE"),
        ("", "delete-without-id", "<delete> without an id"),
        ("is-a-delta", "", "it is a delta, not a full dump"),
    ];
    for (base_kind, delta_kind, want) in cases {
        let base = match base_kind {
            "truncated" => {
                let p = d.join("truncated.xml");
                let bytes = cp1251(DUMP);
                std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
                p
            }
            "is-a-delta" => delta.clone(),
            _ => good.clone(),
        };
        let delta = match delta_kind {
            "doctype" => {
                let p = d.join("doctype.xml");
                std::fs::write(&p, "<!DOCTYPE r><r/>").expect("write");
                p
            }
            "delete-without-id" => {
                let p = d.join("noid.xml");
                std::fs::write(&p, "<r>\n<delete/>\n</r>").expect("write");
                p
            }
            _ => delta.clone(),
        };
        let err = apply_delta(&base, &delta, &out).expect_err(want);
        assert!(err.to_string().contains(want), "{err}");
        assert!(!out.exists(), "{want}: out was written");
        assert!(!d.join("out.xml.part").exists(), "{want}: part left over");
    }
    let err = apply_delta(&d.join("missing.xml"), &delta, &out).expect_err("missing");
    assert!(matches!(err, DumpError::Io { .. }), "{err}");
}

/// Line numbers keep counting through multi-line tags, comments and text.
#[test]
fn lines_follow_the_file() {
    let input = "<?xml version=\"1.0\"?>\n<!-- a\ncomment -->\n<reg:register\n  formatVersion=\"2.4\">\n<content\n id=\"1\"\n blockType=\"domain\"><domain>\n\na.example</domain></content>\n<content id=\"2\" blockType=\"domain\"><domain>b.example</domain></content>\n</reg:register>\n";
    let p = run(input.as_bytes());
    let lines: Vec<u32> = p.rules.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![6, 11]);
}

#[test]
fn provenance_names_the_entry_and_its_inclusion_time() {
    let dump = r#"<?xml version="1.0" encoding="UTF-8"?>
<reg:register xmlns:reg="http://rsoc.ru">
<content id="201" includeTime="2026-12-01T08:00:00" blockType="domain">
<domain>no-decision.example</domain>
</content>
<content blockType="domain">
<domain>bare.example</domain>
</content>
<content id=" 203 " includeTime="" blockType="domain">
<decision number="9"/>
<domain>spaces.example</domain>
</content>
</reg:register>
"#;
    let p = run(dump.as_bytes());
    assert!(p.skipped.is_empty(), "{:?}", p.skipped);
    let got: Vec<(Target, RuleMeta)> = rules(&p).into_iter().map(|(_, t, m)| (t, m)).collect();
    assert_eq!(
        got,
        vec![
            // No <decision>: the row still names itself.
            (
                exact("no-decision.example"),
                RuleMeta {
                    entry: Some("201".into()),
                    included: Some("2026-12-01T08:00:00".into()),
                    ..RuleMeta::default()
                }
            ),
            // Nothing to quote: no metadata at all (no meta row is stored).
            (exact("bare.example"), RuleMeta::default()),
            // Attributes are trimmed; an empty one is absent.
            (
                exact("spaces.example"),
                RuleMeta {
                    decision: Some("9".into()),
                    entry: Some("203".into()),
                    ..RuleMeta::default()
                }
            ),
        ]
    );
    assert!(p.rules[1].meta.is_none());
}
