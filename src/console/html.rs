//! The console's pages: server-rendered HTML that works without
//! JavaScript. Every value from the log (names come from the network) goes
//! through [`esc`].

use std::fmt::Write;

use super::auth::{Principal, Role};
use super::chart::bars;
use super::data::{KeyCount, ListHistory, Overview, Page, Report, Row, SearchParams};

/// HTML-escapes text for element content and quoted attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string value.
pub(super) fn url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
header{background:#23395d;color:#fff;padding:.6em 1em}header a{color:#fff;margin-right:1.2em}\
header .who{float:right;opacity:.8}main{padding:1em}table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}td.n{text-align:right}\
.grid{display:flex;flex-wrap:wrap;gap:2em}.ok{color:#17702b}.bad{color:#b00020}\
form label{display:inline-block;margin:.2em .6em .2em 0}\
@media print{header,form,.noprint{display:none}main{padding:0}}";

/// The frame every page shares.
pub(super) fn page(title: &str, who: &Principal, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · sinkhole console</title>\
<meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head><body>\
<header><a href=\"/\">Overview</a><a href=\"/search\">Search</a><a href=\"/report\">Orders</a><a href=\"/lists\">List history</a>\
<span class=\"who\">{u} ({r})</span></header><main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title),
        u = esc(&who.user),
        r = who.role.as_str(),
    )
}

fn opt(s: &Option<String>) -> String {
    esc(s.as_deref().unwrap_or("-"))
}

fn key_table(title: &str, id: &str, rows: &[KeyCount], link: Option<&str>) -> String {
    let mut s = format!(
        "<table id=\"{id}\"><caption>{}</caption><tr><th>{}</th><th>hits</th></tr>",
        esc(title),
        esc(title)
    );
    for r in rows {
        let key = match link {
            Some(param) => format!("<a href=\"{param}{}\">{}</a>", url(&r.key), esc(&r.key)),
            None => esc(&r.key),
        };
        let _ = write!(s, "<tr><td>{key}</td><td class=\"n\">{}</td></tr>", r.count);
    }
    s.push_str("</table>");
    s
}

pub(super) fn overview(o: &Overview, who: &Principal) -> String {
    let chain_class = if o.chain.state == "intact" {
        "ok"
    } else {
        "bad"
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<table id=\"summary\"><tr><th>hits</th><td class=\"n\" id=\"total-hits\">{}</td></tr>\
<tr><th>records</th><td class=\"n\" id=\"total-records\">{}</td></tr>\
<tr><th>files</th><td class=\"n\">{}</td></tr><tr><th>first record</th><td>{}</td></tr>\
<tr><th>last record</th><td>{}</td></tr><tr><th>distinct names</th><td class=\"n\">{}</td></tr></table>",
        o.hits,
        o.records,
        o.files,
        opt(&o.first_ts),
        opt(&o.last_ts),
        o.distinct_names
    );
    let _ = write!(
        b,
        "<h2>Chain</h2><table id=\"chain\"><tr><th>status</th><td class=\"{chain_class}\" id=\"chain-state\">{}</td></tr>\
<tr><th>verified up to seq</th><td class=\"n\">{}</td></tr><tr><th>checked at</th><td>{}</td></tr>\
<tr><th>last checkpoint</th><td>{}</td></tr><tr><th>records after it (unanchored tail)</th><td class=\"n\">{}</td></tr>\
<tr><th>lost records</th><td class=\"n\">{}</td></tr><tr><th>sent to the witness</th><td>{}</td></tr>\
<tr><th>problem</th><td>{}</td></tr></table>\
<p class=\"noprint\">Verified in the background; <a href=\"/api/chain\">/api/chain</a>.</p>",
        esc(&o.chain.state),
        o.chain
            .verified_to_seq
            .map_or("-".to_string(), |s| s.to_string()),
        opt(&o.chain.checked_at),
        match (&o.last_checkpoint_seq, &o.last_checkpoint_hash) {
            (Some(s), Some(h)) => format!("seq {s} <code>{}</code>", esc(h)),
            _ => "-".into(),
        },
        o.unanchored_tail.map_or("-".to_string(), |n| n.to_string()),
        o.lost,
        match &o.chain.anchoring {
            Some(a) => format!(
                "{} delivered, {} waiting, {} refused, {} dropped",
                a.delivered, a.backlog, a.rejected, a.dropped
            ),
            None => "not configured (<code>[audit] anchor_url</code>)".into(),
        },
        opt(&o.chain.problem),
    );
    b.push_str("<h2>Hits per day</h2>");
    b.push_str(&bars("hits per day", &o.hits_by_day));
    b.push_str("<h2>Hits per hour (last 48 hours with hits)</h2>");
    b.push_str(&bars("hits per hour", &o.hits_by_hour));
    b.push_str("<div class=\"grid\">");
    b.push_str(&key_table(
        "decision",
        "top-decisions",
        &o.top_decisions,
        Some("/report?decision="),
    ));
    b.push_str(&key_table(
        "list",
        "top-lists",
        &o.top_lists,
        Some("/search?list="),
    ));
    b.push_str(&key_table(
        "name",
        "top-names",
        &o.top_names,
        Some("/search?name="),
    ));
    b.push_str(&key_table(
        "action",
        "actions",
        &o.actions,
        Some("/search?action="),
    ));
    b.push_str("</div>");
    page("Overview", who, &b)
}

