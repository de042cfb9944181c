//! Human and JSON renderings for the list commands (`check`, `lookup`,
//! `diff`). Pure functions from results to text, so they are tested
//! without a process.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::list::snapshot::UrlRuleView;
use crate::list::url::NormUrl;
use crate::list::{Counts, ParsedList, Snapshot, SnapshotDiff};

fn counts_line(c: &Counts) -> String {
    format!(
        "names={} wildcards={} allows={} keywords={} urls={} ips={} rpz_other={} skipped={}",
        c.names, c.wildcards, c.allows, c.keywords, c.urls, c.ips, c.rpz_other, c.skipped
    )
}

/// `sinkhole check` output for one file.
pub fn check_text(list: &ParsedList) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: format={} {}",
        list.path.display(),
        list.format,
        counts_line(&list.counts())
    );
    for msg in list.skip_messages() {
        let _ = writeln!(s, "{msg}");
    }
    s
}

pub fn check_json(list: &ParsedList) -> Value {
    json!({
        "file": list.path.display().to_string(),
        "list": list.name,
        "format": list.format.as_str(),
        "counts": list.counts(),
        "skipped": list.skipped.iter().map(|s| json!({
            "line": s.line,
            "reason": s.reason,
            "message": format!("{}:{}: {}", list.path.display(), s.line, s.reason),
        })).collect::<Vec<_>>(),
    })
}

/// One lookup result: `name status [action FILE:LINE rule [decision=…]]`.
fn url_rule_json(v: &UrlRuleView<'_>) -> Value {
    json!({
        "rule": v.text(),
        "action": v.action().as_str(),
        "list": v.list(),
        "file": v.file(),
        "line": v.line(),
        "decision": v.decision(),
        "authority": v.authority(),
        "date": v.date(),
        "category": v.category(),
    })
}

/// ` decision="…" authority="…" …` for the fields that are set.
fn meta_suffix(
    s: &mut String,
    decision: Option<&str>,
    authority: Option<&str>,
    date: Option<&str>,
    category: Option<&str>,
) {
    let fields = [
        ("decision", decision),
        ("authority", authority),
        ("date", date),
        ("category", category),
    ];
    for (k, val) in fields {
        if let Some(val) = val {
            let _ = write!(s, " {k}={val:?}");
        }
    }
}

fn url_rule_line(v: &UrlRuleView<'_>) -> String {
    let mut s = format!(
        "  {} {} {}:{}",
        v.text(),
        v.action().as_str(),
        v.file(),
        v.line()
    );
    meta_suffix(&mut s, v.decision(), v.authority(), v.date(), v.category());
    s
}

/// `sinkhole lookup URL`: `URL blocked ACTION FILE:LINE RULE decision=…`
/// (a URL rule, action `url-block`, or the host's name rule) or `URL none`.
pub fn lookup_url_text(snap: &Snapshot, raw: &str, url: &NormUrl) -> String {
    if let Some(m) = snap.lookup(url.host.as_bytes())
        && !m.action.is_allow()
    {
        let v = snap.rule(m.rule);
        let mut s = format!(
            "{raw} blocked {} {}:{} {}",
            v.action().as_str(),
            v.file(),
            v.line(),
            v.text()
        );
        meta_suffix(&mut s, v.decision(), v.authority(), v.date(), v.category());
        return s;
    }
    let Some(v) = snap.match_url(url) else {
        return format!("{raw} none");
    };
    let mut s = format!(
        "{raw} blocked url-block {}:{} {}",
        v.file(),
        v.line(),
        v.text()
    );
    meta_suffix(&mut s, v.decision(), v.authority(), v.date(), v.category());
    s
}

/// As [`lookup_url_text`], as JSON.
pub fn lookup_url_json(snap: &Snapshot, raw: &str, url: &NormUrl) -> Value {
    if let Some(m) = snap.lookup(url.host.as_bytes())
        && !m.action.is_allow()
    {
        let mut v = lookup_json(snap, &url.host);
        v["url"] = json!(raw);
        return v;
    }
    match snap.match_url(url) {
        None => json!({"url": raw, "status": "none"}),
        Some(v) => {
            let mut j = url_rule_json(&v);
            j["url"] = json!(raw);
            j["status"] = json!("blocked");
            j["action"] = json!("url-block");
            j
        }
    }
}

