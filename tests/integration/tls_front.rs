//! The TLS front (issue 12) end to end: the real binary with `[web]
//! tls_listen` on, the fake upstream resolving `*.loop2.example` to
//! 127.0.0.2 where the test runs a TLS origin (rustls, a self-signed rcgen
//! certificate), and real clients: rustls (the hello whole, byte by byte,
//! and split over two TLS records), `curl` and `openssl s_client`. Then the
//! `tls-refuse` audit records and `audit verify`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use crate::common::*;

const ORIGIN_BODY: &str = "hello from the TLS origin";

/// `https://` URL rules block the whole host at the TLS front
/// (`policy.https_url = "host"`, the default); an `http://` one steers its
/// host, whose TLS is passed through; a plain name is blocked as a whole.
const REGISTRY: &str = "url;decision;authority;date\n\
https://secure.loop2.example/secret;D-TLS;Court of Test;2026-02-01\n\
http://plain.loop2.example/page;D-PLAIN;Court of Test;2026-02-02\n";
const PLAIN: &str = "whole.loop2.example\n";

/// A TLS origin on 127.0.0.2 (port chosen by the kernel) answering one
/// HTTP request per connection with [`ORIGIN_BODY`].
struct Origin {
    port: u16,
    cert: CertificateDer<'static>,
    cert_pem: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.2", self.port));
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Origin {
    fn start() -> Origin {
        let names = [
            "plain.loop2.example",
            "secure.loop2.example",
            "whole.loop2.example",
        ];
        let certified =
            rcgen::generate_simple_self_signed(names.map(String::from).to_vec()).expect("rcgen");
        let cert = certified.cert.der().clone();
        let cert_pem = certified.cert.pem();
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.clone()], key)
                .expect("server config"),
        );
        let l = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut sock) = conn else { continue };
                let config = config.clone();
                std::thread::spawn(move || {
                    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
                    let Ok(mut conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{ORIGIN_BODY}",
                        ORIGIN_BODY.len()
                    );
                    let _ = tls.write_all(reply.as_bytes());
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        Origin {
            port,
            cert,
            cert_pem,
            stop,
        }
    }
}

/// Fields drop in order: the server stops before its upstream and origin.
struct Front {
    server: Server,
    tls: SocketAddr,
    audit: tempfile::TempDir,
    origin: Origin,
    _up: Upstream,
}

fn start() -> Front {
    let up = Upstream::start();
    let origin = Origin::start();
    let audit = tempfile::tempdir().expect("tempdir");
    let server = Server::builder(&[up.addr])
        .lists(&[("registry.csv", REGISTRY), ("plain.txt", PLAIN)])
        .metrics()
        .config(&format!(
            "[policy]\naddress_v4 = \"127.0.0.1\"\n\
             [acl]\nallow = [\"127.0.0.1/32\"]\n\
             [audit]\npath = \"{}\"\nfsync_every_ms = 0\n\
             [web]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n\
             allow_private_origins = true\norigin_https_port = {}\n",
            audit.path().display(),
            origin.port,
        ))
        .start();
    let tls = server.listeners.first("web-tls");
    Front {
        server,
        tls,
        audit,
        origin,
        _up: up,
    }
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    Whole,
    ByteByByte,
    TwoRecords,
}

/// The handshake bytes of the single-record `hello` as two records.
fn two_records(hello: &[u8]) -> Vec<u8> {
    let handshake = &hello[5..];
    let (a, b) = handshake.split_at(handshake.len() / 2);
    let mut out = Vec::new();
    for part in [a, b] {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// A rustls client through the front: the hello shaped as asked, the
/// handshake completed trusting only the origin's certificate, one GET.
fn https_get(f: &Front, name: &str, shape: Shape) -> Result<String, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(f.origin.cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
    let mut sock = TcpStream::connect(f.tls)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
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
            let framed = two_records(&hello);
            let (a, b) = framed.split_at(framed.len() / 2);
            sock.write_all(a)?;
            std::thread::sleep(Duration::from_millis(20));
            sock.write_all(b)?;
        }
    }
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    write!(tls, "GET / HTTP/1.1\r\nHost: {name}\r\n\r\n")?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer)?;
    Ok(answer)
}

