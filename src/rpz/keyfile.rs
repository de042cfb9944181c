//! TSIG keys in BIND's key-file format, as `tsig-keygen` writes them:
//!
//! ```text
//! key "xfr-key" {
//!         algorithm hmac-sha256;
//!         secret "Base64==";
//! };
//! ```
//!
//! Comments as named.conf allows them (`#`, `//`, `/* */`). A file may hold
//! several keys; the first is used (BIND's `include` files usually hold one).

use std::fmt;
use std::path::Path;

use base64::Engine;
use thiserror::Error;

/// The HMACs RFC 8945 requires (hickory signs with these, through ring).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl TsigAlgorithm {
    fn parse(s: &str) -> Option<TsigAlgorithm> {
        match s.to_ascii_lowercase().trim_end_matches('.') {
            "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
            "hmac-sha384" => Some(TsigAlgorithm::HmacSha384),
            "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacSha256 => "hmac-sha256",
            TsigAlgorithm::HmacSha384 => "hmac-sha384",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }
}

/// A TSIG key. The secret never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// The key's name as the primary knows it (lowercase, no trailing dot).
    pub name: String,
    pub algorithm: TsigAlgorithm,
    pub secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyFileError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("no `key` statement")]
    NoKey,
    #[error("key {key:?}: {message}")]
    Key { key: String, message: String },
}

/// Key files are a few hundred bytes; anything far larger is not one.
const MAX_KEY_FILE: u64 = 64 << 10;

