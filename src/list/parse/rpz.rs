//! RPZ zone master files (draft-vixie-dnsop-dns-rpz): enough of RFC 1035
//! master-file syntax to read what BIND, Unbound and the blocklist
//! publishers write, and the RPZ meaning of each record.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{NOT_UTF8, Sink, lines};
use crate::list::name::normalize;
use crate::list::{RpzTrigger, Rule, Scope, Target};
use crate::policy::Action;

pub(super) fn parse(bytes: &[u8], sink: &mut Sink) {
    let mut zone = Zone::default();
    // One buffer for all records; a record inside `( … )` accumulates the
    // tokens of several lines, reported at its first line.
    let mut tokens: Vec<&str> = Vec::new();
    let mut pending: Option<(u32, bool)> = None;
    let mut depth = 0usize;
    for (line_no, line) in lines(bytes) {
        let line = match line {
            Ok(line) => line,
            Err(_) => {
                sink.skip(line_no, NOT_UTF8);
                continue;
            }
        };
        let (start, blank_owner) = match pending.take() {
            Some(start) => start,
            None => {
                tokens.clear();
                (line_no, line.starts_with([' ', '\t']))
            }
        };
        if let Err(reason) = tokenize(line, &mut tokens, &mut depth) {
            sink.skip(start, reason);
            depth = 0;
            continue;
        }
        if depth > 0 {
            pending = Some((start, blank_owner));
            continue;
        }
        zone.record(start, blank_owner, &tokens, sink);
    }
    if let Some((start, _)) = pending {
        sink.skip(start, "unclosed `(` at end of file");
    }
}

/// Split one line into tokens, appending to `out`. Parentheses only group
/// lines; `;` starts a comment outside quotes.
fn tokenize<'a>(line: &'a str, out: &mut Vec<&'a str>, depth: &mut usize) -> Result<(), String> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\r' => i += 1,
            b';' => break,
            b'(' => {
                *depth += 1;
                i += 1;
            }
            b')' => {
                if *depth == 0 {
                    return Err("unbalanced `)`".into());
                }
                *depth -= 1;
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if i >= bytes.len() {
                    return Err("unterminated quoted string".into());
                }
                i += 1;
                out.push(&line[start..i]);
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(bytes[i], b' ' | b'\t' | b'\r' | b';' | b'(' | b')' | b'"')
                {
                    // An escaped character (`\;`, `\(`) is part of the token.
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                let end = i.min(bytes.len());
                i = end;
                out.push(&line[start..end]);
            }
        }
    }
    Ok(())
}

/// Where an owner name sits relative to the zone.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owner<'a> {
    Apex,
    /// Relative to the origin, no trailing dot, case as written.
    Relative(&'a str),
}

#[derive(Default)]
struct Zone<'a> {
    /// Lowercase, no trailing dot; `Some("")` is the root.
    origin: Option<String>,
    /// Blank-owner records reuse this; an error is repeated for each.
    previous: Option<Result<Owner<'a>, String>>,
    /// Local-data rules by target, so all A/AAAA of one owner form one rule.
    local_data: HashMap<Target, usize>,
}

