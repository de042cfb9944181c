//! DNS over TCP per RFC 7766: several queries per connection, each answered
//! as soon as it is ready (out of order), an idle timeout that only counts
//! while nothing is in flight, a connection limit overall and per client,
//! and an accept loop that survives ECONNABORTED/EMFILE.
//!
//! Slowloris: `tcp_idle_timeout_ms` is a deadline for the next *complete*
//! query (length and message), not for each read, so a client trickling a
//! byte at a time is closed when it runs out, like an idle one. Reads go
//! into a buffer the connection keeps (`read` is cancel-safe), so a
//! timeout that fires mid-message loses no bytes and never desynchronises
//! the framing. A frame that cannot be a query (shorter than a header, or
//! a response) closes the connection: it must not count as activity.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use super::ServerConfig;
use super::query::{Inbound, Outcome};
use super::{ServeError, Shared};
use crate::metrics::Limit;
use crate::wire;

pub(super) fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    let err = |source| ServeError::Bind {
        addr,
        proto: "tcp",
        source,
    };
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(err)?;
    }
    s.set_reuse_address(true).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    s.listen(1024).map_err(err)?;
    TcpListener::from_std(s.into()).map_err(err)
}

pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    conn_limit: Arc<Semaphore>,
    cfg: ServerConfig,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(permit) = conn_limit.clone().try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                // After the global permit, so the per-client map never
                // holds more entries than there are connections.
                let client_slot = match &shared.conns {
                    Some(limiter) => match limiter.try_acquire(peer.ip()) {
                        Some(slot) => Some(slot),
                        None => {
                            shared.metrics().ratelimited(Limit::TcpConnections);
                            drop(stream);
                            continue;
                        }
                    },
                    None => None,
                };
                let shared = shared.clone();
                let idle = cfg.tcp_idle_timeout;
                let pipeline = cfg.tcp_max_pipeline;
                let stop = stop.clone();
                tokio::spawn(async move {
                    let _permits = (permit, client_slot);
                    if let Err(e) = connection(shared, stream, peer, idle, pipeline, stop).await {
                        tracing::debug!(%peer, error = %e, "tcp connection ended");
                    }
                });
            }
            Err(e) => {
                // Never let the loop die: ECONNABORTED is the client's
                // problem, EMFILE/ENFILE/ENOMEM pass once connections close.
                tracing::warn!(error = %e, "tcp accept failed");
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    idle: Duration,
    pipeline: usize,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let rt = tokio::runtime::Handle::current();
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(pipeline);
    let writer = tokio::spawn(async move {
        while let Some(framed) = rx.recv().await {
            if wr.write_all(&framed).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    // Bounds what one connection may have in flight; reading pauses when full.
    let slots = Arc::new(Semaphore::new(pipeline));
    let mut frames = FrameBuf::new();
    let mut out = Vec::with_capacity(512);
    let mut deadline = Instant::now() + idle;
    'conn: loop {
        // Every complete query already received, in order.
        while let Some(len) = frames.next_len() {
            if !plausible_query(frames.message(len)) {
                // No client sends these; answering nothing while counting
                // them as activity would let junk hold the connection.
                break 'conn;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break 'conn;
            };
            let outcome = {
                let snap = shared.snapshot.load();
                let inbound = Inbound {
                    packet: frames.message(len),
                    client: peer,
                    transport: wire::Transport::Tcp,
                    now: std::time::Instant::now(),
                    wall: std::time::SystemTime::now(),
                };
                shared.core.handle(&snap, &inbound, &mut out)
            };
            frames.consume(len);
            match outcome {
                Outcome::Reply => {
                    drop(slot);
                    if tx.send(frame(&out)).await.is_err() {
                        break 'conn;
                    }
                }
                Outcome::Silent => drop(slot),
                Outcome::Transfer(job) => {
                    // Built off the async workers, a few messages ahead
                    // of the socket; the job stops when this side is gone.
                    let (mtx, mut mrx) = mpsc::channel::<Vec<u8>>(8);
                    let producer = tokio::task::spawn_blocking(move || {
                        (job.0)(&mut |m| mtx.blocking_send(m).is_ok());
                    });
                    while let Some(m) = mrx.recv().await {
                        if tx.send(frame(&m)).await.is_err() {
                            break 'conn;
                        }
                    }
                    let _ = producer.await;
                    drop(slot);
                }
                Outcome::Forward(p) => {
                    shared.forward(
                        &rt,
                        super::Waiter {
                            pending: *p,
                            to: super::ReplyTo::Tcp(tx.clone(), slot),
                        },
                    );
                }
            }
            deadline = Instant::now() + idle;
        }
        let read = tokio::select! {
            _ = stop.changed() => break,
            r = tokio::time::timeout_at(deadline, rd.read(frames.spare())) => r,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => frames.filled(n),
            Err(_) => {
                // RFC 7766 §6.2.3: idle only counts while nothing is being
                // answered. A partial query does not count as activity.
                if slots.available_permits() == pipeline {
                    break;
                }
                deadline = Instant::now() + idle;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}

/// At least a header, and not a response (QR=0): anything else over TCP
/// ends the connection (UDP drops such packets; see `wire::RequestError`).
fn plausible_query(msg: &[u8]) -> bool {
    msg.len() >= wire::HEADER_LEN && msg[2] & 0x80 == 0
}

/// Bytes read from a connection and not yet handled: at most one whole
/// message (length prefix + 65535) plus what came after it in the same read.
struct FrameBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl FrameBuf {
    /// Room for the largest message with its prefix, twice, so the spare
    /// space is never empty while a message is incomplete.
    const CAP: usize = 2 * (2 + u16::MAX as usize);

    fn new() -> FrameBuf {
        FrameBuf {
            buf: vec![0u8; Self::CAP].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The length of the first message if all of it is here.
    fn next_len(&self) -> Option<usize> {
        let b = &self.buf[self.start..self.end];
        if b.len() < 2 {
            return None;
        }
        let len = u16::from_be_bytes([b[0], b[1]]) as usize;
        (b.len() >= 2 + len).then_some(len)
    }

    /// The first message, when [`FrameBuf::next_len`] returned `len`.
    fn message(&self, len: usize) -> &[u8] {
        &self.buf[self.start + 2..self.start + 2 + len]
    }

    fn consume(&mut self, len: usize) {
        self.start += 2 + len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Where the next read goes. Moves a partial message to the front when
    /// the tail is short of room for the rest of it.
    fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 && Self::CAP - self.start < 2 + u16::MAX as usize {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(Self::CAP);
    }
}

pub(super) fn frame(msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(msg.len() + 2);
    v.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(f: &mut FrameBuf, bytes: &[u8]) {
        let spare = f.spare();
        assert!(spare.len() >= bytes.len());
        spare[..bytes.len()].copy_from_slice(bytes);
        f.filled(bytes.len());
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let mut stream = Vec::new();
        let msgs: Vec<Vec<u8>> = (0..50u16)
            .map(|i| (0..(i * 37 % 700)).map(|b| b as u8).collect())
            .collect();
        for m in &msgs {
            stream.extend_from_slice(&frame(m));
        }
        for chunk in [1, 2, 3, 7, 100, 4096] {
            let mut f = FrameBuf::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                push(&mut f, piece);
                while let Some(len) = f.next_len() {
                    got.push(f.message(len).to_vec());
                    f.consume(len);
                }
            }
            assert_eq!(got, msgs, "chunk {chunk}");
        }
    }

    #[test]
    fn largest_messages_fit_behind_a_partial_one() {
        let mut f = FrameBuf::new();
        let big = vec![7u8; u16::MAX as usize];
        let framed = frame(&big);
        // A big message, then the first byte of the next.
        push(&mut f, &framed);
        push(&mut f, &framed[..1]);
        let len = f.next_len().unwrap();
        assert_eq!(len, big.len());
        f.consume(len);
        assert!(f.next_len().is_none());
        // The rest of the second must still fit.
        push(&mut f, &framed[1..]);
        assert_eq!(f.next_len(), Some(big.len()));
    }
}
