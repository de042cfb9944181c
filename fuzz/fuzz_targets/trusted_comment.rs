//! `make fuzz` / `RUSTC_BOOTSTRAP=1 cargo fuzz run trusted_comment`: the
//! signed trusted comment of a pushed or pulled list
//! (`list=NAME version=N [base=N] [expires=RFC3339]`). It must never
//! panic, a refusal must say why, and an accepted comment must name a
//! non-empty list whose fields, written back, parse to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sinkhole::intake::comment::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(c) => {
            assert!(!c.list.is_empty());
            let mut again = format!("list={} version={}", c.list, c.version);
            if let Some(b) = c.base {
                again.push_str(&format!(" base={b}"));
            }
            if let Some((t, _)) = &c.expires {
                again.push_str(&format!(" expires={t}"));
            }
            assert_eq!(parse(&again).as_ref(), Ok(&c), "{again:?}");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
