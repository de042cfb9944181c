//! Roskomnadzor-style registry dumps (`dump.xml`) and their deltas
//! (`dump_delta.xml`), read with quick-xml as a stream of `<content>`
//! elements: only one element is held at a time, so memory grows with the
//! rules, not with the file (a real dump is hundreds of MB).
//!
//! The encoding comes from the content: a BOM, else the XML declaration
//! (`encoding="windows-1251"`), else UTF-8. A `<!DOCTYPE>` is refused, so no
//! entity is ever defined, let alone expanded; only the five predefined
//! entities and character references are resolved.
//!
//! See `blocklists/FORMAT.md` ("Registry dump (dump.xml)") for what each
//! `blockType` becomes.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use quick_xml::Reader;
use quick_xml::encoding::Decoder;
use quick_xml::events::{BytesStart, Event};
use thiserror::Error;

use super::Sink;
use super::entry::{entry, ip};
use crate::list::name::normalize;
use crate::list::{RuleMeta, Scope, Target};
use crate::policy::Action;

/// Deeper than any dump nests (register > content > url); the limit keeps
/// hostile input from building deep trees.
const MAX_DEPTH: usize = 8;

/// Text one `<content>` element may hold (all its children together). The
/// largest real rows list a few thousand addresses; this only stops a
/// single unterminated element from swallowing the memory.
const MAX_CONTENT_BYTES: usize = 16 << 20;

/// Why a dump (or a delta) could not be read or written.
#[derive(Debug, Error)]
pub enum DumpError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        line: u32,
        reason: String,
    },
}

/// What [`apply_delta`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeltaStats {
    /// `<content>` elements of the base copied unchanged.
    pub kept: usize,
    /// Base elements dropped by a `<delete id>` of the delta.
    pub deleted: usize,
    /// Base elements dropped because the delta carries a new version of
    /// the same id.
    pub replaced: usize,
    /// The delta's `<content>` elements (new and replacing ones).
    pub added: usize,
    /// `<delete id>` naming an id the base does not have.
    pub unknown_deletes: usize,
}

impl DeltaStats {
    /// `<content>` elements in the written dump.
    pub fn contents(&self) -> usize {
        self.kept + self.added
    }
}

/// One element with everything below it, decoded to UTF-8.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Elem {
    /// The qualified name as written (`reg:register`, `content`).
    name: String,
    attrs: Vec<(String, String)>,
    /// Text and CDATA directly inside, entities resolved.
    text: String,
    children: Vec<Elem>,
    /// Line of the start tag.
    line: u32,
}

impl Elem {
    fn local_name(&self) -> &str {
        local(&self.name)
    }

    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| local(k) == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Elem> + 'a {
        self.children.iter().filter(move |c| c.local_name() == name)
    }

    fn texts<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.children_named(name)
            .map(|c| c.text.trim())
            .filter(|t| !t.is_empty())
    }
}

fn local(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, l)| l)
}

/// What the stream yields below the root element.
enum Item {
    Content(Elem),
    /// `<delete id=…/>` of a delta.
    Delete {
        id: Option<String>,
        line: u32,
    },
}

/// Why reading stopped, before a path is attached.
struct ReadError {
    line: u32,
    reason: String,
}

/// The streaming reader: the root element's start tag, then one [`Item`]
/// per call.
struct DumpReader<R: BufRead> {
    xml: Reader<R>,
    buf: Vec<u8>,
    /// 1-based line of the reader's position.
    line: u32,
    root: Option<Elem>,
    /// 0 before the root, 1 inside it, 2 after it.
    stage: u8,
    /// The input was transcoded to UTF-8 (it was UTF-16 in the file), so
    /// the declaration's `encoding` describes the file, not these bytes.
    transcoded: bool,
}

fn rerr(line: u32, reason: impl Into<String>) -> ReadError {
    ReadError {
        line,
        reason: reason.into(),
    }
}

fn newlines(bytes: &[u8]) -> u32 {
    u32::try_from(memchr::memchr_iter(b'\n', bytes).count()).unwrap_or(u32::MAX)
}

