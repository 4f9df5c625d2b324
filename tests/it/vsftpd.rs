//! `fwdist fetch`'s download part against a plain vsftpd serving the same files (issue 3):
//! the reference IQ must not depend on anything fwdist-specific to update, to see that it has
//! the target already, or to resume a cut download with `REST`.
//!
//! A local Linux account named like a device (`fa-xx-xx-xx-xx-xx`: Linux names cannot hold
//! ':', and `fetch` sends `--device` verbatim) logs in to a vsftpd (explicit FTPS on control
//! and data, passive, chrooted to a tree laid out exactly as fwdist shows it to an IQ, SPEC
//! §4). Needs root, vsftpd and the shadow tools: skipped otherwise, unless
//! `FWDIST_SYSTEM_TESTS=require` (see `helpers::system`).

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::system::Requirements;
use crate::helpers::{CliOutput, PortLock, free_ports, image, run_cli, sha256_hex};

const UPDATED: i32 = 0;
const NO_UPDATE: i32 = 10;

/// Paths of the system programs the test runs.
struct Tools {
    vsftpd: PathBuf,
    useradd: PathBuf,
    userdel: PathBuf,
    chpasswd: PathBuf,
}

#[tokio::test]
async fn fetch_updates_and_resumes_from_a_plain_vsftpd() {
    let mut req = Requirements::new();
    req.root().file("/etc/pam.d/vsftpd", "vsftpd's PAM service");
    let tools = Tools {
        vsftpd: req.program("/usr/sbin/vsftpd"),
        useradd: req.program("useradd"),
        userdel: req.program("userdel"),
        chpasswd: req.program("chpasswd"),
    };
    if !req.met("the vsftpd test") {
        return;
    }

    // vsftpd's session runs as the account: everything it serves must be world-readable.
    let work = tempfile::Builder::new()
        .prefix("fwdist-vsftpd-")
        .tempdir()
        .unwrap();
    let w = work.path();
    fs::set_permissions(w, fs::Permissions::from_mode(0o755)).unwrap();
    let tree = w.join("tree");
    fs::create_dir(&tree).unwrap();
    run_cli(w, &["keygen", "--out", "release"]).await.assert_ok();
    fs::create_dir(w.join("iq-trust")).unwrap();
    fs::copy(w.join("release.pub"), w.join("iq-trust/release.pub")).unwrap();
    let ca = write_certificate(w);

    let img1 = image(3 << 20, 31);
    let m1 = sign(w, "1.0.0", 1, &img1).await;
    serve_release(&tree, &m1);

    let device = random_device_id();
    let secret = hex::encode(random_bytes::<16>());
    let _account = Account::create(&tools, &device, &secret, &tree);
    let server = Vsftpd::start(&tools, w, &tree);
    let iq = Iq {
        dir: w.to_owned(),
        server: server.addr.to_string(),
        device,
        secret,
        ca,
    };

    // A fresh IQ installs the target.
    let out = iq.fetch("st").await;
    server.assert_exit(&out, UPDATED, "updated to 1.0.0 (sequence 1)");
    assert_installed(&w.join("st"), &img1, 1);

    // The same target again: nothing to do.
    let out = iq.fetch("st").await;
    server.assert_exit(&out, NO_UPDATE, "already installed");
    assert_installed(&w.join("st"), &img1, 1);

    // A newer target, and half of its image already on disk from a cut attempt.
    let img2 = image(4 << 20, 32);
    let m2 = sign(w, "2.0.0", 2, &img2).await;
    serve_release(&tree, &m2);
    let half = img2.len() / 2;
    fs::write(w.join("st/download.part"), &img2[..half]).unwrap();
    let out = iq.fetch("st").await;
    server.assert_exit(
        &out,
        UPDATED,
        &format!("updated to 2.0.0 (sequence 2, resumed from byte {half})"),
    );
    assert_installed(&w.join("st"), &img2, 2);
    // vsftpd's own account of the session: REST at the partial size, then only the rest sent.
    let log = server.log();
    let rest = format!("\"REST {half}\"");
    assert!(log.contains(&rest), "no {rest} in the vsftpd log:\n{log}");
    let download = format!("\"/releases/2.0.0/{}\", {} bytes", m2.file, img2.len() - half);
    assert!(
        log.lines()
            .any(|l| l.contains("OK DOWNLOAD") && l.contains(&download)),
        "no OK DOWNLOAD of {download} in the vsftpd log:\n{log}"
    );
}

