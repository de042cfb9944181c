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
use super::fold::{self, ApplyError, AxfrWriter, Delta, NetChange, Soa, serial_newer};
use super::journal;
use super::keyfile::{self, TsigKey};
use super::notify::{NotifyRouter, NotifyZone};
use super::store::{self, HashingWriter, ZoneDisk, ZoneFiles, ZoneMeta};
use super::xfr::{XfrClient, XfrError};
use crate::audit::{AuditLog, ListRecord};
use crate::list::reload::{LineChange, Reloader};

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
    /// IXFRs enforced as a layer, and those that fell back to a rewrite of
    /// the zone file and a reload (a change a layer cannot say exactly).
    ixfr_layer: AtomicU64,
    ixfr_rewrite: AtomicU64,
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
            ixfr_layer: AtomicU64::new(0),
            ixfr_rewrite: AtomicU64::new(0),
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

    /// Applied IXFRs by how: `(layer, rewrite)`.
    pub fn ixfr_applied(&self) -> (u64, u64) {
        (
            self.ixfr_layer.load(Ordering::Relaxed),
            self.ixfr_rewrite.load(Ordering::Relaxed),
        )
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
/// `audit`: each change put in force, or refused, is recorded there as a
/// `list` record (`source` `rpz`, `version` the serial).
pub fn start(
    cfgs: &[FollowConfig],
    state_dir: &Path,
    reloader: Arc<Reloader>,
    audit: Option<AuditLog>,
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
        let disk = Arc::new(ZoneDisk::open(files));
        if let Some(m) = disk.meta() {
            status.set(&m);
            tracing::info!(zone = %cfg.zone, serial = m.soa.serial, records = m.records, journal_lines = m.journal_lines, "followed zone resumes from its saved copy");
        }
        // A full reload reads the zone file: the journal goes into it first.
        let hook_disk = disk.clone();
        reloader.before_full_reload(Box::new(move || {
            if let Err(e) = hook_disk.compact() {
                tracing::error!(error = %e, "folding a zone journal before a full reload");
            }
        }));
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
            disk,
            status,
            wake,
            reloader: reloader.clone(),
            refreshing: tokio::sync::Mutex::new(()),
            audit: audit.clone(),
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

/// Enforce `change` (from serial `from` to `next.soa`) as a layer and
/// record it in the journal under the reload lock; `Ok(None)`: not
/// expressible as a layer, nothing changed.
pub(super) fn layer_change(
    disk: &ZoneDisk,
    reloader: &Arc<Reloader>,
    change: &NetChange,
    from: u32,
    next: ZoneMeta,
    first_added_line: u32,
) -> Result<Option<crate::list::reload::ReloadReport>, crate::list::reload::ReloadError> {
    let removed: Vec<String> = change.delete.iter().cloned().collect();
    let line_change = LineChange {
        path: &disk.files.source,
        removed: &removed,
        added: &change.add,
        first_added_line,
    };
    reloader.apply_source_change(&line_change, false, &mut || {
        disk.append(from, change, next.clone())
    })
}

/// Fold the zone's journal into its file and make the file the reloader's
/// baseline, under the reload lock.
pub(super) fn fold_journal(disk: &ZoneDisk, reloader: &Reloader) -> std::io::Result<()> {
    let source = disk.files.source.clone();
    reloader.adopt_source(&source, &mut || match disk.compact() {
        Ok(Some(done)) => Ok(done),
        Ok(None) => Err(std::io::Error::other("no journal to fold")),
        Err(e) => Err(std::io::Error::other(e)),
    })
}

struct Follower {
    cfg: FollowConfig,
    key: Option<TsigKey>,
    disk: Arc<ZoneDisk>,
    status: Arc<ZoneStatus>,
    wake: Arc<Notify>,
    reloader: Arc<Reloader>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    audit: Option<AuditLog>,
}

/// The journal is folded into the zone file once it holds this many
/// record lines and a quarter of the zone's (a restart replays it, and a
/// full reload folds it first).
const COMPACT_MIN_LINES: u64 = 10_000;

fn journal_too_long(m: &ZoneMeta) -> bool {
    m.journal_lines >= COMPACT_MIN_LINES && m.journal_lines > m.records / 4
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s)).clamp(MIN_WAIT, MAX_WAIT)
}

