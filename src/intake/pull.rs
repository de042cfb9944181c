//! Pull: fetch a managed list from its `pull_url` every
//! `pull_interval_secs` with conditional requests (ETag /
//! If-Modified-Since), fetch its detached signature (`pull_signature_url`,
//! default `{pull_url}.minisig`), and apply it through the same path as a
//! push. A failed fetch or a refused version keeps the last good list,
//! counts `sinkhole_intake_pull_failures_total`, logs, and is put on the
//! record with the reason.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::apply::{Intake, Origin, Refusal, Upload};
use super::config::PullConfig;
use super::sign::decode_minisig;

/// A pulled file larger than this is refused (a registry dump is hundreds
/// of MB; this bounds a runaway or hostile server).
pub const MAX_PULL_BYTES: u64 = 4 << 30;
/// A signature file is a few hundred bytes.
const MAX_SIG_BYTES: usize = 64 * 1024;

/// What one fetch did.
#[derive(Debug, PartialEq, Eq)]
pub enum PullOutcome {
    /// 304, or the same bytes as the version in force.
    Unchanged,
    Applied {
        version: u64,
    },
    Failed(String),
}

fn client(p: &PullConfig) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(10))
        // A large dump over a slow link, but never for ever.
        .timeout(Duration::from_secs(1800));
    if let Some(ca) = &p.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", ca.display()))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| e.to_string())
}

/// Fetch every `interval` for ever (the daemon aborts the task at exit).
pub async fn run(intake: Arc<Intake>, name: String) {
    let Some(p) = intake.list(&name).and_then(|m| m.cfg.pull.clone()) else {
        return;
    };
    let http = match client(&p) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(list = %name, error = %e, "cannot set up the pull client; list not pulled");
            return;
        }
    };
    loop {
        let outcome = pull_once(&intake, &name, &p, &http).await;
        match &outcome {
            PullOutcome::Unchanged => tracing::debug!(list = %name, "pull: unchanged"),
            PullOutcome::Applied { version } => {
                tracing::info!(list = %name, version, "pull: new version in force")
            }
            PullOutcome::Failed(_) => {}
        }
        tokio::time::sleep(p.interval).await;
    }
}

/// One fetch and, when the file changed, one apply.
pub async fn pull_once(
    intake: &Arc<Intake>,
    name: &str,
    p: &PullConfig,
    http: &reqwest::Client,
) -> PullOutcome {
    let origin = Origin::Pull { url: p.url.clone() };
    let fail = |reason: String, record: bool| {
        intake.stats.pull_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(list = %name, url = %p.url, %reason, "pull failed; the last good version keeps serving");
        if record {
            intake.record_refusal(
                name,
                &origin,
                "",
                &Refusal::new(502, "pull", reason.clone()),
            );
        }
        PullOutcome::Failed(reason)
    };
    let Some(m) = intake.list(name) else {
        return PullOutcome::Failed("not a managed list".into());
    };
    let meta = match intake.meta(name) {
        Ok(m) => m,
        Err(e) => return fail(e, true),
    };
    let mut req = http.get(&p.url);
    if let Some(meta) = meta
        .as_ref()
        .filter(|m| m.url.as_deref() == Some(p.url.as_str()))
    {
        if let Some(e) = &meta.etag {
            req = req.header(IF_NONE_MATCH, e);
        }
        if let Some(lm) = &meta.last_modified {
            req = req.header(IF_MODIFIED_SINCE, lm);
        }
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return fail(format!("GET {}: {e}", p.url), true),
    };
    if resp.status() == StatusCode::NOT_MODIFIED {
        return PullOutcome::Unchanged;
    }
    if !resp.status().is_success() {
        return fail(format!("GET {}: HTTP {}", p.url, resp.status()), true);
    }
    let header = |h| {
        resp.headers()
            .get(h)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
    if resp.content_length().is_some_and(|n| n > MAX_PULL_BYTES) {
        return fail(
            format!("GET {}: larger than {MAX_PULL_BYTES} bytes", p.url),
            true,
        );
    }
    let upload = match receive(intake, name, resp).await {
        Ok(u) => u,
        Err(e) => return fail(format!("GET {}: {e}", p.url), true),
    };
    if meta.as_ref().is_some_and(|m| m.sha256 == upload.sha256) {
        // The same bytes again (a server without validators).
        return PullOutcome::Unchanged;
    }
    let mut sigs = Vec::new();
    match fetch_signature(http, &p.signature_url).await {
        Ok(Some(text)) => match decode_minisig(&text) {
            Some(s) => sigs.push(s),
            None => {
                return fail(
                    format!("{}: not a minisign signature", p.signature_url),
                    true,
                );
            }
        },
        Ok(None) if m.cfg.unsigned() => {
            tracing::warn!(list = %name, "pulled list is UNSIGNED (required_signatures = 0)");
        }
        Ok(None) => return fail(format!("{}: no signature published", p.signature_url), true),
        Err(e) if m.cfg.unsigned() => {
            tracing::warn!(list = %name, error = %e, "pulled list is UNSIGNED (required_signatures = 0)");
        }
        Err(e) => return fail(e, true),
    }
    let _guard = m.lock.lock().await;
    let intake2 = intake.clone();
    let name2 = name.to_string();
    let result = tokio::task::spawn_blocking(move || {
        let Some(m) = intake2.list(&name2) else {
            return Err(Refusal::new(404, "not_declared", "list vanished"));
        };
        let origin = Origin::Pull {
            url: m
                .cfg
                .pull
                .as_ref()
                .map(|p| p.url.clone())
                .unwrap_or_default(),
        };
        let r = intake2.apply(m, upload, &sigs, &origin, false, false)?;
        // Remember the validators for the next conditional request.
        if let Ok(Some(mut meta)) = intake2.meta(&name2) {
            meta.etag = etag;
            meta.last_modified = last_modified;
            let _ = intake2.save_meta(&meta);
        }
        Ok(r)
    })
    .await
    .unwrap_or_else(|e| Err(Refusal::new(500, "internal", e.to_string())));
    match result {
        Ok(r) => PullOutcome::Applied { version: r.version },
        // `apply` has recorded the refusal already.
        Err(r) => fail(r.reason, false),
    }
}

async fn fetch_signature(http: &reqwest::Client, url: &str) -> Result<Option<String>, String> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    let bytes = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
    if bytes.len() > MAX_SIG_BYTES {
        return Err(format!(
            "GET {url}: signature larger than {MAX_SIG_BYTES} bytes"
        ));
    }
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| format!("GET {url}: signature is not text"))
}

async fn receive(intake: &Intake, name: &str, resp: reqwest::Response) -> Result<Upload, String> {
    let path = intake
        .incoming_dir()
        .join(format!("{name}-{:016x}.upload", rand::random::<u64>()));
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| e.to_string())?;
    let mut upload = Upload {
        path,
        sha256: String::new(),
        bytes: 0,
    };
    let mut hasher = Sha256::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        upload.bytes += chunk.len() as u64;
        if upload.bytes > MAX_PULL_BYTES {
            return Err(format!("larger than {MAX_PULL_BYTES} bytes"));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    file.sync_all().await.map_err(|e| e.to_string())?;
    upload.sha256 = hex::encode(hasher.finalize());
    Ok(upload)
}
