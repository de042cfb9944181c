//! Sans-IO ClientHello reader: given the bytes a client has sent so far,
//! say whether they hold a whole ClientHello (and its SNI), need more, or
//! are not TLS at all. Nothing is consumed or decrypted: the TLS front
//! forwards the very bytes it read to the origin.
//!
//! The hello may span several TLS records (post-quantum key shares make it
//! larger than one TCP segment, and some clients fragment it on purpose)
//! and any number of reads; a ChangeCipherSpec or early data may follow it
//! in the same read. Record framing and the hello body are parsed with
//! `tls-parser`; only the 4-byte handshake header and the record
//! reassembly are done here, as tls-parser parses one record at a time.

use thiserror::Error;
use tls_parser::{
    TlsExtension, TlsRecordType, parse_tls_extension_sni_content, parse_tls_extension_unknown,
    parse_tls_handshake_client_hello, parse_tls_record_header,
};

/// The most bytes buffered while waiting for a whole ClientHello (record
/// headers included). Real hellos are under 2 KB, or about 1.8 KB more
/// with an ML-KEM key share; 16 KB leaves room for large PSK tickets and
/// bounds what a client can make the front hold.
pub(crate) const MAX_HELLO_BYTES: usize = 16 * 1024;

/// The largest plaintext record body TLS allows (RFC 8446 §5.1).
const MAX_RECORD_BODY: usize = 1 << 14;
const RECORD_HEADER: usize = 5;
const HANDSHAKE_HEADER: usize = 4;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const SNI_HOST_NAME: u8 = 0;

/// What the bytes read so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HelloRead {
    /// A prefix of a ClientHello: read more (within the deadline and
    /// [`MAX_HELLO_BYTES`]).
    NeedMore,
    /// A whole ClientHello. `sni` is its `server_name` host name,
    /// lower-cased, without a trailing dot; `None` when it has none.
    Hello { sni: Option<String> },
    /// Not a ClientHello the front can route: close the connection.
    NotTls(NotTls),
}

/// Why the bytes are not a routable ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum NotTls {
    #[error("first record is not a TLS handshake (content type {0:#04x})")]
    NotHandshake(u8),
    #[error("record version {0:#06x} is not TLS")]
    BadRecordVersion(u16),
    #[error("a record of content type {0:#04x} interrupts the ClientHello")]
    Interleaved(u8),
    #[error("record of {0} bytes is longer than TLS allows")]
    RecordTooLong(usize),
    #[error("empty handshake record")]
    EmptyRecord,
    #[error("first handshake message is of type {0}, not a ClientHello")]
    NotClientHello(u8),
    #[error("ClientHello needs more than {MAX_HELLO_BYTES} bytes")]
    TooLarge,
    #[error("malformed ClientHello")]
    Malformed,
    #[error("malformed server_name extension")]
    BadServerName,
}

impl NotTls {
    /// A fixed label per reason, for logs and metric labels.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            NotTls::NotHandshake(_) => "not_handshake",
            NotTls::BadRecordVersion(_) => "bad_record_version",
            NotTls::Interleaved(_) => "interleaved",
            NotTls::RecordTooLong(_) => "record_too_long",
            NotTls::EmptyRecord => "empty_record",
            NotTls::NotClientHello(_) => "not_client_hello",
            NotTls::TooLarge => "too_large",
            NotTls::Malformed => "malformed",
            NotTls::BadServerName => "bad_server_name",
        }
    }
}

/// Read the ClientHello at the start of `buf` (everything the client has
/// sent so far). Pure and cheap to call again after every read: the work
/// is linear in `buf.len()`, which is at most [`MAX_HELLO_BYTES`] plus one
/// read.
pub(crate) fn parse_client_hello(buf: &[u8]) -> HelloRead {
    match reassemble(buf) {
        Ok(Some(body)) => match read_sni(&body) {
            Ok(sni) => HelloRead::Hello { sni },
            Err(e) => HelloRead::NotTls(e),
        },
        Ok(None) if buf.len() >= MAX_HELLO_BYTES => HelloRead::NotTls(NotTls::TooLarge),
        Ok(None) => HelloRead::NeedMore,
        Err(e) => HelloRead::NotTls(e),
    }
}

