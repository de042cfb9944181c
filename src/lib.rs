//! sinkhole: a DNS blocklist enforcement resolver-proxy.
//!
//! Data path: `server` (listeners) → `acl` → `policy::decide` over a
//! `list::Snapshot` → `sinkhole` (answer synthesis) or `forward` (upstream +
//! cache) → response; every block → `audit`.

pub mod acl;
pub mod audit;
pub mod cache;
pub mod config;
pub mod daemon;
pub mod forward;
pub mod http;
pub mod list;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod report;
pub mod server;
pub mod sinkhole;
pub mod special;
pub mod wire;
