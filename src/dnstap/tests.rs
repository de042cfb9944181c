use std::net::Ipv4Addr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::frame::{ControlType, DNSTAP_CONTENT_TYPE, decode_control, encode_control};
use super::*;

fn blocked_event() -> Event {
    Event {
        client: "192.0.2.7:5300".parse().unwrap(),
        transport: Transport::Udp,
        wall: SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5),
        query: b"query-bytes".to_vec(),
        response: Some(b"response-bytes".to_vec()),
        policy: Some(OwnedPolicy {
            rule: rule_bytes("*.bad.example"),
            value: dotted_to_wire(b"www.bad.example").unwrap(),
            action: Action::Nxdomain,
            list: "court".into(),
            version: 42,
            decision: Some("D-1; rev 2".into()),
        }),
    }
}

#[test]
fn names_become_wire_format() {
    assert_eq!(dotted_to_wire(b"a.bc").unwrap(), b"\x01a\x02bc\x00");
    assert_eq!(dotted_to_wire(b"a.bc.").unwrap(), b"\x01a\x02bc\x00");
    assert_eq!(dotted_to_wire(b"").unwrap(), b"\x00");
    assert!(dotted_to_wire(b"a..b").is_none());
    assert!(dotted_to_wire(&[b'x'; 64]).is_none());
    assert_eq!(rule_bytes("=a.b"), b"\x01a\x01b\x00");
    assert_eq!(rule_bytes("*.a.b"), b"\x01*\x01a\x01b\x00");
    assert_eq!(rule_bytes("casino"), b"\x06casino\x00");
    assert_eq!(rule_bytes("keyword:binance"), b"keyword:binance");
    assert_eq!(rule_bytes("bad words"), b"bad words");
}

