//! Answers for blocked names, written straight into the reply buffer (no
//! message object, no allocation beyond the rule text when the template asks
//! for it). What each action answers is in the issue: NXDOMAIN/NODATA carry an
//! SOA so the negative answer is cached for `policy.ttl`; `address` answers
//! only A/AAAA and NODATA otherwise; EDE only when the client sent EDNS.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::policy::{Action, PolicyConfig, Steer};
use crate::special::LocalAnswer;
use crate::wire::{self, Request};

/// One piece of a parsed `ede_text` template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplatePart {
    Lit(String),
    Decision,
    Authority,
    /// The decision's date.
    Date,
    /// The registry entry's id (a dump's `<content id>`).
    Entry,
    /// When the registry entry was included (a dump's `includeTime`).
    Included,
    List,
    Rule,
}

/// `ede_text` split once at load so filling it per block is a few copies.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Template {
    pub parts: Vec<TemplatePart>,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            if rest.starts_with("{{") {
                lit.push('{');
                rest = &rest[2..];
            } else if rest.starts_with("}}") {
                lit.push('}');
                rest = &rest[2..];
            } else if c == '{' {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("unclosed `{{` in {s:?}"))?;
                let part = match &rest[1..end] {
                    "decision" => TemplatePart::Decision,
                    "authority" => TemplatePart::Authority,
                    "date" => TemplatePart::Date,
                    "entry" => TemplatePart::Entry,
                    "included" => TemplatePart::Included,
                    "list" => TemplatePart::List,
                    "rule" => TemplatePart::Rule,
                    other => {
                        return Err(format!(
                            "unknown placeholder {{{other}}} (known: {{decision}} {{authority}} {{date}} {{entry}} {{included}} {{list}} {{rule}})"
                        ));
                    }
                };
                if !lit.is_empty() {
                    parts.push(TemplatePart::Lit(std::mem::take(&mut lit)));
                }
                parts.push(part);
                rest = &rest[end + 1..];
            } else if c == '}' {
                return Err(format!("unmatched `}}` in {s:?} (write `}}}}`)"));
            } else {
                lit.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !lit.is_empty() {
            parts.push(TemplatePart::Lit(lit));
        }
        Ok(Template { parts })
    }

    pub fn uses_rule(&self) -> bool {
        self.parts.contains(&TemplatePart::Rule)
    }
}

/// RFC 8914 "Prohibited", for clients outside the ACL.
pub(crate) const EDE_PROHIBITED: u16 = 18;

/// Longest EXTRA-TEXT we send: long enough for a court order reference,
/// short enough to stay inside a 512-byte reply with a long name.
const MAX_EDE_TEXT: usize = 200;

/// What the EDE template and local-data answers need from a rule. Implemented
/// for the snapshot's `RuleView`; tests use a plain struct.
pub(crate) trait RuleInfo {
    fn decision(&self) -> Option<&str>;
    fn authority(&self) -> Option<&str>;
    fn date(&self) -> Option<&str>;
    fn entry(&self) -> Option<&str>;
    fn included(&self) -> Option<&str>;
    fn list(&self) -> &str;
    fn text(&self) -> String;
    fn addresses(&self) -> Vec<IpAddr>;
}

impl RuleInfo for crate::list::RuleView<'_> {
    fn decision(&self) -> Option<&str> {
        crate::list::RuleView::decision(self)
    }
    fn authority(&self) -> Option<&str> {
        crate::list::RuleView::authority(self)
    }
    fn date(&self) -> Option<&str> {
        crate::list::RuleView::date(self)
    }
    fn entry(&self) -> Option<&str> {
        crate::list::RuleView::entry(self)
    }
    fn included(&self) -> Option<&str> {
        crate::list::RuleView::included(self)
    }
    fn list(&self) -> &str {
        crate::list::RuleView::list(self)
    }
    fn text(&self) -> String {
        crate::list::RuleView::text(self)
    }
    fn addresses(&self) -> Vec<IpAddr> {
        crate::list::RuleView::addresses(self)
    }
}

/// The SOA we put in negative answers. The owner is the query name (a
/// pointer to the question), so the negative answer is scoped to exactly it.
const SOA_MNAME: &[u8] = b"\x08sinkhole\x07invalid\x00";
const SOA_RNAME: &[u8] = b"\x0ahostmaster\x08sinkhole\x07invalid\x00";