/// The reference IQ: `fwdist fetch` run in `dir` (state directories are relative to it).
struct Iq {
    dir: PathBuf,
    server: String,
    device: String,
    secret: String,
    ca: PathBuf,
}

impl Iq {
    async fn fetch(&self, state: &str) -> CliOutput {
        let args = [
            "fetch",
            "--server",
            &self.server,
            "--device",
            &self.device,
            &format!("--secret={}", self.secret),
            "--model",
            "iq2",
            "--trust",
            "iq-trust",
            "--state",
            state,
            "--ca",
            self.ca.to_str().unwrap(),
            "--attempts",
            "3",
            "--timeout",
            "20",
        ];
        run_cli(&self.dir, &args).await
    }
}

fn assert_installed(state: &Path, img: &[u8], sequence: u64) {
    let got = fs::read(state.join("firmware.bin")).unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(img), "installed image");
    let st: Value = serde_json::from_slice(&fs::read(state.join("state.json")).unwrap()).unwrap();
    assert_eq!(st["sequence"], sequence, "state.json: {st}");
    assert!(!state.join("download.part").exists(), "download.part left behind");
}

/// A signed build: `manifest.json`, `manifest.json.sig` and the image in `w/build-<version>`.
struct Build {
    dir: PathBuf,
    version: String,
    file: String,
}

async fn sign(w: &Path, version: &str, sequence: u64, img: &[u8]) -> Build {
    let rel = format!("build-{version}");
    fs::create_dir(w.join(&rel)).unwrap();
    fs::write(w.join(&rel).join("firmware.bin"), img).unwrap();
    let seq = sequence.to_string();
    let image_arg = format!("{rel}/firmware.bin");
    let args = [
        "sign",
        "--key",
        "release.key",
        "--model",
        "iq2",
        "--version",
        version,
        "--sequence",
        &seq,
        &image_arg,
    ];
    run_cli(w, &args).await.assert_ok();
    let dir = w.join(rel);
    let m: Value = serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["version"], version);
    Build {
        dir,
        version: version.to_owned(),
        file: m["file"].as_str().unwrap().to_owned(),
    }
}

/// Lays `b` out as fwdist shows a release targeted at the device (SPEC §4, src/ftps/path.rs):
/// `/releases/<version>/{manifest.json, manifest.json.sig, <file>}`, and the manifest and
/// signature again as `/target/manifest.json(.sig)`, replacing the previous target.
fn serve_release(tree: &Path, b: &Build) {
    let rel_dir = tree.join("releases").join(&b.version);
    let target = tree.join("target");
    fs::create_dir_all(&rel_dir).unwrap();
    fs::create_dir_all(&target).unwrap();
    for name in ["manifest.json", "manifest.json.sig", b.file.as_str()] {
        copy_readable(&b.dir.join(name), &rel_dir.join(name));
    }
    for name in ["manifest.json", "manifest.json.sig"] {
        copy_readable(&b.dir.join(name), &target.join(name));
    }
    for dir in [tree, &tree.join("releases"), &rel_dir, &target] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn copy_readable(from: &Path, to: &Path) {
    fs::copy(from, to).unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    fs::set_permissions(to, fs::Permissions::from_mode(0o644)).unwrap();
}

/// A self-signed certificate for 127.0.0.1; returns the certificate's path (also `--ca`).
fn write_certificate(w: &Path) -> PathBuf {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = w.join("server.crt");
    fs::write(&cert, ck.cert.pem()).unwrap();
    let key = w.join("server.key");
    fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    cert
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).unwrap();
    b
}

/// A random locally administered unicast MAC in dashed form, starting with a letter (`fa`) so
/// that it is a valid Linux account name on every shadow version.
fn random_device_id() -> String {
    let tail = random_bytes::<5>().map(|b| format!("{b:02x}"));
    format!("fa-{}", tail.join("-"))
}

/// A local account for the device, deleted on drop (after vsftpd is gone: drop it last).
struct Account {
    name: String,
    userdel: PathBuf,
}

