//! DNS wire format on the hot path, without allocation: request parsing
//! (header, the one question, EDNS OPT), a scanner for upstream responses
//! that finds every TTL, and the small writers and patchers the answer
//! paths share. Anything off the hot path may use hickory-proto instead.

use thiserror::Error;

pub(crate) const HEADER_LEN: usize = 12;
/// Largest UDP payload we send or advertise (the DNS flag day 2020 value).
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;
/// Largest encoded name (RFC 1035 §2.3.4).
pub(crate) const MAX_NAME: usize = 255;

pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_CNAME: u16 = 5;
pub(crate) const TYPE_SOA: u16 = 6;
pub(crate) const TYPE_AAAA: u16 = 28;
pub(crate) const TYPE_OPT: u16 = 41;
pub(crate) const CLASS_IN: u16 = 1;
/// RFC 8914 Extended DNS Error option code.
pub(crate) const OPT_EDE: u16 = 15;

pub(crate) const FLAG_QR: u16 = 0x8000;
pub(crate) const FLAG_AA: u16 = 0x0400;
pub(crate) const FLAG_TC: u16 = 0x0200;
pub(crate) const FLAG_RD: u16 = 0x0100;
pub(crate) const FLAG_RA: u16 = 0x0080;
pub(crate) const FLAG_AD: u16 = 0x0020;
pub(crate) const FLAG_CD: u16 = 0x0010;
const OPCODE_MASK: u16 = 0x7800;
const RCODE_MASK: u16 = 0x000f;

pub(crate) const RCODE_NOERROR: u16 = 0;
pub(crate) const RCODE_FORMERR: u16 = 1;
pub(crate) const RCODE_SERVFAIL: u16 = 2;
pub(crate) const RCODE_NXDOMAIN: u16 = 3;
pub(crate) const RCODE_NOTIMP: u16 = 4;
pub(crate) const RCODE_REFUSED: u16 = 5;

/// Why a request gets no normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum RequestError {
    /// Not even a header: nothing to answer to.
    #[error("shorter than a DNS header")]
    Short,
    /// A response sent to us (possibly reflected): never answer it.
    #[error("QR bit set")]
    Response,
    /// The header is fine, the body is not: FORMERR.
    #[error("malformed request: {0}")]
    FormErr(&'static str),
    /// An opcode other than QUERY: NOTIMP.
    #[error("opcode {0} not implemented")]
    NotImp(u8),
}

impl RequestError {
    /// True when the packet must be dropped silently.
    pub(crate) fn is_drop(&self) -> bool {
        matches!(self, RequestError::Short | RequestError::Response)
    }
}

/// What the client's OPT record said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edns {
    pub payload: u16,
    pub dnssec_ok: bool,
    pub version: u8,
}

/// How a query arrived (one vocabulary for the query path, metrics and
/// the hit log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Udp, Transport::Tcp];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// A parsed query, owning what it needs (so a query waiting for an
/// upstream keeps it without re-parsing the packet). The name is kept three
/// ways: as the client wrote it (for 0x20 echo), lowercased wire form
/// (cache key, upstream query) and lowercased dotted text (the policy).
#[derive(Clone)]
pub(crate) struct Request {
    pub id: u16,
    pub flags: u16,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
    /// The question section as sent: name (case kept), type, class.
    asked: [u8; MAX_NAME + 4],
    asked_len: u16,
    lower: [u8; MAX_NAME],
    lower_len: u8,
    dotted: [u8; MAX_NAME],
    dotted_len: u8,
}

impl Request {
    #[cfg(test)]
    pub(crate) fn rd(&self) -> bool {
        self.flags & FLAG_RD != 0
    }
    pub(crate) fn cd(&self) -> bool {
        self.flags & FLAG_CD != 0
    }
    pub(crate) fn ad(&self) -> bool {
        self.flags & FLAG_AD != 0
    }
    pub(crate) fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }
    /// The question (name, type, class) exactly as the client sent it.
    pub(crate) fn question(&self) -> &[u8] {
        &self.asked[..self.asked_len as usize]
    }
    /// The question name as the client wrote it (wire form).
    pub(crate) fn qname_wire(&self) -> &[u8] {
        &self.asked[..self.asked_len as usize - 4]
    }
    /// The question name, lowercased wire form.
    pub(crate) fn lower_wire(&self) -> &[u8] {
        &self.lower[..self.lower_len as usize]
    }
    /// The question name, lowercased dotted text without trailing dot
    /// (empty for the root).
    pub(crate) fn dotted(&self) -> &[u8] {
        &self.dotted[..self.dotted_len as usize]
    }
    /// The largest UDP answer this client accepts (RFC 6891 §6.2.5, capped at
    /// the flag-day 1232).
    pub(crate) fn udp_limit(&self) -> usize {
        match self.edns {
            None => 512,
            Some(e) => (e.payload as usize).clamp(512, 1232),
        }
    }
}

