//! `sinkhole audit …`: the auditor's commands.

use std::io::Write;
use std::path::PathBuf;

use super::AuditError;
use super::config::load_key;
use super::query::{OutputFormat, SearchFilter, StatsBy, parse_client, search, stats, write_stats};
use super::sign::{AuditPublicKey, keygen, short_id};
use super::verify::{VerifyOptions, verify_with};

/// Filters shared by `search` and `stats`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct FilterArgs {
    /// Only records at or after this time (RFC 3339, e.g. 2024-05-01T00:00:00Z, or a date).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only records before this time (exclusive).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// An address, a CIDR prefix, or an exact pseudonym (`hmac:…`).
    #[arg(long, value_name = "CIDR")]
    pub client: Option<String>,
    /// Only names equal to or below this domain (whole labels, any case).
    #[arg(long, value_name = "SUFFIX")]
    pub name: Option<String>,
    /// Only hits of rules with this decision reference (exact).
    #[arg(long, value_name = "REF")]
    pub decision: Option<String>,
    /// With a pseudonymised log: the HMAC key, so `--client ADDR` finds the
    /// pseudonym of ADDR.
    #[arg(long, value_name = "FILE")]
    pub hmac_key_file: Option<PathBuf>,
}

impl FilterArgs {
    fn build(&self) -> Result<SearchFilter, AuditError> {
        let key = self.hmac_key_file.as_deref().map(load_key).transpose()?;
        let client = self
            .client
            .as_deref()
            .map(|c| parse_client(c, key.as_deref()))
            .transpose()?;
        SearchFilter::new(
            self.since.as_deref(),
            self.until.as_deref(),
            client,
            self.name.as_deref(),
            self.decision.as_deref(),
        )
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain over every file in DIR. Exit 0 when intact
    /// (a torn last line after a crash is a warning), 1 when broken, naming
    /// the first bad file, line and what is wrong.
    ///
    /// With --key, every signed start/checkpoint must verify with that key
    /// (exit 1 otherwise); with --anchors, every record the witness holds
    /// for the key must be in the log with the same chain head (exit 1 for a
    /// rewritten, truncated or rolled-back log), and the records after the
    /// last anchored one are reported as the unanchored tail (exit 3 with
    /// --require-anchored). Exit 2: unreadable files or bad arguments.
    Verify {
        /// The audit log directory (or a single log file).
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The node's public key (`audit.pub` from `audit keygen`).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// The witness's directory (`sinkhole witness --dir`).
        #[arg(long, value_name = "WITNESS_DIR", requires = "key")]
        anchors: Option<PathBuf>,
        /// Exit 3 when records after the last anchored checkpoint exist.
        #[arg(long, requires = "anchors")]
        require_anchored: bool,
    },
    /// Write a new ed25519 signing key pair for this node: DIR/audit.key
    /// (mode 0600; `[audit] signing_key`) and DIR/audit.pub (for the
    /// auditor and the witness's --allow-key). Refuses to overwrite.
    Keygen {
        #[arg(short = 'o', long = "output", value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the blocked queries that match every given filter, in log order.
    /// With `--kind list`: the list changes (pushes, pulls, reloads, refusals).
    Search {
        dir: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// `hit` (blocked queries) or `list` (list changes).
        #[arg(long, default_value = "hit", value_parser = ["hit", "list"])]
        kind: String,
        /// With `--kind list`: only this list's changes.
        #[arg(long, value_name = "NAME")]
        list: Option<String>,
    },
    /// Top-N tables of the matching blocked queries.
    Stats {
        dir: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
        /// What to count by.
        #[arg(long, value_enum, default_value_t = StatsBy::Name)]
        by: StatsBy,
        /// How many rows (default 10; every hour for `--by hour`).
        #[arg(long, value_name = "N")]
        top: Option<usize>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// With `--at`: which version of this list was in force then.
        #[arg(long, value_name = "NAME", requires = "at")]
        list: Option<String>,
        /// A moment (RFC 3339), with `--list`.
        #[arg(long, value_name = "TIME", requires = "list")]
        at: Option<String>,
    },
}

/// Runs one audit command, writing its output to `out`. Returns the exit
/// code (verify: 0 intact, 1 broken; others 0). Errors (unreadable files,
/// bad arguments) are for the caller to report, conventionally as exit 2.
pub fn run(cmd: AuditCommand, out: &mut dyn Write) -> Result<i32, AuditError> {
    match cmd {
        AuditCommand::Verify {
            dir,
            json,
            key,
            anchors,
            require_anchored,
        } => {
            let opts = VerifyOptions {
                key: key.as_deref().map(AuditPublicKey::load).transpose()?,
                anchors,
            };
            let report = verify_with(&dir, &opts)?;
            let res = if json {
                serde_json::to_writer_pretty(&mut *out, &report)
                    .map_err(std::io::Error::other)
                    .and_then(|()| writeln!(out))
            } else {
                write!(out, "{report}")
            };
            res.map_err(AuditError::Output)?;
            Ok(report.exit_code_requiring_anchors(require_anchored))
        }
        AuditCommand::Keygen { dir } => {
            let signer = keygen(&dir)?;
            writeln!(
                out,
                "wrote {} and {}\nkey id {} (sha256 {})",
                dir.join("audit.key").display(),
                dir.join("audit.pub").display(),
                short_id(signer.key_id()),
                hex::encode(signer.key_id())
            )
            .map_err(AuditError::Output)?;
            Ok(0)
        }
        AuditCommand::Search {
            dir,
            filter,
            format,
            kind,
            list,
        } => {
            if kind == "list" {
                let changes = super::changes::list_changes(
                    &dir,
                    list.as_deref(),
                    filter.since.as_deref(),
                    filter.until.as_deref(),
                )?;
                super::changes::write_changes(&changes, format, out)?;
                return Ok(0);
            }
            search(&dir, &filter.build()?, format, out)?;
            Ok(0)
        }
        AuditCommand::Stats {
            dir,
            filter,
            by,
            top,
            format,
            list,
            at,
        } => {
            if let (Some(list), Some(at)) = (list, at) {
                let when = super::time::parse_rfc3339(&at).map_err(AuditError::Arg)?;
                let changes = super::changes::list_changes(&dir, Some(&list), None, None)?;
                let line = match super::changes::in_force_at(&changes, when) {
                    Some(c) => format!(
                        "list {list} at {at}: version {} (sha256 {}, {} {}, since {} seq {})",
                        c.change.version,
                        if c.change.sha256.is_empty() {
                            "-"
                        } else {
                            &c.change.sha256
                        },
                        c.change.source,
                        c.change.outcome,
                        c.ts,
                        c.seq
                    ),
                    None => format!("list {list} at {at}: no version on record"),
                };
                writeln!(out, "{line}").map_err(AuditError::Output)?;
                return Ok(0);
            }
            let report = stats(&dir, &filter.build()?, by, top)?;
            write_stats(&report, format, out)?;
            Ok(0)
        }
    }
}
