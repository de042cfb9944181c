//! Human and JSON renderings for the list commands (`check`, `lookup`,
//! `diff`). Pure functions from results to text, so they are tested
//! without a process.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::list::snapshot::UrlRuleView;
use crate::list::url::NormUrl;
use crate::list::{Counts, ParsedList, RuleMeta, Snapshot, SnapshotDiff};

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
    let mut j = json!({
        "rule": v.text(),
        "action": v.action().as_str(),
        "list": v.list(),
        "file": v.file(),
        "line": v.line(),
    });
    meta_json(&mut j, &v.meta());
    j
}

/// ` decision="…" authority="…" … entry="…" included="…"` for the fields
/// that are set.
fn meta_suffix(s: &mut String, meta: &RuleMeta) {
    for (k, val) in RuleMeta::NAMES.iter().zip(meta.fields()) {
        if let Some(val) = val {
            let _ = write!(s, " {k}={val:?}");
        }
    }
}

/// Every provenance field into the JSON object `j` (`null` when unset).
fn meta_json(j: &mut Value, meta: &RuleMeta) {
    for (k, val) in RuleMeta::NAMES.iter().zip(meta.fields()) {
        j[*k] = json!(val);
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
    meta_suffix(&mut s, &v.meta());
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
        meta_suffix(&mut s, &v.meta());
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
    meta_suffix(&mut s, &v.meta());
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
            let mut j = json!({
                "name": name,
                "status": status,
                "action": v.action().as_str(),
                "list": v.list(),
                "file": v.file(),
                "line": v.line(),
                "rule": v.text(),
            });
            meta_json(&mut j, &v.meta());
            j
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
    meta_suffix(&mut s, &v.meta());
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::list::parse::parse_bytes;
    use crate::list::{Format, ListOptions, compile};

    /// A dump row for a host and one for a page, and a plain CSV row.
    fn snapshot() -> Snapshot {
        let dump = r#"<?xml version="1.0" encoding="UTF-8"?>
<reg:register xmlns:reg="http://rsoc.ru">
<content id="101" includeTime="2026-11-30T12:00:00" blockType="domain">
<decision date="2026-11-29" number="27-31-2026/Ид1-26" org="Роскомнадзор"/>
<domain>host.example</domain>
</content>
<content id="102" includeTime="2026-11-30T12:00:01">
<decision date="2026-11-28" number="2-6" org="суд"/>
<url><![CDATA[http://page.example/offer]]></url>
</content>
</reg:register>
"#;
        let opts = |format| ListOptions {
            format: Some(format),
            ..ListOptions::default()
        };
        let d = parse_bytes(Path::new("rkn.xml"), dump.as_bytes(), &opts(Format::Dump));
        let c = parse_bytes(
            Path::new("gov.csv"),
            b"domain;decision\nplain.example;D-1\n",
            &opts(Format::Csv),
        );
        assert!(d.skipped.is_empty() && c.skipped.is_empty());
        compile(&[d, c]).expect("compile")
    }

    #[test]
    fn lookup_names_the_registry_entry_and_its_inclusion_time() {
        let s = snapshot();
        assert_eq!(
            lookup_text(&s, "host.example"),
            "host.example blocked block rkn.xml:3 =host.example decision=\"27-31-2026/Ид1-26\" \
             authority=\"Роскомнадзор\" date=\"2026-11-29\" entry=\"101\" included=\"2026-11-30T12:00:00\""
        );
        let j = lookup_json(&s, "host.example");
        assert_eq!(
            (&j["entry"], &j["included"]),
            (&json!("101"), &json!("2026-11-30T12:00:00"))
        );
        // Fields a row lacks are left out of the text and null in JSON.
        assert_eq!(
            lookup_text(&s, "plain.example"),
            "plain.example blocked block gov.csv:2 plain.example decision=\"D-1\""
        );
        assert_eq!(lookup_json(&s, "plain.example")["entry"], Value::Null);

        // A URL rule of the dump carries them too.
        let url = NormUrl::parse("http://page.example/offer").expect("url");
        let text = lookup_url_text(&s, "http://page.example/offer", &url);
        assert!(
            text.starts_with("http://page.example/offer blocked url-block rkn.xml:7 ")
                && text.ends_with(" entry=\"102\" included=\"2026-11-30T12:00:01\""),
            "{text}"
        );
        let j = lookup_url_json(&s, "http://page.example/offer", &url);
        assert_eq!(
            (&j["entry"], &j["date"]),
            (&json!("102"), &json!("2026-11-28"))
        );
        let listed = lookup_text(&s, "page.example");
        assert!(
            listed.ends_with(" entry=\"102\" included=\"2026-11-30T12:00:01\""),
            "{listed}"
        );
    }
}
