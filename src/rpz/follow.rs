//! One task per followed zone: check the primary's SOA at the zone's
//! refresh interval (at once on a NOTIFY, at the retry interval after a
//! failure), IXFR when it is newer (AXFR when there is no usable copy or
//! the primary cannot answer incrementally), write the new zone file and
//! put it in force through the list reloader, whose guards (shrink ratio,
//! skipped lines) apply as to any list. A rejected zone is rolled back to
//! the previous file; past the SOA expire the last zone keeps being
//! enforced (never fail open) and an alarm is raised.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::config::FollowConfig;
use super::fold::{self, ApplyError, AxfrWriter, Soa, serial_newer};
use super::keyfile::{self, TsigKey};
use super::notify::{NotifyRouter, NotifyZone};
use super::store::{self, ZoneFiles, ZoneMeta};
use super::xfr::{XfrClient, XfrError};
use crate::list::reload::Reloader;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Timers before the first SOA is known.
const FIRST_REFRESH: u32 = 60;
const FIRST_RETRY: u32 = 5;
const MIN_WAIT: Duration = Duration::from_secs(1);
/// One refresh from one primary, transfer included, never takes longer
/// (a primary that trickles bytes cannot hold the zone's task forever).
const REFRESH_DEADLINE: Duration = Duration::from_secs(1800);
/// NOTIFYs closer together than this wait (they come from an address we
/// cannot authenticate over UDP; each costs the primary an SOA query).
const NOTIFY_GAP: Duration = Duration::from_millis(100);
const MAX_WAIT: Duration = Duration::from_secs(86_400);

