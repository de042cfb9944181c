use std::io::{Cursor, Write};
use std::path::Path;

use rust_xlsxwriter::{ExcelDateTime, Format as CellFormat, Workbook};

use super::*;
use crate::list::{Format, ListOptions, ParsedList, RuleMeta, Scope, Target};

fn run(path: &str, bytes: &[u8]) -> ParsedList {
    super::super::parse_bytes(Path::new(path), bytes, &ListOptions::default())
}

/// A workbook as a clerk fills it in: mixed-case header, an order number
/// typed as a number, a date typed as a date, a Cyrillic authority, an
/// empty row, a URL with a path and a second sheet that is not read.
fn clerk_workbook() -> Vec<u8> {
    let mut book = Workbook::new();
    let date = CellFormat::new().set_num_format("dd.mm.yyyy");
    let sheet = book.add_worksheet();
    let header = ["Domain", "URL", "Decision", "Authority", "Date", "Category"];
    for (col, h) in header.iter().enumerate() {
        sheet.write_string(0, col as u16, *h).expect("header");
    }
    sheet.write_string(1, 0, "Scam.Example.").expect("cell");
    sheet.write_number(1, 2, 20261129.0).expect("cell");
    sheet.write_string(1, 3, "АФМ").expect("cell");
    let day = ExcelDateTime::from_ymd(2026, 11, 29).expect("date");
    sheet
        .write_datetime_with_format(1, 4, &day, &date)
        .expect("cell");
    sheet.write_string(1, 5, "crypto-exchange").expect("cell");
    // Row 3 left empty.
    sheet.write_string(3, 0, "page.example").expect("cell");
    sheet
        .write_string(3, 1, "http://page.example/offer")
        .expect("cell");
    sheet.write_string(3, 2, "2025-18/KZ").expect("cell");
    sheet.write_string(4, 0, "bad..name").expect("cell");
    let other = book.add_worksheet();
    other.write_string(0, 0, "domain").expect("cell");
    other.write_string(1, 0, "not-read.example").expect("cell");
    book.save_to_buffer().expect("xlsx")
}

#[test]
fn reads_the_first_sheet_with_csv_header_rules() {
    let bytes = clerk_workbook();
    // Detected by extension and by content.
    for name in ["orders.xlsx", "orders.bin"] {
        let p = run(name, &bytes);
        assert_eq!(p.format, Format::Xlsx, "{name}");
        let got: Vec<_> = p
            .rules
            .iter()
            .map(|r| (r.line, r.target.clone(), r.meta().clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    2,
                    Target::Name {
                        name: "scam.example".into(),
                        scope: Scope::Subtree
                    },
                    RuleMeta {
                        decision: Some("20261129".into()),
                        authority: Some("АФМ".into()),
                        date: Some("2026-11-29".into()),
                        category: Some("crypto-exchange".into()),
                        ..RuleMeta::default()
                    }
                ),
                (
                    4,
                    Target::Url("http://page.example/offer".into()),
                    RuleMeta {
                        decision: Some("2025-18/KZ".into()),
                        ..RuleMeta::default()
                    }
                ),
            ]
        );
        let skips: Vec<_> = p.skip_messages().collect();
        assert_eq!(skips.len(), 1, "{skips:?}");
        assert!(
            skips[0].starts_with(&format!("{name}:5: empty label")),
            "{skips:?}"
        );
    }
}

#[test]
fn a_header_without_domain_or_url_names_what_was_found() {
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.write_string(2, 1, "Сайт").expect("cell");
    sheet.write_string(2, 2, "Решение").expect("cell");
    sheet.write_string(3, 1, "a.example").expect("cell");
    let bytes = book.save_to_buffer().expect("xlsx");
    let p = run("orders.xlsx", &bytes);
    assert!(p.rules.is_empty());
    assert_eq!(p.skipped.len(), 1);
    assert_eq!(p.skipped[0].line, 3);
    let reason = &p.skipped[0].reason;
    assert!(
        reason.contains("neither a `domain` nor a `url` column")
            && reason.contains("\"Сайт\", \"Решение\"")
            && reason.contains("spreadsheet"),
        "{reason}"
    );
}

fn zip_with(entry: &str, body: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file(entry, options).expect("entry");
    zip.write_all(body).expect("write");
    zip.finish().expect("zip").into_inner()
}

#[test]
fn refused_past_the_unpacked_size_cap() {
    // 2 MiB of zeros deflate to a few KiB: a small zip bomb.
    let bomb = zip_with("xl/sharedStrings.xml", &vec![0u8; 2 << 20]);
    assert!(bomb.len() < 64 << 10);
    let mut sink = Sink::default();
    parse_capped(&bomb, 1 << 20, &mut sink);
    assert!(sink.rules.is_empty());
    assert_eq!(sink.skipped.len(), 1);
    assert!(
        sink.skipped[0]
            .reason
            .contains("unpacks to more than 1 MiB"),
        "{:?}",
        sink.skipped
    );
    // Under the cap the size check passes and calamine says what is wrong.
    let mut sink = Sink::default();
    parse_capped(&bomb, 4 << 20, &mut sink);
    assert!(
        sink.skipped[0]
            .reason
            .contains("not a readable .xlsx workbook"),
        "{:?}",
        sink.skipped
    );
    assert_eq!(check_unpacked_size(&bomb, 4 << 20), Ok(()));
}

/// A zip whose headers claim the entry unpacks to 1 KiB while it really
/// unpacks to 2 MiB: the count is of what inflates, not of what is declared.
#[test]
fn a_lying_declared_size_does_not_pass_the_cap() {
    let mut bomb = zip_with("xl/sharedStrings.xml", &vec![b'a'; 2 << 20]);
    let declared: u32 = 1024;
    let mut patched = 0;
    // Local file header (PK\x03\x04): uncompressed size at offset 22;
    // central directory entry (PK\x01\x02): at offset 24.
    for (sig, offset) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
        let at = bomb.windows(4).position(|w| w == sig).expect("zip header");
        bomb[at + offset..at + offset + 4].copy_from_slice(&declared.to_le_bytes());
        patched += 1;
    }
    assert_eq!(patched, 2);
    let zip = zip::ZipArchive::new(Cursor::new(&bomb[..])).expect("still a zip");
    assert_eq!(zip.decompressed_size(), Some(1024), "the lie is in place");
    let err = check_unpacked_size(&bomb, 1 << 20).expect_err("must not pass");
    assert!(err.contains("unpacks to more than 1 MiB"), "{err}");
}

#[test]
fn damaged_files_are_reported_not_panicked_on() {
    let good = clerk_workbook();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"PK\x03\x04 not really".to_vec(),
            "not a readable .xlsx workbook",
        ),
        (
            good[..good.len() / 2].to_vec(),
            "not a readable .xlsx workbook",
        ),
        (
            zip_with("hello.txt", b"hi"),
            "not a readable .xlsx workbook",
        ),
    ];
    for (bytes, want) in cases {
        let p = run("x.xlsx", &bytes);
        assert!(p.rules.is_empty());
        assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
        assert!(p.skipped[0].reason.contains(want), "{:?}", p.skipped);
    }
}
