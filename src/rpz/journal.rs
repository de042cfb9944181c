//! A followed zone's changes since its zone file was written: each IXFR
//! applied as a layer (see `follow.rs`) is appended here and fsynced
//! instead of rewriting a file of a million lines, and folded into the
//! zone file later (past a size, before a full reload, at start) by
//! [`rewrite`].
//!
//! The file is text, one entry per IXFR:
//!
//! ```text
//! > FROM TO
//! -LINE        (a record removed)
//! +LINE        (a record added)
//! < TO
//! ```
//!
//! An entry without its closing line (a crash while appending) is not
//! read: the zone's metadata, saved after the append, still names the
//! serial before it, so the change is transferred again.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use super::fold::{ApplyError, Delta, NetChange};

/// Append one change to the journal at `path` and fsync it.
pub fn append(path: &Path, from: u32, to: u32, change: &NetChange) -> io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let mut w = BufWriter::with_capacity(256 << 10, &file);
    writeln!(w, "> {from} {to}")?;
    let mut removed: Vec<&String> = change.delete.iter().collect();
    removed.sort_unstable();
    for l in removed {
        writeln!(w, "-{l}")?;
    }
    for l in &change.add {
        writeln!(w, "+{l}")?;
    }
    writeln!(w, "< {to}")?;
    w.flush()?;
    drop(w);
    file.sync_data()
}

/// The complete entries of the journal at `path`, in order (none if there
/// is no journal).
pub fn read(path: &Path) -> io::Result<Vec<Delta>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    let mut open: Option<Delta> = None;
    for line in BufReader::with_capacity(256 << 10, file).lines() {
        let line = line?;
        let serials =
            |rest: &str| -> Option<Vec<u32>> { rest.split(' ').map(|s| s.parse().ok()).collect() };
        match (line.as_bytes().first(), open.as_mut()) {
            (Some(b'>'), None) => match serials(line[1..].trim()).as_deref() {
                Some(&[from, to]) => {
                    open = Some(Delta {
                        from,
                        to,
                        ..Delta::default()
                    })
                }
                _ => return Err(bad(&line)),
            },
            (Some(b'-'), Some(d)) => d.deleted.push(line[1..].to_string()),
            (Some(b'+'), Some(d)) => d.added.push(line[1..].to_string()),
            (Some(b'<'), Some(d)) => {
                if serials(line[1..].trim()).as_deref() != Some(&[d.to]) {
                    return Err(bad(&line));
                }
                entries.extend(open.take());
            }
            _ => return Err(bad(&line)),
        }
    }
    // An entry left open was cut short: not part of the journal.
    Ok(entries)
}

fn bad(line: &str) -> io::Error {
    let shown: String = line.chars().take(80).collect();
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("zone journal: unexpected line {shown:?}"),
    )
}