fn tls_alert(err: &std::io::Error) -> Option<rustls::AlertDescription> {
    match err.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    }
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sinkhole"))
        .args(args)
        .output()
        .expect("run sinkhole");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn tls_metric(f: &Front, outcome: &str) -> f64 {
    metric(
        f.server.metrics(),
        "sinkhole_web_tls_connections_total",
        &[("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

/// Wait until the front has counted `n` connections with `outcome`.
fn await_outcome(f: &Front, outcome: &str, n: f64) {
    let seen = wait_for(Duration::from_secs(5), || {
        (tls_metric(f, outcome) >= n).then_some(())
    });
    assert!(
        seen.is_some(),
        "{outcome}: {} (want {n})",
        tls_metric(f, outcome)
    );
}

#[test]
fn rustls_clients_pass_through_or_are_refused() {
    let f = start();
    for (i, shape) in [Shape::Whole, Shape::ByteByByte, Shape::TwoRecords]
        .into_iter()
        .enumerate()
    {
        let answer = https_get(&f, "plain.loop2.example", shape)
            .unwrap_or_else(|e| panic!("{shape:?}: {e}\n{}", f.server.log()));
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{shape:?}: {answer}");
        assert!(answer.ends_with(ORIGIN_BODY), "{shape:?}: {answer}");
        await_outcome(&f, "passed", i as f64 + 1.0);
    }
    // An https:// URL rule: the whole host is refused at the handshake.
    for shape in [Shape::Whole, Shape::TwoRecords] {
        let err = https_get(&f, "secure.loop2.example", shape).unwrap_err();
        assert_eq!(
            tls_alert(&err),
            Some(rustls::AlertDescription::AccessDenied),
            "{shape:?}: {err}"
        );
    }
    // A host blocked as a whole (a client with a stale address).
    let err = https_get(&f, "whole.loop2.example", Shape::Whole).unwrap_err();
    assert_eq!(
        tls_alert(&err),
        Some(rustls::AlertDescription::AccessDenied),
        "{err}"
    );
    await_outcome(&f, "refused", 3.0);
    // A host the front did not steer: closed without an answer.
    let err = https_get(&f, "other.loop2.example", Shape::Whole).unwrap_err();
    assert_eq!(tls_alert(&err), None, "{err}");
    await_outcome(&f, "not_steered", 1.0);

    // Every refusal is a tls-refuse hit naming the SNI, in a chain that
    // still verifies.
    let dir = f.audit.path().to_str().unwrap().to_string();
    let found = wait_for(Duration::from_secs(5), || {
        let (_, out) = cli(&["audit", "search", &dir, "--name", "secure.loop2.example"]);
        (out.matches("tls-refuse").count() >= 2).then_some(out)
    });
    let out = found.unwrap_or_else(|| {
        let (_, out) = cli(&["audit", "search", &dir, "--name", "secure.loop2.example"]);
        panic!("no two tls-refuse hits for secure.loop2.example:\n{out}")
    });
    assert!(out.contains("secure.loop2.example"), "{out}");
    assert!(out.contains("D-TLS"), "{out}");
    let (ok, out) = cli(&["audit", "verify", &dir]);
    assert!(ok, "{out}");
}

#[test]
fn curl_and_openssl_through_the_front() {
    let f = start();
    let ca = f.audit.path().join("origin.pem");
    std::fs::write(&ca, &f.origin.cert_pem).unwrap();
    let ca = ca.to_str().unwrap();
    // curl verifies the origin's certificate for the name it asked.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", ca])
        .arg("--connect-to")
        .arg(format!("::{}:{}", f.tls.ip(), f.tls.port()))
        .arg("https://plain.loop2.example/")
        .output()
        .expect("curl");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), ORIGIN_BODY);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", ca])
        .arg("--connect-to")
        .arg(format!("::{}:{}", f.tls.ip(), f.tls.port()))
        .arg("https://secure.loop2.example/")
        .output()
        .expect("curl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    assert!(err.contains("access denied"), "{err}");

    // openssl s_client (Debian's OpenSSL).
    let s_client = |name: &str| {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &f.tls.to_string(),
                "-servername",
                name,
            ])
            .args(["-CAfile", ca, "-verify_return_error", "-ign_eof"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl");
        let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\n\r\n");
        let _ = child.stdin.take().unwrap().write_all(request.as_bytes());
        let out = child.wait_with_output().expect("openssl");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = s_client("plain.loop2.example");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains(ORIGIN_BODY), "{out}");
    let out = s_client("secure.loop2.example");
    assert!(out.contains("access denied"), "{out}");
    assert!(!out.contains(ORIGIN_BODY), "{out}");
}

/// The ClientHello rustls sends for `name` (with or without SNI).
fn hello_bytes(name: &str, sni: bool) -> Vec<u8> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.enable_sni = sni;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

/// What the front sends back to `bytes` from `from` before it closes
/// (with a FIN, or a reset when it closed without reading them all).
fn raw(f: &Front, from: std::net::Ipv4Addr, bytes: &[u8]) -> Vec<u8> {
    let mut s = tcp_connect_from(from, f.tls).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    if let Err(e) = s.read_to_end(&mut got) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "not closed: {e}"
        );
    }
    got
}

#[test]
fn outsiders_garbage_and_hellos_without_sni_are_closed_without_a_byte() {
    let f = start();
    let local = std::net::Ipv4Addr::LOCALHOST;
    // Outside acl.allow (127.0.0.1/32), even for a host that is passed.
    let hello = hello_bytes("plain.loop2.example", true);
    assert!(raw(&f, std::net::Ipv4Addr::new(127, 0, 0, 3), &hello).is_empty());
    await_outcome(&f, "denied", 1.0);
    assert!(
        raw(
            &f,
            local,
            b"GET / HTTP/1.1\r\nHost: plain.loop2.example\r\n\r\n"
        )
        .is_empty()
    );
    await_outcome(&f, "not_tls", 1.0);
    assert!(raw(&f, local, &hello_bytes("plain.loop2.example", false)).is_empty());
    await_outcome(&f, "no_sni", 1.0);
    // None of them reached the origin or wrote an audit record.
    assert_eq!(tls_metric(&f, "passed"), 0.0);
    let dir = f.audit.path().to_str().unwrap().to_string();
    let (_, out) = cli(&["audit", "search", &dir, "--name", "plain.loop2.example"]);
    assert!(!out.contains("tls-refuse"), "{out}");
}
