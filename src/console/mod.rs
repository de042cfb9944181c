//! The auditors' console: read-only pages and a JSON API over the audit
//! log, on the shared HTTP stack ([`crate::http`]).
//!
//! * Pages (server-rendered HTML, no JavaScript, charts as inline SVG):
//!   `/` overview, `/search`, `/report` (per order), `/lists` (list
//!   history).
//! * API: `GET /api/overview`, `/api/search?since=&until=&client=&name=&decision=&list=&action=&kind=&format=json|jsonl|csv&limit=&offset=`,
//!   `/api/report?decision=REF`, `/api/chain`, `/api/lists`.
//! * HTTP Basic against bcrypt hashes for every path ([`auth`]); roles
//!   `auditor` and `viewer` (client addresses masked to /24 and /48, no
//!   search by client).
//! * Counts come from the audit index ([`crate::audit::index`]), rows from
//!   the log through `audit search`'s own code; an auditor's query that
//!   shows client addresses is written to the chain as a `console` record.
//! * The chain is verified in the background every `verify_every_secs`,
//!   after the index is brought up to date (so the first page is fast).

pub mod auth;
mod chart;
pub mod config;
pub mod data;
mod html;

use std::future::Future;
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::audit::index::{AuditIndex, IndexedFile};
use crate::audit::{AuditError, AuditLog, ConsoleRecord};
use crate::http::{HttpError, HttpListener, HttpStats, TlsError};

