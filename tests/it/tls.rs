//! TLS is mandatory (SPEC §4): on the control channel before login, and on every data
//! connection; both TLS 1.2 and 1.3 work.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::ftp_client::{Opts, bye, login_with, retr_all};
use crate::ftps::device_with_release;
use crate::helpers::spawn_app;
use crate::raw_ctl::RawCtl;

#[tokio::test]
async fn login_without_tls_is_refused_with_534() {
    let app = spawn_app().await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:01:00:01").await;
    let mut ctl = RawCtl::connect(app.ftp_addr).await;
    let (code, text) = ctl.cmd("FEAT").await;
    assert_eq!(code, 211, "{text}");
    assert!(text.contains("AUTH TLS"), "FEAT advertises AUTH TLS: {text}");
    let (code, text) = ctl.cmd(&format!("USER {id}")).await;
    assert_eq!(code, 534, "plaintext USER: {text}");
    let (code, text) = ctl.cmd(&format!("PASS {secret}")).await;
    assert_ne!(code, 230, "plaintext PASS must not log in: {text}");
    let (code, text) = ctl.cmd("AUTH SSL").await;
    assert!(code >= 500, "AUTH SSL is not offered: {text}");
}

#[tokio::test]
async fn tls_1_2_and_1_3_both_work() {
    let app = spawn_app().await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:08:00:01").await;
    for (name, version) in [
        ("TLS 1.2", &rustls::version::TLS12),
        ("TLS 1.3", &rustls::version::TLS13),
    ] {
        let opts = Opts {
            tls: Some(version),
            ..Opts::default()
        };
        let mut s = login_with(&app, &id, &secret, opts)
            .await
            .unwrap_or_else(|e| panic!("{name} login: {e}"));
        let got = retr_all(&mut s, "/releases/1.0.0/firmware.bin")
            .await
            .unwrap_or_else(|e| panic!("{name} download: {e}"));
        assert_eq!(got.len(), 64 * 1024, "{name}");
        bye(s).await;
    }
}

/// The port of a 227 (PASV) or 229 (EPSV) answer.
fn data_port(reply: &str) -> u16 {
    if let Some(i) = reply.find("|||") {
        let rest = &reply[i + 3..];
        return rest[..rest.find('|').unwrap()].parse().unwrap();
    }
    let inner = &reply[reply.find('(').unwrap() + 1..reply.find(')').unwrap()];
    let n: Vec<u16> = inner.split(',').map(|x| x.trim().parse().unwrap()).collect();
    n[4] * 256 + n[5]
}

#[tokio::test]
async fn no_data_flows_without_tls_even_after_prot_c() {
    let app = spawn_app().await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:08:00:02").await;
    let mut leaks = Vec::new();
    for mode in ["PASV", "EPSV"] {
        let mut ctl = RawCtl::login(&app, &id, &secret).await;
        let (code, _) = ctl.cmd("PROT C").await;
        if code >= 400 {
            continue; // refusing PROT C outright is fine
        }
        let (code, text) = ctl.cmd(mode).await;
        if code != 227 && code != 229 {
            continue; // refusing the data connection is fine
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], data_port(&text)));
        let mut data = TcpStream::connect(addr).await.unwrap();
        let (code, text) = ctl.cmd("RETR /releases/1.0.0/firmware.bin").await;
        if code != 150 && code != 125 {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3), data.read(&mut buf)).await
            && n > 0
        {
            leaks.push(format!(
                "PROT C + {mode} + RETR ({}) sent {n}+ plaintext bytes",
                text.trim()
            ));
        }
    }
    assert!(leaks.is_empty(), "data must never flow without TLS: {leaks:#?}");
}