/// Remove the journal (its entries are in the zone file now).
pub fn clear(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What [`rewrite`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// Record lines.
    pub records: u64,
    /// Every line (the number the next added line takes, less one).
    pub lines: u64,
}

/// Copy the zone file `old` to `out` with the journal's `entries` applied
/// in order, numbering lines as the layers enforced them: a removed
/// record's line becomes blank (no line moves), each entry's added records
/// are appended in order. The rules in force then carry the numbers of
/// this file's lines. A removed record that is not there means the journal
/// and the file disagree: an error, on which the caller transfers the
/// whole zone.
pub fn rewrite(
    old: impl BufRead,
    mut out: impl Write,
    entries: &[Delta],
) -> Result<Rewritten, ApplyError> {
    // Lines past the file's, as the entries append them (`None`: removed
    // by a later entry), and removals of the file's own lines.
    let mut appended: Vec<Option<&str>> = Vec::new();
    let mut live: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut from_file: HashSet<&str> = HashSet::new();
    for e in entries {
        for l in &e.deleted {
            match live.get_mut(l.as_str()).and_then(Vec::pop) {
                Some(at) => appended[at] = None,
                None => {
                    if !from_file.insert(l) {
                        // Removed twice without being added between.
                        return Err(ApplyError::Missing(1));
                    }
                }
            }
        }
        for l in &e.added {
            live.entry(l).or_default().push(appended.len());
            appended.push(Some(l));
        }
    }
    let mut found = 0usize;
    let mut records = 0u64;
    let mut lines = 0u64;
    for line in old.lines() {
        let line = line?;
        lines += 1;
        if from_file.contains(line.as_str()) {
            found += 1;
            out.write_all(b"\n")?;
            continue;
        }
        if !line.trim_start().is_empty() && !line.trim_start().starts_with(';') {
            records += 1;
        }
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    if found != from_file.len() {
        return Err(ApplyError::Missing(from_file.len().saturating_sub(found)));
    }
    for a in appended {
        if let Some(a) = a {
            out.write_all(a.as_bytes())?;
            records += 1;
        }
        out.write_all(b"\n")?;
        lines += 1;
    }
    Ok(Rewritten { records, lines })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpz::fold::net_change;

    fn change(del: &[&str], add: &[&str]) -> NetChange {
        NetChange {
            delete: del.iter().map(|s| s.to_string()).collect(),
            add: add.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn entries_round_trip_and_a_cut_entry_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("z.journal");
        assert!(read(&p).unwrap().is_empty());
        append(
            &p,
            1,
            2,
            &change(&["b CNAME .", "a CNAME ."], &["c CNAME ."]),
        )
        .unwrap();
        append(
            &p,
            2,
            5,
            &change(&["c CNAME ."], &["d CNAME rpz-passthru."]),
        )
        .unwrap();
        let got = read(&p).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].from, got[0].to), (1, 2));
        assert_eq!(got[0].deleted, vec!["a CNAME .", "b CNAME ."]);
        assert_eq!(got[0].added, vec!["c CNAME ."]);
        assert_eq!((got[1].from, got[1].to), (2, 5));
        // The net change of both: c came and went.
        let net = net_change(&got);
        assert_eq!(net.add, vec!["d CNAME rpz-passthru.".to_string()]);
        assert_eq!(net.delete.len(), 2);

        // A crash in the middle of the third append.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"> 5 6\n-d CNAME rpz-passthru.\n").unwrap();
        assert_eq!(read(&p).unwrap().len(), 2);

        fs::write(&p, "garbage\n").unwrap();
        assert!(read(&p).is_err());
        clear(&p).unwrap();
        clear(&p).unwrap();
        assert!(read(&p).unwrap().is_empty());
    }

    #[test]
    fn rewrite_keeps_every_line_number() {
        let old = "; header\na CNAME .\nb CNAME .\nc CNAME .\n";
        let entry = |del: &[&str], add: &[&str]| Delta {
            from: 0,
            to: 0,
            deleted: del.iter().map(|s| s.to_string()).collect(),
            added: add.iter().map(|s| s.to_string()).collect(),
        };
        let mut out = Vec::new();
        let n = rewrite(
            old.as_bytes(),
            &mut out,
            &[
                entry(&["b CNAME ."], &["d CNAME .", "e CNAME *."]),
                // d goes again: its appended line stays, blank; b comes back
                // at a new number.
                entry(&["d CNAME ."], &["b CNAME ."]),
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "; header\na CNAME .\n\nc CNAME .\n\ne CNAME *.\nb CNAME .\n"
        );
        assert_eq!(
            n,
            Rewritten {
                records: 4,
                lines: 7
            }
        );
        let missing = rewrite(old.as_bytes(), Vec::new(), &[entry(&["x CNAME ."], &[])]);
        assert!(matches!(missing, Err(ApplyError::Missing(1))));
        let twice = rewrite(
            old.as_bytes(),
            Vec::new(),
            &[entry(&["a CNAME ."], &[]), entry(&["a CNAME ."], &[])],
        );
        assert!(matches!(twice, Err(ApplyError::Missing(1))));
    }
}
