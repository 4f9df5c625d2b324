//! The operator commands (SPEC §12): `publish`, `rollout …`, `devices add|pin|unpin`, `report`,
//! `token list|revoke`. Each is one or a few admin API calls ([`super::api`]); what the API
//! answered is printed in words (or as its JSON with `--json`), and a 4xx/5xx is the command's
//! error. Nothing here decides a rule: the server does.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use reqwest::Method;
use serde_json::{Value, json};

use super::api::{Api, ApiArgs, Progress};
use super::release::check_dir;
use crate::domain::DeviceId;
use fwdist_release::manifest::{MANIFEST_NAME, SIGNATURE_NAME};
use fwdist_release::signing::{self, TrustedKeys};

/// Where `serve` looks for trusted release keys by default.
const DEFAULT_TRUSTED: &str = "certs/release-keys";

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Release directory: manifest.json, manifest.json.sig and the image they name.
    pub dir: PathBuf,
    /// Verify the signature against this public key before uploading (without it, against
    /// ./certs/release-keys/*.pub when that directory has keys; the manifest, signature
    /// document, size and SHA-256 are checked in any case, and the server checks the
    /// signature against its trusted keys either way).
    #[arg(long = "pub", value_name = "PUB")]
    pub public: Option<PathBuf>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Create a rollout of a published release.
    Create(RolloutCreate),
    /// List rollouts, newest first.
    List {
        #[arg(long)]
        model: Option<String>,
        /// scheduled, active, paused or aborted.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// One rollout with its counts per device state.
    Show {
        id: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Pause: no device is offered its target until resumed.
    Pause {
        id: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Resume a paused rollout (it pauses again at once if failures are still over its threshold).
    Resume {
        id: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Abort for good.
    Abort {
        id: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Open phase K now (0-based, forward only), bake time or not.
    Phase {
        id: i64,
        k: usize,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct RolloutCreate {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub version: String,
    /// Percent of the eligible devices (0-100).
    #[arg(long, conflicts_with = "phases", value_parser = finite)]
    pub percent: Option<f64>,
    /// Phases as percents, strictly increasing, e.g. 1,10,50,100.
    #[arg(long, value_delimiter = ',', value_parser = finite)]
    pub phases: Option<Vec<f64>>,
    /// A file of device ids (one per line; `#` comments) always selected.
    #[arg(long)]
    pub devices: Option<PathBuf>,
    /// Only devices carrying all of these labels are eligible (repeat or comma-separate).
    #[arg(long = "label", value_delimiter = ',')]
    pub labels: Vec<String>,
    #[arg(long, value_parser = finite)]
    pub success_threshold: Option<f64>,
    #[arg(long, value_parser = finite)]
    pub failure_threshold: Option<f64>,
    #[arg(long)]
    pub min_phase_secs: Option<u64>,
    /// RFC 3339 time the rollout starts (scheduled until then).
    #[arg(long)]
    pub start_at: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct DevicesAdd {
    #[arg(long)]
    pub model: String,
    /// Labels for every device added (repeat or comma-separate).
    #[arg(long = "label", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Device MAC addresses, any of the three forms.
    #[arg(required = true, value_name = "MAC")]
    pub macs: Vec<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct DevicesPin {
    #[arg(value_name = "MAC")]
    pub mac: String,
    pub version: String,
    #[arg(long, default_value = "")]
    pub reason: String,
    /// RFC 3339 time the pin ends.
    #[arg(long)]
    pub expires: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[arg(long, value_name = "MAC")]
    pub device: String,
    #[arg(long)]
    pub version: String,
    #[arg(long, value_parser = ["installed", "failed"])]
    pub outcome: String,
    #[arg(long)]
    pub detail: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// A JSON value in words: `10` for 10.0, `-` for null.
fn num(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A MAC argument, parsed before it goes into a URL path: only the canonical form is sent
/// (a raw argument could carry `../` or `#` and reach another endpoint).
fn device_arg(mac: &str) -> anyhow::Result<DeviceId> {
    DeviceId::parse(mac).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A finite number (clap would take `NaN` and `inf`, which JSON cannot carry).
fn finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a finite number")),
    }
}

// ---- publish ----

/// Uploads a release directory after checking it locally.
///
/// # Errors
/// The local check, the upload, or the API's refusal.
pub async fn publish(args: &PublishArgs) -> anyhow::Result<()> {
    let keys = match &args.public {
        Some(p) => {
            let pem = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(TrustedKeys::from_keys([
                signing::decode_public_key(&pem).with_context(|| format!("{}", p.display()))?
            ]))
        }
        // Without --pub, the server's trusted keys when they are here (the default layout).
        None => TrustedKeys::load_dir(std::path::Path::new(DEFAULT_TRUSTED))
            .ok()
            .filter(|k| !k.is_empty()),
    };
    let checked = check_dir(&args.dir, keys.as_ref())?;
    let api = Api::new(&args.api)?;
    let m = &checked.manifest;
    let size = m.size;
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        let bar = indicatif::ProgressBar::new(size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("uploading {} {}", m.model, m.version));
        Some(bar)
    } else {
        // Off a terminal, progress is plain lines on stdout (stderr is kept for the one error line).
        println!(
            "checked {} {} (sequence {}, {size} bytes); uploading",
            m.model, m.version, m.sequence
        );
        None
    };
    let file = tokio::fs::File::open(&checked.image)
        .await
        .with_context(|| format!("opening {}", checked.image.display()))?;
    let progress = bar.clone();
    let moved = Progress::default();
    let moving = moved.clone();
    let chunks = futures_util::stream::unfold(file, move |mut f| {
        let progress = progress.clone();
        // Asked for the next chunk: the connection took the last one.
        moving.bump();
        async move {
            use tokio::io::AsyncReadExt as _;
            let mut buf = vec![0u8; 256 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    if let Some(b) = &progress {
                        b.inc(n as u64);
                    }
                    Some((Ok::<_, std::io::Error>(buf), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        }
    });
    let image = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(chunks), size)
        .file_name(m.file.clone());
    let form = reqwest::multipart::Form::new()
        .part(
            "manifest",
            reqwest::multipart::Part::bytes(checked.manifest_bytes.clone()).file_name(MANIFEST_NAME),
        )
        .part(
            "signature",
            reqwest::multipart::Part::bytes(checked.signature.clone()).file_name(SIGNATURE_NAME),
        )
        .part("image", image);
    let result = api.upload("/releases", form, &moved).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let (status, body) = result?;
    if api.json {
        Api::print_json(&body);
    } else if status == reqwest::StatusCode::CREATED {
        println!(
            "published {} {} (sequence {}, {} bytes, sha256 {})",
            text(&body, "model"),
            text(&body, "version"),
            num(&body["sequence"]),
            num(&body["size"]),
            text(&body, "sha256")
        );
    } else {
        println!(
            "already published with the same bytes: {} {} (sequence {})",
            text(&body, "model"),
            text(&body, "version"),
            num(&body["sequence"])
        );
    }
    Ok(())
}

// ---- rollouts ----

fn print_rollout(r: &Value) {
    let phases = match r["phases"].as_array() {
        Some(p) => format!(
            ", phase {} of [{}]",
            num(&r["phase"]),
            p.iter().map(num).collect::<Vec<_>>().join(", ")
        ),
        None => String::new(),
    };
    println!(
        "rollout {}: {} {} at {}%{phases}, {}",
        num(&r["id"]),
        text(r, "model"),
        text(r, "version"),
        num(&r["percent"]),
        text(r, "state")
    );
    if let Some(reason) = r["paused_reason"].as_str() {
        println!("  paused: {reason}");
    }
}

fn print_status(r: &Value) {
    let s = &r["status"];
    println!(
        "  targeted {}  started {}  completed {}  aborted only {}",
        num(&s["targeted"]),
        num(&s["started"]),
        num(&s["completed"]),
        num(&s["aborted_only"])
    );
    let st = &s["states"];
    println!(
        "  pending {}  downloading {}  downloaded {}  installed {}  failed {}",
        num(&st["pending"]),
        num(&st["downloading"]),
        num(&st["downloaded"]),
        num(&st["installed"]),
        num(&st["failed"])
    );
    println!(
        "  success threshold {}  failure threshold {}  min phase {} s{}",
        num(&r["success_threshold"]),
        num(&r["failure_threshold"]),
        num(&r["min_phase_secs"]),
        r["start_at"]
            .as_str()
            .map(|t| format!("  starts {t}"))
            .unwrap_or_default()
    );
}

fn read_device_file(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut ids = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let id = DeviceId::parse(line).with_context(|| format!("{} line {}", path.display(), i + 1))?;
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// # Errors
/// Bad arguments, or the API's refusal.
pub async fn rollout(cmd: &RolloutCommand) -> anyhow::Result<()> {
    match cmd {
        RolloutCommand::Create(c) => {
            let mut body = json!({"model": c.model, "version": c.version});
            if let Some(p) = c.percent {
                body["percent"] = json!(p);
            }
            if let Some(p) = &c.phases {
                body["phases"] = json!(p);
            }
            if let Some(f) = &c.devices {
                body["devices"] = json!(read_device_file(f)?);
            }
            if !c.labels.is_empty() {
                body["labels"] = json!(c.labels);
            }
            if let Some(v) = c.success_threshold {
                body["success_threshold"] = json!(v);
            }
            if let Some(v) = c.failure_threshold {
                body["failure_threshold"] = json!(v);
            }
            if let Some(v) = c.min_phase_secs {
                body["min_phase_secs"] = json!(v);
            }
            if let Some(v) = &c.start_at {
                body["start_at"] = json!(v);
            }
            let api = Api::new(&c.api)?;
            let r = api.call(Method::POST, "/rollouts", Some(&body)).await?;
            if api.json {
                Api::print_json(&r);
            } else {
                print!("created ");
                print_rollout(&r);
            }
        }
        RolloutCommand::List { model, state, api } => {
            let api = Api::new(api)?;
            let mut q: Vec<(&str, &str)> = Vec::new();
            if let Some(m) = model {
                q.push(("model", m));
            }
            if let Some(s) = state {
                q.push(("state", s));
            }
            let list = api.get_query("/rollouts", &q).await?;
            if api.json {
                Api::print_json(&list);
                return Ok(());
            }
            let items = list["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                println!("no rollouts");
                return Ok(());
            }
            println!(
                "{:>5}  {:<12} {:<12} {:<10} {:>7} {:>9} {:>9} {:>7}",
                "ID", "MODEL", "VERSION", "STATE", "PERCENT", "TARGETED", "INSTALLED", "FAILED"
            );
            for r in &items {
                println!(
                    "{:>5}  {:<12} {:<12} {:<10} {:>7} {:>9} {:>9} {:>7}",
                    num(&r["id"]),
                    text(r, "model"),
                    text(r, "version"),
                    text(r, "state"),
                    num(&r["percent"]),
                    num(&r["status"]["targeted"]),
                    num(&r["status"]["states"]["installed"]),
                    num(&r["status"]["states"]["failed"])
                );
            }
        }
        RolloutCommand::Show { id, api } => {
            let api = Api::new(api)?;
            let r = api.get(&format!("/rollouts/{id}")).await?;
            if api.json {
                Api::print_json(&r);
            } else {
                print_rollout(&r);
                print_status(&r);
            }
        }
        RolloutCommand::Pause { id, api } => change(api, *id, json!({"state": "paused"})).await?,
        RolloutCommand::Resume { id, api } => change(api, *id, json!({"state": "active"})).await?,
        RolloutCommand::Abort { id, api } => change(api, *id, json!({"state": "aborted"})).await?,
        RolloutCommand::Phase { id, k, api } => change(api, *id, json!({"phase": k})).await?,
    }
    Ok(())
}

async fn change(api: &ApiArgs, id: i64, body: Value) -> anyhow::Result<()> {
    let api = Api::new(api)?;
    let r = api
        .call(Method::PATCH, &format!("/rollouts/{id}"), Some(&body))
        .await?;
    if api.json {
        Api::print_json(&r);
    } else {
        print_rollout(&r);
    }
    Ok(())
}

// ---- devices ----

/// Registers devices one by one, printing `id,secret` as each is created; stops at the
/// first refusal (the ones before it stay registered, and were printed).
///
/// # Errors
/// A malformed MAC (before anything is sent), or the API's refusal.
pub async fn devices_add(a: &DevicesAdd) -> anyhow::Result<()> {
    let ids: Vec<DeviceId> = a
        .macs
        .iter()
        .map(|m| DeviceId::parse(m).map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<anyhow::Result<_>>()?;
    let api = Api::new(&a.api)?;
    for id in ids {
        let body = json!({"id": id.to_string(), "model": a.model, "labels": a.labels});
        let created = api
            .call(Method::POST, "/devices", Some(&body))
            .await
            .with_context(|| format!("device {id}"))?;
        if api.json {
            println!("{created}");
        } else {
            println!("{},{}", text(&created, "id"), text(&created, "secret"));
        }
    }
    Ok(())
}

/// # Errors
/// The API's refusal.
pub async fn devices_pin(a: &DevicesPin) -> anyhow::Result<()> {
    let id = device_arg(&a.mac)?;
    let api = Api::new(&a.api)?;
    let body = json!({"version": a.version, "reason": a.reason, "expires_at": a.expires});
    let pin = api
        .call(Method::PUT, &format!("/devices/{id}/pin"), Some(&body))
        .await?;
    if api.json {
        Api::print_json(&pin);
    } else {
        let until = pin["expires_at"]
            .as_str()
            .map_or_else(|| "until unpinned".to_owned(), |t| format!("until {t}"));
        println!("pinned {id} to {} {until}", text(&pin, "version"));
    }
    Ok(())
}

/// # Errors
/// The API's refusal.
pub async fn devices_unpin(mac: &str, api: &ApiArgs) -> anyhow::Result<()> {
    let id = device_arg(mac)?;
    let api = Api::new(api)?;
    api.call(Method::DELETE, &format!("/devices/{id}/pin"), None)
        .await?;
    if !api.json {
        println!("unpinned {id}: its rollouts decide its target again");
    }
    Ok(())
}

// ---- reports, tokens ----

/// # Errors
/// The API's refusal.
pub async fn report(a: &ReportArgs) -> anyhow::Result<()> {
    let id = device_arg(&a.device)?;
    let api = Api::new(&a.api)?;
    let mut body = json!({"version": a.version, "outcome": a.outcome});
    if let Some(d) = &a.detail {
        body["detail"] = json!(d);
    }
    let r = api
        .call(Method::POST, &format!("/devices/{id}/reports"), Some(&body))
        .await?;
    if api.json {
        Api::print_json(&r);
    } else {
        println!(
            "report {} stored: {} {} {}",
            num(&r["id"]),
            text(&r, "device"),
            text(&r, "version"),
            text(&r, "outcome")
        );
    }
    Ok(())
}

/// # Errors
/// The API's refusal.
pub async fn token_list(api: &ApiArgs) -> anyhow::Result<()> {
    let api = Api::new(api)?;
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    // Bounded: a server that keeps answering `next` cannot keep the command running.
    for _ in 0..100 {
        let mut q = vec![("limit", "1000")];
        if let Some(a) = &after {
            q.push(("after", a));
        }
        let page = api.get_query("/tokens", &q).await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(next) if after.as_deref() != Some(next) => after = Some(next.to_owned()),
            _ => break,
        }
    }
    if api.json {
        Api::print_json(&Value::Array(items));
        return Ok(());
    }
    println!(
        "{:>5}  {:<24} {:<10} {:<25} LAST USED",
        "ID", "NAME", "ROLE", "CREATED"
    );
    for t in &items {
        println!(
            "{:>5}  {:<24} {:<10} {:<25} {}",
            num(&t["id"]),
            text(t, "name"),
            text(t, "role"),
            text(t, "created_at"),
            t["last_used_at"].as_str().unwrap_or("never")
        );
    }
    Ok(())
}

/// # Errors
/// The API's refusal (a token id that does not exist is a 404).
pub async fn token_revoke(id: &str, api: &ApiArgs) -> anyhow::Result<()> {
    if id.parse::<i64>().is_err() {
        bail!("{id:?} is not a token id (see `fwdist token list`)");
    }
    let api = Api::new(api)?;
    api.call(Method::DELETE, &format!("/tokens/{id}"), None).await?;
    if !api.json {
        println!("revoked token {id}: it is refused from now on");
    }
    Ok(())
}