/// A [`Request`] kept while its question is upstream: the same fields, the
/// three forms of the name packed into one small heap block instead of
/// three 255-octet arrays. A water-torture flood keeps thousands of these
/// waiting, and the inline form (800 octets, copied into the exchange's
/// task more than once) was most of an exchange's memory. The query path
/// itself keeps parsing into the inline [`Request`], which costs no
/// allocation.
#[derive(Clone)]
pub(crate) struct StoredRequest {
    pub id: u16,
    pub flags: u16,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
    /// The question as asked (name, type, class), then the lowercased wire
    /// name, then the dotted name.
    names: Box<[u8]>,
    asked_len: u16,
    lower_len: u8,
}

impl StoredRequest {
    pub(crate) fn new(req: &Request) -> StoredRequest {
        let (asked, lower, dotted) = (req.question(), req.lower_wire(), req.dotted());
        let mut names = Vec::with_capacity(asked.len() + lower.len() + dotted.len());
        names.extend_from_slice(asked);
        names.extend_from_slice(lower);
        names.extend_from_slice(dotted);
        StoredRequest {
            id: req.id,
            flags: req.flags,
            qtype: req.qtype,
            qclass: req.qclass,
            edns: req.edns,
            names: names.into_boxed_slice(),
            asked_len: asked.len() as u16,
            lower_len: lower.len() as u8,
        }
    }

    /// The inline form again, for the answer-writing code that takes one.
    pub(crate) fn expand(&self) -> Request {
        let mut req = Request {
            id: self.id,
            flags: self.flags,
            qtype: self.qtype,
            qclass: self.qclass,
            edns: self.edns,
            asked: [0; MAX_NAME + 4],
            asked_len: 0,
            lower: [0; MAX_NAME],
            lower_len: 0,
            dotted: [0; MAX_NAME],
            dotted_len: 0,
        };
        // Each part came from a Request, so each fits its array.
        let (asked, lower, dotted) = (self.question(), self.lower_wire(), self.dotted());
        if let Some(dst) = req.asked.get_mut(..asked.len()) {
            dst.copy_from_slice(asked);
            req.asked_len = asked.len() as u16;
        }
        if let Some(dst) = req.lower.get_mut(..lower.len()) {
            dst.copy_from_slice(lower);
            req.lower_len = lower.len() as u8;
        }
        if let Some(dst) = req.dotted.get_mut(..dotted.len()) {
            dst.copy_from_slice(dotted);
            req.dotted_len = dotted.len() as u8;
        }
        req
    }

    pub(crate) fn rd(&self) -> bool {
        self.flags & FLAG_RD != 0
    }
    pub(crate) fn cd(&self) -> bool {
        self.flags & FLAG_CD != 0
    }
    pub(crate) fn ad(&self) -> bool {
        self.flags & FLAG_AD != 0
    }
    /// See [`Request::question`].
    pub(crate) fn question(&self) -> &[u8] {
        &self.names[..self.asked_len as usize]
    }
    /// See [`Request::qname_wire`].
    pub(crate) fn qname_wire(&self) -> &[u8] {
        &self.names[..(self.asked_len as usize).saturating_sub(4)]
    }
    /// See [`Request::lower_wire`].
    pub(crate) fn lower_wire(&self) -> &[u8] {
        let start = self.asked_len as usize;
        &self.names[start..start + self.lower_len as usize]
    }
    /// See [`Request::dotted`].
    pub(crate) fn dotted(&self) -> &[u8] {
        &self.names[self.asked_len as usize + self.lower_len as usize..]
    }
}

#[inline]
pub(crate) fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off + 2)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

#[inline]
pub(crate) fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

