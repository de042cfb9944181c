//! Line formats: plain, hosts and the AdBlock subset. One parser reads all
//! three (plus keyword lines) because real hand-kept files mix them; the
//! declared format only changes how a lone address is read.

use std::net::IpAddr;

use super::entry::{entry, keyword, name};
use super::{NOT_UTF8, Sink, lines};
use crate::list::{Format, Target};
use crate::policy::Action;

pub(super) fn parse(bytes: &[u8], format: Format, sink: &mut Sink) {
    for (line_no, line) in lines(bytes) {
        match line {
            Ok(line) => parse_line(line, line_no, format, sink),
            Err(_) => sink.skip(line_no, NOT_UTF8),
        }
    }
}

/// Names that hosts files map to loopback for the machine's own sake, not
/// to block anything.
const HOSTS_IGNORED: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "0.0.0.0",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
];

fn parse_line(line: &str, line_no: u32, format: Format, sink: &mut Sink) {
    let s = strip_comment(line).trim();
    if s.is_empty() || s.starts_with('#') || s.starts_with('!') {
        return;
    }
    if s.starts_with('[') && s.ends_with(']') {
        // `[Adblock Plus 2.0]`, `[uBlock Origin]`: filter-list headers. Any
        // other bracketed text falls through and is reported.
        let lower = s.to_ascii_lowercase();
        if ["adblock", "ublock", "adguard"]
            .iter()
            .any(|h| lower.contains(h))
        {
            return;
        }
    }
    if let Some(rest) = s.strip_prefix("@@") {
        return match rest.strip_prefix("||") {
            Some(rule) => adblock(rule, Action::Allow, line_no, sink),
            None => sink.skip(
                line_no,
                "unsupported AdBlock exception (only `@@||name^` is supported)",
            ),
        };
    }
    if let Some(rule) = s.strip_prefix("||") {
        return adblock(rule, Action::Block, line_no, sink);
    }
    if s.contains('#') && ["##", "#@#", "#?#", "#$#"].iter().any(|m| s.contains(m)) {
        return sink.skip(line_no, "AdBlock cosmetic rule not supported");
    }
    if s.starts_with('|') {
        return sink.skip(
            line_no,
            "unsupported AdBlock rule (only `||name^` and `@@||name^` are supported)",
        );
    }
    if s.len() > 1 && s.starts_with('/') && s.ends_with('/') {
        return sink.skip(line_no, "AdBlock regular-expression rule not supported");
    }
    if let Some(word) = strip_prefix_ci(s, "keyword:") {
        return match keyword(word) {
            Ok(target) => sink.rule(line_no, target, Action::Block),
            Err(reason) => sink.skip(line_no, reason),
        };
    }

    let (first, rest) = s
        .split_once(|c: char| c.is_ascii_whitespace())
        .map_or((s, ""), |(first, rest)| (first, rest.trim()));
    if rest.is_empty() {
        if format == Format::Hosts && first.parse::<IpAddr>().is_ok() {
            return sink.skip(line_no, "hosts line has an address but no name");
        }
        return match entry(first) {
            Ok(target) => sink.rule(line_no, target, Action::Block),
            Err(reason) => sink.skip(line_no, reason),
        };
    }
    // `fe80::1%lo0 localhost` in stock hosts files: the zone id is noise.
    let addr_text = first.split_once('%').map_or(first, |(a, _)| a);
    let Ok(addr) = addr_text.parse::<IpAddr>() else {
        return sink.skip(
            line_no,
            format!("unexpected text after entry {first:?}: {rest:?}"),
        );
    };
    let mut hosts = rest
        .split_ascii_whitespace()
        .filter(|host| !HOSTS_IGNORED.iter().any(|i| host.eq_ignore_ascii_case(i)))
        .peekable();
    if hosts.peek().is_none() {
        return;
    }
    if !(addr.is_unspecified() || addr.is_loopback()) {
        return sink.skip(
            line_no,
            format!(
                "hosts line maps to {addr}, which redirects rather than blocks \
                 (use 0.0.0.0, 127.0.0.1, :: or ::1)"
            ),
        );
    }
    for host in hosts {
        // Hosts files hold names only; a `*` or URL here is a mistake, and
        // each bad name is reported without losing its neighbours.
        let target = if host.contains('*') || host.contains('/') {
            Err(format!("not a host name: {host:?}"))
        } else {
            name(host)
        };
        match target {
            Ok(target) => sink.rule(line_no, target, Action::Block),
            Err(reason) => sink.skip(line_no, reason),
        }
    }
}

