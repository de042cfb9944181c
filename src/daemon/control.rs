//! The local control channel: a Unix socket the running server listens on,
//! used by `sinkhole reload` (and later other operator commands). One JSON
//! request line in, one JSON reply line out.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::list::reload::{ReloadReport, Reloader};

/// Default socket path when the configuration names none.
pub const DEFAULT_SOCKET: &str = "/run/sinkhole/control.sock";

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("control socket {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad reply from the server: {0}")]
    BadReply(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    Reload { force: bool },
    Status,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Reply {
    Reloaded(ReloadReport),
    Rejected {
        reason: String,
        error: String,
        version_in_force: u64,
    },
    Status {
        version: u64,
        rules: usize,
        accepted: u64,
        rejected: u64,
    },
    Error {
        error: String,
    },
}

/// Listen on `path` until the task is dropped. A stale socket file from a
/// previous run is replaced.
pub async fn serve(path: PathBuf, reloader: Arc<Reloader>) -> Result<(), ControlError> {
    let io = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).map_err(io)?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let reloader = reloader.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            let mut rd = tokio::io::BufReader::new(rd);
            if rd.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match serde_json::from_str::<Request>(line.trim()) {
                Ok(req) => handle(req, reloader).await,
                Err(e) => Reply::Error {
                    error: format!("bad request: {e}"),
                },
            };
            let mut text = serde_json::to_string(&reply)
                .unwrap_or_else(|e| format!("{{\"outcome\":\"error\",\"error\":\"{e}\"}}"));
            text.push('\n');
            let _ = wr.write_all(text.as_bytes()).await;
        });
    }
}

async fn handle(req: Request, reloader: Arc<Reloader>) -> Reply {
    match req {
        Request::Status => {
            let s = reloader.current();
            Reply::Status {
                version: s.version(),
                rules: s.rule_count(),
                accepted: reloader
                    .stats
                    .accepted
                    .load(std::sync::atomic::Ordering::Relaxed),
                rejected: reloader
                    .stats
                    .rejected
                    .load(std::sync::atomic::Ordering::Relaxed),
            }
        }
        Request::Reload { force } => {
            let r = reloader.clone();
            match tokio::task::spawn_blocking(move || r.reload(force)).await {
                Ok(Ok(report)) => Reply::Reloaded(report),
                Ok(Err(e)) => Reply::Rejected {
                    reason: e.reason().to_string(),
                    error: e.to_string(),
                    version_in_force: reloader.current().version(),
                },
                Err(e) => Reply::Error {
                    error: e.to_string(),
                },
            }
        }
    }
}

/// Client side: send one request and wait (up to `timeout`) for the reply.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Reply, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(req).map_err(|e| ControlError::BadReply(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).map_err(io)?;
    serde_json::from_str(reply.trim())
        .map_err(|e| ControlError::BadReply(format!("{e}: {reply:?}")))
}
