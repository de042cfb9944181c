//! The RPZ zone that makes a follower answer as sinkhole does.
//!
//! sinkhole decides by the most specific rule: the deepest name among the
//! query name and its ancestors that has an applicable rule wins (`Exact`
//! and `Subtree` rules apply to the name itself, `Subtree` and `Subdomains`
//! rules to names below it); at equal depth an allow beats a block and a
//! narrower scope beats `Subtree`. A follower (BIND, Unbound, PowerDNS)
//! applies DNS rules to the zone: an owner name that exists answers for
//! itself, and a name that does not exist takes the wildcard `*.E` of its
//! closest encloser `E` (the deepest existing ancestor, empty non-terminals
//! included; RFC 4592) or nothing.
//!
//! So for every node `M` of the tree the rules span (each rule's name and
//! all of its ancestors), with `F(M)` sinkhole's decision for `M` and
//! `G(M)` its decision for a name strictly below `M` with no rule of its
//! own: `M` gets `F(M)` when that blocks, `*.M` gets `G(M)` when that
//! blocks, and `M` gets an explicit `rpz-passthru.` when `F(M)` does not
//! block but the wildcard of `M`'s parent node would. Names outside the
//! tree have their closest encloser inside it (the tree is closed upwards),
//! and nothing between them and it has a rule, so `G` of that encloser is
//! exactly sinkhole's decision for them. An allowed `ok.b.a.example` under
//! a blocked `a.example` thus yields `a.example`, `*.a.example`,
//! `*.b.a.example` (blocks) and `ok.b.a.example` (passthru), where
//! `b.a.example` is an empty non-terminal.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::list::{Scope, Snapshot};
use crate::policy::{Action, PolicyConfig};

/// What a trigger does, as an RPZ record's data.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RpzData {
    /// `CNAME .` (NXDOMAIN), `CNAME *.` (NODATA), `CNAME rpz-passthru.`,
    /// `CNAME rpz-drop.`.
    Cname(&'static str),
    /// Local data.
    Addr(IpAddr),
}

impl RpzData {
    pub(crate) fn rdata_text(&self) -> String {
        match self {
            RpzData::Cname(t) => format!("CNAME {t}"),
            RpzData::Addr(IpAddr::V4(a)) => format!("A {a}"),
            RpzData::Addr(IpAddr::V6(a)) => format!("AAAA {a}"),
        }
    }
}

pub(crate) const NXDOMAIN: &str = ".";
pub(crate) const NODATA: &str = "*.";
pub(crate) const PASSTHRU: &str = "rpz-passthru.";
pub(crate) const DROP: &str = "rpz-drop.";

/// One record of the zone: owner relative to the zone apex (`a.example`,
/// `*.a.example`) and its data.
pub(crate) type ZoneRecord = (String, RpzData);

/// A decision as the zone can express it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forwarded (no rule, or an allow).
    Pass,
    /// Answered here with these records' data.
    Block(Vec<RpzData>),
}

/// A rule as the builder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rule {
    allow: bool,
    /// Index into [`Rules::data`].
    data: usize,
}

/// The rules at one name, by scope.
#[derive(Clone, Copy, Debug, Default)]
struct At {
    exact: Option<Rule>,
    subtree: Option<Rule>,
    subdomains: Option<Rule>,
}

/// The name rules of the exported lists, in sinkhole's semantics.
#[derive(Debug, Default)]
pub(crate) struct Rules {
    by_name: BTreeMap<String, At>,
    data: Vec<Vec<RpzData>>,
}

/// Rules the zone cannot express, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LeftOut {
    pub keyword: u64,
    pub url: u64,
    /// Rules of other kinds kept for later (IP triggers...) and names too
    /// long to fit under the zone's apex.
    pub other: u64,
}

/// The best of two applicable rules at one depth: an allow beats a block,
/// a narrower scope beats `Subtree` (`narrow` is the narrower one).
fn best(narrow: Option<Rule>, subtree: Option<Rule>) -> Option<Rule> {
    match (narrow, subtree) {
        (Some(n), Some(s)) => Some(if s.allow && !n.allow { s } else { n }),
        (n, s) => n.or(s),
    }
}

