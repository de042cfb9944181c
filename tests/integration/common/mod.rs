//! The harness the integration tests share: a fake upstream with a fault
//! switch ([`upstream`]), the real `sinkhole serve` on port 0 with its
//! addresses read from its ready file ([`server`]), and a small DNS client
//! ([`client`]). Everything is loopback-only, every wait has a timeout,
//! and what a test starts stops when it is dropped. A test that loads the
//! machine on purpose runs apart from the servers of the others ([`gate`]).

pub(crate) mod client;
pub(crate) mod gate;
pub(crate) mod server;
pub(crate) mod upstream;

use std::process::Command;
use std::time::{Duration, Instant};

pub(crate) use client::*;
pub(crate) use server::{Server, await_ready_file, signal};
pub(crate) use upstream::{Fault, UP_V4, Upstream};

/// `[[lists.file]]` entries giving `nodata.txt`, `refused.txt`, `drop.txt`
/// and `address.txt` in the list directory their action, one each.
pub(crate) const PER_LIST: &str = r#"
[[lists.file]]
path = "{lists}/nodata.txt"
action = "nodata"
[[lists.file]]
path = "{lists}/refused.txt"
action = "refused"
[[lists.file]]
path = "{lists}/drop.txt"
action = "drop"
[[lists.file]]
path = "{lists}/address.txt"
action = "address"
"#;

/// Poll `f` every 20 ms until it returns `Some`, for at most `within`.
pub(crate) fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Headless Chromium, when installed (`make test-deps` installs it; on CI
/// a missing browser is a failure, elsewhere the test says it skipped).
pub(crate) fn chromium() -> Option<&'static str> {
    for cmd in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(cmd)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(cmd);
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "chromium is not installed (make test-deps installs it)"
    );
    eprintln!("skipping: chromium is not installed (make test-deps installs it)");
    None
}
