//! sinkhole: a DNS blocklist enforcement resolver-proxy.
//!
//! Data path: `server` (listeners) → `acl` → `policy::decide` over a
//! `list::Snapshot` → `sinkhole` (answer synthesis) or `forward` (upstream +
//! cache) → response; every block → `audit`.

pub(crate) mod acl;
pub mod audit;
pub(crate) mod bypass;
pub(crate) mod cache;
pub mod config;
pub mod console;
pub mod daemon;
pub(crate) mod dirlock;
pub mod dnstap;
pub(crate) mod forward;
pub mod http;
pub mod intake;
pub mod list;
pub(crate) mod memory;
pub mod metrics;
pub mod policy;
pub mod report;
pub mod rpz;
// Public only for the fuzz targets (`fuzzing` feature: `server::fuzzing`).
#[cfg(feature = "fuzzing")]
pub mod server;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod server;
pub(crate) mod sinkhole;
pub(crate) mod special;
pub(crate) mod wire;
// The URL/TLS fronts of issue 12.
pub mod web;

/// The TLS front's ClientHello reader on raw bytes, with its invariants
/// checked (`fuzz/fuzz_targets/tls_client_hello.rs`). Not a public API.
#[cfg(feature = "fuzzing")]
pub fn fuzz_tls_client_hello(data: &[u8]) {
    web::tls::check_prefix_consistency(data);
}
pub mod witness;
