//! NOTIFY (RFC 1996, opcode 4) on the normal DNS listeners, sans I/O: the
//! query core hands us the packet and the source address; we answer
//! NOERROR+AA to a configured primary of a followed zone and wake that
//! zone's refresh, REFUSED to anyone else. A NOTIFY carries no data we
//! trust: it only makes the follower check the primary's SOA now instead
//! of at the next refresh timer.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::wire::{self, MAX_NAME};

const HEADER_LEN: usize = 12;
const OPCODE_NOTIFY: u16 = 4;
const QTYPE_SOA: u16 = 6;
const RCODE_NOERROR: u16 = 0;
const RCODE_FORMERR: u16 = 1;
const RCODE_REFUSED: u16 = 5;
const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;

/// One followed zone, as NOTIFY sees it.
#[derive(Debug)]
pub struct NotifyZone {
    /// Lowercase, no trailing dot.
    pub zone: String,
    /// Sources a NOTIFY is accepted from (the primaries' addresses; any port).
    pub primaries: Vec<IpAddr>,
    /// Wakes the zone's refresh task.
    pub wake: Arc<Notify>,
}

/// Every followed zone; set once on the query core at start.
#[derive(Debug, Default)]
pub struct NotifyRouter {
    pub zones: Vec<NotifyZone>,
}

/// What became of a NOTIFY (for tests and the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// The zone is followed, but not from this address.
    NotPrimary,
    UnknownZone,
    Malformed,
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    // A v4 primary may reach a dual-stack socket as ::ffff:a.b.c.d.
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    canon(a) == canon(b)
}

impl NotifyRouter {
    /// Whether the packet is a NOTIFY request (QR clear, opcode 4).
    pub fn is_notify(packet: &[u8]) -> bool {
        wire::read_u16(packet, 2)
            .is_some_and(|f| f & FLAG_QR == 0 && (f >> 11) & 0xf == OPCODE_NOTIFY)
    }

    /// Answer the NOTIFY in `packet` from `source` into `out` (header and
    /// question echoed) and wake the zone when it came from its primary.
    pub fn handle(&self, packet: &[u8], source: IpAddr, out: &mut Vec<u8>) -> Verdict {
        let Some(zone) = notify_zone(packet) else {
            reply(packet, None, RCODE_FORMERR, out);
            return Verdict::Malformed;
        };
        let (rcode, verdict) = match self.zones.iter().find(|z| z.zone == zone.name) {
            None => (RCODE_REFUSED, Verdict::UnknownZone),
            Some(z) if !z.primaries.iter().any(|&p| same_ip(p, source)) => {
                (RCODE_REFUSED, Verdict::NotPrimary)
            }
            Some(z) => {
                z.wake.notify_one();
                (RCODE_NOERROR, Verdict::Accepted)
            }
        };
        reply(packet, Some(zone.question_end), rcode, out);
        verdict
    }
}

struct NotifyQuestion {
    name: String,
    question_end: usize,
}

/// The zone a NOTIFY names: exactly one question, class IN, type SOA.
fn notify_zone(packet: &[u8]) -> Option<NotifyQuestion> {
    if packet.len() < HEADER_LEN || wire::read_u16(packet, 4)? != 1 {
        return None;
    }
    let mut buf = [0u8; MAX_NAME];
    let (len, next) = wire::read_name_wire(packet, HEADER_LEN, &mut buf)?;
    // The question's name is never compressed in practice; a pointer is
    // refused so that echoing bytes HEADER_LEN..end stays a valid question.
    if next != HEADER_LEN + len {
        return None;
    }
    let qtype = wire::read_u16(packet, next)?;
    let qclass = wire::read_u16(packet, next + 2)?;
    if qtype != QTYPE_SOA || qclass != 1 {
        return None;
    }
    let mut dotted = [0u8; MAX_NAME];
    let n = wire::wire_to_dotted(&buf[..len], &mut dotted);
    let name = std::str::from_utf8(&dotted[..n]).ok()?.to_string();
    Some(NotifyQuestion {
        name,
        question_end: next + 4,
    })
}

