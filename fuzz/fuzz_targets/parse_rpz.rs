//! `make fuzz` / `RUSTC_BOOTSTRAP=1 cargo fuzz run parse_rpz`: the rpz parser on arbitrary bytes.
//! It must never panic, and every name rule it returns must be valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sinkhole::list::name::validate;
use sinkhole::list::parse::parse_bytes;
use sinkhole::list::{Format, ListOptions, Target};

fuzz_target!(|data: &[u8]| {
    let opts = ListOptions {
        format: Some(Format::Rpz),
        ..ListOptions::default()
    };
    let list = parse_bytes(std::path::Path::new("fuzz"), data, &opts);
    for rule in &list.rules {
        if let Target::Name { name, .. } = &rule.target {
            assert!(validate(name).is_ok(), "invalid name rule {name:?}");
        }
        assert!(rule.line >= 1);
    }
});
