//! Zone transfers, sans I/O: records as they arrive in AXFR and IXFR
//! answers (RFC 5936, RFC 1995) turned into zone-file lines, the IXFR
//! delta sequence checked and folded, and a net change applied to the zone
//! file as a stream.
//!
//! The zone is kept as RPZ text, one record per line, owner names relative
//! to the zone and no `$ORIGIN` (see [`record_line`]), so that every line
//! parses on its own: the list pipeline then applies an IXFR through its
//! line-diff path (`list/delta.rs`) as an incremental layer.
//!
//! [`fold_ixfr`] checks the whole serial chain before anything changes:
//! the first delta starts at our serial, each starts where the previous
//! ended, each moves the serial forward (RFC 1982 arithmetic) and the last
//! ends at the serial the answer opened with. Anything else is a
//! [`FoldError`], on which the caller falls back to AXFR.

use std::collections::HashSet;
use std::io::{BufRead, Write};

use hickory_proto::rr::{DNSClass, RData, Record};
use thiserror::Error;

/// The SOA fields a follower uses: the serial and the timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Soa {
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

/// One record of a transfer, as the fold sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XfrRecord {
    Soa(Soa),
    /// A record under the apex, as its zone-file line.
    Line(String),
    /// Apex records other than the SOA (NS), other classes, names outside
    /// the zone: no policy in them, left out of the zone file on both sides
    /// of every delta.
    Ignored,
}

/// One step of an IXFR: the records deleted and added going from serial
/// `from` to serial `to`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub from: u32,
    pub to: u32,
    pub deleted: Vec<String>,
    pub added: Vec<String>,
}

/// An IXFR answer, folded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ixfr {
    /// The SOA the answer opened with (the primary's current one).
    pub soa: Soa,
    /// Empty when the primary says we are current.
    pub deltas: Vec<Delta>,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FoldError {
    #[error("empty answer")]
    Empty,
    #[error("the answer does not start with the zone's SOA")]
    NoLeadingSoa,
    #[error("the primary's serial {primary} is not newer than ours ({ours})")]
    NotNewer { ours: u32, primary: u32 },
    #[error("an AXFR-style answer to IXFR")]
    NotIncremental,
    #[error("the delta chain breaks: expected serial {expected}, got {got}")]
    ChainBreak { expected: u32, got: u32 },
    #[error("a delta goes from serial {from} back to {to}")]
    Backwards { from: u32, to: u32 },
    #[error("the answer ends before its closing SOA")]
    Truncated,
    #[error("records after the closing SOA")]
    Trailing,
    #[error("more than {0} records")]
    TooLarge(u64),
}

/// RFC 1982: `a` is newer than `b`.
pub fn serial_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < (1 << 31)
}