#[test]
fn a_block_becomes_client_query_and_response_with_its_policy() {
    let msgs = messages(&blocked_event(), Some(b"node-1"), None);
    assert_eq!(msgs.len(), 2);
    // Through the wire format and back, as a collector would read it.
    let msgs: Vec<pb::Dnstap> = msgs
        .iter()
        .map(|m| pb::Dnstap::decode(m.encode_to_vec().as_slice()).unwrap())
        .collect();
    let types: Vec<i32> = msgs
        .iter()
        .map(|m| m.message.as_ref().unwrap().r#type)
        .collect();
    assert_eq!(
        types,
        [
            pb::message::Type::ClientQuery as i32,
            pb::message::Type::ClientResponse as i32
        ]
    );
    for d in &msgs {
        assert_eq!(d.identity.as_deref(), Some(&b"node-1"[..]));
        assert_eq!(
            d.extra.as_deref(),
            Some(&b"list=court;version=42;decision=D-1, rev 2;action=nxdomain"[..])
        );
        let m = d.message.as_ref().unwrap();
        assert_eq!(m.socket_family, Some(pb::SocketFamily::Inet as i32));
        assert_eq!(m.socket_protocol, Some(pb::SocketProtocol::Udp as i32));
        assert_eq!(m.query_address.as_deref(), Some(&[192, 0, 2, 7][..]));
        assert_eq!(m.query_port, Some(5300));
        assert_eq!(m.query_time_sec, Some(1_700_000_000));
        assert_eq!(m.query_time_nsec, Some(5));
        let p = m.policy.as_ref().unwrap();
        assert_eq!(p.r#type.as_deref(), Some("sinkhole"));
        assert_eq!(p.rule.as_deref(), Some(&b"\x01*\x03bad\x07example\x00"[..]));
        assert_eq!(p.action, Some(pb::policy::Action::Nxdomain as i32));
        assert_eq!(p.r#match, Some(pb::policy::Match::Qname as i32));
        assert_eq!(
            p.value.as_deref(),
            Some(&b"\x03www\x03bad\x07example\x00"[..])
        );
    }
    let q = msgs[0].message.as_ref().unwrap();
    assert_eq!(q.query_message.as_deref(), Some(&b"query-bytes"[..]));
    assert!(q.response_message.is_none());
    let r = msgs[1].message.as_ref().unwrap();
    assert_eq!(r.response_message.as_deref(), Some(&b"response-bytes"[..]));
    assert_eq!(r.response_time_sec, Some(1_700_000_000));
}

#[test]
fn actions_map_to_dnstap_policy_actions() {
    let table = [
        (Action::Nxdomain, Some(pb::policy::Action::Nxdomain)),
        (Action::Nodata, Some(pb::policy::Action::Nodata)),
        (Action::Address, Some(pb::policy::Action::LocalData)),
        (Action::Drop, Some(pb::policy::Action::Drop)),
        (Action::Refused, None),
    ];
    for (action, want) in table {
        let mut ev = blocked_event();
        if action == Action::Drop {
            ev.response = None;
        }
        if let Some(p) = ev.policy.as_mut() {
            p.action = action;
        }
        let msgs = messages(&ev, None, None);
        assert_eq!(msgs.len(), if action == Action::Drop { 1 } else { 2 });
        let p = msgs[0].message.as_ref().unwrap().policy.clone().unwrap();
        assert_eq!(p.action, want.map(|a| a as i32), "{action:?}");
        let extra = String::from_utf8(msgs[0].extra.clone().unwrap()).unwrap();
        assert!(
            extra.ends_with(&format!("action={}", action.as_str())),
            "{extra}"
        );
    }
}

#[test]
fn hmac_mode_leaves_the_address_out_and_puts_the_pseudonym_in_extra() {
    let key = b"0123456789abcdef0123".to_vec();
    let mut ev = blocked_event();
    // An IPv4-mapped client is pseudonymised as its IPv4 address, as the
    // audit log does.
    ev.client = "[::ffff:192.0.2.7]:5300".parse().unwrap();
    let msgs = messages(&ev, None, Some(&key));
    let want = crate::audit::record::pseudonym(&key, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    for d in &msgs {
        let m = d.message.as_ref().unwrap();
        assert!(m.query_address.is_none());
        assert!(m.query_port.is_none());
        assert_eq!(m.socket_family, Some(pb::SocketFamily::Inet as i32));
        let extra = String::from_utf8(d.extra.clone().unwrap()).unwrap();
        assert!(extra.ends_with(&format!(";client={want}")), "{extra}");
    }
}

#[test]
fn an_answer_without_policy_has_no_policy_and_no_extra() {
    let mut ev = blocked_event();
    ev.policy = None;
    ev.client = "[2001:db8::5]:4000".parse().unwrap();
    ev.transport = Transport::Tcp;
    let msgs = messages(&ev, None, None);
    let m = msgs[1].message.as_ref().unwrap();
    assert!(m.policy.is_none());
    assert!(msgs[1].extra.is_none());
    assert_eq!(m.socket_family, Some(pb::SocketFamily::Inet6 as i32));
    assert_eq!(m.socket_protocol, Some(pb::SocketProtocol::Tcp as i32));
    assert_eq!(m.query_address.as_ref().unwrap().len(), 16);
}

/// A collector as fstrm_capture behaves, on a Unix socket: accepts one
/// connection, answers the handshake, collects data frames until STOP and
/// answers FINISH.
/// One frame: a data frame's payload, or a control frame's type.
async fn read_frame(io: &mut tokio::net::UnixStream) -> Result<Vec<u8>, ControlType> {
    let len = io.read_u32().await.unwrap();
    if len == 0 {
        let clen = io.read_u32().await.unwrap() as usize;
        let mut b = vec![0; clen];
        io.read_exact(&mut b).await.unwrap();
        Err(decode_control(&b).unwrap().kind)
    } else {
        let mut b = vec![0; len as usize];
        io.read_exact(&mut b).await.unwrap();
        Ok(b)
    }
}

async fn collector(listener: tokio::net::UnixListener) -> Vec<pb::Dnstap> {
    let (mut io, _) = listener.accept().await.unwrap();
    assert_eq!(read_frame(&mut io).await, Err(ControlType::Ready));
    io.write_all(&encode_control(
        ControlType::Accept,
        Some(DNSTAP_CONTENT_TYPE),
    ))
    .await
    .unwrap();
    assert_eq!(read_frame(&mut io).await, Err(ControlType::Start));
    let mut got = Vec::new();
    loop {
        match read_frame(&mut io).await {
            Ok(b) => got.push(pb::Dnstap::decode(b.as_slice()).unwrap()),
            Err(ControlType::Stop) => break,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    io.write_all(&encode_control(ControlType::Finish, None))
        .await
        .unwrap();
    got
}

fn tap_block(sink: &Dnstap, name: &str) {
    sink.tap(&Tapped {
        client: "192.0.2.7:5300".parse().unwrap(),
        transport: Transport::Udp,
        wall: SystemTime::now(),
        query: name.as_bytes(),
        response: Some(b"r"),
        policy: Some(TapPolicy {
            rule: name,
            matched: name.as_bytes(),
            action: Action::Nxdomain,
            list: "court",
            list_version: 1,
            decision: None,
        }),
    });
}

#[tokio::test]
async fn the_writer_reconnects_and_delivers_what_was_queued_then_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("tap.sock");
    let cfg = DnstapConfig {
        target: DnstapTarget::Unix(sock.clone()),
        messages: DnstapMessages::Blocked,
        queue_capacity: 16,
        identity: None,
    };
    let (sink, writer) = Dnstap::start(&cfg, None);
    assert!(!sink.wants_all());
    // No collector yet: events wait in the queue (the query path does not).
    for i in 0..3 {
        tap_block(&sink, &format!("q{i}.example"));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(sink.stats().connect_failures.load(Ordering::Relaxed) >= 1);
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let got = tokio::spawn(collector(listener));
    // Backoff is at most a few hundred ms by now.
    let t0 = std::time::Instant::now();
    while !sink.stats().connected.load(Ordering::Relaxed) {
        assert!(t0.elapsed() < Duration::from_secs(5), "never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tap_block(&sink, "q3.example");
    writer.shutdown().await;
    let got = got.await.unwrap();
    let names: Vec<Vec<u8>> = got
        .iter()
        .filter(|d| d.message.as_ref().unwrap().r#type == pb::message::Type::ClientQuery as i32)
        .map(|d| d.message.clone().unwrap().query_message.unwrap())
        .collect();
    assert_eq!(
        names,
        (0..4)
            .map(|i| format!("q{i}.example").into_bytes())
            .collect::<Vec<_>>()
    );
    assert_eq!(got.len(), 8);
    assert_eq!(sink.stats().sent.load(Ordering::Relaxed), 8);
    assert_eq!(sink.stats().dropped.load(Ordering::Relaxed), 0);
    assert_eq!(sink.stats().connects.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DnstapConfig {
        target: DnstapTarget::Unix(dir.path().join("nobody.sock")),
        messages: DnstapMessages::All,
        queue_capacity: 4,
        identity: None,
    };
    let (sink, writer) = Dnstap::start(&cfg, None);
    assert!(sink.wants_all());
    let t0 = std::time::Instant::now();
    for i in 0..10 {
        tap_block(&sink, &format!("q{i}.example"));
    }
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "the query path waited"
    );
    // Six events over capacity, two messages each.
    assert_eq!(sink.stats().dropped.load(Ordering::Relaxed), 12);
    writer.shutdown().await;
}