#[inline]
fn write_u16(b: &mut [u8], off: usize, v: u16) {
    if let Some(s) = b.get_mut(off..off + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

#[inline]
fn write_u32(b: &mut [u8], off: usize, v: u32) {
    if let Some(s) = b.get_mut(off..off + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Parse a query. Never panics; see [`RequestError`] for what to do on error.
pub(crate) fn parse_request(packet: &[u8]) -> Result<Request, RequestError> {
    if packet.len() < HEADER_LEN {
        return Err(RequestError::Short);
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & FLAG_QR != 0 {
        return Err(RequestError::Response);
    }
    let opcode = ((flags & OPCODE_MASK) >> 11) as u8;
    if opcode != 0 {
        return Err(RequestError::NotImp(opcode));
    }
    let qd = u16::from_be_bytes([packet[4], packet[5]]);
    let an = u16::from_be_bytes([packet[6], packet[7]]);
    let ns = u16::from_be_bytes([packet[8], packet[9]]);
    let ar = u16::from_be_bytes([packet[10], packet[11]]);
    if qd != 1 {
        return Err(RequestError::FormErr("question count is not 1"));
    }
    let mut req = Request {
        id,
        flags,
        qtype: 0,
        qclass: 0,
        edns: None,
        asked: [0; MAX_NAME + 4],
        asked_len: 0,
        lower: [0; MAX_NAME],
        lower_len: 0,
        dotted: [0; MAX_NAME],
        dotted_len: 0,
    };
    // The question name must be uncompressed: there is nothing before it to point at.
    let mut off = HEADER_LEN;
    let mut dl = 0usize;
    loop {
        let Some(&len) = packet.get(off) else {
            return Err(RequestError::FormErr("question name runs past the end"));
        };
        if len & 0xc0 != 0 {
            return Err(RequestError::FormErr(
                "compressed or extended label in question",
            ));
        }
        let len = len as usize;
        let wire_len = off - HEADER_LEN;
        if wire_len + 1 + len > MAX_NAME {
            return Err(RequestError::FormErr(
                "question name longer than 255 octets",
            ));
        }
        req.lower[wire_len] = len as u8;
        if len == 0 {
            off += 1;
            break;
        }
        let Some(label) = packet.get(off + 1..off + 1 + len) else {
            return Err(RequestError::FormErr("question name runs past the end"));
        };
        if dl > 0 {
            req.dotted[dl] = b'.';
            dl += 1;
        }
        for (i, &c) in label.iter().enumerate() {
            let l = c.to_ascii_lowercase();
            req.lower[wire_len + 1 + i] = l;
            req.dotted[dl + i] = l;
        }
        dl += len;
        off += 1 + len;
    }
    req.lower_len = (off - HEADER_LEN) as u8;
    req.dotted_len = dl as u8;
    let (Some(qtype), Some(qclass)) = (read_u16(packet, off), read_u16(packet, off + 2)) else {
        return Err(RequestError::FormErr("question truncated"));
    };
    // The name is at most 255 octets (checked above), so this fits.
    let asked = &packet[HEADER_LEN..off + 4];
    req.asked[..asked.len()].copy_from_slice(asked);
    req.asked_len = asked.len() as u16;
    req.qtype = qtype;
    req.qclass = qclass;
    off += 4;
    // Queries rarely carry answer/authority records, but tolerate them.
    for _ in 0..(an as usize + ns as usize) {
        off = skip_rr(packet, off).ok_or(RequestError::FormErr("bad record in request"))?;
    }
    for _ in 0..ar {
        let name_end =
            skip_name(packet, off).ok_or(RequestError::FormErr("bad additional record"))?;
        let rtype =
            read_u16(packet, name_end).ok_or(RequestError::FormErr("bad additional record"))?;
        if rtype == TYPE_OPT {
            if req.edns.is_some() {
                return Err(RequestError::FormErr("more than one OPT record"));
            }
            if name_end != off + 1 || packet[off] != 0 {
                return Err(RequestError::FormErr("OPT owner is not the root"));
            }
            let (Some(payload), Some(ttl)) = (
                read_u16(packet, name_end + 2),
                read_u32(packet, name_end + 4),
            ) else {
                return Err(RequestError::FormErr("truncated OPT record"));
            };
            req.edns = Some(Edns {
                payload,
                dnssec_ok: ttl & 0x8000 != 0,
                version: (ttl >> 16) as u8,
            });
        }
        off = skip_rr(packet, off).ok_or(RequestError::FormErr("bad additional record"))?;
    }
    Ok(req)
}

/// Offset just past the (possibly compressed) name at `off`.
pub(crate) fn skip_name(msg: &[u8], mut off: usize) -> Option<usize> {
    let mut total = 0usize;
    loop {
        let len = *msg.get(off)?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    return Some(off + 1);
                }
                total += len as usize + 1;
                if total > MAX_NAME {
                    return None;
                }
                off += 1 + len as usize;
                if off > msg.len() {
                    return None;
                }
            }
            0xc0 => {
                msg.get(off + 1)?;
                return Some(off + 2);
            }
            _ => return None,
        }
    }
}

/// Offset just past the resource record at `off`.
pub(crate) fn skip_rr(msg: &[u8], off: usize) -> Option<usize> {
    let n = skip_name(msg, off)?;
    let rdlen = read_u16(msg, n + 8)? as usize;
    let end = n + 10 + rdlen;
    if end > msg.len() {
        return None;
    }
    Some(end)
}

/// Read the name at `off`, following compression pointers, into `out` as
/// lowercased wire form. Returns (wire length, offset past the name where
/// it started).
pub(crate) fn read_name_wire(
    msg: &[u8],
    mut off: usize,
    out: &mut [u8; MAX_NAME],
) -> Option<(usize, usize)> {
    let mut len = 0usize;
    let mut next = None;
    // Pointers must go strictly backwards, which bounds the loop.
    let mut limit = off;
    loop {
        let l = *msg.get(off)?;
        match l & 0xc0 {
            0x00 => {
                let l = l as usize;
                if len + 1 + l > MAX_NAME {
                    return None;
                }
                out[len] = l as u8;
                if l == 0 {
                    return Some((len + 1, next.unwrap_or(off + 1)));
                }
                let label = msg.get(off + 1..off + 1 + l)?;
                for (i, c) in label.iter().enumerate() {
                    out[len + 1 + i] = c.to_ascii_lowercase();
                }
                len += 1 + l;
                off += 1 + l;
            }
            0xc0 => {
                let p = (((l & 0x3f) as usize) << 8) | *msg.get(off + 1)? as usize;
                if next.is_none() {
                    next = Some(off + 2);
                }
                if p >= limit {
                    return None;
                }
                limit = p;
                off = p;
            }
            _ => return None,
        }
    }
}

/// Lowercased wire name → dotted text without trailing dot. Returns the length.
pub(crate) fn wire_to_dotted(wire: &[u8], out: &mut [u8; MAX_NAME]) -> usize {
    let mut i = 0usize;
    let mut o = 0usize;
    while let Some(&l) = wire.get(i) {
        let l = l as usize;
        if l == 0 || i + 1 + l > wire.len() {
            break;
        }
        if o > 0 && o < MAX_NAME {
            out[o] = b'.';
            o += 1;
        }
        for &c in &wire[i + 1..i + 1 + l] {
            if o < MAX_NAME {
                out[o] = c;
                o += 1;
            }
        }
        i += 1 + l;
    }
    o
}

/// Wire name → presentation text as asked (case kept, no trailing dot but
/// `.` for the root, RFC
/// 1035 §5.1 escapes for dots, backslashes and non-printable bytes).
pub(crate) fn presentation(wire: &[u8]) -> String {
    let mut s = String::with_capacity(wire.len() + 1);
    let mut i = 0usize;
    while let Some(&l) = wire.get(i) {
        let l = l as usize;
        if l == 0 || i + 1 + l > wire.len() {
            break;
        }
        for &c in &wire[i + 1..i + 1 + l] {
            match c {
                b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                    s.push('\\');
                    s.push(c as char);
                }
                0x21..=0x7e => s.push(c as char),
                _ => s.push_str(&format!("\\{c:03}")),
            }
        }
        s.push('.');
        i += 1 + l;
    }
    if s.is_empty() {
        s.push('.');
    } else {
        s.pop();
    }
    s
}

/// Dotted name → wire form (for tests and config paths, not the hot path).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn dotted_to_wire(name: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(name.len() + 2);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        v.push(label.len().min(63) as u8);
        v.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    v.push(0);
    v
}

