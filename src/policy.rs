//! The decision for one query, as a pure function of the snapshot, the
//! question and the policy: no I/O, no clock, no allocation. Sockets live
//! elsewhere.
//!
//! [`Action`] is the one vocabulary for "what is done with a query a rule
//! matched": list parsers and per-list overrides write it into rules, the
//! snapshot stores it, `[policy] action` names the default, and the answer,
//! metrics, the hit log, the EDE text and the CLI all spell it with
//! [`Action::as_str`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::list::{RuleId, Snapshot};

/// What is done with a query a rule matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Exempt the name: forward it even if a broader rule blocks it.
    Allow,
    /// Block with the configured default (`[policy] action`). Only rules
    /// carry it; [`decide`] resolves it to one of the answering actions.
    Block,
    /// NXDOMAIN with an SOA (the negative answer is cached for `policy.ttl`).
    Nxdomain,
    /// NOERROR without answers, with an SOA.
    Nodata,
    /// A and AAAA answered with an address (the rule's own local data, or
    /// the block page's `policy.address_v4`/`address_v6`), NODATA for
    /// other types.
    Address,
    /// REFUSED.
    Refused,
    /// No reply at all.
    Drop,
}

impl Action {
    /// The actions a blocked query can actually be answered with, in the
    /// order metrics pre-register their series.
    pub const ANSWERS: [Action; 5] = [
        Action::Nxdomain,
        Action::Nodata,
        Action::Address,
        Action::Refused,
        Action::Drop,
    ];

    /// The one spelling of the action (configuration, metrics label, hit
    /// log, CLI).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Block => "block",
            Action::Nxdomain => "nxdomain",
            Action::Nodata => "nodata",
            Action::Address => "address",
            Action::Refused => "refused",
            Action::Drop => "drop",
        }
    }

    /// Parse any action name (case-insensitive).
    pub fn parse(s: &str) -> Option<Action> {
        let s = s.trim();
        [Action::Allow, Action::Block]
            .into_iter()
            .chain(Action::ANSWERS)
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }

    pub fn is_allow(self) -> bool {
        self == Action::Allow
    }

    /// True for the actions a query can be answered with (not `allow`,
    /// not the unresolved `block`): what `[policy] action` may name.
    pub fn is_answer(self) -> bool {
        !matches!(self, Action::Allow | Action::Block)
    }

    /// The action taken for a rule carrying `self` when the configured
    /// default is `default`.
    pub fn resolve(self, default: Action) -> Action {
        match self {
            Action::Block => default,
            other => other,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The parts of a query the policy looks at.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// The query name as dotted text, any letter case, with or without the
    /// trailing dot (the root is `.` or empty).
    pub name: &'a [u8],
    /// The query type (RFC 1035 numeric code).
    pub qtype: u16,
}

/// What `[policy]` says about blocked names, validated. The answer
/// synthesis reads the rest (TTL, EDE template) from the same struct.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// The default for rules that say only "block"; always an answering
    /// action ([`Action::is_answer`]).
    pub action: Action,
    pub ttl: u32,
    /// The block page's addresses (answers of `address` rules without
    /// local data).
    pub address_v4: Ipv4Addr,
    pub address_v6: Ipv6Addr,
    /// The RFC 8914 INFO-CODE of blocked answers (16 Censored by default).
    pub ede_code: u16,
    /// The EDE EXTRA-TEXT template.
    pub ede_text: crate::sinkhole::Template,
}

/// What to do with a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No rule matched: forward upstream.
    Pass,
    /// An allow rule matched: forward upstream (the rule is kept for logs).
    Allow(RuleId),
    /// A block rule matched; `action` is resolved (never `Allow` or `Block`).
    Block { rule: RuleId, action: Action },
}

impl Decision {
    pub fn is_block(&self) -> bool {
        matches!(self, Decision::Block { .. })
    }
}

/// Decide one query. The winning rule is the most specific name rule
/// (deepest matching suffix; at equal depth an allow beats a block); a
/// keyword rule applies only when no name rule matched. A rule's `block`
/// becomes the configured default; per-list overrides are already in the
/// rule (applied when the list was parsed).
pub fn decide(snapshot: &Snapshot, query: &Query<'_>, policy: &PolicyConfig) -> Decision {
    match snapshot.lookup(query.name) {
        None => Decision::Pass,
        Some(m) if m.action.is_allow() => Decision::Allow(m.rule),
        Some(m) => Decision::Block {
            rule: m.rule,
            action: m.action.resolve(policy.action),
        },
    }
}
