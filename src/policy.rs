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

use crate::list::{MatchedKey, RuleId, Snapshot};

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
    /// Special-use zones answered locally, never forwarded (checked after
    /// the lists: a listed name keeps its block answer).
    pub local_zones: crate::special::LocalZones,
    /// Names answered NXDOMAIN to tell clients this network filters
    /// (`policy.bypass_signals`; checked before the lists).
    pub bypass_signals: crate::bypass::BypassSignals,
}

/// What to do with a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No rule matched: forward upstream.
    Pass,
    /// An allow rule matched: forward upstream (the rule is kept for logs).
    Allow(RuleId),
    /// A block rule matched; `action` is resolved (never `Allow` or `Block`).
    /// `key`: how the rule's name matched the query name (`None` for a
    /// keyword rule), for the hit log's rule text.
    Block {
        rule: RuleId,
        action: Action,
        key: Option<MatchedKey>,
    },
    /// The name has URL rules and the web front is on ([`Steer`]): A and
    /// AAAA are answered with the front's addresses, HTTPS and SVCB with
    /// NODATA (so clients learn no other address, ECH key or h3 from
    /// them). No EDE (the host is not censored as a whole) and no hit
    /// record: only a request the front blocks is one. Other types pass.
    Steer,
}

/// RR types a steered name is answered for locally.
pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SVCB: u16 = 64;
pub const TYPE_HTTPS: u16 = 65;

/// Steering of names with URL rules to the web front (`[web]`), validated
/// by the web module: only set when the front listens and the operator
/// named its public addresses (an upgrade never sends a site to an
/// address where nothing listens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steer {
    /// The front's addresses; a family without one gets NODATA.
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// TTL of steered answers (`web.steer_ttl`): short, so a list update
    /// that drops the host's last URL rule takes effect soon.
    pub ttl: u32,
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
            key: m.key,
        },
    }
}

