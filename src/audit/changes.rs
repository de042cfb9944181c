//! `list` records (changes to what a list enforces) read back:
//! `audit search --kind list` prints a list's history, and
//! `audit stats --list NAME --at TIME` says which version was in force at
//! a moment. List records are few (one per push, pull or reload), so a
//! plain sequential read of the log is enough.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::Deserialize;

use super::query::OutputFormat;
use super::reader::list_files;
use super::time::parse_rfc3339;
use super::{AuditError, ListRecord};

/// One `list` record as stored.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct StoredChange {
    pub seq: u64,
    pub ts: String,
    #[serde(flatten)]
    pub change: ListRecord,
}

/// Every `list` record in `dir` in chain order, optionally of one list and
/// within `[since, until)` (RFC 3339 or a date).
pub fn list_changes(
    dir: &Path,
    list: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<Vec<StoredChange>, AuditError> {
    let bound = |s: Option<&str>| {
        s.map(|t| parse_rfc3339(t).map_err(AuditError::Arg))
            .transpose()
    };
    let (since, until) = (bound(since)?, bound(until)?);
    let mut out = Vec::new();
    for f in list_files(dir)? {
        let file = std::fs::File::open(&f.path).map_err(|e| AuditError::io(&f.path, e))?;
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|e| AuditError::io(&f.path, e))?;
            // Hits are the bulk: skip them without parsing.
            if memchr::memmem::find(&line, b"\"kind\":\"list\"").is_none() {
                continue;
            }
            let Ok(c) = serde_json::from_slice::<StoredChange>(&line) else {
                continue;
            };
            if list.is_some_and(|l| l != c.change.list) {
                continue;
            }
            let at = parse_rfc3339(&c.ts).unwrap_or(0);
            if since.is_some_and(|s| at < s) || until.is_some_and(|u| at >= u) {
                continue;
            }
            out.push(c);
        }
    }
    Ok(out)
}

/// The change that put the version of `list` in force at `at`: the last
/// applied or forced change at or before it.
pub fn in_force_at(changes: &[StoredChange], at: i64) -> Option<&StoredChange> {
    changes
        .iter()
        .rev()
        .filter(|c| c.change.outcome != "rejected")
        .find(|c| parse_rfc3339(&c.ts).is_ok_and(|t| t <= at))
}

/// `audit search --kind list`.
pub fn write_changes(
    changes: &[StoredChange],
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), AuditError> {
    let w = |r: std::io::Result<()>| r.map_err(AuditError::Output);
    match format {
        OutputFormat::Json => {
            for c in changes {
                let mut v = serde_json::to_value(&c.change).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("seq".into(), c.seq.into());
                    o.insert("ts".into(), c.ts.clone().into());
                }
                w(writeln!(out, "{v}"))?;
            }
        }
        OutputFormat::Csv => {
            w(writeln!(
                out,
                "seq,ts,list,source,outcome,version,sha256,signers,token,url,added,removed,reason"
            ))?;
            for c in changes {
                let x = &c.change;
                let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
                w(writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    c.seq,
                    c.ts,
                    q(&x.list),
                    x.source,
                    x.outcome,
                    x.version,
                    x.sha256,
                    q(&x.signers.join(" ")),
                    q(x.token.as_deref().unwrap_or("")),
                    q(x.url.as_deref().unwrap_or("")),
                    x.added,
                    x.removed,
                    q(x.reason.as_deref().unwrap_or(""))
                ))?;
            }
        }
        OutputFormat::Table => {
            for c in changes {
                let x = &c.change;
                let who = x
                    .token
                    .as_deref()
                    .map(|t| format!("token {t}"))
                    .or_else(|| x.url.as_deref().map(|u| format!("url {u}")))
                    .unwrap_or_default();
                w(writeln!(
                    out,
                    "{:>8} {} {:<12} {:<5} {:<8} v{:<6} +{} -{} {} {}{}",
                    c.seq,
                    c.ts,
                    x.list,
                    x.source,
                    x.outcome,
                    x.version,
                    x.added,
                    x.removed,
                    if x.sha256.is_empty() {
                        "-"
                    } else {
                        &x.sha256[..x.sha256.len().min(16)]
                    },
                    who,
                    x.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64, ts: &str, outcome: &str, version: u64) -> StoredChange {
        StoredChange {
            seq,
            ts: ts.into(),
            change: ListRecord {
                list: "afm".into(),
                source: "push".into(),
                outcome: outcome.into(),
                version,
                ..ListRecord::default()
            },
        }
    }

    #[test]
    fn version_in_force_at_a_time_skips_rejections() {
        let h = [
            change(1, "2026-01-01T00:00:00.000000Z", "applied", 1),
            change(2, "2026-01-02T00:00:00.000000Z", "rejected", 0),
            change(3, "2026-01-03T00:00:00.000000Z", "forced", 3),
        ];
        let at = |t: &str| in_force_at(&h, parse_rfc3339(t).unwrap()).map(|c| c.change.version);
        assert_eq!(at("2025-12-31T00:00:00Z"), None);
        assert_eq!(at("2026-01-01T00:00:00Z"), Some(1));
        assert_eq!(at("2026-01-02T12:00:00Z"), Some(1));
        assert_eq!(at("2026-01-04T00:00:00Z"), Some(3));
    }

    #[test]
    fn list_records_are_fsynced_with_their_seq_and_verify() {
        use crate::audit::{AuditLog, AuditSettings, HitRecord, verify};
        let dir = tempfile::tempdir().unwrap();
        let mut s = AuditSettings::dir(dir.path());
        // Hits are fsynced lazily; a list record must not wait for that.
        s.fsync_every = std::time::Duration::from_secs(3600);
        let log = AuditLog::open(&s).unwrap();
        log.record(HitRecord::for_test(
            "192.0.2.1".parse().unwrap(),
            std::time::SystemTime::now(),
        ));
        let rec = ListRecord {
            list: "afm".into(),
            source: "push".into(),
            outcome: "applied".into(),
            version: 7,
            sha256: "ab".repeat(32),
            signers: vec!["B5642AFC7538CA3".into()],
            token: Some("afm-clerk-1".into()),
            added: 3,
            ..ListRecord::default()
        };
        let seq = log.record_list(rec.clone()).unwrap();
        // On disk before the call returned, after the hit queued before it.
        let on_disk = list_changes(dir.path(), Some("afm"), None, None).unwrap();
        assert_eq!(on_disk.len(), 1);
        assert_eq!((on_disk[0].seq, &on_disk[0].change), (seq, &rec));
        assert!(seq >= 2, "after start and the hit: {seq}");
        assert!(
            list_changes(dir.path(), Some("other"), None, None)
                .unwrap()
                .is_empty()
        );
        log.shutdown();
        assert!(log_closed_refuses(&dir));
        let report = verify(dir.path()).unwrap();
        assert!(report.is_intact(), "{report}");
    }

    /// A closed log says so instead of pretending to have recorded.
    fn log_closed_refuses(dir: &tempfile::TempDir) -> bool {
        use crate::audit::{AuditLog, AuditSettings};
        let log = AuditLog::open(&AuditSettings::dir(dir.path())).unwrap();
        log.flush_and_close();
        log.record_list(ListRecord::default()).is_err()
    }
}
