//! What the server logs at its default level for things that are normal: an IQ polling with
//! no update (`550` on `/target`), a client that sends an IP address as SNI, a refused login
//! (one WARN, without the secret). Real binary, real clients (the reference IQ, openssl).

use crate::helpers::{image, run_program, spawn_app_with_env};

#[tokio::test]
async fn normal_polls_and_ip_address_sni_do_not_warn() {
    let app = spawn_app_with_env(&[("RUST_LOG", fwdist::telemetry::DEFAULT_FILTER)]).await;
    app.publish("iq2", "1.0.0", 1, &image(1000, 1)).await;
    let dev = app.create_device("aa:bb:cc:34:00:01", "iq2").await;
    std::fs::create_dir_all(app.path("iq-trust")).unwrap();
    std::fs::copy(app.path("release.pub"), app.path("iq-trust/release.pub")).unwrap();
    // No rollout: every poll is a no-update.
    for _ in 0..3 {
        let out = app
            .cli(&[
                "fetch",
                "--server",
                &app.ftp_addr.to_string(),
                "--device",
                &dev.id,
                &format!("--secret={}", dev.secret),
                "--model",
                "iq2",
                "--trust",
                "iq-trust",
                "--state",
                "iq-state",
            ])
            .await;
        assert_eq!(out.code, Some(10), "no update: {}\n{}", out.stdout, out.stderr);
    }
    // openssl sends the IP address as SNI when told to, as some IQ TLS stacks do.
    let port = app.ftp_addr.port().to_string();
    let connect = format!("127.0.0.1:{port}");
    let res = run_program(
        app.dir.path(),
        "sh",
        &[
            "-c",
            &format!(
                "echo QUIT | openssl s_client -connect {connect} -starttls ftp -servername 127.0.0.1 -CAfile {} -verify_return_error",
                app.cert_path().display()
            ),
        ],
    )
    .await;
    assert!(
        res.stdout.contains("Verify return code: 0 (ok)"),
        "{}\n{}",
        res.stdout,
        res.stderr
    );
    // A wrong secret is worth one WARN, and the secret is never logged.
    let out = app
        .cli(&[
            "fetch",
            "--server",
            &app.ftp_addr.to_string(),
            "--device",
            &dev.id,
            "--secret=wrong-secret-xyz",
            "--model",
            "iq2",
            "--trust",
            "iq-trust",
            "--state",
            "iq-state",
            "--attempts",
            "1",
        ])
        .await;
    assert_eq!(out.code, Some(31), "{}\n{}", out.stdout, out.stderr);

    let log = app.log();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN "))
        .filter(|l| !l.contains("self-signed TLS certificate for development"))
        .collect();
    assert_eq!(
        warns.len(),
        1,
        "only the refused login warns:\n{}",
        warns.join("\n")
    );
    assert!(warns[0].contains("login refused: wrong secret"), "{}", warns[0]);
    assert!(!log.contains("Illegal SNI"), "rustls' SNI warning is not logged");
    assert!(!log.contains("wrong-secret-xyz"), "a secret in the log");
    assert!(!log.contains(&dev.secret), "a secret in the log");
}