/// `||name^` with an optional `$important`, `name` possibly `*.name`.
fn adblock(rule: &str, action: Action, line_no: u32, sink: &mut Sink) {
    let Some((host, after)) = rule.split_once('^') else {
        return sink.skip(
            line_no,
            "AdBlock rule without `^` matches URL prefixes, not a name",
        );
    };
    if host.contains('/') {
        return sink.skip(line_no, "AdBlock rule with a path not supported");
    }
    let after = after.strip_prefix('|').unwrap_or(after);
    if !after.is_empty() {
        let Some(options) = after.strip_prefix('$') else {
            return sink.skip(
                line_no,
                format!("unexpected text after `^` in AdBlock rule: {after:?}"),
            );
        };
        if let Some(option) = options
            .split(',')
            .map(str::trim)
            .find(|o| !o.eq_ignore_ascii_case("important"))
        {
            return sink.skip(
                line_no,
                format!(
                    "AdBlock option `${option}` not supported (only `$important`); \
                     the rule is skipped rather than applied more broadly"
                ),
            );
        }
    }
    let target = match super::entry::ip(host) {
        Some(net) => Ok(Target::Ip(net)),
        None => name(host),
    };
    match target {
        Ok(target) => sink.rule(line_no, target, action),
        Err(reason) => sink.skip(line_no, reason),
    }
}

