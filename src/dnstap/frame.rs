//! Frame Streams (the transport dnstap rides on), bidirectional mode, as
//! the writer side speaks it: READY → (reader) ACCEPT → START → data
//! frames … → STOP → (reader) FINISH.
//!
//! A data frame is a big-endian u32 length and that many payload bytes. A
//! control frame starts with the escape (a u32 0, which no data frame can
//! be), then the u32 length of the rest, the u32 control type and its
//! fields; the only field type is CONTENT_TYPE (u32 1, u32 length, bytes).
//! Control frames are small (fstrm caps them at 512 bytes), so a reader
//! announcing more is not speaking Frame Streams and is dropped.

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The content type dnstap announces and every dnstap reader accepts.
pub(crate) const DNSTAP_CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";

/// fstrm's limit on a control frame (escape and length not counted).
pub(crate) const MAX_CONTROL_LEN: usize = 512;

const FIELD_CONTENT_TYPE: u32 = 1;

/// Control frame types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ControlType {
    Accept = 1,
    Start = 2,
    Stop = 3,
    Ready = 4,
    Finish = 5,
}

impl ControlType {
    fn from_u32(v: u32) -> Option<ControlType> {
        Some(match v {
            1 => ControlType::Accept,
            2 => ControlType::Start,
            3 => ControlType::Stop,
            4 => ControlType::Ready,
            5 => ControlType::Finish,
            _ => return None,
        })
    }
}

/// A decoded control frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Control {
    pub kind: ControlType,
    pub content_types: Vec<Vec<u8>>,
}

#[derive(Debug, Error)]
pub(crate) enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the reader did not answer within {0:?}")]
    Timeout(Duration),
    #[error("expected a control frame, got a data frame of {0} bytes")]
    NotControl(u32),
    #[error("control frame of {0} bytes (at most {MAX_CONTROL_LEN})")]
    TooLong(u32),
    #[error("malformed control frame: {0}")]
    Malformed(&'static str),
    #[error("unknown control frame type {0}")]
    UnknownType(u32),
    #[error("expected {expected:?}, got {got:?}")]
    Unexpected {
        expected: ControlType,
        got: ControlType,
    },
    #[error("the reader does not accept content type {0}")]
    ContentType(String),
}