/// Where the TTLs and other patchable fields of a response are.
#[derive(Debug, Default, Clone)]
pub(crate) struct ResponseScan {
    pub id: u16,
    pub flags: u16,
    pub qname_end: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub ancount: u16,
    pub nscount: u16,
    /// Offsets of every TTL field except OPT's (which is not a TTL).
    pub ttl_offsets: Vec<u16>,
    /// Smallest TTL of any record (OPT excluded).
    pub min_ttl: Option<u32>,
    /// The first SOA in the authority section: (TTL offset, TTL, MINIMUM).
    pub soa: Option<(usize, u32, u32)>,
    /// Offset of the OPT record's CLASS (= UDP payload size) field.
    pub opt_class_offset: Option<usize>,
    pub has_cname: bool,
}

impl ResponseScan {
    pub(crate) fn rcode(&self) -> u16 {
        self.flags & RCODE_MASK
    }
    pub(crate) fn truncated(&self) -> bool {
        self.flags & FLAG_TC != 0
    }
}

/// Walk a response once. Fails on anything malformed (the caller treats
/// that as no answer from that upstream).
pub(crate) fn scan_response(msg: &[u8]) -> Option<ResponseScan> {
    if msg.len() < HEADER_LEN || msg.len() > u16::MAX as usize {
        return None;
    }
    let mut s = ResponseScan {
        id: read_u16(msg, 0)?,
        flags: read_u16(msg, 2)?,
        ..ResponseScan::default()
    };
    let qd = read_u16(msg, 4)?;
    s.ancount = read_u16(msg, 6)?;
    s.nscount = read_u16(msg, 8)?;
    let ar = read_u16(msg, 10)?;
    if qd != 1 {
        return None;
    }
    let mut off = skip_name(msg, HEADER_LEN)?;
    s.qname_end = off;
    s.qtype = read_u16(msg, off)?;
    s.qclass = read_u16(msg, off + 2)?;
    off += 4;
    let total = s.ancount as usize + s.nscount as usize + ar as usize;
    for i in 0..total {
        let n = skip_name(msg, off)?;
        let rtype = read_u16(msg, n)?;
        let ttl = read_u32(msg, n + 4)?;
        let end = skip_rr(msg, off)?;
        if rtype == TYPE_OPT {
            s.opt_class_offset = Some(n + 2);
        } else {
            s.ttl_offsets.push((n + 4) as u16);
            s.min_ttl = Some(s.min_ttl.map_or(ttl, |m| m.min(ttl)));
            // In usize: the u16 counts may add up past 65535 (fuzzing found
            // the overflow; the record walk itself fails on such a message
            // only later, when the bytes run out).
            let in_authority =
                i >= s.ancount as usize && i < s.ancount as usize + s.nscount as usize;
            // Two root names and five u32 at the least (RFC 1035 §3.3.13);
            // shorter is no SOA to take a negative TTL from.
            let soa_ok = end >= n + 10 + 22;
            if rtype == TYPE_SOA && in_authority && s.soa.is_none() && soa_ok {
                // MINIMUM is the last 4 bytes of the SOA RDATA.
                let minimum = read_u32(msg, end.checked_sub(4)?)?;
                s.soa = Some((n + 4, ttl, minimum));
            }
            if rtype == TYPE_CNAME {
                s.has_cname = true;
            }
        }
        off = end;
    }
    Some(s)
}

