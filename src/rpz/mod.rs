//! Response Policy Zones followed from primaries (`[[rpz.follow]]`, issue
//! 14): transfers (`xfr`), the IXFR fold (`fold`), the zone on disk
//! (`store`), the refresh task per zone (`follow`), NOTIFY on the DNS
//! listeners (`notify`) and TSIG key files (`keyfile`); and the rules in
//! force served as an RPZ to followers (`serve`, `[rpz.serve]`).
//!
//! A followed zone is a list like any other: its RPZ text sits in
//! `STATE_DIR/sources/ZONE.rpz`, which the list pipeline reads, so its
//! name in `GET /v1/lists`, EDE texts and the audit log is the zone name.

pub mod config;
pub mod fold;
mod follow;
pub mod journal;
pub mod keyfile;
pub mod notify;
pub mod serve;
pub mod store;
pub mod xfr;

pub use follow::{FollowError, RpzFollowing, ZoneStatus, start};

#[cfg(test)]
mod tests;