#[derive(Debug, Error)]
pub enum FollowError {
    #[error("rpz.follow zone {zone}: tsig_key_file: {error}")]
    Key {
        zone: String,
        error: keyfile::KeyFileError,
    },
    #[error("rpz.follow: {0}")]
    Io(std::io::Error),
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const NO_SERIAL: u64 = u64::MAX;

/// What metrics and the API read about a followed zone.
#[derive(Debug)]
pub struct ZoneStatus {
    pub zone: String,
    /// Transfers are not signed (no `tsig_key_file`).
    pub unsigned: bool,
    serial: AtomicU64,
    records: AtomicU64,
    last_success_unix: AtomicU64,
    expired: AtomicBool,
    transfers: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl ZoneStatus {
    fn new(zone: &str, unsigned: bool) -> ZoneStatus {
        ZoneStatus {
            zone: zone.to_string(),
            unsigned,
            serial: AtomicU64::new(NO_SERIAL),
            records: AtomicU64::new(0),
            last_success_unix: AtomicU64::new(0),
            expired: AtomicBool::new(false),
            transfers: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn serial(&self) -> Option<u32> {
        let s = self.serial.load(Ordering::Relaxed);
        (s != NO_SERIAL).then_some(s as u32)
    }

    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Unix time of the last refresh that reached a primary (0: never).
    pub fn last_success_unix(&self) -> u64 {
        self.last_success_unix.load(Ordering::Relaxed)
    }

    /// The primaries were unreachable for longer than the SOA expire.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }

    /// `(kind, outcome, count)`: kind `soa`, `ixfr` or `axfr`.
    pub fn transfers(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.transfers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(&(k, o), &n)| (k, o, n))
            .collect()
    }

    fn count(&self, kind: &'static str, outcome: &'static str) {
        *self
            .transfers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((kind, outcome))
            .or_default() += 1;
    }

    fn set(&self, meta: &ZoneMeta) {
        self.serial
            .store(u64::from(meta.soa.serial), Ordering::Relaxed);
        self.records.store(meta.records, Ordering::Relaxed);
        self.last_success_unix
            .store(meta.refreshed_unix, Ordering::Relaxed);
    }
}

/// The followed zones of a running server.
pub struct RpzFollowing {
    pub zones: Vec<Arc<ZoneStatus>>,
    /// For the query core: NOTIFY from a primary wakes its zone.
    pub router: Arc<NotifyRouter>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RpzFollowing {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Why one refresh did not change the zone.
#[derive(Debug, Error)]
enum RefreshError {
    #[error(transparent)]
    Xfr(#[from] XfrError),
    #[error("applying the IXFR: {0}")]
    Apply(ApplyError),
    #[error("the new zone was not put in force: {0}")]
    Rejected(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl RefreshError {
    fn falls_back_to_axfr(&self) -> bool {
        match self {
            RefreshError::Xfr(e) => e.falls_back_to_axfr(),
            // Our copy disagrees with the primary's history, or cannot be
            // read: the whole zone again.
            RefreshError::Apply(ApplyError::Missing(_) | ApplyError::Io(_)) => true,
            _ => false,
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            RefreshError::Xfr(e) => e.outcome(),
            RefreshError::Apply(ApplyError::Missing(_)) => "inconsistent",
            RefreshError::Apply(ApplyError::TooLarge(_)) => "too_large",
            RefreshError::Apply(ApplyError::Io(_)) | RefreshError::Io(_) => "write_error",
            RefreshError::Rejected(_) => "rejected",
        }
    }
}

/// Start following every configured zone. Key files are read now: a
/// missing or bad one stops the start.
pub fn start(
    cfgs: &[FollowConfig],
    state_dir: &Path,
    reloader: Arc<Reloader>,
) -> Result<RpzFollowing, FollowError> {
    let mut zones = Vec::new();
    let mut router = NotifyRouter::default();
    let mut followers = Vec::new();
    for cfg in cfgs {
        let key = match &cfg.tsig_key_file {
            Some(p) => Some(keyfile::load(p).map_err(|error| FollowError::Key {
                zone: cfg.zone.clone(),
                error,
            })?),
            None => {
                tracing::warn!(
                    zone = %cfg.zone,
                    "rpz.follow without tsig_key_file: transfers are NOT authenticated (anyone on the path can change what is enforced)"
                );
                None
            }
        };
        let files = ZoneFiles::new(state_dir, &cfg.zone);
        files.create_dirs().map_err(FollowError::Io)?;
        let status = Arc::new(ZoneStatus::new(&cfg.zone, key.is_none()));
        let meta = files.load();
        if let Some(m) = &meta {
            status.set(m);
            tracing::info!(zone = %cfg.zone, serial = m.soa.serial, records = m.records, "followed zone resumes from its saved copy");
        }
        let wake = Arc::new(Notify::new());
        router.zones.push(NotifyZone {
            zone: cfg.zone.clone(),
            primaries: cfg.primaries.iter().map(|p| p.ip()).collect(),
            wake: wake.clone(),
        });
        zones.push(status.clone());
        followers.push(Arc::new(Follower {
            cfg: cfg.clone(),
            key,
            files,
            status,
            wake,
            reloader: reloader.clone(),
            meta: tokio::sync::Mutex::new(meta),
        }));
    }
    warn_unfollowed(cfgs, state_dir);
    let tasks = followers
        .into_iter()
        .map(|f| tokio::spawn(f.run()))
        .collect();
    Ok(RpzFollowing {
        zones,
        router: Arc::new(router),
        tasks,
    })
}

/// A zone dropped from the configuration keeps its last copy in
/// `sources/`, enforced like any list: never removed behind the operator's
/// back (that would unblock a whole zone), but said loudly at start.
fn warn_unfollowed(cfgs: &[FollowConfig], state_dir: &Path) {
    let Ok(dir) = std::fs::read_dir(state_dir.join("rpz")) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(zone) = name.strip_suffix(".json") else {
            continue;
        };
        let source = ZoneFiles::new(state_dir, zone).source;
        if !zone.starts_with('.') && !cfgs.iter().any(|c| c.zone == zone) && source.exists() {
            tracing::warn!(
                zone,
                file = %source.display(),
                "zone no longer followed, but its last copy is still enforced: delete the file (and rpz/{zone}.json) to stop enforcing it"
            );
        }
    }
}

struct Follower {
    cfg: FollowConfig,
    key: Option<TsigKey>,
    files: ZoneFiles,
    status: Arc<ZoneStatus>,
    wake: Arc<Notify>,
    reloader: Arc<Reloader>,
    meta: tokio::sync::Mutex<Option<ZoneMeta>>,
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s)).clamp(MIN_WAIT, MAX_WAIT)
}

impl Follower {
    async fn run(self: Arc<Self>) {
        loop {
            let started = tokio::time::Instant::now();
            let ok = self.refresh().await.is_ok();
            let soa = self.meta.lock().await.as_ref().map(|m| m.soa);
            let mut wait = match (ok, soa) {
                (true, Some(s)) => secs(s.refresh),
                (true, None) => secs(FIRST_REFRESH),
                (false, Some(s)) => secs(s.retry),
                (false, None) => secs(FIRST_RETRY),
            };
            if let Some(left) = self.check_expire(soa) {
                wait = wait.min(left.max(MIN_WAIT));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {
                    tokio::time::sleep_until(started + NOTIFY_GAP).await;
                    tracing::debug!(zone = %self.cfg.zone, "NOTIFY: refreshing now");
                }
            }
        }
    }

    /// Raise or clear the expiry alarm; the time left until expiry.
    fn check_expire(&self, soa: Option<Soa>) -> Option<Duration> {
        let soa = soa?;
        let last = self.status.last_success_unix();
        let age = now_unix().saturating_sub(last);
        let expire = u64::from(soa.expire);
        if age > expire {
            if !self.status.expired.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    zone = %self.cfg.zone,
                    serial = soa.serial,
                    unreachable_secs = age,
                    "followed zone EXPIRED: no primary reachable past the SOA expire; still enforcing the last zone"
                );
            }
            None
        } else {
            self.status.expired.store(false, Ordering::Relaxed);
            Some(Duration::from_secs(expire - age + 1))
        }
    }

    async fn refresh(&self) -> Result<(), RefreshError> {
        let mut last = None;
        for &p in &self.cfg.primaries {
            let result = tokio::time::timeout(REFRESH_DEADLINE, self.refresh_from(p))
                .await
                .unwrap_or(Err(RefreshError::Xfr(XfrError::Timeout)));
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(zone = %self.cfg.zone, primary = %p, error = %e, "zone refresh failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(RefreshError::Xfr(XfrError::Timeout)))
    }

    async fn connect(&self, p: SocketAddr) -> Result<XfrClient, XfrError> {
        XfrClient::connect(p, &self.cfg.zone, self.key.as_ref(), CONNECT_TIMEOUT).await
    }

    async fn refresh_from(&self, p: SocketAddr) -> Result<(), RefreshError> {
        let mut meta_guard = self.meta.lock().await;
        if let Some(meta) = meta_guard.clone() {
            let mut c = self
                .connect(p)
                .await
                .inspect_err(|e| self.status.count("soa", e.outcome()))?;
            let theirs = c
                .soa()
                .await
                .inspect_err(|e| self.status.count("soa", e.outcome()))?;
            if !serial_newer(theirs.serial, meta.soa.serial) {
                self.status.count("soa", "current");
                let meta = ZoneMeta {
                    refreshed_unix: now_unix(),
                    ..meta
                };
                self.files.save_meta(&meta)?;
                self.status.set(&meta);
                *meta_guard = Some(meta);
                return Ok(());
            }
            match self.ixfr(&mut c, p, &meta).await {
                Ok(new) => {
                    self.status.count("ixfr", "applied");
                    self.status.set(&new);
                    *meta_guard = Some(new);
                    return Ok(());
                }
                Err(e) if e.falls_back_to_axfr() => {
                    self.status.count("ixfr", e.outcome());
                    tracing::info!(zone = %self.cfg.zone, primary = %p, error = %e, "IXFR not usable; transferring the whole zone");
                }
                Err(e) => {
                    self.status.count("ixfr", e.outcome());
                    return Err(e);
                }
            }
        }
        let mut c = self
            .connect(p)
            .await
            .inspect_err(|e| self.status.count("axfr", e.outcome()))?;
        match self.axfr(&mut c, p).await {
            Ok(new) => {
                self.status.count("axfr", "applied");
                self.status.set(&new);
                *meta_guard = Some(new);
                Ok(())
            }
            Err(e) => {
                self.status.count("axfr", e.outcome());
                Err(e)
            }
        }
    }

    async fn ixfr(
        &self,
        c: &mut XfrClient,
        p: SocketAddr,
        meta: &ZoneMeta,
    ) -> Result<ZoneMeta, RefreshError> {
        let ixfr = c.ixfr(&meta.soa, self.cfg.max_zone_records).await?;
        let change = fold::net_change(&ixfr.deltas);
        let (files, max) = (self.files.clone(), self.cfg.max_zone_records);
        let records = tokio::task::spawn_blocking(move || -> Result<u64, RefreshError> {
            let old = BufReader::new(
                File::open(&files.source).map_err(|e| RefreshError::Apply(ApplyError::Io(e)))?,
            );
            let mut out = BufWriter::new(File::create(&files.tmp)?);
            let n = fold::apply(old, &mut out, &change, max);
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    drop(out);
                    let _ = std::fs::remove_file(&files.tmp);
                    return Err(RefreshError::Apply(e));
                }
            };
            out.flush()?;
            Ok(n)
        })
        .await
        .map_err(|e| RefreshError::Io(std::io::Error::other(e)))??;
        tracing::info!(
            zone = %self.cfg.zone,
            from = meta.soa.serial,
            to = ixfr.soa.serial,
            deltas = ixfr.deltas.len(),
            records,
            "IXFR received"
        );
        self.put_in_force(ixfr.soa, records, p, "ixfr").await
    }

    async fn axfr(&self, c: &mut XfrClient, p: SocketAddr) -> Result<ZoneMeta, RefreshError> {
        let mut out = BufWriter::with_capacity(256 << 10, File::create(&self.files.tmp)?);
        out.write_all(store::header(&self.cfg.zone).as_bytes())?;
        let mut w = AxfrWriter::new(out, self.cfg.max_zone_records);
        let result = c.axfr(&mut w).await;
        let finished = result
            .map_err(RefreshError::from)
            .and_then(|()| w.finish().map_err(|e| RefreshError::Xfr(e.into())));
        let (soa, records, _) = match finished {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&self.files.tmp);
                return Err(e);
            }
        };
        tracing::info!(zone = %self.cfg.zone, serial = soa.serial, records, "AXFR received");
        self.put_in_force(soa, records, p, "axfr").await
    }

