//! DNS over TCP per RFC 7766: several queries per connection, each answered
//! as soon as it is ready (out of order), an idle timeout that only counts
//! while nothing is in flight, a connection limit, and an accept loop that
//! survives ECONNABORTED/EMFILE.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use super::{Counters, Outcome, ServeError, Shared};
use crate::config::ServerConfig;

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
                    Counters::inc(&shared.counters.tcp_rejected);
                    drop(stream);
                    continue;
                };
                Counters::inc(&shared.counters.tcp_connections);
                let shared = shared.clone();
                let idle = cfg.tcp_idle_timeout;
                let pipeline = cfg.tcp_max_pipeline;
                let stop = stop.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = connection(shared, stream, peer, idle, pipeline, stop).await {
                        tracing::debug!(%peer, error = %e, "tcp connection ended");
                    }
                });
            }
            Err(e) => {
                // Never let the loop die: ECONNABORTED is the client's
                // problem, EMFILE/ENFILE/ENOMEM pass once connections close.
                Counters::inc(&shared.counters.accept_errors);
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
    let mut buf = vec![0u8; u16::MAX as usize];
    let mut out = Vec::with_capacity(512);
    loop {
        let len = tokio::select! {
            _ = stop.changed() => break,
            r = tokio::time::timeout(idle, rd.read_u16()) => match r {
                Ok(Ok(len)) => len as usize,
                Ok(Err(_)) => break,
                Err(_) => {
                    if slots.available_permits() == pipeline {
                        break;
                    }
                    continue;
                }
            },
        };
        // A client that sends a length and then stalls is idle too.
        match tokio::time::timeout(idle, rd.read_exact(&mut buf[..len])).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        Counters::inc(&shared.counters.tcp_queries);
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let outcome = {
            let snap = shared.snapshot.load();
            shared.handle(&snap, &buf[..len], peer, false, &mut out)
        };
        match outcome {
            Outcome::Reply => {
                drop(slot);
                if tx.send(frame(&out)).await.is_err() {
                    break;
                }
            }
            Outcome::Silent => drop(slot),
            Outcome::Forward(p) => {
                shared.forward(
                    &rt,
                    super::Waiter {
                        pending: p,
                        to: super::ReplyTo::Tcp(tx.clone(), slot),
                    },
                );
            }
        }
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}

pub(super) fn frame(msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(msg.len() + 2);
    v.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    v.extend_from_slice(msg);
    v
}