/// Read and parse the key file at `path`.
pub fn load(path: &Path) -> Result<TsigKey, KeyFileError> {
    let io = |message: String| KeyFileError::Io {
        path: path.display().to_string(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| io(e.to_string()))?;
    if meta.len() > MAX_KEY_FILE {
        return Err(io(format!("larger than {MAX_KEY_FILE} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| io(e.to_string()))?;
    parse(&text)
}

#[derive(Debug, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    Quoted(&'a str),
    Open,
    Close,
    Semi,
}

fn tokenize(text: &str) -> Result<Vec<(usize, Tok<'_>)>, KeyFileError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line) = (0usize, 1usize);
    while i < b.len() {
        match b[i] {
            b'\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let start = line;
                i += 2;
                loop {
                    if i + 1 >= b.len() {
                        return Err(KeyFileError::Syntax {
                            line: start,
                            message: "unclosed /* comment".into(),
                        });
                    }
                    if b[i] == b'*' && b[i + 1] == b'/' {
                        i += 2;
                        break;
                    }
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
            b'{' => {
                out.push((line, Tok::Open));
                i += 1;
            }
            b'}' => {
                out.push((line, Tok::Close));
                i += 1;
            }
            b';' => {
                out.push((line, Tok::Semi));
                i += 1;
            }
            b'"' => {
                let start = i + 1;
                let Some(len) = b[start..].iter().position(|&c| c == b'"' || c == b'\n') else {
                    return Err(KeyFileError::Syntax {
                        line,
                        message: "unterminated string".into(),
                    });
                };
                if b[start + len] != b'"' {
                    return Err(KeyFileError::Syntax {
                        line,
                        message: "unterminated string".into(),
                    });
                }
                out.push((line, Tok::Quoted(&text[start..start + len])));
                i = start + len + 1;
            }
            _ => {
                let start = i;
                while i < b.len() && !b[i].is_ascii_whitespace() && !b"{};\"".contains(&b[i]) {
                    i += 1;
                }
                out.push((line, Tok::Word(&text[start..i])));
            }
        }
    }
    Ok(out)
}

/// Parse key-file text; the first `key` statement wins.
pub fn parse(text: &str) -> Result<TsigKey, KeyFileError> {
    let toks = tokenize(text)?;
    let syntax = |line: usize, message: &str| KeyFileError::Syntax {
        line,
        message: message.into(),
    };
    let last_line = toks.last().map(|(l, _)| *l).unwrap_or(1);
    let mut it = toks.iter().peekable();
    let mut next = |what: &str| {
        it.next().ok_or_else(|| {
            syntax(
                last_line,
                &format!("unexpected end of file, expected {what}"),
            )
        })
    };
    let (line, tok) = match next("`key`") {
        Ok(t) => t,
        Err(_) => return Err(KeyFileError::NoKey),
    };
    let Tok::Word(w) = tok else {
        return Err(syntax(*line, "expected a `key` statement"));
    };
    if !w.eq_ignore_ascii_case("key") {
        return Err(syntax(*line, &format!("unsupported statement {w:?}")));
    }
    let (line, name) = next("a key name")?;
    let name = match name {
        Tok::Quoted(n) | Tok::Word(n) => n.trim_end_matches('.').to_ascii_lowercase(),
        _ => return Err(syntax(*line, "expected a key name")),
    };
    if name.is_empty() {
        return Err(syntax(*line, "empty key name"));
    }
    let (line, open) = next("`{`")?;
    if *open != Tok::Open {
        return Err(syntax(*line, "expected `{`"));
    }
    let (mut algorithm, mut secret) = (None, None);
    loop {
        let (line, tok) = next("`}`")?;
        let field = match tok {
            Tok::Close => break,
            Tok::Word(w) => w.to_ascii_lowercase(),
            _ => return Err(syntax(*line, "expected `algorithm`, `secret` or `}`")),
        };
        let (vline, value) = next("a value")?;
        let value = match value {
            Tok::Word(v) | Tok::Quoted(v) => *v,
            _ => return Err(syntax(*vline, &format!("expected a value for {field}"))),
        };
        let (sline, semi) = next("`;`")?;
        if *semi != Tok::Semi {
            return Err(syntax(*sline, "expected `;`"));
        }
        match field.as_str() {
            "algorithm" => algorithm = Some(value),
            "secret" => secret = Some(value),
            _ => return Err(syntax(*line, &format!("unknown key field {field:?}"))),
        }
    }
    let (line, semi) = next("`;`")?;
    if *semi != Tok::Semi {
        return Err(syntax(*line, "expected `;` after `}`"));
    }
    let key_err = |message: String| KeyFileError::Key {
        key: name.clone(),
        message,
    };
    let algorithm = algorithm.ok_or_else(|| key_err("no algorithm".into()))?;
    let algorithm = TsigAlgorithm::parse(algorithm).ok_or_else(|| {
        key_err(format!(
            "algorithm {algorithm:?} not supported (hmac-sha256, hmac-sha384, hmac-sha512)"
        ))
    })?;
    let secret = secret.ok_or_else(|| key_err("no secret".into()))?;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(secret.as_bytes())
        .map_err(|_| key_err("the secret is not base64".into()))?;
    if secret.is_empty() {
        return Err(key_err("empty secret".into()));
    }
    Ok(TsigKey {
        name,
        algorithm,
        secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TSIG_KEYGEN: &str = "key \"xfr-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\";\n};\n";

    #[test]
    fn tsig_keygen_output() {
        let k = parse(TSIG_KEYGEN).unwrap();
        assert_eq!(k.name, "xfr-key");
        assert_eq!(k.algorithm, TsigAlgorithm::HmacSha256);
        assert_eq!(k.secret, b"secret-secret-secret");
        assert!(!format!("{k:?}").contains("c2Vj"));
        assert!(!format!("{k:?}").contains("secret-secret"));
    }

    #[test]
    fn table() {
        let ok = |t: &str| parse(t).map(|k| (k.name, k.algorithm));
        type Case<'a> = (&'a str, Result<(&'a str, TsigAlgorithm), &'a str>);
        let cases: &[Case] = &[
            (
                "# made by hand\nkey Xfr.Key. { secret \"YWJj\"; algorithm HMAC-SHA512; };",
                Ok(("xfr.key", TsigAlgorithm::HmacSha512)),
            ),
            (
                "/* two\nlines */ key \"k\" { algorithm hmac-sha384; // why\n secret \"YWJj\"; };",
                Ok(("k", TsigAlgorithm::HmacSha384)),
            ),
            (
                "key \"a\" { algorithm hmac-sha256; secret \"YWJj\"; };\nkey \"b\" { algorithm hmac-sha512; secret \"YWJj\"; };",
                Ok(("a", TsigAlgorithm::HmacSha256)),
            ),
            ("", Err("no `key`")),
            ("# nothing\n", Err("no `key`")),
            (
                "key \"k\" { algorithm hmac-md5; secret \"YWJj\"; };",
                Err("not supported"),
            ),
            ("key \"k\" { algorithm hmac-sha256; };", Err("no secret")),
            ("key \"k\" { secret \"YWJj\"; };", Err("no algorithm")),
            (
                "key \"k\" { algorithm hmac-sha256; secret \"!!\"; };",
                Err("not base64"),
            ),
            (
                "key \"k\" { algorithm hmac-sha256; secret \"YWJj\" };",
                Err("expected `;`"),
            ),
            (
                "key \"k\" { algorithm hmac-sha256; secret \"YWJj\"; }",
                Err("unexpected end"),
            ),
            (
                "key \"k\" { algorithm hmac-sha256; secret \"YWJj",
                Err("unterminated"),
            ),
            ("options { };", Err("unsupported statement")),
            (
                "key \"k\" { algorithm hmac-sha256; secret \"YWJj\"; foo bar; };",
                Err("unknown key field"),
            ),
            ("/* open", Err("unclosed")),
        ];
        for (text, want) in cases {
            let got = ok(text);
            match (want, &got) {
                (Ok((n, a)), Ok((gn, ga))) => assert_eq!((*n, *a), (gn.as_str(), *ga), "{text}"),
                (Err(m), Err(e)) => assert!(e.to_string().contains(m), "{text}: {e}"),
                _ => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("xfr.key");
        std::fs::write(&p, TSIG_KEYGEN).unwrap();
        assert_eq!(load(&p).unwrap().name, "xfr-key");
        assert!(matches!(
            load(&dir.path().join("missing")),
            Err(KeyFileError::Io { .. })
        ));
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn round_trips(name in "[a-z][a-z0-9-]{0,20}", secret in proptest::collection::vec(any::<u8>(), 1..64)) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&secret);
            let text = format!("key \"{name}\" {{\n\talgorithm hmac-sha512;\n\tsecret \"{b64}\";\n}};\n");
            let k = parse(&text).unwrap();
            prop_assert_eq!(k.name, name);
            prop_assert_eq!(k.secret, secret);
        }
    }
}
