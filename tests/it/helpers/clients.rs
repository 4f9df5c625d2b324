//! FTPS clients run as programs against a [`TestApp`]: curl (OpenSSL), Python's ftplib (with
//! TLS session reuse), lftp (GnuTLS) and `fwdist fetch`, the reference IQ.

use std::fs;

use super::{CliOutput, TestApp, run_program};

/// curl exit codes that mean "TLS/transport trouble" (worth one more try), as opposed to an
/// answer from the server.
fn curl_transport_failure(out: &CliOutput) -> bool {
    [
        "curl: (35)",
        "curl: (56)",
        "curl: (7)",
        "curl: (28)",
        "curl: (55)",
        "curl: (8)",
    ]
    .iter()
    .any(|c| out.stderr.contains(c))
}

/// curl fetching `path` into `out` (in the app's directory), over explicit FTPS when `tls`,
/// with `PASV` (`--disable-epsv`).
pub async fn curl(app: &TestApp, user: &str, pass: &str, path: &str, out: &str, tls: bool) -> CliOutput {
    curl_with(app, user, pass, path, out, tls, &["--disable-epsv"]).await
}

/// [`curl`] with other options (`-C -` to resume, `--disable-epsv` for `PASV`).
pub async fn curl_with(
    app: &TestApp,
    user: &str,
    pass: &str,
    path: &str,
    out: &str,
    tls: bool,
    extra: &[&str],
) -> CliOutput {
    let url = format!("ftp://127.0.0.1:{}{path}", app.ftp_addr.port());
    let creds = format!("{user}:{pass}");
    let cert = app.cert_path().display().to_string();
    let mut args = vec![
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        "60",
        "-u",
        &creds,
        "-o",
        out,
    ];
    args.extend_from_slice(extra);
    if tls {
        args.extend(["--ssl-reqd", "--cacert", &cert]);
    }
    args.push(&url);
    let mut result = run_program(app.dir.path(), "curl", &args).await;
    for _ in 0..3 {
        if result.success || !curl_transport_failure(&result) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        result = run_program(app.dir.path(), "curl", &args).await;
    }
    result
}

/// Python's ftplib as an IQ would use it against a server that binds data connections to
/// their session (fwdist, vsftpd's `require_ssl_reuse`): each data connection resumes the
/// control connection's TLS session (`session=`). No retry: fwdist has no AUTH TLS race.
pub const FTPLIB_REUSING: &str = r#"
import ftplib, io, ssl, sys

class ReusingFTP_TLS(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size
"#;

const FTPLIB_SCRIPT: &str = r#"
host, port, user, pw, path, offset, out, cafile = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cafile)
ftp = ReusingFTP_TLS(context=ctx, timeout=60)
ftp.connect(host, int(port))
ftp.auth()
ftp.login(user, pw)
ftp.prot_p()
ftp.voidcmd("TYPE I")
size = ftp.size(path)
with open(out, "wb") as f:
    ftp.retrbinary("RETR " + path, f.write, rest=int(offset) if int(offset) else None)
ftp.quit()
print(size)
"#;

/// ftplib ([`FTPLIB_REUSING`]) fetching `path` from `offset` (`REST`, when not 0) into `out`;
/// prints the file's `SIZE`.
pub async fn ftplib_get(
    app: &TestApp,
    user: &str,
    pass: &str,
    path: &str,
    offset: usize,
    out: &str,
) -> CliOutput {
    fs::write(app.path("fetch.py"), format!("{FTPLIB_REUSING}{FTPLIB_SCRIPT}")).unwrap();
    let port = app.ftp_addr.port().to_string();
    let cert = app.cert_path().display().to_string();
    let off = offset.to_string();
    let args = ["fetch.py", "127.0.0.1", &port, user, pass, path, &off, out, &cert];
    run_program(app.dir.path(), "python3", &args).await
}

/// lftp fetching `path` into `out` over explicit FTPS with protected data (`PASV`), trusting
/// exactly the server's certificate; `resume`: `get -c`, continuing the bytes `out` holds.
pub async fn lftp_get(
    app: &TestApp,
    user: &str,
    pass: &str,
    path: &str,
    out: &str,
    resume: bool,
) -> CliOutput {
    let script = format!(
        "set cmd:fail-exit yes\n\
         set net:max-retries 1\n\
         set net:timeout 20\n\
         set ssl:ca-file \"{cert}\"\n\
         set ssl:verify-certificate yes\n\
         set ftp:ssl-force yes\n\
         set ftp:ssl-protect-data yes\n\
         set ftp:passive-mode yes\n\
         set ftp:prefer-epsv no\n\
         set xfer:clobber yes\n\
         open -u \"{user}\",\"{pass}\" -p {port} ftp://127.0.0.1\n\
         get {c}\"{path}\" -o \"{out}\"\n",
        cert = app.cert_path().display(),
        port = app.ftp_addr.port(),
        c = if resume { "-c " } else { "" },
    );
    let file = format!("{out}.lftp");
    fs::write(app.path(&file), script).unwrap();
    run_program(app.dir.path(), "lftp", &["-f", &file]).await
}

/// What `fwdist fetch` logs in as: a device and the directory of release keys it trusts.
pub struct Iq {
    pub id: String,
    pub secret: String,
    pub trust: String,
}

/// `fwdist fetch` of `model` against the app's control port, state in `state`, 3 attempts.
pub async fn fetch(app: &TestApp, iq: &Iq, model: &str, state: &str) -> CliOutput {
    fetch_from(app, &app.ftp_addr.to_string(), iq, model, state, "3").await
}

/// `fwdist fetch` against `server` (HOST:PORT).
pub async fn fetch_from(
    app: &TestApp,
    server: &str,
    iq: &Iq,
    model: &str,
    state: &str,
    attempts: &str,
) -> CliOutput {
    let args = fetch_args(server, iq, model, state, attempts, "20");
    app.cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await
}

/// The arguments of `fwdist fetch` (`timeout` seconds per network wait), for wherever it
/// runs.
pub fn fetch_args(
    server: &str,
    iq: &Iq,
    model: &str,
    state: &str,
    attempts: &str,
    timeout: &str,
) -> Vec<String> {
    [
        "fetch",
        "--server",
        server,
        "--device",
        &iq.id,
        &format!("--secret={}", iq.secret),
        "--model",
        model,
        "--trust",
        &iq.trust,
        "--state",
        state,
        "--attempts",
        attempts,
        "--timeout",
        timeout,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Asserts `fwdist fetch` (or another command) exited `want`, said `needle` and did not panic.
pub fn assert_exit(out: &CliOutput, want: i32, needle: &str) {
    assert_eq!(
        out.code,
        Some(want),
        "{}\nstdout: {}\nstderr: {}",
        out.args,
        out.stdout,
        out.stderr
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains(needle), "expected {needle:?} in: {all}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}
