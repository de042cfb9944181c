//! Blocklist ingestion: `parse` turns files into [`Rule`]s with provenance,
//! `compile` turns rules into an immutable [`Snapshot`], `reload` swaps it.

mod bloom;
pub mod compile;
pub mod config;
pub(crate) mod delta;
pub(crate) mod guards;
pub mod load;
pub(crate) mod merge;
pub mod name;
pub mod parse;
#[cfg(test)]
pub(crate) mod reference;
pub mod reload;
pub mod snapshot;
pub mod state;
pub mod url;
pub(crate) mod watch;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::policy::Action;

pub use compile::{CompileError, compile, compile_versioned};
pub use load::{FileRead, FileReport, LoadError, Loaded, OnRead, OptionsFor, load};
pub use snapshot::{
    Match, MatchedKey, RuleId, RuleView, Snapshot, SnapshotDiff, SnapshotError, diff,
};

/// The text formats sinkhole reads. `Plain` also accepts `*.name`,
/// `||name^`, `@@||name^` and `keyword:` lines, so mixed hand-written
/// files work; the detected format is what most lines looked like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Plain,
    Hosts,
    Adblock,
    Rpz,
    Csv,
    Json,
    /// A Roskomnadzor-style registry dump (`dump.xml`).
    Dump,
    /// A spreadsheet (`.xlsx`), read like registry CSV.
    Xlsx,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Hosts => "hosts",
            Format::Adblock => "adblock",
            Format::Rpz => "rpz",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Dump => "dump",
            Format::Xlsx => "xlsx",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "plain" | "domains" | "wildcard" => Format::Plain,
            "hosts" => Format::Hosts,
            "adblock" | "abp" => Format::Adblock,
            "rpz" | "zone" => Format::Rpz,
            "csv" | "registry" => Format::Csv,
            "json" => Format::Json,
            "dump" | "xml" | "dump.xml" => Format::Dump,
            "xlsx" | "excel" => Format::Xlsx,
            other => return Err(format!("unknown list format {other:?}")),
        })
    }
}

/// Which names a name rule covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The name itself only (RPZ `name`, or a list marked exact-only).
    Exact,
    /// The name and every name below it (a plain/hosts/CSV/JSON entry, `||name^`).
    Subtree,
    /// Names strictly below it, not the name itself (`*.name`).
    Subdomains,
}

/// RPZ triggers other than QNAME. Parsed and kept, not yet enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RpzTrigger {
    Ip,
    ClientIp,
    Nsdname,
    Nsip,
}

/// What a rule matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A normalised (lowercase, ASCII/punycode, no trailing dot) name.
    Name { name: String, scope: Scope },
    /// A substring of a single label (see `blocklists/FORMAT.md`).
    Keyword(String),
    /// A URL with a path: kept for URL filtering, never blocks the host at DNS level.
    Url(String),
    /// A bare address or prefix: kept for response-IP blocking.
    Ip(ipnet::IpNet),
    /// An RPZ trigger that is not a QNAME trigger, kept verbatim.
    RpzOther { trigger: RpzTrigger, owner: String },
}

/// Legal metadata a registry row carries: its provenance, quoted by EDE
/// texts, block pages, the audit log and `sinkhole lookup`. Every field is
/// kept as the registry wrote it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleMeta {
    /// The order's reference (a dump's `<decision number>`).
    pub decision: Option<String>,
    /// Who ordered it (a dump's `<decision org>`).
    pub authority: Option<String>,
    /// The order's date (a dump's `<decision date>`).
    pub date: Option<String>,
    pub category: Option<String>,
    /// The registry entry's id (a dump's `<content id>`), so a
    /// subscriber's complaint or an auditor can name the row.
    pub entry: Option<String>,
    /// When the entry was included in the registry (a dump's `<content
    /// includeTime>`).
    pub included: Option<String>,
}

/// How many string fields [`RuleMeta`] has ([`RuleMeta::fields`]).
pub(crate) const META_FIELDS: usize = 6;

