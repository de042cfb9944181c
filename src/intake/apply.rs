//! One path for every new version of a managed list, pushed or pulled:
//! signatures → version → parse and the list's own guards → (dry run
//! stops here) → atomic rename into `state_dir/sources` →
//! `Reloader::reload_sources` (the reloader's guards) → metadata → a `list`
//! change record, written and fsynced → the receipt. Any refusal leaves
//! the version in force untouched (its file is restored when the reload
//! refuses the new one) and is itself put on the record.
//!
//! The caller holds the list's lock (two versions of one list are applied
//! one after the other; the second sees the first's version) and runs
//! this off the async runtime: it reads and parses files and waits for
//! the audit fsync.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::audit::{AuditLog, ListRecord};
use crate::list::guards::{self, Candidate, Limits};
use crate::list::reload::{ReloadError, Reloader};
use crate::list::{Counts, Format, ListOptions};

use super::config::ManagedList;
use super::sign::{ReceivedSig, SignatureError, verify_file};
use super::store::{self, ListMeta};

/// Who brought a version.
#[derive(Clone, Debug)]
pub enum Origin {
    Push { token: String },
    Pull { url: String },
}

impl Origin {
    fn source(&self) -> &'static str {
        match self {
            Origin::Push { .. } => "push",
            Origin::Pull { .. } => "pull",
        }
    }
}

/// A received file in `state_dir/incoming`, hashed while it was written.
#[derive(Debug)]
pub struct Upload {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
}

impl Drop for Upload {
    fn drop(&mut self) {
        // Renamed into sources on success; otherwise it goes.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why a version was not applied: an HTTP status (the push API's order
/// and codes) and a reason for the pusher and the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refusal {
    #[serde(skip)]
    pub status: u16,
    pub error: &'static str,
    pub reason: String,
}

impl Refusal {
    pub fn new(status: u16, error: &'static str, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            error,
            reason: reason.into(),
        }
    }
}

/// What a push or pull did: the receipt.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Receipt {
    pub list: String,
    pub version: u64,
    pub sha256: String,
    pub bytes: u64,
    pub format: String,
    /// Rules by kind in this list (`skipped` counts skipped lines).
    pub rules: Counts,
    pub rule_count: usize,
    pub added: usize,
    pub removed: usize,
    /// `FILE:LINE: reason`, FILE being the list's file name.
    pub skipped: Vec<String>,
    /// Key ids of the signers, in configuration order.
    pub signers: Vec<String>,
    pub unsigned: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    pub dry_run: bool,
    pub forced: bool,
    /// RFC 3339, the moment of the swap (absent on a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced_at: Option<String>,
    /// The seq of the change record in the audit log (absent on a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_seq: Option<u64>,
    /// The snapshot version now in force (all lists together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_version: Option<u64>,
    /// Milliseconds from the end of the upload to this receipt (checks,
    /// parse, reload, change record and its fsync).
    #[serde(default)]
    pub took_ms: u64,
}

/// Counters for metrics and logs.
#[derive(Debug, Default)]
pub struct IntakeStats {
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
    pub pull_failures: AtomicU64,
    /// Managed lists whose signed `expires` has passed (still enforced).
    pub expired: AtomicU64,
}

/// [`IntakeStats`] read at one moment (for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntakeFigures {
    pub applied: u64,
    pub rejected: u64,
    pub pull_failures: u64,
    pub expired: u64,
}

impl IntakeStats {
    pub fn snapshot(&self) -> IntakeFigures {
        IntakeFigures {
            applied: self.applied.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            pull_failures: self.pull_failures.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
        }
    }
}

/// A managed list and the lock that serialises its versions.
pub struct Managed {
    pub cfg: ManagedList,
    pub lock: tokio::sync::Mutex<()>,
}

/// The intake: every managed list, the reloader that enforces them and the
/// audit log their changes go to.
pub struct Intake {
    sources: PathBuf,
    incoming: PathBuf,
    managed_dir: PathBuf,
    pub(crate) lists: Vec<Managed>,
    reloader: Arc<Reloader>,
    audit: Option<AuditLog>,
    limits: Limits,
    pub stats: IntakeStats,
}

/// `state_dir/incoming`: uploads in progress (same file system as
/// `sources`, so the final rename is atomic).
pub const INCOMING_DIR: &str = "incoming";
/// `state_dir/managed`: one JSON file of metadata per managed list.
pub const MANAGED_DIR: &str = "managed";

