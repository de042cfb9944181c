//! Registry CSV: a header naming the columns, or the Roskomnadzor dump
//! layout (`Updated:` line, then `IPs;domain;URL;authority;decision;date`).
//! Written by hand rather than with the `csv` crate because skip reports
//! need the source line of every record, quoted newlines included, and a
//! broken quote must cost one record, not the rest of the file.

use std::borrow::Cow;

use super::entry::{entry, ip, is_root_url};
use super::{Sink, line_no};
use crate::list::{RuleMeta, Scope, Target};
use crate::policy::Action;

pub(super) fn parse(bytes: &[u8], sink: &mut Sink) {
    let (text, encoding) = decode(bytes);
    let encoding = sink.encoding.unwrap_or(encoding);
    let mut reader = Reader::new(&text);
    // Comments and blank lines may precede the header.
    let (header_line, header_text) = loop {
        match reader.peek_line() {
            None => return,
            Some((_, l)) if l.trim().is_empty() || l.starts_with('#') => reader.skip_line(),
            Some(first) => break first,
        }
    };
    let (layout, data_starts_at_header) = if header_text.trim_start().starts_with("Updated:") {
        (Layout::zapret(), false)
    } else {
        let sep = separator(header_text);
        let header = reader.record(sep);
        match header.fields.map(|f| Layout::from_header(&f, sep)) {
            Ok(Some(layout)) => (layout, false),
            Ok(None) if is_zapret_row(header_text) => (Layout::zapret(), true),
            Ok(None) => {
                let found = reader_header(&text, header_line, sep);
                return sink.skip(header_line, no_column_message(&found, Some(sep), encoding));
            }
            Err(reason) => return sink.skip(header_line, reason),
        }
    };
    if data_starts_at_header {
        reader = Reader::new(&text);
    } else if layout.zapret {
        reader.skip_line();
    }

    while let Some(record) = reader.next_record(layout.sep) {
        let line = record.line;
        let fields = match record.fields {
            Ok(fields) => fields,
            Err(reason) => {
                sink.skip(line, reason);
                continue;
            }
        };
        if fields.len() == 1 && fields[0].trim().is_empty() {
            continue;
        }
        if fields.len() != layout.width {
            sink.skip(
                line,
                format!(
                    "expected {} fields, found {}: {:?}",
                    layout.width,
                    fields.len(),
                    excerpt(record.raw)
                ),
            );
            continue;
        }
        row(&layout, &fields, line, sink);
        reader.recycle(fields);
    }
}

/// UTF-8 when it is valid (the common case, borrowed), else Windows-1251,
/// the encoding of the Russian registry dumps, where every byte decodes.
/// (UTF-16 was turned into UTF-8 before the parser was called.)
fn decode(bytes: &[u8]) -> (Cow<'_, str>, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Cow::Borrowed(text), "UTF-8"),
        Err(_) => (
            encoding_rs::WINDOWS_1251
                .decode_without_bom_handling(bytes)
                .0,
            "windows-1251",
        ),
    }
}

/// The header's separator: whichever of tab, `;` and `,` it holds most
/// often outside quotes (a tab, then `;`, on a tie: a header with a tab in
/// it was exported with tabs); `,` when it has none.
fn separator(header: &str) -> u8 {
    let (mut tab, mut semi, mut comma) = (0usize, 0usize, 0usize);
    let mut quoted = false;
    for b in header.bytes() {
        match b {
            b'"' => quoted = !quoted,
            b'\t' if !quoted => tab += 1,
            b';' if !quoted => semi += 1,
            b',' if !quoted => comma += 1,
            _ => {}
        }
    }
    if tab > 0 && tab >= semi && tab >= comma {
        b'\t'
    } else if semi > comma {
        b';'
    } else {
        b','
    }
}

fn separator_name(sep: u8) -> &'static str {
    match sep {
        b'\t' => "tab",
        b';' => "semicolon",
        _ => "comma",
    }
}