pub use auth::{Principal, Role};
pub use config::{ConsoleConfig, ConsoleUser, RawConsoleConfig};
use data::{ChainStatus, Export, Kind, SearchError, SearchParams};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("console: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Password(String),
    #[error("reading the password: {0}")]
    Input(#[source] io::Error),
}

struct Inner {
    index: AuditIndex,
    audit: Option<AuditLog>,
    auth: auth::Authenticator,
    chain: Mutex<ChainStatus>,
}

#[derive(Clone)]
struct App(Arc<Inner>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ts() -> String {
    crate::audit::format_now()
}

/// The console's routes, behind authentication.
fn router(app: App) -> Router {
    Router::new()
        .route("/", get(overview_page))
        .route("/search", get(search_page))
        .route("/report", get(report_page))
        .route("/lists", get(lists_page))
        .route("/api/overview", get(overview_api))
        .route("/api/search", get(search_api))
        .route("/api/report", get(report_api))
        .route("/api/chain", get(chain_api))
        .route("/api/lists", get(lists_api))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .with_state(app)
}

/// Every response: never cached (it may hold client data), never framed,
/// no scripts, no sniffing.
fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

async fn authenticate(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    let r = match app.0.auth.check(peer.ip(), header.as_deref()).await {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(auth::Denied::Unauthorized) => {
            let mut r = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sinkhole console\", charset=\"UTF-8\""),
            );
            r
        }
        Err(auth::Denied::TooMany(wait)) => {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "too many failed logins\n").into_response();
            if let Ok(v) = HeaderValue::from_str(&(wait.as_secs() + 1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    };
    harden(r)
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(mut b) => {
            b.push(b'\n');
            ([(header::CONTENT_TYPE, "application/json")], b).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(status: StatusCode, msg: &str) -> Response {
    let body = serde_json::json!({ "error": msg }).to_string() + "\n";
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn search_error(e: &SearchError) -> Response {
    match e {
        SearchError::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
        SearchError::Forbidden(m) => error(StatusCode::FORBIDDEN, m),
        SearchError::Audit(AuditError::Arg(m)) => error(StatusCode::BAD_REQUEST, m),
        SearchError::Audit(e) => internal(e),
    }
}

fn internal(e: &AuditError) -> Response {
    tracing::warn!("console: {e}");
    error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

/// Runs `f` with the index brought up to date, on a blocking thread.
async fn with_files<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&[IndexedFile]) -> T + Send + 'static,
) -> Result<T, Response> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || app.0.index.refresh().map(|files| f(&files)))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?
        .map_err(|e| internal(&e))
}

impl App {
    fn chain(&self) -> ChainStatus {
        let mut c = lock(&self.0.chain).clone();
        c.anchoring = self
            .0
            .audit
            .as_ref()
            .and_then(AuditLog::anchor_stats)
            .map(data::Anchoring::from);
        c
    }

    /// Puts an auditor's query that showed client addresses on the record.
    fn on_record(&self, who: &Principal, uri: &Uri, results: u64) {
        if who.role != Role::Auditor {
            return;
        }
        if let Some(log) = &self.0.audit {
            log.record_console(ConsoleRecord {
                user: who.user.clone(),
                role: who.role.as_str().to_string(),
                query: uri.to_string(),
                results,
            });
        }
    }
}

async fn overview_data(app: &App) -> Result<data::Overview, Response> {
    let chain = app.chain();
    with_files(app, move |files| data::overview(files, chain)).await
}

async fn overview_page(State(app): State<App>, Extension(who): Extension<Principal>) -> Response {
    match overview_data(&app).await {
        Ok(o) => html(html::overview(&o, &who)),
        Err(r) => r,
    }
}

async fn overview_api(State(app): State<App>) -> Response {
    match overview_data(&app).await {
        Ok(o) => json(&o),
        Err(r) => r,
    }
}

async fn chain_api(State(app): State<App>) -> Response {
    json(&app.chain())
}

async fn lists_page(State(app): State<App>, Extension(who): Extension<Principal>) -> Response {
    match with_files(&app, data::list_history).await {
        Ok(h) => html(html::lists(&h, &who)),
        Err(r) => r,
    }
}

async fn lists_api(State(app): State<App>) -> Response {
    match with_files(&app, data::list_history).await {
        Ok(h) => json(&h),
        Err(r) => r,
    }
}

#[derive(Debug, Default, Deserialize)]
struct ReportParams {
    decision: Option<String>,
}

async fn report_page(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Query(p): Query<ReportParams>,
) -> Response {
    let res = match p.decision.filter(|d| !d.is_empty()) {
        Some(d) => with_files(&app, move |f| html::report(&data::report(f, &d), &who)).await,
        None => with_files(&app, move |f| html::decisions(&data::decisions(f), &who)).await,
    };
    match res {
        Ok(body) => html(body),
        Err(r) => r,
    }
}

async fn report_api(State(app): State<App>, Query(p): Query<ReportParams>) -> Response {
    let Some(d) = p.decision.filter(|d| !d.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "decision=REF is required");
    };
    match with_files(&app, move |f| data::report(f, &d)).await {
        Ok(r) => json(&r),
        Err(r) => r,
    }
}

async fn search_page(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    uri: Uri,
    Query(p): Query<SearchParams>,
) -> Response {
    let run = async {
        let kind = p.kind(who.role)?;
        let filter = p.filter(who.role)?;
        Ok::<_, SearchError>((kind, filter))
    };
    let (kind, filter) = match run.await {
        Ok(x) => x,
        Err(e) => return search_error(&e),
    };
    if kind != Kind::Hit {
        let f = filter.clone();
        return match with_files(&app, move |files| data::events(files, kind, &f)).await {
            Ok(lines) => {
                if kind == Kind::Console {
                    app.on_record(&who, &uri, lines.len() as u64);
                }
                html(html::events(&p, who.role, &lines, &who))
            }
            Err(r) => r,
        };
    }
    if !p.any() {
        return html(html::search(&p, who.role, None, &who));
    }
    let (offset, limit) = paging(&p);
    let role = who.role;
    match with_files(&app, move |files| {
        data::search_page(files, &filter, role, offset, limit)
    })
    .await
    {
        Ok(Ok(page)) => {
            app.on_record(&who, &uri, page.rows.len() as u64);
            html(html::search(&p, who.role, Some(&page), &who))
        }
        Ok(Err(e)) => search_error(&SearchError::Audit(e)),
        Err(r) => r,
    }
}

fn paging(p: &SearchParams) -> (u64, usize) {
    let limit = p
        .limit
        .unwrap_or(data::DEFAULT_LIMIT)
        .clamp(1, data::MAX_LIMIT);
    (p.offset.unwrap_or(0), limit)
}

async fn search_api(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    uri: Uri,
    Query(p): Query<SearchParams>,
) -> Response {
    let (kind, filter) = match p.kind(who.role).and_then(|k| Ok((k, p.filter(who.role)?))) {
        Ok(x) => x,
        Err(e) => return search_error(&e),
    };
    let format = p.format.as_deref().unwrap_or("json");
    let export = match format {
        "json" => None,
        "jsonl" => Some(Export::Jsonl),
        "csv" => Some(Export::Csv),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("format {other:?}: json, jsonl or csv"),
            );
        }
    };
    if kind != Kind::Hit {
        let f = filter.clone();
        let lines = match with_files(&app, move |files| data::events(files, kind, &f)).await {
            Ok(l) => l,
            Err(r) => return r,
        };
        if kind == Kind::Console {
            app.on_record(&who, &uri, lines.len() as u64);
        }
        return match export {
            None => {
                let rows: Vec<serde_json::Value> = lines
                    .iter()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
                json(&serde_json::json!({ "rows": rows }))
            }
            Some(_) => {
                let mut body = lines.join("\n");
                if !body.is_empty() {
                    body.push('\n');
                }
                ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
            }
        };
    }
    let role = who.role;
    match export {
        None => {
            let (offset, limit) = paging(&p);
            match with_files(&app, move |files| {
                data::search_page(files, &filter, role, offset, limit)
            })
            .await
            {
                Ok(Ok(page)) => {
                    app.on_record(&who, &uri, page.rows.len() as u64);
                    json(&page)
                }
                Ok(Err(e)) => search_error(&SearchError::Audit(e)),
                Err(r) => r,
            }
        }
        Some(fmt) => stream_export(app, who, uri, filter, fmt),
    }
}

