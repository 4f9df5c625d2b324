//! `GET /api/v1/network-requirements` and `fwdist network-requirements`: the exact outbound
//! rules an IQ's network needs, from the live configuration, as JSON, text, nftables and
//! iptables, with a passive range and in one-port mode (`passive_ports = "same"`: one rule).
//! Loopback addresses only.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{
    BIN, assert_client_error, config_toml, config_toml_at, free_ports, run_cli, run_program,
    spawn_app_with_env,
};

/// The lines that are neither comments nor blank.
fn rule_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect()
}

fn nft_rules(chain: &str, control: u16, passive: (u16, u16)) -> Vec<String> {
    vec![
        format!("add rule inet filter {chain} ct state established,related accept"),
        format!("add rule inet filter {chain} ip daddr 127.0.0.1 tcp dport {control} accept"),
        format!(
            "add rule inet filter {chain} ip daddr 127.0.0.1 tcp dport {}-{} accept",
            passive.0, passive.1
        ),
    ]
}

fn iptables_rules(chain: &str, control: u16, passive: (u16, u16)) -> Vec<String> {
    vec![
        "*filter".to_string(),
        format!("-A {chain} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"),
        format!("-A {chain} -p tcp -d 127.0.0.1 --dport {control} -j ACCEPT"),
        format!(
            "-A {chain} -p tcp -d 127.0.0.1 --dport {}:{} -j ACCEPT",
            passive.0, passive.1
        ),
        "COMMIT".to_string(),
    ]
}

#[tokio::test]
async fn the_api_answers_from_the_live_config_in_every_format() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__PUBLIC_PORT", "2100")]).await;
    let viewer = Some(app.viewer_token.as_str());
    let path = "/api/v1/network-requirements";

    let (status, body) = app.request(Method::GET, path, viewer, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["direction"], "outbound", "{body}");
    assert_eq!(body["inbound"], "none", "{body}");
    assert_eq!(body["tls_versions"], serde_json::json!(["1.2", "1.3"]), "{body}");
    let rules = body["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 2, "{body}");
    let ports = |r: &Value| (r["first_port"].as_u64(), r["last_port"].as_u64());
    assert_eq!(rules[0]["purpose"], "ftps-control");
    assert_eq!(ports(&rules[0]), (Some(2100), Some(2100)), "public_port: {body}");
    assert_eq!(rules[1]["purpose"], "ftps-passive-data");
    let passive = (u64::from(app.passive.0), u64::from(app.passive.1));
    assert_eq!(ports(&rules[1]), (Some(passive.0), Some(passive.1)), "{body}");
    for r in rules {
        assert_eq!(
            (r["protocol"].as_str(), r["host"].as_str()),
            (Some("tcp"), Some("127.0.0.1"))
        );
    }
    assert_eq!(body["control_port"], 2100, "{body}");
    assert_eq!(
        body["check"], "fwdist doctor 127.0.0.1:2100 --ca SERVER-CA.pem",
        "{body}"
    );

    let (status, json) = app
        .request(Method::GET, &format!("{path}?format=json"), viewer, None)
        .await;
    assert_eq!((status, &json), (200, &body), "format=json is the default");

    let get_text = |query: &'static str| {
        let req = app
            .http
            .get(app.url(&format!("{path}?{query}")))
            .bearer_auth(&app.viewer_token);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (status, ct, resp.text().await.unwrap())
        }
    };
    let (status, ct, text) = get_text("format=nftables").await;
    assert_eq!(status, 200, "{text}");
    assert!(ct.starts_with("text/plain"), "content type {ct:?}");
    assert_eq!(
        rule_lines(&text),
        nft_rules("forward", 2100, app.passive),
        "{text}"
    );
    assert!(text.starts_with("# "), "comments first: {text}");

    let (status, ct, text) = get_text("format=nftables&chain=output").await;
    assert!(
        status == 200 && ct.starts_with("text/plain"),
        "{status} {ct}: {text}"
    );
    assert_eq!(
        rule_lines(&text),
        nft_rules("output", 2100, app.passive),
        "{text}"
    );

    let (status, ct, text) = get_text("format=iptables").await;
    assert!(
        status == 200 && ct.starts_with("text/plain"),
        "{status} {ct}: {text}"
    );
    assert_eq!(
        rule_lines(&text),
        iptables_rules("FORWARD", 2100, app.passive),
        "{text}"
    );

    let (status, ct, text) = get_text("format=text").await;
    assert!(
        status == 200 && ct.starts_with("text/plain"),
        "{status} {ct}: {text}"
    );
    let range = format!("127.0.0.1:{}-{}", app.passive.0, app.passive.1);
    for want in [
        "127.0.0.1:2100",
        range.as_str(),
        "nf_conntrack_ftp",
        "MAB",
        "421",
        "fwdist doctor",
    ] {
        assert!(text.contains(want), "{want:?} in text: {text}");
    }

    for bad in [
        "format=yaml",
        "format=",
        "format=JSON",
        "chain=a;b",
        "format=nftables&chain=1abc",
    ] {
        let (status, body) = app
            .request(Method::GET, &format!("{path}?{bad}"), viewer, None)
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_client_error(status, &body, bad);
    }

    let (status, body) = app.request(Method::GET, path, None, None).await;
    assert_eq!(status, 401, "no token: {body}");
    assert_client_error(status, &body, "no token");
    let (status, _) = app
        .request(Method::GET, &format!("{path}?format=nftables"), None, None)
        .await;
    assert_eq!(status, 401, "no token, text format");

    // The CLI, on the server's config naming the port it bound (the server's file says
    // port 0), says the same (less the server's env var).
    fs::write(
        app.path("bound.toml"),
        config_toml_at(app.dir.path(), app.ftp_addr, app.api_addr, app.passive),
    )
    .unwrap();
    let out = app
        .cli(&[
            "network-requirements",
            "--config",
            "bound.toml",
            "--format",
            "json",
        ])
        .await;
    let cli: Value = serde_json::from_str(&out.assert_ok().stdout).unwrap();
    assert_eq!(
        cli["rules"][0]["first_port"].as_u64(),
        Some(u64::from(app.ftp_addr.port()))
    );
    assert_eq!(cli["rules"][1], json["rules"][1], "same passive rule as the API");
}