/// The ClientHello body (after its handshake header) once every record
/// carrying it has arrived; `None` while some is missing. Checks what can
/// be checked on a prefix, so that garbage is refused at its first bytes
/// rather than after a deadline. Nothing is copied until the hello is
/// whole: a client dribbling its hello byte by byte costs one walk over
/// the record headers per read, not a copy of everything read so far.
fn reassemble(buf: &[u8]) -> Result<Option<Vec<u8>>, NotTls> {
    // The first handshake bytes (type and length), gathered across records.
    let mut header = [0u8; HANDSHAKE_HEADER];
    let mut header_have = 0usize;
    // Handshake bytes in the whole records read so far.
    let mut gathered = 0usize;
    let mut off = 0usize;
    loop {
        let rest = &buf[off..];
        let Some(&content_type) = rest.first() else {
            return Ok(None);
        };
        if content_type != TlsRecordType::Handshake.0 {
            return Err(if off == 0 {
                NotTls::NotHandshake(content_type)
            } else {
                NotTls::Interleaved(content_type)
            });
        }
        // Every TLS version (1.0 to 1.3, and SSL 3.0) has major version 3
        // in the record header.
        if rest.len() >= 2 && rest[1] != 3 {
            let minor = rest.get(2).copied().unwrap_or(0);
            return Err(NotTls::BadRecordVersion(u16::from_be_bytes([
                rest[1], minor,
            ])));
        }
        if rest.len() < RECORD_HEADER {
            return Ok(None);
        }
        let (_, record) = parse_tls_record_header(rest).map_err(|_| NotTls::Malformed)?;
        let len = usize::from(record.len);
        if len == 0 {
            // RFC 8446 §5.1: no zero-length handshake fragments.
            return Err(NotTls::EmptyRecord);
        }
        if len > MAX_RECORD_BODY {
            return Err(NotTls::RecordTooLong(len));
        }
        let records_end = off + RECORD_HEADER + len;
        if records_end > MAX_HELLO_BYTES {
            return Err(NotTls::TooLarge);
        }
        // Check the handshake header as soon as its bytes are in, even from
        // a record still arriving.
        let arriving = &rest[RECORD_HEADER..rest.len().min(RECORD_HEADER + len)];
        for &b in arriving.iter().take(HANDSHAKE_HEADER - header_have) {
            header[header_have] = b;
            header_have += 1;
        }
        if header_have >= 1 && header[0] != HANDSHAKE_CLIENT_HELLO {
            return Err(NotTls::NotClientHello(header[0]));
        }
        let total = (header_have == HANDSHAKE_HEADER).then(|| HANDSHAKE_HEADER + u24(&header[1..]));
        if let Some(total) = total {
            // A hello longer than the records so far needs at least one
            // more record header, and must still fit.
            let in_records = gathered + len;
            if total > in_records
                && records_end + RECORD_HEADER + (total - in_records) > MAX_HELLO_BYTES
            {
                return Err(NotTls::TooLarge);
            }
        }
        if arriving.len() < len {
            return Ok(None);
        }
        gathered += len;
        off = records_end;
        if let Some(total) = total
            && gathered >= total
        {
            return Ok(Some(collect(&buf[..off], total)));
        }
    }
}

