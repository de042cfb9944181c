//! List parsers: bytes in, [`ParsedList`] out. A parser never fails on
//! content: every line that cannot become a rule is a [`Skip`] with a
//! reason, so one clerk's typo never disables a whole list. Only I/O is an
//! error ([`ParseError`]).
//!
//! # Formats
//!
//! The format is taken from [`ListOptions::format`] when set, else from the
//! extension (`.rpz`/`.zone` → rpz, `.csv` → csv, `.json` → json, `.hosts`
//! → hosts), else sniffed from the content (see [`detect`]).
//!
//! ## Entries (shared by plain, hosts, AdBlock, CSV and JSON)
//!
//! Every entry is trimmed and then read as the first of these that fits:
//!
//! | entry | rule |
//! |---|---|
//! | `192.0.2.1`, `2001:db8::1`, `198.51.100.0/24` | IP rule (response-IP blocking later), never a name rule; host bits of a prefix are cleared |
//! | `http://host/path`, `https://host/?q=1`, `twitter.com/Account` | URL rule: kept for URL filtering, **never** blocks `host` at DNS level. The text is kept as written except that the scheme is lowercased and the host normalised; user info is dropped |
//! | `https://example.com/`, `http://example.com`, `example.com/` | the host, as a name (or IP) rule — a URL without a path names the whole site |
//! | `*.example.com` | names strictly below `example.com` (scope *subdomains*) |
//! | `example.com` | `example.com` and every name below it (scope *subtree*; *exact* when the list is exact-only) |
//!
//! A `*` anywhere else is skipped. Names are normalised by
//! [`crate::list::name::normalize`]: trimmed, lowercased, one trailing dot
//! removed, Unicode converted to punycode with UTS-46 (`aavè.com` →
//! `xn--aav-8la.com`), then checked (labels 1..=63 octets of `a-z 0-9 - _`,
//! at most 253 octets). A name that fails is skipped with the reason.
//!
//! ## plain
//!
//! One entry per line. Blank lines are ignored. A line starting with `#` or
//! `!` is a comment, and so is everything from a `#` that follows a space
//! or tab (`example.com  # added 2024-05-01`). `[Adblock Plus 2.0]`-style
//! header lines are ignored. A line with more than one word that is not a
//! hosts line is skipped ("unexpected text after entry"), which catches free
//! text typed into a list. Plain files also accept hosts lines, the AdBlock
//! subset and keyword lines below, so hand-written mixed files work.
//!
//! ## hosts
//!
//! `ADDRESS NAME [NAME...]`, separated by spaces or tabs, where ADDRESS is
//! an unspecified or loopback address (`0.0.0.0`, `127.0.0.1`, `::`, `::1`,
//! any `127/8`). Each name becomes a subtree rule. The names `localhost`,
//! `localhost.localdomain`, `local`, `broadcasthost`, `0.0.0.0` and the
//! Debian `ip6-*` names are ignored without a report. A line mapping a name
//! to any other address is skipped: that is a redirect, not a block. Comments
//! as in plain.
//!
//! ## AdBlock subset
//!
//! - `||example.com^` blocks `example.com` and its subdomains;
//!   `@@||example.com^` allows them. `||*.example.com^` covers the
//!   subdomains only. `||192.0.2.1^` is an IP rule.
//! - The only option accepted is `$important` (`||example.com^$important`),
//!   which does not change what a DNS rule covers. Every other option
//!   (`$third-party`, `$denyallow=…`, `$badfilter`, `$dnstype=…`, …)
//!   narrows or changes the rule in ways DNS cannot honour, so the rule is
//!   skipped rather than enforced more broadly than its author meant.
//! - `||name` without `^` (a URL prefix), rules with a path, cosmetic rules
//!   (`##`, `#@#`, `#?#`, `#$#`), `|`-anchored and `/regex/` rules are
//!   skipped with a reason.
//!
//! ## Keywords
//!
//! A line `keyword:WORD` (the prefix is case-insensitive; spaces after the
//! colon are ignored) blocks every name that has at least one label
//! containing `WORD` as a substring, at any position in that label:
//! `keyword:binance` blocks `binance.com`, `my-binance-login.net`,
//! `www.binancee.io` and `binance.example.org`, but not `bin.ance.com`.
//!
//! - `WORD` may not contain `.`; it therefore never spans a label boundary.
//! - `WORD` is lowercased; matching is on the normalised (lowercase,
//!   punycode) query name, so it is case-insensitive.
//! - A non-ASCII `WORD` is converted to its punycode A-label
//!   (`keyword:бинанс` → `xn--80abvuby`). Punycode does not preserve
//!   substrings, so such a keyword in practice only matches a label that is
//!   exactly that word; write ASCII keywords for typosquat matching.
//!   Likewise an ASCII keyword can match inside the punycode of an
//!   internationalised label.
//! - After conversion `WORD` must be 3 to 63 characters of `a-z 0-9 - _`;
//!   a shorter one would block far too much by accident and is skipped.
//!   A keyword always blocks: there is no allow form.
//!
//! Keyword lines are accepted in plain, hosts and AdBlock files.
//!
//! ## RPZ (draft-vixie-dnsop-dns-rpz)
//!
//! A zone master file. `;` comments, `( … )` across lines, `$ORIGIN`,
//! `$TTL` (ignored), optional TTL and class (`IN` only) fields, `@` for the
//! origin, a blank owner meaning the previous owner. `$INCLUDE` and other
//! directives are skipped with a reason.
//!
//! Owners: an absolute owner under `$ORIGIN` has the origin stripped; the
//! origin itself is the apex; an absolute owner outside `$ORIGIN` is
//! skipped. With no `$ORIGIN` (the origin comes from the loader's
//! configuration), relative owners are triggers as written and an absolute
//! owner is the name itself. Records at the apex and SOA/NS records are
//! ignored.
//!
//! Triggers: `name` is that name only (*exact*); `*.name` is the names
//! below it (*subdomains*). An owner with a label `rpz-ip`,
//! `rpz-client-ip`, `rpz-nsdname` or `rpz-nsip` (`32.1.2.0.192.rpz-ip`) is
//! kept as an RPZ-other rule with its owner, never as a name rule.
//!
//! Actions: `CNAME .` → NXDOMAIN; `CNAME *.` → NODATA;
//! `CNAME rpz-passthru.` (or the legacy CNAME to the owner itself) → allow;
//! `CNAME rpz-drop.` → drop; `A`/`AAAA` → answer with the address, all
//! A/AAAA records of one owner forming one rule (reported at the first
//! line). `CNAME rpz-tcp-only.`, CNAME rewrites to another name and other
//! local-data types are skipped with a reason. A bare `*` owner (every name)
//! is skipped.
//!
//! ## Registry CSV
//!
//! UTF-8 (a BOM is ignored) or, when the bytes are not valid UTF-8,
//! Windows-1251. Fields may be quoted with `"` (`""` inside for a quote,
//! newlines allowed). Lines starting with `#` and blank lines are ignored.
//!
//! The first line is a header naming the columns, case-insensitively, in
//! any order: `domain` (or `host`, `hostname`), `url` (or `urls`),
//! `authority`, `decision` (or `order`), `date`, `category`, `ips` (or
//! `ip`); other columns are ignored. The separator is `;` if the header has
//! more `;` than `,`, else `,`. At least a `domain` or a `url` column is
//! needed. The Roskomnadzor dump layout is also recognised: a first line
//! `Updated: …` followed by headerless rows
//! `IPs;domain;URL;authority;decision;date` (also without the `Updated:`
//! line when the first row has that shape).
//!
//! Each row:
//! - must have as many fields as the header; else it is skipped (this is
//!   how free text typed into the file is caught);
//! - the URL field may hold several URLs separated by `|`;
//! - each URL with a path beyond `/` becomes a URL rule: the order targets
//!   that page, so the host is never blocked for it;
//! - when the row has no URL, or at least one root URL (`http://host/`),
//!   the domain is blocked as a name (subtree), or as an IP rule when the
//!   domain is an address; with no domain, the root URL's host is used;
//! - the IPs column is not turned into rules: it records what the domain
//!   resolved to when listed, usually shared hosting or a CDN;
//! - every rule of the row carries decision, authority, date and category.
//!
//! ## JSON
//!
//! An object whose keys (case-insensitive) hold arrays of entry strings:
//! `deny`, `denySub`, `domains`, `blacklist`, `blocklist` block; `allow`,
//! `whitelist`, `allowlist` allow (`{"deny": [...], "allow": [...]}`,
//! polkadot-js; `{"domains": [...]}`, scamsniffer). A top-level array of
//! strings blocks. Scalar members (`"version": 2`) are ignored; an unknown
//! key holding an array is reported once, as is a `fuzzylist`. A non-string
//! element is skipped. Line numbers are the lines where each string starts.
//! A syntax error is reported at its line; rules before it are kept.