fn push_soa(out: &mut Vec<u8>, ttl: u32, serial: u32) {
    let mut rdata = [0u8; 96];
    let mut n = 0;
    for part in [SOA_MNAME, SOA_RNAME] {
        rdata[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    // serial, refresh, retry, expire, minimum (= negative TTL, RFC 2308 §4)
    for v in [serial, 3600, 600, 86_400, ttl] {
        rdata[n..n + 4].copy_from_slice(&v.to_be_bytes());
        n += 4;
    }
    wire::push_rr_at_qname(out, wire::TYPE_SOA, ttl, &rdata[..n]);
}

/// Fill the EDE text from the template, cut to `max` bytes on a character
/// boundary.
fn fill_template(out: &mut Vec<u8>, policy: &PolicyConfig, rule: &dyn RuleInfo, max: usize) {
    let start = out.len();
    let mut rule_text = None;
    for part in &policy.ede_text.parts {
        match part {
            TemplatePart::Lit(s) => out.extend_from_slice(s.as_bytes()),
            // A list without legal references (a plain file) still says
            // where the block came from rather than a bare placeholder.
            TemplatePart::Decision => match rule.decision() {
                Some(d) => out.extend_from_slice(d.as_bytes()),
                None => {
                    out.extend_from_slice(b"(list ");
                    out.extend_from_slice(rule.list().as_bytes());
                    out.push(b')');
                }
            },
            // Fields a rule may lack read `-`, as a block page shows them.
            TemplatePart::Authority => {
                out.extend_from_slice(rule.authority().unwrap_or("-").as_bytes())
            }
            TemplatePart::Date => out.extend_from_slice(rule.date().unwrap_or("-").as_bytes()),
            TemplatePart::Entry => out.extend_from_slice(rule.entry().unwrap_or("-").as_bytes()),
            TemplatePart::Included => {
                out.extend_from_slice(rule.included().unwrap_or("-").as_bytes())
            }
            TemplatePart::List => out.extend_from_slice(rule.list().as_bytes()),
            TemplatePart::Rule => {
                let t = rule_text.get_or_insert_with(|| rule.text());
                out.extend_from_slice(t.as_bytes());
            }
        }
        if out.len() - start > max {
            break;
        }
    }
    if out.len() - start > max {
        let mut cut = start + max;
        // Never split a UTF-8 sequence: back up over continuation bytes.
        while cut > start && out[cut] & 0xc0 == 0x80 {
            cut -= 1;
        }
        out.truncate(cut);
    }
}

/// Write the sinkhole answer for a blocked query into `out`. Returns false
/// when nothing must be sent (`drop`). `limit` is the most the client can
/// take (UDP payload or 65535 on TCP); only the EDE text is shortened to fit.
pub(crate) fn block_answer(
    out: &mut Vec<u8>,
    req: &Request,
    policy: &PolicyConfig,
    rule: &dyn RuleInfo,
    action: Action,
    serial: u32,
    limit: usize,
) -> bool {
    let ttl = policy.ttl;
    let (rcode, mut an, mut ns) = (wire::RCODE_NOERROR, 0u16, 0u16);
    let mut rcode = rcode;
    match action.resolve(policy.action) {
        Action::Drop => return false,
        Action::Refused => {
            rcode = wire::RCODE_REFUSED;
            wire::begin_reply(out, req, rcode);
        }
        // `decide` never hands over an unresolved or allowing action; if
        // one ever came, blocking with NXDOMAIN is the answer that does
        // not fail open.
        Action::Nxdomain | Action::Allow | Action::Block => {
            rcode = wire::RCODE_NXDOMAIN;
            wire::begin_reply(out, req, rcode);
            push_soa(out, ttl, serial);
            ns = 1;
        }
        Action::Nodata => {
            wire::begin_reply(out, req, rcode);
            push_soa(out, ttl, serial);
            ns = 1;
        }
        Action::Address => {
            wire::begin_reply(out, req, rcode);
            // The rule's own addresses (RPZ local data) if it has any,
            // else the block page's.
            let own = rule.addresses();
            if own.is_empty() {
                match req.qtype {
                    wire::TYPE_A => {
                        wire::push_rr_at_qname(out, wire::TYPE_A, ttl, &policy.address_v4.octets());
                        an = 1;
                    }
                    wire::TYPE_AAAA => {
                        let v6 = policy.address_v6.octets();
                        wire::push_rr_at_qname(out, wire::TYPE_AAAA, ttl, &v6);
                        an = 1;
                    }
                    _ => {}
                }
            }
            for a in own {
                match (req.qtype, a) {
                    (wire::TYPE_A, IpAddr::V4(v4)) => {
                        wire::push_rr_at_qname(out, wire::TYPE_A, ttl, &v4.octets());
                        an += 1;
                    }
                    (wire::TYPE_AAAA, IpAddr::V6(v6)) => {
                        wire::push_rr_at_qname(out, wire::TYPE_AAAA, ttl, &v6.octets());
                        an += 1;
                    }
                    _ => {}
                }
            }
            if an == 0 {
                push_soa(out, ttl, serial);
                ns = 1;
            }
        }
    }
    let mut ar = 0;
    if let Some(e) = req.edns {
        let rdlen = wire::push_opt(out, e.dnssec_ok, 0);
        let room = limit.saturating_sub(out.len() + 6).min(MAX_EDE_TEXT);
        wire::push_ede(out, rdlen, policy.ede_code, |o| {
            fill_template(o, policy, rule, room)
        });
        ar = 1;
    }
    wire::set_counts(out, an, ns, ar);
    true
}

/// The answer for a name steered to the web front
/// ([`crate::policy::Decision::Steer`]): the front's address for A/AAAA,
/// else NODATA with an SOA, all with the steer TTL; OPT without EDE.
pub(crate) fn steer_answer(out: &mut Vec<u8>, req: &Request, steer: &Steer, serial: u32) {
    wire::begin_reply(out, req, wire::RCODE_NOERROR);
    let ttl = steer.ttl;
    let mut an = 0;
    match (req.qtype, steer.v4, steer.v6) {
        (wire::TYPE_A, Some(v4), _) => {
            wire::push_rr_at_qname(out, wire::TYPE_A, ttl, &v4.octets());
            an = 1;
        }
        (wire::TYPE_AAAA, _, Some(v6)) => {
            wire::push_rr_at_qname(out, wire::TYPE_AAAA, ttl, &v6.octets());
            an = 1;
        }
        _ => push_soa(out, ttl, serial),
    }
    let mut ar = 0;
    if let Some(e) = req.edns {
        wire::push_opt(out, e.dnssec_ok, 0);
        ar = 1;
    }
    wire::set_counts(out, an, 1 - an, ar);
}

/// TTL of local answers to special-use names (what Unbound uses for its
/// default local zones): they never change.
pub(crate) const LOCAL_TTL: u32 = 3600;

/// The local answer to a special-use name ([`crate::special`]), as the
/// authority for it (AA=1): loopback addresses for `localhost`, else no
/// data or NXDOMAIN with an SOA so it is cached (RFC 2308).
pub(crate) fn local_answer(out: &mut Vec<u8>, req: &Request, answer: LocalAnswer) {
    let rcode = match answer {
        LocalAnswer::NxDomain => wire::RCODE_NXDOMAIN,
        LocalAnswer::Loopback | LocalAnswer::NoData => wire::RCODE_NOERROR,
    };
    wire::begin_reply(out, req, rcode);
    wire::set_flag(out, wire::FLAG_AA);
    let mut an = 0;
    if answer == LocalAnswer::Loopback {
        match req.qtype {
            wire::TYPE_A => {
                wire::push_rr_at_qname(out, wire::TYPE_A, LOCAL_TTL, &Ipv4Addr::LOCALHOST.octets());
                an = 1;
            }
            wire::TYPE_AAAA => {
                let v6 = Ipv6Addr::LOCALHOST.octets();
                wire::push_rr_at_qname(out, wire::TYPE_AAAA, LOCAL_TTL, &v6);
                an = 1;
            }
            _ => {}
        }
    }
    let ns = if an == 0 {
        push_soa(out, LOCAL_TTL, 1);
        1
    } else {
        0
    };
    let mut ar = 0;
    if let Some(e) = req.edns {
        wire::push_opt(out, e.dnssec_ok, 0);
        ar = 1;
    }
    wire::set_counts(out, an, ns, ar);
}

/// REFUSED (+ EDE 18 Prohibited when the client sent EDNS) for clients
/// outside the ACL.
pub(crate) fn refused_prohibited(out: &mut Vec<u8>, req: &Request) {
    wire::begin_reply(out, req, wire::RCODE_REFUSED);
    if let Some(e) = req.edns {
        let rdlen = wire::push_opt(out, e.dnssec_ok, 0);
        wire::push_ede(out, rdlen, EDE_PROHIBITED, |_| {});
        wire::set_counts(out, 0, 0, 1);
    }
}

/// A bodiless error answer (SERVFAIL, NOTIMP, ...) to a parsed request,
/// with OPT when the client used EDNS.
pub(crate) fn error_answer(out: &mut Vec<u8>, req: &Request, rcode: u16) {
    wire::begin_reply(out, req, rcode);
    if let Some(e) = req.edns {
        wire::push_opt(out, e.dnssec_ok, 0);
        wire::set_counts(out, 0, 0, 1);
    }
}

/// SERVFAIL saying why (RFC 8914): `code` and `text` go in an EDE option
/// when the client used EDNS; without EDNS it is a plain SERVFAIL, as
/// RFC 8914 §3 forbids adding an OPT the client did not ask for.
pub(crate) fn servfail_with_reason(out: &mut Vec<u8>, req: &Request, code: u16, text: &[u8]) {
    wire::begin_reply(out, req, wire::RCODE_SERVFAIL);
    if let Some(e) = req.edns {
        let rdlen = wire::push_opt(out, e.dnssec_ok, 0);
        let text = &text[..text.len().min(MAX_EDE_TEXT)];
        wire::push_ede(out, rdlen, code, |o| o.extend_from_slice(text));
        wire::set_counts(out, 0, 0, 1);
    }
}

/// RFC 8914 codes of our own SERVFAILs.
pub(crate) const EDE_OTHER: u16 = 0;
pub(crate) const EDE_NO_REACHABLE_AUTHORITY: u16 = 22;
pub(crate) const EDE_NETWORK_ERROR: u16 = 23;

/// BADVERS (RFC 6891 §6.1.3) for EDNS versions other than 0.
pub(crate) fn badvers_answer(out: &mut Vec<u8>, req: &Request) {
    wire::begin_reply(out, req, 0);
    let dnssec_ok = req.dnssec_ok();
    // BADVERS is 16: the high 8 bits (1) live in the OPT TTL.
    wire::push_opt(out, dnssec_ok, 1);
    wire::set_counts(out, 0, 0, 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    use std::net::{Ipv4Addr, Ipv6Addr};

    struct FakeRule {
        addrs: Vec<IpAddr>,
    }
    impl RuleInfo for FakeRule {
        fn decision(&self) -> Option<&str> {
            Some("2025/17")
        }
        fn authority(&self) -> Option<&str> {
            None
        }
        fn date(&self) -> Option<&str> {
            Some("2025-01-02")
        }
        fn entry(&self) -> Option<&str> {
            Some("101")
        }
        fn included(&self) -> Option<&str> {
            Some("2026-11-30T12:00:00")
        }
        fn list(&self) -> &str {
            "court"
        }
        fn text(&self) -> String {
            "*.example.com".into()
        }
        fn addresses(&self) -> Vec<IpAddr> {
            self.addrs.clone()
        }
    }

    fn policy(action: Action) -> PolicyConfig {
        PolicyConfig {
            action,
            address_v4: Ipv4Addr::new(192, 0, 2, 1),
            address_v6: "2001:db8::1".parse::<Ipv6Addr>().unwrap(),
            ttl: 300,
            ede_code: 16,
            ede_text: Template::parse("order {decision} by {authority} ({list}: {rule})").unwrap(),
            local_zones: crate::special::LocalZones::default(),
            bypass_signals: crate::bypass::BypassSignals::default(),
        }
    }

    fn query(t: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 77;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(
            Name::from_ascii("Ads.ExAmple.com.").unwrap(),
            t,
        ));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn answer(
        action: Action,
        kind: Action,
        t: RecordType,
        edns: bool,
        addrs: Vec<IpAddr>,
    ) -> Option<Message> {
        let p = query(t, edns);
        let r = wire::parse_request(&p).unwrap();
        let mut out = Vec::new();
        let rule = FakeRule { addrs };
        if !block_answer(&mut out, &r, &policy(action), &rule, kind, 9, r.udp_limit()) {
            return None;
        }
        Some(Message::from_vec(&out).unwrap())
    }

    fn ede(m: &Message) -> Option<(u16, String)> {
        let e = m.edns.as_ref()?;
        e.options().as_ref().iter().find_map(|(code, opt)| {
            if u16::from(*code) != 15 {
                return None;
            }
            let bytes: Vec<u8> = Vec::try_from(opt).ok()?;
            Some((
                u16::from_be_bytes([bytes[0], bytes[1]]),
                String::from_utf8_lossy(&bytes[2..]).into_owned(),
            ))
        })
    }

    fn common(m: &Message) {
        assert_eq!(m.metadata.id, 77);
        assert!(m.metadata.recursion_available);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.queries[0].name().to_ascii(), "Ads.ExAmple.com.");
    }

    #[test]
    fn nxdomain_and_nodata_carry_soa() {
        for (action, rcode) in [(Action::Nxdomain, 3u16), (Action::Nodata, 0)] {
            for t in [
                RecordType::A,
                RecordType::AAAA,
                RecordType::MX,
                RecordType::HTTPS,
                RecordType::TXT,
            ] {
                let m = answer(action, Action::Block, t, true, vec![]).unwrap();
                common(&m);
                assert_eq!(u16::from(m.metadata.response_code), rcode);
                assert!(m.answers.is_empty());
                assert_eq!(m.authorities.len(), 1);
                let soa = &m.authorities[0];
                assert_eq!(soa.ttl, 300);
                let RData::SOA(s) = &soa.data else { panic!() };
                assert_eq!(s.minimum, 300);
                assert_eq!(s.serial, 9);
                assert_eq!(
                    ede(&m),
                    Some((16, "order 2025/17 by - (court: *.example.com)".into()))
                );
            }
        }
    }

    #[test]
    fn address_answers_only_a_and_aaaa() {
        let m = answer(Action::Address, Action::Block, RecordType::A, false, vec![]).unwrap();
        common(&m);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(
            m.answers[0].data,
            RData::A(Ipv4Addr::new(192, 0, 2, 1).into())
        );
        assert_eq!(m.answers[0].name.to_ascii(), "Ads.ExAmple.com.");
        assert!(m.edns.is_none());
        let m = answer(
            Action::Address,
            Action::Block,
            RecordType::AAAA,
            false,
            vec![],
        )
        .unwrap();
        assert_eq!(
            m.answers[0].data,
            RData::AAAA("2001:db8::1".parse::<Ipv6Addr>().unwrap().into())
        );
        for t in [
            RecordType::MX,
            RecordType::HTTPS,
            RecordType::TXT,
            RecordType::ANY,
            RecordType::CNAME,
        ] {
            let m = answer(Action::Address, Action::Block, t, true, vec![]).unwrap();
            assert_eq!(u16::from(m.metadata.response_code), 0);
            assert!(m.answers.is_empty(), "{t}");
            assert_eq!(m.authorities.len(), 1);
            assert!(ede(&m).is_some());
        }
    }

    #[test]
    fn refused_and_drop() {
        let m = answer(Action::Refused, Action::Block, RecordType::A, true, vec![]).unwrap();
        assert_eq!(u16::from(m.metadata.response_code), 5);
        assert!(m.authorities.is_empty());
        assert_eq!(ede(&m).map(|e| e.0), Some(16));
        assert!(answer(Action::Drop, Action::Block, RecordType::A, true, vec![]).is_none());
        // An explicit rule kind beats the configured default.
        assert!(answer(Action::Nxdomain, Action::Drop, RecordType::A, true, vec![]).is_none());
        let m = answer(Action::Drop, Action::Nxdomain, RecordType::A, false, vec![]).unwrap();
        assert_eq!(u16::from(m.metadata.response_code), 3);
    }

    #[test]
    fn local_data_by_family() {
        let addrs: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let m = answer(
            Action::Nxdomain,
            Action::Address,
            RecordType::A,
            false,
            addrs.clone(),
        )
        .unwrap();
        assert_eq!(m.answers.len(), 2);
        let m = answer(
            Action::Nxdomain,
            Action::Address,
            RecordType::AAAA,
            false,
            addrs,
        )
        .unwrap();
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1);
        assert_eq!(u16::from(m.metadata.response_code), 0);
    }

    #[test]
    fn ede_text_is_cut_to_fit() {
        let mut p = policy(Action::Nxdomain);
        p.ede_text = Template::parse(&"é".repeat(400)).unwrap();
        let q = query(RecordType::A, true);
        let r = wire::parse_request(&q).unwrap();
        let mut out = Vec::new();
        assert!(block_answer(
            &mut out,
            &r,
            &p,
            &FakeRule { addrs: vec![] },
            Action::Block,
            1,
            512
        ));
        assert!(out.len() <= 512);
        let m = Message::from_vec(&out).unwrap();
        let (_, text) = ede(&m).unwrap();
        assert!(text.chars().all(|c| c == 'é'));
        assert!(!text.is_empty());
    }

    #[test]
    fn acl_refusal() {
        let q = query(RecordType::A, true);
        let r = wire::parse_request(&q).unwrap();
        let mut out = Vec::new();
        refused_prohibited(&mut out, &r);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(u16::from(m.metadata.response_code), 5);
        assert_eq!(ede(&m), Some((18, String::new())));
    }
}

#[cfg(test)]
mod template_tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    struct PlainRule;
    impl RuleInfo for PlainRule {
        fn decision(&self) -> Option<&str> {
            None
        }
        fn authority(&self) -> Option<&str> {
            None
        }
        fn date(&self) -> Option<&str> {
            None
        }
        fn entry(&self) -> Option<&str> {
            None
        }
        fn included(&self) -> Option<&str> {
            None
        }
        fn list(&self) -> &str {
            "sample-crypto"
        }
        fn text(&self) -> String {
            "blocked.example".into()
        }
        fn addresses(&self) -> Vec<IpAddr> {
            Vec::new()
        }
    }

    #[test]
    fn registry_placeholders_name_the_entry_or_read_a_dash() {
        struct DumpRule;
        impl RuleInfo for DumpRule {
            fn decision(&self) -> Option<&str> {
                Some("27-31-2026/Ид1-26")
            }
            fn authority(&self) -> Option<&str> {
                Some("Роскомнадзор")
            }
            fn date(&self) -> Option<&str> {
                Some("2026-11-29")
            }
            fn entry(&self) -> Option<&str> {
                Some("101")
            }
            fn included(&self) -> Option<&str> {
                Some("2026-11-30T12:00:00")
            }
            fn list(&self) -> &str {
                "rkn"
            }
            fn text(&self) -> String {
                "=page.example".into()
            }
            fn addresses(&self) -> Vec<IpAddr> {
                Vec::new()
            }
        }
        let template =
            Template::parse("order {decision} of {date}, entry {entry} included {included}")
                .expect("template");
        let policy = PolicyConfig {
            action: Action::Nxdomain,
            address_v4: Ipv4Addr::new(192, 0, 2, 1),
            address_v6: Ipv6Addr::LOCALHOST,
            ttl: 300,
            ede_code: 16,
            ede_text: template,
            local_zones: crate::special::LocalZones::default(),
            bypass_signals: crate::bypass::BypassSignals::default(),
        };
        let fill = |rule: &dyn RuleInfo| {
            let mut out = Vec::new();
            fill_template(&mut out, &policy, rule, 512);
            String::from_utf8(out).expect("UTF-8")
        };
        assert_eq!(
            fill(&DumpRule),
            "order 27-31-2026/Ид1-26 of 2026-11-29, entry 101 included 2026-11-30T12:00:00"
        );
        assert_eq!(
            fill(&PlainRule),
            "order (list sample-crypto) of -, entry - included -"
        );
        assert!(
            Template::parse("{entry} {nope}")
                .expect_err("unknown")
                .contains("{entry} {included}")
        );
    }

    #[test]
    fn missing_decision_names_the_list() {
        let policy = PolicyConfig {
            action: Action::Nxdomain,
            address_v4: Ipv4Addr::new(192, 0, 2, 1),
            address_v6: Ipv6Addr::LOCALHOST,
            ttl: 300,
            ede_code: 16,
            ede_text: Template::parse("blocked by order {decision}; authority {authority}")
                .expect("template"),
            local_zones: crate::special::LocalZones::default(),
            bypass_signals: crate::bypass::BypassSignals::default(),
        };
        let mut out = Vec::new();
        fill_template(&mut out, &policy, &PlainRule, 512);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "blocked by order (list sample-crypto); authority -"
        );
    }
}