impl Account {
    fn create(tools: &Tools, name: &str, password: &str, home: &Path) -> Self {
        // pam_shells (in Debian's /etc/pam.d/vsftpd) wants a shell listed in /etc/shells.
        let out = Command::new(&tools.useradd)
            .args(["-M", "-s", "/bin/sh", "-d"])
            .arg(home)
            .arg(name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let account = Account {
            name: name.to_owned(),
            userdel: tools.userdel.clone(),
        };
        let mut chpasswd = Command::new(&tools.chpasswd)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = chpasswd.stdin.take().unwrap();
        writeln!(stdin, "{name}:{password}").unwrap();
        drop(stdin);
        let out = chpasswd.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "chpasswd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        account
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        // userdel refuses while a session process of the account lingers: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = Command::new(&self.userdel).arg(&self.name).output();
            if out.as_ref().is_ok_and(|o| o.status.success()) {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("userdel {} failed: {out:?}", self.name);
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// vsftpd in the foreground as a child in its own process group (its session processes too),
/// all killed on drop; its log is printed then when the test is failing.
struct Vsftpd {
    addr: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
    out: PathBuf,
    _ports: PortLock,
}

impl Vsftpd {
    fn start(tools: &Tools, w: &Path, tree: &Path) -> Self {
        let empty = w.join("empty");
        fs::create_dir_all(&empty).unwrap();
        fs::set_permissions(&empty, fs::Permissions::from_mode(0o755)).unwrap();
        let mut failures = Vec::new();
        // Ports are checked free, then bound by vsftpd: another process may take one between.
        for attempt in 0..3 {
            let (ctl, _, (pasv_min, pasv_max), ports) = free_ports();
            let conf = w.join(format!("vsftpd-{attempt}.conf"));
            let log = w.join(format!("vsftpd-{attempt}.log"));
            let out = w.join(format!("vsftpd-{attempt}.out"));
            fs::write(
                &conf,
                format!(
                    "listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=NO
local_root={tree}
chroot_local_user=YES
pam_service_name=vsftpd
secure_chroot_dir={empty}
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
ssl_enable=YES
rsa_cert_file={w}/server.crt
rsa_private_key_file={w}/server.key
ssl_ciphers=HIGH
force_local_logins_ssl=YES
force_local_data_ssl=YES
require_ssl_reuse=NO
pasv_enable=YES
pasv_min_port={pasv_min}
pasv_max_port={pasv_max}
pasv_address=127.0.0.1
port_enable=NO
xferlog_enable=YES
xferlog_std_format=NO
log_ftp_protocol=YES
vsftpd_log_file={log}
",
                    port = ctl.port(),
                    tree = tree.display(),
                    empty = empty.display(),
                    w = w.display(),
                    log = log.display(),
                ),
            )
            .unwrap();
            let out_file = fs::File::create(&out).unwrap();
            let child = Command::new(&tools.vsftpd)
                .arg(&conf)
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(out_file.try_clone().unwrap())
                .stderr(out_file)
                .spawn()
                .unwrap();
            let mut server = Vsftpd {
                addr: ctl,
                child: Some(child),
                log,
                out,
                _ports: ports,
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(e) => {
                    failures.push(e);
                    server.stop();
                }
            }
        }
        panic!("vsftpd did not start: {failures:#?}");
    }

    /// Until vsftpd greets `220` on its port, and it is our child that answered.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("vsftpd exited with {status}: {}", self.output()));
            }
            if let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut greeting = [0u8; 3];
                if s.read_exact(&mut greeting).is_ok()
                    && &greeting == b"220"
                    && self.child.as_mut().unwrap().try_wait().unwrap().is_none()
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("vsftpd not greeting after 15 s: {}", self.output()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn assert_exit(&self, out: &CliOutput, want: i32, needle: &str) {
        let ctx = || {
            format!(
                "{}\nstdout: {}\nstderr: {}\nvsftpd log:\n{}",
                out.args,
                out.stdout,
                out.stderr,
                self.log()
            )
        };
        assert_eq!(out.code, Some(want), "{}", ctx());
        assert!(out.stdout.contains(needle), "expected {needle:?}: {}", ctx());
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The whole group: the listener and any session process it forked.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() || std::env::var_os("TEST_LOG").is_some() {
            eprintln!(
                "===== vsftpd log ({}) =====\n{}\n===== vsftpd output =====\n{}",
                self.log.display(),
                self.log(),
                self.output()
            );
        }
    }
}