mod csv;
pub mod dump;
mod entry;
mod json;
mod rpz;
mod text;
mod xlsx;

#[cfg(test)]
mod tests_prop;
#[cfg(test)]
mod tests_real;

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::{Action, Counts, Format, ListOptions, ParsedList, Rule, RuleMeta, Scope, Skip, Target};

/// The only way parsing fails: the file (or directory) could not be read.
#[derive(Debug, Error)]
pub enum ParseError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Parse a file's bytes. Never fails and never panics: bad lines become
/// [`Skip`]s.
///
/// UTF-16 text (Excel's "Unicode Text", Notepad's "Unicode") is turned
/// into UTF-8 first, whatever the format, so line numbers stay those of
/// the file.
pub fn parse_bytes(path: &Path, bytes: &[u8], opts: &ListOptions) -> ParsedList {
    parse_bytes_with(path, bytes, opts, None).0
}

/// Where a parser of the large line formats (plain, hosts, AdBlock, CSV)
/// puts name rules as it meets them, instead of holding a [`Rule`] (a
/// `String` and a rule struct) per name until the whole file is read: the
/// compiler ([`crate::list::compile::Builder`]) keeps only key bytes and a
/// small row. Names arrive in file order with the list options applied.
pub(crate) trait NameSink {
    /// A list begins; its name rules follow.
    fn begin_list(&mut self, name: &str, path: &Path, format: Format);
    /// One name rule.
    fn name(&mut self, line: u32, name: &str, scope: Scope, action: Action, meta: &RuleMeta);
}