/// A control frame with its escape and length, ready to write.
pub(crate) fn encode_control(kind: ControlType, content_type: Option<&[u8]>) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + content_type.map_or(0, <[u8]>::len));
    body.extend_from_slice(&(kind as u32).to_be_bytes());
    if let Some(ct) = content_type {
        body.extend_from_slice(&FIELD_CONTENT_TYPE.to_be_bytes());
        body.extend_from_slice(&(ct.len() as u32).to_be_bytes());
        body.extend_from_slice(ct);
    }
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Append one data frame (length, payload) to `out`.
pub(crate) fn encode_data(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Decode the body of a control frame (what follows the escape and the
/// length).
pub(crate) fn decode_control(body: &[u8]) -> Result<Control, FrameError> {
    let kind = read_u32(body, 0).ok_or(FrameError::Malformed("no control type"))?;
    let kind = ControlType::from_u32(kind).ok_or(FrameError::UnknownType(kind))?;
    let mut content_types = Vec::new();
    let mut at = 4;
    while at < body.len() {
        let field = read_u32(body, at).ok_or(FrameError::Malformed("truncated field"))?;
        let len = read_u32(body, at + 4).ok_or(FrameError::Malformed("truncated field"))? as usize;
        let start = at + 8;
        let value = start
            .checked_add(len)
            .and_then(|end| body.get(start..end))
            .ok_or(FrameError::Malformed("field longer than the frame"))?;
        if field != FIELD_CONTENT_TYPE {
            return Err(FrameError::Malformed("unknown field"));
        }
        content_types.push(value.to_vec());
        at = start + len;
    }
    Ok(Control {
        kind,
        content_types,
    })
}

/// Read one control frame within `timeout`.
pub(crate) async fn read_control<R: AsyncRead + Unpin>(
    rd: &mut R,
    timeout: Duration,
) -> Result<Control, FrameError> {
    let read = async {
        let escape = rd.read_u32().await?;
        if escape != 0 {
            return Err(FrameError::NotControl(escape));
        }
        let len = rd.read_u32().await?;
        if len as usize > MAX_CONTROL_LEN {
            return Err(FrameError::TooLong(len));
        }
        let mut body = vec![0u8; len as usize];
        rd.read_exact(&mut body).await?;
        decode_control(&body)
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| FrameError::Timeout(timeout))?
}

fn expect(c: &Control, expected: ControlType) -> Result<(), FrameError> {
    if c.kind == expected {
        Ok(())
    } else {
        Err(FrameError::Unexpected {
            expected,
            got: c.kind,
        })
    }
}

/// The writer's opening: READY with our content type, the reader's ACCEPT
/// (which must list it), then START.
pub(crate) async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    timeout: Duration,
) -> Result<(), FrameError> {
    io.write_all(&encode_control(
        ControlType::Ready,
        Some(DNSTAP_CONTENT_TYPE),
    ))
    .await?;
    io.flush().await?;
    let accept = read_control(io, timeout).await?;
    expect(&accept, ControlType::Accept)?;
    // An ACCEPT without content types accepts anything (fstrm does so).
    if !accept.content_types.is_empty()
        && !accept
            .content_types
            .iter()
            .any(|c| c == DNSTAP_CONTENT_TYPE)
    {
        return Err(FrameError::ContentType(
            String::from_utf8_lossy(DNSTAP_CONTENT_TYPE).into_owned(),
        ));
    }
    io.write_all(&encode_control(
        ControlType::Start,
        Some(DNSTAP_CONTENT_TYPE),
    ))
    .await?;
    io.flush().await?;
    Ok(())
}

/// The writer's closing: STOP, then wait (bounded) for the reader's FINISH.
pub(crate) async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    timeout: Duration,
) -> Result<(), FrameError> {
    io.write_all(&encode_control(ControlType::Stop, None))
        .await?;
    io.flush().await?;
    let finish = read_control(io, timeout).await?;
    expect(&finish, ControlType::Finish)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_have_the_documented_layout() {
        let ready = encode_control(ControlType::Ready, Some(b"ab"));
        assert_eq!(
            ready,
            [
                0, 0, 0, 0, // escape
                0, 0, 0, 14, // length of what follows
                0, 0, 0, 4, // READY
                0, 0, 0, 1, // CONTENT_TYPE
                0, 0, 0, 2, b'a', b'b',
            ]
        );
        assert_eq!(
            encode_control(ControlType::Stop, None),
            [0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 3]
        );
        let mut data = Vec::new();
        encode_data(&mut data, b"xyz");
        assert_eq!(data, [0, 0, 0, 3, b'x', b'y', b'z']);
    }

    #[test]
    fn control_frames_round_trip() {
        for kind in [
            ControlType::Accept,
            ControlType::Start,
            ControlType::Stop,
            ControlType::Ready,
            ControlType::Finish,
        ] {
            for ct in [None, Some(DNSTAP_CONTENT_TYPE)] {
                let f = encode_control(kind, ct);
                let c = decode_control(&f[8..]).unwrap();
                assert_eq!(c.kind, kind);
                assert_eq!(
                    c.content_types,
                    ct.map(|c| vec![c.to_vec()]).unwrap_or_default()
                );
            }
        }
    }

    #[test]
    fn malformed_control_frames_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            &[],
            &[0, 0],
            &[0, 0, 0, 9],
            &[0, 0, 0, 1, 0, 0, 0, 1],
            &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, b'a'],
            &[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],
            &[0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0],
        ];
        for c in cases {
            assert!(decode_control(c).is_err(), "{c:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn decode_control_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode_control(&body);
        }
    }

    /// A minimal bidirectional reader, as fstrm_capture behaves: reads
    /// READY, answers ACCEPT, reads START, collects data frames until STOP,
    /// answers FINISH.
    async fn reader<S: AsyncRead + AsyncWrite + Unpin>(
        mut io: S,
        accept_types: Vec<Vec<u8>>,
    ) -> Result<Vec<Vec<u8>>, FrameError> {
        let t = Duration::from_secs(5);
        let ready = read_control(&mut io, t).await?;
        assert_eq!(ready.kind, ControlType::Ready);
        assert_eq!(ready.content_types, vec![DNSTAP_CONTENT_TYPE.to_vec()]);
        let mut accept = 0u32.to_be_bytes().to_vec();
        let mut body = (ControlType::Accept as u32).to_be_bytes().to_vec();
        for ct in &accept_types {
            body.extend_from_slice(&1u32.to_be_bytes());
            body.extend_from_slice(&(ct.len() as u32).to_be_bytes());
            body.extend_from_slice(ct);
        }
        accept.extend_from_slice(&(body.len() as u32).to_be_bytes());
        accept.extend_from_slice(&body);
        io.write_all(&accept).await?;
        let start = match read_control(&mut io, t).await {
            Ok(s) => s,
            // The writer gave up (content type refused).
            Err(FrameError::Io(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        assert_eq!(start.kind, ControlType::Start);
        let mut frames = Vec::new();
        loop {
            let len = io.read_u32().await?;
            if len == 0 {
                let clen = io.read_u32().await? as usize;
                let mut b = vec![0; clen];
                io.read_exact(&mut b).await?;
                assert_eq!(decode_control(&b)?.kind, ControlType::Stop);
                io.write_all(&encode_control(ControlType::Finish, None))
                    .await?;
                return Ok(frames);
            }
            let mut b = vec![0; len as usize];
            io.read_exact(&mut b).await?;
            frames.push(b);
        }
    }

    #[tokio::test]
    async fn handshake_data_and_close_against_a_reader() {
        let (mut w, r) = tokio::io::duplex(4096);
        let reader = tokio::spawn(reader(r, vec![DNSTAP_CONTENT_TYPE.to_vec()]));
        let t = Duration::from_secs(5);
        open(&mut w, t).await.unwrap();
        let mut buf = Vec::new();
        encode_data(&mut buf, b"one");
        encode_data(&mut buf, b"two");
        w.write_all(&buf).await.unwrap();
        close(&mut w, t).await.unwrap();
        let frames = reader.await.unwrap().unwrap();
        assert_eq!(frames, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    #[tokio::test]
    async fn a_reader_refusing_the_content_type_fails_the_handshake() {
        let (mut w, r) = tokio::io::duplex(4096);
        let reader = tokio::spawn(reader(r, vec![b"protobuf:other".to_vec()]));
        let e = open(&mut w, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(e, FrameError::ContentType(_)), "{e}");
        drop(w);
        assert!(reader.await.unwrap().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_silent_reader_times_out() {
        let (mut w, _r) = tokio::io::duplex(4096);
        let e = open(&mut w, Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(e, FrameError::Timeout(_)), "{e}");
    }

    #[tokio::test]
    async fn a_data_frame_where_a_control_frame_belongs_is_refused() {
        let (mut w, mut r) = tokio::io::duplex(4096);
        r.write_all(&[0, 0, 0, 5, 1, 2, 3, 4, 5]).await.unwrap();
        let e = read_control(&mut w, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, FrameError::NotControl(5)), "{e}");
        let (mut w, mut r) = tokio::io::duplex(4096);
        r.write_all(&[0, 0, 0, 0, 0, 1, 0, 0]).await.unwrap();
        let e = read_control(&mut w, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, FrameError::TooLong(_)), "{e}");
    }
}