impl<'a> DumpReader<&'a [u8]> {
    /// A dump that was UTF-16 in the file, already turned into UTF-8.
    fn transcoded(text: &'a str) -> Self {
        let mut xml = Reader::from_str(text);
        xml.config_mut().trim_text(false);
        DumpReader {
            xml,
            buf: Vec::with_capacity(4096),
            line: 1,
            root: None,
            stage: 0,
            transcoded: true,
        }
    }
}

impl<R: BufRead> DumpReader<R> {
    fn new(mut input: R) -> Result<Self, ReadError> {
        // quick-xml reads ASCII-compatible encodings only; say so rather
        // than fail on the first byte.
        let head = input.fill_buf().map_err(|e| ReadError {
            line: 1,
            reason: e.to_string(),
        })?;
        if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
            return Err(ReadError {
                line: 1,
                reason: "the dump is UTF-16; save it as UTF-8 or windows-1251".into(),
            });
        }
        let mut xml = Reader::from_reader(input);
        let config = xml.config_mut();
        config.trim_text(false);
        config.check_end_names = true;
        config.expand_empty_elements = false;
        Ok(DumpReader {
            xml,
            buf: Vec::with_capacity(4096),
            line: 1,
            root: None,
            stage: 0,
            transcoded: false,
        })
    }

    /// The next item below the root, `None` at the end of the document.
    fn next_item(&mut self) -> Result<Option<Item>, ReadError> {
        loop {
            self.buf.clear();
            let at = self.line;
            let decoder = self.xml.decoder();
            let event = match self.xml.read_event_into(&mut self.buf) {
                Ok(event) => event,
                Err(e) => return Err(rerr(at, format!("invalid XML: {e}"))),
            };
            let consumed = newlines(&event);
            self.line = self.line.saturating_add(consumed);
            match event {
                Event::DocType(_) => {
                    return Err(rerr(
                        at,
                        "a DOCTYPE is not accepted in a registry dump (entities are never expanded)",
                    ));
                }
                Event::Decl(_) if self.transcoded => {}
                Event::Decl(decl) => {
                    if let Some(Ok(enc)) = decl.encoding() {
                        let known = encoding_rs::Encoding::for_label(&enc);
                        match known {
                            Some(e) if e.is_ascii_compatible() => {}
                            _ => {
                                let shown = String::from_utf8_lossy(&enc).into_owned();
                                return Err(rerr(
                                    at,
                                    format!(
                                        "unsupported encoding {shown:?}: save the dump as UTF-8 or windows-1251"
                                    ),
                                ));
                            }
                        }
                    }
                }
                Event::Start(start) if self.stage == 0 => {
                    let root = start_elem(&start, decoder, at).map_err(|r| rerr(at, r))?;
                    self.root = Some(root);
                    self.stage = 1;
                }
                Event::Empty(start) if self.stage == 0 => {
                    let root = start_elem(&start, decoder, at).map_err(|r| rerr(at, r))?;
                    self.root = Some(root);
                    self.stage = 2;
                }
                Event::Start(start) | Event::Empty(start) if self.stage == 2 => {
                    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                    return Err(rerr(at, format!("element <{name}> after the root element")));
                }
                Event::Start(start) => {
                    let elem = start_elem(&start, decoder, at).map_err(|r| rerr(at, r))?;
                    let elem = self.rest_of(elem)?;
                    if let Some(item) = item(elem) {
                        return Ok(Some(item));
                    }
                }
                Event::Empty(start) => {
                    let elem = start_elem(&start, decoder, at).map_err(|r| rerr(at, r))?;
                    if let Some(item) = item(elem) {
                        return Ok(Some(item));
                    }
                }
                Event::End(_) => self.stage = 2,
                Event::Text(text) => {
                    if self.stage == 0 && !text.iter().all(u8::is_ascii_whitespace) {
                        return Err(rerr(at, "no root element: not a registry dump"));
                    }
                    if self.stage == 2 && !text.iter().all(u8::is_ascii_whitespace) {
                        return Err(rerr(at, "text after the root element"));
                    }
                }
                Event::CData(_) | Event::GeneralRef(_) if self.stage != 1 => {
                    return Err(rerr(at, "text outside the root element"));
                }
                Event::CData(_) | Event::GeneralRef(_) | Event::Comment(_) | Event::PI(_) => {}
                Event::Eof => {
                    return match self.stage {
                        0 => Err(rerr(at, "no root element: not a registry dump")),
                        1 => Err(rerr(
                            at,
                            "the file ends inside the root element (truncated?)",
                        )),
                        _ => Ok(None),
                    };
                }
            }
        }
    }

    /// Read the children and text of `elem` (whose start tag was just
    /// read) up to its end tag.
    fn rest_of(&mut self, elem: Elem) -> Result<Elem, ReadError> {
        let mut stack = vec![elem];
        let mut size = 0usize;
        loop {
            self.buf.clear();
            let at = self.line;
            let decoder = self.xml.decoder();
            let event = match self.xml.read_event_into(&mut self.buf) {
                Ok(event) => event,
                Err(e) => return Err(rerr(at, format!("invalid XML: {e}"))),
            };
            self.line = self.line.saturating_add(newlines(&event));
            size = size.saturating_add(event.len());
            if size > MAX_CONTENT_BYTES {
                return Err(rerr(
                    stack[0].line,
                    format!(
                        "<{}> is larger than {} MiB",
                        stack[0].name,
                        MAX_CONTENT_BYTES >> 20
                    ),
                ));
            }
            let top = stack.len() - 1;
            match event {
                Event::Start(start) => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(rerr(at, "elements nested too deeply"));
                    }
                    let child = start_elem(&start, decoder, at).map_err(|r| rerr(at, r))?;
                    stack.push(child);
                }
                Event::Empty(start) => {
                    let child = start_elem(&start, decoder, at).map_err(|r| rerr(at, r))?;
                    stack[top].children.push(child);
                }
                Event::End(_) => {
                    // quick-xml checks that the end tag matches the start.
                    let done = stack.pop().ok_or_else(|| rerr(at, "unbalanced end tag"))?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => return Ok(done),
                    }
                }
                Event::Text(text) => {
                    let s = decoder.decode(&text).map_err(|e| {
                        rerr(at, format!("text is not valid {}: {e}", enc_name(decoder)))
                    })?;
                    stack[top].text.push_str(&s);
                }
                Event::CData(cdata) => {
                    let s = decoder.decode(&cdata).map_err(|e| {
                        rerr(at, format!("text is not valid {}: {e}", enc_name(decoder)))
                    })?;
                    stack[top].text.push_str(&s);
                }
                Event::GeneralRef(entity) => {
                    let resolved = match entity.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => {
                            let name = String::from_utf8_lossy(&entity).into_owned();
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .ok_or_else(|| rerr(at, format!("unknown entity &{name};")))?
                                .to_string()
                        }
                        Err(e) => return Err(rerr(at, format!("bad character reference: {e}"))),
                    };
                    stack[top].text.push_str(&resolved);
                }
                Event::DocType(_) => {
                    return Err(rerr(at, "a DOCTYPE is not accepted in a registry dump"));
                }
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
                Event::Eof => {
                    return Err(rerr(
                        at,
                        format!("the file ends inside <{}> (truncated?)", stack[top].name),
                    ));
                }
            }
        }
    }
}

