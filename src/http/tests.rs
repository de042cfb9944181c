//! Tests of the shared HTTP stack, in process on `127.0.0.1:0`, with short
//! limits so that each finishes within a few seconds. The raw-socket
//! client helpers are shared with the fronts' tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

// ------------------------------------------------------------ client side

/// Send `req` on a new connection and read one response:
/// `(status, head, body)`; status 0 when the server closed without
/// answering.
pub(crate) async fn exchange(addr: SocketAddr, req: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may close before reading everything we send (e.g. 431).
    let _ = s.write_all(req).await;
    tokio::time::timeout(Duration::from_secs(5), read_response(&mut s, req))
        .await
        .expect("reply in time")
}

/// One response off `s` (`req` is the request it answers: a HEAD answer
/// has no body), its body delimited by Content-Length or, without one, by
/// the close.
pub(crate) async fn read_response<S: AsyncRead + Unpin>(
    s: &mut S,
    req: &[u8],
) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                return (0, String::from_utf8_lossy(&buf).into_owned(), String::new());
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    let mut body = buf[head_end + 4..].to_vec();
    if req.starts_with(b"HEAD ") {
        body.clear();
    } else if let Some(n) = length {
        while body.len() < n {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(k) => body.extend_from_slice(&chunk[..k]),
            }
        }
    } else {
        let _ = s.read_to_end(&mut body).await;
    }
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// Wait until the server closes `s` (EOF or reset); how long that took.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closes the connection");
    t0.elapsed()
}

// ------------------------------------------------------------ server side

/// A router with the shapes the stack must handle: quick, slow, a body,
/// a large answer, and the peer address.
fn test_router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                "done\n"
            }),
        )
        .route(
            "/echo",
            post(|body: Bytes| async move { format!("{}\n", body.len()) }),
        )
        .route("/big", get(|| async { vec![b'x'; 32 << 20] }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { format!("{peer}") }),
        )
}

struct Running {
    addrs: Vec<SocketAddr>,
    stats: HttpStats,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Ask the listener to stop and wait until `serve` has returned.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("serve returns")
            .unwrap();
    }
}