/// The first `total` handshake bytes of the whole records in `records`,
/// without the handshake header.
fn collect(records: &[u8], total: usize) -> Vec<u8> {
    let mut handshake = Vec::with_capacity(total);
    let mut rest = records;
    while rest.len() >= RECORD_HEADER && handshake.len() < total {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        let end = (RECORD_HEADER + len).min(rest.len());
        let take = (end - RECORD_HEADER).min(total - handshake.len());
        handshake.extend_from_slice(&rest[RECORD_HEADER..RECORD_HEADER + take]);
        rest = &rest[end..];
    }
    handshake.drain(..HANDSHAKE_HEADER.min(handshake.len()));
    handshake
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// The `server_name` host name of a ClientHello body.
fn read_sni(body: &[u8]) -> Result<Option<String>, NotTls> {
    let (rest, hello) = parse_tls_handshake_client_hello(body).map_err(|_| NotTls::Malformed)?;
    let Some(mut extensions) = hello.ext else {
        // tls-parser reads an extension block that does not fit as none.
        return if rest.is_empty() {
            Ok(None)
        } else {
            Err(NotTls::Malformed)
        };
    };
    // Walk the extensions generically (type, length, bytes) and parse only
    // server_name: a strict parser of every extension would refuse hellos
    // carrying extensions newer than it.
    while !extensions.is_empty() {
        let (rest, ext) = parse_tls_extension_unknown(extensions).map_err(|_| NotTls::Malformed)?;
        extensions = rest;
        let TlsExtension::Unknown(kind, data) = ext else {
            return Err(NotTls::Malformed);
        };
        if kind.0 != EXTENSION_SERVER_NAME {
            continue;
        }
        let (_, sni) = parse_tls_extension_sni_content(data).map_err(|_| NotTls::BadServerName)?;
        let TlsExtension::SNI(names) = sni else {
            return Err(NotTls::BadServerName);
        };
        return match names.iter().find(|(t, _)| t.0 == SNI_HOST_NAME) {
            Some((_, name)) => host_name(name).map(Some),
            None => Ok(None),
        };
    }
    Ok(None)
}

/// A `server_name` as the policy sees it: ASCII letters, digits, `-`, `_`
/// and dots, lower-cased, one trailing dot removed, no empty label, at
/// most 253 characters. RFC 6066 §3 makes it an ASCII DNS name (IDNs in
/// their A-label form); anything else cannot name a host the front steered.
fn host_name(raw: &[u8]) -> Result<String, NotTls> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    let valid = !raw.is_empty()
        && raw.len() <= 253
        && raw.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(NotTls::BadServerName);
    }
    Ok(String::from_utf8_lossy(raw).to_ascii_lowercase())
}

