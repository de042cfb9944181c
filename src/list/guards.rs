//! The reload guards: whether a new list set may replace the one in force.
//!
//! A push that arrives garbled (a registry dump in the wrong encoding, an
//! HTML error page saved as the list) or truncated (a transfer cut short)
//! must not silently unblock what the version in force blocks. Two limits
//! catch those: the share of lines with content that could not become a
//! rule, and how much the rule count shrinks. `force` (`sinkhole reload
//! --force`) is the operator saying the change is intended.
//!
//! [`check`] is pure: the reloader counts, this decides. That keeps the
//! rules in one place and lets a table test pin every boundary.

use thiserror::Error;

use super::Counts;

/// `[lists] max_skipped_ratio` and `max_shrink_ratio`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Limits {
    /// Reject when skipped lines are more than this share of the lines
    /// with content.
    pub max_skipped_ratio: f64,
    /// Reject when the rule count falls by more than this fraction of the
    /// count in force.
    pub max_shrink_ratio: f64,
}

/// What a candidate version holds, as far as the guards care.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate<'a> {
    /// Lines with content: every rule of every kind, plus the skipped lines.
    pub lines: usize,
    pub skipped: usize,
    /// Rules in the compiled snapshot (the unit the shrink guard compares).
    pub rules: usize,
    /// `FILE:LINE: reason` of the first skipped line, for the message.
    pub first_skip: Option<&'a str>,
}

impl<'a> Candidate<'a> {
    /// The candidate a set of list counts and its compiled snapshot make.
    pub(crate) fn new(counts: &Counts, rules: usize, first_skip: Option<&'a str>) -> Candidate<'a> {
        let Counts {
            names,
            wildcards,
            allows,
            keywords,
            urls,
            ips,
            rpz_other,
            skipped,
        } = *counts;
        Candidate {
            lines: names + wildcards + allows + keywords + urls + ips + rpz_other + skipped,
            skipped,
            rules,
            first_skip,
        }
    }
}

/// Why a candidate was refused. The version in force keeps serving.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum GuardError {
    #[error(
        "rejected: {skipped} of {total} lines skipped ({pct:.1}% > {limit:.1}% allowed); first: {first}"
    )]
    TooManySkipped {
        skipped: usize,
        total: usize,
        pct: f64,
        limit: f64,
        first: String,
    },
    #[error(
        "rejected: the lists shrink from {old} to {new} rules ({pct:.1}% fewer > {limit:.1}% allowed); use `sinkhole reload --force` if intended"
    )]
    Shrunk {
        old: usize,
        new: usize,
        pct: f64,
        limit: f64,
    },
}

/// May `new` replace a version of `old_rules` rules? The skipped-line
/// guard is checked first (a garbled file usually also shrinks). With
/// nothing in force (`old_rules == 0`) any size is growth; a candidate with
/// no lines at all has no skipped ratio, but against rules in force it is a
/// 100 % shrink.
pub(crate) fn check(
    limits: Limits,
    old_rules: usize,
    new: &Candidate<'_>,
    force: bool,
) -> Result<(), GuardError> {
    if force {
        return Ok(());
    }
    if new.lines > 0 {
        let ratio = new.skipped as f64 / new.lines as f64;
        if ratio > limits.max_skipped_ratio {
            return Err(GuardError::TooManySkipped {
                skipped: new.skipped,
                total: new.lines,
                pct: ratio * 100.0,
                limit: limits.max_skipped_ratio * 100.0,
                first: new.first_skip.unwrap_or_default().to_string(),
            });
        }
    }
    if old_rules > 0 && (new.rules as f64) < old_rules as f64 * (1.0 - limits.max_shrink_ratio) {
        return Err(GuardError::Shrunk {
            old: old_rules,
            new: new.rules,
            pct: (1.0 - new.rules as f64 / old_rules as f64) * 100.0,
            limit: limits.max_shrink_ratio * 100.0,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_skipped_ratio: 0.10,
        max_shrink_ratio: 0.50,
    };

    /// Each row: lines with content, skipped, old rules, new rules, force,
    /// and the outcome written out (`"ok"` or the exact message).
    #[test]
    fn guard_table() {
        #[rustfmt::skip]
        let rows: &[(usize, usize, usize, usize, bool, &str)] = &[
            // Skipped-line ratio (limit 10 %), no shrink.
            (100,  9, 100, 100, false, "ok"),
            (100, 10, 100, 100, false, "ok"),
            (100, 11, 100, 100, false,
             "rejected: 11 of 100 lines skipped (11.0% > 10.0% allowed); first: gov.txt:7: bad"),
            (100, 11, 100, 100, true,  "ok"),
            // Shrink (limit 50 %), nothing skipped.
            (51, 0, 100, 51, false, "ok"),
            (50, 0, 100, 50, false, "ok"),
            (49, 0, 100, 49, false,
             "rejected: the lists shrink from 100 to 49 rules (51.0% fewer > 50.0% allowed); use `sinkhole reload --force` if intended"),
            (49, 0, 100, 49, true,  "ok"),
            // Growth is never refused.
            (300, 0, 100, 300, false, "ok"),
            // Nothing in force: any size passes the shrink guard…
            (0,   0, 0,  0,  false, "ok"),
            (10,  0, 0,  10, false, "ok"),
            // …but not the skipped-line guard.
            (10,  5, 0,  5,  false,
             "rejected: 5 of 10 lines skipped (50.0% > 10.0% allowed); first: gov.txt:7: bad"),
            // An empty new list against rules in force is a 100 % shrink.
            (0, 0, 100, 0, false,
             "rejected: the lists shrink from 100 to 0 rules (100.0% fewer > 50.0% allowed); use `sinkhole reload --force` if intended"),
            (0, 0, 100, 0, true,  "ok"),
            // Both over: the skipped-line guard speaks first.
            (40, 20, 100, 20, false,
             "rejected: 20 of 40 lines skipped (50.0% > 10.0% allowed); first: gov.txt:7: bad"),
            (40, 20, 100, 20, true,  "ok"),
        ];
        for &(lines, skipped, old_rules, rules, force, want) in rows {
            let candidate = Candidate {
                lines,
                skipped,
                rules,
                first_skip: Some("gov.txt:7: bad"),
            };
            let got = match check(LIMITS, old_rules, &candidate, force) {
                Ok(()) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            assert_eq!(
                got, want,
                "lines {lines} skipped {skipped} old {old_rules} new {rules} force {force}"
            );
        }
    }

    #[test]
    fn candidate_counts_every_line_with_content() {
        let counts = Counts {
            names: 1,
            wildcards: 2,
            allows: 3,
            keywords: 4,
            urls: 5,
            ips: 6,
            rpz_other: 7,
            skipped: 8,
        };
        let c = Candidate::new(&counts, 10, None);
        assert_eq!((c.lines, c.skipped, c.rules), (36, 8, 10));
    }
}