fn field(label: &str, name: &str, value: &Option<String>, hint: &str) -> String {
    format!(
        "<label>{} <input name=\"{name}\" value=\"{}\" placeholder=\"{}\"></label>",
        esc(label),
        esc(value.as_deref().unwrap_or("")),
        esc(hint)
    )
}

/// The query string of `p` without paging and format, for links.
pub(super) fn query_string(p: &SearchParams) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("since", &p.since),
        ("until", &p.until),
        ("client", &p.client),
        ("name", &p.name),
        ("decision", &p.decision),
        ("list", &p.list),
        ("action", &p.action),
        ("kind", &p.kind),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            parts.push(format!("{k}={}", url(v)));
        }
    }
    parts.join("&")
}

fn search_form(p: &SearchParams, role: Role) -> String {
    let mut f = String::from("<form method=\"get\" action=\"/search\">");
    f.push_str(&field("since", "since", &p.since, "2025-03-01 or RFC 3339"));
    f.push_str(&field("until", "until", &p.until, "exclusive"));
    if role == Role::Auditor {
        f.push_str(&field(
            "client",
            "client",
            &p.client,
            "address, CIDR or hmac:…",
        ));
    }
    f.push_str(&field("name", "name", &p.name, "suffix"));
    f.push_str(&field("decision", "decision", &p.decision, "reference"));
    f.push_str(&field("list", "list", &p.list, ""));
    f.push_str(&field("action", "action", &p.action, "nxdomain, …"));
    let kind = p.kind.as_deref().unwrap_or("hit");
    f.push_str("<label>kind <select name=\"kind\">");
    let kinds: &[&str] = if role == Role::Auditor {
        &["hit", "list", "console"]
    } else {
        &["hit", "list"]
    };
    for k in kinds {
        let sel = if *k == kind { " selected" } else { "" };
        let _ = write!(f, "<option{sel}>{k}</option>");
    }
    f.push_str("</select></label> <button>Search</button></form>");
    f
}

fn row_html(r: &Row) -> String {
    format!(
        "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        r.seq,
        esc(&r.ts),
        esc(&r.client),
        esc(&r.qname),
        esc(&r.qtype),
        esc(&r.action),
        esc(&format!("{}:{}", r.list, r.line)),
        opt(&r.decision),
    )
}

pub(super) fn search(
    p: &SearchParams,
    role: Role,
    result: Option<&Page>,
    who: &Principal,
) -> String {
    let mut b = search_form(p, role);
    if let Some(page) = result {
        let q = query_string(p);
        let _ = write!(
            b,
            "<p class=\"noprint\">Export the whole result: <a href=\"/api/search?{q}&amp;format=csv\">CSV</a> · \
<a href=\"/api/search?{q}&amp;format=jsonl\">JSON lines</a></p>"
        );
        let _ = write!(
            b,
            "<table id=\"results\"><tr><th>seq</th><th>time</th><th>client</th><th>name</th><th>type</th><th>action</th><th>list:line</th><th>decision</th></tr>"
        );
        for r in &page.rows {
            b.push_str(&row_html(r));
        }
        b.push_str("</table>");
        let _ = write!(
            b,
            "<p id=\"shown\">rows {}–{}</p>",
            page.offset + u64::from(!page.rows.is_empty()),
            page.offset + page.rows.len() as u64
        );
        b.push_str("<p class=\"noprint\">");
        if page.offset > 0 {
            let prev = page.offset.saturating_sub(page.limit as u64);
            let _ = write!(b, "<a href=\"/search?{q}&amp;offset={prev}\">previous</a> ");
        }
        if page.more {
            let next = page.offset + page.limit as u64;
            let _ = write!(b, "<a href=\"/search?{q}&amp;offset={next}\">next</a>");
        }
        b.push_str("</p>");
    } else {
        b.push_str("<p>Give at least one condition.</p>");
    }
    page("Search", who, &b)
}