/// Control characters would split or hide a line: written as `\DDD`, as
/// master files escape them.
fn escape_controls(s: &str) -> String {
    if !s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if (c as u32) < 0x20 || c as u32 == 0x7f {
            out.push_str(&format!("\\{:03}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `zone` is lowercase with no trailing dot. The record's line: `OWNER TYPE
/// RDATA`, the owner lowercase and relative to the zone. No TTL (an IXFR
/// deletion names a record by owner, type and data; the TTL plays no part
/// in RPZ) and no class (only IN is kept).
pub fn record_line(zone: &str, r: &Record) -> XfrRecord {
    if r.dns_class != DNSClass::IN {
        return XfrRecord::Ignored;
    }
    if let RData::SOA(soa) = &r.data {
        let owner = r.name.to_lowercase().to_string();
        return if owner.trim_end_matches('.') == zone {
            XfrRecord::Soa(Soa {
                serial: soa.serial,
                refresh: soa.refresh.max(0) as u32,
                retry: soa.retry.max(0) as u32,
                expire: soa.expire.max(0) as u32,
                minimum: soa.minimum,
            })
        } else {
            XfrRecord::Ignored
        };
    }
    let owner = r.name.to_lowercase().to_string();
    let owner = owner.strip_suffix('.').unwrap_or(&owner);
    let Some(rel) = owner
        .strip_suffix(zone)
        .and_then(|rest| rest.strip_suffix('.'))
        .filter(|rel| !rel.is_empty())
    else {
        return XfrRecord::Ignored;
    };
    XfrRecord::Line(escape_controls(&format!(
        "{rel} {} {}",
        r.record_type(),
        r.data
    )))
}

/// Fold an IXFR answer (the answer sections of every message, in order)
/// against our serial `current`. Nothing is applied here.
pub fn fold_ixfr(current: u32, records: &[XfrRecord]) -> Result<Ixfr, FoldError> {
    let mut it = records
        .iter()
        .filter(|r| !matches!(r, XfrRecord::Ignored))
        .peekable();
    let soa = match it.next() {
        None => return Err(FoldError::Empty),
        Some(XfrRecord::Soa(s)) => *s,
        Some(_) => return Err(FoldError::NoLeadingSoa),
    };
    let newest = soa.serial;
    match it.peek() {
        // A lone SOA: the primary has nothing newer for us.
        None if newest == current => {
            return Ok(Ixfr {
                soa,
                deltas: Vec::new(),
            });
        }
        None => {
            return Err(FoldError::NotNewer {
                ours: current,
                primary: newest,
            });
        }
        Some(XfrRecord::Soa(_)) => {}
        Some(_) => return Err(FoldError::NotIncremental),
    }
    if !serial_newer(newest, current) {
        return Err(FoldError::NotNewer {
            ours: current,
            primary: newest,
        });
    }
    let mut deltas = Vec::new();
    let mut expected = current;
    loop {
        // The opening SOA of a delta, or the closing SOA of the answer.
        let from = match it.next() {
            Some(XfrRecord::Soa(s)) => s.serial,
            Some(_) => return Err(FoldError::NotIncremental),
            None => return Err(FoldError::Truncated),
        };
        if from == newest && expected == newest {
            if it.next().is_some() {
                return Err(FoldError::Trailing);
            }
            return Ok(Ixfr { soa, deltas });
        }
        if from != expected {
            return Err(FoldError::ChainBreak {
                expected,
                got: from,
            });
        }
        let mut delta = Delta {
            from,
            ..Delta::default()
        };
        let to = loop {
            match it.next() {
                Some(XfrRecord::Line(l)) => delta.deleted.push(l.clone()),
                Some(XfrRecord::Soa(s)) => break s.serial,
                Some(XfrRecord::Ignored) => {}
                None => return Err(FoldError::Truncated),
            }
        };
        if !serial_newer(to, from) {
            return Err(FoldError::Backwards { from, to });
        }
        if serial_newer(to, newest) {
            return Err(FoldError::ChainBreak {
                expected: newest,
                got: to,
            });
        }
        while let Some(XfrRecord::Line(_) | XfrRecord::Ignored) = it.peek() {
            if let Some(XfrRecord::Line(l)) = it.next() {
                delta.added.push(l.clone());
            }
        }
        delta.to = to;
        expected = to;
        deltas.push(delta);
    }
}

/// The combined effect of a sequence of deltas, applied in order
/// (deletions, then additions, per delta).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetChange {
    pub delete: HashSet<String>,
    /// In the order first added; no duplicates.
    pub add: Vec<String>,
}

pub fn net_change(deltas: &[Delta]) -> NetChange {
    let mut delete: HashSet<String> = HashSet::new();
    let mut add: Vec<String> = Vec::new();
    let mut adding: HashSet<String> = HashSet::new();
    for d in deltas {
        for l in &d.deleted {
            if adding.remove(l) {
                add.retain(|a| a != l);
            } else {
                delete.insert(l.clone());
            }
        }
        for l in &d.added {
            // Deleted then added back: the line stays where it was.
            if !delete.remove(l) && adding.insert(l.clone()) {
                add.push(l.clone());
            }
        }
    }
    NetChange { delete, add }
}

#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("the zone file does not hold {0} records the IXFR deletes")]
    Missing(usize),
    #[error("more than {0} records")]
    TooLarge(u64),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Whether a zone-file line is a record (not a comment or blank).
fn is_record(line: &str) -> bool {
    let t = line.trim_start();
    !t.is_empty() && !t.starts_with(';')
}

/// Copy the zone file `old` to `out` with `change` applied: deleted lines
/// left out, added lines appended (a line already there is not doubled).
/// Returns the records written. A deletion of a record the file does not
/// hold means our copy and the primary's history disagree: an error, on
/// which the caller transfers the whole zone.
pub fn apply(
    old: impl BufRead,
    mut out: impl Write,
    change: &NetChange,
    max_records: u64,
) -> Result<u64, ApplyError> {
    let mut found_deleted = 0usize;
    let mut present: HashSet<&str> = HashSet::new();
    let adding: HashSet<&str> = change.add.iter().map(String::as_str).collect();
    let mut records = 0u64;
    for line in old.lines() {
        let line = line?;
        if is_record(&line) {
            if change.delete.contains(&line) {
                found_deleted += 1;
                continue;
            }
            if let Some(a) = adding.get(line.as_str()) {
                present.insert(a);
            }
            records += 1;
        }
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    if found_deleted != change.delete.len() {
        return Err(ApplyError::Missing(change.delete.len() - found_deleted));
    }
    for a in &change.add {
        if !present.contains(a.as_str()) {
            out.write_all(a.as_bytes())?;
            out.write_all(b"\n")?;
            records += 1;
        }
    }
    if records > max_records {
        return Err(ApplyError::TooLarge(max_records));
    }
    Ok(records)
}

/// An AXFR answer streamed into a zone file: the opening SOA, records,
/// the closing SOA with the same serial, nothing after.
pub struct AxfrWriter<W: Write> {
    out: W,
    soa: Option<Soa>,
    done: bool,
    records: u64,
    max_records: u64,
}

impl<W: Write> AxfrWriter<W> {
    pub fn new(out: W, max_records: u64) -> Self {
        AxfrWriter {
            out,
            soa: None,
            done: false,
            records: 0,
            max_records,
        }
    }

    pub fn push(&mut self, r: &XfrRecord) -> Result<(), AxfrError> {
        if self.done {
            return match r {
                XfrRecord::Ignored => Ok(()),
                _ => Err(FoldError::Trailing.into()),
            };
        }
        match (r, &self.soa) {
            (XfrRecord::Soa(s), None) => self.soa = Some(*s),
            (XfrRecord::Soa(s), Some(first)) => {
                if s.serial != first.serial {
                    return Err(FoldError::ChainBreak {
                        expected: first.serial,
                        got: s.serial,
                    }
                    .into());
                }
                self.done = true;
            }
            (XfrRecord::Line(_), None) => return Err(FoldError::NoLeadingSoa.into()),
            (XfrRecord::Line(l), Some(_)) => {
                self.records += 1;
                if self.records > self.max_records {
                    return Err(FoldError::TooLarge(self.max_records).into());
                }
                self.out.write_all(l.as_bytes())?;
                self.out.write_all(b"\n")?;
            }
            (XfrRecord::Ignored, _) => {}
        }
        Ok(())
    }

    /// The zone's SOA and record count, once the closing SOA was seen.
    pub fn finish(mut self) -> Result<(Soa, u64, W), AxfrError> {
        match (self.soa, self.done) {
            (Some(soa), true) => {
                self.out.flush()?;
                Ok((soa, self.records, self.out))
            }
            (None, _) => Err(FoldError::Empty.into()),
            (Some(_), false) => Err(FoldError::Truncated.into()),
        }
    }
}

#[derive(Debug, Error)]
pub enum AxfrError {
    #[error(transparent)]
    Fold(#[from] FoldError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn soa(serial: u32) -> XfrRecord {
        XfrRecord::Soa(Soa {
            serial,
            refresh: 60,
            retry: 10,
            expire: 3600,
            minimum: 30,
        })
    }
    fn l(s: &str) -> XfrRecord {
        XfrRecord::Line(s.into())
    }

    #[test]
    fn record_lines() {
        let zone = "rpz.test";
        let rec = |name: &str, data: RData| {
            Record::from_rdata(Name::from_ascii(name).unwrap(), 300, data)
        };
        let cname = |t: &str| {
            RData::CNAME(hickory_proto::rr::rdata::CNAME(
                Name::from_ascii(t).unwrap(),
            ))
        };
        let cases: Vec<(Record, XfrRecord)> = vec![
            (
                rec("Bad.Example.rpz.test.", cname(".")),
                l("bad.example CNAME ."),
            ),
            (rec("*.x.rpz.test.", cname("*.")), l("*.x CNAME *.")),
            (
                rec("ok.rpz.test.", cname("rpz-passthru.")),
                l("ok CNAME rpz-passthru."),
            ),
            (
                rec(
                    "ld.rpz.test.",
                    RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, 1)),
                ),
                l("ld A 192.0.2.1"),
            ),
            (
                rec(
                    "rpz.test.",
                    RData::NS(hickory_proto::rr::rdata::NS(
                        Name::from_ascii("ns.").unwrap(),
                    )),
                ),
                XfrRecord::Ignored,
            ),
            (rec("other.test.", cname(".")), XfrRecord::Ignored),
            (rec("xrpz.test.", cname(".")), XfrRecord::Ignored),
        ];
        for (r, want) in cases {
            assert_eq!(record_line(zone, &r), want, "{r}");
        }
    }

    #[test]
    fn serial_arithmetic() {
        assert!(serial_newer(2, 1));
        assert!(!serial_newer(1, 1));
        assert!(!serial_newer(1, 2));
        assert!(serial_newer(0, u32::MAX));
        assert!(serial_newer(5, u32::MAX - 5));
        assert!(!serial_newer(1 << 31, 0));
    }

    #[test]
    fn fold_table() {
        let ok = |deltas: Vec<Delta>| Ok::<_, FoldError>(deltas);
        let d = |from, to, del: &[&str], add: &[&str]| Delta {
            from,
            to,
            deleted: del.iter().map(|s| s.to_string()).collect(),
            added: add.iter().map(|s| s.to_string()).collect(),
        };
        type Case = (u32, Vec<XfrRecord>, Result<Vec<Delta>, FoldError>);
        let cases: Vec<Case> = vec![
            (5, vec![soa(5)], ok(vec![])),
            (
                5,
                vec![soa(4)],
                Err(FoldError::NotNewer {
                    ours: 5,
                    primary: 4,
                }),
            ),
            (5, vec![], Err(FoldError::Empty)),
            (5, vec![l("a CNAME .")], Err(FoldError::NoLeadingSoa)),
            (
                5,
                vec![
                    soa(6),
                    soa(5),
                    l("a CNAME ."),
                    soa(6),
                    l("b CNAME ."),
                    soa(6),
                ],
                ok(vec![d(5, 6, &["a CNAME ."], &["b CNAME ."])]),
            ),
            (
                5,
                vec![
                    soa(7),
                    soa(5),
                    soa(6),
                    l("b CNAME ."),
                    soa(6),
                    l("b CNAME ."),
                    soa(7),
                    l("c CNAME ."),
                    soa(7),
                ],
                ok(vec![
                    d(5, 6, &[], &["b CNAME ."]),
                    d(6, 7, &["b CNAME ."], &["c CNAME ."]),
                ]),
            ),
            // An AXFR-style answer.
            (
                5,
                vec![soa(6), l("a CNAME ."), soa(6)],
                Err(FoldError::NotIncremental),
            ),
            // Starts from another serial than ours.
            (
                5,
                vec![soa(6), soa(4), soa(6), soa(6)],
                Err(FoldError::ChainBreak {
                    expected: 5,
                    got: 4,
                }),
            ),
            // A gap between deltas.
            (
                5,
                vec![soa(8), soa(5), soa(6), soa(7), soa(8), soa(8)],
                Err(FoldError::ChainBreak {
                    expected: 6,
                    got: 7,
                }),
            ),
            // Goes past the announced serial.
            (
                5,
                vec![soa(6), soa(5), soa(7), soa(6)],
                Err(FoldError::ChainBreak {
                    expected: 6,
                    got: 7,
                }),
            ),
            (
                5,
                vec![soa(6), soa(5), soa(5), soa(6)],
                Err(FoldError::Backwards { from: 5, to: 5 }),
            ),
            (
                5,
                vec![soa(6), soa(5), l("a CNAME ."), soa(6), l("b CNAME .")],
                Err(FoldError::Truncated),
            ),
            (
                5,
                vec![soa(6), soa(5), l("a CNAME .")],
                Err(FoldError::Truncated),
            ),
            (
                5,
                vec![soa(6), soa(5), soa(6), soa(6), l("x CNAME .")],
                Err(FoldError::Trailing),
            ),
            (
                5,
                vec![soa(3), soa(5), soa(3), soa(3)],
                Err(FoldError::NotNewer {
                    ours: 5,
                    primary: 3,
                }),
            ),
            // Serial wrap-around.
            (
                u32::MAX,
                vec![soa(1), soa(u32::MAX), soa(1), l("w CNAME ."), soa(1)],
                ok(vec![d(u32::MAX, 1, &[], &["w CNAME ."])]),
            ),
            // Apex NS records and the like change nothing.
            (
                5,
                vec![
                    soa(6),
                    XfrRecord::Ignored,
                    soa(5),
                    XfrRecord::Ignored,
                    soa(6),
                    soa(6),
                ],
                ok(vec![d(5, 6, &[], &[])]),
            ),
        ];
        for (current, records, want) in cases {
            let got = fold_ixfr(current, &records).map(|i| i.deltas);
            assert_eq!(got, want, "{records:?}");
        }
    }

    fn run_apply(old: &str, deltas: &[Delta], max: u64) -> Result<(String, u64), String> {
        let mut out = Vec::new();
        let n =
            apply(old.as_bytes(), &mut out, &net_change(deltas), max).map_err(|e| e.to_string())?;
        Ok((String::from_utf8(out).unwrap(), n))
    }

    #[test]
    fn apply_table() {
        let d = |del: &[&str], add: &[&str]| Delta {
            from: 0,
            to: 0,
            deleted: del.iter().map(|s| s.to_string()).collect(),
            added: add.iter().map(|s| s.to_string()).collect(),
        };
        let old = "; header\na CNAME .\nb CNAME .\n";
        type Case<'a> = (Vec<Delta>, Result<(&'a str, u64), &'a str>);
        let cases: Vec<Case> = vec![
            (vec![], Ok(("; header\na CNAME .\nb CNAME .\n", 2))),
            (
                vec![d(&["a CNAME ."], &["c CNAME ."])],
                Ok(("; header\nb CNAME .\nc CNAME .\n", 2)),
            ),
            // Added, then deleted again in a later delta.
            (
                vec![d(&[], &["c CNAME ."]), d(&["c CNAME ."], &[])],
                Ok((old, 2)),
            ),
            // Deleted, then added back: stays in place.
            (
                vec![d(&["a CNAME ."], &[]), d(&[], &["a CNAME ."])],
                Ok((old, 2)),
            ),
            // Adding a record the zone holds does not double it.
            (vec![d(&[], &["b CNAME ."])], Ok((old, 2))),
            (vec![d(&["zz CNAME ."], &[])], Err("does not hold 1")),
            (
                vec![d(&[], &["c CNAME .", "d CNAME ."])],
                Err("more than 3"),
            ),
        ];
        for (deltas, want) in cases {
            let got = run_apply(old, &deltas, 3);
            match (&want, &got) {
                (Ok((text, n)), Ok((gt, gn))) => {
                    assert_eq!((*text, *n), (gt.as_str(), *gn), "{deltas:?}")
                }
                (Err(m), Err(e)) => assert!(e.contains(m), "{deltas:?}: {e}"),
                _ => panic!("{deltas:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn axfr_writer() {
        let run = |recs: &[XfrRecord], max| {
            let mut w = AxfrWriter::new(Vec::new(), max);
            for r in recs {
                w.push(r).map_err(|e| e.to_string())?;
            }
            w.finish()
                .map(|(s, n, out)| (s.serial, n, String::from_utf8(out).unwrap()))
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            run(
                &[
                    soa(3),
                    l("a CNAME ."),
                    XfrRecord::Ignored,
                    l("b CNAME ."),
                    soa(3)
                ],
                10
            ),
            Ok((3, 2, "a CNAME .\nb CNAME .\n".into()))
        );
        assert_eq!(run(&[soa(3), soa(3)], 10), Ok((3, 0, String::new())));
        assert!(
            run(&[soa(3), l("a CNAME ."), l("b CNAME ."), soa(3)], 1)
                .unwrap_err()
                .contains("more than 1")
        );
        assert!(
            run(&[soa(3), l("a CNAME .")], 10)
                .unwrap_err()
                .contains("ends before")
        );
        assert!(run(&[soa(3), soa(4)], 10).unwrap_err().contains("chain"));
        assert!(
            run(&[soa(3), soa(3), l("a CNAME .")], 10)
                .unwrap_err()
                .contains("after the closing")
        );
        assert!(run(&[l("a CNAME .")], 10).unwrap_err().contains("SOA"));
        assert!(run(&[], 10).unwrap_err().contains("empty"));
    }

    /// Lines deleted and added by one step of a history.
    type Step = (Vec<String>, Vec<String>);

    /// A zone history as a naive reference: sets of lines per serial.
    fn history_strategy() -> impl Strategy<Value = (BTreeSet<String>, Vec<Step>)> {
        let line = (0u8..12).prop_map(|i| format!("n{i} CNAME ."));
        let set = proptest::collection::btree_set(line.clone(), 0..8);
        let step = (
            proptest::collection::vec(line.clone(), 0..4),
            proptest::collection::vec(line, 0..4),
        );
        (set, proptest::collection::vec(step, 0..5))
    }

    proptest! {
        /// Folding a well-formed IXFR of any history and applying it gives
        /// the zone a naive set model reaches by replaying each step.
        #[test]
        fn fold_and_apply_match_the_reference((start, steps) in history_strategy(), base in any::<u32>()) {
            let mut zone = start.clone();
            let mut records = vec![soa(base.wrapping_add(steps.len() as u32))];
            for (i, (del, add)) in steps.iter().enumerate() {
                // What a primary would send: deletions it really had, then additions.
                let del: Vec<String> = del.iter().filter(|l| zone.contains(*l)).cloned().collect::<BTreeSet<_>>().into_iter().collect();
                for l in &del { zone.remove(l); }
                let add: Vec<String> = add.iter().filter(|l| !zone.contains(*l)).cloned().collect::<BTreeSet<_>>().into_iter().collect();
                for l in &add { zone.insert(l.clone()); }
                records.push(soa(base.wrapping_add(i as u32)));
                records.extend(del.iter().map(|x| l(x)));
                records.push(soa(base.wrapping_add(i as u32 + 1)));
                records.extend(add.iter().map(|x| l(x)));
            }
            records.push(soa(base.wrapping_add(steps.len() as u32)));
            let ixfr = fold_ixfr(base, &records);
            let ixfr = match ixfr {
                Ok(i) => i,
                Err(e) => {
                    // Only "nothing newer" is allowed to refuse a clean chain.
                    prop_assert!(steps.is_empty(), "{e}");
                    return Ok(());
                }
            };
            prop_assert_eq!(ixfr.deltas.len(), steps.len());
            let old: String = start.iter().map(|l| format!("{l}\n")).collect();
            let (text, n) = run_apply(&old, &ixfr.deltas, u64::MAX).unwrap();
            let got: BTreeSet<String> = text.lines().map(String::from).collect();
            prop_assert_eq!(n as usize, got.len());
            prop_assert_eq!(got, zone);
        }

        /// Any sequence of records folds or fails; never panics.
        #[test]
        fn fold_never_panics(current in 0u32..6, recs in proptest::collection::vec((0u8..3, 0u32..6), 0..20)) {
            let records: Vec<XfrRecord> = recs.iter().map(|&(k, v)| match k {
                0 => soa(v),
                1 => l(&format!("n{v} CNAME .")),
                _ => XfrRecord::Ignored,
            }).collect();
            if let Ok(ixfr) = fold_ixfr(current, &records) {
                // A success is a chain from ours to the announced serial.
                let mut s = current;
                for d in &ixfr.deltas {
                    prop_assert_eq!(d.from, s);
                    prop_assert!(serial_newer(d.to, d.from));
                    s = d.to;
                }
                prop_assert_eq!(s, ixfr.soa.serial);
            }
        }
    }
}
