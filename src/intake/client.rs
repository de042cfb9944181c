//! `sinkhole push`: the clerk's client. Sends one file with its
//! signatures to one or more nodes at once (a thread per node) and prints
//! one receipt line per node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use thiserror::Error;

use super::apply::Receipt;

/// `sinkhole push` arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct PushArgs {
    /// A node's API base URL (`https://resolver-1.example:8053`); repeat
    /// for several nodes.
    #[arg(long = "to", required = true, value_name = "URL")]
    pub to: Vec<String>,
    /// The managed list's name.
    #[arg(long)]
    pub list: String,
    /// A file holding the bearer token (first line).
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// A minisign signature of FILE (`FILE.minisig`); repeat for K of N.
    #[arg(long = "sig", value_name = "FILE.minisig")]
    pub sigs: Vec<PathBuf>,
    /// Check everything up to the swap; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// PEM CA certificate(s) for nodes with a private CA.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Per-node time limit in seconds (upload and apply).
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Print each node's JSON receipt instead of a summary line.
    #[arg(long)]
    pub json: bool,
    /// The list file.
    pub file: PathBuf,
}

#[derive(Debug, Error)]
pub enum PushError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("HTTP client: {0}")]
    Client(String),
}

/// What one node said.
#[derive(Debug)]
pub enum NodeOutcome {
    Applied(Box<Receipt>),
    Rejected { status: u16, reason: String },
    Unreachable(String),
}

fn read(path: &Path) -> Result<Vec<u8>, PushError> {
    std::fs::read(path).map_err(|source| PushError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Push to every node; returns each node's outcome in `--to` order.
pub fn push(args: &PushArgs) -> Result<Vec<(String, NodeOutcome)>, PushError> {
    let token = String::from_utf8(read(&args.token_file)?)
        .map_err(|_| PushError::Usage("the token file is not text".into()))?;
    let token = token.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(PushError::Usage("the token file is empty".into()));
    }
    let mut sigs = Vec::new();
    for s in &args.sigs {
        sigs.push(base64::engine::general_purpose::STANDARD.encode(read(s)?));
    }
    let len = std::fs::metadata(&args.file)
        .map_err(|source| PushError::Read {
            path: args.file.clone(),
            source,
        })?
        .len();
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs))
        .connect_timeout(Duration::from_secs(10))
        .use_rustls_tls();
    if let Some(ca) = &args.ca_file {
        for cert in reqwest::Certificate::from_pem_bundle(&read(ca)?)
            .map_err(|e| PushError::Usage(format!("{}: {e}", ca.display())))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder
        .build()
        .map_err(|e| PushError::Client(e.to_string()))?;
    let outcomes = std::thread::scope(|scope| {
        let handles: Vec<_> = args
            .to
            .iter()
            .map(|node| {
                let (client, token, sigs) = (&client, &token, &sigs);
                scope.spawn(move || push_one(client, node, args, token, sigs, len))
            })
            .collect();
        handles
            .into_iter()
            .zip(&args.to)
            .map(|(h, node)| {
                let o = h
                    .join()
                    .unwrap_or_else(|_| NodeOutcome::Unreachable("internal error".into()));
                (node.clone(), o)
            })
            .collect()
    });
    Ok(outcomes)
}

fn push_one(
    client: &reqwest::blocking::Client,
    node: &str,
    args: &PushArgs,
    token: &str,
    sigs: &[String],
    len: u64,
) -> NodeOutcome {
    let mut url = format!("{}/v1/lists/{}", node.trim_end_matches('/'), args.list);
    if args.dry_run {
        url.push_str("?dry_run=true");
    }
    let file = match std::fs::File::open(&args.file) {
        Ok(f) => f,
        Err(e) => return NodeOutcome::Unreachable(format!("{}: {e}", args.file.display())),
    };
    let mut req = client
        .put(&url)
        .bearer_auth(token)
        .body(reqwest::blocking::Body::sized(file, len));
    for s in sigs {
        req = req.header(super::api::SIGNATURE_HEADER, s);
    }
    let resp = match req.send() {
        Ok(r) => r,
        Err(e) => return NodeOutcome::Unreachable(e.to_string()),
    };
    let status = resp.status().as_u16();
    let body = resp.text().unwrap_or_default();
    if status == 200 {
        match serde_json::from_str::<Receipt>(&body) {
            Ok(r) => NodeOutcome::Applied(Box::new(r)),
            Err(e) => NodeOutcome::Unreachable(format!("unreadable receipt: {e}")),
        }
    } else {
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_string))
            .unwrap_or_else(|| body.chars().take(200).collect());
        NodeOutcome::Rejected { status, reason }
    }
}

/// One line per node; the exit code: 0 every node applied (or accepted
/// the dry run), 1 any refused, 2 any unreachable.
pub fn report(
    outcomes: &[(String, NodeOutcome)],
    json: bool,
    out: &mut dyn std::io::Write,
) -> std::io::Result<u8> {
    let mut code = 0u8;
    for (node, o) in outcomes {
        match o {
            NodeOutcome::Applied(r) => {
                if json {
                    writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default())?;
                } else {
                    writeln!(
                        out,
                        "{node}: {} list {} version {} sha256 {} rules {} added {} removed {} skipped {} signers {} enforced_at {} audit_seq {}",
                        if r.dry_run { "dry-run ok" } else { "applied" },
                        r.list,
                        r.version,
                        r.sha256,
                        r.rule_count,
                        r.added,
                        r.removed,
                        r.skipped.len(),
                        if r.signers.is_empty() {
                            "-".to_string()
                        } else {
                            r.signers.join(",")
                        },
                        r.enforced_at.as_deref().unwrap_or("-"),
                        r.audit_seq.map_or("-".to_string(), |s| s.to_string()),
                    )?;
                }
            }
            NodeOutcome::Rejected { status, reason } => {
                code = code.max(1);
                writeln!(out, "{node}: rejected {status}: {reason}")?;
            }
            NodeOutcome::Unreachable(e) => {
                code = 2;
                writeln!(out, "{node}: unreachable: {e}")?;
            }
        }
    }
    Ok(code)
}