/// Parse a file's bytes like [`parse_bytes`], but announce the list to
/// `names` and stream its name rules there when the format is one of the
/// line formats (which emit rules in line order); the returned list then
/// holds only the other rules, and the counts are those of the streamed
/// names. Every other format keeps all its rules in the list.
pub(crate) fn parse_bytes_into(
    path: &Path,
    bytes: &[u8],
    opts: &ListOptions,
    names: &mut dyn NameSink,
) -> (ParsedList, Counts) {
    parse_bytes_with(path, bytes, opts, Some(names))
}

fn parse_bytes_with(
    path: &Path,
    bytes: &[u8],
    opts: &ListOptions,
    names: Option<&mut dyn NameSink>,
) -> (ParsedList, Counts) {
    let mut sink = Sink::default();
    let transcoded = match opts.format {
        Some(Format::Xlsx) => None,
        _ => utf16_to_utf8(bytes),
    };
    let bytes = match &transcoded {
        Some(t) => {
            sink.encoding = Some(t.encoding);
            if t.had_errors {
                sink.skip(
                    1,
                    format!(
                        "the file is not valid {}: characters were lost (truncated or saved with another encoding?)",
                        t.encoding
                    ),
                );
            }
            t.text.as_bytes()
        }
        None => bytes,
    };
    let format = opts.format.unwrap_or_else(|| detect(path, bytes));
    let name = opts.name.clone().unwrap_or_else(|| list_name(path));
    if let Some(names) = names {
        names.begin_list(&name, path, format);
        if matches!(
            format,
            Format::Plain | Format::Hosts | Format::Adblock | Format::Csv
        ) {
            sink.names = Some(Streamed {
                to: names,
                exact_only: opts.exact_only,
                action: opts.action,
                counts: Counts::default(),
            });
        }
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match format {
        Format::Plain | Format::Hosts | Format::Adblock => text::parse(bytes, format, &mut sink),
        Format::Rpz => rpz::parse(bytes, &mut sink),
        Format::Csv => csv::parse(bytes, &mut sink),
        Format::Json => json::parse(bytes, &mut sink),
        Format::Dump => match transcoded.as_ref() {
            Some(t) => dump::parse_transcoded(&t.text, &mut sink),
            None => dump::parse(bytes, &mut sink),
        },
        Format::Xlsx => xlsx::parse(bytes, &mut sink),
    }
    let streamed = sink
        .names
        .as_ref()
        .map_or_else(Counts::default, |s| s.counts);
    (finish(path, format, sink, opts, name), streamed)
}

/// Apply the list options to a parser's output and order it by line.
fn finish(path: &Path, format: Format, sink: Sink, opts: &ListOptions, name: String) -> ParsedList {
    let Sink {
        mut rules,
        mut skipped,
        ..
    } = sink;
    for rule in &mut rules {
        if let (
            true,
            Target::Name {
                scope: scope @ Scope::Subtree,
                ..
            },
        ) = (opts.exact_only, &mut rule.target)
        {
            *scope = Scope::Exact;
        }
        if let (Some(action), Action::Block) = (opts.action, rule.action) {
            rule.action = action;
        }
    }
    // Parsers emit in file order, except that a skip for a multi-line RPZ
    // record lands at its first line after skips of the lines it spans;
    // a stable sort of nearly sorted input is a linear pass, and makes
    // `FILE:LINE` reports read top to bottom whatever the parser did.
    rules.sort_by_key(|r| r.line);
    skipped.sort_by_key(|s| s.line);
    ParsedList {
        name,
        path: path.to_path_buf(),
        format,
        rules,
        skipped,
    }
}

/// Read and parse one file. Only I/O errors are errors.
///
/// A registry dump is streamed from the file rather than read whole: it
/// can be hundreds of MB, and only the rules it yields need to be held.
pub fn parse_file(path: &Path, opts: &ListOptions) -> Result<ParsedList, ParseError> {
    let io = |source| ParseError::Io {
        path: path.to_path_buf(),
        source,
    };
    let format = match opts.format {
        Some(format) => format,
        None => {
            let mut head = Vec::with_capacity(SNIFF_BYTES);
            std::io::Read::read_to_end(
                &mut std::io::Read::take(
                    std::fs::File::open(path).map_err(io)?,
                    SNIFF_BYTES as u64,
                ),
                &mut head,
            )
            .map_err(io)?;
            detect(path, &head)
        }
    };
    if format == Format::Dump {
        let file = std::fs::File::open(path).map_err(io)?;
        let mut input = std::io::BufReader::with_capacity(1 << 16, file);
        let head = std::io::BufRead::fill_buf(&mut input).map_err(io)?;
        // UTF-16 is transcoded whole (rare: the registry writes
        // windows-1251); everything else is streamed.
        if !is_utf16(head) {
            let mut sink = Sink::default();
            dump::parse(input, &mut sink);
            let name = opts.name.clone().unwrap_or_else(|| list_name(path));
            return Ok(finish(path, format, sink, opts, name));
        }
    }
    let bytes = std::fs::read(path).map_err(io)?;
    Ok(parse_bytes(
        path,
        &bytes,
        &ListOptions {
            format: Some(format),
            ..opts.clone()
        },
    ))
}

/// Text that was UTF-16 in the file.
struct Transcoded {
    text: String,
    encoding: &'static str,
    had_errors: bool,
}

/// Whether a CSV file's first line is a header (or the dump layout's
/// `Updated:` line) rather than a first row of data: only then can changed
/// rows be parsed below it on their own (`delta.rs`).
pub(crate) fn csv_header_is_not_data(line: &str) -> bool {
    csv::is_header_line(line)
}

/// Whether [`utf16_to_utf8`] takes these bytes (the start of a file is
/// enough) for UTF-16.
pub(crate) fn is_utf16(head: &[u8]) -> bool {
    utf16_encoding(head).is_some()
}

/// UTF-16 input as UTF-8: with a byte-order mark, or without one when the
/// first characters are ASCII with a zero byte beside each (list files
/// never hold NUL bytes). `None` for anything else.
fn utf16_to_utf8(bytes: &[u8]) -> Option<Transcoded> {
    let (encoding, body) = utf16_encoding(bytes)?;
    let (text, had_errors) = encoding.decode_without_bom_handling(body);
    Some(Transcoded {
        text: text.into_owned(),
        encoding: encoding.name(),
        had_errors,
    })
}

fn utf16_encoding(bytes: &[u8]) -> Option<(&'static encoding_rs::Encoding, &[u8])> {
    let (encoding, body) = if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        (encoding_rs::UTF_16LE, rest)
    } else if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        (encoding_rs::UTF_16BE, rest)
    } else {
        match bytes {
            [a, 0, b, 0, ..] if *a != 0 && *b != 0 && a.is_ascii() && b.is_ascii() => {
                (encoding_rs::UTF_16LE, bytes)
            }
            [0, a, 0, b, ..] if *a != 0 && *b != 0 && a.is_ascii() && b.is_ascii() => {
                (encoding_rs::UTF_16BE, bytes)
            }
            _ => return None,
        }
    };
    Some((encoding, body))
}