fn reply(packet: &[u8], question_end: Option<usize>, rcode: u16, out: &mut Vec<u8>) {
    out.clear();
    if packet.len() < HEADER_LEN {
        return;
    }
    let flags = wire::read_u16(packet, 2).unwrap_or(0);
    let mut flags = FLAG_QR | (flags & 0x7800) | rcode;
    if rcode == RCODE_NOERROR {
        flags |= FLAG_AA;
    }
    out.extend_from_slice(&packet[0..2]);
    out.extend_from_slice(&flags.to_be_bytes());
    let qd: u16 = u16::from(question_end.is_some());
    out.extend_from_slice(&qd.to_be_bytes());
    out.extend_from_slice(&[0; 6]);
    if let Some(end) = question_end
        && let Some(q) = packet.get(HEADER_LEN..end)
    {
        out.extend_from_slice(q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use proptest::prelude::*;

    fn notify_packet(zone: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::new(
            0x1234,
            hickory_proto::op::MessageType::Query,
            OpCode::Notify,
        );
        m.add_query(Query::query(Name::from_ascii(zone).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    fn router() -> (NotifyRouter, Arc<Notify>) {
        let wake = Arc::new(Notify::new());
        (
            NotifyRouter {
                zones: vec![NotifyZone {
                    zone: "rpz.test".into(),
                    primaries: vec!["127.0.0.1".parse().unwrap()],
                    wake: wake.clone(),
                }],
            },
            wake,
        )
    }

    #[test]
    fn table() {
        let (r, _) = router();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.9".parse().unwrap();
        let cases = [
            ("rpz.test.", RecordType::SOA, local, Verdict::Accepted, 0u8),
            ("RPZ.Test.", RecordType::SOA, mapped, Verdict::Accepted, 0),
            ("rpz.test.", RecordType::SOA, other, Verdict::NotPrimary, 5),
            (
                "other.test.",
                RecordType::SOA,
                local,
                Verdict::UnknownZone,
                5,
            ),
            ("rpz.test.", RecordType::A, local, Verdict::Malformed, 1),
        ];
        for (zone, qtype, src, want, rcode) in cases {
            let p = notify_packet(zone, qtype);
            assert!(NotifyRouter::is_notify(&p));
            let mut out = Vec::new();
            assert_eq!(r.handle(&p, src, &mut out), want, "{zone} {src}");
            let m = Message::from_vec(&out).unwrap();
            assert_eq!(m.id, 0x1234);
            assert_eq!(m.op_code, OpCode::Notify);
            assert_eq!(m.response_code.low(), rcode, "{zone} {src}");
            assert_eq!(m.authoritative, rcode == 0);
            if want != Verdict::Malformed {
                assert_eq!(m.queries.len(), 1);
                assert_eq!(m.queries[0].name(), &Name::from_ascii(zone).unwrap());
            }
        }
    }

    #[tokio::test]
    async fn an_accepted_notify_wakes_the_zone() {
        let (r, wake) = router();
        let mut out = Vec::new();
        let p = notify_packet("rpz.test.", RecordType::SOA);
        r.handle(&p, "127.0.0.1".parse().unwrap(), &mut out);
        tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified())
            .await
            .expect("woken");
    }

    #[test]
    fn queries_and_responses_are_not_notifies() {
        let mut q = notify_packet("rpz.test.", RecordType::SOA);
        q[2] &= !0x78; // opcode QUERY
        assert!(!NotifyRouter::is_notify(&q));
        let mut resp = notify_packet("rpz.test.", RecordType::SOA);
        resp[2] |= 0x80;
        assert!(!NotifyRouter::is_notify(&resp));
        assert!(!NotifyRouter::is_notify(&[0u8; 3]));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80), src in any::<[u8; 4]>()) {
            let (r, _) = router();
            let mut out = Vec::new();
            let v = r.handle(&bytes, IpAddr::from(src), &mut out);
            if bytes.len() >= HEADER_LEN {
                prop_assert!(out.len() >= HEADER_LEN);
                prop_assert_eq!(&out[..2], &bytes[..2]);
            }
            if v == Verdict::Accepted {
                prop_assert_eq!(IpAddr::from(src), "127.0.0.1".parse::<IpAddr>().unwrap());
            }
        }
    }
}