fn enc_name(decoder: Decoder) -> &'static str {
    decoder.encoding().name()
}

fn item(elem: Elem) -> Option<Item> {
    match elem.local_name() {
        "content" => Some(Item::Content(elem)),
        "delete" => Some(Item::Delete {
            id: elem.attr("id").map(str::to_string),
            line: elem.line,
        }),
        // Elements a newer format may add are ignored, as the registry's
        // own clients do.
        _ => None,
    }
}

fn start_elem(start: &BytesStart<'_>, decoder: Decoder, line: u32) -> Result<Elem, String> {
    let name = decoder
        .decode(start.name().as_ref())
        .map_err(|e| format!("element name: {e}"))?
        .into_owned();
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| format!("<{name}>: bad attribute: {e}"))?;
        let key = decoder
            .decode(attr.key.as_ref())
            .map_err(|e| format!("<{name}>: attribute name: {e}"))?
            .into_owned();
        let value = attr
            .decode_and_unescape_value(decoder)
            .map_err(|e| format!("<{name}> {key}: {e}"))?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Elem {
        name,
        attrs,
        text: String::new(),
        children: Vec::new(),
        line,
    })
}

/// Parse a dump (or a delta loaded on its own) into rules. Never fails:
/// a broken element or a truncated file is one skip at its line, and the
/// rules before it are kept.
pub(super) fn parse<R: BufRead>(input: R, sink: &mut Sink) {
    match DumpReader::new(input) {
        Ok(reader) => read_rules(reader, sink),
        Err(e) => sink.skip(e.line, e.reason),
    }
}

