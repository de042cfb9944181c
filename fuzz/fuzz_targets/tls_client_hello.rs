//! `make fuzz` / `RUSTC_BOOTSTRAP=1 cargo fuzz run tls_client_hello`: raw
//! client bytes through the TLS front's ClientHello reader (tls-parser
//! underneath). It must never panic, a server name it returns is a
//! lower-case ASCII host name, and its verdict only moves forward as bytes
//! arrive (every prefix reads as "need more" or the same verdict).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sinkhole::fuzz_tls_client_hello(data);
});
