//! The daemon: start-up order, signals, the control socket, systemd
//! notifications, scrape hooks and shutdown. `server` owns the listeners and
//! the query path; this room decides when they start and stop.
//!
//! Start-up order: `state_dir` locked → lists (or the last good snapshot)
//! → metrics listener bound → console listener bound → audit log
//! opened (its directory locked) →
//! DNS listeners bound → scrape hooks → ready file and `READY=1`. A port
//! that cannot be bound, or a directory another instance holds, stops the
//! start before anything says "ready".

pub mod control;
pub(crate) mod sdnotify;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::list::Snapshot;
use crate::list::config::ListsConfig;
use crate::list::reload::{ReloadSettings, Reloader, StartSource};
use crate::metrics::{self, Metrics};
use crate::server::{self, ServeError, Shared};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("cannot load lists: {0}")]
    Lists(String),
    #[error("cannot open the audit log: {0}")]
    Audit(String),
    #[error("{0}")]
    Metrics(String),
    #[error("cannot start the console: {0}")]
    Console(String),
    #[error("cannot start the push API: {0}")]
    Api(String),
    #[error("cannot serve the RPZ: {0}")]
    RpzServe(String),
    #[error("cannot start the web front: {0}")]
    Web(String),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("cannot write the ready file {path}: {source}")]
    ReadyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Options of `sinkhole serve` that are not configuration.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    /// Written once every listener is bound: one `ROLE ADDRESS` line per
    /// listener (see [`ListenerRole`]), so a harness or a supervisor can
    /// configure port 0 and learn the ports the kernel chose.
    pub ready_file: Option<PathBuf>,
}

/// What a bound listener is for, as named in the ready file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerRole {
    /// DNS over UDP and TCP on the same address (every worker shares it).
    Dns,
    /// `/metrics`, `/healthz`, `/readyz`.
    Metrics,
    /// The auditors' console (`[console]`).
    Console,
    /// `sinkhole witness`: `POST /v1/checkpoints`.
    Witness,
    /// The push API (`[api]`): `PUT /v1/lists/{name}`.
    Api,
    /// The URL-enforcement HTTP front (`[web] listen`).
    Web,
    /// The TLS pass-through front (`[web] tls_listen`).
    WebTls,
}

impl ListenerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerRole::Dns => "dns",
            ListenerRole::Metrics => "metrics",
            ListenerRole::Console => "console",
            ListenerRole::Witness => "witness",
            ListenerRole::Api => "api",
            ListenerRole::Web => "web",
            ListenerRole::WebTls => "web-tls",
        }
    }
}

