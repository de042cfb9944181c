//! `make fuzz` / `RUSTC_BOOTSTRAP=1 cargo fuzz run audit_reader`: the audit log readers on arbitrary bytes: `verify` (record parsing and
//! the chain walk with its lookahead) and the search/stats hit parser must
//! never panic, whatever a damaged or hostile log contains.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let report = sinkhole::audit::verify_bytes(data);
    // A report is always printable and has a consistent exit code.
    let _ = report.to_string();
    assert_eq!(report.exit_code() == 0, report.problem.is_none());
    let _ = sinkhole::audit::fuzz_search(data);
});