impl Follower {
    async fn run(self: Arc<Self>) {
        if self.disk.has_journal() {
            self.replay_journal().await;
        }
        loop {
            let started = tokio::time::Instant::now();
            let ok = self.refresh().await.is_ok();
            let soa = self.disk.meta().map(|m| m.soa);
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

    /// At start with changes in the journal: whether the last good
    /// snapshot already holds them depends on when it was saved, so the
    /// zone file gets them and every list is read again (the last good
    /// snapshot serves meanwhile).
    async fn replay_journal(&self) {
        let (disk, reloader) = (self.disk.clone(), self.reloader.clone());
        let zone = self.cfg.zone.clone();
        let done = tokio::task::spawn_blocking(move || {
            match reloader.with_reloads_held(|| disk.compact()) {
                Ok(_) => {}
                // The copy was given up; the next refresh transfers the zone.
                Err(_) => return,
            }
            match reloader.reload_sources_in_full(false) {
                Ok(r) => {
                    tracing::info!(%zone, version = r.version, took_ms = r.took_ms, "zone journal replayed")
                }
                Err(e) => {
                    tracing::error!(%zone, error = %e, "the replayed zone was not put in force")
                }
            }
        })
        .await;
        if let Err(e) = done {
            tracing::error!(zone = %self.cfg.zone, error = %e, "replaying the zone journal");
        }
    }

    /// Fold the journal into the zone file and make that file the list
    /// reloader's baseline (nothing is reloaded: the file says what is in
    /// force). Before an AXFR or a rewrite replaces the file, and past
    /// [`journal_too_long`].
    async fn compact(&self) -> Result<(), RefreshError> {
        if !self.disk.has_journal() {
            return Ok(());
        }
        let (disk, reloader) = (self.disk.clone(), self.reloader.clone());
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || fold_journal(&disk, &reloader))
            .await
            .map_err(|e| RefreshError::Io(std::io::Error::other(e)))??;
        tracing::info!(zone = %self.cfg.zone, ms = started.elapsed().as_millis() as u64, "zone journal folded into the zone file");
        Ok(())
    }

    /// Put a change of the zone (or its refusal) on the audit record:
    /// written and fsynced off the runtime's workers.
    async fn record(&self, rec: ListRecord) {
        let Some(audit) = self.audit.clone() else {
            return;
        };
        let zone = self.cfg.zone.clone();
        let written = tokio::task::spawn_blocking(move || audit.record_list(rec)).await;
        match written {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(%zone, error = %e, "cannot record a zone change"),
            Err(e) => tracing::error!(%zone, error = %e, "cannot record a zone change"),
        }
    }

    fn change_record(&self, outcome: &str, serial: u32, p: SocketAddr) -> ListRecord {
        ListRecord {
            list: self.cfg.zone.clone(),
            source: "rpz".into(),
            outcome: outcome.into(),
            version: u64::from(serial),
            url: Some(p.to_string()),
            ..ListRecord::default()
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
        let _refreshing = self.refreshing.lock().await;
        if let Some(meta) = self.disk.meta() {
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
                self.disk.set_meta(meta.clone())?;
                self.status.set(&meta);
                return Ok(());
            }
            match self.ixfr(&mut c, p, &meta).await {
                Ok(new) => {
                    self.status.count("ixfr", "applied");
                    self.status.set(&new);
                    if journal_too_long(&new)
                        && let Err(e) = self.compact().await
                    {
                        tracing::warn!(zone = %self.cfg.zone, error = %e, "folding the zone journal failed");
                    }
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
        let records =
            (meta.records + change.add.len() as u64).saturating_sub(change.delete.len() as u64);
        if records > self.cfg.max_zone_records {
            return Err(RefreshError::Apply(ApplyError::TooLarge(
                self.cfg.max_zone_records,
            )));
        }
        tracing::info!(
            zone = %self.cfg.zone,
            from = meta.soa.serial,
            to = ixfr.soa.serial,
            deltas = ixfr.deltas.len(),
            removed = change.delete.len(),
            added = change.add.len(),
            "IXFR received"
        );
        let change = Arc::new(change);
        if let Some(new) = self
            .apply_as_layer(&change, ixfr.soa, records, p, meta)
            .await?
        {
            self.status.ixfr_layer.fetch_add(1, Ordering::Relaxed);
            return Ok(new);
        }
        // A change a layer cannot say exactly (local data, a record our copy
        // lacks, ...): the zone file with the change, reloaded.
        self.status.ixfr_rewrite.fetch_add(1, Ordering::Relaxed);
        self.compact().await?;
        let (files, max) = (self.disk.files.clone(), self.cfg.max_zone_records);
        let entry = Delta {
            from: meta.soa.serial,
            to: ixfr.soa.serial,
            deleted: change.delete.iter().cloned().collect(),
            added: change.add.clone(),
        };
        let (written, sha256) = tokio::task::spawn_blocking(move || -> Result<_, RefreshError> {
            let old = BufReader::with_capacity(
                256 << 10,
                File::open(&files.source).map_err(|e| RefreshError::Apply(ApplyError::Io(e)))?,
            );
            let mut out = HashingWriter::new(BufWriter::with_capacity(
                256 << 10,
                File::create(&files.tmp)?,
            ));
            let written =
                journal::rewrite(old, &mut out, std::slice::from_ref(&entry)).and_then(|w| {
                    if w.records > max {
                        Err(ApplyError::TooLarge(max))
                    } else {
                        Ok(w)
                    }
                });
            let written = match written {
                Ok(w) => w,
                Err(e) => {
                    drop(out);
                    let _ = std::fs::remove_file(&files.tmp);
                    return Err(RefreshError::Apply(e));
                }
            };
            out.flush()?;
            Ok((written, out.finish().1))
        })
        .await
        .map_err(|e| RefreshError::Io(std::io::Error::other(e)))??;
        self.put_in_force(ixfr.soa, written, sha256, p, "ixfr")
            .await
    }

    /// Enforce the IXFR's net change as a layer over the snapshot in force
    /// and record it in the journal; `None` when the reloader cannot say it
    /// exactly as a layer (nothing changed then).
    async fn apply_as_layer(
        &self,
        change: &Arc<NetChange>,
        soa: Soa,
        records: u64,
        p: SocketAddr,
        meta: &ZoneMeta,
    ) -> Result<Option<ZoneMeta>, RefreshError> {
        let Ok(first_added_line) = u32::try_from(meta.next_line) else {
            return Ok(None);
        };
        if first_added_line == 0 {
            return Ok(None);
        }
        let now = now_unix();
        let next = ZoneMeta {
            soa,
            records,
            primary: p.to_string(),
            kind: "ixfr".into(),
            signed: self.key.is_some(),
            transferred_unix: now,
            refreshed_unix: now,
            next_line: meta.next_line + change.add.len() as u64,
            file_serial: Some(meta.file_serial.unwrap_or(meta.soa.serial)),
            journal_lines: meta.journal_lines + (change.add.len() + change.delete.len()) as u64,
            ..meta.clone()
        };
        let (disk, reloader, change) = (self.disk.clone(), self.reloader.clone(), change.clone());
        let from = meta.soa.serial;
        let zone = self.cfg.zone.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            layer_change(
                &disk,
                &reloader,
                &change,
                from,
                next.clone(),
                first_added_line,
            )
            .map(|r| r.map(|r| (r, next)))
        })
        .await
        .map_err(|e| RefreshError::Io(std::io::Error::other(e)))?;
        match outcome {
            Ok(Some((report, next))) => {
                tracing::info!(
                    %zone,
                    serial = soa.serial,
                    kind = "ixfr",
                    layer = true,
                    added = report.added,
                    removed = report.removed,
                    enforced_ms = report.enforced_ms,
                    "followed zone in force"
                );
                self.record(ListRecord {
                    added: report.added as u64,
                    removed: report.removed as u64,
                    ..self.change_record("applied", soa.serial, p)
                })
                .await;
                Ok(Some(next))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::error!(%zone, error = %e, "the IXFR was rejected; the previous zone stays in force");
                self.record(ListRecord {
                    reason: Some(e.to_string()),
                    ..self.change_record("rejected", soa.serial, p)
                })
                .await;
                Err(RefreshError::Rejected(e.to_string()))
            }
        }
    }

    async fn axfr(&self, c: &mut XfrClient, p: SocketAddr) -> Result<ZoneMeta, RefreshError> {
        // The file the new zone replaces (and that comes back if the new
        // one is rejected) must hold what is in force.
        if let Err(e) = self.compact().await {
            tracing::warn!(zone = %self.cfg.zone, error = %e, "folding the zone journal before an AXFR failed");
        }
        let mut out = HashingWriter::new(BufWriter::with_capacity(
            256 << 10,
            File::create(&self.disk.files.tmp)?,
        ));
        out.write_all(store::header(&self.cfg.zone).as_bytes())?;
        let mut w = AxfrWriter::new(out, self.cfg.max_zone_records);
        let result = c.axfr(&mut w).await;
        let finished = result
            .map_err(RefreshError::from)
            .and_then(|()| w.finish().map_err(|e| RefreshError::Xfr(e.into())));
        let (soa, records, out) = match finished {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&self.disk.files.tmp);
                return Err(e);
            }
        };
        tracing::info!(zone = %self.cfg.zone, serial = soa.serial, records, "AXFR received");
        let (_, sha256) = out.finish();
        // The header line, then one line per record.
        let written = journal::Rewritten {
            records,
            lines: records + 1,
        };
        self.put_in_force(soa, written, sha256, p, "axfr").await
    }