/// Write the ready file atomically (a temporary file in the same directory,
/// then rename), so a reader never sees half of it.
pub fn write_ready_file(
    path: &Path,
    listeners: &[(ListenerRole, SocketAddr)],
) -> Result<(), DaemonError> {
    let err = |source| DaemonError::ReadyFile {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    for (role, addr) in listeners {
        text.push_str(role.as_str());
        text.push(' ');
        text.push_str(&addr.to_string());
        text.push('\n');
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ready".into());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Wait for SIGTERM or ctrl-c.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A file size limit (RLIMIT_FSIZE, systemd's LimitFSIZE=) reached by the
/// audit log must fail that write with EFBIG, which the writer counts and
/// retries, not kill the resolver with SIGXFSZ (whose default action is to
/// terminate).
fn ignore_sigxfsz() {
    // SAFETY: installing SIG_IGN for one signal touches no Rust state.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Under `lists.state_dir`: the current content of pushed, pulled and
/// followed lists (see [`ReloadSettings::sources_dir`]).
pub const SOURCES_DIR: &str = "sources";

/// The reload settings `[lists]` describes.
pub fn reload_settings(cfg: &ListsConfig) -> ReloadSettings {
    let options_cfg = cfg.clone();
    ReloadSettings {
        paths: cfg.all_paths(),
        options: Arc::new(move |p: &std::path::Path| options_cfg.options_for(p)),
        max_skipped_ratio: cfg.max_skipped_ratio,
        max_shrink_ratio: cfg.max_shrink_ratio,
        state_dir: cfg.state_dir.clone(),
        sources_dir: cfg.state_dir.as_ref().map(|d| d.join(SOURCES_DIR)),
        debounce: cfg.debounce,
        ..ReloadSettings::default()
    }
}

/// Load the lists (or the last good snapshot), serve until SIGTERM/ctrl-c,
/// then stop gracefully. Lists are reloaded when a file changes, on SIGHUP
/// and on `sinkhole reload`.
pub async fn serve(config: Config, options: DaemonOptions) -> Result<(), DaemonError> {
    let t0 = Instant::now();
    ignore_sigxfsz();
    crate::memory::keep_large_allocations_mapped();
    // Held for the life of the server: a second instance with the same
    // state_dir (or audit directory, locked by the audit writer) refuses
    // to start rather than interleave its writes with ours.
    let _state_lock = match &config.lists.state_dir {
        Some(dir) => Some(
            crate::list::state::lock_state_dir(dir)
                .map_err(|e| DaemonError::Lists(e.to_string()))?,
        ),
        None => None,
    };
    if let Some(dir) = &config.lists.state_dir {
        let sources = dir.join(SOURCES_DIR);
        std::fs::create_dir_all(&sources)
            .map_err(|e| DaemonError::Lists(format!("creating {}: {e}", sources.display())))?;
    }
    if let Some(dir) = &config.lists.state_dir {
        crate::intake::apply::recover_sources(dir, &config.managed);
    }
    let settings = reload_settings(&config.lists);
    let (reloader, source) = tokio::task::spawn_blocking(move || Reloader::start(settings))
        .await
        .map_err(|e| DaemonError::Lists(e.to_string()))?
        .map_err(|e| DaemonError::Lists(e.to_string()))?;
    log_start_source(&reloader, &source, t0);
    crate::memory::release_freed_memory();

    let metrics = Arc::new(Metrics::new(&config.upstream.servers));
    let readiness = metrics::Readiness::new(metrics.clone(), Duration::from_secs(60));
    let metrics_server = if config.metrics.listen.is_empty() {
        None
    } else {
        Some(
            metrics::MetricsServer::bind(&config.metrics)
                .await
                .map_err(|e| DaemonError::Metrics(e.to_string()))?,
        )
    };
    let console_server = match &config.console {
        Some(c) => Some(
            crate::console::ConsoleServer::bind(c)
                .await
                .map_err(|e| DaemonError::Console(e.to_string()))?,
        ),
        None => None,
    };
    let api_server = match &config.api {
        Some(a) => Some(
            crate::intake::ApiServer::bind(a)
                .await
                .map_err(|e| DaemonError::Api(e.to_string()))?,
        ),
        None => None,
    };
    let web_server = match &config.web {
        Some(w) => Some(
            crate::web::WebServer::bind(w)
                .await
                .map_err(|e| DaemonError::Web(e.to_string()))?,
        ),
        None => None,
    };
    let audit = AuditLog::open(&config.audit).map_err(|e| DaemonError::Audit(e.to_string()))?;
    // File-list reloads, pushed and pulled lists put their changes on the
    // same chain.
    crate::intake::record_file_changes(&reloader, audit.clone());
    let intake = match &config.lists.state_dir {
        Some(dir) if !config.managed.is_empty() || api_server.is_some() => Some(Arc::new(
            crate::intake::Intake::new(
                dir,
                config.managed.clone(),
                reloader.clone(),
                Some(audit.clone()),
            )
            .map_err(|e| DaemonError::Lists(format!("list intake in {}: {e}", dir.display())))?,
        )),
        _ => None,
    };
    // The web front writes `url-block` hits into the same chain.
    let web_audit = web_server.as_ref().map(|_| audit.clone());
    // The console writes `console` records into the same chain.
    let console_audit = console_server.as_ref().map(|_| audit.clone());
    let rpz_serve = match &config.rpz_serve {
        Some(cfg) => {
            let (cfg, policy, snap) = (cfg.clone(), config.policy.clone(), reloader.current());
            let t0 = Instant::now();
            let serve = tokio::task::spawn_blocking(move || {
                crate::rpz::serve::RpzServe::new(cfg, policy, &snap)
            })
            .await
            .map_err(|e| DaemonError::RpzServe(e.to_string()))?
            .map_err(|e| DaemonError::RpzServe(e.to_string()))?;
            tracing::info!(zone = %config.raw.rpz.serve.zone, serial = serve.serial(), ms = t0.elapsed().as_millis() as u64, "rpz serve: serving the zone");
            Some(Arc::new(serve))
        }
        None => None,
    };
    let (dnstap, dnstap_writer) = match &config.dnstap {
        Some(cfg) => {
            let (sink, writer) = start_dnstap(cfg, &config.audit)?;
            (Some(sink), Some(writer))
        }
        None => (None, None),
    };
    let rpz_audit = audit.clone();
    let handle = server::start(
        &config.server_settings(),
        reloader.handle(),
        Some(audit),
        metrics.clone(),
        server::Hooks {
            tap: dnstap.clone().map(|d| d as Arc<dyn crate::dnstap::TapSink>),
            rpz_serve: rpz_serve.clone(),
        },
    )?;
    if let Some(serve) = &rpz_serve {
        register_rpz_serve_metrics(&metrics, serve);
    }
    if let Some(d) = &dnstap {
        register_dnstap_metrics(&metrics, d);
    }
    register_scrape_hooks(&metrics, &handle.shared, &reloader);
    if let Some(i) = &intake {
        let i = i.clone();
        metrics.on_scrape(move |s| s.intake = Some(i.stats.snapshot()));
    }
    let _rpz_following = start_rpz_follow(&config, &reloader, &handle.shared, &metrics, rpz_audit)?;
    readiness.set_snapshot_loaded(true);
    readiness.set_listeners_bound(true);

    let mut listeners: Vec<(ListenerRole, SocketAddr)> = handle
        .local_addrs
        .iter()
        .map(|&a| (ListenerRole::Dns, a))
        .collect();
    let mut background = Vec::new();
    // Dropping `metrics_stop` (on any return) stops the metrics listener too.
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut metrics_task = None;
    if let Some(server) = metrics_server {
        listeners.extend(
            server
                .local_addrs()
                .iter()
                .map(|&a| (ListenerRole::Metrics, a)),
        );
        let (m, ready) = (metrics.clone(), readiness.check());
        metrics_task = Some(tokio::spawn(server.run(m, ready, async {
            let _ = metrics_stopped.await;
        })));
    }
    let (console_stop, console_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut console_task = None;
    if let Some(server) = console_server {
        listeners.extend(
            server
                .local_addrs()
                .iter()
                .map(|&a| (ListenerRole::Console, a)),
        );
        console_task = Some(tokio::spawn(server.run(console_audit, async {
            let _ = console_stopped.await;
        })));
    }
    let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut api_task = None;
    match (api_server, &intake) {
        (Some(server), Some(i)) => {
            listeners.extend(server.local_addrs().iter().map(|&a| (ListenerRole::Api, a)));
            api_task = Some(tokio::spawn(server.run(i.clone(), async {
                let _ = api_stopped.await;
            })));
        }
        (Some(_), None) => {
            return Err(DaemonError::Api(
                "the push API needs `lists.state_dir` (pushed lists are kept there)".into(),
            ));
        }
        _ => {}
    }
    if let Some(i) = &intake {
        background.push(tokio::spawn(crate::intake::watch_expiry(i.clone())));
        for m in i.lists.iter().filter(|m| m.cfg.pull.is_some()) {
            background.push(tokio::spawn(crate::intake::pull::run(
                i.clone(),
                m.cfg.name.clone(),
            )));
        }
    }
    let (web_stop, web_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut web_task = None;
    if let Some(server) = web_server {
        listeners.extend(server.local_addrs().iter().map(|&a| (ListenerRole::Web, a)));
        listeners.extend(
            server
                .tls_local_addrs()
                .iter()
                .map(|&a| (ListenerRole::WebTls, a)),
        );
        let cx = crate::web::WebContext {
            policy: config.policy.clone(),
            acl: config.acl.clone(),
            snapshot: reloader.handle(),
            audit: web_audit,
            metrics: metrics.clone(),
            upstreams: config.upstream.servers.clone(),
        };
        web_task = Some(tokio::spawn(server.run(cx, async {
            let _ = web_stopped.await;
        })));
    }
    if let StartSource::LastGoodStale { .. } = source {
        let r = reloader.clone();
        background.push(tokio::spawn(async move {
            let _ = tokio::task::spawn_blocking(move || r.catch_up()).await;
        }));
    }
    let _watcher = if config.lists.watch {
        match reloader.watch() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the list paths; reload with SIGHUP or `sinkhole reload`");
                None
            }
        }
    } else {
        None
    };
    background.push(tokio::spawn(reload_on_sighup(reloader.clone())));
    if let Some(serve) = &rpz_serve {
        background.push(tokio::spawn(
            serve.clone().follow(reloader.handle(), RPZ_SERVE_POLL),
        ));
    }
    if let Some(path) = config.server.control_socket.clone() {
        let r = reloader.clone();
        background.push(tokio::spawn(async move {
            if let Err(e) = control::serve(path, r).await {
                tracing::error!(error = %e, "control socket unavailable; `sinkhole reload` will not work");
            }
        }));
    }
    if let Some(path) = &options.ready_file {
        write_ready_file(path, &listeners)?;
    }
    sdnotify::ready(&status_line(&reloader.current()));
    let _watchdog = sdnotify::spawn_watchdog();

    wait_for_signal().await;
    tracing::info!("stopping");
    sdnotify::stopping();
    for task in background {
        task.abort();
    }
    // Scrapes in progress finish (within the request timeout) while DNS stops.
    let _ = metrics_stop.send(());
    let _ = console_stop.send(());
    let _ = api_stop.send(());
    let _ = web_stop.send(());
    handle.shutdown().await;
    if let Some(w) = dnstap_writer {
        w.shutdown().await;
    }
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    if let Some(task) = console_task {
        let _ = task.await;
    }
    if let Some(task) = api_task {
        let _ = task.await;
    }
    if let Some(task) = web_task {
        let _ = task.await;
    }
    if let Some(path) = &config.server.control_socket {
        let _ = std::fs::remove_file(path);
    }
    if let Some(path) = &options.ready_file {
        let _ = std::fs::remove_file(path);
    }
    // An incremental reload is enforced before it is saved; let its merge
    // finish so a restart starts from it rather than re-reading the lists.
    let r = reloader.clone();
    let merged = tokio::task::spawn_blocking(move || r.wait_merged(MERGE_ON_EXIT))
        .await
        .unwrap_or(false);
    if !merged {
        tracing::warn!(
            "stopping before the last reload was saved; the next start re-reads the lists"
        );
    }
    Ok(())
}

/// Start the dnstap writer; with `audit.client = "hmac"` it pseudonymises
/// client addresses with the audit log's key.
fn start_dnstap(
    cfg: &crate::dnstap::DnstapConfig,
    audit: &crate::audit::AuditSettings,
) -> Result<(Arc<crate::dnstap::Dnstap>, crate::dnstap::DnstapWriter), DaemonError> {
    let key = match (audit.client, &audit.hmac_key_file) {
        (crate::audit::ClientMode::Hmac, Some(path)) => {
            Some(crate::audit::load_key(path).map_err(|e| DaemonError::Audit(e.to_string()))?)
        }
        _ => None,
    };
    tracing::info!(target = %cfg.target, messages = ?cfg.messages, "dnstap: streaming");
    Ok(crate::dnstap::Dnstap::start(cfg, key))
}

/// How often `[rpz.serve]` looks for a new snapshot version.
const RPZ_SERVE_POLL: Duration = Duration::from_millis(100);

/// `[rpz.serve]`'s figures, read at scrape time.
fn register_rpz_serve_metrics(metrics: &Arc<Metrics>, serve: &Arc<crate::rpz::serve::RpzServe>) {
    let stats = serve.stats().clone();
    metrics.on_scrape(move |s| {
        use std::sync::atomic::Ordering::Relaxed;
        let left = *stats
            .left_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.rpz_serve = Some(metrics::RpzServeSample {
            serial: stats.serial.load(Relaxed),
            records: stats.records.load(Relaxed),
            axfr: stats.axfr.load(Relaxed),
            ixfr: stats.ixfr.load(Relaxed),
            ixfr_fallback: stats.ixfr_fallback.load(Relaxed),
            refused: stats.refused.load(Relaxed),
            notify_sent: stats.notify_sent.load(Relaxed),
            notify_failed: stats.notify_failed.load(Relaxed),
            left_out: [("keyword", left.0), ("url", left.1), ("other", left.2)],
        });
    });
}

/// dnstap's counters, read at scrape time.
fn register_dnstap_metrics(metrics: &Arc<Metrics>, dnstap: &Arc<crate::dnstap::Dnstap>) {
    let stats = dnstap.stats().clone();
    metrics.on_scrape(move |s| {
        use std::sync::atomic::Ordering::Relaxed;
        s.dnstap = Some(metrics::DnstapSample {
            sent: stats.sent.load(Relaxed),
            dropped: stats.dropped.load(Relaxed),
            connects: stats.connects.load(Relaxed),
            connect_failures: stats.connect_failures.load(Relaxed),
            connected: stats.connected.load(Relaxed),
        });
    });
}

/// Log where the first snapshot came from. The snapshot is only borrowed
/// for the log line: one held here would stay mapped for the life of the
/// process, across every reload.
fn log_start_source(reloader: &Reloader, source: &StartSource, t0: Instant) {
    let snap = reloader.current();
    match source {
        StartSource::Lists(report) => {
            for s in report.skipped.iter().take(20) {
                tracing::warn!("skipped {s}");
            }
            if report.skipped.len() > 20 {
                tracing::warn!("... and {} more skipped lines", report.skipped.len() - 20);
            }
        }
        StartSource::LastGoodCurrent { version } => {
            tracing::info!(version, "list files unchanged: using the saved snapshot");
        }
        StartSource::LastGoodStale { version } => {
            tracing::warn!(
                version,
                "list files changed since the saved snapshot: serving it while the new lists load"
            );
        }
    }
    tracing::info!(
        version = snap.version(),
        rules = snap.rule_count(),
        ms = t0.elapsed().as_millis() as u64,
        "lists loaded"
    );
}

/// How long stopping waits for a pending merge (systemd's stop timeout is
/// far longer).
const MERGE_ON_EXIT: Duration = Duration::from_secs(10);

/// The systemd STATUS= line.
fn status_line(snap: &Snapshot) -> String {
    let c = snap.counts();
    format!(
        "serving lists version {}: {} rules ({} names, {} wildcards, {} allows, {} keywords)",
        snap.version(),
        snap.rule_count(),
        c.names,
        c.wildcards,
        c.allows,
        c.keywords
    )
}

/// SIGHUP re-reads the lists (the unit's `ExecReload`).
async fn reload_on_sighup(reloader: Arc<Reloader>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot handle SIGHUP");
            return;
        }
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading lists");
        sdnotify::reloading();
        let r = reloader.clone();
        let _ = tokio::task::spawn_blocking(move || r.reload(false)).await;
        sdnotify::ready(&status_line(&reloader.current()));
    }
}

/// Figures read when Prometheus scrapes.
fn register_scrape_hooks(metrics: &Arc<Metrics>, shared: &Arc<Shared>, reloader: &Arc<Reloader>) {
    let (sh, r) = (shared.clone(), reloader.clone());
    let registered = std::sync::Mutex::new(0u64);
    let m = Arc::downgrade(metrics);
    metrics.on_scrape(move |s| {
        let snap = r.current();
        s.snapshot(&snap);
        s.reload_stats(&r.stats);
        s.cache_entries = Some(sh.core.cache().len() as u64);
        s.cache_bytes = Some(sh.core.cache().bytes() as u64);
        if let Some(a) = &sh.audit {
            s.audit_stats(&a.stats());
            s.anchor = a.anchor_stats();
        }
        s.list_entries = snap.rules_per_list();
        // New lists get their zero `blocked` series once per version.
        let mut seen = registered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *seen != snap.version()
            && let Some(m) = m.upgrade()
        {
            m.register_lists(s.list_entries.iter().map(|(l, _)| l.as_str()));
            *seen = snap.version();
        }
    });
}

/// `[[rpz.follow]]`: one refresh task per zone, NOTIFY answered on the DNS
/// listeners, the zones' figures on `/metrics`. Dropping the result stops
/// the tasks.
fn start_rpz_follow(
    config: &Config,
    reloader: &Arc<Reloader>,
    shared: &Arc<Shared>,
    metrics: &Arc<Metrics>,
    audit: AuditLog,
) -> Result<Option<crate::rpz::RpzFollowing>, DaemonError> {
    let Some(state_dir) = config.lists.state_dir.as_deref() else {
        return Ok(None);
    };
    if config.rpz_follow.is_empty() {
        return Ok(None);
    }
    let following = crate::rpz::start(&config.rpz_follow, state_dir, reloader.clone(), Some(audit))
        .map_err(|e| DaemonError::Lists(e.to_string()))?;
    shared.core.set_notify(following.router.clone());
    let zones = following.zones.clone();
    metrics.on_scrape(move |s| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        s.rpz_zones = zones
            .iter()
            .map(|z| crate::metrics::rpz::RpzZoneSample {
                zone: z.zone.clone(),
                serial: z.serial(),
                records: z.records(),
                seconds_since_refresh: match z.last_success_unix() {
                    0 => None,
                    t => Some(now.saturating_sub(t)),
                },
                expired: z.expired(),
                unsigned: z.unsigned,
                transfers: z.transfers(),
                ixfr_layer: z.ixfr_applied().0,
                ixfr_rewrite: z.ixfr_applied().1,
            })
            .collect();
    });
    Ok(Some(following))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_file_lists_every_listener_by_role() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready");
        let dns: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let m: SocketAddr = "[::1]:9153".parse().unwrap();
        write_ready_file(
            &path,
            &[(ListenerRole::Dns, dns), (ListenerRole::Metrics, m)],
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "dns 127.0.0.1:40000\nmetrics [::1]:9153\n");
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
