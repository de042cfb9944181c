//! `make fuzz` / `RUSTC_BOOTSTRAP=1 cargo fuzz run xfr_request`: raw client
//! bytes through `[rpz.serve]`'s answers for its zone's apex (SOA, NS,
//! AXFR/IXFR with the IXFR query's SOA parsed, TSIG checked), over UDP and
//! TCP, from inside and outside `allow_transfer`. No sockets. Every reply
//! and every transfer message must decode.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sinkhole::rpz::serve::fuzzing::XfrHarness;

static HARNESS: LazyLock<XfrHarness> = LazyLock::new(XfrHarness::new);

fuzz_target!(|data: &[u8]| {
    HARNESS.request(data);
});
