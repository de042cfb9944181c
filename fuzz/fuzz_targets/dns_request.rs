//! `make fuzz` / `RUSTC_BOOTSTRAP=1 cargo fuzz run dns_request`: raw client
//! bytes through the whole inline query path (parse, ACL, policy over a
//! fixed snapshot, sinkhole answer, packet-cache hit with ID/name/TTL
//! patching, the SERVFAIL or serve-stale completion of a miss), over UDP and
//! TCP. No sockets. Every reply must keep the invariants `Harness` checks
//! (same ID, QR, question echoed, within the UDP size, decodable).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sinkhole::server::fuzzing::Harness;

static HARNESS: LazyLock<Harness> = LazyLock::new(Harness::new);

fuzz_target!(|data: &[u8]| {
    HARNESS.request(data);
});
