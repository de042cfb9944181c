//! JSON lists (`{"deny": [...], "allow": [...]}`, `{"domains": [...]}`, or
//! a bare array). A small hand-written reader rather than serde_json:
//! auditors see `FILE:LINE`, so each string needs the line it starts on,
//! and a bad element or a truncated file must cost only what is broken.

use super::entry::entry;
use super::{Sink, line_no};
use crate::policy::Action;

pub(super) fn parse(bytes: &[u8], sink: &mut Sink) {
    // Invalid UTF-8 becomes U+FFFD, which name normalisation rejects, so
    // only the entries that hold it are skipped.
    let text = String::from_utf8_lossy(bytes);
    let mut p = Parser {
        b: text.as_bytes(),
        text: &text,
        i: 0,
        line: 0,
        sink,
    };
    p.ws();
    let result = match p.peek() {
        None => Err(p.err("empty document")),
        Some(b'{') => p.top_object(),
        Some(b'[') => p.array(Role::List(Action::Block), "top-level array", 0),
        Some(_) => Err(p.err("the top level must be an object or an array")),
    };
    match result {
        Ok(()) => {
            p.ws();
            if p.i < p.b.len() {
                let e = p.err("unexpected text after the top-level value");
                p.sink.skip(e.line, e.to_string());
            }
        }
        Err(e) => p.sink.skip(e.line, e.to_string()),
    }
}

/// Deeper nesting than any list needs; the limit keeps hostile input from
/// exhausting the stack.
const MAX_DEPTH: usize = 64;

struct Error {
    line: u32,
    msg: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid JSON: {}", self.msg)
    }
}

/// What the strings of an array under a key mean.
enum Role {
    List(Action),
    /// Known to hold names that sinkhole cannot use (`fuzzylist`).
    Unsupported(&'static str),
    Unknown,
}

fn role(key: &str) -> Role {
    match key.to_ascii_lowercase().as_str() {
        "deny" | "denysub" | "domains" | "blacklist" | "blocklist" => Role::List(Action::Block),
        "allow" | "whitelist" | "allowlist" => Role::List(Action::Allow),
        "fuzzylist" => Role::Unsupported("fuzzy-match lists are not supported"),
        _ => Role::Unknown,
    }
}

struct Parser<'a, 's, 'n> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
    /// 0-based line of `i`.
    line: usize,
    sink: &'s mut Sink<'n>,
}