impl RuleMeta {
    /// The fields' names where they are shown (`lookup` output, JSON
    /// keys, audit records, template placeholders), in
    /// [`RuleMeta::fields`] order.
    pub const NAMES: [&'static str; META_FIELDS] = [
        "decision",
        "authority",
        "date",
        "category",
        "entry",
        "included",
    ];

    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(Option::is_none)
    }

    /// The fields in one fixed order: decision, authority, date, category,
    /// entry, included. The snapshot stores them in this order (its meta
    /// rows and URL rules), so adding a field changes this pair of
    /// functions and the snapshot format, not every place that copies one.
    pub(crate) fn fields(&self) -> [Option<&str>; META_FIELDS] {
        [
            self.decision.as_deref(),
            self.authority.as_deref(),
            self.date.as_deref(),
            self.category.as_deref(),
            self.entry.as_deref(),
            self.included.as_deref(),
        ]
    }

    /// The inverse of [`RuleMeta::fields`].
    pub(crate) fn from_fields(f: [Option<&str>; META_FIELDS]) -> RuleMeta {
        let [decision, authority, date, category, entry, included] =
            f.map(|s| s.map(str::to_string));
        RuleMeta {
            decision,
            authority,
            date,
            category,
            entry,
            included,
        }
    }
}

/// One rule with where it came from (the file is the owning [`ParsedList`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub target: Target,
    pub action: Action,
    /// The addresses an [`Action::Address`] rule answers with when it
    /// carries its own (RPZ local data); empty: the configured
    /// `policy.address_v4`/`address_v6`.
    pub local_data: Vec<IpAddr>,
    /// 1-based line in the source file.
    pub line: u32,
    /// Legal metadata, boxed and only when a row carries any: most rules
    /// (plain lists) have none, and a million rules without it should not
    /// carry 144 empty bytes each while a list is parsed and compiled.
    pub meta: Option<Box<RuleMeta>>,
}

impl Rule {
    /// The rule's metadata (empty when it has none).
    pub fn meta(&self) -> &RuleMeta {
        static NONE: RuleMeta = RuleMeta {
            decision: None,
            authority: None,
            date: None,
            category: None,
            entry: None,
            included: None,
        };
        self.meta.as_deref().unwrap_or(&NONE)
    }
}

impl RuleMeta {
    /// `None` for empty metadata, so rules without any stay small.
    pub fn boxed(self) -> Option<Box<RuleMeta>> {
        (!self.is_empty()).then(|| Box::new(self))
    }
}

/// A line that could not become a rule. Displays as `FILE:LINE: reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    pub line: u32,
    pub reason: String,
}

/// Options a configuration (or the CLI) can set per list file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Force a format instead of detecting it.
    pub format: Option<Format>,
    /// Plain/hosts/CSV/JSON entries block the name only, not its subdomains.
    pub exact_only: bool,
    /// Replace [`Action::Block`] with this action for every rule of the list.
    pub action: Option<Action>,
    /// List name used in provenance; defaults to the file stem.
    pub name: Option<String>,
}

/// The result of parsing one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedList {
    /// The list's name (provenance).
    pub name: String,
    /// The file it came from, as given.
    pub path: PathBuf,
    pub format: Format,
    pub rules: Vec<Rule>,
    pub skipped: Vec<Skip>,
}

/// How many rules of each kind a list holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub names: usize,
    pub wildcards: usize,
    pub allows: usize,
    pub keywords: usize,
    pub urls: usize,
    pub ips: usize,
    pub rpz_other: usize,
    pub skipped: usize,
}

impl ParsedList {
    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            skipped: self.skipped.len(),
            ..Counts::default()
        };
        for r in &self.rules {
            if r.action.is_allow() {
                c.allows += 1;
                continue;
            }
            match &r.target {
                Target::Name {
                    scope: Scope::Subdomains,
                    ..
                } => c.wildcards += 1,
                Target::Name { .. } => c.names += 1,
                Target::Keyword(_) => c.keywords += 1,
                Target::Url(_) => c.urls += 1,
                Target::Ip(_) => c.ips += 1,
                Target::RpzOther { .. } => c.rpz_other += 1,
            }
        }
        c
    }

    /// `FILE:LINE: reason` for every skipped line.
    pub fn skip_messages(&self) -> impl Iterator<Item = String> + '_ {
        self.skipped
            .iter()
            .map(|s| format!("{}:{}: {}", self.path.display(), s.line, s.reason))
    }
}

impl std::ops::Add for Counts {
    type Output = Counts;
    fn add(self, o: Counts) -> Counts {
        Counts {
            names: self.names + o.names,
            wildcards: self.wildcards + o.wildcards,
            allows: self.allows + o.allows,
            keywords: self.keywords + o.keywords,
            urls: self.urls + o.urls,
            ips: self.ips + o.ips,
            rpz_other: self.rpz_other + o.rpz_other,
            skipped: self.skipped + o.skipped,
        }
    }
}

#[cfg(test)]
mod tests;
