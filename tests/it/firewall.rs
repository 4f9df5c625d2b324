//! Proof through a real firewall (issue 4). The test builds an "IQ site": a network namespace
//! joined to this machine by a veth pair it creates, with an nftables policy that drops all
//! outbound traffic except what `fwdist network-requirements --format nftables` printed.
//! Through it, `fwdist fetch` updates and `fwdist doctor` passes every step. With one passive
//! port taken out of the rules, the doctor names exactly that port (exit 3, "degraded") and
//! the update still succeeds, as designed: the session that drew the blocked port is closed
//! by the server when its offer expires, and the IQ's retry gets the next ports in turn.
//! In one-port mode (`ftps.passive_ports = "same"`) the published rules name the control port
//! only, and a fleet behind the site's one address updates through them, one IQ after another
//! and twenty at once, and the doctor passes, naming the one port.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); see `helpers::system`. Only addresses
//! on the veth pair the test creates (10.213.N.1 and .2) are used.

use serde_json::json;
use std::fs;

use crate::helpers::clients::{Iq, fetch_args};
use crate::helpers::system::Requirements;
use crate::helpers::{
    BIN, CliOutput, TestApp, image, run_program, sha256_hex, spawn_app_one_port_with_env, spawn_app_with_env,
};
use crate::oneport::{assert_each_installed_its_own, assert_fleet_records, fleet};

/// The site namespace and the veth pair; removed on drop, even when the test fails.
struct Site {
    ns: String,
    host_if: String,
    server_ip: String,
    ip: String,
}

impl Site {
    /// `slot` (0 or 1) keeps the subnets of the tests of one process apart.
    fn create(ip_cmd: &str, slot: u32) -> Site {
        let n = std::process::id() % 100 * 2 + slot + 20;
        let tag = format!("{:x}", std::process::id() ^ rand_u32());
        let site = Site {
            ns: format!("fwdist-site-{tag}"),
            host_if: format!("fwh{}", &tag[..tag.len().min(8)]),
            server_ip: format!("10.213.{n}.1"),
            ip: format!("10.213.{n}.2"),
        };
        let peer_if = format!("fws{}", &tag[..tag.len().min(8)]);
        let run = |args: &[&str]| {
            let out = std::process::Command::new(ip_cmd).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["netns", "add", &site.ns]);
        run(&[
            "link",
            "add",
            &site.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
        ]);
        run(&["link", "set", &peer_if, "netns", &site.ns]);
        run(&[
            "addr",
            "add",
            &format!("{}/30", site.server_ip),
            "dev",
            &site.host_if,
        ]);
        run(&["link", "set", &site.host_if, "up"]);
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &site.ns, ip_cmd];
            all.extend_from_slice(args);
            run(&all);
        };
        in_ns(&["addr", "add", &format!("{}/30", site.ip), "dev", &peer_if]);
        in_ns(&["link", "set", &peer_if, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        site
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .output();
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    u32::from_ne_bytes(b)
}

/// Runs `fwdist ARGS` inside the site namespace, from the server's directory.
async fn in_site(app: &TestApp, site: &Site, args: &[&str]) -> CliOutput {
    let mut all = vec!["netns", "exec", site.ns.as_str(), BIN];
    all.extend_from_slice(args);
    run_program(app.dir.path(), "ip", &all).await
}

/// Loads an nftables file into the site namespace.
async fn nft(app: &TestApp, site: &Site, nft_cmd: &str, name: &str, rules: &str) {
    fs::write(app.path(name), rules).unwrap();
    let out = run_program(
        app.dir.path(),
        "ip",
        &["netns", "exec", &site.ns, nft_cmd, "-f", name],
    )
    .await;
    assert!(out.success, "nft -f {name}:\n{rules}\n{}", out.stderr);
}

/// Debian's default `table inet filter`, except that the IQ site's output policy is drop.
const SITE_BASE: &str = "flush ruleset
table inet filter {
  chain input { type filter hook input priority filter; policy accept; }
  chain forward { type filter hook forward priority filter; policy drop; }
  chain output { type filter hook output priority filter; policy drop; }
}
";

/// `ip` and `nft`, when the machine has them and the test runs as root.
fn tools(test: &str) -> Option<(String, String)> {
    let mut req = Requirements::new();
    req.root();
    let ip_cmd = req.program("ip");
    let nft_cmd = req.program("nft");
    if !req.met(test) {
        return None;
    }
    Some((
        ip_cmd.to_str().unwrap().to_owned(),
        nft_cmd.to_str().unwrap().to_owned(),
    ))
}

/// The rules exactly as fwdist publishes them for a firewall on the IQ host itself, from the
/// configuration the server runs with (its file plus the FWDIST_* overrides of the test:
/// the site's `listen` and `public_host`, and `passive_ports` when given).
async fn published_rules(app: &TestApp, site: &Site, listen: &str, passive: Option<&str>) -> String {
    let mut site_config = crate::helpers::config_toml(app.ftp_addr, app.api_addr, app.passive)
        .replace(
            &format!("listen = \"{}\"", app.ftp_addr),
            &format!("listen = \"{listen}\""),
        )
        .replace(
            "public_host = \"127.0.0.1\"",
            &format!("public_host = \"{}\"", site.server_ip),
        );
    if let Some(p) = passive {
        site_config = site_config.replace(
            &format!("passive_ports = \"{}-{}\"", app.passive.0, app.passive.1),
            &format!("passive_ports = \"{p}\""),
        );
    }
    fs::write(app.path("site.toml"), site_config).unwrap();
    let out = app
        .cli(&[
            "network-requirements",
            "--config",
            "site.toml",
            "--format",
            "nftables",
            "--chain",
            "output",
        ])
        .await;
    out.assert_ok();
    assert!(out.stdout.contains(&site.server_ip), "{}", out.stdout);
    out.stdout
}

/// `fwdist doctor SERVER` with short timeouts, and `extra`.
fn doctor_args<'a>(server: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "doctor",
        server,
        "--ca",
        "certs/server.crt",
        "--timeout-secs",
        "2",
        "--data-timeout-secs",
        "2",
    ];
    v.extend_from_slice(extra);
    v
}

