//! Running `fwdist` and other programs to completion, off the async runtime.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::BIN;

pub struct CliOutput {
    pub args: String,
    pub success: bool,
    /// The exit code (None when killed by a signal or the harness).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.success,
            "`fwdist {}` failed:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    /// Non-zero exit, no panic. `one_line`: stderr is exactly one non-empty line.
    pub fn assert_failed(&self, one_line: bool) {
        let ctx = format!(
            "`fwdist {}`\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        assert!(!self.success, "expected failure: {ctx}");
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "panic: {ctx}"
        );
        assert!(!self.stderr.trim().is_empty(), "no error message: {ctx}");
        if one_line {
            assert_eq!(
                self.stderr.trim().lines().count(),
                1,
                "expected one stderr line: {ctx}"
            );
        }
    }
}

pub async fn run_cli(dir: &Path, args: &[&str]) -> CliOutput {
    run_cli_with_env(dir, args, &[]).await
}

/// [`run_cli`] with environment changes: `(NAME, Some(value))` sets, `(NAME, None)` removes.
pub async fn run_cli_with_env(dir: &Path, args: &[&str], env: &[(&str, Option<&str>)]) -> CliOutput {
    let out = run_program_with_env(dir, BIN, args, env).await;
    let shown: Vec<String> = env
        .iter()
        .map(|(k, v)| format!("{k}={} ", v.unwrap_or("(unset)")))
        .collect();
    CliOutput {
        args: format!("{}{}", shown.concat(), args.join(" ")),
        ..out
    }
}

/// Runs any program to completion off the async runtime.
pub async fn run_program(dir: &Path, program: &str, args: &[&str]) -> CliOutput {
    run_program_with_env(dir, program, args, &[]).await
}

async fn run_program_with_env(
    dir: &Path,
    program: &str,
    args: &[&str],
    env: &[(&str, Option<&str>)],
) -> CliOutput {
    let dir = dir.to_path_buf();
    let program = program.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, Option<String>)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_owned)))
        .collect();
    tokio::task::spawn_blocking(move || {
        let ctx = format!("{program} {}", args.join(" "));
        let mut cmd = Command::new(&program);
        for (k, v) in &env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let mut child = cmd
            .args(&args)
            .current_dir(&dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {ctx}: {e}"));
        // Drain the pipes on threads so a chatty child cannot block; kill it after 60 s.
        let mut out_pipe = child.stdout.take().unwrap();
        let mut err_pipe = child.stderr.take().unwrap();
        let out_t = std::thread::spawn(move || read_all(&mut out_pipe));
        let err_t = std::thread::spawn(move || read_all(&mut err_pipe));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = out_t.join().unwrap();
        let mut stderr = err_t.join().unwrap();
        if status.is_none() {
            stderr.push_str(&format!(
                "\n[test harness] `{ctx}` did not exit within 60 s and was killed"
            ));
        }
        CliOutput {
            args: ctx,
            success: status.is_some_and(|s| s.success()),
            code: status.and_then(|s| s.code()),
            stdout,
            stderr,
        }
    })
    .await
    .unwrap()
}

fn read_all(r: &mut impl std::io::Read) -> String {
    let mut buf = Vec::new();
    let _ = r.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
