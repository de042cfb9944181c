//! The transfer client: SOA, IXFR and AXFR over one TCP connection to a
//! primary, every request TSIG-signed and every answer verified when a key
//! is configured (hickory-proto's `TSigner` and `TSigVerifier`, on ring).
//!
//! Why not hickory-net's `ClientHandle::zone_transfer`: its multiplexer
//! hands each answer message to the caller through a channel of 8 with
//! `try_send`, dropping messages (with a warning) when the reader falls
//! behind, which a multi-message AXFR of a large zone does
//! (hickory-dns#2049, open); and an IXFR
//! answered by a lone SOA ("you are current") leaves its stream waiting
//! for a closing SOA until the request times out. Here the messages are
//! read in order, with backpressure, and the end of a transfer is decided
//! as RFC 5936/1995 say: by the closing SOA.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType, TSigVerifier, TSigner};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::fold::{self, AxfrError, AxfrWriter, Soa, XfrRecord};
use super::keyfile::{TsigAlgorithm, TsigKey};

/// How long a primary may stay silent in the middle of an answer.
const IDLE: Duration = Duration::from_secs(30);
/// TSIG fudge (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;

#[derive(Debug, Error)]
pub enum XfrError {
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("the primary answered {0}")]
    Rcode(ResponseCode),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("TSIG: {0}")]
    Tsig(String),
    #[error(transparent)]
    Fold(#[from] fold::FoldError),
    #[error("writing the zone: {0}")]
    Write(std::io::Error),
}

impl XfrError {
    /// Errors on which an IXFR is retried as an AXFR (the primary cannot
    /// or will not answer incrementally, or the history does not fit ours).
    pub fn falls_back_to_axfr(&self) -> bool {
        match self {
            XfrError::Rcode(c) => matches!(
                c,
                ResponseCode::NotImp
                    | ResponseCode::Refused
                    | ResponseCode::FormErr
                    | ResponseCode::ServFail
            ),
            XfrError::Fold(_) => true,
            _ => false,
        }
    }

    /// A label for the transfer metric's `outcome`.
    pub fn outcome(&self) -> &'static str {
        match self {
            XfrError::Connect(..) | XfrError::Io(_) | XfrError::Timeout => "unreachable",
            XfrError::Rcode(_) => "refused",
            XfrError::Tsig(_) => "bad_signature",
            XfrError::Fold(fold::FoldError::TooLarge(_)) => "too_large",
            XfrError::Malformed(_) | XfrError::Fold(_) => "malformed",
            XfrError::Write(_) => "write_error",
        }
    }
}

impl From<AxfrError> for XfrError {
    fn from(e: AxfrError) -> Self {
        match e {
            AxfrError::Fold(f) => XfrError::Fold(f),
            AxfrError::Io(e) => XfrError::Write(e),
        }
    }
}

