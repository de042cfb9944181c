//! `make fuzz` / `RUSTC_BOOTSTRAP=1 cargo fuzz run parse_auto`: format
//! detection from the content (no extension to go by) and then whichever
//! parser it picks, on arbitrary bytes. It must never panic, and every name
//! rule it returns must be valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sinkhole::list::name::validate;
use sinkhole::list::parse::parse_bytes;
use sinkhole::list::{ListOptions, Target};

fuzz_target!(|data: &[u8]| {
    let list = parse_bytes(std::path::Path::new("fuzz"), data, &ListOptions::default());
    for rule in &list.rules {
        if let Target::Name { name, .. } = &rule.target {
            assert!(validate(name).is_ok(), "invalid name rule {name:?}");
        }
        assert!(rule.line >= 1);
    }
});