pub fn lookup_json(snap: &Snapshot, name: &str) -> Value {
    match snap.lookup(name.as_bytes()) {
        None if snap.has_url_rules(name.as_bytes()) => json!({
            "name": name,
            "status": "url-rules",
            "url_rules": snap.url_rules_for(name).iter().map(url_rule_json).collect::<Vec<_>>(),
        }),
        None => json!({"name": name, "status": "none"}),
        Some(m) => {
            let v = snap.rule(m.rule);
            let status = if v.action().is_allow() {
                "allowed"
            } else {
                "blocked"
            };
            json!({
                "name": name,
                "status": status,
                "action": v.action().as_str(),
                "list": v.list(),
                "file": v.file(),
                "line": v.line(),
                "rule": v.text(),
                "decision": v.decision(),
                "authority": v.authority(),
                "date": v.date(),
                "category": v.category(),
            })
        }
    }
}

pub fn lookup_text(snap: &Snapshot, name: &str) -> String {
    let Some(m) = snap.lookup(name.as_bytes()) else {
        // A host with URL rules only: `NAME url-rules N`, one line per rule.
        let rules = snap.url_rules_for(name);
        if rules.is_empty() {
            return format!("{name} none");
        }
        let mut s = format!("{name} url-rules {}", rules.len());
        for v in &rules {
            s.push('\n');
            s.push_str(&url_rule_line(v));
        }
        return s;
    };
    let v = snap.rule(m.rule);
    let status = if v.action().is_allow() {
        "allowed"
    } else {
        "blocked"
    };
    let mut s = format!(
        "{name} {status} {} {}:{} {}",
        v.action().as_str(),
        v.file(),
        v.line(),
        v.text()
    );
    meta_suffix(&mut s, v.decision(), v.authority(), v.date(), v.category());
    s
}

pub fn diff_text(d: &SnapshotDiff) -> String {
    let mut s = String::new();
    for a in &d.added {
        let _ = writeln!(s, "+ {a}");
    }
    for r in &d.removed {
        let _ = writeln!(s, "- {r}");
    }
    let _ = writeln!(s, "added {} removed {}", d.added.len(), d.removed.len());
    s
}

pub fn diff_json(d: &SnapshotDiff) -> Value {
    json!({
        "added": d.added,
        "removed": d.removed,
        "added_count": d.added.len(),
        "removed_count": d.removed.len(),
    })
}

/// `sinkhole reload` output.
pub fn reload_text(reply: &crate::daemon::control::Reply) -> String {
    use crate::daemon::control::Reply;
    let mut s = String::new();
    match reply {
        Reply::Reloaded(r) => {
            let c = &r.counts;
            let _ = writeln!(
                s,
                "reloaded: version {} rules {} (+{} -{}) names={} wildcards={} allows={} keywords={} skipped={} enforced after {} ms, took {} ms ({}){}",
                r.version,
                r.rules,
                r.added,
                r.removed,
                c.names,
                c.wildcards,
                c.allows,
                c.keywords,
                c.skipped,
                r.enforced_ms,
                r.took_ms,
                if r.incremental {
                    "incremental: changed lines only"
                } else {
                    "full"
                },
                if r.forced { " (forced)" } else { "" }
            );
            for msg in &r.skipped {
                let _ = writeln!(s, "{msg}");
            }
        }
        Reply::Rejected {
            reason,
            error,
            version_in_force,
        } => {
            let _ = writeln!(
                s,
                "rejected ({reason}): {error}\nversion {version_in_force} stays in force"
            );
        }
        Reply::Status {
            version,
            rules,
            accepted,
            rejected,
        } => {
            let _ = writeln!(
                s,
                "version {version} rules {rules} reloads accepted {accepted} rejected {rejected}"
            );
        }
        Reply::Error { error } => {
            let _ = writeln!(s, "error: {error}");
        }
    }
    s
}
