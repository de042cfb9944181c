//! The push API (`[api]`) on the shared HTTP stack:
//!
//! * `PUT /v1/lists/{name}`: a new version of a managed list (body: the
//!   file; one `Sinkhole-Signature` header per minisign signature, base64
//!   of the `.minisig` file; `?dry_run=true`, `?force=true`) → receipt.
//! * `GET /v1/lists`: every list in force the token may see.
//! * `GET /v1/lists/{name}/content`: the exact bytes in force.
//!
//! Every request needs `Authorization: Bearer TOKEN`; tokens are
//! configured by their SHA-256 and compared in constant time, and never
//! logged. Refusals come in a fixed order with distinct statuses (401, 403,
//! 404, 413, 422, 409, 400) and a JSON body `{"error", "reason"}`; nothing
//! changes on a refusal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;

use crate::http::{HttpError, HttpListener, TlsError};

use super::apply::{Intake, Origin, Refusal, Upload};
use super::config::{ApiConfig, ApiToken};
use super::sign::decode_signatures;

/// The header carrying one signature (repeat it for K of N).
pub const SIGNATURE_HEADER: &str = "sinkhole-signature";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The bound API listener.
pub struct ApiServer {
    listener: HttpListener,
    config: ApiConfig,
}

impl ApiServer {
    pub async fn bind(config: &ApiConfig) -> Result<ApiServer, ApiError> {
        let mut listener = HttpListener::bind("api", &config.listen, config.limits.clone()).await?;
        if let Some(tls) = &config.tls {
            listener = listener.with_tls(tls.server_config()?);
        }
        Ok(ApiServer {
            listener,
            config: config.clone(),
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.listener.local_addrs()
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(self, intake: Arc<Intake>, shutdown: impl Future<Output = ()>) {
        let app = App(Arc::new(AppInner {
            intake,
            config: self.config,
        }));
        self.listener.serve(router(app), shutdown).await;
    }
}

struct AppInner {
    intake: Arc<Intake>,
    config: ApiConfig,
}

#[derive(Clone)]
struct App(Arc<AppInner>);

fn router(app: App) -> Router {
    Router::new()
        .route("/v1/lists", get(get_lists))
        .route("/v1/lists/{name}", put(put_list))
        .route("/v1/lists/{name}/content", get(get_content))
        .with_state(app)
}

fn refuse(r: &Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, axum::Json(r)).into_response();
    if r.status == 401 {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

/// The token the request carries, compared against every configured one
/// in constant time (all are compared, whichever matches).
fn authenticate<'a>(tokens: &'a [ApiToken], headers: &HeaderMap) -> Result<&'a ApiToken, Refusal> {
    let unauthorized = |why: &str| Refusal::new(401, "unauthorized", why);
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("no Authorization: Bearer token"))?;
    let value = value.as_bytes();
    let token = value
        .strip_prefix(b"Bearer ")
        .or_else(|| value.strip_prefix(b"bearer "))
        .ok_or_else(|| unauthorized("no Authorization: Bearer token"))?
        .trim_ascii();
    let digest: [u8; 32] = Sha256::digest(token).into();
    let mut found = None;
    for t in tokens {
        if bool::from(t.sha256.ct_eq(&digest)) {
            found = Some(t);
        }
    }
    found.ok_or_else(|| unauthorized("unknown token"))
}

#[derive(Debug, Default, Deserialize)]
struct PushQuery {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    force: bool,
}

async fn put_list(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<PushQuery>,
    req: Request,
) -> Response {
    let a = &app.0;
    let token = match authenticate(&a.config.tokens, req.headers()) {
        Ok(t) => t.clone(),
        Err(r) => return refuse(&r),
    };
    if !token.may_access(&name) {
        return refuse(&Refusal::new(
            403,
            "forbidden",
            format!("token {:?} may not push list {name:?}", token.name),
        ));
    }
    if q.force && !token.may_force {
        return refuse(&Refusal::new(
            403,
            "forbidden",
            format!("token {:?} may not force", token.name),
        ));
    }
    if a.intake.list(&name).is_none() {
        return refuse(&Refusal::new(
            404,
            "not_declared",
            format!("list {name:?} is not declared under [[lists.managed]]"),
        ));
    }
    let origin = Origin::Push {
        token: token.name.clone(),
    };
    let max = a.config.max_body_bytes;
    let too_large = || {
        Refusal::new(
            413,
            "too_large",
            format!("the body is larger than max_body_mb ({} MiB)", max >> 20),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        let r = too_large();
        a.intake.record_refusal(&name, &origin, "", &r);
        return refuse(&r);
    }
    let sig_headers: Vec<Vec<u8>> = req
        .headers()
        .get_all(SIGNATURE_HEADER)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    let upload = match receive(a, &name, req.into_body(), max).await {
        Ok(u) => u,
        Err(r) => {
            if r.status == 413 {
                a.intake.record_refusal(&name, &origin, "", &r);
            }
            return refuse(&r);
        }
    };
    let refs: Vec<&[u8]> = sig_headers.iter().map(Vec::as_slice).collect();
    let sigs = match decode_signatures(&refs) {
        Ok(s) => s,
        Err(e) => {
            let r = Refusal::new(422, "signature", e.to_string());
            if !q.dry_run {
                a.intake.record_refusal(&name, &origin, &upload.sha256, &r);
            }
            return refuse(&r);
        }
    };
    let intake = a.intake.clone();
    let Some(m) = intake.list(&name) else {
        return refuse(&Refusal::new(404, "not_declared", "list vanished"));
    };
    // One version of a list at a time; the upload above did not hold it.
    let _guard = m.lock.lock().await;
    let intake2 = intake.clone();
    let name2 = name.clone();
    let result = tokio::task::spawn_blocking(move || {
        let Some(m) = intake2.list(&name2) else {
            return Err(Refusal::new(404, "not_declared", "list vanished"));
        };
        intake2.apply(m, upload, &sigs, &origin, q.dry_run, q.force)
    })
    .await
    .unwrap_or_else(|e| Err(Refusal::new(500, "internal", e.to_string())));
    match result {
        Ok(receipt) => (StatusCode::OK, axum::Json(receipt)).into_response(),
        Err(r) => refuse(&r),
    }
}

/// Stream the body into `state_dir/incoming`, hashing it on the way;
/// never more than `max` bytes.
async fn receive(a: &AppInner, name: &str, body: Body, max: u64) -> Result<Upload, Refusal> {
    let internal = |e: std::io::Error| Refusal::new(500, "internal", e.to_string());
    let path = a
        .intake
        .incoming_dir()
        .join(format!("{name}-{:016x}.upload", rand::random::<u64>()));
    let mut file = tokio::fs::File::create(&path).await.map_err(internal)?;
    // From here the Upload owns the file: dropped on any error, it goes.
    let mut upload = Upload {
        path,
        sha256: String::new(),
        bytes: 0,
    };
    let mut hasher = Sha256::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                // A client that went away or a body cut off by the
                // request timeout; the size limit is counted below.
                return Err(Refusal::new(
                    400,
                    "upload",
                    format!("upload broken off: {e}"),
                ));
            }
        };
        upload.bytes += chunk.len() as u64;
        if upload.bytes > max {
            return Err(Refusal::new(
                413,
                "too_large",
                format!("the body is larger than max_body_mb ({} MiB)", max >> 20),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.sync_all().await.map_err(internal)?;
    upload.sha256 = hex::encode(hasher.finalize());
    Ok(upload)
}

/// One list in force, as `GET /v1/lists` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListEntry {
    pub name: String,
    /// `file`, `push`, `pull`.
    pub source: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub rules: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced_at: Option<String>,
    #[serde(default)]
    pub signers: Vec<String>,
    #[serde(default)]
    pub unsigned: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The signed `expires` has passed; the list is still enforced.
    #[serde(default)]
    pub expired: bool,
}

async fn get_lists(State(app): State<App>, headers: HeaderMap) -> Response {
    let a = &app.0;
    let token = match authenticate(&a.config.tokens, &headers) {
        Ok(t) => t.clone(),
        Err(r) => return refuse(&r),
    };
    let intake = a.intake.clone();
    let entries = tokio::task::spawn_blocking(move || super::list_entries(&intake))
        .await
        .unwrap_or_default();
    let visible: Vec<ListEntry> = entries
        .into_iter()
        .filter(|e| token.may_access(&e.name))
        .collect();
    axum::Json(serde_json::json!({ "lists": visible })).into_response()
}

async fn get_content(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let a = &app.0;
    let token = match authenticate(&a.config.tokens, &headers) {
        Ok(t) => t.clone(),
        Err(r) => return refuse(&r),
    };
    if !token.may_access(&name) {
        return refuse(&Refusal::new(
            403,
            "forbidden",
            format!("token {:?} may not read list {name:?}", token.name),
        ));
    }
    let Some(m) = a.intake.list(&name) else {
        return refuse(&Refusal::new(
            404,
            "not_declared",
            format!("list {name:?} is not a managed list"),
        ));
    };
    // Opened under the list's lock: the file and its metadata agree, and
    // the open file keeps its bytes even if a push replaces it meanwhile.
    let opened = {
        let _guard = m.lock.lock().await;
        match a.intake.meta(&name) {
            Ok(Some(meta)) => tokio::fs::File::open(a.intake.content_path(&meta))
                .await
                .map(|f| (f, meta))
                .map_err(|e| Refusal::new(500, "internal", e.to_string())),
            Ok(None) => Err(Refusal::new(
                404,
                "no_content",
                format!("list {name:?} has not been pushed or pulled yet"),
            )),
            Err(e) => Err(Refusal::new(500, "internal", e)),
        }
    };
    let (file, meta) = match opened {
        Ok(x) => x,
        Err(r) => return refuse(&r),
    };
    let len = file.metadata().await.ok().map(|m| m.len());
    let stream = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    // The file's own length: a delta's merged dump is not the bytes pushed.
    if let Some(len) = len
        && let Ok(v) = header::HeaderValue::from_str(&len.to_string())
    {
        h.insert(header::CONTENT_LENGTH, v);
    }
    for (k, v) in [
        ("sinkhole-list-version", meta.version.to_string()),
        ("sinkhole-list-sha256", meta.sha256.clone()),
    ] {
        if let Ok(v) = header::HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    resp
}