    /// Install the temporary file and reload; roll back when the reload is
    /// rejected (the old zone keeps being enforced).
    async fn put_in_force(
        &self,
        soa: Soa,
        records: u64,
        p: SocketAddr,
        kind: &str,
    ) -> Result<ZoneMeta, RefreshError> {
        let (files, reloader) = (self.files.clone(), self.reloader.clone());
        let zone = self.cfg.zone.clone();
        let report = tokio::task::spawn_blocking(move || -> Result<_, RefreshError> {
            files.install_tmp()?;
            match reloader.reload_sources(false) {
                Ok(r) => {
                    files.drop_prev();
                    Ok(r)
                }
                Err(e) => {
                    tracing::error!(%zone, error = %e, "the transferred zone was rejected; the previous zone stays in force");
                    files.restore_prev()?;
                    Err(RefreshError::Rejected(e.to_string()))
                }
            }
        })
        .await
        .map_err(|e| RefreshError::Io(std::io::Error::other(e)))??;
        tracing::info!(
            zone = %self.cfg.zone,
            serial = soa.serial,
            kind,
            incremental = report.incremental,
            added = report.added,
            removed = report.removed,
            enforced_ms = report.enforced_ms,
            "followed zone in force"
        );
        let now = now_unix();
        let meta = ZoneMeta {
            zone: self.cfg.zone.clone(),
            soa,
            records,
            sha256: store::sha256_file(&self.files.source)?,
            primary: p.to_string(),
            kind: kind.to_string(),
            signed: self.key.is_some(),
            transferred_unix: now,
            refreshed_unix: now,
        };
        self.files.save_meta(&meta)?;
        Ok(meta)
    }
}