/// Drop a trailing `# comment` that follows whitespace. A `#` glued to the
/// text is kept: it belongs to a cosmetic rule or a URL fragment.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, _) in line.match_indices('#') {
        if i > 0 && matches!(bytes[i - 1], b' ' | b'\t') {
            return &line[..i - 1];
        }
    }
    line
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::{ListOptions, Rule, Scope, Skip};
    use std::path::Path;

    fn run(format: Format, input: &str) -> (Vec<Rule>, Vec<Skip>) {
        let p = super::super::parse_bytes(
            Path::new("t"),
            input.as_bytes(),
            &ListOptions {
                format: Some(format),
                ..ListOptions::default()
            },
        );
        (p.rules, p.skipped)
    }

    fn name_t(n: &str, scope: Scope) -> Target {
        Target::Name {
            name: n.into(),
            scope,
        }
    }

    /// (format, input, expected (line, target, action)).
    #[test]
    fn rules_table() {
        use Action::{Allow, Block};
        use Scope::{Subdomains, Subtree};
        let ip = |s: &str| Target::Ip(s.parse().expect("net"));
        type Case = (Format, &'static str, Vec<(u32, Target, Action)>);
        let cases: Vec<Case> = vec![
            (
                Format::Plain,
                "example.com",
                vec![(1, name_t("example.com", Subtree), Block)],
            ),
            (
                Format::Plain,
                "\n\n  Example.COM.  \n",
                vec![(3, name_t("example.com", Subtree), Block)],
            ),
            (
                Format::Plain,
                "# c\n! c\n\na.com # why\nb.com\t# why\n",
                vec![
                    (4, name_t("a.com", Subtree), Block),
                    (5, name_t("b.com", Subtree), Block),
                ],
            ),
            (
                Format::Plain,
                "a.com\r\nb.com\r\n",
                vec![
                    (1, name_t("a.com", Subtree), Block),
                    (2, name_t("b.com", Subtree), Block),
                ],
            ),
            (
                Format::Plain,
                "*.pages.dev",
                vec![(1, name_t("pages.dev", Subdomains), Block)],
            ),
            (
                Format::Plain,
                "aavè.com",
                vec![(1, name_t("xn--aav-8la.com", Subtree), Block)],
            ),
            (
                Format::Plain,
                "104.168.169.107",
                vec![(1, ip("104.168.169.107/32"), Block)],
            ),
            (
                Format::Plain,
                "10.0.0.0/8",
                vec![(1, ip("10.0.0.0/8"), Block)],
            ),
            (
                Format::Plain,
                "twitter.com/SomeAccount",
                vec![(1, Target::Url("twitter.com/SomeAccount".into()), Block)],
            ),
            (
                Format::Plain,
                "https://example.com/",
                vec![(1, name_t("example.com", Subtree), Block)],
            ),
            (
                Format::Plain,
                "http://host.com/path#x",
                vec![(1, Target::Url("http://host.com/path".into()), Block)],
            ),
            (
                Format::Plain,
                "keyword:binance",
                vec![(1, Target::Keyword("binance".into()), Block)],
            ),
            (
                Format::Plain,
                "Keyword: BiNance  # brand",
                vec![(1, Target::Keyword("binance".into()), Block)],
            ),
            (
                Format::Plain,
                "[Adblock Plus 2.0]\n[uBlock Origin]\n||a.com^\n@@||b.a.com^\n",
                vec![
                    (3, name_t("a.com", Subtree), Block),
                    (4, name_t("b.a.com", Subtree), Allow),
                ],
            ),
            (
                Format::Plain,
                "0.0.0.0 a.com b.com",
                vec![
                    (1, name_t("a.com", Subtree), Block),
                    (1, name_t("b.com", Subtree), Block),
                ],
            ),
            (
                Format::Adblock,
                "||Example.com^",
                vec![(1, name_t("example.com", Subtree), Block)],
            ),
            (
                Format::Adblock,
                "||example.com^|",
                vec![(1, name_t("example.com", Subtree), Block)],
            ),
            (
                Format::Adblock,
                "||example.com^$important",
                vec![(1, name_t("example.com", Subtree), Block)],
            ),
            (
                Format::Adblock,
                "@@||example.com^$important",
                vec![(1, name_t("example.com", Subtree), Allow)],
            ),
            (
                Format::Adblock,
                "||*.example.com^",
                vec![(1, name_t("example.com", Subdomains), Block)],
            ),
            (
                Format::Adblock,
                "||192.0.2.1^",
                vec![(1, ip("192.0.2.1/32"), Block)],
            ),
            (
                Format::Adblock,
                "example.com",
                vec![(1, name_t("example.com", Subtree), Block)],
            ),
            (
                Format::Hosts,
                "0.0.0.0 a.com",
                vec![(1, name_t("a.com", Subtree), Block)],
            ),
            (
                Format::Hosts,
                "127.0.0.1\tA.com.",
                vec![(1, name_t("a.com", Subtree), Block)],
            ),
            (
                Format::Hosts,
                ":: a.com\n::1 b.com\n127.0.0.2 c.com",
                vec![
                    (1, name_t("a.com", Subtree), Block),
                    (2, name_t("b.com", Subtree), Block),
                    (3, name_t("c.com", Subtree), Block),
                ],
            ),
            (
                Format::Hosts,
                "0.0.0.0   a.com \t  b.com\tc.com  # trailing",
                vec![
                    (1, name_t("a.com", Subtree), Block),
                    (1, name_t("b.com", Subtree), Block),
                    (1, name_t("c.com", Subtree), Block),
                ],
            ),
            (
                Format::Hosts,
                "127.0.0.1 localhost\n127.0.0.1 localhost.localdomain\n255.255.255.255 broadcasthost\n\
                 ::1 localhost ip6-localhost ip6-loopback\nfe80::1%lo0 localhost\n0.0.0.0 0.0.0.0\n127.0.0.1 local\n",
                vec![],
            ),
            (
                Format::Hosts,
                "0.0.0.0 LocalHost ads.com",
                vec![(1, name_t("ads.com", Subtree), Block)],
            ),
            (
                Format::Hosts,
                "a.com\nkeyword:casino",
                vec![
                    (1, name_t("a.com", Subtree), Block),
                    (2, Target::Keyword("casino".into()), Block),
                ],
            ),
        ];
        for (format, input, want) in cases {
            let (rules, skipped) = run(format, input);
            let got: Vec<_> = rules
                .into_iter()
                .map(|r| (r.line, r.target, r.action))
                .collect();
            assert_eq!(got, want, "{format} input {input:?}");
            assert!(skipped.is_empty(), "{format} input {input:?}: {skipped:?}");
        }
    }

    /// (format, input, expected skip reason substring); each input is one
    /// line that must yield no rule and exactly one skip on line 1.
    #[test]
    fn skips_table() {
        let cases: &[(Format, &str, &str)] = &[
            (Format::Plain, "bad..name", "empty label"),
            (Format::Plain, "exa_mple!.com", "invalid character '!'"),
            (
                Format::Plain,
                &format!("{}.com", "a".repeat(64)),
                "label longer than 63",
            ),
            (
                Format::Plain,
                "a.*.com",
                "only allowed as a whole leading label",
            ),
            (
                Format::Plain,
                "http://esl-bits.net/ - Добавьте пожалуйста в список.",
                "unexpected text after entry",
            ),
            (
                Format::Plain,
                "example.com other.com",
                "unexpected text after entry",
            ),
            (Format::Plain, "keyword:ab", "shorter than 3"),
            (Format::Plain, "keyword:bin.ance", "may not contain `.`"),
            (Format::Plain, "keyword:", "empty keyword"),
            (Format::Plain, "example.com##.banner", "cosmetic"),
            (Format::Plain, "example.com#@#.banner", "cosmetic"),
            (
                Format::Plain,
                "|http://example.com/",
                "unsupported AdBlock rule",
            ),
            (Format::Plain, "/banner[0-9]+/", "regular-expression"),
            (Format::Plain, "[not-a-header]", "invalid character"),
            (Format::Adblock, "||example.com", "without `^`"),
            (Format::Adblock, "||example.com/ads^", "with a path"),
            (
                Format::Adblock,
                "||example.com^$third-party",
                "option `$third-party` not supported",
            ),
            (
                Format::Adblock,
                "||example.com^$important,denyallow=a.com",
                "option `$denyallow=a.com`",
            ),
            (Format::Adblock, "||example.com^$badfilter", "`$badfilter`"),
            (
                Format::Adblock,
                "||example.com^foo",
                "unexpected text after `^`",
            ),
            (
                Format::Adblock,
                "@@example.com",
                "unsupported AdBlock exception",
            ),
            (
                Format::Adblock,
                "@@|http://a.com",
                "unsupported AdBlock exception",
            ),
            (Format::Adblock, "||a..com^", "empty label"),
            (Format::Adblock, "||^", "empty name"),
            (Format::Hosts, "0.0.0.0", "address but no name"),
            (
                Format::Hosts,
                "192.0.2.1 example.com",
                "redirects rather than blocks",
            ),
            (Format::Hosts, "0.0.0.0 bad..name", "empty label"),
            (Format::Hosts, "0.0.0.0 *.a.com", "not a host name"),
            (Format::Hosts, "0.0.0.0 a.com/x", "not a host name"),
            (
                Format::Hosts,
                "example.com extra",
                "unexpected text after entry",
            ),
            (Format::Plain, "a\u{0}.com", "invalid character"),
        ];
        for (format, input, want) in cases {
            let (rules, skipped) = run(*format, input);
            assert!(rules.is_empty(), "{format} {input:?}: {rules:?}");
            assert_eq!(skipped.len(), 1, "{format} {input:?}: {skipped:?}");
            assert_eq!(skipped[0].line, 1);
            assert!(
                skipped[0].reason.contains(want),
                "{format} {input:?}: {:?} lacks {want:?}",
                skipped[0].reason
            );
        }
    }

    #[test]
    fn bad_lines_do_not_stop_the_load() {
        let input = b"a.com\n\xff\xfe bad\n0.0.0.0 b.com bad..x c.com\nd.com\n";
        let p = super::super::parse_bytes(
            Path::new("t"),
            input,
            &ListOptions {
                format: Some(Format::Hosts),
                ..ListOptions::default()
            },
        );
        let names: Vec<_> = p
            .rules
            .iter()
            .map(|r| match &r.target {
                Target::Name { name, .. } => (r.line, name.as_str()),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            vec![(1, "a.com"), (3, "b.com"), (3, "c.com"), (4, "d.com")]
        );
        let skips: Vec<_> = p
            .skipped
            .iter()
            .map(|s| (s.line, s.reason.as_str()))
            .collect();
        assert_eq!(skips.len(), 2);
        assert_eq!(skips[0], (2, NOT_UTF8));
        assert_eq!(skips[1].0, 3);
    }

    #[test]
    fn comments() {
        assert_eq!(strip_comment("a.com # x"), "a.com");
        assert_eq!(strip_comment("a.com\t#x"), "a.com");
        assert_eq!(strip_comment("a.com##x"), "a.com##x");
        assert_eq!(strip_comment("http://a.com/#x"), "http://a.com/#x");
        assert_eq!(strip_prefix_ci("KEYWORD:x", "keyword:"), Some("x"));
        assert_eq!(strip_prefix_ci("kéy", "keyword:"), None);
        assert_eq!(strip_prefix_ci("keyw€rd:x", "keyword:"), None);
    }
}