/// `fwdist fetch` inside the site namespace.
#[allow(clippy::too_many_arguments)]
async fn fetch_in_site(
    app: &TestApp,
    site: &Site,
    server: &str,
    iq: &Iq,
    model: &str,
    state: &str,
    attempts: &str,
    timeout: &str,
) -> CliOutput {
    let args = fetch_args(server, iq, model, state, attempts, timeout);
    in_site(app, site, &args.iter().map(String::as_str).collect::<Vec<_>>()).await
}

#[tokio::test]
async fn an_iq_behind_exactly_the_published_rules_updates_and_doctor_names_a_blocked_port() {
    let Some((ip_cmd, nft_cmd)) = tools("the firewall test") else {
        return;
    };
    let (ip_cmd, nft_cmd) = (ip_cmd.as_str(), nft_cmd.as_str());
    let site = Site::create(ip_cmd, 0);
    let listen = format!("{}:2121", site.server_ip);
    let mut app = spawn_app_with_env(&[
        ("FWDIST_FTPS__LISTEN", &listen),
        ("FWDIST_FTPS__PUBLIC_HOST", &site.server_ip),
        ("FWDIST_FTPS__DATA_CONNECT_TIMEOUT_SECS", "2"),
    ])
    .await;
    // Four passive ports, as the goal allows.
    app.passive = (app.passive.0, app.passive.0 + 3);
    app.write_config();
    app.restart().await;
    let ports: Vec<u16> = (app.passive.0..=app.passive.1).collect();

    let img = image(1 << 20, 41);
    app.publish("iq2", "1.0.0", 1, &img).await;
    let dev = app.create_device("aa:bb:cc:40:00:01", "iq2").await;
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "percent": 100}))
        .await;
    let iq = Iq {
        id: dev.id.clone(),
        secret: dev.secret.clone(),
        trust: app.iq_trust(),
    };
    let published = published_rules(&app, &site, &listen, None).await;

    // The policy alone blocks an update: the test's firewall really drops.
    nft(&app, &site, nft_cmd, "base.nft", SITE_BASE).await;
    let server = listen.as_str();
    let blocked = in_site(&app, &site, &doctor_args(server, &[])).await;
    assert_eq!(blocked.code, Some(1), "{}\n{}", blocked.stdout, blocked.stderr);
    assert!(
        blocked
            .stdout
            .contains(&format!("outbound TCP to {listen} is blocked")),
        "{}",
        blocked.stdout
    );

    // With the published rules: doctor passes every step and every port; fetch updates.
    nft(&app, &site, nft_cmd, "published.nft", &published).await;
    let ok = in_site(&app, &site, &doctor_args(server, &[])).await;
    assert_eq!(ok.code, Some(0), "{}\n{}", ok.stdout, ok.stderr);
    for p in &ports {
        assert!(ok.stdout.contains(&format!("ok   port {p}")), "{}", ok.stdout);
    }
    let fetch = |state: &'static str| fetch_in_site(&app, &site, server, &iq, "iq2", state, "6", "3");
    let first = fetch("st-open").await;
    assert_eq!(first.code, Some(0), "{}\n{}", first.stdout, first.stderr);
    assert_eq!(
        sha256_hex(&fs::read(app.path("st-open/firmware.bin")).unwrap()),
        sha256_hex(&img)
    );

    // One passive port taken out of the rules.
    let gone = ports[2];
    let kept: Vec<String> = ports.iter().filter(|p| **p != gone).map(u16::to_string).collect();
    let reduced = format!(
        "{SITE_BASE}add rule inet filter output ct state established,related accept\n\
         add rule inet filter output ip daddr {ip} tcp dport {{ 2121, {kept} }} accept\n",
        ip = site.server_ip,
        kept = kept.join(", ")
    );
    nft(&app, &site, nft_cmd, "reduced.nft", &reduced).await;
    let degraded = in_site(&app, &site, &doctor_args(server, &[])).await;
    assert_eq!(degraded.code, Some(3), "{}\n{}", degraded.stdout, degraded.stderr);
    let blocked_line = format!("outbound TCP to {}:{gone} is blocked", site.server_ip);
    assert!(degraded.stdout.contains(&blocked_line), "{}", degraded.stdout);
    for p in ports.iter().filter(|p| **p != gone) {
        assert!(
            degraded.stdout.contains(&format!("ok   port {p}")),
            "{}",
            degraded.stdout
        );
    }
    // The update still succeeds: a session that draws the blocked port is retried. And the
    // server sees it: unused offers from the site's address, last on exactly that port. Ports
    // are offered round robin, so which one a fetch draws first depends on the offers before
    // it (the doctor's among them): fetch again until one has drawn the blocked port, which
    // the rotation reaches within one fetch per port. An unused offer is counted when it
    // expires (data_connect_timeout_secs after it was made), which on a loaded machine can be
    // after the fetch has returned: wait for it, up to a deadline, after each fetch.
    let mut row = None;
    let mut last = serde_json::Value::Null;
    for attempt in 0..=ports.len() {
        let state: &'static str = Box::leak(format!("st-reduced-{attempt}").into_boxed_str());
        let updated = fetch(state).await;
        assert_eq!(updated.code, Some(0), "{}\n{}", updated.stdout, updated.stderr);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(12);
        while row.is_none() && std::time::Instant::now() < deadline {
            let (_, body) = app.get("/api/v1/diagnostics").await;
            row = body["client_ips"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["key"] == site.ip.as_str() && r["last_unused_port"] == gone)
                .cloned();
            last = body;
            if row.is_none() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
        if row.is_some() {
            break;
        }
    }
    let row = row.unwrap_or_else(|| panic!("{} with last_unused_port {gone} in {last}", site.ip));
    assert!(row["passive_offers_unused"].as_u64().unwrap() >= 1, "{row}");
    assert_eq!(row["last_unused_port"], gone, "{row}");
    println!("doctor, one passive port blocked:\n{}", degraded.stdout);
}