/// What a rule with `action` answers, as RPZ data (empty for an allow).
fn rule_data(
    action: Action,
    view: &crate::list::RuleView<'_>,
    policy: &PolicyConfig,
) -> Vec<RpzData> {
    let mut data = match action.resolve(policy.action) {
        Action::Allow => Vec::new(),
        // RPZ has no REFUSED action: NXDOMAIN still blocks.
        Action::Nxdomain | Action::Refused | Action::Block => vec![RpzData::Cname(NXDOMAIN)],
        Action::Nodata => vec![RpzData::Cname(NODATA)],
        Action::Drop => vec![RpzData::Cname(DROP)],
        Action::Address => {
            let own = view.addresses();
            if own.is_empty() {
                vec![
                    RpzData::Addr(IpAddr::V4(policy.address_v4)),
                    RpzData::Addr(IpAddr::V6(policy.address_v6)),
                ]
            } else {
                own.into_iter().map(RpzData::Addr).collect()
            }
        }
    };
    data.sort();
    data
}

/// sinkhole's decision for a name as the snapshot makes it (its own
/// lookup, whatever its semantics for each list format), in the zone's
/// vocabulary: the oracle of a zone exporting every list.
pub(crate) fn snapshot_decides(snap: &Snapshot, policy: &PolicyConfig, name: &str) -> Verdict {
    match snap.lookup(name.as_bytes()) {
        Some(m) if !m.action.is_allow() => {
            Verdict::Block(rule_data(m.action, &snap.rule(m.rule), policy))
        }
        _ => Verdict::Pass,
    }
}

/// Parent of a dotted name (`None` at a top-level label).
fn parent(name: &str) -> Option<&str> {
    name.split_once('.').map(|(_, p)| p)
}

impl Rules {
    /// The rules of `lists` (empty: all) in `snap`; `policy` resolves
    /// `block` and the block page's addresses.
    pub(crate) fn from_snapshot(
        snap: &Snapshot,
        lists: &[String],
        policy: &PolicyConfig,
    ) -> (Rules, LeftOut) {
        let mut rules = Rules::default();
        let mut left = LeftOut::default();
        let wanted = |list: &str| lists.is_empty() || lists.iter().any(|l| l == list);
        for (name, scope, id) in snap.name_rules() {
            let view = snap.rule(id);
            if !wanted(view.list()) {
                continue;
            }
            let action = view.action();
            let data = rule_data(action, &view, policy);
            rules.add(&name, scope, action.is_allow(), data);
        }
        // Keyword rules are not in `name_rules`; the snapshot counts them
        // for all lists.
        left.keyword = snap.counts().keywords as u64;
        for (kind, _, file, _) in snap.deferred_rules() {
            let _ = file;
            match kind.as_str() {
                "url" => left.url += 1,
                _ => left.other += 1,
            }
        }
        (rules, left)
    }

    fn add(&mut self, name: &str, scope: Scope, allow: bool, data: Vec<RpzData>) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return;
        }
        self.data.push(data);
        let rule = Rule {
            allow,
            data: self.data.len() - 1,
        };
        let at = self.by_name.entry(name).or_default();
        let slot = match scope {
            Scope::Exact => &mut at.exact,
            Scope::Subtree => &mut at.subtree,
            Scope::Subdomains => &mut at.subdomains,
        };
        // One rule per name and scope in a snapshot; an allow wins a tie
        // here as it does there.
        if slot.is_none_or(|r| allow && !r.allow) {
            *slot = Some(rule);
        }
    }

    fn verdict(&self, rule: Option<Rule>) -> Verdict {
        match rule {
            Some(r) if !r.allow => Verdict::Block(self.data[r.data].clone()),
            _ => Verdict::Pass,
        }
    }

    /// sinkhole's decision for `name` (`F`).
    pub(crate) fn decide(&self, name: &str) -> Verdict {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(at) = self.by_name.get(&name)
            && let Some(r) = best(at.exact, at.subtree)
        {
            return self.verdict(Some(r));
        }
        self.below(parent(&name))
    }

    /// sinkhole's decision for a name strictly below `name` that has no
    /// rule of its own (`G`); `None`: below the root.
    fn below(&self, mut name: Option<&str>) -> Verdict {
        while let Some(n) = name {
            if let Some(at) = self.by_name.get(n)
                && let Some(r) = best(at.subdomains, at.subtree)
            {
                return self.verdict(Some(r));
            }
            name = parent(n);
        }
        Verdict::Pass
    }

    /// A label no rule has directly below `name`: a name there is decided
    /// by what `name` and its ancestors say about names below them (`G`).
    fn fresh_below(&self, name: &str) -> String {
        (0u32..)
            .map(|i| format!("{i}.{name}"))
            .find(|n| !self.by_name.contains_key(n))
            .unwrap_or_else(|| format!("0.{name}"))
    }

    /// The zone's records (sorted, no duplicates) with the builder's own
    /// reading of the rules as the oracle (an export of some lists).
    #[cfg(test)]
    pub(crate) fn zone(&self, apex_wire_len: usize) -> (Vec<ZoneRecord>, u64) {
        self.zone_with(apex_wire_len, &|n| self.decide(n))
    }

    /// The zone's records (sorted, no duplicates), with `decide` saying
    /// what sinkhole does for a name, and how many names were too long to
    /// fit under an apex of `apex_len` bytes (wire form). Nodes are the
    /// rule names and their ancestors; `decide` is asked for each node and
    /// for a fresh name below each.
    pub(crate) fn zone_with(
        &self,
        apex_wire_len: usize,
        decide: &dyn Fn(&str) -> Verdict,
    ) -> (Vec<ZoneRecord>, u64) {
        // Every rule name and its ancestors.
        let mut nodes: BTreeSet<&str> = BTreeSet::new();
        for name in self.by_name.keys() {
            let mut n = Some(name.as_str());
            while let Some(m) = n {
                if !nodes.insert(m) {
                    break;
                }
                n = parent(m);
            }
        }
        let mut out = BTreeSet::new();
        let mut too_long = 0u64;
        for &m in &nodes {
            // `*.` + name + apex must fit in 255 bytes of wire format.
            if m.len() + 2 + 2 + apex_wire_len > 255 {
                too_long += 1;
                continue;
            }
            let own = decide(m);
            let wild = decide(&self.fresh_below(m));
            match &own {
                Verdict::Block(data) => {
                    out.extend(data.iter().map(|d| (m.to_string(), d.clone())));
                }
                Verdict::Pass => {
                    let above = parent(m).map_or(Verdict::Pass, |p| decide(&self.fresh_below(p)));
                    if let Verdict::Block(_) = above {
                        out.insert((m.to_string(), RpzData::Cname(PASSTHRU)));
                    }
                }
            }
            if let Verdict::Block(data) = wild {
                out.extend(data.into_iter().map(|d| (format!("*.{m}"), d)));
            }
        }
        (out.into_iter().collect(), too_long)
    }
}