fn signer(key: &TsigKey) -> Result<TSigner, XfrError> {
    use hickory_proto::rr::rdata::tsig::TsigAlgorithm as Alg;
    let alg = match key.algorithm {
        TsigAlgorithm::HmacSha256 => Alg::HmacSha256,
        TsigAlgorithm::HmacSha384 => Alg::HmacSha384,
        TsigAlgorithm::HmacSha512 => Alg::HmacSha512,
    };
    let name = Name::from_ascii(&key.name).map_err(|e| XfrError::Tsig(e.to_string()))?;
    TSigner::new(key.secret.clone(), alg, name, FUDGE).map_err(|e| XfrError::Tsig(e.to_string()))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One connection to one primary.
pub struct XfrClient {
    stream: TcpStream,
    signer: Option<TSigner>,
    zone: String,
    zone_name: Name,
    buf: Vec<u8>,
}

/// One request's answer messages, verified.
struct Exchange {
    id: u16,
    verifier: Option<TSigVerifier>,
}

impl XfrClient {
    pub async fn connect(
        primary: SocketAddr,
        zone: &str,
        key: Option<&TsigKey>,
        timeout: Duration,
    ) -> Result<XfrClient, XfrError> {
        let signer = key.map(signer).transpose()?;
        let zone_name = Name::from_ascii(format!("{zone}."))
            .map_err(|e| XfrError::Malformed(format!("zone name: {e}")))?;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(primary))
            .await
            .map_err(|_| XfrError::Connect(primary, "timed out".into()))?
            .map_err(|e| XfrError::Connect(primary, e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(XfrClient {
            stream,
            signer,
            zone: zone.to_string(),
            zone_name,
            buf: Vec::with_capacity(65535),
        })
    }

    async fn send(
        &mut self,
        qtype: RecordType,
        authority: Option<Record>,
    ) -> Result<Exchange, XfrError> {
        let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
        m.add_query(Query::query(self.zone_name.clone(), qtype));
        if let Some(r) = authority {
            m.add_authority(r);
        }
        let verifier = match &self.signer {
            Some(s) => {
                let v = m
                    .finalize(s, now_unix())
                    .map_err(|e| XfrError::Tsig(e.to_string()))?;
                Some(v.ok_or_else(|| XfrError::Tsig("no verifier for a signed request".into()))?)
            }
            None => None,
        };
        let bytes = m.to_vec().map_err(|e| XfrError::Malformed(e.to_string()))?;
        let len = u16::try_from(bytes.len())
            .map_err(|_| XfrError::Malformed("request too large".into()))?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        tokio::time::timeout(IDLE, self.stream.write_all(&framed))
            .await
            .map_err(|_| XfrError::Timeout)??;
        Ok(Exchange {
            id: m.metadata.id,
            verifier,
        })
    }

    /// The next message of the answer, verified when signed requests are
    /// sent: an unsigned or badly signed message is an error.
    async fn next(&mut self, ex: &mut Exchange) -> Result<Message, XfrError> {
        let mut len = [0u8; 2];
        tokio::time::timeout(IDLE, self.stream.read_exact(&mut len))
            .await
            .map_err(|_| XfrError::Timeout)??;
        let len = usize::from(u16::from_be_bytes(len));
        self.buf.resize(len, 0);
        tokio::time::timeout(IDLE, self.stream.read_exact(&mut self.buf))
            .await
            .map_err(|_| XfrError::Timeout)??;
        let m = match &mut ex.verifier {
            Some(v) => v
                .verify(&self.buf)
                .map_err(|e| XfrError::Tsig(e.to_string()))?
                .into_message(),
            None => Message::from_vec(&self.buf).map_err(|e| XfrError::Malformed(e.to_string()))?,
        };
        if m.metadata.id != ex.id || m.metadata.message_type != MessageType::Response {
            return Err(XfrError::Malformed("not the answer to our request".into()));
        }
        if m.metadata.response_code != ResponseCode::NoError {
            return Err(XfrError::Rcode(m.metadata.response_code));
        }
        Ok(m)
    }

    fn lines(&self, m: &Message) -> Vec<XfrRecord> {
        m.answers
            .iter()
            .map(|r| fold::record_line(&self.zone, r))
            .collect()
    }

    /// The primary's SOA for the zone.
    pub async fn soa(&mut self) -> Result<Soa, XfrError> {
        let mut ex = self.send(RecordType::SOA, None).await?;
        let m = self.next(&mut ex).await?;
        self.lines(&m)
            .into_iter()
            .find_map(|r| match r {
                XfrRecord::Soa(s) => Some(s),
                _ => None,
            })
            .ok_or_else(|| XfrError::Malformed("no SOA in the answer".into()))
    }

    /// IXFR from `ours`, collected and folded. An AXFR-style answer stops
    /// at its first data record ([`fold::FoldError::NotIncremental`]): the
    /// caller asks for an AXFR, which streams to disk.
    pub async fn ixfr(&mut self, ours: &Soa, max_records: u64) -> Result<fold::Ixfr, XfrError> {
        let soa = Record::from_rdata(
            self.zone_name.clone(),
            0,
            RData::SOA(SOA::new(
                Name::root(),
                Name::root(),
                ours.serial,
                ours.refresh as i32,
                ours.retry as i32,
                ours.expire as i32,
                ours.minimum,
            )),
        );
        let mut ex = self.send(RecordType::IXFR, Some(soa)).await?;
        let mut records: Vec<XfrRecord> = Vec::new();
        let mut end = XfrEnd::default();
        let mut kept = 0usize;
        loop {
            let m = self.next(&mut ex).await?;
            let batch = self.lines(&m);
            let lone_soa = records.is_empty() && batch.len() == 1;
            for r in batch {
                // The record after the opening SOA (apex NS and the like
                // aside) says which kind of answer this is.
                if kept == 1 && matches!(r, XfrRecord::Line(_)) {
                    return Err(fold::FoldError::NotIncremental.into());
                }
                if !matches!(r, XfrRecord::Ignored) {
                    kept += 1;
                }
                end.see(&r);
                records.push(r);
                if records.len() as u64 > max_records.saturating_mul(2).saturating_add(8) {
                    return Err(fold::FoldError::TooLarge(max_records).into());
                }
            }
            if lone_soa || end.done {
                break;
            }
        }
        Ok(fold::fold_ixfr(ours.serial, &records)?)
    }

    /// AXFR into `writer` (the zone file being written).
    pub async fn axfr<W: std::io::Write>(
        &mut self,
        writer: &mut AxfrWriter<W>,
    ) -> Result<(), XfrError> {
        let mut ex = self.send(RecordType::AXFR, None).await?;
        let mut end = XfrEnd::default();
        loop {
            let m = self.next(&mut ex).await?;
            for r in self.lines(&m) {
                end.see(&r);
                writer.push(&r)?;
            }
            if end.done {
                return Ok(());
            }
        }
    }
}

/// Where an answer ends: at a SOA with the opening serial after an even
/// number of SOAs (AXFR: the second; IXFR: after each delta's pair).
#[derive(Default)]
struct XfrEnd {
    first: Option<u32>,
    soas: u32,
    done: bool,
}

impl XfrEnd {
    fn see(&mut self, r: &XfrRecord) {
        if let XfrRecord::Soa(s) = r {
            self.soas += 1;
            match self.first {
                None => self.first = Some(s.serial),
                Some(f) if f == s.serial && self.soas % 2 == 0 => self.done = true,
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{CNAME, NS};

    fn soa(serial: u32) -> Record {
        let name = Name::from_ascii("rpz.test.").unwrap();
        let soa = SOA::new(Name::root(), Name::root(), serial, 60, 10, 600, 30);
        Record::from_rdata(name, 60, RData::SOA(soa))
    }

    fn cname(owner: &str) -> Record {
        Record::from_rdata(
            Name::from_ascii(format!("{owner}.rpz.test.")).unwrap(),
            60,
            RData::CNAME(CNAME(Name::root())),
        )
    }

    fn apex_ns() -> Record {
        Record::from_rdata(
            Name::from_ascii("rpz.test.").unwrap(),
            60,
            RData::NS(NS(Name::from_ascii("localhost.").unwrap())),
        )
    }

    /// A primary that answers one request with `answers` (one message per
    /// inner vector), unsigned; returns the request's query type.
    async fn fake_primary(
        answers: Vec<Vec<Record>>,
    ) -> (SocketAddr, tokio::task::JoinHandle<RecordType>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut req = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut req).await.unwrap();
            let req = Message::from_vec(&req).unwrap();
            for records in answers {
                let mut m = Message::response(req.metadata.id, OpCode::Query);
                m.add_query(req.queries[0].clone());
                for r in records {
                    m.add_answer(r);
                }
                let bytes = m.to_vec().unwrap();
                s.write_all(&(bytes.len() as u16).to_be_bytes())
                    .await
                    .unwrap();
                s.write_all(&bytes).await.unwrap();
            }
            req.queries[0].query_type()
        });
        (addr, task)
    }

    fn ours(serial: u32) -> Soa {
        Soa {
            serial,
            refresh: 60,
            retry: 10,
            expire: 600,
            minimum: 30,
        }
    }

    #[tokio::test]
    async fn an_axfr_over_several_messages() {
        let (addr, primary) = fake_primary(vec![
            vec![soa(4), apex_ns(), cname("a")],
            vec![cname("b")],
            vec![cname("c"), soa(4)],
        ])
        .await;
        let mut c = XfrClient::connect(addr, "rpz.test", None, Duration::from_secs(2))
            .await
            .unwrap();
        let mut w = AxfrWriter::new(Vec::new(), 10);
        c.axfr(&mut w).await.unwrap();
        let (s, n, out) = w.finish().unwrap();
        assert_eq!((s.serial, n), (4, 3));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a CNAME .\nb CNAME .\nc CNAME .\n"
        );
        assert_eq!(primary.await.unwrap(), RecordType::AXFR);
    }

    #[tokio::test]
    async fn an_axfr_style_answer_to_ixfr_is_not_incremental() {
        let (addr, primary) = fake_primary(vec![vec![soa(5), apex_ns(), cname("a"), soa(5)]]).await;
        let mut c = XfrClient::connect(addr, "rpz.test", None, Duration::from_secs(2))
            .await
            .unwrap();
        let e = c.ixfr(&ours(4), 100).await.unwrap_err();
        assert!(
            matches!(e, XfrError::Fold(fold::FoldError::NotIncremental)),
            "{e}"
        );
        assert!(e.falls_back_to_axfr());
        assert_eq!(primary.await.unwrap(), RecordType::IXFR);
    }

    #[tokio::test]
    async fn a_lone_soa_answer_ends_the_ixfr() {
        let (addr, _primary) = fake_primary(vec![vec![soa(4)]]).await;
        let mut c = XfrClient::connect(addr, "rpz.test", None, Duration::from_secs(2))
            .await
            .unwrap();
        let ixfr = tokio::time::timeout(Duration::from_secs(2), c.ixfr(&ours(4), 100))
            .await
            .expect("no wait for a closing SOA")
            .unwrap();
        assert!(ixfr.deltas.is_empty());
    }

    #[tokio::test]
    async fn an_unsigned_answer_is_refused_when_a_key_is_set() {
        let (addr, _primary) = fake_primary(vec![vec![soa(4), cname("a"), soa(4)]]).await;
        let key = TsigKey {
            name: "xfr-key".into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: b"0123456789abcdef0123456789abcdef".to_vec(),
        };
        let mut c = XfrClient::connect(addr, "rpz.test", Some(&key), Duration::from_secs(2))
            .await
            .unwrap();
        let mut w = AxfrWriter::new(Vec::new(), 10);
        let e = c.axfr(&mut w).await.unwrap_err();
        assert!(matches!(e, XfrError::Tsig(_)), "{e}");
        assert_eq!(e.outcome(), "bad_signature");
        assert!(!e.falls_back_to_axfr());
    }
}
