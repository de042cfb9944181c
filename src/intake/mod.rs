//! List intake (issue 13): lists that arrive signed, by push (`[api]`,
//! `PUT /v1/lists/{name}`) or pull (`[[lists.managed]] pull_url`), rather
//! than from a watched directory.
//!
//! * `config`: `[api]`, `[[api.token]]`, `[[lists.managed]]`.
//! * `comment`: the signed trusted comment (`list=NAME version=N …`).
//! * `sign`: K-of-N minisign signatures over the received bytes.
//! * `store`: `state_dir/managed/NAME.json`, the version in force.
//! * `apply`: the one path every version takes, to a receipt and a `list`
//!   change record in the audit log.
//! * `api`: the HTTP front; `pull`: the fetch loop; `client`: `sinkhole push`.
//!
//! A managed list's content in force is `state_dir/sources/NAME.EXT`,
//! read by the reloader with the list paths (see
//! `ReloadSettings::sources_dir`).

pub mod api;
pub mod apply;
pub mod client;
pub mod comment;
pub mod config;
pub mod pull;
pub mod sign;
pub mod store;

use std::sync::Arc;

use crate::audit::{AuditLog, ListRecord};
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use api::{ApiServer, ListEntry};
pub use apply::{Intake, Origin, Receipt, Refusal};
pub use config::{ApiConfig, ManagedList, RawApiConfig, RawManagedList};

/// Every list in force: the managed ones from their metadata, the file
/// lists from the snapshot (their version is the snapshot's).
pub fn list_entries(intake: &Intake) -> Vec<ListEntry> {
    let snap = intake.reloader().current();
    let now = crate::audit::time::now_micros();
    let mut out = Vec::new();
    for m in &intake.lists {
        match intake.meta(&m.cfg.name) {
            Ok(Some(meta)) => {
                let expired = expired(meta.expires.as_deref(), now);
                out.push(ListEntry {
                    name: meta.name,
                    source: meta.source,
                    version: meta.version,
                    sha256: Some(meta.sha256),
                    rules: meta.rules as u64,
                    enforced_at: Some(meta.enforced_at),
                    unsigned: meta.signers.is_empty(),
                    signers: meta.signers,
                    expires: meta.expires,
                    expired,
                });
            }
            Ok(None) => {}
            Err(e) => tracing::error!(list = %m.cfg.name, error = %e, "unreadable list metadata"),
        }
    }
    for (name, rules) in snap.rules_per_list() {
        if intake.list(&name).is_some() {
            continue;
        }
        // A followed RPZ zone keeps its serial in `state_dir/rpz/ZONE.json`.
        if let Some(zone) = intake.rpz_meta(&name) {
            let at = i64::try_from(zone.transferred_unix).unwrap_or(0) * 1_000_000;
            out.push(ListEntry {
                name,
                source: "rpz".into(),
                version: u64::from(zone.soa.serial),
                sha256: Some(zone.sha256),
                rules,
                enforced_at: Some(crate::audit::time::format_ts(at).as_str().to_string()),
                signers: Vec::new(),
                unsigned: !zone.signed,
                expires: None,
                expired: false,
            });
            continue;
        }
        out.push(ListEntry {
            name,
            source: "file".into(),
            version: snap.version(),
            sha256: None,
            rules,
            enforced_at: None,
            signers: Vec::new(),
            unsigned: true,
            expires: None,
            expired: false,
        });
    }
    out
}

pub(crate) fn expired(expires: Option<&str>, now: i64) -> bool {
    expires
        .and_then(|t| crate::audit::time::parse_rfc3339(t).ok())
        .is_some_and(|t| t <= now)
}

/// The `list` name of changes to the file lists (the reloader reloads
/// them together; its report does not tell them apart).
pub const FILE_LISTS: &str = "*";

/// The change record of one reload of the file lists (`None` for a reload
/// a managed list asked for: it records its own change).
pub fn file_change_record(ev: &crate::list::reload::ReloadEvent<'_>) -> Option<ListRecord> {
    if ev.for_source {
        return None;
    }
    let mut rec = ListRecord {
        list: FILE_LISTS.into(),
        source: "file".into(),
        ..ListRecord::default()
    };
    match ev.result {
        Ok(r) => {
            rec.outcome = if r.forced { "forced" } else { "applied" }.into();
            rec.version = r.version;
            rec.added = r.added as u64;
            rec.removed = r.removed as u64;
            if r.forced {
                rec.reason = Some("sinkhole reload --force".into());
            }
        }
        Err(e) => {
            rec.outcome = "rejected".into();
            rec.reason = Some(e.to_string());
        }
    }
    Some(rec)
}

/// Put every reload of the file lists (watcher, SIGHUP, `sinkhole
/// reload`) on the record as a `list` record, written and fsynced before
/// the reload returns (the new version already answers; only the next
/// reload waits for the fsync, a few milliseconds).
pub fn record_file_changes(reloader: &crate::list::reload::Reloader, audit: AuditLog) {
    reloader.on_reload(Box::new(move |ev| {
        if let Some(rec) = file_change_record(ev)
            && let Err(e) = audit.record_list(rec)
        {
            tracing::error!(error = %e, "cannot record a list change");
        }
    }));
}

/// How often the expiry alarm looks.
const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(30);