/// [`parse`] for a dump that was UTF-16 in the file and is now UTF-8.
pub(super) fn parse_transcoded(text: &str, sink: &mut Sink) {
    read_rules(DumpReader::transcoded(text), sink);
}

fn read_rules<R: BufRead>(mut reader: DumpReader<R>, sink: &mut Sink) {
    loop {
        match reader.next_item() {
            Ok(Some(Item::Content(content))) => content_rules(&content, sink),
            Ok(Some(Item::Delete { line, .. })) => sink.skip(
                line,
                "a <delete> of a dump delta cannot be enforced on its own: push the delta against its base",
            ),
            Ok(None) => return,
            Err(e) => return sink.skip(e.line, e.reason),
        }
    }
}

/// The rules one `<content>` element orders.
fn content_rules(content: &Elem, sink: &mut Sink) {
    let line = content.line;
    let decision = content.children_named("decision").next();
    let meta = RuleMeta {
        decision: decision.and_then(|d| d.attr("number")).map(str::to_string),
        authority: decision.and_then(|d| d.attr("org")).map(str::to_string),
        date: decision.and_then(|d| d.attr("date")).map(str::to_string),
        category: None,
        entry: content.attr("id").map(str::to_string),
        included: content.attr("includeTime").map(str::to_string),
    };
    let id = content.attr("id").unwrap_or("?");
    let mut targets: Vec<Target> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    let mut skip = |reason: String| reasons.push(reason);
    match content.attr("blockType") {
        None | Some("default") => {
            let mut urls = content.texts("url").peekable();
            if urls.peek().is_none() {
                // A row without a URL names a site by its domain.
                for domain in content.texts("domain") {
                    match host(domain) {
                        Ok(t) => targets.push(t),
                        Err(r) => skip(r),
                    }
                }
            }
            for url in urls {
                match entry(url) {
                    Ok(Target::Url(u)) => targets.push(Target::Url(u)),
                    // A URL without a path (`http://host/`) names the
                    // host; a dump's hosts are exact (only `domain-mask`
                    // reaches below a name).
                    Ok(Target::Name { name, .. }) => targets.push(Target::Name {
                        name,
                        scope: Scope::Exact,
                    }),
                    Ok(t @ Target::Ip(_)) => targets.push(t),
                    Ok(_) => skip(format!("not a URL: {url:?}")),
                    Err(r) => skip(format!("URL {url:?}: {r}")),
                }
            }
        }
        Some("domain") => {
            for domain in content.texts("domain") {
                match host(domain) {
                    Ok(t) => targets.push(t),
                    Err(r) => skip(r),
                }
            }
        }
        Some("domain-mask") => {
            for domain in content.texts("domain") {
                let bare = domain.strip_prefix("*.").unwrap_or(domain);
                match normalize(bare) {
                    Ok(name) => targets.push(Target::Name {
                        name,
                        scope: Scope::Subdomains,
                    }),
                    Err(e) => skip(format!("domain mask {domain:?}: {e}")),
                }
            }
        }
        Some("ip") => {
            for tag in ["ip", "ipv6", "ipSubnet", "ipv6Subnet"] {
                for text in content.texts(tag) {
                    match ip(text) {
                        Some(net) => targets.push(Target::Ip(net)),
                        None => skip(format!("<{tag}> is not an address: {text:?}")),
                    }
                }
            }
        }
        Some(other) => {
            return sink_skip(sink, line, id, format!("unknown blockType {other:?}"));
        }
    }
    let reported = !reasons.is_empty();
    for reason in reasons {
        sink_skip(sink, line, id, reason);
    }
    if targets.is_empty() {
        if !reported {
            sink_skip(
                sink,
                line,
                id,
                format!(
                    "nothing to block for blockType {:?}",
                    content.attr("blockType").unwrap_or("default")
                ),
            );
        }
        return;
    }
    let last = targets.len() - 1;
    let mut meta = Some(meta);
    for (i, target) in targets.into_iter().enumerate() {
        let meta = if i == last {
            meta.take().unwrap_or_default()
        } else {
            meta.clone().unwrap_or_default()
        };
        sink.rule_with_meta(line, target, Action::Block, meta);
    }
}

