//! `make fuzz` / `RUSTC_BOOTSTRAP=1 cargo fuzz run parse_dump`: the registry
//! dump (dump.xml) reader on arbitrary bytes. It must never panic, every
//! name rule it returns must be valid, and every line it reports must be
//! inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sinkhole::list::name::validate;
use sinkhole::list::parse::parse_bytes;
use sinkhole::list::{Format, ListOptions, Target};

fuzz_target!(|data: &[u8]| {
    let opts = ListOptions {
        format: Some(Format::Dump),
        ..ListOptions::default()
    };
    let list = parse_bytes(std::path::Path::new("fuzz"), data, &opts);
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    for rule in &list.rules {
        if let Target::Name { name, .. } = &rule.target {
            assert!(validate(name).is_ok(), "invalid name rule {name:?}");
        }
        assert!(rule.line >= 1 && rule.line as usize <= lines);
    }
    for skip in &list.skipped {
        assert!(skip.line >= 1 && skip.line as usize <= lines);
    }
});
