//! `make fuzz` / `RUSTC_BOOTSTRAP=1 cargo fuzz run dns_upstream`: raw bytes
//! as an upstream's reply (the first byte picks one of a few questions):
//! the forwarder's anti-spoofing acceptance check, the response scanner,
//! the cache insert, the reply to the waiting client, a cache hit and a
//! stale (RFC 8767) read of it. No sockets.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sinkhole::server::fuzzing::Harness;

static HARNESS: LazyLock<Harness> = LazyLock::new(Harness::new);

fuzz_target!(|data: &[u8]| {
    HARNESS.upstream(data);
});
