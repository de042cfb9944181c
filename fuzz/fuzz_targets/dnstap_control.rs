//! `make fuzz` / `RUSTC_BOOTSTRAP=1 cargo fuzz run dnstap_control`: the
//! body of a Frame Streams control frame as a dnstap collector sends it
//! (ACCEPT, FINISH). Decoding never panics; what decodes encodes back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sinkhole::dnstap::fuzz_control_frame(data);
});
