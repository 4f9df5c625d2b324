//! Proof through a real firewall (issue 4). The test builds an "IQ site": a network namespace
//! joined to this machine by a veth pair it creates, with an nftables policy that drops all
//! outbound traffic except what `fwdist network-requirements --format nftables` printed.
//! Through it, `fwdist fetch` updates and `fwdist doctor` passes every step. With one passive
//! port taken out of the rules, the doctor names exactly that port (exit 3, "degraded") and
//! the update still succeeds, as designed: the session that drew the blocked port is closed
//! by the server when its offer expires, and the IQ's retry gets the next ports in turn.
//!
//! In one-port mode (`passive_ports = "same"`) the published rules are one accept rule for
//! the control port (beside established,related), and through exactly that the doctor passes
//! and `fwdist fetch` updates.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); see `helpers::system`. Only addresses
//! on the veth pair the test creates (10.213.N.1 and .2) are used.

use serde_json::json;
use std::fs;

use crate::helpers::system::Requirements;
use crate::helpers::{BIN, CliOutput, TestApp, image, run_program, sha256_hex, spawn_app_with_env};

/// The site namespace and the veth pair; removed on drop, even when the test fails.
struct Site {
    ns: String,
    host_if: String,
    server_ip: String,
    ip: String,
}

impl Site {
    fn create(ip_cmd: &str) -> Site {
        // Tests of this binary run at once: each site gets an address block of its own.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let slot = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = (std::process::id() + slot) % 200 + 20;
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

#[tokio::test]
async fn an_iq_behind_exactly_the_published_rules_updates_and_doctor_names_a_blocked_port() {
    let mut req = Requirements::new();
    req.root();
    let ip_cmd = req.program("ip");
    let nft_cmd = req.program("nft");
    if !req.met("the firewall test") {
        return;
    }
    let (ip_cmd, nft_cmd) = (ip_cmd.to_str().unwrap(), nft_cmd.to_str().unwrap());
    let site = Site::create(ip_cmd);
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
    fs::create_dir_all(app.path("iq-trust")).unwrap();
    fs::copy(app.path("release.pub"), app.path("iq-trust/release.pub")).unwrap();

    // The rules, exactly as fwdist publishes them for a firewall on the IQ host itself, from
    // the configuration the server runs with (its file plus the FWDIST_* overrides above).
    let site_config = crate::helpers::config_toml(app.ftp_addr, app.api_addr, app.passive)
        .replace(
            &format!("listen = \"{}\"", app.ftp_addr),
            &format!("listen = \"{listen}\""),
        )
        .replace(
            "public_host = \"127.0.0.1\"",
            &format!("public_host = \"{}\"", site.server_ip),
        );
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
    let published = out.stdout.clone();
    assert!(published.contains(&site.server_ip), "{published}");

    // The policy alone blocks an update: the test's firewall really drops.
    nft(&app, &site, nft_cmd, "base.nft", SITE_BASE).await;
    let server = listen.as_str();
    let doctor_args = |extra: &'static [&'static str]| {
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
    };
    let blocked = in_site(&app, &site, &doctor_args(&[])).await;
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
    let ok = in_site(&app, &site, &doctor_args(&[])).await;
    assert_eq!(ok.code, Some(0), "{}\n{}", ok.stdout, ok.stderr);
    for p in &ports {
        assert!(ok.stdout.contains(&format!("ok   port {p}")), "{}", ok.stdout);
    }
    let fetch = |state: &'static str| {
        let (app, site, dev) = (&app, &site, &dev);
        async move {
            in_site(
                app,
                site,
                &[
                    "fetch",
                    "--server",
                    server,
                    "--device",
                    &dev.id,
                    &format!("--secret={}", dev.secret),
                    "--model",
                    "iq2",
                    "--trust",
                    "iq-trust",
                    "--state",
                    state,
                    "--attempts",
                    "6",
                    "--timeout",
                    "3",
                ],
            )
            .await
        }
    };
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
    let degraded = in_site(&app, &site, &doctor_args(&[])).await;
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
    // The update still succeeds: a session that drew the blocked port is retried.
    let second = fetch("st-reduced").await;
    assert_eq!(second.code, Some(0), "{}\n{}", second.stdout, second.stderr);
    // And the server saw it: unused offers from the site's address, last on exactly that port.
    let (_, body) = app.get("/api/v1/diagnostics").await;
    let row = body["client_ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == site.ip.as_str())
        .unwrap_or_else(|| panic!("{} in {body}", site.ip))
        .clone();
    assert!(row["passive_offers_unused"].as_u64().unwrap() >= 1, "{row}");
    assert_eq!(row["last_unused_port"], gone, "{row}");
    println!("doctor, one passive port blocked:\n{}", degraded.stdout);
}

#[tokio::test]
async fn an_iq_behind_the_one_port_rules_updates_and_doctor_passes() {
    let mut req = Requirements::new();
    req.root();
    let ip_cmd = req.program("ip");
    let nft_cmd = req.program("nft");
    if !req.met("the one-port firewall test") {
        return;
    }
    let (ip_cmd, nft_cmd) = (ip_cmd.to_str().unwrap(), nft_cmd.to_str().unwrap());
    let site = Site::create(ip_cmd);
    let listen = format!("{}:2121", site.server_ip);
    let app = spawn_app_with_env(&[
        ("FWDIST_FTPS__LISTEN", &listen),
        ("FWDIST_FTPS__PUBLIC_HOST", &site.server_ip),
        ("FWDIST_FTPS__PASSIVE_PORTS", "same"),
        ("FWDIST_FTPS__DATA_CONNECT_TIMEOUT_SECS", "2"),
    ])
    .await;
    let img = image(1 << 20, 42);
    app.publish("iq2", "1.0.0", 1, &img).await;
    let dev = app.create_device("aa:bb:cc:40:00:02", "iq2").await;
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "percent": 100}))
        .await;
    fs::create_dir_all(app.path("iq-trust")).unwrap();
    fs::copy(app.path("release.pub"), app.path("iq-trust/release.pub")).unwrap();

    // The published rules of the server's configuration: one port.
    let site_config = crate::helpers::config_toml(app.ftp_addr, app.api_addr, app.passive)
        .replace(
            &format!("listen = \"{}\"", app.ftp_addr),
            &format!("listen = \"{listen}\""),
        )
        .replace(
            "public_host = \"127.0.0.1\"",
            &format!("public_host = \"{}\"", site.server_ip),
        )
        .replace(
            &format!("passive_ports = \"{}-{}\"", app.passive.0, app.passive.1),
            "passive_ports = \"same\"",
        );
    fs::write(app.path("site.toml"), site_config).unwrap();
    let args = [
        "network-requirements",
        "--config",
        "site.toml",
        "--format",
        "nftables",
        "--chain",
        "output",
    ];
    let out = app.cli(&args).await;
    let published = out.assert_ok().stdout.clone();
    let rules: Vec<&str> = published
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        rules,
        [
            "add rule inet filter output ct state established,related accept".to_string(),
            format!(
                "add rule inet filter output ip daddr {} tcp dport 2121 accept",
                site.server_ip
            ),
        ],
        "{published}"
    );
    nft(
        &app,
        &site,
        nft_cmd,
        "one-port.nft",
        &format!("{SITE_BASE}{published}"),
    )
    .await;

    let doctor = in_site(
        &app,
        &site,
        &[
            "doctor",
            &listen,
            "--ca",
            "certs/server.crt",
            "--timeout-secs",
            "2",
            "--data-timeout-secs",
            "2",
        ],
    )
    .await;
    assert_eq!(doctor.code, Some(0), "{}\n{}", doctor.stdout, doctor.stderr);
    for want in [
        "ok   passive-range: one port: data connections use the control port 2121 (SITE PORTS)",
        "ok   port 2121: /probe.bin over TLS",
        "ok   summary: an IQ update works from here: one port, 2121, carries control and data",
    ] {
        assert!(doctor.stdout.contains(want), "{want:?} in:\n{}", doctor.stdout);
    }
    let fetch = in_site(
        &app,
        &site,
        &[
            "fetch",
            "--server",
            &listen,
            "--device",
            &dev.id,
            &format!("--secret={}", dev.secret),
            "--model",
            "iq2",
            "--trust",
            "iq-trust",
            "--state",
            "st-one",
            "--attempts",
            "3",
            "--timeout",
            "3",
        ],
    )
    .await;
    assert_eq!(fetch.code, Some(0), "{}\n{}", fetch.stdout, fetch.stderr);
    assert_eq!(
        sha256_hex(&fs::read(app.path("st-one/firmware.bin")).unwrap()),
        sha256_hex(&img)
    );
    println!("doctor, one port:\n{}", doctor.stdout);
}
