//! `fwdist keygen`, `fwdist sign`, `fwdist verify`: the release engineer's offline tools.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::{Model, Sha256Digest, Version};
use fwdist_release::manifest::{MANIFEST_NAME, Manifest, SIGNATURE_NAME, is_valid_file_name};
use fwdist_release::signing::{self, TrustedKeys};

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Private key (PKCS#8 PEM) from `fwdist keygen`.
    #[arg(long)]
    pub key: PathBuf,
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub version: String,
    /// Must grow with every release of the model (IQs refuse a lower one).
    #[arg(long)]
    pub sequence: u64,
    /// RFC 3339 time after which IQs refuse the manifest.
    #[arg(long)]
    pub expires: Option<String>,
    #[arg(long)]
    pub notes: Option<String>,
    /// Directory for manifest.json and manifest.json.sig (default: beside IMAGE).
    #[arg(long)]
    pub out: Option<PathBuf>,
    pub image: PathBuf,
}

/// # Errors
/// Existing key files or write failures.
pub fn keygen(prefix: &Path) -> anyhow::Result<()> {
    let key = signing::generate_key().context("no randomness")?;
    let (private, public) = signing::encode_key_pair(&key)?;
    let key_path = with_suffix(prefix, "key");
    let pub_path = with_suffix(prefix, "pub");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            bail!("{} already exists; refusing to overwrite a key", p.display());
        }
    }
    write_new(&key_path, private.as_bytes(), 0o600)?;
    write_new(&pub_path, public.as_bytes(), 0o644)?;
    println!(
        "wrote {} and {} (keyid {})",
        key_path.display(),
        pub_path.display(),
        signing::key_id(&key.verifying_key())
    );
    Ok(())
}

/// # Errors
/// Bad arguments, unreadable key or image, or write failures.
pub fn sign(a: &SignArgs) -> anyhow::Result<()> {
    let model = Model::parse(&a.model)?;
    let version = Version::parse(&a.version)?;
    if a.sequence > i64::MAX as u64 {
        bail!("--sequence must be at most {}", i64::MAX);
    }
    let expires_at = a
        .expires
        .as_deref()
        .map(|s| {
            OffsetDateTime::parse(s, &Rfc3339).with_context(|| format!("--expires {s:?} is not RFC 3339"))
        })
        .transpose()?;
    let pem = std::fs::read_to_string(&a.key).with_context(|| format!("reading {}", a.key.display()))?;
    let key = signing::decode_private_key(&pem).with_context(|| format!("{}", a.key.display()))?;
    let file = a
        .image
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    if !is_valid_file_name(&file) {
        bail!("image file name {file:?} is not allowed: use 1-64 of [A-Za-z0-9._-], not starting with '.'");
    }
    let (size, sha256) = hash_file(&a.image)?;
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let manifest = Manifest {
        schema: 1,
        model,
        version,
        sequence: a.sequence,
        file,
        size,
        sha256,
        created_at: now,
        expires_at,
        notes: a.notes.clone(),
    };
    let bytes = manifest.to_bytes()?;
    Manifest::parse(&bytes).context("the manifest would not be valid")?;
    let sig = signing::sign_manifest(&key, &bytes)?;
    let dir = match &a.out {
        Some(d) => d.clone(),
        None => a.image.parent().map(Path::to_owned).unwrap_or_default(),
    };
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    replace_file(&dir.join(MANIFEST_NAME), &bytes)?;
    replace_file(&dir.join(SIGNATURE_NAME), &sig)?;
    println!(
        "signed {} {} (sequence {}, {} bytes, sha256 {}) -> {}",
        manifest.model,
        manifest.version,
        manifest.sequence,
        size,
        sha256,
        dir.join(MANIFEST_NAME).display()
    );
    Ok(())
}

/// # Errors
/// Any check that does not hold, named.
pub fn verify(public: &Path, dir: &Path) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(public).with_context(|| format!("reading {}", public.display()))?;
    let key = signing::decode_public_key(&pem).with_context(|| format!("{}", public.display()))?;
    let checked = check_dir(dir, Some(&TrustedKeys::from_keys([key])))?;
    let m = &checked.manifest;
    println!(
        "OK: {} {} sequence {} ({} bytes) signed by keyid {}",
        m.model,
        m.version,
        m.sequence,
        m.size,
        checked.keyid.as_deref().unwrap_or("?")
    );
    Ok(())
}

/// A release directory whose manifest, signature document and image agree.
#[derive(Debug)]
pub struct CheckedDir {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    pub image: PathBuf,
    /// The key that signed it, when the check had keys to verify against.
    pub keyid: Option<String>,
}

/// Checks a release directory: the manifest parses, the signature document is one, the image
/// has the manifest's size and SHA-256 and, given `keys`, the signature verifies. Warns on
/// standard error when the manifest has expired.
///
/// # Errors
/// The first thing that does not hold, naming the file.
pub fn check_dir(dir: &Path, keys: Option<&TrustedKeys>) -> anyhow::Result<CheckedDir> {
    let manifest_path = dir.join(MANIFEST_NAME);
    let bytes =
        std::fs::read(&manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?;
    let sig_path = dir.join(SIGNATURE_NAME);
    let sig = std::fs::read(&sig_path).with_context(|| format!("reading {}", sig_path.display()))?;
    let keyid = match keys {
        Some(k) => Some(k.verify(&sig, &bytes)?),
        None => {
            serde_json::from_slice::<signing::SignatureEnvelope>(&sig)
                .with_context(|| format!("{} is not a signature document", sig_path.display()))?;
            None
        }
    };
    let m = Manifest::parse(&bytes).with_context(|| format!("{}", manifest_path.display()))?;
    let image = dir.join(&m.file);
    let (size, sha256) = hash_file(&image)?;
    if size != m.size {
        bail!("{}: size is {size} bytes, manifest says {}", m.file, m.size);
    }
    if sha256 != m.sha256 {
        bail!("{}: sha256 is {sha256}, manifest says {}", m.file, m.sha256);
    }
    if m.expires_at.is_some_and(|e| e <= OffsetDateTime::now_utc()) {
        eprintln!("warning: the manifest has expired; IQs will refuse it");
    }
    Ok(CheckedDir {
        manifest: m,
        manifest_bytes: bytes,
        signature: sig,
        image,
        keyid,
    })
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn hash_file(path: &Path) -> anyhow::Result<(u64, Sha256Digest)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, Sha256Digest(h.finalize().into())))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes beside, then renames: a reader never sees half a manifest.
fn replace_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = with_suffix(path, "tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