impl<'a> Zone<'a> {
    fn record(&mut self, line: u32, blank_owner: bool, tokens: &[&'a str], sink: &mut Sink) {
        let Some(&first) = tokens.first() else {
            return;
        };
        if !blank_owner && first.starts_with('$') {
            return self.directive(line, tokens, sink);
        }
        let (owner, rest) = if blank_owner {
            match &self.previous {
                Some(owner) => (owner.clone(), tokens),
                None => return sink.skip(line, "record without an owner name"),
            }
        } else {
            let owner = self.resolve(first);
            self.previous = Some(owner.clone());
            (owner, &tokens[1..])
        };
        let (rtype, rdata) = match type_and_data(rest) {
            Ok(v) => v,
            Err(reason) => return sink.skip(line, reason),
        };
        let is = |t: &str| rtype.eq_ignore_ascii_case(t);
        if is("SOA") || is("NS") {
            return;
        }
        let owner = match owner {
            Ok(Owner::Relative(owner)) => owner,
            Ok(Owner::Apex) => {
                return sink.skip(
                    line,
                    format!(
                        "{} record at the zone apex is not a policy trigger",
                        rtype.to_ascii_uppercase()
                    ),
                );
            }
            Err(reason) => return sink.skip(line, reason),
        };
        let target = match trigger(owner) {
            Ok(target) => target,
            Err(reason) => return sink.skip(line, reason),
        };
        if is("CNAME") {
            let [cname] = rdata else {
                return sink.skip(line, "CNAME needs exactly one target");
            };
            match cname_action(cname, owner) {
                Ok(action) => sink.rule(line, target, action),
                Err(reason) => sink.skip(line, reason),
            }
        } else if is("A") || is("AAAA") {
            let addr = match rdata {
                [a] if is("A") => a.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
                [a] => a.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
                _ => None,
            };
            let Some(addr) = addr else {
                return sink.skip(
                    line,
                    format!(
                        "invalid {} record data {rdata:?}",
                        rtype.to_ascii_uppercase()
                    ),
                );
            };
            self.local_data(line, target, addr, sink);
        } else {
            sink.skip(
                line,
                format!(
                    "RPZ local data of type {} not supported",
                    rtype.to_ascii_uppercase()
                ),
            );
        }
    }

    fn local_data(&mut self, line: u32, target: Target, addr: IpAddr, sink: &mut Sink) {
        let earlier = self
            .local_data
            .get(&target)
            .and_then(|&i| sink.rules.get_mut(i));
        if let Some(Rule {
            action: Action::Address,
            local_data,
            ..
        }) = earlier
        {
            if !local_data.contains(&addr) {
                local_data.push(addr);
            }
            return;
        }
        self.local_data.insert(target.clone(), sink.rules.len());
        sink.rule(line, target, Action::Address);
        if let Some(rule) = sink.rules.last_mut() {
            rule.local_data.push(addr);
        }
    }

    fn directive(&mut self, line: u32, tokens: &[&str], sink: &mut Sink) {
        let name = tokens[0].to_ascii_uppercase();
        match name.as_str() {
            "$ORIGIN" => {
                let [_, origin] = tokens else {
                    return sink.skip(line, "$ORIGIN needs exactly one name");
                };
                match self.origin_name(origin) {
                    Ok(origin) => {
                        self.origin = Some(origin);
                        // `@` and blank owners after this mean the new origin.
                        self.previous = None;
                    }
                    Err(reason) => sink.skip(line, format!("bad $ORIGIN: {reason}")),
                }
            }
            "$TTL" => {}
            "$INCLUDE" => sink.skip(
                line,
                "$INCLUDE not supported: the included file is not loaded",
            ),
            _ => sink.skip(line, format!("unsupported directive {}", tokens[0])),
        }
    }

    fn origin_name(&self, raw: &str) -> Result<String, String> {
        if raw == "." {
            return Ok(String::new());
        }
        let absolute = raw.ends_with('.');
        let name = normalize(raw).map_err(|e| e.to_string())?;
        Ok(match (&self.origin, absolute) {
            (Some(o), false) if !o.is_empty() => format!("{name}.{o}"),
            _ => name,
        })
    }

    fn resolve(&self, raw: &'a str) -> Result<Owner<'a>, String> {
        if raw == "@" {
            return Ok(Owner::Apex);
        }
        let Some(abs) = raw.strip_suffix('.') else {
            return Ok(Owner::Relative(raw));
        };
        match self.origin.as_deref() {
            None | Some("") => Ok(Owner::Relative(abs)),
            Some(origin) => {
                let under = abs.len() > origin.len()
                    && abs.is_char_boundary(abs.len() - origin.len())
                    && abs[abs.len() - origin.len()..].eq_ignore_ascii_case(origin);
                if abs.eq_ignore_ascii_case(origin) {
                    Ok(Owner::Apex)
                } else if under && abs[..abs.len() - origin.len()].ends_with('.') {
                    let rel = &abs[..abs.len() - origin.len() - 1];
                    if rel.is_empty() {
                        Err(format!("owner {raw} has an empty label"))
                    } else {
                        Ok(Owner::Relative(rel))
                    }
                } else {
                    Err(format!("owner {raw} is outside the zone origin {origin}."))
                }
            }
        }
    }
}

/// Skip the optional TTL and class (either order), returning the type and
/// its data.
fn type_and_data<'t, 'a>(tokens: &'t [&'a str]) -> Result<(&'a str, &'t [&'a str]), String> {
    let mut i = 0;
    let (mut ttl, mut class) = (false, false);
    while let Some(tok) = tokens.get(i) {
        if !ttl && is_ttl(tok) {
            ttl = true;
        } else if !class && is_class(tok) {
            if !tok.eq_ignore_ascii_case("IN") {
                return Err(format!("class {tok} not supported (only IN)"));
            }
            class = true;
        } else {
            return Ok((tok, &tokens[i + 1..]));
        }
        i += 1;
    }
    Err("record has no type".into())
}

/// RFC 1035 seconds or BIND's `1w2d3h4m5s`.
fn is_ttl(tok: &str) -> bool {
    tok.starts_with(|c: char| c.is_ascii_digit())
        && tok.chars().all(|c| {
            c.is_ascii_digit() || matches!(c.to_ascii_lowercase(), 'w' | 'd' | 'h' | 'm' | 's')
        })
}

fn is_class(tok: &str) -> bool {
    ["IN", "CH", "CS", "HS"]
        .iter()
        .any(|c| tok.eq_ignore_ascii_case(c))
}

/// The target of a trigger owner (relative to the zone).
fn trigger(owner: &str) -> Result<Target, String> {
    // Any `rpz-ip`-style label marks a non-QNAME trigger, wherever it sits:
    // with no `$ORIGIN` an absolute owner may still carry the zone name.
    if owner
        .as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"rpz-"))
    {
        let mut end = 0;
        for label in owner.split('.') {
            end += label.len();
            let trigger = match label.to_ascii_lowercase().as_str() {
                "rpz-ip" => RpzTrigger::Ip,
                "rpz-client-ip" => RpzTrigger::ClientIp,
                "rpz-nsdname" => RpzTrigger::Nsdname,
                "rpz-nsip" => RpzTrigger::Nsip,
                _ => {
                    end += 1;
                    continue;
                }
            };
            return Ok(Target::RpzOther {
                trigger,
                owner: owner[..end].to_lowercase(),
            });
        }
    }
    if owner == "*" {
        return Err("wildcard owner `*` would match every name; not supported".into());
    }
    let (rest, scope) = match owner.strip_prefix("*.") {
        Some(rest) => (rest, Scope::Subdomains),
        None => (owner, Scope::Exact),
    };
    if rest.contains('*') {
        return Err(format!(
            "`*` is only allowed as a whole leading label (`*.name`): {owner:?}"
        ));
    }
    let name = normalize(rest).map_err(|e| e.to_string())?;
    Ok(Target::Name { name, scope })
}