/// [`decide`], then steering: a name that passes (no rule, not allowed
/// by the operator) and has URL rules is steered to the web front when
/// `steer` is set, for the types [`Decision::Steer`] lists. The asked name
/// only: CNAME targets are never steered.
pub fn decide_steered(
    snapshot: &Snapshot,
    query: &Query<'_>,
    policy: &PolicyConfig,
    steer: Option<&Steer>,
) -> Decision {
    let decision = decide(snapshot, query, policy);
    if decision != Decision::Pass
        || steer.is_none()
        || !matches!(query.qtype, TYPE_A | TYPE_AAAA | TYPE_SVCB | TYPE_HTTPS)
    {
        return decision;
    }
    let steered = if query.name.iter().any(u8::is_ascii_uppercase) {
        snapshot.has_url_rules(&query.name.to_ascii_lowercase())
    } else {
        snapshot.has_url_rules(query.name)
    };
    if steered { Decision::Steer } else { decision }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::list::reference::ReferenceMatcher;
    use crate::list::{Format, ListOptions, ParsedList};
    use crate::sinkhole::{self, Template};
    use crate::wire;

    /// (list name, format, per-list action override, content).
    const LISTS: &[(&str, Format, Option<Action>, &str)] = &[
        ("gov", Format::Plain, None, "blocked.kz\nshared.kz\n"),
        ("allow", Format::Adblock, None, "@@||ok.blocked.kz^\n"),
        ("nx", Format::Plain, Some(Action::Nxdomain), "nx.kz\n"),
        (
            "nodata",
            Format::Plain,
            Some(Action::Nodata),
            "nodata.kz\nbad.ok.blocked.kz\n",
        ),
        ("addr", Format::Plain, Some(Action::Address), "addr.kz\n"),
        (
            "refused",
            Format::Plain,
            Some(Action::Refused),
            "refused.kz\n",
        ),
        ("drop", Format::Plain, Some(Action::Drop), "drop.kz\n"),
        // An override never turns an allow into a block.
        (
            "exempt",
            Format::Adblock,
            Some(Action::Drop),
            "@@||fine.drop.kz^\n",
        ),
        (
            "rpz",
            Format::Rpz,
            None,
            "local.kz A 192.0.2.7\nrpznx.kz CNAME .\npass.blocked.kz CNAME rpz-passthru.\n",
        ),
    ];

    fn lists() -> Vec<ParsedList> {
        LISTS
            .iter()
            .map(|(name, format, action, text)| {
                let opts = ListOptions {
                    format: Some(*format),
                    action: *action,
                    name: Some((*name).to_string()),
                    ..ListOptions::default()
                };
                crate::list::parse::parse_bytes(Path::new(name), text.as_bytes(), &opts)
            })
            .collect()
    }

    fn policy(action: Action) -> PolicyConfig {
        PolicyConfig {
            action,
            ttl: 60,
            address_v4: Ipv4Addr::new(198, 51, 100, 1),
            address_v6: "2001:db8::1".parse().unwrap(),
            ede_code: 16,
            ede_text: Template::parse("{list}").unwrap(),
            local_zones: crate::special::LocalZones::default(),
            bypass_signals: crate::bypass::BypassSignals::default(),
        }
    }

    /// The decision in words: `pass`, `allow LIST`, `block LIST ACTION RULE`
    /// (the rule text as the hit log writes it).
    fn describe(snap: &Snapshot, name: &[u8], d: Decision) -> String {
        match d {
            Decision::Pass => "pass".into(),
            Decision::Steer => "steer".into(),
            Decision::Allow(rule) => format!("allow {}", snap.rule(rule).list()),
            Decision::Block { rule, action, key } => {
                let view = snap.rule(rule);
                format!(
                    "block {} {} {}",
                    view.list(),
                    action,
                    view.text_matched(name, key)
                )
            }
        }
    }

    use Action::{Address, Drop, Nodata, Nxdomain, Refused};

    /// (configured default, query name, decision). Written out, not derived:
    /// `block` rules take the default, overrides and RPZ actions do not,
    /// the deepest rule wins, an allow beats a block at the same depth.
    const DECISIONS: &[(Action, &str, &str)] = &[
        (Nxdomain, "example.org", "pass"),
        (Nxdomain, "blocked.kz", "block gov nxdomain blocked.kz"),
        (Nxdomain, "WWW.Blocked.KZ.", "block gov nxdomain blocked.kz"),
        (Nodata, "blocked.kz", "block gov nodata blocked.kz"),
        (Address, "a.b.blocked.kz", "block gov address blocked.kz"),
        (Refused, "blocked.kz", "block gov refused blocked.kz"),
        (Drop, "blocked.kz", "block gov drop blocked.kz"),
        (Nxdomain, "ok.blocked.kz", "allow allow"),
        (Drop, "www.ok.blocked.kz", "allow allow"),
        (
            Address,
            "bad.ok.blocked.kz",
            "block nodata nodata bad.ok.blocked.kz",
        ),
        (
            Nxdomain,
            "x.bad.ok.blocked.kz",
            "block nodata nodata bad.ok.blocked.kz",
        ),
        (Address, "nx.kz", "block nx nxdomain nx.kz"),
        (Nxdomain, "nodata.kz", "block nodata nodata nodata.kz"),
        (Nxdomain, "addr.kz", "block addr address addr.kz"),
        (Drop, "sub.addr.kz", "block addr address addr.kz"),
        (Nxdomain, "refused.kz", "block refused refused refused.kz"),
        (Nxdomain, "drop.kz", "block drop drop drop.kz"),
        (Address, "drop.kz", "block drop drop drop.kz"),
        (Nxdomain, "fine.drop.kz", "allow exempt"),
        (Nxdomain, "local.kz", "block rpz address =local.kz"),
        (Nodata, "www.local.kz", "pass"),
        (Drop, "rpznx.kz", "block rpz nxdomain =rpznx.kz"),
        (Nxdomain, "pass.blocked.kz", "allow rpz"),
        (Refused, "shared.kz", "block gov refused shared.kz"),
        (Nxdomain, "kz", "pass"),
        (Nxdomain, "", "pass"),
    ];

    #[test]
    fn decide_table_against_the_reference_matcher() {
        let lists = lists();
        let snap = crate::list::compile::compile(&lists).unwrap();
        let reference = ReferenceMatcher::new(&lists);
        for &(default, name, want) in DECISIONS {
            let p = policy(default);
            for qtype in [wire::TYPE_A, wire::TYPE_AAAA, 15, 65] {
                let d = decide(
                    &snap,
                    &Query {
                        name: name.as_bytes(),
                        qtype,
                    },
                    &p,
                );
                assert_eq!(
                    describe(&snap, name.as_bytes(), d),
                    want,
                    "{name} type {qtype} default {default}"
                );
                // The hit log's rule text is the rule's own, read back
                // from the fst, however it was matched.
                if let Decision::Block { rule, key, .. } = d {
                    assert!(key.is_some(), "{name}: a name rule");
                    let view = snap.rule(rule);
                    assert_eq!(
                        view.text_matched(name.as_bytes(), key),
                        view.text(),
                        "{name}"
                    );
                }
            }
            // The naive matcher agrees on the rule and what it carries.
            let lower = name.trim_end_matches('.').to_ascii_lowercase();
            let by_ref = match reference.lookup(&lower) {
                None => "pass".to_string(),
                Some(hit) if hit.action.is_allow() => {
                    format!("allow {}", lists[hit.file_index].name)
                }
                Some(hit) => format!(
                    "block {} {}",
                    lists[hit.file_index].name,
                    hit.action.resolve(default)
                ),
            };
            // The reference knows the list and the action, not the text.
            let want_head = match want.strip_prefix("block ") {
                Some(_) => want.rsplit_once(' ').map_or(want, |(head, _)| head),
                None => want,
            };
            assert_eq!(by_ref, want_head, "reference for {name} default {default}");
        }
    }

    /// (default, name, qtype, rcode, answer records, authority records,
    /// first answer's rdata): what the sinkhole answer carries for each
    /// resolved action and query type.
    #[allow(clippy::type_complexity)]
    const ANSWERS: &[(Action, &str, u16, Option<u16>, u16, u16, &[u8])] = &[
        (Nxdomain, "blocked.kz", 1, Some(3), 0, 1, b""),
        (Nxdomain, "blocked.kz", 15, Some(3), 0, 1, b""),
        (Nodata, "blocked.kz", 1, Some(0), 0, 1, b""),
        (Nodata, "blocked.kz", 28, Some(0), 0, 1, b""),
        (Refused, "blocked.kz", 1, Some(5), 0, 0, b""),
        (Drop, "blocked.kz", 1, None, 0, 0, b""),
        (Address, "blocked.kz", 1, Some(0), 1, 0, &[198, 51, 100, 1]),
        (
            Address,
            "blocked.kz",
            28,
            Some(0),
            1,
            0,
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ),
        (Address, "blocked.kz", 15, Some(0), 0, 1, b""),
        (Address, "blocked.kz", 65, Some(0), 0, 1, b""),
        (Nxdomain, "addr.kz", 1, Some(0), 1, 0, &[198, 51, 100, 1]),
        (Nxdomain, "local.kz", 1, Some(0), 1, 0, &[192, 0, 2, 7]),
        (Nxdomain, "local.kz", 28, Some(0), 0, 1, b""),
        (Address, "drop.kz", 1, None, 0, 0, b""),
        (Address, "nx.kz", 1, Some(3), 0, 1, b""),
    ];

    #[test]
    fn answer_table_per_action_and_qtype() {
        use hickory_proto::op::{Message, Query as HQuery};
        use hickory_proto::rr::{Name, RecordType};
        let snap = crate::list::compile::compile(&lists()).unwrap();
        for &(default, name, qtype, rcode, an, ns, rdata) in ANSWERS {
            let p = policy(default);
            let Decision::Block { rule, action, .. } = decide(
                &snap,
                &Query {
                    name: name.as_bytes(),
                    qtype,
                },
                &p,
            ) else {
                panic!("{name} is not blocked");
            };
            let mut m = Message::query();
            m.add_query(HQuery::query(
                Name::from_ascii(name).unwrap(),
                RecordType::from(qtype),
            ));
            let packet = m.to_vec().unwrap();
            let req = wire::parse_request(&packet).unwrap();
            let mut out = Vec::new();
            let sent = sinkhole::block_answer(&mut out, &req, &p, &snap.rule(rule), action, 1, 512);
            let what = format!("{name} type {qtype} default {default}");
            if rcode.is_none() {
                assert!(!sent, "{what}: dropped");
                continue;
            }
            assert!(sent, "{what}");
            assert_eq!(Some(u16::from(out[3] & 0x0f)), rcode, "{what}: rcode");
            assert_eq!(wire::read_u16(&out, 6), Some(an), "{what}: answers");
            assert_eq!(wire::read_u16(&out, 8), Some(ns), "{what}: authority");
            if an > 0 {
                let reply = Message::from_vec(&out).unwrap();
                let got = match &reply.answers[0].data {
                    hickory_proto::rr::RData::A(a) => a.0.octets().to_vec(),
                    hickory_proto::rr::RData::AAAA(a) => a.0.octets().to_vec(),
                    other => panic!("{what}: {other:?}"),
                };
                assert_eq!(got, rdata, "{what}: address");
            }
        }
    }

    #[test]
    fn action_names_round_trip() {
        let all = [
            (Action::Allow, "allow"),
            (Action::Block, "block"),
            (Action::Nxdomain, "nxdomain"),
            (Action::Nodata, "nodata"),
            (Action::Address, "address"),
            (Action::Refused, "refused"),
            (Action::Drop, "drop"),
        ];
        for (a, s) in all {
            assert_eq!(a.as_str(), s);
            assert_eq!(Action::parse(s), Some(a));
            assert_eq!(Action::parse(&s.to_uppercase()), Some(a));
        }
        assert_eq!(Action::parse("local-data"), None);
        assert!(!Action::Allow.is_answer() && !Action::Block.is_answer());
        assert!(Action::ANSWERS.iter().all(|a| a.is_answer()));
    }

    /// Steering (`[web]` on): names with URL rules that pass are steered
    /// for A/AAAA/HTTPS/SVCB, never a blocked or allowed name, never other
    /// types, never without the front.
    #[test]
    fn steering_table() {
        let list = |name: &str, text: &str| {
            crate::list::parse::parse_bytes(
                Path::new(&format!("{name}.txt")),
                text.as_bytes(),
                &ListOptions {
                    format: Some(Format::Plain),
                    name: Some(name.to_string()),
                    ..ListOptions::default()
                },
            )
        };
        let lists = [
            list(
                "gov",
                "pages.kz/a\nblocked.kz\nblocked.kz/page\nhttp://Mixed.KZ/x\nok.kz/p\n",
            ),
            list("allow", "@@||ok.kz^\n"),
        ];
        let snap = crate::list::compile::compile(&lists).unwrap();
        let p = policy(Nxdomain);
        let steer = Steer {
            v4: Some(Ipv4Addr::LOCALHOST),
            v6: None,
            ttl: 30,
        };
        let rows: &[(&str, u16, bool, &str)] = &[
            ("pages.kz", TYPE_A, true, "steer"),
            ("PAGES.kz.", TYPE_AAAA, true, "steer"),
            ("pages.kz", TYPE_HTTPS, true, "steer"),
            ("pages.kz", TYPE_SVCB, true, "steer"),
            ("pages.kz", 15, true, "pass"),
            ("pages.kz", 16, true, "pass"),
            ("www.pages.kz", TYPE_A, true, "pass"),
            ("mixed.kz", TYPE_A, true, "steer"),
            ("pages.kz", TYPE_A, false, "pass"),
            ("blocked.kz", TYPE_A, true, "block gov nxdomain blocked.kz"),
            ("ok.kz", TYPE_A, true, "allow allow"),
            ("other.kz", TYPE_A, true, "pass"),
        ];
        for &(name, qtype, on, want) in rows {
            let q = Query {
                name: name.as_bytes(),
                qtype,
            };
            let d = decide_steered(&snap, &q, &p, on.then_some(&steer));
            assert_eq!(
                describe(&snap, name.as_bytes(), d),
                want,
                "{name} {qtype} {on}"
            );
        }
    }
}
