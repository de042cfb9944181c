//! `make fuzz` / `RUSTC_BOOTSTRAP=1 cargo fuzz run config`: the
//! configuration loader on arbitrary text. It must never panic, a rejected
//! configuration must say why, and an accepted one must print (as
//! `--check-config` does) as TOML that loads again to the same effective
//! configuration. The resolv.conf fallback is fixed text, so nothing is read
//! from the host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sinkhole::config::Config;

const RESOLV: &str = "nameserver 192.0.2.53\nnameserver 2001:db8::53\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str_with_resolv_text(text, "fuzz.toml", RESOLV) {
        Ok(cfg) => {
            let printed = cfg.to_toml();
            let again = Config::from_toml_str_with_resolv_text(&printed, "printed", RESOLV)
                .unwrap_or_else(|e| panic!("effective config does not load: {e}\n{printed}"));
            assert_eq!(again.to_toml(), printed, "effective config not stable");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
