//! Spreadsheets as clerks save them (`.xlsx`): the first sheet, read with
//! calamine, with the same header rules as a CSV file (see `csv.rs`); a
//! rule's line is the sheet's row number.
//!
//! A workbook is a zip archive, so a small file can unpack to gigabytes.
//! Before calamine sees it, every entry is inflated into nothing and
//! counted (the sizes the archive declares can lie), and the workbook is
//! refused past [`MAX_DECOMPRESSED`].

use std::borrow::Cow;
use std::io::{Cursor, Read};

use calamine::{Data, Reader, Xlsx};

use super::{Sink, csv, line_no};

/// What a workbook may unpack to, all entries together. A million-row
/// sheet of domains with decisions is about 150 MiB unpacked.
pub(crate) const MAX_DECOMPRESSED: u64 = 256 << 20;

pub(super) fn parse(bytes: &[u8], sink: &mut Sink) {
    parse_capped(bytes, MAX_DECOMPRESSED, sink);
}

fn parse_capped(bytes: &[u8], cap: u64, sink: &mut Sink) {
    if let Err(reason) = check_unpacked_size(bytes, cap) {
        return sink.skip(1, reason);
    }
    let mut book: Xlsx<_> = match Xlsx::new(Cursor::new(bytes)) {
        Ok(book) => book,
        Err(e) => return sink.skip(1, format!("not a readable .xlsx workbook: {e}")),
    };
    let range = match book.worksheet_range_at(0) {
        None => return sink.skip(1, "the workbook has no sheet"),
        Some(Err(e)) => return sink.skip(1, format!("the first sheet cannot be read: {e}")),
        Some(Ok(range)) => range,
    };
    let first_row = range.start().map_or(0, |(row, _)| row as usize);
    let rows = range.rows().enumerate().map(|(i, cells)| {
        (
            line_no(first_row.saturating_add(i)),
            cells.iter().map(cell_text).collect::<Vec<_>>(),
        )
    });
    csv::parse_rows(rows, sink);
}

/// Inflate every entry into a sink, counting, so that neither a declared
/// size nor a lying one lets the workbook unpack to more than `cap`.
fn check_unpacked_size(bytes: &[u8], cap: u64) -> Result<(), String> {
    let too_big = || {
        format!(
            "the workbook unpacks to more than {} MiB; split it or save it as CSV",
            cap >> 20
        )
    };
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("not a readable .xlsx workbook (not a zip archive: {e})"))?;
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip
            .by_index(i)
            .map_err(|e| format!("damaged .xlsx workbook: {e}"))?;
        if total.saturating_add(entry.size()) > cap {
            return Err(too_big());
        }
        let budget = cap - total;
        let unpacked = std::io::copy(&mut entry.take(budget + 1), &mut std::io::sink())
            .map_err(|e| format!("damaged .xlsx workbook: {e}"))?;
        if unpacked > budget {
            return Err(too_big());
        }
        total += unpacked;
    }
    Ok(())
}

/// A cell as the text a CSV export of it would hold.
fn cell_text(cell: &Data) -> Cow<'_, str> {
    match cell {
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => Cow::Borrowed(s),
        Data::Int(i) => Cow::Owned(i.to_string()),
        // Order numbers typed as numbers come back as floats.
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => Cow::Owned(format!("{f:.0}")),
        Data::Float(f) => Cow::Owned(f.to_string()),
        Data::Bool(b) => Cow::Borrowed(if *b { "TRUE" } else { "FALSE" }),
        Data::DateTime(dt) if dt.is_datetime() => {
            let (y, mo, d, h, mi, s, _) = dt.to_ymd_hms_milli();
            Cow::Owned(if (h, mi, s) == (0, 0, 0) {
                format!("{y:04}-{mo:02}-{d:02}")
            } else {
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
            })
        }
        Data::DateTime(dt) => Cow::Owned(dt.as_f64().to_string()),
        Data::Error(e) => Cow::Owned(e.to_string()),
        Data::Empty => Cow::Borrowed(""),
    }
}

#[cfg(test)]
mod tests;