/// The expiry alarm: a managed list whose signed `expires` has passed
/// keeps being enforced (never fail open) but is counted
/// (`sinkhole_intake_expired_lists`), logged once and shown as expired in
/// `GET /v1/lists`.
pub async fn watch_expiry(intake: Arc<Intake>) {
    let mut warned: std::collections::HashSet<(String, String)> = Default::default();
    loop {
        let now = crate::audit::time::now_micros();
        let mut count = 0;
        for m in &intake.lists {
            if let Ok(Some(meta)) = intake.meta(&m.cfg.name)
                && expired(meta.expires.as_deref(), now)
            {
                count += 1;
                let key = (meta.name.clone(), meta.expires.clone().unwrap_or_default());
                if warned.insert(key) {
                    tracing::error!(
                        list = %meta.name,
                        version = meta.version,
                        expires = meta.expires.as_deref().unwrap_or(""),
                        "managed list EXPIRED: still enforcing the last good version; push a new one"
                    );
                }
            }
        }
        intake.stats.expired.store(count, Ordering::Relaxed);
        tokio::time::sleep(EXPIRY_CHECK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::reload::{ReloadError, ReloadEvent, ReloadReport};

    fn report(forced: bool) -> ReloadReport {
        ReloadReport {
            version: 9,
            counts: Default::default(),
            rules: 10,
            added: 2,
            removed: 1,
            skipped: Vec::new(),
            took_ms: 1,
            forced,
            enforced_ms: 1,
            incremental: true,
        }
    }

    #[test]
    fn file_reloads_become_records_and_source_reloads_do_not() {
        let ok = Ok(report(false));
        let ev = |for_source, result| ReloadEvent {
            for_source,
            forced: false,
            result,
        };
        let rec = file_change_record(&ev(false, &ok)).unwrap();
        assert_eq!(
            (rec.list.as_str(), rec.source.as_str(), rec.outcome.as_str()),
            ("*", "file", "applied")
        );
        assert_eq!((rec.version, rec.added, rec.removed), (9, 2, 1));
        assert!(file_change_record(&ev(true, &ok)).is_none());
        let forced = Ok(report(true));
        assert_eq!(
            file_change_record(&ev(false, &forced)).unwrap().outcome,
            "forced"
        );
        let err: Result<ReloadReport, ReloadError> = Err(ReloadError::Unsettled("a.txt".into()));
        let rec = file_change_record(&ev(false, &err)).unwrap();
        assert_eq!(rec.outcome, "rejected");
        assert!(rec.reason.unwrap().contains("a.txt"));
    }

    #[test]
    fn get_lists_names_file_lists_and_followed_zones_by_source() {
        use crate::list::reload::{ReloadSettings, Reloader};
        let dir = tempfile::tempdir().unwrap();
        let (lists, state) = (dir.path().join("lists"), dir.path().join("state"));
        let sources = state.join(crate::daemon::SOURCES_DIR);
        std::fs::create_dir_all(&lists).unwrap();
        std::fs::create_dir_all(&sources).unwrap();
        std::fs::create_dir_all(state.join("rpz")).unwrap();
        std::fs::write(lists.join("block.txt"), "a.example\nb.example\n").unwrap();
        std::fs::write(
            sources.join("zone.example.rpz"),
            "$ORIGIN zone.example.\nbad.example CNAME .\n",
        )
        .unwrap();
        let meta = crate::rpz::store::ZoneMeta {
            zone: "zone.example".into(),
            soa: crate::rpz::fold::Soa {
                serial: 42,
                refresh: 1,
                retry: 1,
                expire: 1,
                minimum: 1,
            },
            records: 1,
            sha256: "ab".repeat(32),
            primary: "192.0.2.1:53".into(),
            kind: "axfr".into(),
            signed: true,
            transferred_unix: 1_767_225_600,
            refreshed_unix: 1_767_225_600,
            next_line: 3,
            file_serial: None,
            journal_lines: 0,
        };
        std::fs::write(
            state.join("rpz/zone.example.json"),
            serde_json::to_string(&meta).unwrap(),
        )
        .unwrap();
        let settings = ReloadSettings {
            paths: vec![lists],
            sources_dir: Some(sources),
            ..ReloadSettings::default()
        };
        let (reloader, _) = Reloader::start(settings).unwrap();
        let intake = Intake::new(&state, Vec::new(), reloader, None).unwrap();
        let mut entries = list_entries(&intake);
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let shown: Vec<(&str, &str, u64, u64)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.source.as_str(), e.version, e.rules))
            .collect();
        assert_eq!(
            shown,
            [("block", "file", 1, 2), ("zone.example", "rpz", 42, 1)]
        );
        assert_eq!(
            entries[1].enforced_at.as_deref(),
            Some("2026-01-01T00:00:00.000000Z")
        );
        assert!(!entries[1].unsigned);
    }

    #[test]
    fn expiry_is_passed_time_only() {
        let now = crate::audit::time::parse_rfc3339("2026-06-01T00:00:00Z").unwrap();
        assert!(expired(Some("2026-05-31T23:59:59Z"), now));
        assert!(!expired(Some("2026-06-01T00:00:01Z"), now));
        assert!(!expired(None, now));
        assert!(!expired(Some("garbage"), now));
    }
}