#[tokio::test]
async fn an_iq_behind_one_port_updates_through_the_published_rule_one_after_another_and_all_at_once() {
    let Some((ip_cmd, nft_cmd)) = tools("the one-port firewall test") else {
        return;
    };
    let site = Site::create(&ip_cmd, 1);
    let listen = format!("{}:2121", site.server_ip);
    let app = spawn_app_one_port_with_env(&[
        ("FWDIST_FTPS__LISTEN", &listen),
        ("FWDIST_FTPS__PUBLIC_HOST", &site.server_ip),
        ("FWDIST_FTPS__MAX_SESSIONS_PER_IP", "64"),
    ])
    .await;
    let devs = fleet(&app, 60, 20).await;
    let published = published_rules(&app, &site, &listen, Some("same")).await;
    // One port: every rule that opens a port names the control port, and nothing else.
    let dports: Vec<&str> = published
        .lines()
        .filter(|l| l.starts_with("add rule"))
        .filter_map(|l| l.split(" dport ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert_eq!(
        dports,
        ["2121"],
        "the one-port rules are one rule, for the control port:\n{published}"
    );

    // The policy alone blocks: the test's firewall really drops.
    nft(&app, &site, &nft_cmd, "base.nft", SITE_BASE).await;
    let server = listen.as_str();
    let blocked = in_site(&app, &site, &doctor_args(server, &[])).await;
    assert_eq!(blocked.code, Some(1), "{}\n{}", blocked.stdout, blocked.stderr);

    nft(&app, &site, &nft_cmd, "published.nft", &published).await;
    let iqs: Vec<Iq> = devs.iter().map(|d| d.iq(&app)).collect();
    let fetch = |i: usize, prefix: &'static str| {
        let state = format!("{prefix}-{i}");
        let (app, site, iq, model) = (&app, &site, &iqs[i], devs[i].model.as_str());
        async move { fetch_in_site(app, site, server, iq, model, &state, "3", "20").await }
    };
    let mut sequential = Vec::new();
    for i in 0..devs.len() {
        sequential.push(fetch(i, "site-seq").await);
    }
    assert_each_installed_its_own(&app, &devs, &sequential, "site-seq");
    let concurrent = futures_util::future::join_all((0..devs.len()).map(|i| fetch(i, "site-par"))).await;
    assert_each_installed_its_own(&app, &devs, &concurrent, "site-par");
    assert_fleet_records(&app, &devs, 2).await;
    let (_, body) = app.get("/api/v1/downloads?limit=1000").await;
    for r in body["items"].as_array().unwrap() {
        assert_eq!(r["client_ip"], site.ip.as_str(), "{r}");
    }

    // What the doctor makes of one port, through the same rule.
    let doctor = in_site(&app, &site, &doctor_args(server, &[])).await;
    println!(
        "doctor through the one-port rule:\n{}{}",
        doctor.stdout, doctor.stderr
    );
    assert_eq!(doctor.code, Some(0), "{}\n{}", doctor.stdout, doctor.stderr);
    assert!(doctor.stdout.contains("ok   port 2121"), "{}", doctor.stdout);
    assert!(
        doctor
            .stdout
            .contains("ok   passive-range: one port: data connections use the control port 2121"),
        "{}",
        doctor.stdout
    );
}