/// The owner of the first SOA in the authority section of a scanned
/// response (the zone a negative answer comes from), lowercased dotted
/// text into `out`; returns its length.
pub(crate) fn authority_soa_owner(
    msg: &[u8],
    scan: &ResponseScan,
    out: &mut [u8; MAX_NAME],
) -> Option<usize> {
    scan.soa?;
    let mut off = scan.qname_end + 4;
    for i in 0..(scan.ancount as usize + scan.nscount as usize) {
        let n = skip_name(msg, off)?;
        if i >= scan.ancount as usize && read_u16(msg, n)? == TYPE_SOA {
            let mut w = [0u8; MAX_NAME];
            let (len, _) = read_name_wire(msg, off, &mut w)?;
            return Some(wire_to_dotted(&w[..len], out));
        }
        off = skip_rr(msg, off)?;
    }
    None
}

/// Visit the owner and target of every CNAME in the answer section as
/// lowercased dotted text; stop early when `f` returns `Some`.
pub(crate) fn for_each_cname_name<T>(
    msg: &[u8],
    mut f: impl FnMut(&[u8]) -> Option<T>,
) -> Option<T> {
    let an = read_u16(msg, 6)?;
    let mut off = skip_name(msg, HEADER_LEN)? + 4;
    let mut wire = [0u8; MAX_NAME];
    let mut dotted = [0u8; MAX_NAME];
    for _ in 0..an {
        let n = skip_name(msg, off)?;
        let rtype = read_u16(msg, n)?;
        let end = skip_rr(msg, off)?;
        if rtype == TYPE_CNAME {
            for at in [off, n + 10] {
                let (wl, _) = read_name_wire(msg, at, &mut wire)?;
                let dl = wire_to_dotted(&wire[..wl], &mut dotted);
                if let Some(t) = f(&dotted[..dl]) {
                    return Some(t);
                }
            }
        }
        off = end;
    }
    None
}

/// True when the response's question is the same as ours, ignoring case.
pub(crate) fn question_matches(
    msg: &[u8],
    scan: &ResponseScan,
    lower: &[u8],
    qtype: u16,
    qclass: u16,
) -> bool {
    if scan.qtype != qtype || scan.qclass != qclass {
        return false;
    }
    match msg.get(HEADER_LEN..scan.qname_end) {
        Some(name) => name.len() == lower.len() && name.eq_ignore_ascii_case(lower),
        None => false,
    }
}

// ---------------------------------------------------------------- patching

pub(crate) fn set_id(buf: &mut [u8], id: u16) {
    write_u16(buf, 0, id);
}

/// Decrement every TTL at `offsets` by `elapsed` seconds (not below 0).
pub(crate) fn age_ttls(buf: &mut [u8], offsets: &[u16], elapsed: u32) {
    if elapsed == 0 {
        return;
    }
    for &o in offsets {
        let o = o as usize;
        if let Some(t) = read_u32(buf, o) {
            write_u32(buf, o, t.saturating_sub(elapsed));
        }
    }
}

pub(crate) fn set_ttl(buf: &mut [u8], off: usize, ttl: u32) {
    write_u32(buf, off, ttl);
}

/// Put the client's spelling of the question name back (same length by
/// construction: the caller matched it case-insensitively).
pub(crate) fn copy_qname(buf: &mut [u8], client_qname: &[u8]) {
    if let Some(dst) = buf.get_mut(HEADER_LEN..HEADER_LEN + client_qname.len()) {
        dst.copy_from_slice(client_qname);
    }
}

/// Lower an OPT payload-size field to at most `max`.
pub(crate) fn clamp_opt_payload(buf: &mut [u8], class_off: usize, max: u16) {
    if let Some(v) = read_u16(buf, class_off)
        && v > max
    {
        write_u16(buf, class_off, max);
    }
}

// ---------------------------------------------------------------- writing

/// Start a reply to `req` in `out`: header (ID, opcode, RD, CD copied;
/// QR and RA set) and the client's question verbatim. Counts are 1/0/0/0.
pub(crate) fn begin_reply(out: &mut Vec<u8>, req: &Request, rcode: u16) {
    out.clear();
    let flags =
        FLAG_QR | FLAG_RA | (req.flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)) | (rcode & RCODE_MASK);
    out.extend_from_slice(&req.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(req.question());
}