pub(super) fn events(p: &SearchParams, role: Role, lines: &[String], who: &Principal) -> String {
    let mut b = search_form(p, role);
    let _ = write!(
        b,
        "<p id=\"shown\">{} record(s)</p><table id=\"results\">",
        lines.len()
    );
    for l in lines {
        let _ = write!(b, "<tr><td><code>{}</code></td></tr>", esc(l));
    }
    b.push_str("</table>");
    page("Search", who, &b)
}

pub(super) fn decisions(list: &[KeyCount], who: &Principal) -> String {
    let b = key_table("decision", "decisions", list, Some("/report?decision="));
    page("Orders", who, &b)
}

pub(super) fn report(r: &Report, who: &Principal) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<table id=\"report\"><tr><th>decision</th><td id=\"report-decision\">{}</td></tr>\
<tr><th>hits</th><td class=\"n\" id=\"report-hits\">{}</td></tr>\
<tr><th>distinct clients</th><td class=\"n\" id=\"report-clients\">{}</td></tr>\
<tr><th>distinct names</th><td class=\"n\" id=\"report-names\">{}</td></tr>\
<tr><th>first hit</th><td>{}</td></tr><tr><th>last hit</th><td>{}</td></tr></table>\
<p class=\"noprint\"><a href=\"/search?decision={}\">the hits</a> · <a href=\"/api/report?decision={}\">JSON</a></p>",
        esc(&r.decision),
        r.hits,
        r.distinct_clients,
        r.distinct_names,
        opt(&r.first_hit),
        opt(&r.last_hit),
        url(&r.decision),
        url(&r.decision),
    );
    b.push_str("<h2>Hits per day</h2>");
    b.push_str(&bars("hits per day", &r.hits_by_day));
    b.push_str("<h2>In force</h2>");
    if r.list_changes.is_empty() {
        b.push_str("<p>No list-change records name this decision; first and last hit above bound when its rules were seen in force.</p>");
    } else {
        b.push_str("<table id=\"changes\">");
        for c in &r.list_changes {
            let _ = write!(b, "<tr><td><code>{}</code></td></tr>", esc(&c.to_string()));
        }
        b.push_str("</table>");
    }
    b.push_str("<div class=\"grid\">");
    b.push_str(&key_table("list", "report-lists", &r.lists, None));
    b.push_str(&key_table("action", "report-actions", &r.actions, None));
    b.push_str(&key_table(
        "name asked",
        "report-names-table",
        &r.names,
        None,
    ));
    b.push_str("</div>");
    let mut days = String::from("<table id=\"report-days\"><tr><th>day</th><th>hits</th></tr>");
    for (d, n) in &r.hits_by_day {
        let _ = write!(days, "<tr><td>{}</td><td class=\"n\">{n}</td></tr>", esc(d));
    }
    days.push_str("</table>");
    b.push_str(&days);
    page(&format!("Order {}", r.decision), who, &b)
}

pub(super) fn lists(h: &ListHistory, who: &Principal) -> String {
    let mut b = String::from("<h2>List changes</h2>");
    if h.changes.is_empty() {
        b.push_str("<p>No list-change records in the log.</p>");
    } else {
        b.push_str("<table id=\"list-changes\">");
        for c in &h.changes {
            let _ = write!(b, "<tr><td><code>{}</code></td></tr>", esc(&c.to_string()));
        }
        b.push_str("</table>");
    }
    b.push_str("<h2>List versions seen in force</h2><table id=\"list-versions\"><tr><th>list</th><th>version</th><th>first hit</th><th>last hit</th><th>hits</th></tr>");
    for v in &h.versions {
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            esc(&v.list),
            v.version,
            opt(&v.first_seen),
            opt(&v.last_seen),
            v.hits
        );
    }
    b.push_str("</table>");
    page("List history", who, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_urls() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(esc("a\u{1b}[2J"), "a\u{FFFD}[2J");
        assert_eq!(url("2025/17 x&y"), "2025%2F17%20x%26y");
        let p = SearchParams {
            name: Some("ex ample".into()),
            decision: Some(String::new()),
            ..SearchParams::default()
        };
        assert_eq!(query_string(&p), "name=ex%20ample");
    }
}
