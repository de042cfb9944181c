//! URL rules of a snapshot, indexed by host: "does this host have URL
//! rules" (every A/AAAA query when the web front is on) is one hash
//! lookup, and "which rule covers this request" walks that host's rules
//! only.
//!
//! The rules live in the extra section as text lines ([`url_line`], written
//! by `compile.rs`): `url TAB file TAB line TAB canonical-url TAB action`,
//! then one string offset per `RuleMeta` field in `RuleMeta::fields` order
//! (decision, authority, date, category, entry, included). The
//! index is built on first use and shared by the layered snapshots of an
//! incremental reload (which never changes URL rules: a changed URL line
//! forces a full compile), whose line moves are applied on read.

use std::collections::HashMap;

use super::{
    LineMap, META_AUTHORITY, META_CATEGORY, META_DATE, META_DECISION, META_ENTRY, META_INCLUDED,
    NO_STRING, SEC_EXTRA, Snapshot, action_from_code, le_u32,
};
use crate::list::url::NormUrl;
use crate::list::{META_FIELDS, RuleMeta};
use crate::policy::Action;

/// One URL rule, parsed back from the snapshot.
#[derive(Clone, Debug)]
pub struct UrlRule {
    pub url: NormUrl,
    file: u16,
    line: u32,
    action: Action,
    /// The `RuleMeta` fields (string offsets), in `RuleMeta::fields` order.
    meta: [u32; META_FIELDS],
}

/// The URL rules of a snapshot by host.
#[derive(Debug, Default)]
pub struct UrlIndex {
    by_host: HashMap<Box<str>, Vec<UrlRule>>,
    rules: usize,
}

impl UrlIndex {
    pub fn rule_count(&self) -> usize {
        self.rules
    }
    pub fn host_count(&self) -> usize {
        self.by_host.len()
    }
}

/// A URL rule with what it takes to quote it: list, file, line, legal
/// references.
#[derive(Clone, Copy)]
pub struct UrlRuleView<'s> {
    snap: &'s Snapshot,
    rule: &'s UrlRule,
}

impl<'s> UrlRuleView<'s> {
    /// The rule's canonical text (`list::url`).
    pub fn text(&self) -> String {
        self.rule.url.to_string()
    }
    pub fn url(&self) -> &'s NormUrl {
        &self.rule.url
    }
    pub fn action(&self) -> Action {
        self.rule.action
    }
    pub fn list(&self) -> &'s str {
        self.snap
            .string(self.snap.file_entry(self.rule.file).0)
            .unwrap_or("")
    }
    pub fn file(&self) -> &'s str {
        self.snap.file_path(self.rule.file)
    }
    /// 1-based line in the source file (after any incremental reload's
    /// line moves).
    pub fn line(&self) -> u32 {
        let remap: Option<&LineMap> = self
            .snap
            .layer()
            .and_then(|l| l.remap.get(self.rule.file as usize));
        remap.map_or(self.rule.line, |m| m.map(self.rule.line))
    }
    fn field(&self, i: usize) -> Option<&'s str> {
        self.snap.string(self.rule.meta[i])
    }
    pub fn decision(&self) -> Option<&'s str> {
        self.field(META_DECISION)
    }
    pub fn authority(&self) -> Option<&'s str> {
        self.field(META_AUTHORITY)
    }
    pub fn date(&self) -> Option<&'s str> {
        self.field(META_DATE)
    }
    pub fn category(&self) -> Option<&'s str> {
        self.field(META_CATEGORY)
    }
    /// The registry entry's id (a dump's `<content id>`).
    pub fn entry(&self) -> Option<&'s str> {
        self.field(META_ENTRY)
    }
    /// When the registry entry was included (a dump's `includeTime`).
    pub fn included(&self) -> Option<&'s str> {
        self.field(META_INCLUDED)
    }
    /// Every provenance field, owned.
    pub fn meta(&self) -> RuleMeta {
        RuleMeta::from_fields(std::array::from_fn(|i| self.field(i)))
    }
}

impl std::fmt::Debug for UrlRuleView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlRuleView")
            .field("rule", &self.text())
            .field("file", &self.file())
            .field("line", &self.line())
            .finish()
    }
}

/// The extra section's line for a URL rule of file `file` at `line`
/// (without its `\n`); `meta` holds the string offsets of its `RuleMeta`
/// fields. Canonical URL text has no tab or newline (`list::url` escapes
/// them), so the fields cannot run into each other.
pub(crate) fn url_line(
    file: usize,
    line: u32,
    url: &str,
    action: u8,
    meta: [u32; META_FIELDS],
) -> String {
    use std::fmt::Write as _;
    let mut s = format!("url\t{file}\t{line}\t{url}\t{action}");
    for off in meta {
        let _ = write!(s, "\t{off}");
    }
    s
}

/// Read the URL lines of the extra section. Lines that do not parse (a
/// damaged or hand-made snapshot) are left out: enforcement of the others
/// goes on.
pub(super) fn build(snap: &Snapshot) -> UrlIndex {
    let extra = snap.section(SEC_EXTRA);
    let n = le_u32(extra, 0) as usize;
    let rest = extra.get(4 + n * 8..).unwrap_or(&[]);
    let mut index = UrlIndex::default();
    for line in rest.split(|&b| b == b'\n') {
        let Some(rule) = line.strip_prefix(b"url\t").and_then(parse_line) else {
            continue;
        };
        // Allow rules and schemes the front cannot see (ftp://…) are
        // reported by `lookup`, never enforced.
        if rule.action.is_allow() || !rule.url.is_web() {
            continue;
        }
        index.rules += 1;
        index
            .by_host
            .entry(rule.url.host.clone().into_boxed_str())
            .or_default()
            .push(rule);
    }
    index
}