/// Make a reply made for another query (a cached answer, or one upstream
/// answer shared by coalesced clients) fit this query's header: RD is
/// copied from the query (RFC 1035 §4.1.1), and AD is kept only when the
/// query set AD or DO (RFC 6840 §5.8). CD is part of the cache key, so it
/// already matches.
pub(crate) fn adopt_reply_flags(out: &mut [u8], req: &Request) {
    let Some(mut flags) = read_u16(out, 2) else {
        return;
    };
    flags = (flags & !FLAG_RD) | (req.flags & FLAG_RD);
    if !req.ad() && !req.dnssec_ok() {
        flags &= !FLAG_AD;
    }
    write_u16(out, 2, flags);
}

/// A reply with only a header (no question), for requests whose body could
/// not be parsed. `packet` must be at least a header long.
pub(crate) fn header_only_reply(out: &mut Vec<u8>, packet: &[u8], rcode: u16) {
    out.clear();
    if packet.len() < HEADER_LEN {
        return;
    }
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    let flags =
        FLAG_QR | FLAG_RA | (flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)) | (rcode & RCODE_MASK);
    out.extend_from_slice(&packet[0..2]);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

pub(crate) fn set_flag(out: &mut [u8], flag: u16) {
    if let Some(f) = read_u16(out, 2) {
        write_u16(out, 2, f | flag);
    }
}

pub(crate) fn set_counts(out: &mut [u8], an: u16, ns: u16, ar: u16) {
    write_u16(out, 6, an);
    write_u16(out, 8, ns);
    write_u16(out, 10, ar);
}

/// Append an OPT record (our payload 1232, DO echoed, extended rcode high
/// bits). Returns the offset of its RDLENGTH for [`push_ede`].
pub(crate) fn push_opt(out: &mut Vec<u8>, dnssec_ok: bool, ext_rcode: u8) -> usize {
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
    let ttl: u32 = ((ext_rcode as u32) << 24) | if dnssec_ok { 0x8000 } else { 0 };
    out.extend_from_slice(&ttl.to_be_bytes());
    let rdlen_off = out.len();
    out.extend_from_slice(&[0, 0]);
    rdlen_off
}

/// Append an EDE option (code + text) to the OPT whose RDLENGTH is at
/// `rdlen_off`; `text` writes the EXTRA-TEXT bytes.
pub(crate) fn push_ede(
    out: &mut Vec<u8>,
    rdlen_off: usize,
    code: u16,
    text: impl FnOnce(&mut Vec<u8>),
) {
    let opt_start = out.len();
    out.extend_from_slice(&OPT_EDE.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&code.to_be_bytes());
    text(out);
    let optlen = (out.len() - opt_start - 4) as u16;
    write_u16(out, opt_start + 2, optlen);
    let rdlen = read_u16(out, rdlen_off).unwrap_or(0) + (out.len() - opt_start) as u16;
    write_u16(out, rdlen_off, rdlen);
}