/// How much of a file [`parse_file`] reads to detect its format.
const SNIFF_BYTES: usize = 64 << 10;

/// Guess a file's format: the extension first, then the content.
///
/// Content sniffing, on the first meaningful lines: a JSON object or array
/// → json; a first line `Updated:` or a header with a `domain` column →
/// csv; `$TTL`/`$ORIGIN` or a record with a `SOA`/`CNAME`/`A`/`AAAA` type
/// field → rpz; otherwise whichever of hosts lines (`ADDRESS NAME`),
/// AdBlock lines (`||`, `@@`) and plain entries is most common, plain on a
/// tie.
pub fn detect(path: &Path, bytes: &[u8]) -> Format {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("rpz" | "zone") => return Format::Rpz,
        Some("csv") => return Format::Csv,
        Some("json") => return Format::Json,
        Some("hosts") => return Format::Hosts,
        Some("xml") => return Format::Dump,
        Some("xlsx") => return Format::Xlsx,
        _ => {}
    }
    if bytes.starts_with(b"PK\x03\x04") {
        // A zip archive: the only one sinkhole reads is a workbook.
        return Format::Xlsx;
    }
    match utf16_to_utf8(bytes) {
        Some(t) => sniff(t.text.as_bytes()),
        None => sniff(bytes),
    }
}