/// The zone in master-file format (for `named-checkzone`, and to read).
pub(crate) fn zone_text(apex: &str, serial: u32, ttl: u32, records: &[ZoneRecord]) -> String {
    let mut s = String::with_capacity(64 + records.len() * 40);
    let apex = apex.trim_end_matches('.');
    let _ = writeln!(s, "$ORIGIN {apex}.");
    let _ = writeln!(s, "$TTL {ttl}");
    let _ = writeln!(s, "{}", soa_text(serial));
    let _ = writeln!(s, "@ NS localhost.");
    for (owner, data) in records {
        let _ = writeln!(s, "{owner} {}", data.rdata_text());
    }
    s
}

/// The apex SOA in master-file form (relative to `$ORIGIN`).
fn soa_text(serial: u32) -> String {
    let (refresh, retry, expire, minimum) = SOA_TIMERS;
    format!("@ SOA localhost. hostmaster.localhost. {serial} {refresh} {retry} {expire} {minimum}")
}

/// refresh, retry, expire, minimum of the zone's SOA: followers poll
/// every 5 minutes besides NOTIFY, and keep the zone a week without us.
pub(crate) const SOA_TIMERS: (u32, u32, u32, u32) = (300, 60, 604_800, 60);

/// What a follower applying `records` under BIND's (DNS wildcard) rules
/// does for `name` (test oracle and documentation of the semantics).
#[cfg(test)]
pub(crate) fn follower_decides(records: &[ZoneRecord], name: &str) -> Verdict {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let mut owners: BTreeMap<&str, Vec<RpzData>> = BTreeMap::new();
    for (o, d) in records {
        owners.entry(o.as_str()).or_default().push(d.clone());
    }
    // Every owner and the empty non-terminals above it exist.
    let mut exists: BTreeSet<&str> = BTreeSet::new();
    for o in owners.keys() {
        let mut n = Some(*o);
        while let Some(m) = n {
            exists.insert(m);
            n = parent(m);
        }
    }
    let as_verdict = |data: &Vec<RpzData>| {
        if data == &[RpzData::Cname(PASSTHRU)] {
            Verdict::Pass
        } else {
            let mut d = data.clone();
            d.sort();
            Verdict::Block(d)
        }
    };
    if exists.contains(name.as_str()) {
        return owners.get(name.as_str()).map_or(Verdict::Pass, as_verdict);
    }
    let mut n = parent(&name);
    while let Some(m) = n {
        if exists.contains(m) {
            return owners
                .get(format!("*.{m}").as_str())
                .map_or(Verdict::Pass, as_verdict);
        }
        n = parent(m);
    }
    Verdict::Pass
}