fn sink_skip(sink: &mut Sink, line: u32, id: &str, reason: String) {
    sink.skip(line, format!("content id={id}: {reason}"));
}

/// A `<domain>`: the exact host, or an address when the registry lists one
/// in place of a name.
fn host(domain: &str) -> Result<Target, String> {
    if let Some(net) = ip(domain) {
        return Ok(Target::Ip(net));
    }
    normalize(domain)
        .map(|name| Target::Name {
            name,
            scope: Scope::Exact,
        })
        .map_err(|e| format!("domain {domain:?}: {e}"))
}

/// Apply a `dump_delta.xml` to a full dump: stream `base`, drop the
/// `<content>` elements the delta deletes (`<delete id>`) or replaces (a
/// `<content>` with the same id), append the delta's `<content>`
/// elements, and write the result as a full UTF-8 dump at `out`
/// (atomically: a temporary `out.part` is renamed over it). The root
/// element and its attributes come from the base, with `updateTime` and
/// `updateTimeUrgently` taken from the delta when it has them.
///
/// The delta is held in memory (a delta is small); the base is streamed.
/// Nothing is written at `out` unless both files read to their end.
pub fn apply_delta(base: &Path, delta: &Path, out: &Path) -> Result<DeltaStats, DumpError> {
    let (delta_root, deletes, adds) = read_delta(delta)?;
    let mut replaced_ids = std::collections::HashSet::new();
    for c in &adds {
        if let Some(id) = c.attr("id") {
            replaced_ids.insert(id.to_string());
        }
    }
    let deleted_ids: std::collections::HashSet<&str> = deletes.iter().map(String::as_str).collect();
    let mut seen_deletes = std::collections::HashSet::new();

    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DumpError::Io { path, source }
    };
    let file = File::open(base).map_err(io_err(base))?;
    let mut reader =
        DumpReader::new(BufReader::with_capacity(1 << 16, file)).map_err(|e| invalid(base, e))?;

    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let result = (|| {
        let file = File::create(&part).map_err(io_err(&part))?;
        let mut w = BufWriter::with_capacity(1 << 16, file);
        let mut stats = DeltaStats::default();
        let mut header_written = false;
        let write_header = |w: &mut BufWriter<File>, root: Option<&Elem>| {
            let mut root = root.cloned().unwrap_or_else(|| Elem {
                name: "reg:register".into(),
                attrs: vec![("xmlns:reg".into(), "http://rsoc.ru".into())],
                ..Elem::default()
            });
            for key in ["updateTime", "updateTimeUrgently"] {
                if let Some(v) = delta_root.as_ref().and_then(|d| d.attr(key)) {
                    match root.attrs.iter_mut().find(|(k, _)| k == key) {
                        Some(slot) => slot.1 = v.to_string(),
                        None => root.attrs.push((key.to_string(), v.to_string())),
                    }
                }
            }
            let mut head = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
            open_tag(&mut head, &root, false);
            head.push('\n');
            w.write_all(head.as_bytes())
        };
        let mut text = String::new();
        loop {
            let item = reader.next_item().map_err(|e| invalid(base, e))?;
            if !header_written {
                write_header(&mut w, reader.root.as_ref()).map_err(io_err(&part))?;
                header_written = true;
            }
            match item {
                Some(Item::Content(c)) => {
                    let id = c.attr("id");
                    if let Some(id) = id.filter(|id| deleted_ids.contains(id)) {
                        seen_deletes.insert(id.to_string());
                        stats.deleted += 1;
                        continue;
                    }
                    if id.is_some_and(|id| replaced_ids.contains(id)) {
                        stats.replaced += 1;
                        continue;
                    }
                    text.clear();
                    write_elem(&mut text, &c);
                    w.write_all(text.as_bytes()).map_err(io_err(&part))?;
                    stats.kept += 1;
                }
                // A full dump has no deletes; a base that does is a delta
                // itself and cannot be a base.
                Some(Item::Delete { line, .. }) => {
                    return Err(DumpError::Invalid {
                        path: base.to_path_buf(),
                        line,
                        reason: "the base holds a <delete>: it is a delta, not a full dump".into(),
                    });
                }
                None => break,
            }
        }
        for c in &adds {
            text.clear();
            write_elem(&mut text, c);
            w.write_all(text.as_bytes()).map_err(io_err(&part))?;
            stats.added += 1;
        }
        let root_name = reader
            .root
            .as_ref()
            .map_or("reg:register", |r| r.name.as_str());
        w.write_all(format!("</{root_name}>\n").as_bytes())
            .map_err(io_err(&part))?;
        let file = w.into_inner().map_err(|e| io_err(&part)(e.into_error()))?;
        file.sync_all().map_err(io_err(&part))?;
        stats.unknown_deletes = deleted_ids.len() - seen_deletes.len();
        Ok(stats)
    })();
    match result {
        Ok(stats) => {
            std::fs::rename(&part, out).map_err(io_err(out))?;
            Ok(stats)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// The delta's root, the ids it deletes and its `<content>` elements.
type Delta = (Option<Elem>, Vec<String>, Vec<Elem>);

fn read_delta(path: &Path) -> Result<Delta, DumpError> {
    let file = File::open(path).map_err(|source| DumpError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = DumpReader::new(BufReader::new(file)).map_err(|e| invalid(path, e))?;
    let (mut deletes, mut adds) = (Vec::new(), Vec::new());
    while let Some(item) = reader.next_item().map_err(|e| invalid(path, e))? {
        match item {
            Item::Content(c) => adds.push(c),
            Item::Delete { id: Some(id), .. } => deletes.push(id),
            Item::Delete { id: None, line } => {
                return Err(DumpError::Invalid {
                    path: path.to_path_buf(),
                    line,
                    reason: "<delete> without an id".into(),
                });
            }
        }
    }
    Ok((reader.root, deletes, adds))
}

fn invalid(path: &Path, e: ReadError) -> DumpError {
    DumpError::Invalid {
        path: path.to_path_buf(),
        line: e.line,
        reason: e.reason,
    }
}

fn open_tag(out: &mut String, elem: &Elem, empty: bool) {
    out.push('<');
    out.push_str(&elem.name);
    for (k, v) in &elem.attrs {
        out.push(' ');
        out.push_str(k);
        out.push_str("=\"");
        out.push_str(&quick_xml::escape::escape(v.as_str()));
        out.push('"');
    }
    out.push_str(if empty { "/>" } else { ">" });
}

/// Serialise an element as UTF-8 XML: text in CDATA (as the registry
/// writes it) unless it holds `]]>`, then escaped.
fn write_elem(out: &mut String, elem: &Elem) {
    let empty = elem.text.is_empty() && elem.children.is_empty();
    open_tag(out, elem, empty);
    if empty {
        out.push('\n');
        return;
    }
    if !elem.text.trim().is_empty() || elem.children.is_empty() {
        if elem.text.contains("]]>") {
            out.push_str(&quick_xml::escape::escape(elem.text.as_str()));
        } else {
            out.push_str("<![CDATA[");
            out.push_str(&elem.text);
            out.push_str("]]>");
        }
    }
    if !elem.children.is_empty() {
        out.push('\n');
        for child in &elem.children {
            write_elem(out, child);
        }
    }
    out.push_str("</");
    out.push_str(&elem.name);
    out.push_str(">\n");
}

#[cfg(test)]
mod tests;