/// The header's fields as read, for an error message.
fn reader_header(text: &str, line: u32, sep: u8) -> Vec<String> {
    let mut reader = Reader::new(text);
    while reader.peek_line().is_some_and(|(l, _)| l < line) {
        reader.skip_line();
    }
    match reader.record(sep).fields {
        Ok(fields) => fields.iter().map(|f| f.trim().to_string()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Why a table cannot be used, in the terms of whoever saved it.
fn no_column_message(found: &[String], sep: Option<u8>, encoding: &str) -> String {
    const MAX_SHOWN: usize = 12;
    let mut shown: Vec<String> = found
        .iter()
        .take(MAX_SHOWN)
        .map(|f| format!("{:?}", excerpt(f)))
        .collect();
    if found.len() > MAX_SHOWN {
        shown.push(format!("… ({} columns)", found.len()));
    }
    let read_as = match sep {
        Some(sep) => format!("read as {encoding} with {} separators", separator_name(sep)),
        None => format!("read as {encoding}"),
    };
    format!(
        "CSV header names neither a `domain` nor a `url` column: found {} ({read_as}); \
         the first row must name the columns, e.g. `domain;url;decision;authority;date`",
        shown.join(", ")
    )
}

/// Is this first line a header the parser takes as one (or an `Updated:`
/// line), not the first data row of a headerless dump layout?
pub(super) fn is_header_line(line: &str) -> bool {
    if line.trim_start().starts_with("Updated:") {
        return true;
    }
    let sep = separator(line);
    let mut reader = Reader::new(line);
    matches!(
        reader
            .record(sep)
            .fields
            .map(|f| Layout::from_header(&f, sep).is_some()),
        Ok(true)
    )
}

/// For format sniffing: does this first line look like a header with a
/// `domain` or `url` column?
pub(super) fn looks_like_header(line: &str) -> bool {
    let sep = separator(line) as char;
    line.split(sep).any(|f| {
        matches!(
            column(f.trim().trim_matches('"')),
            Some(Column::Domain | Column::Url)
        )
    })
}

/// For format sniffing: do the first two lines look like rows of a table
/// separated by tabs or `;` (a spreadsheet export whose header names
/// other columns)? Both must hold the same number of separators, and
/// neither may look like a hosts line or hold a `#` comment, so hosts and
/// commented plain lists are not taken for tables. The CSV reader then
/// says which columns it found instead of skipping every line.
pub(super) fn looks_like_table(first: &str, second: &str) -> bool {
    [b'\t', b';'].into_iter().any(|sep| {
        let count = |l: &str| l.bytes().filter(|&b| b == sep).count();
        let plausible = |l: &str| {
            let mut fields = l.split(sep as char).map(str::trim);
            fields
                .next()
                .is_some_and(|f| f.parse::<std::net::IpAddr>().is_err())
                && !l
                    .split(sep as char)
                    .any(|f| f.trim_start().starts_with('#'))
        };
        count(first) > 0 && count(first) == count(second) && plausible(first) && plausible(second)
    })
}

/// Rows of a spreadsheet (`.xlsx`): the first non-empty row is the header,
/// with the same column names as a CSV header; each row is read as a CSV
/// row. `line` is the spreadsheet's row number.
pub(super) fn parse_rows<'a>(
    rows: impl Iterator<Item = (u32, Vec<Cow<'a, str>>)>,
    sink: &mut Sink,
) {
    let mut rows = rows.filter(|(_, fields)| fields.iter().any(|f| !f.trim().is_empty()));
    let Some((header_line, header)) = rows.next() else {
        return;
    };
    let Some(layout) = Layout::from_header(&header, b',') else {
        let found: Vec<String> = header.iter().map(|f| f.trim().to_string()).collect();
        return sink.skip(
            header_line,
            no_column_message(&found, None, "a spreadsheet"),
        );
    };
    for (line, fields) in rows {
        row(&layout, &fields, line, sink);
    }
}

/// The dump's row shape: six `;` fields with a URL in the third.
fn is_zapret_row(line: &str) -> bool {
    let fields: Vec<&str> = line.split(';').collect();
    fields.len() == 6 && {
        let url = fields[2].trim_start().to_ascii_lowercase();
        url.is_empty() || url.starts_with("http://") || url.starts_with("https://")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    Domain,
    Url,
    Authority,
    Decision,
    Date,
    Category,
    Entry,
    Included,
    Ips,
}

fn column(name: &str) -> Option<Column> {
    Some(match name.to_lowercase().as_str() {
        "domain" | "host" | "hostname" => Column::Domain,
        "url" | "urls" => Column::Url,
        "authority" => Column::Authority,
        "decision" | "order" => Column::Decision,
        "date" => Column::Date,
        "category" => Column::Category,
        // The registry row's own id and inclusion time, as a dump's
        // `<content id includeTime>` (`includeTime` arrives lowercased).
        "entry" | "entry_id" | "id" => Column::Entry,
        "included" | "included_at" | "include_time" | "includetime" => Column::Included,
        "ips" | "ip" => Column::Ips,
        _ => return None,
    })
}

struct Layout {
    sep: u8,
    width: usize,
    zapret: bool,
    domain: Option<usize>,
    url: Option<usize>,
    authority: Option<usize>,
    decision: Option<usize>,
    date: Option<usize>,
    category: Option<usize>,
    entry: Option<usize>,
    included: Option<usize>,
}

impl Layout {
    fn zapret() -> Self {
        Layout {
            sep: b';',
            width: 6,
            zapret: true,
            domain: Some(1),
            url: Some(2),
            authority: Some(3),
            decision: Some(4),
            date: Some(5),
            category: None,
            entry: None,
            included: None,
        }
    }

    fn from_header(fields: &[Cow<'_, str>], sep: u8) -> Option<Self> {
        let mut layout = Layout {
            sep,
            width: fields.len(),
            zapret: false,
            domain: None,
            url: None,
            authority: None,
            decision: None,
            date: None,
            category: None,
            entry: None,
            included: None,
        };
        for (i, f) in fields.iter().enumerate() {
            // The first column of a name wins; a repeated one is ignored.
            let slot = match column(f.trim()) {
                Some(Column::Domain) => &mut layout.domain,
                Some(Column::Url) => &mut layout.url,
                Some(Column::Authority) => &mut layout.authority,
                Some(Column::Decision) => &mut layout.decision,
                Some(Column::Date) => &mut layout.date,
                Some(Column::Category) => &mut layout.category,
                Some(Column::Entry) => &mut layout.entry,
                Some(Column::Included) => &mut layout.included,
                Some(Column::Ips) | None => continue,
            };
            slot.get_or_insert(i);
        }
        (layout.domain.is_some() || layout.url.is_some()).then_some(layout)
    }
}

fn row(layout: &Layout, fields: &[Cow<'_, str>], line: u32, sink: &mut Sink) {
    let get = |i: Option<usize>| {
        i.and_then(|i| fields.get(i))
            .map(|f| f.trim())
            .filter(|f| !f.is_empty())
    };
    let mut meta = RuleMeta {
        decision: get(layout.decision).map(str::to_string),
        authority: get(layout.authority).map(str::to_string),
        date: get(layout.date).map(str::to_string),
        category: get(layout.category).map(str::to_string),
        entry: get(layout.entry).map(str::to_string),
        included: get(layout.included).map(str::to_string),
    };
    let domain = get(layout.domain);
    let url_field = get(layout.url);
    let urls = || {
        url_field
            .into_iter()
            .flat_map(|u| u.split('|'))
            .map(str::trim)
            .filter(|u| !u.is_empty())
    };
    let no_urls = urls().next().is_none();
    if domain.is_none() && no_urls {
        return sink.skip(line, "row has neither a domain nor a URL");
    }

    // Each URL is either a page (kept as a URL rule) or a site root.
    let mut root = false;
    let mut root_host = None;
    let mut page_urls = Vec::new();
    for url in urls() {
        if domain.is_some() && is_root_url(url) {
            // The domain column is what gets blocked; no need to
            // normalise the URL's host as well.
            root = true;
            continue;
        }
        match entry(url) {
            Ok(Target::Url(u)) => page_urls.push(u),
            Ok(
                host @ (Target::Name {
                    scope: Scope::Subtree,
                    ..
                }
                | Target::Ip(_)),
            ) => {
                root = true;
                root_host.get_or_insert(host);
            }
            Ok(_) => {
                return sink.skip(line, format!("not a URL: {url:?}"));
            }
            Err(reason) => return sink.skip(line, format!("URL {url:?}: {reason}")),
        }
    }
    let mut site = None;
    if no_urls || root {
        // The order names the whole site: block the domain as written in
        // the domain column, which is what the registry lists.
        let target = match domain {
            Some(domain) => match ip(domain) {
                Some(net) => Ok(Target::Ip(net)),
                None if domain
                    .bytes()
                    .any(|b| matches!(b, b'/' | b':') || b.is_ascii_whitespace()) =>
                {
                    Err(format!("domain field is not a name: {:?}", excerpt(domain)))
                }
                None => super::entry::name(domain),
            },
            None => root_host.ok_or_else(|| "row has no domain".to_string()),
        };
        match target {
            Ok(target) => site = Some(target),
            Err(reason) => return sink.skip(line, reason),
        }
    }
    let mut targets = site
        .into_iter()
        .chain(page_urls.into_iter().map(Target::Url))
        .peekable();
    while let Some(target) = targets.next() {
        let meta = if targets.peek().is_some() {
            meta.clone()
        } else {
            std::mem::take(&mut meta)
        };
        sink.rule_with_meta(line, target, Action::Block, meta);
    }
}

/// Enough of a bad record to recognise it in a report.
fn excerpt(s: &str) -> String {
    const MAX: usize = 80;
    let s = s.trim();
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

struct Record<'a> {
    /// 1-based line where the record starts.
    line: u32,
    raw: &'a str,
    fields: Result<Vec<Cow<'a, str>>, String>,
}

/// RFC 4180 records: `"` quotes a field (doubled inside), quoted fields
/// may hold separators and newlines; a `"` inside an unquoted field is
/// literal.
struct Reader<'a> {
    /// The last record's field vector, reused to spare an allocation per row.
    spare: Vec<Cow<'a, str>>,
    text: &'a str,
    pos: usize,
    /// 0-based line of `pos`.
    line: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Reader {
            spare: Vec::new(),
            text,
            pos: 0,
            line: 0,
        }
    }

    fn peek_line(&self) -> Option<(u32, &'a str)> {
        let rest = self.text.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let end = rest.find('\n').unwrap_or(rest.len());
        Some((line_no(self.line), rest[..end].trim_end_matches('\r')))
    }

    fn recycle(&mut self, mut fields: Vec<Cow<'a, str>>) {
        fields.clear();
        self.spare = fields;
    }

    fn skip_line(&mut self) {
        let rest = &self.text[self.pos..];
        match rest.find('\n') {
            Some(i) => {
                self.pos += i + 1;
                self.line += 1;
            }
            None => self.pos = self.text.len(),
        }
    }

    /// The next record that is not a `#` comment.
    fn next_record(&mut self, sep: u8) -> Option<Record<'a>> {
        loop {
            if self.pos >= self.text.len() {
                return None;
            }
            if self.text[self.pos..].starts_with('#') {
                self.skip_line();
                continue;
            }
            return Some(self.record(sep));
        }
    }

    fn record(&mut self, sep: u8) -> Record<'a> {
        let start = self.pos;
        let start_line = self.line;
        let bytes = self.text.as_bytes();
        let mut fields = std::mem::take(&mut self.spare);
        fields.clear();
        let mut i = self.pos;
        loop {
            // At the start of a field.
            if bytes.get(i) == Some(&b'"') {
                let mut value = String::new();
                let mut seg = i + 1;
                let mut j = i + 1;
                let mut lines = 0;
                loop {
                    match bytes.get(j) {
                        None => {
                            // Unterminated: report it and resume on the
                            // next line, so one stray quote costs one record.
                            self.pos = start;
                            self.line = start_line;
                            let raw = self.peek_line().map_or("", |(_, l)| l);
                            self.skip_line();
                            return Record {
                                line: line_no(start_line),
                                raw,
                                fields: Err("unterminated quoted field".into()),
                            };
                        }
                        Some(b'"') if bytes.get(j + 1) == Some(&b'"') => {
                            value.push_str(&self.text[seg..=j]);
                            j += 2;
                            seg = j;
                        }
                        Some(b'"') => {
                            value.push_str(&self.text[seg..j]);
                            j += 1;
                            break;
                        }
                        Some(b'\n') => {
                            lines += 1;
                            j += 1;
                        }
                        Some(_) => j += 1,
                    }
                }
                self.line += lines;
                // Text between the closing quote and the separator is kept:
                // being lenient here loses nothing a strict reader would save.
                let end = find_field_end(bytes, j, sep);
                value.push_str(self.text[j..end].trim_end_matches('\r'));
                fields.push(Cow::Owned(value));
                i = end;
            } else {
                let end = find_field_end(bytes, i, sep);
                fields.push(Cow::Borrowed(self.text[i..end].trim_end_matches('\r')));
                i = end;
            }
            match bytes.get(i) {
                Some(&b) if b == sep => i += 1,
                Some(b'\n') => {
                    i += 1;
                    self.line += 1;
                    break;
                }
                _ => break,
            }
        }
        self.pos = i;
        let raw = self.text[start..i].trim_end_matches(['\r', '\n']);
        Record {
            line: line_no(start_line),
            raw,
            fields: Ok(fields),
        }
    }
}

fn find_field_end(bytes: &[u8], from: usize, sep: u8) -> usize {
    bytes[from.min(bytes.len())..]
        .iter()
        .position(|&b| b == sep || b == b'\n')
        .map_or(bytes.len(), |p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::{Format, ListOptions, ParsedList};
    use std::path::Path;

    fn run(input: &[u8]) -> ParsedList {
        super::super::parse_bytes(
            Path::new("t.csv"),
            input,
            &ListOptions {
                format: Some(Format::Csv),
                ..ListOptions::default()
            },
        )
    }

    fn n(name: &str) -> Target {
        Target::Name {
            name: name.into(),
            scope: Scope::Subtree,
        }
    }

    fn meta(decision: &str, authority: &str, date: &str) -> RuleMeta {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        RuleMeta {
            decision: opt(decision),
            authority: opt(authority),
            date: opt(date),
            category: None,
            entry: None,
            included: None,
        }
    }

    #[test]
    fn rules_table() {
        let url = |u: &str| Target::Url(u.into());
        let ipn = |s: &str| Target::Ip(s.parse().expect("net"));
        let none = RuleMeta::default();
        type Case = (&'static str, Vec<(u32, Target, RuleMeta)>);
        let cases: Vec<Case> = vec![
            ("domain\na.com\n", vec![(2, n("a.com"), none.clone())]),
            (
                "Domain;Decision;Authority;Date\nA.com.;12-3;court;2024-01-02\n",
                vec![(2, n("a.com"), meta("12-3", "court", "2024-01-02"))],
            ),
            (
                "domain,category\r\na.com,gambling\r\n",
                vec![(
                    2,
                    n("a.com"),
                    RuleMeta {
                        category: Some("gambling".into()),
                        ..RuleMeta::default()
                    },
                )],
            ),
            // Root URL → the domain; a URL with a path → that URL only.
            (
                "domain,url\na.com,http://a.com/\nb.com,http://b.com\nc.com,http://c.com/page\nd.com,\n",
                vec![
                    (2, n("a.com"), none.clone()),
                    (3, n("b.com"), none.clone()),
                    (4, url("http://c.com/page"), none.clone()),
                    (5, n("d.com"), none.clone()),
                ],
            ),
            // Root URL on the www host still blocks the listed domain.
            (
                "domain;url\ngodspice.com;http://www.GodSpice.com\n",
                vec![(2, n("godspice.com"), none.clone())],
            ),
            // Several URLs in one field.
            (
                "domain;url\nnnm.me;http://nnm.me/a?t=1  | http://nnm.me/b \n",
                vec![
                    (2, url("http://nnm.me/a?t=1"), none.clone()),
                    (2, url("http://nnm.me/b"), none.clone()),
                ],
            ),
            (
                "domain;url\nx.me;http://x.me/a | http://x.me/\n",
                vec![
                    (2, n("x.me"), none.clone()),
                    (2, url("http://x.me/a"), none.clone()),
                ],
            ),
            // Only a URL column: a root URL's host is the name.
            (
                "url\nhttps://a.com/\nhttps://a.com/p\n",
                vec![
                    (2, n("a.com"), none.clone()),
                    (3, url("https://a.com/p"), none.clone()),
                ],
            ),
            // Bare IP domain; IP domain with a page URL is the URL only.
            (
                "domain;url\n200.63.44.21;http://200.63.44.21/\n94.102.63.77;https://94.102.63.77/h/1.html\n",
                vec![
                    (2, ipn("200.63.44.21/32"), none.clone()),
                    (3, url("https://94.102.63.77/h/1.html"), none.clone()),
                ],
            ),
            // Quoted fields with separators, quotes and a newline inside;
            // line numbers follow the physical lines.
            (
                "domain,decision\n\"a.com\",\"No. 1, \"\"final\"\"\"\n\"b.com\",\"two\nlines\"\nc.com,3\n",
                vec![
                    (2, n("a.com"), meta("No. 1, \"final\"", "", "")),
                    (3, n("b.com"), meta("two\nlines", "", "")),
                    (5, n("c.com"), meta("3", "", "")),
                ],
            ),
            // Comments, blank lines, trailing spaces, Unicode, duplicates.
            (
                "# exported\ndomain\n\nnavalny.co.uk \nлегально.com\nnavalny.co.uk\n",
                vec![
                    (4, n("navalny.co.uk"), none.clone()),
                    (5, n("xn--80affxdmh4i.com"), none.clone()),
                    (6, n("navalny.co.uk"), none.clone()),
                ],
            ),
            // Extra unknown columns are ignored; the first `domain` wins.
            (
                "no;domain;note;host\n1;a.com;x;b.com\n",
                vec![(2, n("a.com"), none.clone())],
            ),
            // The registry row's id and inclusion time, as a dump names them.
            (
                "id;domain;includeTime;decision\n7;a.com;2026-11-30T12:00:00;D-7\n;b.com;;\n",
                vec![
                    (
                        2,
                        n("a.com"),
                        RuleMeta {
                            entry: Some("7".into()),
                            included: Some("2026-11-30T12:00:00".into()),
                            ..meta("D-7", "", "")
                        },
                    ),
                    (3, n("b.com"), none.clone()),
                ],
            ),
            // UTF-8 BOM.
            (
                "\u{feff}domain\na.com\n",
                vec![(2, n("a.com"), none.clone())],
            ),
            // The dump layout, also without its `Updated:` line.
            (
                "Updated: 2014-04-22 11:05:00 +0000\n1.2.3.4 | 5.6.7.8;a.com;http://a.com/;court;1-2;2013-08-06\n",
                vec![(2, n("a.com"), meta("1-2", "court", "2013-08-06"))],
            ),
            (
                "1.2.3.4;a.com;http://a.com/x;court;1-2;2013-08-06\n1.2.3.4;b.com;;court;1-3;2013-08-06\n",
                vec![
                    (1, url("http://a.com/x"), meta("1-2", "court", "2013-08-06")),
                    (2, n("b.com"), meta("1-3", "court", "2013-08-06")),
                ],
            ),
        ];
        for (input, want) in cases {
            let p = run(input.as_bytes());
            let got: Vec<_> = p
                .rules
                .into_iter()
                .map(|r| (r.line, r.meta().clone(), r.target))
                .map(|(line, meta, target)| (line, target, meta))
                .collect();
            assert_eq!(got, want, "input {input:?}");
            assert!(p.skipped.is_empty(), "input {input:?}: {:?}", p.skipped);
        }
    }

    /// (input, line of the single skip, reason substring); no rules.
    #[test]
    fn skips_table() {
        let cases: &[(&str, u32, &str)] = &[
            ("id;note\n1;x\n", 1, "neither a `domain` nor a `url` column"),
            ("domain;url\n;\n", 2, "neither a domain nor a URL"),
            ("domain;url\na.com\n", 2, "expected 2 fields, found 1"),
            (
                "domain;url\na.com;http://a.com/;x\n",
                2,
                "expected 2 fields, found 3",
            ),
            (
                "Updated: 2014\nhttp://esl-bits.net/ - Добавьте пожалуйста в список.\n",
                2,
                "expected 6 fields, found 1",
            ),
            ("domain\nbad..name\n", 2, "empty label"),
            (
                "domain\nhttp://esl-bits.net/ - Добавьте\n",
                2,
                "domain field is not a name",
            ),
            (
                "domain;url\na.com;http://exa mple.com/x\n",
                2,
                "URL \"http://exa mple.com/x\": URL host",
            ),
            ("domain;url\na.com;*.a.com\n", 2, "not a URL"),
            ("domain\n\"a.com\n", 2, "unterminated quoted field"),
            ("\"domain\n", 1, "unterminated quoted field"),
        ];
        for (input, line, want) in cases {
            let p = run(input.as_bytes());
            assert!(p.rules.is_empty(), "{input:?}: {:?}", p.rules);
            assert_eq!(p.skipped.len(), 1, "{input:?}: {:?}", p.skipped);
            assert_eq!(p.skipped[0].line, *line, "{input:?}");
            assert!(
                p.skipped[0].reason.contains(want),
                "{input:?}: {:?} lacks {want:?}",
                p.skipped[0].reason
            );
        }
    }

    #[test]
    fn a_stray_quote_costs_one_record() {
        let p = run(b"domain,decision\n\"a.com,1\nb.com,2\nc.com,3\n");
        let lines: Vec<_> = p.rules.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![3, 4]);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].line, 2);
    }

    #[test]
    fn windows_1251() {
        // "Updated:" line, then a row whose authority is Роскомнадзор in cp1251.
        let mut bytes = b"Updated: 2014-04-22\n1.2.3.4;a.com;http://a.com/;".to_vec();
        let (auth, _, bad) = encoding_rs::WINDOWS_1251.encode("Роскомнадзор");
        assert!(!bad);
        bytes.extend_from_slice(&auth);
        bytes.extend_from_slice(b";9843-URL-on;2013-08-06\n");
        let p = run(&bytes);
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].meta().authority.as_deref(), Some("Роскомнадзор"));
        assert_eq!(p.rules[0].meta().decision.as_deref(), Some("9843-URL-on"));
        // The same text as UTF-8 stays UTF-8.
        let utf8 = "Updated: x\n1;a.com;;Роскомнадзор;1;2\n";
        assert_eq!(
            run(utf8.as_bytes()).rules[0].meta().authority.as_deref(),
            Some("Роскомнадзор")
        );
    }

    fn utf16(text: &str, big_endian: bool, bom: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if bom {
            out.extend_from_slice(if big_endian { b"\xFE\xFF" } else { b"\xFF\xFE" });
        }
        for unit in text.encode_utf16() {
            out.extend_from_slice(&if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            });
        }
        out
    }

    fn auto(name: &str, bytes: &[u8]) -> ParsedList {
        super::super::parse_bytes(Path::new(name), bytes, &ListOptions::default())
    }

    /// Files as clerks save them, each detected without a format setting
    /// (a `.txt` name, as Excel gives "Unicode Text"), with the same rules.
    #[test]
    fn clerk_exports() {
        let want = vec![
            (2, n("a.example"), meta("2025-17/KZ", "АФМ", "")),
            (
                3,
                Target::Url("http://b.example/x,y".into()),
                meta("No. 5;\tfinal", "", ""),
            ),
        ];
        // Excel "Unicode Text": UTF-16 LE with BOM, tabs, CRLF, quoted
        // fields only where they hold a tab or a quote.
        let unicode_text = "domain\turl\tdecision\tauthority\r\na.example\t\t2025-17/KZ\tАФМ\r\nb.example\thttp://b.example/x,y\t\"No. 5;\tfinal\"\t\r\n";
        let semicolons = "Domain;URL;Decision;Authority\na.example;;2025-17/KZ;АФМ\nb.example;http://b.example/x,y;\"No. 5;\tfinal\";\n";
        let commas = "domain,url,decision,authority\na.example,,2025-17/KZ,АФМ\nb.example,\"http://b.example/x,y\",\"No. 5;\tfinal\",\n";
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("utf-16le bom tab", utf16(unicode_text, false, true)),
            ("utf-16be bom tab", utf16(unicode_text, true, true)),
            ("utf-16le no bom tab", utf16(unicode_text, false, false)),
            ("utf-16be bom semicolon", utf16(semicolons, true, true)),
            (
                "utf-8 bom semicolon",
                format!("\u{feff}{semicolons}").into_bytes(),
            ),
            ("utf-8 comma quoted", commas.as_bytes().to_vec()),
        ];
        for (label, bytes) in cases {
            let p = auto("export.txt", &bytes);
            assert_eq!(p.format, Format::Csv, "{label}");
            assert!(p.skipped.is_empty(), "{label}: {:?}", p.skipped);
            let got: Vec<_> = p
                .rules
                .iter()
                .map(|r| (r.line, r.target.clone(), r.meta().clone()))
                .collect();
            assert_eq!(got, want, "{label}");
        }
    }

    /// What a clerk is told when the file cannot be read as a table.
    #[test]
    fn errors_in_the_clerks_terms() {
        let cases: Vec<(&str, Vec<u8>, u32, Vec<&str>)> = vec![
            (
                "utf-16 tab export, unknown columns",
                utf16("Сайт\tРешение\r\nscam.example\t1\r\n", false, true),
                1,
                vec![
                    "neither a `domain` nor a `url` column",
                    "found \"Сайт\", \"Решение\"",
                    "UTF-16LE with tab separators",
                ],
            ),
            (
                "semicolon export, unknown columns",
                "Сайт;Решение\nscam.example;1\n".as_bytes().to_vec(),
                1,
                vec![
                    "found \"Сайт\", \"Решение\"",
                    "UTF-8 with semicolon separators",
                ],
            ),
            (
                "windows-1251 export",
                encoding_rs::WINDOWS_1251
                    .encode("Сайт;Решение\nscam.example;1\n")
                    .0
                    .into_owned(),
                1,
                vec!["found \"Сайт\", \"Решение\"", "windows-1251 with semicolon"],
            ),
            (
                "truncated utf-16",
                {
                    let mut b = utf16("domain\na.example\n", false, true);
                    b.push(b'x');
                    b
                },
                1,
                vec!["not valid UTF-16LE"],
            ),
        ];
        for (label, bytes, line, wants) in cases {
            let p = auto("export.csv", &bytes);
            let skip = p
                .skipped
                .first()
                .unwrap_or_else(|| panic!("{label}: no skip"));
            assert_eq!(skip.line, line, "{label}");
            for want in wants {
                assert!(
                    skip.reason.contains(want),
                    "{label}: {:?} lacks {want:?}",
                    skip.reason
                );
            }
        }
    }

    #[test]
    fn tables_are_not_taken_for_lists_nor_lists_for_tables() {
        let detect = |bytes: &[u8]| super::super::detect(Path::new("list.txt"), bytes);
        // A table whose header names other columns is still a table.
        assert_eq!(detect(b"Site\tOrder\na.example\t1\n"), Format::Csv);
        assert_eq!(detect(b"Site;Order\na.example;1\n"), Format::Csv);
        // Hosts files, zone files and commented plain lists use tabs too.
        assert_eq!(
            detect(b"0.0.0.0\ta.example\n0.0.0.0\tb.example\n"),
            Format::Hosts
        );
        assert_eq!(
            detect(b"a.example\tCNAME\t.\nb.example\tCNAME\t.\n"),
            Format::Rpz
        );
        assert_eq!(
            detect(b"a.example\t# one\nb.example\t# two\n"),
            Format::Plain
        );
        assert_eq!(detect(b"a.example\nb.example\n"), Format::Plain);
        // One line alone proves nothing.
        assert_eq!(detect(b"a.example\tb\n"), Format::Plain);
    }

    #[test]
    fn header_sniffing() {
        assert!(looks_like_header("Domain;URL"));
        assert!(looks_like_header("\"id\",\"host\""));
        assert!(!looks_like_header("example.com"));
        assert!(looks_like_header("url\tdecision"));
        assert_eq!(separator("a;b,c;d"), b';');
        assert_eq!(separator("a\tb;c"), b'\t');
        assert_eq!(separator("\"a;b\",c"), b',');
        assert_eq!(separator("a\tb,c,d"), b',');
        assert_eq!(separator("a,b"), b',');
        assert_eq!(separator("a"), b',');
        assert!(is_zapret_row("1.2.3.4;a.com;http://a.com/;x;y;z"));
        assert!(!is_zapret_row("a;b;c;d;e;f"));
        assert_eq!(excerpt(&"я".repeat(100)).chars().count(), 81);
    }
}
