//! The `sinkhole` command: argument parsing, logging set-up, runtime and
//! exit codes. Everything else lives in the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use sinkhole::list::{self, ListOptions};
use sinkhole::report;

/// Exit codes: 0 success, 1 findings (skipped lines, blocked names found by
/// `check`), 2 usage or I/O errors.
const EXIT_FINDINGS: u8 = 1;
const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "sinkhole",
    version,
    about = "DNS blocklist enforcement resolver-proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse list files and report the format, rules by kind and every
    /// skipped line as FILE:LINE: reason. Exit 0 clean, 1 lines skipped, 2 I/O error.
    Check {
        /// Treat any skipped line as an error.
        #[arg(long)]
        strict: bool,
        /// One JSON object per file.
        #[arg(long)]
        json: bool,
        /// Force a format (plain, hosts, adblock, rpz, csv, json, dump, xlsx) instead of detecting it.
        #[arg(long)]
        format: Option<list::Format>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Say whether names are blocked, allowed or untouched, and by which rule;
    /// a host with URL rules only lists them, and a URL argument (`http://host/page`)
    /// says which URL rule (or name rule) covers it.
    Lookup {
        /// A list file or directory (repeatable).
        #[arg(long = "list", required_unless_present = "snapshot")]
        lists: Vec<PathBuf>,
        /// Read a compiled snapshot instead of lists.
        #[arg(long, conflicts_with = "lists")]
        snapshot: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Names added and removed between two versions of a list (files or directories).
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Serve DNS on UDP and TCP: blocked names get the sinkhole answer,
    /// everything else is forwarded upstream.
    Serve {
        /// Configuration file (TOML); without it the embedded default is used.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Validate the configuration, print the effective one and exit (0 valid, 1 invalid).
        #[arg(long)]
        check_config: bool,
        /// Once every listener is bound, write `ROLE ADDRESS` lines here
        /// (roles: dns, metrics, console), so port 0 in the configuration can be
        /// used and the chosen ports read back.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Ask the running server to re-read its lists now and print the
    /// outcome (new version, counts, skipped lines, time taken). Exit 0
    /// when the new lists are in force, 1 when they were rejected, 2 when
    /// the server could not be reached.
    Reload {
        /// Apply the lists even if they fail the shrink or skipped-line guards.
        #[arg(long)]
        force: bool,
        /// The server's control socket.
        #[arg(long, default_value = sinkhole::daemon::control::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print the server's JSON reply as is.
        #[arg(long)]
        json: bool,
    },
    /// Read the audit hit log: verify its hash chain, search it, summarise it.
    Audit {
        #[command(subcommand)]
        command: AuditCli,
    },
    /// The auditors' console: `hash-password` for `[console.basic_auth_users]`.
    Console {
        #[command(subcommand)]
        command: sinkhole::console::ConsoleCommand,
    },
    /// Receive signed audit checkpoints from nodes (their `[audit]
    /// anchor_url`) and keep them, append-only, in DIR: run by the auditor
    /// on a machine the node's operator does not control. Serves
    /// `POST /v1/checkpoints` until SIGTERM or ctrl-c.
    Witness {
        /// ADDRESS:PORT to listen on (repeatable).
        #[arg(long, required = true)]
        listen: Vec<std::net::SocketAddr>,
        /// Where the received checkpoints are kept (one file per key).
        #[arg(long)]
        dir: PathBuf,
        /// Serve HTTPS with this certificate chain (PEM)…
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// …and this private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Accept only checkpoints signed by this key (`audit.pub`;
        /// repeatable). Without it any key is accepted and stored as unverified.
        #[arg(long = "allow-key", value_name = "FILE.pub")]
        allow_keys: Vec<PathBuf>,
        /// Once listening, write `witness ADDRESS` lines here.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Compile lists into a snapshot file that `serve` can memory-map at start.
    Compile {
        #[arg(long = "list", required = true)]
        lists: Vec<PathBuf>,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Version number stored in the snapshot.
        #[arg(long, default_value_t = 1)]
        version: u64,
        /// Also save it as the last good snapshot (with a manifest of the
        /// list files) in this directory, so `serve` with the same lists and
        /// `[lists] state_dir` starts from it without parsing anything.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

/// `sinkhole audit …`: the log's own commands, and `reindex` for the
/// derived index the console reads.
#[derive(Subcommand)]
enum AuditCli {
    #[command(flatten)]
    Log(sinkhole::audit::AuditCommand),
    /// Rebuild the audit index (`DIR/.index`) from the log. The index is
    /// derived: deleting it loses nothing, and `verify` never reads it.
    Reindex(sinkhole::audit::index::ReindexArgs),
}

/// The CLI reads every list with the default options (format detected,
/// the default block action); the server's per-file options come from its
/// configuration.
fn default_options(_: &Path) -> ListOptions {
    ListOptions::default()
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sinkhole: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn serve(
    config: Option<PathBuf>,
    check_config: bool,
    options: sinkhole::daemon::DaemonOptions,
) -> Result<u8> {
    let cfg = match sinkhole::config::Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) if check_config => {
            eprintln!("sinkhole: {e}");
            return Ok(EXIT_FINDINGS);
        }
        Err(e) => return Err(e.into()),
    };
    if check_config {
        print!("{}", cfg.to_toml());
        return Ok(0);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.server.workers)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(sinkhole::daemon::serve(cfg, options))?;
    Ok(0)
}

fn witness(opts: sinkhole::witness::WitnessOptions, ready_file: Option<PathBuf>) -> Result<u8> {
    use sinkhole::daemon::{ListenerRole, wait_for_signal, write_ready_file};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        let w = sinkhole::witness::Witness::bind(&opts).await?;
        let addrs: Vec<_> = w
            .local_addrs()
            .iter()
            .map(|&a| (ListenerRole::Witness, a))
            .collect();
        for (_, a) in &addrs {
            tracing::info!(listen = %a, dir = %opts.dir.display(), keys = opts.allow_keys.len(), "witness ready");
        }
        if let Some(p) = &ready_file {
            write_ready_file(p, &addrs)?;
        }
        w.serve(wait_for_signal()).await;
        if let Some(p) = &ready_file {
            let _ = std::fs::remove_file(p);
        }
        anyhow::Ok(())
    })?;
    Ok(0)
}

fn run(cli: Cli) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Check {
            strict,
            json,
            format,
            files,
        } => {
            let opts = ListOptions {
                format,
                ..ListOptions::default()
            };
            let mut skipped = 0;
            for path in list::parse::list_files(&files)? {
                let parsed = list::parse::parse_file(&path, &opts)?;
                skipped += parsed.skipped.len();
                if json {
                    writeln!(out, "{}", report::check_json(&parsed))?;
                } else {
                    write!(out, "{}", report::check_text(&parsed))?;
                }
            }
            Ok(if skipped > 0 && strict {
                EXIT_ERROR
            } else if skipped > 0 {
                EXIT_FINDINGS
            } else {
                0
            })
        }
        Command::Lookup {
            lists,
            snapshot,
            json,
            names,
        } => {
            let snap = match snapshot {
                Some(p) => list::Snapshot::open(&p)?,
                None => list::load(&lists, &default_options, 1, None)?.snapshot,
            };
            for raw in &names {
                // A URL (`http://host/page`, `host/page`): the rule that
                // covers it, as the web front would decide.
                if raw.contains('/') {
                    let url = match list::url::NormUrl::parse(raw) {
                        Ok(u) => u,
                        Err(e) => {
                            eprintln!("sinkhole: {raw:?}: {e}");
                            return Ok(EXIT_ERROR);
                        }
                    };
                    if json {
                        writeln!(out, "{}", report::lookup_url_json(&snap, raw, &url))?;
                    } else {
                        writeln!(out, "{}", report::lookup_url_text(&snap, raw, &url))?;
                    }
                    continue;
                }
                let name = match list::name::normalize(raw) {
                    Ok(n) => n,
                    Err(e) => {
                        eprintln!("sinkhole: {raw:?}: {e}");
                        return Ok(EXIT_ERROR);
                    }
                };
                if json {
                    writeln!(out, "{}", report::lookup_json(&snap, &name))?;
                } else {
                    writeln!(out, "{}", report::lookup_text(&snap, &name))?;
                }
            }
            Ok(0)
        }
        Command::Diff { old, new, json } => {
            let old = list::load(std::slice::from_ref(&old), &default_options, 1, None)
                .with_context(|| format!("loading {}", old.display()))?;
            let new = list::load(std::slice::from_ref(&new), &default_options, 2, None)
                .with_context(|| format!("loading {}", new.display()))?;
            let d = list::diff(&old.snapshot, &new.snapshot);
            if json {
                writeln!(out, "{}", report::diff_json(&d))?;
            } else {
                write!(out, "{}", report::diff_text(&d))?;
            }
            Ok(0)
        }
        Command::Serve {
            config,
            check_config,
            ready_file,
        } => {
            // Unlock stdout: the server writes its hit log there.
            drop(out);
            serve(
                config,
                check_config,
                sinkhole::daemon::DaemonOptions { ready_file },
            )
        }
        Command::Reload {
            force,
            socket,
            json,
        } => {
            use sinkhole::daemon::control::{Reply, Request, request};
            let reply = request(
                &socket,
                &Request::Reload { force },
                std::time::Duration::from_secs(120),
            )
            .with_context(|| "is `sinkhole serve` running? (see --socket)")?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&reply)?)?;
            } else {
                write!(out, "{}", report::reload_text(&reply))?;
            }
            Ok(match reply {
                Reply::Reloaded(_) | Reply::Status { .. } => 0,
                Reply::Rejected { .. } => EXIT_FINDINGS,
                Reply::Error { .. } => EXIT_ERROR,
            })
        }
        Command::Audit {
            command: AuditCli::Log(command),
        } => {
            let code = sinkhole::audit::run(command, &mut out)?;
            Ok(u8::try_from(code).unwrap_or(EXIT_ERROR))
        }
        Command::Audit {
            command: AuditCli::Reindex(args),
        } => {
            sinkhole::audit::index::run_reindex(&args, &mut out)?;
            Ok(0)
        }
        Command::Console { command } => {
            sinkhole::console::run_cli(command, &mut std::io::stdin().lock(), &mut out)?;
            Ok(0)
        }
        Command::Witness {
            listen,
            dir,
            tls_cert,
            tls_key,
            allow_keys,
            ready_file,
        } => {
            drop(out);
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(sinkhole::http::TlsSettings { cert, key }),
                _ => None,
            };
            let opts = sinkhole::witness::WitnessOptions {
                listen,
                dir,
                tls,
                allow_keys,
            };
            witness(opts, ready_file)
        }
        Command::Compile {
            lists,
            output,
            version,
            state_dir,
        } => {
            // With a state directory, the byte copies and manifest a server
            // needs to start from this snapshot are kept as it is compiled.
            let loaded = match &state_dir {
                Some(dir) => {
                    list::state::compile_last_good(dir, &lists, &default_options, version)?
                }
                None => list::load(&lists, &default_options, version, None)?,
            };
            for msg in &loaded.skipped {
                eprintln!("{msg}");
            }
            loaded.snapshot.save(&output)?;
            let c = loaded.counts();
            writeln!(
                out,
                "{}: version {} rules {} bytes {} (names {} wildcards {} allows {} keywords {}; skipped {}) parse {:?} compile {:?}",
                output.display(),
                version,
                loaded.snapshot.rule_count(),
                loaded.snapshot.byte_len(),
                c.names,
                c.wildcards,
                c.allows,
                c.keywords,
                c.skipped,
                loaded.parse_time,
                loaded.compile_time
            )?;
            Ok(0)
        }
    }
}