impl Parser<'_, '_, '_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn line(&self) -> u32 {
        line_no(self.line)
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        Error {
            line: self.line(),
            msg: msg.into(),
        }
    }

    fn ws(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => return,
            }
            self.i += 1;
        }
    }

    fn expect(&mut self, want: u8) -> Result<(), Error> {
        self.ws();
        if self.peek() == Some(want) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected `{}`", want as char)))
        }
    }

    fn top_object(&mut self) -> Result<(), Error> {
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let key_line = self.line();
            let key = self.string()?;
            self.expect(b':')?;
            self.ws();
            match (role(&key), self.peek()) {
                (Role::List(action), Some(b'[')) => {
                    self.array(Role::List(action), &key, 1)?;
                }
                (Role::List(_), _) => {
                    self.skip_value(1)?;
                    self.sink
                        .skip(key_line, format!("{key:?} must be an array of strings"));
                }
                (role @ (Role::Unsupported(_) | Role::Unknown), Some(b'[')) => {
                    self.array(role, &key, 1)?;
                }
                (Role::Unsupported(_) | Role::Unknown, Some(b'{')) => {
                    self.skip_value(1)?;
                    self.sink
                        .skip(key_line, format!("unknown key {key:?} ignored"));
                }
                // Scalars such as `"version": 2` carry no rules.
                _ => self.skip_value(1)?,
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected `,` or `}` in object")),
            }
        }
    }

    fn array(&mut self, role: Role, key: &str, depth: usize) -> Result<(), Error> {
        let key_line = self.line();
        self.expect(b'[')?;
        let mut elements = 0usize;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let line = self.line();
            elements += 1;
            match (&role, self.peek()) {
                (Role::List(action), Some(b'"')) => {
                    let s = self.string()?;
                    match entry(&s) {
                        Ok(target) => self.sink.rule(line, target, *action),
                        Err(reason) => self.sink.skip(line, reason),
                    }
                }
                (Role::List(_), _) => {
                    self.skip_value(depth + 1)?;
                    self.sink
                        .skip(line, format!("expected a string in {key:?}"));
                }
                _ => self.skip_value(depth + 1)?,
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    break;
                }
                _ => return Err(self.err("expected `,` or `]` in array")),
            }
        }
        match role {
            Role::List(_) => {}
            Role::Unsupported(why) => self.sink.skip(
                key_line,
                format!("{key:?} ignored: {why} ({elements} entries)"),
            ),
            Role::Unknown => self.sink.skip(
                key_line,
                format!("unknown key {key:?} ignored ({elements} entries)"),
            ),
        }
        Ok(())
    }

    /// Any value, for its syntax only.
    fn skip_value(&mut self, depth: usize) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.expect(b':')?;
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(self.err("expected `,` or `}` in object")),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(self.err("expected `,` or `]` in array")),
                    }
                }
            }
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                while matches!(
                    self.peek(),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.i += 1;
                }
                let number = &self.text[start..self.i];
                if number.parse::<f64>().is_ok() {
                    Ok(())
                } else {
                    Err(self.err(format!("bad number {number:?}")))
                }
            }
            Some(_) => Err(self.err("unexpected character")),
            None => Err(self.err("unexpected end of file")),
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), Error> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("unexpected character"))
        }
    }

    fn string(&mut self) -> Result<String, Error> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a string"));
        }
        self.i += 1;
        let mut out = String::new();
        loop {
            let run = self.b[self.i..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            let Some(run) = run else {
                return Err(self.err("unterminated string"));
            };
            // Stops only at ASCII bytes, so the slice is on char boundaries.
            out.push_str(&self.text[self.i..self.i + run]);
            self.i += run;
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.i += 1;
                    self.escape(&mut out)?;
                }
                _ => return Err(self.err("control character in string")),
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), Error> {
        let Some(c) = self.peek() else {
            return Err(self.err("unterminated string"));
        };
        self.i += 1;
        out.push(match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                if (0xD800..0xDC00).contains(&first) && self.b[self.i..].starts_with(b"\\u") {
                    let save = self.i;
                    self.i += 2;
                    let second = self.hex4()?;
                    if (0xDC00..0xE000).contains(&second) {
                        let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                        char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
                    } else {
                        self.i = save;
                        char::REPLACEMENT_CHARACTER
                    }
                } else {
                    // A lone surrogate: kept visible rather than dropped;
                    // normalisation will reject the entry.
                    char::from_u32(first).unwrap_or(char::REPLACEMENT_CHARACTER)
                }
            }
            _ => return Err(self.err(format!("bad escape `\\{}`", c as char))),
        });
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let digits = self
            .b
            .get(self.i..self.i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| {
                u32::from_str_radix(d, 16)
                    .ok()
                    .filter(|_| d.bytes().all(|b| b.is_ascii_hexdigit()))
            });
        match digits {
            Some(v) => {
                self.i += 4;
                Ok(v)
            }
            None => Err(self.err("bad `\\u` escape")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::{Format, ListOptions, ParsedList, Scope, Target};
    use std::path::Path;

    fn run(input: &str) -> ParsedList {
        super::super::parse_bytes(
            Path::new("t.json"),
            input.as_bytes(),
            &ListOptions {
                format: Some(Format::Json),
                ..ListOptions::default()
            },
        )
    }

    fn t(name: &str, scope: Scope) -> Target {
        Target::Name {
            name: name.into(),
            scope,
        }
    }

    #[test]
    fn rules_table() {
        use Action::{Allow, Block};
        use Scope::{Subdomains, Subtree};
        type Case = (&'static str, Vec<(u32, Target, Action)>);
        let cases: Vec<Case> = vec![
            (
                "{\"deny\": [\"a.com\"]}",
                vec![(1, t("a.com", Subtree), Block)],
            ),
            (
                "{\n\t\"allow\": [\n\t\t\"*.fleek.co\",\n\t\t\"pages.dev\"\n\t],\n\t\"deny\": [\n\t\t\"0xarb.xyz.\",\n\t\t\"IMXtoken.net\", \"aavè.com\"\n\t],\n\t\"denySub\": [\"twitter.com/AcalaNetworks\"]\n}\n",
                vec![
                    (3, t("fleek.co", Subdomains), Allow),
                    (4, t("pages.dev", Subtree), Allow),
                    (7, t("0xarb.xyz", Subtree), Block),
                    (8, t("imxtoken.net", Subtree), Block),
                    (8, t("xn--aav-8la.com", Subtree), Block),
                    (10, Target::Url("twitter.com/AcalaNetworks".into()), Block),
                ],
            ),
            (
                "{\"domains\":[\"a.com\",\n\"b.com\"]}",
                vec![
                    (1, t("a.com", Subtree), Block),
                    (2, t("b.com", Subtree), Block),
                ],
            ),
            (
                "[\"a.com\", \"104.168.169.107\"]",
                vec![
                    (1, t("a.com", Subtree), Block),
                    (
                        1,
                        Target::Ip("104.168.169.107/32".parse().expect("ip")),
                        Block,
                    ),
                ],
            ),
            (
                "{\"Blacklist\":[\"a.com\"],\"WHITELIST\":[\"b.com\"],\"blocklist\":[\"c.com\"],\"allowlist\":[\"d.com\"]}",
                vec![
                    (1, t("a.com", Subtree), Block),
                    (1, t("b.com", Subtree), Allow),
                    (1, t("c.com", Subtree), Block),
                    (1, t("d.com", Subtree), Allow),
                ],
            ),
            // Escapes decode before normalisation.
            (
                "[\"\\u0061.com\", \"b\\u00e8.com\", \"c.com\\/\"]",
                vec![
                    (1, t("a.com", Subtree), Block),
                    (1, t("xn--b-8fa.com", Subtree), Block),
                    (1, t("c.com", Subtree), Block),
                ],
            ),
            // Scalars and empty containers carry nothing and say nothing.
            (
                "{\"version\": 2, \"tolerance\": -1.5e3, \"ok\": true, \"x\": null, \"fuzzylist\": [], \"deny\": []}",
                vec![],
            ),
            ("{}", vec![]),
            ("[]", vec![]),
            ("\u{feff}[\"a.com\"]", vec![(1, t("a.com", Subtree), Block)]),
        ];
        for (input, want) in cases {
            let p = run(input);
            let got: Vec<_> = p
                .rules
                .into_iter()
                .map(|r| (r.line, r.target, r.action))
                .collect();
            assert_eq!(got, want, "input {input:?}");
            assert!(p.skipped.is_empty(), "input {input:?}: {:?}", p.skipped);
        }
    }

    /// (input, rules kept, skips as (line, reason substring)).
    #[test]
    fn skips_table() {
        type Case = (&'static str, usize, &'static [(u32, &'static str)]);
        let cases: &[Case] = &[
            ("", 0, &[(1, "invalid JSON: empty document")]),
            ("\n\n  ", 0, &[(3, "empty document")]),
            (
                "\"a.com\"",
                0,
                &[(1, "top level must be an object or an array")],
            ),
            (
                "{\"deny\": [\"a.com\", 5, {\"x\": 1}, [\"b.com\"]]}",
                1,
                &[
                    (1, "expected a string in \"deny\""),
                    (1, "expected a string in \"deny\""),
                    (1, "expected a string in \"deny\""),
                ],
            ),
            (
                "{\"deny\": \"a.com\"}",
                0,
                &[(1, "\"deny\" must be an array of strings")],
            ),
            (
                "{\n\"urls\": [\"a.com\", \"b.com\"]}",
                0,
                &[(2, "unknown key \"urls\" ignored (2 entries)")],
            ),
            (
                "{\"data\": {\"deny\": [\"a.com\"]}}",
                0,
                &[(1, "unknown key \"data\" ignored")],
            ),
            (
                "{\"fuzzylist\": [\"metamask.io\"]}",
                0,
                &[(1, "fuzzy-match lists are not supported")],
            ),
            (
                "[\"a.com\",\n\"bad..name\",\n\"c.com\"]",
                2,
                &[(2, "empty label")],
            ),
            (
                "[\"a.com\",\n\"b.com\"\n\"c.com\"]",
                2,
                &[(3, "expected `,` or `]` in array")],
            ),
            // Truncated download: what came before is kept and the cut reported.
            (
                "{\"deny\": [\n\"a.com\",\n\"b.co",
                1,
                &[(3, "unterminated string")],
            ),
            (
                "{\"deny\": [\"a.com\"]",
                1,
                &[(1, "expected `,` or `}` in object")],
            ),
            (
                "[\"a.com\"] x",
                1,
                &[(1, "unexpected text after the top-level value")],
            ),
            ("[\"a\nb.com\"]", 0, &[(1, "control character in string")]),
            ("[\"\\x\"]", 0, &[(1, "bad escape `\\x`")]),
            ("[\"\\u12\"]", 0, &[(1, "bad `\\u` escape")]),
            (
                "[\"\\ud800.com\"]",
                0,
                &[(1, "not a valid internationalised name")],
            ),
            ("{\"v\": tru}", 0, &[(1, "unexpected character")]),
            ("{\"v\": 1.2.3}", 0, &[(1, "bad number")]),
            ("{\"v\": [1,}", 0, &[(1, "unexpected character")]),
            ("{1: 2}", 0, &[(1, "expected a string")]),
            ("{\"a\" 2}", 0, &[(1, "expected `:`")]),
            (
                "[\"a.com\", \"\u{fffd}.com\"]",
                1,
                &[(1, "not a valid internationalised name")],
            ),
        ];
        for (input, rules, skips) in cases {
            let p = run(input);
            assert_eq!(p.rules.len(), *rules, "{input:?}: {:?}", p.rules);
            let got: Vec<_> = p
                .skipped
                .iter()
                .map(|s| (s.line, s.reason.as_str()))
                .collect();
            assert_eq!(got.len(), skips.len(), "{input:?}: {got:?}");
            for ((line, reason), (want_line, want)) in got.iter().zip(skips.iter()) {
                assert_eq!(line, want_line, "{input:?}: {got:?}");
                assert!(
                    reason.contains(want),
                    "{input:?}: {reason:?} lacks {want:?}"
                );
            }
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{{\"x\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let p = run(&deep);
        assert_eq!(p.skipped.len(), 1);
        assert!(p.skipped[0].reason.contains("nested too deeply"));
    }

    #[test]
    fn invalid_utf8_costs_only_its_entry() {
        let p = super::super::parse_bytes(
            Path::new("t.json"),
            b"[\"a.com\",\n\"b\xff.com\",\n\"c.com\"]",
            &ListOptions::default(),
        );
        assert_eq!(p.format, Format::Json);
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].line, 2);
    }

    #[test]
    fn surrogate_pairs() {
        // U+1F600 as a UTF-16 pair decodes to one char, the same name as
        // the raw character gives.
        let escaped = run("[\"\\ud83d\\ude00.com\"]");
        let raw = run("[\"\u{1f600}.com\"]");
        assert_eq!(escaped.rules, raw.rules);
        assert_eq!(escaped.skipped, raw.skipped);
        assert_eq!(escaped.rules.len() + escaped.skipped.len(), 1);
    }
}
