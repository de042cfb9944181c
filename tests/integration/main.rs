//! sinkhole's integration tests, in one test binary (`cargo test --test
//! integration`; one module's tests with a filter, e.g. `-- serve::`).
//!
//! Most modules start the real `sinkhole` binary on loopback with a fake
//! upstream and query it (the harness is in [`common`]); some drive the
//! library directly (`reload_real`) or the CLI (`lists`), or check the
//! packaging (`systemd`). One binary links the library and the harness
//! once instead of once per file.

mod common;

mod anchor;
mod audit_e2e;
mod bypass;
mod console;
mod faults;
mod flood;
mod formats;
mod limits;
mod lists;
mod metrics;
mod notify;
mod reload;
mod reload_load;
mod reload_real;
mod serve;
mod serve_config;
mod systemd;
mod tls_front;
mod web;
