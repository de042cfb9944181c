//! The block page (HTTP 451) and the front's notice page.
//!
//! The operator's template (`web.page`) is HTML with seven placeholders,
//! `{url}`, `{decision}`, `{authority}`, `{date}`, `{entry}` (the registry
//! entry's id), `{included}` (when the entry was included in the registry)
//! and `{operator}`, each replaced by its value HTML-escaped: a URL or a
//! registry's text is outside input and must not become markup. Any other
//! brace is kept as written (CSS uses them).

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Url,
    Decision,
    Authority,
    Date,
    Entry,
    Included,
    Operator,
}

/// A parsed block page template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageTemplate {
    parts: Vec<Part>,
}

/// What fills the placeholders.
pub struct PageValues<'a> {
    pub url: &'a str,
    pub decision: &'a str,
    pub authority: &'a str,
    pub date: &'a str,
    pub entry: &'a str,
    pub included: &'a str,
    pub operator: &'a str,
}

/// The built-in page: plain HTML and inline CSS, no external resources,
/// well under the 10 KB regulators ask for.
const BUILTIN: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>451 Unavailable For Legal Reasons</title>
<style>body{font-family:sans-serif;max-width:40em;margin:3em auto;padding:0 1em;color:#222}
h1{font-size:1.4em}dt{font-weight:bold;margin-top:.6em}dd{margin:0;word-break:break-all}</style>
</head><body>
<h1>Access to this page is restricted</h1>
<p>{operator}</p>
<dl>
<dt>Page</dt><dd id="url">{url}</dd>
<dt>Decision</dt><dd id="decision">{decision}</dd>
<dt>Authority</dt><dd id="authority">{authority}</dd>
<dt>Date</dt><dd id="date">{date}</dd>
<dt>Registry entry</dt><dd id="entry">{entry}</dd>
<dt>Included in the registry</dt><dd id="included">{included}</dd>
</dl>
<p>HTTP 451 Unavailable For Legal Reasons (RFC 7725).</p>
</body></html>
"#;

impl PageTemplate {
    pub fn builtin() -> PageTemplate {
        PageTemplate::parse(BUILTIN).unwrap_or(PageTemplate {
            parts: vec![Part::Lit(BUILTIN.to_string())],
        })
    }

    /// Parse a template. Fails only on text that cannot be a page (empty).
    pub fn parse(text: &str) -> Result<PageTemplate, String> {
        if text.trim().is_empty() {
            return Err("the template is empty".into());
        }
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('{') {
            lit.push_str(&rest[..i]);
            let after = &rest[i..];
            let found = [
                ("{url}", Part::Url),
                ("{decision}", Part::Decision),
                ("{authority}", Part::Authority),
                ("{date}", Part::Date),
                ("{entry}", Part::Entry),
                ("{included}", Part::Included),
                ("{operator}", Part::Operator),
            ]
            .into_iter()
            .find(|(token, _)| after.starts_with(token));
            match found {
                Some((token, part)) => {
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(part);
                    rest = &after[token.len()..];
                }
                None => {
                    lit.push('{');
                    rest = &after[1..];
                }
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(PageTemplate { parts })
    }

    /// The page for these values, each HTML-escaped.
    pub fn render(&self, v: &PageValues<'_>) -> String {
        let mut out = String::with_capacity(4096);
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Url => escape_into(&mut out, v.url),
                Part::Decision => escape_into(&mut out, v.decision),
                Part::Authority => escape_into(&mut out, v.authority),
                Part::Date => escape_into(&mut out, v.date),
                Part::Entry => escape_into(&mut out, v.entry),
                Part::Included => escape_into(&mut out, v.included),
                Part::Operator => escape_into(&mut out, v.operator),
            }
        }
        out
    }
}

/// HTML-escape `s` onto `out` (text and attribute values alike).
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// The front's own page (`GET /` for its host name or addresses): what
/// regulators' checkers probe, and what the default `blocked-by` link
/// names.
pub fn notice(operator: &str) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Blocking notice</title></head><body>\n<h1>Blocking notice</h1>\n<p>",
    );
    escape_into(&mut out, operator);
    out.push_str(
        "</p>\n<p>Pages blocked under a legal order are answered here with HTTP 451 and the order's reference.</p>\n</body></html>\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(url: &'a str, decision: &'a str) -> PageValues<'a> {
        PageValues {
            url,
            decision,
            authority: "Court",
            date: "2026-01-02",
            entry: "101",
            included: "2026-11-30T12:00:00",
            operator: "Example ISP",
        }
    }

    #[test]
    fn builtin_page_is_small_and_self_contained() {
        let page = PageTemplate::builtin().render(&values("http://h.example/p", "D-1"));
        assert!(page.len() < 10 * 1024, "{} bytes", page.len());
        for needle in [
            "http://h.example/p",
            "D-1",
            "Court",
            "2026-01-02",
            "<dd id=\"entry\">101</dd>",
            "<dd id=\"included\">2026-11-30T12:00:00</dd>",
            "Example ISP",
        ] {
            assert!(page.contains(needle), "{needle}");
        }
        for external in ["src=", "href=", "@import", "url("] {
            assert!(!page.contains(external), "{external}");
        }
    }

    #[test]
    fn values_are_escaped_and_other_braces_kept() {
        let t = PageTemplate::parse("<style>a{b:c}</style>{url}|{decision}|{nope}").unwrap();
        let page = t.render(&values("http://h/<script>", "\"D&1'"));
        assert_eq!(
            page,
            "<style>a{b:c}</style>http://h/&lt;script&gt;|&quot;D&amp;1&#39;|{nope}"
        );
        // The registry's entry and time are outside input too.
        let t = PageTemplate::parse("{entry}|{included}").unwrap();
        let page = t.render(&PageValues {
            entry: "<b>101</b>",
            included: "2026 & \"later\"",
            ..values("u", "d")
        });
        assert_eq!(page, "&lt;b&gt;101&lt;/b&gt;|2026 &amp; &quot;later&quot;");
        assert!(PageTemplate::parse("  \n").is_err());
        assert!(notice("<b>").contains("&lt;b&gt;"));
    }
}