/// How many meaningful lines sniffing looks at: enough to outvote a few
/// odd lines, few enough to cost nothing on a 1M-line file.
const SNIFF_LINES: usize = 200;

fn sniff(bytes: &[u8]) -> Format {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Format::Plain;
    };
    let rest = &bytes[start..];
    if rest.starts_with(b"<?xml") || rest.starts_with(b"<reg:register") {
        return Format::Dump;
    }
    match bytes[start] {
        b'{' => return Format::Json,
        b'[' => {
            // `[Adblock Plus 2.0]` also starts with `[`.
            let next = bytes[start + 1..]
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .copied();
            if matches!(next, None | Some(b'"' | b']' | b'{' | b'[')) {
                return Format::Json;
            }
        }
        _ => {}
    }
    if looks_like_table(bytes) {
        return Format::Csv;
    }
    let (mut hosts, mut adblock, mut plain) = (0usize, 0usize, 0usize);
    let mut first = true;
    for raw in bytes.split(|&b| b == b'\n').take(SNIFF_LINES * 4) {
        let line = String::from_utf8_lossy(raw);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if first {
            first = false;
            if line.starts_with("Updated:") || csv::looks_like_header(line) {
                return Format::Csv;
            }
        }
        if line.starts_with(';') || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        if line.starts_with("$TTL") || line.starts_with("$ORIGIN") {
            return Format::Rpz;
        }
        let words: Vec<&str> = line.split_ascii_whitespace().take(5).collect();
        if looks_like_rr(&words) {
            return Format::Rpz;
        }
        if line.starts_with("||") || line.starts_with("@@") {
            adblock += 1;
        } else if words.len() > 1 && words[0].parse::<std::net::IpAddr>().is_ok() {
            hosts += 1;
        } else {
            plain += 1;
        }
        if hosts + adblock + plain >= SNIFF_LINES {
            break;
        }
    }
    if hosts > plain && hosts >= adblock {
        Format::Hosts
    } else if adblock > plain && adblock > hosts {
        Format::Adblock
    } else {
        Format::Plain
    }
}

/// A spreadsheet export whose header names no known column (tab or `;`
/// separated, as Excel saves): read as CSV so that the report says which
/// columns were found, instead of as a plain list with every line skipped.
fn looks_like_table(bytes: &[u8]) -> bool {
    let mut lines = bytes
        .split(|&b| b == b'\n')
        .take(SNIFF_LINES)
        .map(String::from_utf8_lossy)
        .filter(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with(['#', '!', ';', '$', '|', '@'])
        });
    let (Some(first), Some(second)) = (lines.next(), lines.next()) else {
        return false;
    };
    let rr = |l: &str| looks_like_rr(&l.split_ascii_whitespace().take(5).collect::<Vec<_>>());
    let (first, second) = (first.trim_end(), second.trim_end());
    !rr(first) && !rr(second) && csv::looks_like_table(first, second)
}