/// The extension that makes the loader read `bytes` as `format`.
fn extension(format: Option<Format>, head: &[u8]) -> &'static str {
    match format {
        Some(Format::Rpz) => "rpz",
        Some(Format::Csv) => "csv",
        Some(Format::Json) => "json",
        Some(Format::Hosts) => "hosts",
        Some(_) => "txt",
        None => {
            let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
            let trimmed = head.trim_ascii_start();
            if head.starts_with(b"PK\x03\x04") {
                "xlsx"
            } else if trimmed.starts_with(b"<") {
                "xml"
            } else {
                "txt"
            }
        }
    }
}

impl Intake {
    /// Creates `incoming/` and `managed/` under `state_dir` and clears
    /// uploads a crash left behind.
    pub fn new(
        state_dir: &Path,
        lists: Vec<ManagedList>,
        reloader: Arc<Reloader>,
        audit: Option<AuditLog>,
    ) -> std::io::Result<Intake> {
        let sources = state_dir.join(crate::daemon::SOURCES_DIR);
        let incoming = state_dir.join(INCOMING_DIR);
        let managed_dir = state_dir.join(MANAGED_DIR);
        for d in [&sources, &incoming, &managed_dir] {
            std::fs::create_dir_all(d)?;
        }
        for e in std::fs::read_dir(&incoming)?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let s = reloader.settings();
        let limits = Limits {
            max_skipped_ratio: s.max_skipped_ratio,
            max_shrink_ratio: s.max_shrink_ratio,
        };
        Ok(Intake {
            sources,
            incoming,
            managed_dir,
            lists: lists
                .into_iter()
                .map(|cfg| Managed {
                    cfg,
                    lock: tokio::sync::Mutex::new(()),
                })
                .collect(),
            reloader,
            audit,
            limits,
            stats: IntakeStats::default(),
        })
    }

    pub fn list(&self, name: &str) -> Option<&Managed> {
        self.lists.iter().find(|m| m.cfg.name == name)
    }

    pub fn incoming_dir(&self) -> &Path {
        &self.incoming
    }

    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    pub fn meta(&self, name: &str) -> Result<Option<ListMeta>, String> {
        store::load_meta(&self.managed_dir, name)
    }

    pub(crate) fn save_meta(&self, meta: &ListMeta) -> std::io::Result<()> {
        store::save_meta(&self.managed_dir, meta)
    }