#[tokio::test]
async fn one_port_mode_is_one_rule_in_the_api_and_the_cli() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__PASSIVE_PORTS", "same")]).await;
    let viewer = Some(app.viewer_token.as_str());
    let path = "/api/v1/network-requirements";
    let port = app.ftp_addr.port();

    let (status, body) = app.request(Method::GET, path, viewer, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["passive_mode"], "same", "{body}");
    assert_eq!(
        body["rules"],
        serde_json::json!([{"purpose": "ftps-control", "protocol": "tcp", "host": "127.0.0.1",
                            "first_port": port, "last_port": port}]),
        "one rule, the control port: {body}"
    );
    assert_eq!(body["control_port"], port, "{body}");
    assert_eq!(
        body["passive_ports"],
        serde_json::json!({"first": port, "last": port}),
        "data connections go to the control port: {body}"
    );

    let get_text = |query: &'static str| {
        let req = app
            .http
            .get(app.url(&format!("{path}?{query}")))
            .bearer_auth(&app.viewer_token);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{query}");
            resp.text().await.unwrap()
        }
    };
    let nft = get_text("format=nftables").await;
    assert_eq!(
        rule_lines(&nft),
        [
            "add rule inet filter forward ct state established,related accept".to_string(),
            format!("add rule inet filter forward ip daddr 127.0.0.1 tcp dport {port} accept"),
        ],
        "{nft}"
    );
    assert!(
        nft.contains("# FTPS control and passive data (one port): explicit FTPS (AUTH TLS).\n"),
        "{nft}"
    );
    let ipt = get_text("format=iptables").await;
    assert_eq!(
        rule_lines(&ipt),
        [
            "*filter".to_string(),
            "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT".to_string(),
            format!("-A FORWARD -p tcp -d 127.0.0.1 --dport {port} -j ACCEPT"),
            "COMMIT".to_string(),
        ],
        "{ipt}"
    );
    let text = get_text("format=text").await;
    for want in [
        "the firewall needs one port only:\n".to_string(),
        format!("  tcp  127.0.0.1:{port}  FTPS control and passive data (one port)\n"),
        "greeted only once".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} in text: {text}");
    }
    assert!(!text.contains("FTPS passive data\n"), "no second rule: {text}");

    // The CLI on the same configuration (the file names the bound port; the mode comes from
    // the environment, as for `serve`) prints the same JSON.
    fs::write(
        app.path("bound.toml"),
        config_toml_at(app.dir.path(), app.ftp_addr, app.api_addr, app.passive),
    )
    .unwrap();
    let args = [
        "network-requirements",
        "--config",
        "bound.toml",
        "--format",
        "json",
    ];
    let out = app
        .cli_with_env(&args, &[("FWDIST_FTPS__PASSIVE_PORTS", Some("same"))])
        .await;
    let cli: Value = serde_json::from_str(&out.assert_ok().stdout).unwrap();
    assert_eq!(cli, body, "the CLI says what the API says");
    nft_accepts(app.dir.path(), &nft).await;
}