/// The fuzz target's check (`fuzz/fuzz_targets/tls_client_hello.rs`) and
/// the property tests': the reader never panics, and its verdict only
/// moves forward as bytes arrive: every prefix of a buffer read as a hello
/// reads as "need more" or as the same verdict.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_prefix_consistency(data: &[u8]) {
    let data = &data[..data.len().min(MAX_HELLO_BYTES + 64)];
    let whole = parse_client_hello(data);
    if let HelloRead::Hello { sni: Some(sni) } = &whole {
        assert!(
            sni.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)),
            "{sni:?}"
        );
    }
    // Prefixes at a coarse stride plus the last few bytes keep the check
    // linear enough for a fuzzer.
    let stride = (data.len() / 64).max(1);
    let cuts = (0..data.len())
        .step_by(stride)
        .chain(data.len().saturating_sub(8)..data.len());
    for cut in cuts {
        let part = parse_client_hello(&data[..cut]);
        match (&part, &whole) {
            (HelloRead::NeedMore, _) => {}
            // A hello complete in a prefix is the same hello.
            (HelloRead::Hello { .. }, HelloRead::Hello { .. }) => assert_eq!(part, whole),
            // Refused early: refused the same way once everything is in,
            // except that a cap reached later may be reported instead.
            (HelloRead::NotTls(_), HelloRead::NotTls(_)) => {}
            _ => panic!("prefix of {cut} bytes reads {part:?}, the whole {whole:?}"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    /// A real ClientHello as rustls (TLS 1.3 and 1.2, ring) writes it.
    pub(crate) fn rustls_hello(server_name: &str, sni: bool) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.enable_sni = sni;
        let name = rustls_pki_types::ServerName::try_from(server_name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    /// The handshake bytes of single-record `hello`, re-framed as records
    /// of the given sizes (the last one takes the rest).
    pub(crate) fn reframe(hello: &[u8], sizes: &[usize]) -> Vec<u8> {
        let handshake = &hello[RECORD_HEADER..];
        let mut out = Vec::new();
        let mut rest = handshake;
        for &size in sizes {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(size.clamp(1, rest.len()));
            out.extend_from_slice(&[0x16, 0x03, 0x01]);
            out.extend_from_slice(&(now.len() as u16).to_be_bytes());
            out.extend_from_slice(now);
            rest = later;
        }
        if !rest.is_empty() {
            out.extend_from_slice(&[0x16, 0x03, 0x01]);
            out.extend_from_slice(&(rest.len() as u16).to_be_bytes());
            out.extend_from_slice(rest);
        }
        out
    }

    /// A minimal hand-built ClientHello record with `extensions`.
    fn hello_with_extensions(extensions: &[u8]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(extensions);
        let mut handshake = vec![HANDSHAKE_CLIENT_HELLO];
        handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    fn sni_extension(name: &[u8]) -> Vec<u8> {
        let mut list = vec![SNI_HOST_NAME];
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        let mut ext = EXTENSION_SERVER_NAME.to_be_bytes().to_vec();
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(&data);
        ext
    }

    fn sni(name: &str) -> HelloRead {
        HelloRead::Hello {
            sni: Some(name.to_string()),
        }
    }

    #[test]
    fn a_rustls_hello_whole_and_byte_by_byte() {
        let hello = rustls_hello("www.Example.com", true);
        assert_eq!(parse_client_hello(&hello), sni("www.example.com"));
        for cut in 0..hello.len() {
            assert_eq!(
                parse_client_hello(&hello[..cut]),
                HelloRead::NeedMore,
                "{cut}"
            );
        }
    }

    #[test]
    fn a_hello_split_over_records_at_every_point() {
        let hello = rustls_hello("split.example", true);
        let handshake_len = hello.len() - RECORD_HEADER;
        for first in 1..handshake_len {
            let framed = reframe(&hello, &[first]);
            assert_eq!(parse_client_hello(&framed), sni("split.example"), "{first}");
            // Cut inside the second record: still waiting.
            assert_eq!(
                parse_client_hello(&framed[..framed.len() - 1]),
                HelloRead::NeedMore
            );
        }
        // One byte per record: 5 bytes of header for each, within the cap
        // for a small hello.
        let tiny = hello_with_extensions(&sni_extension(b"a.example"));
        let framed = reframe(&tiny, &vec![1; tiny.len()]);
        assert_eq!(parse_client_hello(&framed), sni("a.example"));
    }

    /// Hellos of OpenSSL's `s_client` (the fuzz seeds).
    #[test]
    fn openssl_hellos() {
        let seeds: &[(&[u8], HelloRead)] = &[
            (
                include_bytes!("../../../fuzz/seeds/tls_client_hello/openssl_sni"),
                sni("www.example.com"),
            ),
            (
                include_bytes!("../../../fuzz/seeds/tls_client_hello/openssl_tls12"),
                sni("a.example"),
            ),
            (
                include_bytes!("../../../fuzz/seeds/tls_client_hello/two_records"),
                sni("www.example.com"),
            ),
            (
                include_bytes!("../../../fuzz/seeds/tls_client_hello/openssl_no_sni"),
                HelloRead::Hello { sni: None },
            ),
            (
                include_bytes!("../../../fuzz/seeds/tls_client_hello/http_get"),
                HelloRead::NotTls(NotTls::NotHandshake(b'G')),
            ),
        ];
        for (bytes, want) in seeds {
            assert_eq!(&parse_client_hello(bytes), want);
            check_prefix_consistency(bytes);
        }
    }

    #[test]
    fn what_follows_the_hello_is_left_alone() {
        let mut bytes = rustls_hello("ccs.example", true);
        bytes.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]); // ChangeCipherSpec
        bytes.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x03, 1, 2, 3]); // early data
        assert_eq!(parse_client_hello(&bytes), sni("ccs.example"));
    }

    #[test]
    fn no_sni() {
        let hello = rustls_hello("nosni.example", false);
        assert_eq!(parse_client_hello(&hello), HelloRead::Hello { sni: None });
        // An IP address is never sent as SNI (RFC 6066 §3).
        let hello = rustls_hello("192.0.2.1", true);
        assert_eq!(parse_client_hello(&hello), HelloRead::Hello { sni: None });
        // No extensions at all (an SSL 3.0-style hello).
        let mut bare = hello_with_extensions(&[]);
        let body_end = bare.len() - 2;
        bare.truncate(body_end);
        bare[3..5].copy_from_slice(&((body_end - RECORD_HEADER) as u16).to_be_bytes());
        bare[6..9].copy_from_slice(&((body_end - RECORD_HEADER - 4) as u32).to_be_bytes()[1..]);
        assert_eq!(parse_client_hello(&bare), HelloRead::Hello { sni: None });
        // An extension block longer than the hello is no hello.
        let mut cut = hello_with_extensions(&sni_extension(b"a.example"));
        let at = cut.len() - sni_extension(b"a.example").len() - 2;
        cut[at..at + 2].copy_from_slice(&0x0400u16.to_be_bytes());
        assert_eq!(
            parse_client_hello(&cut),
            HelloRead::NotTls(NotTls::Malformed)
        );
    }

    #[test]
    fn server_names_are_normalised_or_refused() {
        let table: &[(&[u8], HelloRead)] = &[
            (b"WWW.Example.COM", sni("www.example.com")),
            (b"example.com.", sni("example.com")),
            (b"under_score.example", sni("under_score.example")),
            (b"xn--bcher-kva.example", sni("xn--bcher-kva.example")),
            (b"", HelloRead::NotTls(NotTls::BadServerName)),
            (b".", HelloRead::NotTls(NotTls::BadServerName)),
            (b"a..b", HelloRead::NotTls(NotTls::BadServerName)),
            (b"example.com..", HelloRead::NotTls(NotTls::BadServerName)),
            (
                b"b\xc3\xbccher.example",
                HelloRead::NotTls(NotTls::BadServerName),
            ),
            (b"a b.example", HelloRead::NotTls(NotTls::BadServerName)),
            (b"a\0.example", HelloRead::NotTls(NotTls::BadServerName)),
            (&[b'a'; 64], HelloRead::NotTls(NotTls::BadServerName)),
        ];
        for (name, want) in table {
            let hello = hello_with_extensions(&sni_extension(name));
            assert_eq!(&parse_client_hello(&hello), want, "{name:?}");
        }
        let long: Vec<u8> = [
            &[b'a'; 63][..],
            b".",
            &[b'b'; 63],
            b".",
            &[b'c'; 63],
            b".",
            &[b'd'; 61],
        ]
        .concat();
        assert_eq!(long.len(), 253);
        let hello = hello_with_extensions(&sni_extension(&long));
        assert!(matches!(
            parse_client_hello(&hello),
            HelloRead::Hello { sni: Some(_) }
        ));
        let too_long = [&long[..], b"d"].concat();
        let hello = hello_with_extensions(&sni_extension(&too_long));
        assert_eq!(
            parse_client_hello(&hello),
            HelloRead::NotTls(NotTls::BadServerName)
        );
    }

    #[test]
    fn garbage_is_refused_at_its_first_bytes() {
        let table: &[(&[u8], HelloRead)] = &[
            (b"", HelloRead::NeedMore),
            (b"\x16", HelloRead::NeedMore),
            (b"\x16\x03\x01\x02", HelloRead::NeedMore),
            (
                b"GET / HTTP/1.1\r\n",
                HelloRead::NotTls(NotTls::NotHandshake(b'G')),
            ),
            // SSLv2-compatible hello: no extensions, so no SNI to route by.
            (
                b"\x80\x2e\x01\x03\x01",
                HelloRead::NotTls(NotTls::NotHandshake(0x80)),
            ),
            (
                b"\x15\x03\x03\x00\x02\x02\x28",
                HelloRead::NotTls(NotTls::NotHandshake(0x15)),
            ),
            (
                b"\x16\x02",
                HelloRead::NotTls(NotTls::BadRecordVersion(0x0200)),
            ),
            (
                b"\x16\xfe\xfd",
                HelloRead::NotTls(NotTls::BadRecordVersion(0xfefd)),
            ),
            (
                b"\x16\x03\x01\x00\x00",
                HelloRead::NotTls(NotTls::EmptyRecord),
            ),
            (
                b"\x16\x03\x01\x40\x01",
                HelloRead::NotTls(NotTls::RecordTooLong(0x4001)),
            ),
            // A ServerHello where a ClientHello belongs: known from its
            // first byte, before the record is in.
            (
                b"\x16\x03\x03\x00\x30\x02",
                HelloRead::NotTls(NotTls::NotClientHello(2)),
            ),
            // A hello that says it is larger than the cap.
            (
                b"\x16\x03\x01\x01\x00\x01\x00\x40\x00",
                HelloRead::NotTls(NotTls::TooLarge),
            ),
            // Body that is no ClientHello (session id longer than 32).
            (
                b"\x16\x03\x01\x00\x27\x01\x00\x00\x23\x03\x03\
                  AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\xff",
                HelloRead::NotTls(NotTls::Malformed),
            ),
        ];
        for (bytes, want) in table {
            assert_eq!(&parse_client_hello(bytes), want, "{bytes:?}");
        }
    }

    #[test]
    fn another_record_type_inside_the_hello_is_refused() {
        let hello = rustls_hello("x.example", true);
        let framed = reframe(&hello, &[40]);
        let first_record = RECORD_HEADER + 40;
        let mut bytes = framed[..first_record].to_vec();
        bytes.extend_from_slice(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
        assert_eq!(
            parse_client_hello(&bytes),
            HelloRead::NotTls(NotTls::Interleaved(0x15))
        );
    }

    #[test]
    fn the_buffer_is_capped_at_16_kb() {
        // A 16000-byte hello fits in one record, but not in 100-byte records:
        // 160 more headers push it over.
        let padding = vec![0u8; 16_000];
        let mut ext = 21u16.to_be_bytes().to_vec(); // padding extension
        ext.extend_from_slice(&(padding.len() as u16).to_be_bytes());
        ext.extend_from_slice(&padding);
        ext.extend_from_slice(&sni_extension(b"big.example"));
        let hello = hello_with_extensions(&ext);
        assert_eq!(parse_client_hello(&hello), sni("big.example"));
        let framed = reframe(&hello, &vec![100; 200]);
        assert!(framed.len() > MAX_HELLO_BYTES);
        // Refused as soon as the records read so far prove it cannot fit,
        // and never later than at the cap.
        let verdict_at_cap = parse_client_hello(&framed[..MAX_HELLO_BYTES]);
        assert_eq!(verdict_at_cap, HelloRead::NotTls(NotTls::TooLarge));
        // A client sending endless valid-looking records is cut off at
        // the cap too.
        let mut endless = vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x3f, 0xff];
        while endless.len() < MAX_HELLO_BYTES + 10 {
            endless.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x01, 0x00]);
        }
        assert_eq!(
            parse_client_hello(&endless),
            HelloRead::NotTls(NotTls::TooLarge)
        );
        for cut in (0..MAX_HELLO_BYTES).step_by(997) {
            assert!(!matches!(
                parse_client_hello(&endless[..cut]),
                HelloRead::Hello { .. }
            ));
        }
    }

    proptest! {
        #[test]
        fn any_framing_of_a_hello_reads_the_same(
            sizes in proptest::collection::vec(1usize..300, 0..12),
            trailer in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let hello = rustls_hello("prop.example", true);
            let mut framed = reframe(&hello, &sizes);
            framed.extend_from_slice(&trailer);
            prop_assert_eq!(parse_client_hello(&framed), sni("prop.example"));
            check_prefix_consistency(&framed);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            check_prefix_consistency(&bytes);
        }

        #[test]
        fn damaged_hellos_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut hello = rustls_hello("damaged.example", true);
            for (at, byte) in flips {
                let i = at.index(hello.len());
                hello[i] = byte;
            }
            check_prefix_consistency(&hello);
        }
    }
}