/// Append a record whose owner is the question name (pointer to offset 12).
pub(crate) fn push_rr_at_qname(out: &mut Vec<u8>, rtype: u16, ttl: u32, rdata: &[u8]) {
    out.extend_from_slice(&[0xc0, 0x0c]);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// A TC=1 reply with just the question (and OPT when the client used EDNS),
/// for answers larger than the client can take over UDP. Keeps the
/// upstream's rcode and flags.
pub(crate) fn truncated_reply(out: &mut Vec<u8>, req: &Request, upstream_flags: u16) {
    begin_reply(out, req, upstream_flags & RCODE_MASK);
    let keep = upstream_flags & (FLAG_AA | FLAG_AD | FLAG_RA);
    if let Some(f) = read_u16(out, 2) {
        write_u16(out, 2, f | keep | FLAG_TC);
    }
    if let Some(e) = req.edns {
        push_opt(out, e.dnssec_ok, 0);
        set_counts(out, 0, 0, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns as HEdns, Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    fn query(name: &str, t: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if let Some((p, d)) = edns {
            let mut e = HEdns::new();
            e.set_max_payload(p);
            e.set_dnssec_ok(d);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn a_stored_request_keeps_every_form_of_the_question() {
        let names = [
            "ExAmPle.ORG.",
            ".",
            "a.b.c.d.e.f.g.h.",
            &format!("{}.x.", "Q".repeat(63)),
        ];
        for (i, name) in names.iter().enumerate() {
            let edns = (i % 2 == 0).then_some((4096, i == 2));
            let req = parse_request(&query(name, RecordType::AAAA, edns)).unwrap();
            let stored = StoredRequest::new(&req);
            assert_eq!(stored.question(), req.question(), "{name}");
            assert_eq!(stored.qname_wire(), req.qname_wire(), "{name}");
            assert_eq!(stored.lower_wire(), req.lower_wire(), "{name}");
            assert_eq!(stored.dotted(), req.dotted(), "{name}");
            assert_eq!(
                (stored.rd(), stored.cd(), stored.ad()),
                (req.rd(), req.cd(), req.ad())
            );
            let back = stored.expand();
            assert_eq!(back.question(), req.question(), "{name}");
            assert_eq!(back.lower_wire(), req.lower_wire(), "{name}");
            assert_eq!(back.dotted(), req.dotted(), "{name}");
            assert_eq!(
                (back.id, back.flags, back.qtype, back.qclass, back.edns),
                (req.id, req.flags, req.qtype, req.qclass, req.edns)
            );
        }
    }

    #[test]
    fn parses_a_plain_query() {
        let p = query("WwW.Example.COM.", RecordType::AAAA, None);
        let r = parse_request(&p).unwrap();
        assert_eq!(r.id, 0x1234);
        assert!(r.rd());
        assert_eq!(r.qtype, 28);
        assert_eq!(r.qclass, 1);
        assert_eq!(r.dotted(), b"www.example.com");
        assert_eq!(r.lower_wire(), &b"\x03www\x07example\x03com\x00"[..]);
        assert_eq!(r.qname_wire(), &b"\x03WwW\x07Example\x03COM\x00"[..]);
        assert_eq!(r.edns, None);
        assert_eq!(r.udp_limit(), 512);
    }

    #[test]
    fn parses_edns() {
        let p = query("a.b.", RecordType::A, Some((4096, true)));
        let r = parse_request(&p).unwrap();
        assert_eq!(
            r.edns,
            Some(Edns {
                payload: 4096,
                dnssec_ok: true,
                version: 0
            })
        );
        assert!(r.dnssec_ok());
        assert_eq!(r.udp_limit(), 1232);
        let p = query("a.b.", RecordType::A, Some((100, false)));
        assert_eq!(parse_request(&p).unwrap().udp_limit(), 512);
    }

    #[test]
    fn root_query() {
        let p = query(".", RecordType::NS, None);
        let r = parse_request(&p).unwrap();
        assert_eq!(r.dotted(), b"");
        assert_eq!(r.lower_wire(), b"\x00");
    }

    #[test]
    fn malformed_table() {
        let good = query("example.com.", RecordType::A, Some((1232, false)));
        let mut two_opts = good.clone();
        two_opts[11] = 2;
        two_opts.extend_from_slice(&good[good.len() - 11..]);
        let mut long_label = good[..12].to_vec();
        long_label.push(64);
        long_label.extend_from_slice(&[b'a'; 64]);
        long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut long_name = good[..12].to_vec();
        for _ in 0..5 {
            long_name.push(63);
            long_name.extend_from_slice(&[b'a'; 63]);
        }
        long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut pointer = good[..12].to_vec();
        pointer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        let mut notimp = good.clone();
        notimp[2] |= 0x28; // opcode 5 (UPDATE)
        let mut qd0 = good.clone();
        qd0[5] = 0;
        let mut resp = good.clone();
        resp[2] |= 0x80;
        let cases: Vec<(&str, Vec<u8>, RequestError)> = vec![
            ("empty", vec![], RequestError::Short),
            ("11 bytes", good[..11].to_vec(), RequestError::Short),
            ("response", resp, RequestError::Response),
            (
                "header only",
                good[..12].to_vec(),
                RequestError::FormErr("question name runs past the end"),
            ),
            (
                "cut in name",
                good[..16].to_vec(),
                RequestError::FormErr("question name runs past the end"),
            ),
            (
                "cut in type",
                good[..good.len() - 11 - 3].to_vec(),
                RequestError::FormErr("question truncated"),
            ),
            (
                "cut in OPT",
                good[..good.len() - 3].to_vec(),
                RequestError::FormErr("truncated OPT record"),
            ),
            (
                "two OPTs",
                two_opts,
                RequestError::FormErr("more than one OPT record"),
            ),
            (
                "label 64",
                long_label,
                RequestError::FormErr("compressed or extended label in question"),
            ),
            (
                "name > 255",
                long_name,
                RequestError::FormErr("question name longer than 255 octets"),
            ),
            (
                "pointer",
                pointer,
                RequestError::FormErr("compressed or extended label in question"),
            ),
            (
                "qdcount 0",
                qd0,
                RequestError::FormErr("question count is not 1"),
            ),
            ("opcode", notimp, RequestError::NotImp(5)),
        ];
        for (what, p, want) in cases {
            match parse_request(&p) {
                Ok(_) => panic!("{what}: parsed"),
                Err(e) => assert_eq!(e, want, "{what}"),
            }
        }
    }

    #[test]
    fn never_panics_on_noise() {
        let good = query("www.example.com.", RecordType::A, Some((1232, true)));
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..20_000 {
            let mut p = good.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = x as usize % p.len();
                p[i] = (x >> 8) as u8;
            }
            let cut = (x >> 3) as usize % (p.len() + 1);
            let _ = parse_request(&p[..cut]);
            let _ = scan_response(&p[..cut]);
            let _ = for_each_cname_name(&p[..cut], |_| Some(()));
        }
    }

    #[test]
    fn scan_finds_ttls_and_soa() {
        use hickory_proto::rr::rdata::{A, CNAME, SOA};
        use hickory_proto::rr::{RData, Record};
        let mut m = Message::response(7, hickory_proto::op::OpCode::Query);
        let q = Name::from_ascii("www.example.com.").unwrap();
        m.add_query(Query::query(q.clone(), RecordType::A));
        let t = Name::from_ascii("edge.cdn.net.").unwrap();
        m.add_answer(Record::from_rdata(
            q.clone(),
            300,
            RData::CNAME(CNAME(t.clone())),
        ));
        m.add_answer(Record::from_rdata(t, 60, RData::A(A::new(1, 2, 3, 4))));
        let soa = SOA::new(
            Name::from_ascii("ns.").unwrap(),
            Name::from_ascii("h.").unwrap(),
            1,
            2,
            3,
            4,
            30,
        );
        m.add_authority(Record::from_rdata(
            Name::from_ascii("cdn.net.").unwrap(),
            900,
            RData::SOA(soa),
        ));
        let mut e = HEdns::new();
        e.set_max_payload(4096);
        m.set_edns(e);
        let mut b = m.to_vec().unwrap();
        let s = scan_response(&b).unwrap();
        assert_eq!(s.id, 7);
        assert_eq!(s.ttl_offsets.len(), 3);
        assert_eq!(s.min_ttl, Some(60));
        assert_eq!(s.soa.map(|x| (x.1, x.2)), Some((900, 30)));
        assert!(s.has_cname);
        let mut seen = Vec::new();
        for_each_cname_name(&b, |n| {
            seen.push(String::from_utf8_lossy(n).into_owned());
            None::<()>
        });
        assert_eq!(seen, vec!["www.example.com", "edge.cdn.net"]);
        age_ttls(&mut b, &s.ttl_offsets, 100);
        clamp_opt_payload(&mut b, s.opt_class_offset.unwrap(), 1232);
        let m2 = Message::from_vec(&b).unwrap();
        assert_eq!(m2.answers[0].ttl, 200);
        assert_eq!(m2.answers[1].ttl, 0);
        assert_eq!(m2.authorities[0].ttl, 800);
        assert_eq!(m2.edns.unwrap().max_payload(), 1232);
    }

    #[test]
    fn presentation_form() {
        assert_eq!(presentation(b"\x03WwW\x07Example\x00"), "WwW.Example");
        assert_eq!(presentation(b"\x00"), ".");
        assert_eq!(presentation(b"\x03a.b\x02\x00c\x00"), "a\\.b.\\000c");
    }

    #[test]
    fn name_pointer_loops_are_rejected() {
        let mut msg = vec![0u8; 12];
        msg.extend_from_slice(&[0xc0, 12]);
        let mut out = [0u8; MAX_NAME];
        assert!(read_name_wire(&msg, 12, &mut out).is_none());
    }

    #[test]
    fn formerr_and_truncated_replies() {
        let p = query("Big.Example.", RecordType::TXT, Some((1232, true)));
        let mut out = Vec::new();
        header_only_reply(&mut out, &p, RCODE_FORMERR);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(u16::from(m.metadata.response_code), 1);
        let r = parse_request(&p).unwrap();
        truncated_reply(&mut out, &r, FLAG_QR | FLAG_AD | 3);
        let m = Message::from_vec(&out).unwrap();
        assert!(m.metadata.truncation);
        assert!(m.metadata.authentic_data);
        assert_eq!(u16::from(m.metadata.response_code), 3);
        assert_eq!(m.queries[0].name().to_ascii(), "Big.Example.");
        assert!(m.edns.unwrap().flags().dnssec_ok);
    }

    /// dns_upstream fuzz crash: ANCOUNT 2 + NSCOUNT 0xffff overflowed a
    /// u16 sum (a panic with overflow checks, a wrong section without).
    #[test]
    fn fuzz_section_counts_do_not_overflow() {
        let input = include_bytes!("../fuzz/regressions/dns_upstream/counts-overflow");
        let reply = &input[1..];
        assert_eq!(read_u16(reply, 6), Some(2));
        assert_eq!(read_u16(reply, 8), Some(0xffff));
        // Fewer records than the counts claim: malformed, never a panic.
        assert!(scan_response(reply).is_none());
    }

    #[test]
    fn short_soa_rdata_is_no_negative_ttl_source() {
        // NXDOMAIN whose authority SOA has 2 bytes of RDATA.
        let mut m = vec![0, 1, 0x81, 0x83, 0, 1, 0, 0, 0, 1, 0, 0];
        m.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1, 0, 0, 0, 60, 0, 2, 0, 0]);
        let s = scan_response(&m).expect("well-formed records");
        assert!(s.soa.is_none());
    }
}