/// Writes a test config (loopback, fresh ports) into `dir`; returns (control, passive).
fn write_config(dir: &Path) -> (u16, (u16, u16)) {
    let (ftp, api, passive, _lock) = free_ports();
    fs::write(dir.join("fwdist.toml"), config_toml(ftp, api, passive)).unwrap();
    (ftp.port(), passive)
}

#[tokio::test]
async fn the_cli_prints_iptables_and_nftables_rules_from_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (control, passive) = write_config(dir);

    let args = [
        "network-requirements",
        "--config",
        "fwdist.toml",
        "--format",
        "iptables",
    ];
    let out = run_cli(dir, &args).await;
    out.assert_ok();
    assert_eq!(
        rule_lines(&out.stdout),
        iptables_rules("FORWARD", control, passive),
        "{}",
        out.stdout
    );
    assert!(out.stderr.is_empty(), "nothing on stderr: {}", out.stderr);

    let out = run_cli(dir, &[&args[..], &["--chain", "output"]].concat()).await;
    assert_eq!(
        rule_lines(&out.assert_ok().stdout),
        iptables_rules("OUTPUT", control, passive)
    );

    let out = run_cli(
        dir,
        &[
            "network-requirements",
            "--config",
            "fwdist.toml",
            "--format",
            "nftables",
        ],
    )
    .await;
    let nft = out.assert_ok().stdout.clone();
    assert_eq!(rule_lines(&nft), nft_rules("forward", control, passive), "{nft}");

    // Text is the default format.
    let out = run_cli(dir, &["network-requirements", "--config", "fwdist.toml"]).await;
    assert!(
        out.assert_ok().stdout.contains(&format!("127.0.0.1:{control} ")),
        "{}",
        out.stdout
    );

    // FWDIST_* variables apply as they do for `serve`.
    let env_out = Command::new(BIN)
        .args([
            "network-requirements",
            "--config",
            "fwdist.toml",
            "--format",
            "nftables",
        ])
        .current_dir(dir)
        .env("FWDIST_FTPS__PUBLIC_PORT", "990")
        .env("FWDIST_FTPS__PASSIVE_PORTS", "40000-40000")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(env_out.status.success(), "{env_out:?}");
    let text = String::from_utf8(env_out.stdout).unwrap();
    assert_eq!(
        rule_lines(&text)[1..],
        [
            "add rule inet filter forward ip daddr 127.0.0.1 tcp dport 990 accept",
            "add rule inet filter forward ip daddr 127.0.0.1 tcp dport 40000 accept",
        ],
        "{text}"
    );

    nft_accepts(dir, &nft).await;
}

/// If this machine has nft and may create a network namespace, `nft -c -f` accepts the rules
/// in one that has Debian's default `table inet filter`. Skipped silently otherwise.
async fn nft_accepts(dir: &Path, rules: &str) {
    let have = run_program(dir, "sh", &["-c", "command -v nft && unshare -n true"]).await;
    if !have.success {
        return;
    }
    fs::write(dir.join("rules.nft"), rules).unwrap();
    let script = "nft 'add table inet filter; \
        add chain inet filter input { type filter hook input priority filter; }; \
        add chain inet filter forward { type filter hook forward priority filter; }; \
        add chain inet filter output { type filter hook output priority filter; policy drop; }' \
        && nft -c -f rules.nft";
    let out = run_program(dir, "unshare", &["-n", "sh", "-c", script]).await;
    assert!(
        out.success,
        "nft -c -f refuses the rules:\n{rules}\nstderr: {}",
        out.stderr
    );
}

#[tokio::test]
async fn the_cli_refuses_a_bad_config_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("syntax.toml"), "[ftps\nlisten = \n").unwrap();
    fs::write(
        dir.join("range.toml"),
        "[ftps]\npassive_ports = \"60000-50000\"\n",
    )
    .unwrap();
    for file in ["syntax.toml", "range.toml", "missing.toml"] {
        let out = run_cli(
            dir,
            &["network-requirements", "--config", file, "--format", "iptables"],
        )
        .await;
        out.assert_failed(true);
        assert!(out.stdout.is_empty(), "{file}: no rules printed: {}", out.stdout);
    }
    let out = run_cli(
        dir,
        &[
            "network-requirements",
            "--config",
            "range.toml",
            "--format",
            "text",
        ],
    )
    .await;
    assert!(
        out.stderr.contains("ftps.passive_ports"),
        "names the key: {}",
        out.stderr
    );
    for bad in [["--format", "yaml"], ["--chain", "a;b"]] {
        let out = run_cli(dir, &[&["network-requirements"][..], &bad[..]].concat()).await;
        out.assert_failed(false);
        assert_eq!(out.code, Some(2), "usage error: {}", out.stderr);
    }
}