/// A resource record whose type is followed by data of the right shape,
/// so that free text such as "please add a site" is not taken for one.
fn looks_like_rr(words: &[&str]) -> bool {
    words.windows(2).skip(1).any(|w| {
        let data = w[1];
        match w[0].to_ascii_uppercase().as_str() {
            "SOA" => true,
            "CNAME" => data.ends_with('.'),
            "A" => data.parse::<std::net::Ipv4Addr>().is_ok(),
            "AAAA" => data.parse::<std::net::Ipv6Addr>().is_ok(),
            _ => false,
        }
    })
}

/// Expand the given paths into list files. A file named explicitly is
/// taken as is; a directory contributes its regular files (not
/// recursively), sorted, without dotfiles and editor/download leftovers
/// (`*.md`, `*.tmp`, `*.swp`, `*.part`, `*~`) so that a half-written file
/// or a README next to the lists is never loaded as a list.
pub fn list_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ParseError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ParseError::Io { path, source }
    };
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(io(path))?;
        if !meta.is_dir() {
            out.push(path.clone());
            continue;
        }
        let mut found = Vec::new();
        for dirent in std::fs::read_dir(path).map_err(io(path))? {
            let dirent = dirent.map_err(io(path))?;
            let file = dirent.path();
            let name = dirent.file_name();
            let Some(name) = name.to_str() else {
                // Not UTF-8: cannot be checked against the ignore rules
                // reliably, but it is still someone's list file.
                if std::fs::metadata(&file).is_ok_and(|m| m.is_file()) {
                    found.push(file);
                }
                continue;
            };
            if ignored_file_name(name) {
                continue;
            }
            // Follows symlinks; a dangling link is reported, since it is
            // most likely a list that went missing.
            if std::fs::metadata(&file).map_err(io(&file))?.is_file() {
                found.push(file);
            }
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// Files in a list directory that are never lists (temp files of a push in
/// progress, a source's previous content kept until its reload succeeds,
/// editor files, documentation).
pub(crate) fn ignored_file_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.ends_with('~')
        || [".md", ".tmp", ".swp", ".part", ".prev"]
            .iter()
            .any(|ext| lower.ends_with(ext))
}

fn list_name(path: &Path) -> String {
    match path.file_stem() {
        Some(stem) if !stem.is_empty() => stem.to_string_lossy().into_owned(),
        _ => path.display().to_string(),
    }
}

/// Collects a parser's output.
#[derive(Default)]
struct Sink<'a> {
    rules: Vec<Rule>,
    skipped: Vec<Skip>,
    /// Set when the bytes were transcoded before parsing (UTF-16), so a
    /// parser can name the encoding it was really given in its reports.
    encoding: Option<&'static str>,
    /// Where name rules go instead of `rules`, when they are streamed.
    names: Option<Streamed<'a>>,
}

/// Name rules streamed to a [`NameSink`], with the list options that
/// [`finish`] applies to kept rules applied here instead.
struct Streamed<'a> {
    to: &'a mut dyn NameSink,
    exact_only: bool,
    action: Option<Action>,
    counts: Counts,
}

impl Sink<'_> {
    fn rule(&mut self, line: u32, target: Target, action: Action) {
        self.rule_with_meta(line, target, action, RuleMeta::default());
    }

    fn rule_with_meta(&mut self, line: u32, target: Target, action: Action, meta: RuleMeta) {
        if let (Some(s), Target::Name { name, scope }) = (self.names.as_mut(), &target) {
            let scope = match scope {
                Scope::Subtree if s.exact_only => Scope::Exact,
                scope => *scope,
            };
            let action = match (s.action, action) {
                (Some(list_action), Action::Block) => list_action,
                _ => action,
            };
            // As `ParsedList::counts` counts a kept rule.
            if action.is_allow() {
                s.counts.allows += 1;
            } else if scope == Scope::Subdomains {
                s.counts.wildcards += 1;
            } else {
                s.counts.names += 1;
            }
            s.to.name(line, name, scope, action, &meta);
            return;
        }
        self.rules.push(Rule {
            target,
            action,
            local_data: Vec::new(),
            line,
            meta: meta.boxed(),
        });
    }

    fn skip(&mut self, line: u32, reason: impl Into<String>) {
        self.skipped.push(Skip {
            line,
            reason: reason.into(),
        });
    }
}

