//! `sinkhole witness`: the receiver an auditor runs on a machine the ISP
//! does not control, so that the evidence leaves the box as it is made.
//!
//! Nodes POST each signed `start` and `checkpoint` record, exactly as
//! written in their audit log, to `POST /v1/checkpoints` (the node's
//! `[audit] anchor_url`). The witness checks it and answers:
//!
//! | status | when |
//! |---|---|
//! | 201 | new: stored and fsynced |
//! | 200 | identical to one it holds (a retry) |
//! | 400 | not a signed start/checkpoint record |
//! | 403 | bad signature, or a key not on the `--allow-key` list |
//! | 409 | a different chain head for a seq it holds, or a seq below the newest it holds for that key: refused and kept in `refused.jsonl` as evidence |
//! | 413 | body over 64 KiB |
//!
//! Without `--allow-key` every key is accepted (its signature must still
//! verify with the public key the record carries) and stored with
//! `"verified":false`. Storage is described in [`store`]. The listener is
//! the shared HTTP stack ([`crate::http`]) with its default limits (64
//! connections with eviction, 5 s for a request head, 10 s per request,
//! 64 KiB bodies), over TLS with `--tls-cert`/`--tls-key`.

pub mod store;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::audit::record::{Hash, hex32};
use crate::audit::sign::{AuditPublicKey, short_id};
use crate::http::{HttpLimits, HttpListener, TlsSettings};
pub use store::{Held, Store, Verdict, held};

#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} line {line}: {detail}", path.display())]
    Corrupt {
        path: PathBuf,
        line: u64,
        detail: String,
    },
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Key(String),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error(transparent)]
    Tls(#[from] crate::http::TlsError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl WitnessError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> WitnessError {
        WitnessError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `sinkhole witness` options.
#[derive(Clone, Debug)]
pub struct WitnessOptions {
    pub listen: Vec<SocketAddr>,
    pub dir: PathBuf,
    pub tls: Option<TlsSettings>,
    /// `audit.pub` files; empty: accept any key, unverified.
    pub allow_keys: Vec<PathBuf>,
}

/// Request bodies: a signed record is well under 1 KiB.
const MAX_BODY: usize = 64 * 1024;

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

type SharedStore = Arc<Mutex<Store>>;

/// The witness endpoint, for [`HttpListener::serve`].
pub fn router(store: SharedStore) -> Router {
    Router::new()
        .route("/v1/checkpoints", post(receive))
        .fallback(|| async {
            text(
                StatusCode::NOT_FOUND,
                "not found (POST /v1/checkpoints)\n".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only POST\n".into());
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            r
        })
        .with_state(store)
}

fn id(h: &Hash) -> String {
    short_id(h)
}

async fn receive(State(store): State<SharedStore>, body: Bytes) -> Response {
    let sub = match store::check(&body) {
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}\n")),
        Ok(Err(_)) => {
            tracing::warn!("refused a record whose signature does not verify");
            return text(StatusCode::FORBIDDEN, "bad signature\n".into());
        }
        Ok(Ok(s)) => s,
    };
    let (key, seq) = (sub.key_id, sub.held.seq);
    let res = tokio::task::spawn_blocking(move || {
        store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .submit(sub)
    })
    .await;
    let verdict = match res {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot store a checkpoint");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot store it now\n".into(),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "witness store task failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n".into());
        }
    };
    match verdict {
        Verdict::Stored => text(StatusCode::CREATED, "stored\n".into()),
        Verdict::AlreadyHeld => text(StatusCode::OK, "already held\n".into()),
        Verdict::UnknownKey => {
            tracing::warn!(key = %id(&key), seq, "refused a record signed by a key not on the allow list");
            text(StatusCode::FORBIDDEN, "unknown key\n".into())
        }
        Verdict::BadSignature => text(StatusCode::FORBIDDEN, "bad signature\n".into()),
        Verdict::Conflict { held } => {
            tracing::error!(key = %id(&key), seq, held = %hex32(&held).as_str(), "CONFLICT: a different chain head for a seq already held; kept as evidence in refused.jsonl");
            text(
                StatusCode::CONFLICT,
                format!(
                    "conflict: seq {seq} is held with chain head {}\n",
                    hex32(&held).as_str()
                ),
            )
        }
        Verdict::Backwards { newest } => {
            tracing::error!(key = %id(&key), seq, newest, "refused a seq below the newest held (rollback?); kept as evidence in refused.jsonl");
            text(
                StatusCode::CONFLICT,
                format!("seq {seq} goes backwards: seq {newest} is held\n"),
            )
        }
    }
}

/// A bound witness, ready to serve.
pub struct Witness {
    listener: HttpListener,
    store: SharedStore,
}

impl Witness {
    /// Loads the allowed keys, opens the store (taking its lock) and binds
    /// every address.
    pub async fn bind(opts: &WitnessOptions) -> Result<Witness, WitnessError> {
        let mut allowed = HashSet::new();
        for p in &opts.allow_keys {
            let k = AuditPublicKey::load(p).map_err(|e| WitnessError::Key(e.to_string()))?;
            allowed.insert(*k.key_id());
        }
        let store = Store::open(&opts.dir, allowed)?;
        let limits = HttpLimits {
            max_body_bytes: MAX_BODY,
            ..HttpLimits::default()
        };
        let mut listener = HttpListener::bind("witness", &opts.listen, limits).await?;
        if let Some(tls) = &opts.tls {
            listener = listener.with_tls(tls.server_config()?);
        }
        Ok(Witness {
            listener,
            store: Arc::new(Mutex::new(store)),
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.listener.local_addrs()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        self.listener.serve(router(self.store), shutdown).await;
    }
}

#[cfg(test)]
mod tests;
