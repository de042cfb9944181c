//! `make fuzz` / `RUSTC_BOOTSTRAP=1 cargo fuzz run rpz_ixfr`: a transfer
//! answer from a primary (the bytes after the first four, as DNS messages
//! back to back, each with a u16 length as on TCP) through the record
//! conversion, the IXFR fold against the serial in the first four bytes,
//! the apply to a small zone file, and the AXFR writer. Nothing may panic;
//! a folded chain must lead from our serial to the announced one, and an
//! applied change must leave every added line in the zone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sinkhole::rpz::fold::{self, AxfrWriter, XfrRecord};

const ZONE: &str = "rpz.test";
const OLD: &str =
    "; header\na.example CNAME .\nb.example CNAME .\n*.c.example CNAME rpz-passthru.\n";

fuzz_target!(|data: &[u8]| {
    let Some((serial, mut rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let current = u32::from_be_bytes(*serial);
    let mut records: Vec<XfrRecord> = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        if let Ok(m) = hickory_proto::op::Message::from_vec(msg) {
            records.extend(m.answers.iter().map(|r| fold::record_line(ZONE, r)));
        }
    }
    for r in &records {
        if let XfrRecord::Line(l) = r {
            assert!(!l.contains('\n') && !l.starts_with([' ', '\t']), "{l:?}");
        }
    }
    if let Ok(ixfr) = fold::fold_ixfr(current, &records) {
        let mut s = current;
        for d in &ixfr.deltas {
            assert_eq!(d.from, s);
            assert!(fold::serial_newer(d.to, d.from));
            s = d.to;
        }
        assert_eq!(s, ixfr.soa.serial);
        let change = fold::net_change(&ixfr.deltas);
        let mut out = Vec::new();
        if fold::apply(OLD.as_bytes(), &mut out, &change, 1_000).is_ok() {
            let text = String::from_utf8(out).expect("lines in, lines out");
            for a in &change.add {
                assert!(text.lines().any(|l| l == a), "{a:?} missing");
            }
            for d in &change.delete {
                assert!(!text.lines().any(|l| l == d), "{d:?} kept");
            }
        }
    }
    let mut w = AxfrWriter::new(Vec::new(), 100);
    if records.iter().all(|r| w.push(r).is_ok()) {
        let _ = w.finish();
    }
});
