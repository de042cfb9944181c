//! The decision for one query, as a pure function of the snapshot and the
//! question: no I/O, no clock, no allocation. Sockets live elsewhere.

use crate::list::snapshot::MatchAction;
use crate::list::{RuleId, Snapshot};

/// The parts of a query the policy looks at.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// The query name as dotted text, any letter case, with or without the
    /// trailing dot (the root is `.` or empty).
    pub name: &'a [u8],
    /// The query type (RFC 1035 numeric code).
    pub qtype: u16,
}

/// How a blocked name is answered. `Default` defers to `[policy] action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    Default,
    Nxdomain,
    Nodata,
    Refused,
    Drop,
    /// Answer with the addresses stored on the rule (RPZ local data or a
    /// per-list address action); see [`crate::list::RuleView::addresses`].
    LocalData,
}

/// What to do with a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No rule matched: forward upstream.
    Pass,
    /// An allow rule matched: forward upstream (the rule is kept for logs).
    Allow(RuleId),
    /// A block rule matched.
    Block(RuleId, BlockKind),
}

impl Decision {
    pub fn is_block(&self) -> bool {
        matches!(self, Decision::Block(..))
    }
}

/// Decide one query. The winning rule is the most specific name rule
/// (deepest matching suffix; at equal depth an allow beats a block); a
/// keyword rule applies only when no name rule matched.
pub fn decide(snapshot: &Snapshot, query: &Query<'_>) -> Decision {
    match snapshot.lookup(query.name) {
        None => Decision::Pass,
        Some(m) => match m.action {
            MatchAction::Allow => Decision::Allow(m.rule),
            MatchAction::Block => Decision::Block(m.rule, BlockKind::Default),
            MatchAction::Nxdomain => Decision::Block(m.rule, BlockKind::Nxdomain),
            MatchAction::Nodata => Decision::Block(m.rule, BlockKind::Nodata),
            MatchAction::Refused => Decision::Block(m.rule, BlockKind::Refused),
            MatchAction::Drop => Decision::Block(m.rule, BlockKind::Drop),
            MatchAction::LocalData => Decision::Block(m.rule, BlockKind::LocalData),
        },
    }
}