fn parse_line(line: &[u8]) -> Option<UrlRule> {
    let text = std::str::from_utf8(line).ok()?;
    let mut f = text.split('\t');
    let file = f.next()?.parse().ok()?;
    let line = f.next()?.parse().ok()?;
    let url = NormUrl::parse(f.next()?).ok()?;
    let action = action_from_code(f.next().and_then(|a| a.parse().ok()).unwrap_or(1));
    let mut meta = [NO_STRING; META_FIELDS];
    for m in &mut meta {
        *m = f.next().and_then(|v| v.parse().ok()).unwrap_or(NO_STRING);
    }
    Some(UrlRule {
        url,
        file,
        line,
        action,
        meta,
    })
}

impl Snapshot {
    /// The URL rule index (built on first use).
    pub fn url_index(&self) -> &UrlIndex {
        self.urls.get_or_init(|| std::sync::Arc::new(build(self)))
    }

    /// Whether `host` (lower-case dotted, trailing dot optional) has URL
    /// rules: the DNS side steers exactly these hosts to the web front.
    pub fn has_url_rules(&self, host: &[u8]) -> bool {
        let index = self.url_index();
        if index.by_host.is_empty() {
            return false;
        }
        let host = host.strip_suffix(b".").unwrap_or(host);
        std::str::from_utf8(host).is_ok_and(|h| index.by_host.contains_key(h))
    }

    /// Every URL rule of `host`, in list order.
    pub fn url_rules_for(&self, host: &str) -> Vec<UrlRuleView<'_>> {
        self.url_index()
            .by_host
            .get(host)
            .map(|rules| {
                rules
                    .iter()
                    .map(|rule| UrlRuleView { snap: self, rule })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The rule that covers `req`: among the host's rules that cover it,
    /// the longest path wins (then a rule with a query, then the first
    /// listed).
    pub fn match_url(&self, req: &NormUrl) -> Option<UrlRuleView<'_>> {
        let rules = self.url_index().by_host.get(req.host.as_str())?;
        rules
            .iter()
            .filter(|r| r.url.covers(req))
            .min_by_key(|r| (std::cmp::Reverse(r.url.path.len()), r.url.query.is_none()))
            .map(|rule| UrlRuleView { snap: self, rule })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::list::parse::parse_bytes;
    use crate::list::url::NormUrl;
    use crate::list::{Format, ListOptions, compile};

    fn snap() -> crate::list::Snapshot {
        let csv = "domain;url;decision;authority;date\n\
                   court.example;http://court.example/page;D-1;Court;2026-01-02\n\
                   court.example;https://court.example/dir/;D-2;Court;2026-01-03\n\
                   ;court.example/dir/deep/x;D-3;Ministry;2026-01-04\n\
                   ;http://q.example/p?id=1;D-4;Court;2026-01-05\n\
                   ;ftp://files.example/f;D-5;Court;2026-01-06\n";
        let opts = ListOptions {
            format: Some(Format::Csv),
            ..ListOptions::default()
        };
        let a = parse_bytes(Path::new("reg.csv"), csv.as_bytes(), &opts);
        assert!(a.skipped.is_empty(), "{:?}", a.skipped);
        compile(&[a]).expect("compile")
    }

    fn req(host: &str, target: &str) -> NormUrl {
        NormUrl::from_request(host, target).expect("request")
    }

    #[test]
    fn rules_keep_their_provenance_and_the_most_specific_wins() {
        let s = snap();
        assert!(s.has_url_rules(b"court.example"));
        assert!(s.has_url_rules(b"court.example."));
        assert!(!s.has_url_rules(b"www.court.example"));
        // The ftp rule is kept for `lookup` but the front cannot enforce it.
        assert!(!s.has_url_rules(b"files.example"));
        assert_eq!(s.url_index().rule_count(), 4);

        let m = s.match_url(&req("court.example", "/page")).expect("match");
        assert_eq!(m.text(), "http://court.example/page");
        assert_eq!(
            (m.decision(), m.authority(), m.date(), m.line(), m.list()),
            (Some("D-1"), Some("Court"), Some("2026-01-02"), 2, "reg")
        );
        let m = s
            .match_url(&req("court.example", "/dir/deep/x"))
            .expect("match");
        assert_eq!(
            (m.text().as_str(), m.decision()),
            ("court.example/dir/deep/x", Some("D-3"))
        );
        let m = s
            .match_url(&req("court.example", "/dir/other"))
            .expect("match");
        assert_eq!(m.decision(), Some("D-2"));
        assert!(s.match_url(&req("court.example", "/")).is_none());
        assert!(s.match_url(&req("q.example", "/p?id=2")).is_none());
        assert!(s.match_url(&req("q.example", "/p?id=1")).is_some());
        assert_eq!(s.url_rules_for("court.example").len(), 3);
    }

    #[test]
    fn survives_save_and_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("snap");
        snap().save(&path).expect("save");
        let s = crate::list::Snapshot::open(&path).expect("open");
        let m = s.match_url(&req("court.example", "/page")).expect("match");
        assert_eq!(m.decision(), Some("D-1"));
        // `deferred_rules` still lists the URL text alone.
        assert!(
            s.deferred_rules()
                .iter()
                .any(|(kind, text, _, line)| kind == "url"
                    && text == "http://court.example/page"
                    && *line == 2)
        );
    }
}
