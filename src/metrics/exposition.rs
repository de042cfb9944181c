//! A reader for the Prometheus/OpenMetrics text exposition, for tests and
//! tools that read `/metrics`: [`Exposition::parse`], then
//! [`Exposition::value`] by name and labels.

use std::collections::BTreeMap;

/// One sample line of a text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition, for tests and tools that read `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    pub samples: Vec<ParsedSample>,
    /// `# TYPE` lines: family name → type.
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// Parse Prometheus/OpenMetrics text (comments other than `# TYPE`,
    /// timestamps and exemplars are ignored).
    pub fn parse(text: &str) -> Result<Exposition, String> {
        let mut e = Exposition::default();
        for (no, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut w = rest.split_whitespace();
                if let (Some(n), Some(t)) = (w.next(), w.next()) {
                    e.types.insert(n.to_string(), t.to_string());
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let s = parse_sample(line).map_err(|m| format!("line {}: {m}: {line}", no + 1))?;
            e.samples.push(s);
        }
        Ok(e)
    }

    /// The value of the sample `name` whose labels include all of `labels`
    /// (summed when several match); `None` when none does.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in self.samples.iter().filter(|s| s.name == name) {
            if labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            {
                *found.get_or_insert(0.0) += s.value;
            }
        }
        found
    }
}

fn parse_sample(line: &str) -> Result<ParsedSample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err("bad metric name".into());
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let mut consumed = None;
        loop {
            // Skip separators.
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c == ' ' {
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some(&(i, '}')) => {
                    consumed = Some(i + 1);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut val = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => val.push('\n'),
                        Some((_, c)) => val.push(c),
                        None => return Err("dangling escape".into()),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => val.push(c),
                }
            }
            if !closed {
                return Err("unterminated label value".into());
            }
            labels.insert(key.trim().to_string(), val);
        }
        let end = consumed.ok_or("unterminated label set")?;
        rest = &r[end..];
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().map_err(|_| "bad value".to_string())?,
    };
    Ok(ParsedSample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_parser() {
        let e = Exposition::parse(
            "# TYPE a counter\na_total{x=\"1\\\"2\",y=\"\\\\n\"} 3 # {trace=\"t\"} 1\nb 4.5\nc{} +Inf\n# EOF\n",
        )
        .unwrap();
        assert_eq!(
            e.value("a_total", &[("x", "1\"2"), ("y", "\\n")]),
            Some(3.0)
        );
        assert_eq!(e.value("b", &[]), Some(4.5));
        assert_eq!(e.value("c", &[]), Some(f64::INFINITY));
        for bad in ["a{x=1} 2", "a{x=\"1} 2", "a", "a 1x", "{x=\"1\"} 2"] {
            assert!(Exposition::parse(bad).is_err(), "{bad}");
        }
    }
}