async fn start_on(
    addrs: &[SocketAddr],
    limits: HttpLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Running {
    let mut l = HttpListener::bind("test", addrs, limits).await.unwrap();
    if let Some(config) = tls {
        l = l.with_tls(config);
    }
    let addrs = l.local_addrs().to_vec();
    let stats = l.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(l.serve(test_router(), async {
        let _ = stopped.await;
    }));
    Running {
        addrs,
        stats,
        stop,
        task,
    }
}

async fn start(limits: HttpLimits) -> Running {
    start_on(&["127.0.0.1:0".parse().unwrap()], limits, None).await
}

fn short_limits() -> HttpLimits {
    HttpLimits {
        header_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(1500),
        keepalive_timeout: Duration::from_millis(500),
        ..HttpLimits::default()
    }
}

/// Wait until `cond` holds (polling), failing after `limit`.
async fn eventually(limit: Duration, what: &str, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ------------------------------------------------------------ tests

#[tokio::test]
async fn serves_every_address_with_the_peer_known() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let srv = start_on(&[any, any], short_limits(), None).await;
    assert_eq!(srv.addrs.len(), 2);
    assert_ne!(srv.addrs[0].port(), srv.addrs[1].port());
    assert!(srv.addrs.iter().all(|a| a.port() != 0));
    for &addr in &srv.addrs {
        let (st, _, body) = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!((st, body.as_str()), (200, "ok\n"));
    }
    let (st, _, body) = exchange(srv.addr(), b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(st, 200);
    assert!(body.starts_with("127.0.0.1:"), "{body}");
    srv.stop().await;
    assert!(matches!(
        HttpListener::bind("test", &[], HttpLimits::default()).await,
        Err(HttpError::NoAddress { .. })
    ));
}

#[tokio::test]
async fn oversized_head_gets_431_and_the_next_client_is_served() {
    let srv = start(short_limits()).await;
    let mut req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 4 * MIN_HEADER_BYTES));
    req.extend_from_slice(b"\r\n\r\n");
    let (st, _, _) = exchange(srv.addr(), &req).await;
    assert_eq!(st, 431);
    // Many small headers add up the same way.
    let mut req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..90 {
        req.extend_from_slice(format!("X-H{i}: {}\r\n", "b".repeat(100)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let (st, _, _) = exchange(srv.addr(), &req).await;
    assert_eq!(st, 431);
    let (st, _, _) = exchange(srv.addr(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(st, 200);
    srv.stop().await;
}

#[tokio::test]
async fn slowloris_is_closed_after_the_header_timeout() {
    let limits = short_limits();
    let header_timeout = limits.header_timeout;
    let srv = start(limits).await;
    let s = TcpStream::connect(srv.addr()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    // One header byte every 150 ms: progress, but never a whole head.
    let dribble = tokio::spawn(async move {
        let _ = wr.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").await;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if wr.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let took = closed_within(&mut rd, header_timeout * 4).await;
    assert!(
        took >= header_timeout - Duration::from_millis(100) && took < header_timeout * 3,
        "closed after {took:?} (header timeout {header_timeout:?})"
    );
    dribble.abort();
    eventually(Duration::from_secs(1), "no connection left", || {
        srv.stats.open_connections() == 0
    })
    .await;
    srv.stop().await;
}

/// Raise the soft open-files limit (tests may run with a low one) so that
/// a flood of a few dozen connections is not cut short by EMFILE.
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[tokio::test]
async fn idle_flood_stays_under_the_cap_and_a_scrape_gets_in() {
    raise_nofile(1024);
    const CAP: usize = 16;
    const FLOOD: usize = 40;
    let limits = HttpLimits {
        max_connections: CAP,
        header_timeout: Duration::from_millis(1500),
        ..short_limits()
    };
    let header_timeout = limits.header_timeout;
    let srv = start(limits).await;

    let mut idle = Vec::new();
    for _ in 0..FLOOD {
        idle.push(TcpStream::connect(srv.addr()).await.unwrap());
        assert!(srv.stats.open_connections() <= CAP);
    }
    eventually(Duration::from_secs(2), "the cap is full", || {
        srv.stats.open_connections() == CAP
    })
    .await;
    eventually(Duration::from_secs(2), "the flood was evicted down", || {
        srv.stats.evicted_connections() >= (FLOOD - CAP) as u64
    })
    .await;

    // The table is full of idle connections: a scrape still gets in, at once.
    let t0 = Instant::now();
    let (st, _, body) = exchange(srv.addr(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!((st, body.as_str()), (200, "ok\n"));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(
        srv.stats.peak_connections() <= CAP,
        "peak {}",
        srv.stats.peak_connections()
    );

    // Every flood connection is closed: evicted, or at the header timeout.
    for s in &mut idle {
        closed_within(s, header_timeout * 3).await;
    }
    eventually(header_timeout * 2, "idle connections timed out", || {
        srv.stats.open_connections() == 0
    })
    .await;
    assert!(
        srv.stats.peak_connections() <= CAP,
        "peak {}",
        srv.stats.peak_connections()
    );
    srv.stop().await;
}

#[tokio::test]
async fn idle_kept_alive_connections_are_closed() {
    // Keep-alive shorter than the header timeout: our own idle timer.
    // Longer: hyper's header timer, restarted when the connection goes idle.
    for (keepalive, header, bound) in [(300, 3000, 1500), (5000, 400, 1500)] {
        let srv = start(HttpLimits {
            keepalive_timeout: Duration::from_millis(keepalive),
            header_timeout: Duration::from_millis(header),
            ..short_limits()
        })
        .await;
        let mut s = TcpStream::connect(srv.addr()).await.unwrap();
        let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        s.write_all(req).await.unwrap();
        assert_eq!(read_response(&mut s, req).await.0, 200);
        let took = closed_within(&mut s, Duration::from_secs(5)).await;
        let expect = Duration::from_millis(keepalive.min(header));
        assert!(
            took >= expect - Duration::from_millis(100) && took < Duration::from_millis(bound),
            "keepalive {keepalive} ms, header {header} ms: closed after {took:?}"
        );
        srv.stop().await;
    }
    // Keep-alive off: closed right after the answer.
    let srv = start(HttpLimits {
        keepalive_timeout: Duration::ZERO,
        ..short_limits()
    })
    .await;
    let mut s = TcpStream::connect(srv.addr()).await.unwrap();
    let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(req).await.unwrap();
    let (st, head, _) = read_response(&mut s, req).await;
    assert_eq!(st, 200);
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    closed_within(&mut s, Duration::from_secs(1)).await;
    srv.stop().await;
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let srv = start(HttpLimits {
        max_body_bytes: 1024,
        ..short_limits()
    })
    .await;
    let small = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}",
        "a".repeat(100)
    );
    let (st, _, body) = exchange(srv.addr(), small.as_bytes()).await;
    assert_eq!((st, body.as_str()), (200, "100\n"));
    let declared = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n{}",
        "a".repeat(4096)
    );
    let (st, _, _) = exchange(srv.addr(), declared.as_bytes()).await;
    assert_eq!(st, 413);
    // No length declared: cut off when the stream passes the limit.
    let chunked = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n{}\r\n0\r\n\r\n",
        "a".repeat(4096)
    );
    let (st, _, _) = exchange(srv.addr(), chunked.as_bytes()).await;
    assert_eq!(st, 413);
    srv.stop().await;
}

#[tokio::test]
async fn slow_handler_gets_408_and_a_stalled_reader_is_cut_off() {
    let srv = start(HttpLimits {
        request_timeout: Duration::from_millis(200),
        ..short_limits()
    })
    .await;
    let (st, _, _) = exchange(srv.addr(), b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(st, 408);
    // Ask for 32 MiB and never read: more than the socket buffers hold, so
    // the write stalls and the connection is closed a request timeout later.
    let mut s = TcpStream::connect(srv.addr()).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    eventually(Duration::from_secs(1), "the request started", || {
        srv.stats.open_connections() == 1
    })
    .await;
    eventually(
        Duration::from_secs(3),
        "the stalled connection closed",
        || srv.stats.open_connections() == 0,
    )
    .await;
    drop(s);
    srv.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let srv = start(short_limits()).await;
    let addr = srv.addr();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut busy = TcpStream::connect(addr).await.unwrap();
    let req = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";
    busy.write_all(req).await.unwrap();
    eventually(Duration::from_secs(1), "both connections accepted", || {
        srv.stats.open_connections() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let stopping = tokio::spawn(srv.stop());
    // The idle connection is closed at once; the request in flight gets
    // its whole answer, with the connection closing after it.
    closed_within(&mut idle, Duration::from_secs(1)).await;
    let (st, head, body) = read_response(&mut busy, req).await;
    assert_eq!((st, body.as_str()), (200, "done\n"));
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    closed_within(&mut busy, Duration::from_secs(1)).await;
    stopping.await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // The listener is gone.
    assert!(TcpStream::connect(addr).await.is_err());
}

// ------------------------------------------------------------ TLS

pub(crate) struct TlsFiles {
    _dir: tempfile::TempDir,
    pub(crate) settings: TlsSettings,
    pub(crate) cert_der: rustls_pki_types::CertificateDer<'static>,
}

pub(crate) fn self_signed() -> TlsFiles {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    TlsFiles {
        settings: TlsSettings { cert, key },
        cert_der: ck.cert.der().clone(),
        _dir: dir,
    }
}

pub(crate) async fn tls_connect(
    addr: SocketAddr,
    trust: &rustls_pki_types::CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost".to_string()).unwrap();
    connector.connect(name, tcp).await.unwrap()
}

async fn https_get<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let (st, _, body) = read_response(s, req.as_bytes()).await;
    (st, body)
}

#[tokio::test]
async fn tls_serves_https() {
    let files = self_signed();
    let config = files.settings.server_config().unwrap();
    let srv = start_on(
        &["127.0.0.1:0".parse().unwrap()],
        short_limits(),
        Some(config),
    )
    .await;
    let mut s = tls_connect(srv.addr(), &files.cert_der).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        https_get(&mut s, "/healthz").await,
        (200, "ok\n".to_string())
    );
    // Kept alive over TLS too.
    assert_eq!(https_get(&mut s, "/healthz").await.0, 200);
    drop(s);
    // Plain HTTP on the TLS port is not served.
    let (st, _, _) = exchange(srv.addr(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(st, 0);
    // A client that connects and never starts the handshake is closed at
    // the header timeout.
    let mut silent = TcpStream::connect(srv.addr()).await.unwrap();
    closed_within(&mut silent, Duration::from_secs(2)).await;
    srv.stop().await;
}

#[tokio::test]
async fn tls_file_errors_are_typed() {
    let files = self_signed();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    let other_key = dir.path().join("other.pem");
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&other_key, other.serialize_pem()).unwrap();
    let with = |cert: &std::path::Path, key: &std::path::Path| {
        TlsSettings {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }
        .server_config()
    };
    let (cert, key) = (&files.settings.cert, &files.settings.key);
    let missing = dir.path().join("missing.pem");
    assert!(matches!(with(cert, &garbage), Err(TlsError::BadKey { .. })));
    // A certificate is not a key.
    assert!(matches!(with(cert, cert), Err(TlsError::BadKey { .. })));
    assert!(matches!(
        with(cert, &missing),
        Err(TlsError::ReadKey { .. })
    ));
    assert!(matches!(with(&garbage, key), Err(TlsError::BadCert { .. })));
    assert!(matches!(
        with(&missing, key),
        Err(TlsError::ReadCert { .. })
    ));
    let e = with(cert, &other_key).unwrap_err();
    assert!(matches!(e, TlsError::Rejected { .. }), "{e:?}");
    assert!(e.to_string().contains("other.pem"), "{e}");
    assert!(with(cert, key).is_ok());
}