/// Sends what the blocking export writes to the response body in 64 KiB
/// chunks; a client that goes away closes the channel, which ends the scan.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
}

const STREAM_CHUNK: usize = 64 * 1024;

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(STREAM_CHUNK),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= STREAM_CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

fn stream_export(
    app: App,
    who: Principal,
    uri: Uri,
    filter: crate::audit::SearchFilter,
    format: Export,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(4);
    let role = who.role;
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(STREAM_CHUNK),
        };
        let res = app
            .0
            .index
            .refresh()
            .and_then(|files| data::export(&files, &filter, role, format, &mut w));
        match res.and_then(|n| w.flush().map(|()| n).map_err(AuditError::Output)) {
            Ok(n) => app.on_record(&who, &uri, n),
            Err(e) => {
                // The body ends with an error: the client sees a cut-off
                // transfer, never a short result that looks complete.
                tracing::warn!("console export: {e}");
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let (ctype, name) = match format {
        Export::Csv => (
            "text/csv; charset=utf-8",
            "attachment; filename=\"sinkhole-search.csv\"",
        ),
        Export::Jsonl => (
            "application/x-ndjson",
            "attachment; filename=\"sinkhole-search.jsonl\"",
        ),
    };
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CONTENT_DISPOSITION, name),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The bound console listener; [`ConsoleServer::run`] serves it.
#[derive(Debug)]
pub struct ConsoleServer {
    listener: HttpListener,
    config: ConsoleConfig,
}

impl ConsoleServer {
    /// Binds every `console.listen` address (and loads the TLS pair) now,
    /// so a taken port or a bad certificate stops start-up.
    pub async fn bind(config: &ConsoleConfig) -> Result<ConsoleServer, ConsoleError> {
        let mut listener =
            HttpListener::bind("console", &config.listen, config.limits.clone()).await?;
        if let Some(tls) = &config.tls {
            listener = listener.with_tls(tls.server_config()?);
        }
        Ok(ConsoleServer {
            listener,
            config: config.clone(),
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.listener.local_addrs()
    }

    pub fn stats(&self) -> HttpStats {
        self.listener.stats()
    }

    /// Serves until `shutdown` resolves. `audit` is the server's log, for
    /// `console` records (None: queries are not recorded, e.g. in tests).
    pub async fn run(self, audit: Option<AuditLog>, shutdown: impl Future<Output = ()>) {
        let c = &self.config;
        let app = App(Arc::new(Inner {
            index: AuditIndex::new(&c.audit_dir),
            audit,
            auth: auth::Authenticator::new(&c.users, c.auth_cache, c.max_auth_failures),
            chain: Mutex::new(ChainStatus::pending()),
        }));
        let background = tokio::spawn(keep_up(app.clone(), c.verify_every));
        self.listener.serve(router(app), shutdown).await;
        background.abort();
    }
}

/// Brings the index up to date, then verifies the chain, every `every`.
/// Both run on plain threads so a long verify never holds up shutdown.
async fn keep_up(app: App, every: std::time::Duration) {
    loop {
        let a = app.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("sinkhole-console-verify".into())
            .spawn(move || {
                if let Err(e) = a.0.index.refresh() {
                    tracing::warn!("console: indexing the audit log: {e}");
                }
                let status = match crate::audit::verify(a.0.index.dir()) {
                    Ok(r) => ChainStatus::from_report(&r, now_ts()),
                    Err(e) => ChainStatus::error(&e, now_ts()),
                };
                let _ = tx.send(status);
            });
        if spawned.is_ok() {
            if let Ok(status) = rx.await {
                *lock(&app.0.chain) = status;
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// `sinkhole console …`.
#[derive(Debug, clap::Subcommand)]
pub enum ConsoleCommand {
    /// Read a password from standard input (one line) and print its bcrypt
    /// hash for `[console.basic_auth_users]`.
    HashPassword {
        /// bcrypt cost (4..=31); each step doubles the time a guess costs.
        #[arg(long, default_value_t = 12)]
        cost: u32,
    },
}

/// Runs a console command.
pub fn run_cli(
    cmd: ConsoleCommand,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), ConsoleError> {
    match cmd {
        ConsoleCommand::HashPassword { cost } => {
            let mut line = String::new();
            input.read_line(&mut line).map_err(ConsoleError::Input)?;
            let password = line.strip_suffix('\n').unwrap_or(&line);
            let password = password.strip_suffix('\r').unwrap_or(password);
            if password.is_empty() {
                return Err(ConsoleError::Password("the password is empty".into()));
            }
            let hash = auth::hash_password(password, cost).map_err(ConsoleError::Password)?;
            writeln!(out, "{hash}").map_err(ConsoleError::Input)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine;
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::http::tests::{read_response, self_signed, tls_connect};

    /// Over HTTPS (the pair from `tls_cert`/`tls_key`): nothing without
    /// credentials, the overview with them.
    #[tokio::test]
    async fn serves_https_with_basic_auth() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = crate::audit::AuditSettings::dir(dir.path());
        s.checkpoint_interval = None;
        let log = AuditLog::open(&s).unwrap();
        for i in 0..3u8 {
            log.record(crate::audit::HitRecord::for_test(
                std::net::IpAddr::from([192, 0, 2, i]),
                std::time::SystemTime::now(),
            ));
        }
        log.shutdown();
        let tls = self_signed();
        let config = ConsoleConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            tls: Some(tls.settings.clone()),
            users: vec![ConsoleUser {
                name: "ann".into(),
                hash: auth::hash_password("pw", 4).unwrap(),
                role: Role::Auditor,
            }],
            auth_cache: Duration::from_secs(60),
            max_auth_failures: 5,
            verify_every: Duration::from_secs(3600),
            limits: crate::http::HttpLimits::default(),
            audit_dir: dir.path().to_path_buf(),
        };
        let server = ConsoleServer::bind(&config).await.unwrap();
        let addr = server.local_addrs()[0];
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(None, async {
            let _ = stopped.await;
        }));
        let get = |auth: Option<&'static str>| {
            let cert = tls.cert_der.clone();
            async move {
                let mut s = tls_connect(addr, &cert).await;
                let creds = auth
                    .map(|a| {
                        format!(
                            "Authorization: Basic {}\r\n",
                            base64::engine::general_purpose::STANDARD.encode(a)
                        )
                    })
                    .unwrap_or_default();
                let req = format!("GET /api/overview HTTP/1.1\r\nHost: localhost\r\n{creds}\r\n");
                s.write_all(req.as_bytes()).await.unwrap();
                let (st, head, body) = read_response(&mut s, req.as_bytes()).await;
                (st, head, body)
            }
        };
        let (st, head, _) = get(None).await;
        assert_eq!(st, 401);
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: basic")
        );
        assert_eq!(get(Some("ann:wrong")).await.0, 401);
        let (st, head, body) = get(Some("ann:pw")).await;
        assert_eq!(st, 200, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("cache-control: no-store")
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["hits"], 3);
        assert_eq!(v["top_decisions"][0]["key"], "D-1");
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn hash_password_reads_one_line() {
        let mut out = Vec::new();
        run_cli(
            ConsoleCommand::HashPassword { cost: 4 },
            &mut &b"s3cret\r\nignored\n"[..],
            &mut out,
        )
        .unwrap();
        let hash = String::from_utf8(out).unwrap();
        let hash = hash.trim_end();
        assert!(config::is_bcrypt(hash), "{hash}");
        assert!(bcrypt::verify("s3cret", hash).unwrap());
        let empty = run_cli(
            ConsoleCommand::HashPassword { cost: 4 },
            &mut &b"\n"[..],
            &mut Vec::new(),
        );
        assert!(empty.is_err());
    }
}
