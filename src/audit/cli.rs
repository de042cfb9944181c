//! `sinkhole audit …`: the auditor's commands.

use std::io::Write;
use std::path::PathBuf;

use super::AuditError;
use super::config::load_key;
use super::query::{OutputFormat, SearchFilter, StatsBy, parse_client, search, stats, write_stats};
use super::verify::verify;

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
    Verify {
        /// The audit log directory (or a single log file).
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the blocked queries that match every given filter, in log order.
    Search {
        dir: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
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
    },
}

/// Runs one audit command, writing its output to `out`. Returns the exit
/// code (verify: 0 intact, 1 broken; others 0). Errors (unreadable files,
/// bad arguments) are for the caller to report, conventionally as exit 2.
pub fn run(cmd: AuditCommand, out: &mut dyn Write) -> Result<i32, AuditError> {
    match cmd {
        AuditCommand::Verify { dir, json } => {
            let report = verify(&dir)?;
            let res = if json {
                serde_json::to_writer_pretty(&mut *out, &report)
                    .map_err(std::io::Error::other)
                    .and_then(|()| writeln!(out))
            } else {
                write!(out, "{report}")
            };
            res.map_err(AuditError::Output)?;
            Ok(report.exit_code())
        }
        AuditCommand::Search {
            dir,
            filter,
            format,
        } => {
            search(&dir, &filter.build()?, format, out)?;
            Ok(0)
        }
        AuditCommand::Stats {
            dir,
            filter,
            by,
            top,
            format,
        } => {
            let report = stats(&dir, &filter.build()?, by, top)?;
            write_stats(&report, format, out)?;
            Ok(0)
        }
    }
}