    /// Install the temporary file and reload; roll back when the reload is
    /// rejected (the old zone keeps being enforced). The journal is empty
    /// here (folded in first), so the file in place holds all that is in
    /// force.
    async fn put_in_force(
        &self,
        soa: Soa,
        written: journal::Rewritten,
        sha256: String,
        p: SocketAddr,
        kind: &str,
    ) -> Result<ZoneMeta, RefreshError> {
        let (disk, reloader) = (self.disk.clone(), self.reloader.clone());
        let zone = self.cfg.zone.clone();
        let report = tokio::task::spawn_blocking(move || -> Result<_, RefreshError> {
            let files = &disk.files;
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
        .map_err(|e| RefreshError::Io(std::io::Error::other(e)))?;
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                if let RefreshError::Rejected(why) = &e {
                    self.record(ListRecord {
                        reason: Some(why.clone()),
                        ..self.change_record("rejected", soa.serial, p)
                    })
                    .await;
                }
                return Err(e);
            }
        };
        self.record(ListRecord {
            added: report.added as u64,
            removed: report.removed as u64,
            sha256: sha256.clone(),
            ..self.change_record("applied", soa.serial, p)
        })
        .await;
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
            records: written.records,
            sha256,
            primary: p.to_string(),
            kind: kind.to_string(),
            signed: self.key.is_some(),
            transferred_unix: now,
            refreshed_unix: now,
            next_line: written.lines + 1,
            file_serial: None,
            journal_lines: 0,
        };
        self.disk.set_meta(meta.clone())?;
        Ok(meta)
    }
}