/// 1-based line numbers; a file with more than 4 billion lines reports the
/// last representable one rather than wrapping.
fn line_no(index: usize) -> u32 {
    u32::try_from(index.saturating_add(1)).unwrap_or(u32::MAX)
}

/// Split into lines with their 1-based numbers, dropping a `\r` before
/// `\n`. Lines are decoded one by one so that a single bad byte costs one
/// line, not the file.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (u32, Result<&str, std::str::Utf8Error>)> {
    bytes.split(|&b| b == b'\n').enumerate().map(|(i, raw)| {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        (line_no(i), std::str::from_utf8(raw))
    })
}

const NOT_UTF8: &str = "line is not valid UTF-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(format: Format) -> ListOptions {
        ListOptions {
            format: Some(format),
            ..ListOptions::default()
        }
    }

    #[test]
    fn detect_by_extension() {
        let cases: &[(&str, Format)] = &[
            ("a.rpz", Format::Rpz),
            ("a.ZONE", Format::Rpz),
            ("a.csv", Format::Csv),
            ("a.json", Format::Json),
            ("a.hosts", Format::Hosts),
        ];
        for (p, want) in cases {
            // Content that sniffs as something else: the extension wins.
            assert_eq!(detect(Path::new(p), b"example.com\n"), *want, "{p}");
        }
    }

    #[test]
    fn detect_by_content() {
        let cases: &[(&[u8], Format)] = &[
            (b"", Format::Plain),
            (b"example.com\n# c\nexample.org\n", Format::Plain),
            (b"\xEF\xBB\xBF{\"deny\":[]}", Format::Json),
            (b"  [\"a.com\"]", Format::Json),
            (b"[]", Format::Json),
            (b"[Adblock Plus 2.0]\n||a.com^\n||b.com^\n", Format::Adblock),
            (b"! title\n||a.com^\n@@||b.com^\nc.com\n", Format::Adblock),
            (b"# hosts\n0.0.0.0 a.com\n127.0.0.1\tb.com\n", Format::Hosts),
            (b"$TTL 300\n@ SOA a. b. 1 2 3 4 5\n", Format::Rpz),
            (b"; c\na.com CNAME .\n", Format::Rpz),
            (b"a.com 300 IN A 192.0.2.1\n", Format::Rpz),
            (b"Updated: 2014-04-22\n1.2.3.4;a.com;;x;y;z\n", Format::Csv),
            (b"Domain;URL;Decision\na.com;;1\n", Format::Csv),
            (b"\"domain\",\"decision\"\n", Format::Csv),
            (b"\xff\xfe\x00garbage", Format::Plain),
            (b"please add a site\nb.com\n", Format::Plain),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                detect(Path::new("list.txt"), bytes),
                *want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// Notepad's "Unicode" (UTF-16 LE with a BOM) and "Unicode big
    /// endian": any text format, read as UTF-8 with its own line numbers.
    #[test]
    fn utf16_text_in_every_format() {
        let encode = |text: &str, be: bool| -> Vec<u8> {
            let bom: &[u8] = if be { b"\xFE\xFF" } else { b"\xFF\xFE" };
            let units = text
                .encode_utf16()
                .flat_map(move |u| if be { u.to_be_bytes() } else { u.to_le_bytes() });
            bom.iter().copied().chain(units).collect()
        };
        let cases: &[(&str, &str, Format)] = &[
            (
                "l.txt",
                "# list\r\nscam.example\r\nаавè.example\r\n",
                Format::Plain,
            ),
            ("l.hosts", "0.0.0.0 scam.example\n", Format::Hosts),
            ("l.txt", "{\"deny\": [\n\"scam.example\"]}", Format::Json),
            ("l.txt", "scam.example CNAME .\n", Format::Rpz),
        ];
        for (name, text, format) in cases {
            for be in [false, true] {
                let p = parse_bytes(Path::new(name), &encode(text, be), &ListOptions::default());
                assert_eq!(p.format, *format, "{text:?}");
                assert!(p.skipped.is_empty(), "{text:?}: {:?}", p.skipped);
                let first = &p.rules[0];
                assert_eq!(
                    first.line,
                    if *format == Format::Plain {
                        2
                    } else {
                        first.line
                    }
                );
                assert!(
                    matches!(&first.target, Target::Name { name, .. } if name == "scam.example"),
                    "{text:?}: {:?}",
                    first.target
                );
            }
        }
        assert!(is_utf16(b"\xFF\xFEa\x00"));
        assert!(is_utf16(b"a\x00b\x00"));
        assert!(is_utf16(b"\x00a\x00b"));
        assert!(!is_utf16(b"ab\x00\x00"));
        assert!(!is_utf16(b"PK\x03\x04"));
    }

    #[test]
    fn list_name_and_options() {
        let p = parse_bytes(
            Path::new("/x/regulator.list.txt"),
            b"a.com\n||b.com^\n@@||c.com^\n*.d.com\n",
            &ListOptions {
                exact_only: true,
                action: Some(Action::Nxdomain),
                ..opts(Format::Plain)
            },
        );
        assert_eq!(p.name, "regulator.list");
        assert_eq!(p.path, Path::new("/x/regulator.list.txt"));
        let got: Vec<_> = p
            .rules
            .iter()
            .map(|r| (r.target.clone(), r.action))
            .collect();
        let name = |n: &str, scope| Target::Name {
            name: n.into(),
            scope,
        };
        assert_eq!(
            got,
            vec![
                (name("a.com", Scope::Exact), Action::Nxdomain),
                (name("b.com", Scope::Exact), Action::Nxdomain),
                // An allow stays an allow whatever the list's action.
                (name("c.com", Scope::Exact), Action::Allow),
                (name("d.com", Scope::Subdomains), Action::Nxdomain),
            ]
        );
        let named = parse_bytes(
            Path::new("x.txt"),
            b"a.com",
            &ListOptions {
                name: Some("gov".into()),
                ..ListOptions::default()
            },
        );
        assert_eq!(named.name, "gov");
        assert_eq!(named.format, Format::Plain);
        assert_eq!(named.rules[0].line, 1);
    }

    #[test]
    fn skip_messages_name_file_and_line() {
        let p = parse_bytes(
            Path::new("lists/gov.txt"),
            b"a.com\r\nbad..name\r\n",
            &ListOptions::default(),
        );
        let msgs: Vec<_> = p.skip_messages().collect();
        assert_eq!(msgs.len(), 1);
        assert!(
            msgs[0].starts_with("lists/gov.txt:2: empty label"),
            "{msgs:?}"
        );
    }

    #[test]
    fn parse_file_io_error_names_path() {
        let err = parse_file(Path::new("/nonexistent/list.txt"), &ListOptions::default())
            .expect_err("missing file");
        assert!(
            err.to_string().starts_with("/nonexistent/list.txt: "),
            "{err}"
        );
    }

    #[test]
    fn parse_file_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l.hosts");
        std::fs::write(&path, "0.0.0.0 a.com\n").expect("write");
        let p = parse_file(&path, &ListOptions::default()).expect("parse");
        assert_eq!(p.format, Format::Hosts);
        assert_eq!(p.name, "l");
        assert_eq!(p.rules.len(), 1);
    }

    #[test]
    fn list_files_expands_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for f in [
            "b.txt",
            "a.rpz",
            ".hidden",
            "README.md",
            "x.tmp",
            "y.swp",
            "z.part",
            "c.txt~",
            "NOTES.MD",
        ] {
            std::fs::write(d.join(f), "").expect("write");
        }
        std::fs::create_dir(d.join("sub")).expect("mkdir");
        std::fs::write(d.join("sub/inner.txt"), "").expect("write");
        let explicit = d.join(".hidden");
        let got = list_files(&[d.to_path_buf(), explicit.clone()]).expect("list");
        assert_eq!(got, vec![d.join("a.rpz"), d.join("b.txt"), explicit]);

        let missing = d.join("missing");
        let err = list_files(std::slice::from_ref(&missing)).expect_err("missing");
        assert!(
            err.to_string().contains(&*missing.to_string_lossy()),
            "{err}"
        );
    }
}
