//! `RUSTC_BOOTSTRAP=1 cargo fuzz run url_normalize`: the URL normaliser
//! (list rules and web front requests) on arbitrary text. It must never
//! panic, its canonical text must parse back to the same URL, and a rule
//! always covers a request for its own URL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sinkhole::list::url::{NormUrl, normalize_target};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(url) = NormUrl::parse(text) {
        let canonical = url.to_string();
        let again = NormUrl::parse(&canonical).expect("canonical text parses");
        assert_eq!(again, url, "{text:?} → {canonical:?}");
        assert!(url.path.starts_with('/') && !url.path.contains("//"));
        let mut target = url.path.clone();
        if let Some(q) = &url.query {
            target.push('?');
            target.push_str(q);
        }
        let host = match url.port {
            Some(p) => format!("{}:{p}", url.host),
            None => url.host.clone(),
        };
        // A request names port 80 by leaving it out, so only a rule with
        // an explicit port 80 (`https://h:80/…`) has no request form.
        if url.port != Some(80) {
            let req = NormUrl::from_request(&host, &target).expect("request form parses");
            assert!(url.covers(&req), "{canonical:?} does not cover itself");
        }
    }
    let (path, query) = normalize_target(text);
    let mut again = path.clone();
    if let Some(q) = &query {
        again.push('?');
        again.push_str(q);
    }
    assert_eq!(normalize_target(&again), (path, query));
    let _ = NormUrl::from_request(text, text);
});