    /// A followed RPZ zone's metadata (`state_dir/rpz/ZONE.json`), if
    /// `name` is one.
    pub fn rpz_meta(&self, name: &str) -> Option<crate::rpz::store::ZoneMeta> {
        if !super::config::valid_list_name(name) {
            return None;
        }
        let state_dir = self.sources.parent()?;
        let text =
            std::fs::read_to_string(state_dir.join("rpz").join(format!("{name}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The file in force for a managed list.
    pub fn content_path(&self, meta: &ListMeta) -> PathBuf {
        self.sources.join(&meta.file)
    }

    /// Puts a refusal on the record (best effort: the refusal stands
    /// whether or not it could be recorded) and counts it.
    pub fn record_refusal(&self, list: &str, origin: &Origin, sha256: &str, r: &Refusal) {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(list, source = origin.source(), status = r.status, reason = %r.reason, "list version refused; the version in force keeps serving");
        let rec = self.record(
            list,
            origin,
            "rejected",
            0,
            sha256,
            &[],
            Some(r.reason.clone()),
            0,
            0,
        );
        if let Some(a) = &self.audit
            && let Err(e) = a.record_list(rec)
        {
            tracing::error!(list, error = %e, "cannot record the refused list change");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        list: &str,
        origin: &Origin,
        outcome: &str,
        version: u64,
        sha256: &str,
        signers: &[String],
        reason: Option<String>,
        added: usize,
        removed: usize,
    ) -> ListRecord {
        let (token, url) = match origin {
            Origin::Push { token } => (Some(token.clone()), None),
            Origin::Pull { url } => (None, Some(url.clone())),
        };
        ListRecord {
            list: list.to_string(),
            source: origin.source().to_string(),
            outcome: outcome.to_string(),
            version,
            sha256: sha256.to_string(),
            signers: signers.to_vec(),
            token,
            url,
            reason,
            added: added as u64,
            removed: removed as u64,
        }
    }

    /// Apply one received version (see the module comment). The caller
    /// holds `m.lock`. Refusals are recorded here.
    pub fn apply(
        &self,
        m: &Managed,
        upload: Upload,
        sigs: &[ReceivedSig],
        origin: &Origin,
        dry_run: bool,
        force: bool,
    ) -> Result<Receipt, Refusal> {
        let sha = upload.sha256.clone();
        let started = std::time::Instant::now();
        let mut result = self.apply_inner(m, upload, sigs, origin, dry_run, force);
        if let Ok(r) = &mut result {
            r.took_ms = started.elapsed().as_millis() as u64;
        }
        if let Err(r) = &result
            && !dry_run
        {
            self.record_refusal(&m.cfg.name, origin, &sha, r);
        }
        result
    }

    fn apply_inner(
        &self,
        m: &Managed,
        upload: Upload,
        sigs: &[ReceivedSig],
        origin: &Origin,
        dry_run: bool,
        force: bool,
    ) -> Result<Receipt, Refusal> {
        let name = &m.cfg.name;
        let internal = |e: String| Refusal::new(500, "internal", e);
        let meta = self.meta(name).map_err(internal)?;
        let in_force = meta.as_ref().map_or(0, |m| m.version);
        let verified = verify_file(
            &upload.path,
            sigs,
            &m.cfg.signers,
            m.cfg.required_signatures,
            name,
        )
        .map_err(|e| match e {
            SignatureError::Io(e) => internal(e),
            e => Refusal::new(422, "signature", e.to_string()),
        })?;
        if m.cfg.unsigned() && verified.comment.is_none() {
            tracing::warn!(list = %name, "applying an UNSIGNED list version (required_signatures = 0)");
        }
        let (version, expires) = match &verified.comment {
            Some(c) => {
                if let Some(base) = c.base
                    && base != in_force
                {
                    return Err(Refusal::new(
                        409,
                        "version",
                        format!("a delta for version {base}, but version {in_force} is in force"),
                    ));
                }
                if c.version <= in_force {
                    return Err(Refusal::new(
                        409,
                        "version",
                        format!(
                            "version {} is not newer than version {in_force} in force",
                            c.version
                        ),
                    ));
                }
                (c.version, c.expires.as_ref().map(|(t, _)| t.clone()))
            }
            None => (in_force + 1, None),
        };

        // A delta (`base=N`, N in force) is merged with the dump in force
        // into the full dump that will be in force; the receipt's sha256
        // stays that of the bytes received.
        let upload = match verified.comment.as_ref().and_then(|c| c.base) {
            Some(_) => {
                let Some(old) = &meta else {
                    return Err(Refusal::new(
                        409,
                        "version",
                        "a delta, but no version is in force",
                    ));
                };
                let merged = self
                    .incoming
                    .join(format!("{}-merged.xml", upload_stem(&upload.path)));
                merge_delta(&self.content_path(old), &upload.path, &merged).map_err(|e| {
                    let _ = std::fs::remove_file(&merged);
                    Refusal::new(422, "delta", format!("the delta does not apply: {e}"))
                })?;
                Upload {
                    path: merged,
                    sha256: upload.sha256.clone(),
                    bytes: upload.bytes,
                }
            }
            None => upload,
        };

        // The file under the name (and so the format) it will have in force.
        let mut head = [0u8; 8];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(&upload.path).map_err(|e| internal(e.to_string()))?;
            f.read(&mut head).map_err(|e| internal(e.to_string()))?
        };
        let ext = extension(m.cfg.format, &head[..n]);
        let file_name = format!("{name}.{ext}");
        let target = self.sources.join(&file_name);
        let options = ListOptions {
            format: m.cfg.format,
            name: Some(name.clone()),
            ..(self.reloader.settings().options)(&target)
        };
        let staged = self
            .incoming
            .join(format!("{}.{ext}", upload_stem(&upload.path)));
        std::fs::rename(&upload.path, &staged).map_err(|e| internal(e.to_string()))?;
        let upload = Upload {
            path: staged,
            sha256: upload.sha256.clone(),
            bytes: upload.bytes,
        };
        // Parsed (not compiled: the reloader compiles, incrementally where
        // it can) for this list's own figures and guards.
        let bytes = std::fs::read(&upload.path).map_err(|e| internal(e.to_string()))?;
        let parsed = crate::list::parse::parse_bytes(&upload.path, &bytes, &options);
        drop(bytes);
        let counts = parsed.counts();
        let format = parsed.format.to_string();
        let mut skipped: Vec<String> = parsed
            .skipped
            .iter()
            .take(MAX_RECEIPT_SKIPS)
            .map(|sk| format!("{file_name}:{}: {}", sk.line, sk.reason))
            .collect();
        if parsed.skipped.len() > MAX_RECEIPT_SKIPS {
            skipped.push(format!(
                "… and {} more skipped lines",
                parsed.skipped.len() - MAX_RECEIPT_SKIPS
            ));
        }
        let rule_count = parsed.rules.len();
        let old_rules = meta.as_ref().map_or(0, |m| m.rules);
        guards::check(
            self.limits,
            old_rules,
            &Candidate::new(&counts, rule_count, skipped.first().map(String::as_str)),
            force,
        )
        .map_err(|e| Refusal::new(400, "guard", format!("list {name}: {e}")))?;
        let forced = force
            && guards::check(
                self.limits,
                old_rules,
                &Candidate::new(&counts, rule_count, skipped.first().map(String::as_str)),
                false,
            )
            .is_err();
        let (token, url) = match origin {
            Origin::Push { token } => (Some(token.clone()), None),
            Origin::Pull { url } => (None, Some(url.clone())),
        };
        let mut receipt = Receipt {
            list: name.clone(),
            version,
            sha256: upload.sha256.clone(),
            bytes: upload.bytes,
            format,
            rules: counts,
            rule_count,
            added: 0,
            removed: 0,
            skipped,
            signers: verified.signers.clone(),
            unsigned: verified.comment.is_none(),
            token,
            url,
            expires: expires.clone(),
            dry_run,
            forced,
            enforced_at: None,
            audit_seq: None,
            snapshot_version: None,
            took_ms: 0,
        };
        if dry_run {
            let old_snapshot = match &meta {
                Some(old) => {
                    let path = self.content_path(old);
                    let opts = options.clone();
                    crate::list::load(std::slice::from_ref(&path), &move |_| opts.clone(), 0, None)
                        .ok()
                        .map(|l| l.snapshot)
                }
                None => None,
            };
            let new_snapshot = crate::list::compile(std::slice::from_ref(&parsed))
                .map_err(|e| Refusal::new(400, "unreadable", format!("rejected: {e}")))?;
            match old_snapshot {
                Some(old) => {
                    let d = crate::list::diff(&old, &new_snapshot);
                    receipt.added = d.added.len();
                    receipt.removed = d.removed.len();
                }
                None => receipt.added = new_snapshot.rule_count(),
            }
            return Ok(receipt);
        }
        drop(parsed);

        // Put it in force: the old file aside as `.prev` (ignored by the
        // loader) until the reload has taken the new one.
        let old_path = meta.as_ref().map(|m| self.content_path(m));
        let prev = old_path.as_ref().filter(|p| p.exists()).map(|p| {
            (
                p.clone(),
                p.with_file_name(format!("{}.prev", file_name_of(p))),
            )
        });
        if let Some((old, prev)) = &prev {
            std::fs::rename(old, prev).map_err(|e| internal(e.to_string()))?;
        }
        let restore = |target: &Path| {
            let _ = std::fs::remove_file(target);
            if let Some((old, prev)) = &prev
                && let Err(e) = std::fs::rename(prev, old)
            {
                tracing::error!(file = %old.display(), error = %e, "cannot restore the previous list file; the version in force keeps serving from memory");
            }
            let _ = store::sync_dir(&self.sources);
        };
        if let Err(e) = std::fs::rename(&upload.path, &target) {
            restore(&target);
            return Err(internal(e.to_string()));
        }
        let _ = store::sync_dir(&self.sources);
        let report = match self.reloader.reload_sources(force) {
            Ok(r) => r,
            Err(e) => {
                restore(&target);
                let status = match &e {
                    ReloadError::Guard(_) | ReloadError::Load(_) => 400,
                    _ => 503,
                };
                return Err(Refusal::new(status, "reload", format!("rejected: {e}")));
            }
        };
        let back = report.took_ms.saturating_sub(report.enforced_ms);
        let enforced_at =
            crate::audit::time::format_ts(crate::audit::time::now_micros() - (back as i64) * 1000)
                .as_str()
                .to_string();
        if let Some((_, prev)) = &prev {
            let _ = std::fs::remove_file(prev);
        }
        receipt.added = report.added;
        receipt.removed = report.removed;
        receipt.enforced_at = Some(enforced_at.clone());
        receipt.snapshot_version = Some(report.version);
        let mut new_meta = ListMeta {
            name: name.clone(),
            source: origin.source().to_string(),
            version,
            sha256: receipt.sha256.clone(),
            bytes: receipt.bytes,
            format: receipt.format.clone(),
            file: file_name,
            signers: verified.signers.clone(),
            token: receipt.token.clone(),
            url: receipt.url.clone(),
            expires,
            enforced_at,
            rules: rule_count,
            counts,
            audit_seq: None,
            etag: None,
            last_modified: None,
        };
        self.stats.applied.fetch_add(1, Ordering::Relaxed);
        let outcome = if forced { "forced" } else { "applied" };
        let rec = self.record(
            name,
            origin,
            outcome,
            version,
            &receipt.sha256,
            &verified.signers,
            forced.then(|| "applied past the reload guards (force)".to_string()),
            report.added,
            report.removed,
        );
        // The version in force first (a restart must refuse older ones),
        // then the record; a change that happened is recorded even if its
        // metadata could not be saved.
        let saved = self.save_meta(&new_meta);
        let recorded = self.audit.as_ref().map(|a| a.record_list(rec)).transpose();
        let mut problems = Vec::new();
        if let Err(e) = &saved {
            tracing::error!(list = %name, version, error = %e, "cannot save the version in force; a restart would accept older versions of this list");
            problems.push(format!("its metadata could not be saved: {e}"));
        }
        match recorded {
            Ok(seq) => {
                receipt.audit_seq = seq;
                new_meta.audit_seq = seq;
                if saved.is_ok() && seq.is_some() {
                    let _ = self.save_meta(&new_meta);
                }
            }
            Err(e) => {
                tracing::error!(list = %name, version, error = %e, "list version IN FORCE but its change record could not be written");
                problems.push(format!("its change record could not be written: {e}"));
            }
        }
        if !problems.is_empty() {
            return Err(Refusal::new(
                500,
                "internal",
                format!("version {version} is in force, but {}", problems.join("; ")),
            ));
        }
        if super::expired(receipt.expires.as_deref(), crate::audit::time::now_micros()) {
            tracing::error!(list = %name, version, expires = receipt.expires.as_deref().unwrap_or(""), "the version put in force is already past its signed expiry");
        }
        tracing::info!(list = %name, version, source = origin.source(), sha256 = %receipt.sha256, rules = rule_count, added = report.added, removed = report.removed, forced, "managed list version in force");
        Ok(receipt)
    }
}

/// Write the full dump `out`: the dump in force `base` with the
/// `dump_delta.xml` `delta` applied (streamed; see
/// [`crate::list::parse::dump::apply_delta`]).
fn merge_delta(base: &Path, delta: &Path, out: &Path) -> Result<(), String> {
    crate::list::parse::dump::apply_delta(base, delta, out)
        .map(|stats| {
            tracing::info!(
                kept = stats.kept,
                deleted = stats.deleted,
                replaced = stats.replaced,
                added = stats.added,
                unknown_deletes = stats.unknown_deletes,
                "dump_delta.xml applied to the dump in force"
            );
        })
        .map_err(|e| e.to_string())
}

/// Skipped lines a receipt lists; the rest are counted (`rules.skipped`).
pub const MAX_RECEIPT_SKIPS: usize = 1000;

/// Undo a version a crash caught between its rename into `sources` and its
/// change record: a `NAME.EXT.prev` left behind is the version on record,
/// so it goes back in place and the unrecorded file goes. Run before the
/// reloader first reads `sources`, so nothing unrecorded is enforced.
pub fn recover_sources(state_dir: &Path, lists: &[ManagedList]) {
    let sources = state_dir.join(crate::daemon::SOURCES_DIR);
    let managed_dir = state_dir.join(MANAGED_DIR);
    let Ok(entries) = std::fs::read_dir(&sources) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(original) = name.strip_suffix(".prev") else {
            continue;
        };
        let Some(list) = lists.iter().find(|l| is_file_of(&l.name, original)) else {
            continue;
        };
        // The file on record is the one whose sha256 the metadata holds:
        // if that is what is in place, the push completed and only its
        // `.prev` was left; otherwise the `.prev` is the version on record.
        let meta = store::load_meta(&managed_dir, &list.name).ok().flatten();
        if let Some(meta) = &meta
            && sha256_of(&sources.join(&meta.file)).is_some_and(|h| h == meta.sha256)
        {
            let _ = std::fs::remove_file(e.path());
            continue;
        }
        for other in std::fs::read_dir(&sources).into_iter().flatten().flatten() {
            let n = other.file_name().to_string_lossy().into_owned();
            if n != original && is_file_of(&list.name, &n) {
                let _ = std::fs::remove_file(other.path());
            }
        }
        match std::fs::rename(e.path(), sources.join(original)) {
            Ok(()) => {
                tracing::warn!(list = %list.name, file = original, "restored the list version on record after an interrupted push")
            }
            Err(err) => {
                tracing::error!(list = %list.name, error = %err, "cannot restore the list version on record")
            }
        }
    }
    // A first version that never reached the record (no metadata yet).
    for list in lists {
        if matches!(store::load_meta(&managed_dir, &list.name), Ok(None)) {
            for other in std::fs::read_dir(&sources).into_iter().flatten().flatten() {
                let n = other.file_name().to_string_lossy().into_owned();
                if is_file_of(&list.name, &n) {
                    tracing::warn!(list = %list.name, file = %n, "removing a first list version that was never recorded");
                    let _ = std::fs::remove_file(other.path());
                }
            }
        }
    }
    let _ = store::sync_dir(&sources);
}

/// Whether `file` is `list.EXT` (one extension, so list `afm` does not
/// claim `afm.v2.txt`).
fn is_file_of(list: &str, file: &str) -> bool {
    file.strip_prefix(list)
        .and_then(|r| r.strip_prefix('.'))
        .is_some_and(|ext| !ext.is_empty() && !ext.contains('.'))
}

/// Hex SHA-256 of a file, read in pieces.
fn sha256_of(path: &Path) -> Option<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(hex::encode(h.finalize()))
}

fn file_name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn upload_stem(p: &Path) -> String {
    p.file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "upload".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_push_is_rolled_back_to_the_version_on_record() {
        let dir = tempfile::tempdir().unwrap();
        let sources = dir.path().join(crate::daemon::SOURCES_DIR);
        let managed = dir.path().join(MANAGED_DIR);
        std::fs::create_dir_all(&sources).unwrap();
        std::fs::create_dir_all(&managed).unwrap();
        // Version on record: afm.txt; a crash left the new afm.csv in place.
        std::fs::write(sources.join("afm.txt.prev"), "recorded.example\n").unwrap();
        std::fs::write(sources.join("afm.csv"), "domain\nunrecorded.example\n").unwrap();
        std::fs::write(sources.join("afm.v2.txt"), "another list\n").unwrap();
        // A first version of another list that never reached the record.
        std::fs::write(sources.join("new.txt"), "unrecorded.example\n").unwrap();
        let meta = ListMeta {
            name: "afm".into(),
            file: "afm.txt".into(),
            version: 4,
            ..ListMeta::default()
        };
        store::save_meta(&managed, &meta).unwrap();
        let list = ManagedList {
            name: "afm".into(),
            format: None,
            signers: Vec::new(),
            required_signatures: 0,
            pull: None,
        };
        let new = ManagedList {
            name: "new".into(),
            ..list.clone()
        };
        recover_sources(dir.path(), &[list.clone(), new]);
        let mut left: Vec<String> = std::fs::read_dir(&sources)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        left.sort();
        assert_eq!(left, ["afm.txt", "afm.v2.txt"]);
        assert_eq!(
            std::fs::read_to_string(sources.join("afm.txt")).unwrap(),
            "recorded.example\n"
        );
        // A push that completed (its sha256 on record) keeps its file; only
        // the `.prev` it left goes.
        std::fs::write(sources.join("afm.txt.prev"), "older.example\n").unwrap();
        let done = ListMeta {
            sha256: sha256_of(&sources.join("afm.txt")).unwrap(),
            ..meta
        };
        store::save_meta(&managed, &done).unwrap();
        recover_sources(dir.path(), &[list]);
        assert!(!sources.join("afm.txt.prev").exists());
        assert_eq!(
            std::fs::read_to_string(sources.join("afm.txt")).unwrap(),
            "recorded.example\n"
        );
    }

    #[test]
    fn extension_follows_format_then_content() {
        assert_eq!(extension(Some(Format::Csv), b"a.example"), "csv");
        assert_eq!(extension(Some(Format::Rpz), b""), "rpz");
        assert_eq!(extension(None, b"PK\x03\x04"), "xlsx");
        assert_eq!(extension(None, b"\xEF\xBB\xBF <?xml"), "xml");
        assert_eq!(extension(None, b"a.example\n"), "txt");
    }
}
