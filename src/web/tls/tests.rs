//! The front with real TLS: a rustls origin with a self-signed (rcgen)
//! certificate on loopback, a test resolver naming it, a fake policy, and
//! rustls clients that must complete the handshake with the origin's
//! certificate through the front.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::hello::tests::reframe;
use super::*;
use crate::web::origin::tests::{Script, test_resolver};

const ORIGIN_BODY: &str = "hello from the origin";

/// Decides by name: `blocked.example` refused, `site.example` and
/// `idle.example` passed, everything else not steered; clients from
/// `denied` are not admitted.
struct FakePolicy {
    denied: Option<IpAddr>,
}

impl SniPolicy for FakePolicy {
    fn decide(&self, sni: &str, _client: SocketAddr, _port: u16) -> SniVerdict {
        match sni {
            "blocked.example" => SniVerdict::Refuse,
            "site.example" | "idle.example" | "forbidden.example" => SniVerdict::Pass,
            _ => SniVerdict::NotSteered,
        }
    }

    fn admits(&self, client: SocketAddr) -> bool {
        Some(client.ip()) != self.denied
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS origin on 127.0.0.1 for `site.example` and `idle.example`:
/// answers one HTTP request with [`ORIGIN_BODY`], or (for `GET /idle`)
/// holds the connection without answering. Returns its port and the
/// certificate clients must trust.
async fn tls_origin() -> (u16, CertificateDer<'static>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["site.example".into(), "idle.example".into()])
            .unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                if head.starts_with(b"GET /idle ") {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{ORIGIN_BODY}",
                    ORIGIN_BODY.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, cert)
}

struct Setup {
    front: SocketAddr,
    stats: Arc<TlsFrontStats>,
    cert: CertificateDer<'static>,
    _stop: oneshot::Sender<()>,
}

async fn setup(limits: TlsFrontLimits, allow_private: bool, denied: Option<IpAddr>) -> Setup {
    let (origin_port, cert) = tls_origin().await;
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let resolver = test_resolver(
        [
            ("site.example", Script::Addrs(vec![local])),
            ("idle.example", Script::Addrs(vec![local])),
            (
                "forbidden.example",
                Script::Addrs(vec!["10.0.0.1".parse().unwrap()]),
            ),
        ]
        .into_iter()
        .collect::<HashMap<_, _>>(),
    )
    .await;
    // The front listens on 127.0.0.2: its own address, never an origin.
    let front = TlsFront::bind(&["127.0.0.2:0".parse().unwrap()], limits)
        .await
        .unwrap();
    let addr = front.local_addrs()[0];
    let stats = front.stats();
    let origins = Arc::new(OriginResolver::new(
        vec![resolver],
        allow_private,
        vec![addr.ip()],
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(front.serve(
        Arc::new(FakePolicy { denied }),
        origins,
        origin_port,
        async move {
            let _ = stopped.await;
        },
    ));
    Setup {
        front: addr,
        stats,
        cert,
        _stop: stop,
    }
}

fn limits() -> TlsFrontLimits {
    let defaults = TlsFrontLimits::new(8);
    assert!(defaults.idle_timeout > defaults.hello_timeout);
    TlsFrontLimits {
        hello_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        ..defaults
    }
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    /// The hello in one write.
    Whole,
    /// One byte per write, each its own TCP segment.
    ByteByByte,
    /// The hello re-framed as two TLS records, in two writes.
    TwoRecords,
}

/// A blocking rustls client: sends its hello shaped as asked, completes
/// the handshake trusting only `cert`, sends `GET path` and returns the
/// answer, or the error that ended the connection.
fn https_get(
    front: SocketAddr,
    name: &str,
    path: &str,
    cert: &CertificateDer<'static>,
    shape: Shape,
    sni: bool,
) -> Result<String, io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.enable_sni = sni;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
    let mut sock = std::net::TcpStream::connect(front)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello)?;
    }
    match shape {
        Shape::Whole => sock.write_all(&hello)?,
        Shape::ByteByByte => {
            for b in &hello {
                sock.write_all(std::slice::from_ref(b))?;
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        Shape::TwoRecords => {
            let framed = reframe(&hello, &[hello.len() / 2]);
            let (a, b) = framed.split_at(framed.len() / 2);
            sock.write_all(a)?;
            std::thread::sleep(Duration::from_millis(20));
            sock.write_all(b)?;
        }
    }
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    write!(tls, "GET {path} HTTP/1.1\r\nhost: {name}\r\n\r\n")?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer)?;
    Ok(answer)
}

async fn get(
    s: &Setup,
    name: &'static str,
    path: &'static str,
    shape: Shape,
    sni: bool,
) -> Result<String, io::Error> {
    let (front, cert) = (s.front, s.cert.clone());
    tokio::task::spawn_blocking(move || https_get(front, name, path, &cert, shape, sni))
        .await
        .unwrap()
}

/// Wait for the counter of `outcome` to reach `n` (connections are counted
/// when their task ends, just after the client saw the close).
async fn outcome_reaches(stats: &TlsFrontStats, outcome: TlsOutcome, n: u64) {
    for _ in 0..200 {
        if stats.outcome(outcome) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{} stayed at {} (want {n}); all: {:?}",
        outcome.as_str(),
        stats.outcome(outcome),
        stats.outcomes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_through_with_the_origins_certificate_however_the_hello_comes() {
    let s = setup(limits(), true, None).await;
    for (i, shape) in [Shape::Whole, Shape::ByteByByte, Shape::TwoRecords]
        .into_iter()
        .enumerate()
    {
        let answer = get(&s, "site.example", "/", shape, true).await;
        let answer = answer.unwrap_or_else(|e| panic!("{shape:?}: {e}"));
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{shape:?}: {answer}");
        assert!(answer.ends_with(ORIGIN_BODY), "{shape:?}: {answer}");
        outcome_reaches(&s.stats, TlsOutcome::Passed, i as u64 + 1).await;
    }
    let (up, down) = s.stats.bytes();
    assert!(up > 3 * 200 && down > 3 * 500, "{up} {down}");
    assert_eq!(s.stats.open_connections(), 0);

    // What the metrics module renders from the counters.
    let metrics = crate::metrics::Metrics::new(&[]);
    let stats = s.stats.clone();
    metrics.on_scrape(move |sample| stats.sample(sample));
    let text = metrics.render().unwrap();
    assert!(
        text.contains("sinkhole_web_tls_connections_total{outcome=\"passed\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("sinkhole_web_tls_connections_total{outcome=\"refused\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("sinkhole_web_tls_open_connections 0"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "sinkhole_web_tls_bytes_total{{direction=\"origin_to_client\"}} {down}"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_sni_gets_access_denied() {
    let s = setup(limits(), true, None).await;
    let err = get(&s, "blocked.example", "/", Shape::Whole, true)
        .await
        .unwrap_err();
    let tls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a TLS error: {err:?}"));
    assert_eq!(
        *tls_err,
        rustls::Error::AlertReceived(rustls::AlertDescription::AccessDenied)
    );
    outcome_reaches(&s.stats, TlsOutcome::Refused, 1).await;
    // Split over two records: the same refusal.
    let err = get(&s, "blocked.example", "/", Shape::TwoRecords, true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("AccessDenied"), "{err}");
    outcome_reaches(&s.stats, TlsOutcome::Refused, 2).await;
    assert_eq!(s.stats.outcome(TlsOutcome::Passed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_survives_bytes_sent_after_the_hello() {
    let s = setup(limits(), true, None).await;
    let mut bytes = super::hello::tests::rustls_hello("blocked.example", true);
    bytes.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]); // ChangeCipherSpec
    for _ in 0..8 {
        // "Early data" the front never reads for a refused host.
        bytes.extend_from_slice(&[0x17, 0x03, 0x03, 0x01, 0x00]);
        bytes.extend_from_slice(&[0xab; 256]);
    }
    let got = raw_exchange(s.front, &bytes).await;
    assert_eq!(got, ACCESS_DENIED_ALERT, "an alert, then a clean close");
    outcome_reaches(&s.stats, TlsOutcome::Refused, 1).await;
}

/// The bytes a raw client reads until the front closes (or 3 s pass).
async fn raw_exchange(front: SocketAddr, send: &[u8]) -> Vec<u8> {
    let mut sock = tokio::net::TcpStream::connect(front).await.unwrap();
    sock.write_all(send).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), sock.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the front kept the connection open");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_connections_are_closed_and_counted() {
    let s = setup(limits(), true, None).await;
    // No SNI.
    let err = get(&s, "site.example", "/", Shape::Whole, false).await;
    assert!(err.is_err(), "{err:?}");
    outcome_reaches(&s.stats, TlsOutcome::NoSni, 1).await;
    // A host the front did not steer.
    let err = get(&s, "other.example", "/", Shape::Whole, true).await;
    assert!(err.is_err(), "{err:?}");
    outcome_reaches(&s.stats, TlsOutcome::NotSteered, 1).await;
    // Plain HTTP on the TLS port, and binary garbage: closed, nothing sent.
    assert!(
        raw_exchange(s.front, b"GET / HTTP/1.1\r\nhost: site.example\r\n\r\n")
            .await
            .is_empty()
    );
    assert!(
        raw_exchange(s.front, &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2])
            .await
            .is_empty()
    );
    outcome_reaches(&s.stats, TlsOutcome::NotTls, 2).await;
    // Half a hello, then silence: closed at the hello deadline.
    let hello = super::hello::tests::rustls_hello("site.example", true);
    let t0 = std::time::Instant::now();
    assert!(
        raw_exchange(s.front, &hello[..hello.len() / 2])
            .await
            .is_empty()
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    outcome_reaches(&s.stats, TlsOutcome::HelloTimeout, 1).await;
    assert_eq!(s.stats.outcome(TlsOutcome::Passed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_origins_and_denied_clients_are_closed() {
    // Private origins not allowed: 127.0.0.1 and 10.0.0.1 are refused.
    let s = setup(limits(), false, None).await;
    assert!(
        get(&s, "site.example", "/", Shape::Whole, true)
            .await
            .is_err()
    );
    assert!(
        get(&s, "forbidden.example", "/", Shape::Whole, true)
            .await
            .is_err()
    );
    outcome_reaches(&s.stats, TlsOutcome::OriginError, 2).await;

    let s = setup(limits(), true, Some("127.0.0.1".parse().unwrap())).await;
    assert!(raw_exchange(s.front, b"\x16").await.is_empty());
    outcome_reaches(&s.stats, TlsOutcome::Denied, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_and_the_idle_timeout() {
    let s = setup(
        TlsFrontLimits {
            max_connections: 1,
            idle_timeout: Duration::from_millis(400),
            ..limits()
        },
        true,
        None,
    )
    .await;
    // One connection holds the only slot (an idle pass-through)...
    let holder = tokio::spawn({
        let (front, cert) = (s.front, s.cert.clone());
        tokio::task::spawn_blocking(move || {
            let t0 = std::time::Instant::now();
            let r = https_get(front, "idle.example", "/idle", &cert, Shape::Whole, true);
            (r, t0.elapsed())
        })
    });
    for _ in 0..200 {
        if s.stats.open_connections() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(s.stats.open_connections(), 1);
    // ...so the next is closed at once.
    assert!(raw_exchange(s.front, b"\x16").await.is_empty());
    outcome_reaches(&s.stats, TlsOutcome::OverCapacity, 1).await;
    // The idle one is closed after the idle timeout, not the origin's 30 s.
    let (r, took) = holder.await.unwrap().unwrap();
    assert!(r.map(|a| a.is_empty()).unwrap_or(true));
    assert!(took < Duration::from_secs(3), "{took:?}");
    outcome_reaches(&s.stats, TlsOutcome::Passed, 1).await;
    // The slot is free again.
    let answer = get(&s, "site.example", "/", Shape::Whole, true)
        .await
        .unwrap();
    assert!(answer.ends_with(ORIGIN_BODY));
}

/// What an open connection costs beyond its socket: the task's future
/// (boxed once per connection) stays small; the copy buffers (2 × 8 KB)
/// and the hello buffer (freed once forwarded) are separate allocations.
#[tokio::test]
async fn a_connection_task_is_small() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let cx = Conn {
        policy: Arc::new(FakePolicy { denied: None }),
        origins: Arc::new(OriginResolver::new(vec![], true, vec![])),
        origin_port: 443,
        limits: limits(),
        stats: Arc::new(TlsFrontStats::default()),
    };
    let task = cx.run(client, addr);
    let size = std::mem::size_of_val(&task);
    // About 2 KB in a debug build: no read buffer lives in it.
    assert!(size < 4096, "{size} bytes");
}