fn cname_action(cname: &str, owner: &str) -> Result<Action, String> {
    let is = |t: &str| cname.eq_ignore_ascii_case(t);
    Ok(if is(".") {
        Action::Nxdomain
    } else if is("*.") {
        Action::Nodata
    } else if is("rpz-passthru.") {
        Action::Allow
    } else if is("rpz-drop.") {
        Action::Drop
    } else if is("rpz-tcp-only.") {
        return Err("rpz-tcp-only action not supported".into());
    } else if cname
        .strip_suffix('.')
        .is_some_and(|c| c.eq_ignore_ascii_case(owner))
    {
        // The pre-`rpz-passthru` way to say "pass": a CNAME to the owner.
        Action::Allow
    } else {
        return Err(format!("CNAME rewrite not supported (target {cname})"));
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::{Format, ListOptions, Skip};
    use std::path::Path;

    fn run(input: &str) -> (Vec<Rule>, Vec<Skip>) {
        let p = super::super::parse_bytes(
            Path::new("t"),
            input.as_bytes(),
            &ListOptions {
                format: Some(Format::Rpz),
                ..ListOptions::default()
            },
        );
        (p.rules, p.skipped)
    }

    fn exact(n: &str) -> Target {
        Target::Name {
            name: n.into(),
            scope: Scope::Exact,
        }
    }
    fn sub(n: &str) -> Target {
        Target::Name {
            name: n.into(),
            scope: Scope::Subdomains,
        }
    }

    #[test]
    fn rules_table() {
        use Want::*;
        /// What a rule should be: its action, and for local data its
        /// addresses (rows stay one word per action).
        #[derive(Debug, PartialEq)]
        enum Want {
            Allow,
            Nxdomain,
            Nodata,
            Drop,
            LocalData(Vec<IpAddr>),
        }
        fn wanted(r: &Rule) -> Want {
            match r.action {
                Action::Allow => Allow,
                Action::Nodata => Nodata,
                Action::Drop => Drop,
                Action::Address => LocalData(r.local_data.clone()),
                _ => Nxdomain,
            }
        }
        let v4 = |s: &str| IpAddr::V4(s.parse().expect("v4"));
        let v6 = |s: &str| IpAddr::V6(s.parse().expect("v6"));
        let other = |trigger, owner: &str| Target::RpzOther {
            trigger,
            owner: owner.into(),
        };
        let soa = "$TTL 300\n@ SOA localhost. root.localhost. 1 43200 3600 259200 300\n  NS  localhost.\n";
        type Case = (String, Vec<(u32, Target, Want)>);
        let cases: Vec<Case> = vec![
            ("bad.com CNAME .".into(), vec![(1, exact("bad.com"), Nxdomain)]),
            ("*.bad.com CNAME .".into(), vec![(1, sub("bad.com"), Nxdomain)]),
            ("bad.com CNAME *.".into(), vec![(1, exact("bad.com"), Nodata)]),
            ("ok.com CNAME rpz-passthru.".into(), vec![(1, exact("ok.com"), Allow)]),
            ("ok.com CNAME ok.com.".into(), vec![(1, exact("ok.com"), Allow)]),
            ("d.com CNAME rpz-drop.".into(), vec![(1, exact("d.com"), Drop)]),
            ("Bad.COM 300 IN CNAME .".into(), vec![(1, exact("bad.com"), Nxdomain)]),
            ("bad.com IN 300 cname .".into(), vec![(1, exact("bad.com"), Nxdomain)]),
            ("bad.com 1h30m CNAME . ; why".into(), vec![(1, exact("bad.com"), Nxdomain)]),
            ("bad.com\tCNAME\t.".into(), vec![(1, exact("bad.com"), Nxdomain)]),
            ("bücher.de CNAME .".into(), vec![(1, exact("xn--bcher-kva.de"), Nxdomain)]),
            (format!("{soa};\n; comment\nbitcoin360.ai CNAME .\n*.bitcoin360.ai CNAME .\n"), vec![
                (6, exact("bitcoin360.ai"), Nxdomain),
                (7, sub("bitcoin360.ai"), Nxdomain),
            ]),
            // $ORIGIN strips the zone name from absolute owners.
            ("$ORIGIN rpz.example.\n@ SOA ns. admin. 1 2 3 4 5\nbad.com CNAME .\nbad.org.rpz.example. CNAME .\n*.Bad.NET.RPZ.example. CNAME .\n".into(), vec![
                (3, exact("bad.com"), Nxdomain),
                (4, exact("bad.org"), Nxdomain),
                (5, sub("bad.net"), Nxdomain),
            ]),
            ("$ORIGIN example.\n$ORIGIN rpz\nbad.com.rpz.example. CNAME .\n".into(), vec![(3, exact("bad.com"), Nxdomain)]),
            ("$ORIGIN .\nbad.com. CNAME .\n".into(), vec![(2, exact("bad.com"), Nxdomain)]),
            // No $ORIGIN: an absolute owner is the name itself.
            ("bad.com. CNAME .".into(), vec![(1, exact("bad.com"), Nxdomain)]),
            // Blank owner repeats the previous one; A/AAAA merge into one rule.
            ("www.bad.com A 192.0.2.1\n  A 192.0.2.2\n\tAAAA 2001:db8::1\nwww.bad.com 60 IN A 192.0.2.3\nwww.bad.com A 192.0.2.1\n".into(), vec![
                (1, exact("www.bad.com"), LocalData(vec![v4("192.0.2.1"), v4("192.0.2.2"), v6("2001:db8::1"), v4("192.0.2.3")])),
            ]),
            ("a.com A 192.0.2.1\n*.a.com A 192.0.2.2\n".into(), vec![
                (1, exact("a.com"), LocalData(vec![v4("192.0.2.1")])),
                (2, sub("a.com"), LocalData(vec![v4("192.0.2.2")])),
            ]),
            // Multi-line SOA with comments inside the parentheses.
            ("@ IN SOA ns. admin. (\n  1 ; serial\n  3600 ; refresh\n  600 86400 300 )\nbad.com CNAME .\n".into(), vec![
                (5, exact("bad.com"), Nxdomain),
            ]),
            ("bad.com CNAME (\n . )\n".into(), vec![(1, exact("bad.com"), Nxdomain)]),
            // Non-QNAME triggers stay RPZ-other rules.
            ("32.1.2.0.192.rpz-ip CNAME .\n".into(), vec![(1, other(RpzTrigger::Ip, "32.1.2.0.192.rpz-ip"), Nxdomain)]),
            ("24.0.2.0.192.rpz-client-ip CNAME rpz-drop.\n".into(), vec![(1, other(RpzTrigger::ClientIp, "24.0.2.0.192.rpz-client-ip"), Drop)]),
            ("ns.bad.com.rpz-nsdname CNAME .\n".into(), vec![(1, other(RpzTrigger::Nsdname, "ns.bad.com.rpz-nsdname"), Nxdomain)]),
            ("32.1.2.0.192.rpz-nsip CNAME .\n".into(), vec![(1, other(RpzTrigger::Nsip, "32.1.2.0.192.rpz-nsip"), Nxdomain)]),
            ("32.1.2.0.192.RPZ-IP.rpz.example. CNAME .\n".into(), vec![(1, other(RpzTrigger::Ip, "32.1.2.0.192.rpz-ip"), Nxdomain)]),
            ("$ORIGIN rpz.example.\n32.1.2.0.192.rpz-ip A 192.0.2.9\n".into(), vec![(2, other(RpzTrigger::Ip, "32.1.2.0.192.rpz-ip"), LocalData(vec![v4("192.0.2.9")]))]),
            // Apex records, SOA and NS anywhere: ignored.
            ("@ NS ns.\nsub NS ns.\n".into(), vec![]),
            ("".into(), vec![]),
        ];
        for (input, want) in cases {
            let (rules, skipped) = run(&input);
            let got: Vec<_> = rules
                .into_iter()
                .map(|r| {
                    let w = wanted(&r);
                    (r.line, r.target, w)
                })
                .collect();
            assert_eq!(got, want, "input {input:?}");
            assert!(skipped.is_empty(), "input {input:?}: {skipped:?}");
        }
    }

    /// (input, line of the single skip, reason substring); no rules.
    #[test]
    fn skips_table() {
        let cases: &[(&str, u32, &str)] = &[
            (
                "bad.com CNAME rpz-tcp-only.",
                1,
                "rpz-tcp-only action not supported",
            ),
            (
                "bad.com CNAME other.example.",
                1,
                "CNAME rewrite not supported",
            ),
            (
                "bad.com CNAME rpz-passthru",
                1,
                "CNAME rewrite not supported",
            ),
            (
                "*.bad.com CNAME *.garden.example.",
                1,
                "CNAME rewrite not supported",
            ),
            ("bad.com CNAME", 1, "CNAME needs exactly one target"),
            ("bad.com CNAME . extra", 1, "CNAME needs exactly one target"),
            ("bad.com A 999.1.1.1", 1, "invalid A record data"),
            ("bad.com A 2001:db8::1", 1, "invalid A record data"),
            ("bad.com AAAA 192.0.2.1", 1, "invalid AAAA record data"),
            ("bad.com TXT \"why ; not\"", 1, "type TXT not supported"),
            ("bad.com MX 10 mx.", 1, "type MX not supported"),
            ("bad.com CH CNAME .", 1, "class CH not supported"),
            ("bad.com 300 IN", 1, "record has no type"),
            ("bad.com", 1, "record has no type"),
            ("$INCLUDE other.zone", 1, "$INCLUDE not supported"),
            (
                "$GENERATE 1-10 x$ CNAME .",
                1,
                "unsupported directive $GENERATE",
            ),
            ("$ORIGIN", 1, "$ORIGIN needs exactly one name"),
            ("$ORIGIN a..b.", 1, "bad $ORIGIN: empty label"),
            ("  A 192.0.2.1", 1, "record without an owner name"),
            ("@ CNAME .", 1, "at the zone apex"),
            (
                "$ORIGIN rpz.example.\nrpz.example. A 192.0.2.1",
                2,
                "at the zone apex",
            ),
            (
                "$ORIGIN rpz.example.\nbad.com.other. CNAME .",
                2,
                "outside the zone origin",
            ),
            (
                "$ORIGIN rpz.example.\nxrpz.example. CNAME .",
                2,
                "outside the zone origin",
            ),
            ("* CNAME .", 1, "would match every name"),
            (
                "a.*.com CNAME .",
                1,
                "only allowed as a whole leading label",
            ),
            ("bad..com CNAME .", 1, "empty label"),
            ("b\\.ad.com CNAME .", 1, "invalid character"),
            ("bad.com CNAME ( .", 1, "unclosed `(` at end of file"),
            ("bad.com CNAME . )", 1, "unbalanced `)`"),
            ("bad.com TXT \"open", 1, "unterminated quoted string"),
            ("bad\u{0}.com CNAME .", 1, "invalid character"),
        ];
        for (input, line, want) in cases {
            let (rules, skipped) = run(input);
            assert!(rules.is_empty(), "{input:?}: {rules:?}");
            assert_eq!(skipped.len(), 1, "{input:?}: {skipped:?}");
            assert_eq!(skipped[0].line, *line, "{input:?}");
            assert!(
                skipped[0].reason.contains(want),
                "{input:?}: {:?} lacks {want:?}",
                skipped[0].reason
            );
        }
    }

    #[test]
    fn a_bad_owner_poisons_its_blank_owner_records_only() {
        let (rules, skipped) = run("bad..com A 192.0.2.1\n  A 192.0.2.2\ngood.com CNAME .\n");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].line, 3);
        let lines: Vec<_> = skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![1, 2]);

        let p = super::super::parse_bytes(
            Path::new("t.rpz"),
            b"a.com CNAME .\n\xff\xfe CNAME .\nb.com CNAME .\n",
            &ListOptions::default(),
        );
        assert_eq!(p.rules.len(), 2);
        assert_eq!(
            p.skipped,
            vec![Skip {
                line: 2,
                reason: NOT_UTF8.into()
            }]
        );
    }

    #[test]
    fn merged_local_data_keeps_line_order() {
        // The merged rule is reported at its first line, between the rules
        // that surround it in the file.
        let (rules, _) = run("x.com A 192.0.2.1\ny.com CNAME .\nx.com A 192.0.2.2\n");
        let lines: Vec<_> = rules.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![1, 2]);
    }

    #[test]
    fn ttl_and_class_tokens() {
        for t in ["0", "300", "1h", "1W2d3H4m5s"] {
            assert!(is_ttl(t), "{t}");
        }
        for t in ["", "h1", "A", "IN", "1x"] {
            assert!(!is_ttl(t), "{t}");
        }
        assert!(is_class("in") && is_class("HS") && !is_class("A"));
    }
}
