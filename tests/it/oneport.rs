//! One port (`ftps.passive_ports = "same"`): passive replies name the control port, and the
//! front tells a session's data connection from a new control client on that one port (see
//! `src/ftps/oneport.rs`). Stock clients (curl, Python's ftplib with TLS session reuse,
//! lftp) and the reference IQ download and resume through it (curl with TLS 1.3 and 1.2); a
//! control client arriving while an offer is outstanding is still greeted; sessions behind
//! one address have offers out at once and never get each other's data (each data
//! connection reaches the session it resumes); a data connection without TLS never gets a
//! byte of an image; a fleet behind one address updates one after another and all at once.
//!
//! Every device has a model, a release and an image of its own, so a crossed data channel
//! shows as a wrong hash, a wrong model or a `550`, never as a lucky match.

use std::fs;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::clients::{Iq, assert_exit, curl_with, fetch, ftplib_get, lftp_get};
use crate::helpers::system::Requirements;
use crate::helpers::{
    CliOutput, TestApp, image, sha256_hex, spawn_app_one_port, spawn_app_one_port_with_env,
};
use crate::raw_ctl::{RawCtl, TlsStream, login_on, tls_connect};

/// A device with a model, a release (`1.N.0`) and an image of its own, targeted at it.
pub struct Dev {
    pub id: String,
    pub secret: String,
    pub model: String,
    pub version: String,
    pub image: Vec<u8>,
}

impl Dev {
    /// The image's path in the device's tree.
    pub fn image_path(&self) -> String {
        format!("/releases/{}/firmware.bin", self.version)
    }

    /// The id without colons (curl splits `-u` at the first colon).
    fn user(&self) -> String {
        self.id.replace(':', "")
    }

    /// Asserts `got` is this device's image.
    #[track_caller]
    pub fn assert_image(&self, got: &[u8], what: &str) {
        assert_eq!(got.len(), self.image.len(), "{what}: size");
        assert_eq!(sha256_hex(got), sha256_hex(&self.image), "{what}: sha256");
    }

    /// `PASV` on `ctl`, then the image over the offered port (TLS after the `150`), checked.
    pub async fn download(&self, ctl: &mut RawCtl<TlsStream>, what: &str) {
        let data = ctl.pasv().await;
        let got = ctl.retr_over(data, &self.image_path()).await;
        self.assert_image(&got, what);
    }

    pub fn iq(&self, app: &TestApp) -> Iq {
        Iq {
            id: self.id.clone(),
            secret: self.secret.clone(),
            trust: app.iq_trust(),
        }
    }
}

/// Device `n` (`aa:bb:cc:50:00:NN`, model `opN`, release `1.N.0`, an image of `size` bytes).
pub async fn device(app: &TestApp, n: u8, size: usize) -> Dev {
    let model = format!("op{n}");
    let version = format!("1.{n}.0");
    let img = image(size, 5000 + u64::from(n));
    app.publish(&model, &version, 1, &img).await;
    let dev = app
        .create_device(&format!("aa:bb:cc:50:00:{n:02x}"), &model)
        .await;
    app.rollout(json!({"model": model, "version": version, "percent": 100}))
        .await;
    Dev {
        id: dev.id,
        secret: dev.secret,
        model,
        version,
        image: img,
    }
}

/// Waits until the device's image was recorded `complete` from each of `offsets`, then
/// checks every record of the device: `complete`, its own model and release, the bytes from
/// its offset to the end, and the control port as its data port.
pub async fn assert_records_complete_on_the_control_port(app: &TestApp, dev: &Dev, offsets: &[u64]) {
    let size = dev.image.len() as u64;
    let items = app
        .wait_downloads(&format!("device={}&limit=200", dev.id), |items| {
            offsets.iter().all(|o| {
                items
                    .iter()
                    .any(|r| r["file"] == "firmware.bin" && r["offset"] == *o && r["outcome"] == "complete")
            })
        })
        .await;
    let port = app.ftp_addr.port();
    for r in &items {
        assert_eq!(r["outcome"], "complete", "every download is complete: {r}");
        assert_eq!(r["data_port"], port, "the data port is the control port: {r}");
        assert_eq!(r["model"], dev.model.as_str(), "{r}");
        assert_eq!(r["version"], dev.version.as_str(), "{r}");
        if r["file"] == "firmware.bin" {
            let offset = r["offset"].as_u64().unwrap();
            assert_eq!(r["bytes"], size - offset, "{r}");
            assert_eq!(r["size"], size, "{r}");
        }
    }
}

fn assert_ran(out: &CliOutput, what: &str) {
    assert!(
        out.success,
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.args, out.stdout, out.stderr
    );
}

#[track_caller]
fn assert_file_is(app: &TestApp, file: &str, want: &[u8], what: &str) {
    let got = fs::read(app.path(file)).unwrap_or_else(|e| panic!("{what}: {file}: {e}"));
    assert_eq!(got.len(), want.len(), "{what}: size of {file}");
    assert_eq!(sha256_hex(&got), sha256_hex(want), "{what}: sha256 of {file}");
}

/// How far the partial downloads the clients resume got.
const CUT: usize = 700_000;
const SIZE: usize = 1_500_000 + 77;

#[tokio::test]
async fn curl_downloads_and_resumes_over_the_control_port() {
    let app = spawn_app_one_port().await;
    let dev = device(&app, 1, SIZE).await;
    // EPSV (curl's first choice) for the whole image, PASV for the resumed one.
    let out = curl_with(
        &app,
        &dev.user(),
        &dev.secret,
        &dev.image_path(),
        "curl.bin",
        true,
        &[],
    )
    .await;
    assert_ran(&out, "curl");
    assert_file_is(&app, "curl.bin", &dev.image, "curl");
    fs::write(app.path("curl-resumed.bin"), &dev.image[..CUT]).unwrap();
    let resume = ["--disable-epsv", "-C", "-"];
    let out = curl_with(
        &app,
        &dev.user(),
        &dev.secret,
        &dev.image_path(),
        "curl-resumed.bin",
        true,
        &resume,
    )
    .await;
    assert_ran(&out, "curl -C -");
    assert_file_is(&app, "curl-resumed.bin", &dev.image, "curl -C -");
    // TLS 1.2: the data connection names its session by session id, not by a ticket.
    let tls12 = ["--tlsv1.2", "--tls-max", "1.2"];
    let out = curl_with(
        &app,
        &dev.user(),
        &dev.secret,
        &dev.image_path(),
        "curl-tls12.bin",
        true,
        &tls12,
    )
    .await;
    assert_ran(&out, "curl --tls-max 1.2");
    assert_file_is(&app, "curl-tls12.bin", &dev.image, "curl --tls-max 1.2");
    assert_records_complete_on_the_control_port(&app, &dev, &[0, CUT as u64, 0]).await;
}

#[tokio::test]
async fn python_ftplib_downloads_and_resumes_over_the_control_port() {
    let app = spawn_app_one_port().await;
    let dev = device(&app, 2, SIZE).await;
    for (offset, out) in [(0, "py-full.bin"), (CUT, "py-tail.bin")] {
        let res = ftplib_get(&app, &dev.id, &dev.secret, &dev.image_path(), offset, out).await;
        assert_ran(&res, &format!("ftplib from {offset}"));
        assert_eq!(res.stdout.trim(), SIZE.to_string(), "SIZE via ftplib");
        assert_file_is(&app, out, &dev.image[offset..], &format!("ftplib from {offset}"));
    }
    assert_records_complete_on_the_control_port(&app, &dev, &[0, CUT as u64]).await;
}

#[tokio::test]
async fn lftp_downloads_and_resumes_over_the_control_port() {
    let mut req = Requirements::new();
    req.program("lftp");
    if !req.met("the lftp test") {
        return;
    }
    let app = spawn_app_one_port().await;
    let dev = device(&app, 3, SIZE).await;
    let out = lftp_get(&app, &dev.id, &dev.secret, &dev.image_path(), "lftp.bin", false).await;
    assert_ran(&out, "lftp get");
    assert_file_is(&app, "lftp.bin", &dev.image, "lftp get");
    fs::write(app.path("lftp-resumed.bin"), &dev.image[..CUT]).unwrap();
    let out = lftp_get(
        &app,
        &dev.id,
        &dev.secret,
        &dev.image_path(),
        "lftp-resumed.bin",
        true,
    )
    .await;
    assert_ran(&out, "lftp get -c");
    assert_file_is(&app, "lftp-resumed.bin", &dev.image, "lftp get -c");
    assert_records_complete_on_the_control_port(&app, &dev, &[0, CUT as u64]).await;
}

#[tokio::test]
async fn fwdist_fetch_updates_and_resumes_over_the_control_port() {
    let app = spawn_app_one_port().await;
    let dev = device(&app, 4, SIZE).await;
    let iq = dev.iq(&app);
    let updated = format!("updated to {} (sequence 1)", dev.version);
    assert_exit(&fetch(&app, &iq, &dev.model, "st-full").await, 0, &updated);
    assert_file_is(&app, "st-full/firmware.bin", &dev.image, "fetch");
    // A previous attempt was cut after CUT bytes.
    fs::create_dir_all(app.path("st-resumed")).unwrap();
    fs::write(app.path("st-resumed/download.part"), &dev.image[..CUT]).unwrap();
    let out = fetch(&app, &iq, &dev.model, "st-resumed").await;
    assert_exit(&out, 0, &format!("resumed from byte {CUT}"));
    assert_file_is(&app, "st-resumed/firmware.bin", &dev.image, "fetch resumed");
    assert_records_complete_on_the_control_port(&app, &dev, &[0, CUT as u64]).await;
}

#[tokio::test]
async fn a_control_client_arriving_during_an_offer_is_greeted_and_the_offer_still_serves() {
    let app = spawn_app_one_port().await;
    let a = device(&app, 5, 256 << 10).await;
    let b = device(&app, 6, 300 << 10).await;
    let mut ctl = RawCtl::login(&app, &a.id, &a.secret).await;
    let offered = ctl.pasv_addr().await;
    assert_eq!(offered.port(), app.ftp_addr.port(), "PASV names the control port");
    // A new client from the same address while the offer is outstanding (no data connection
    // yet): it waits for its greeting, as a control client does.
    let newcomer = TcpStream::connect(app.ftp_addr).await.unwrap();
    // The offer's own data connection is served all the same.
    let data = TcpStream::connect(offered).await.unwrap();
    let got = ctl.retr_over(data, &a.image_path()).await;
    a.assert_image(&got, "the offer's data connection");
    // The offer is over: the newcomer has its 220 and is a session of its own.
    let mut other = login_on(newcomer, &app.cert_path(), None, &b.id, &b.secret).await;
    b.download(&mut other, "the newcomer's download").await;
    // And the first session goes on.
    a.download(&mut ctl, "the first session's next download").await;
    assert_records_complete_on_the_control_port(&app, &a, &[0]).await;
    assert_records_complete_on_the_control_port(&app, &b, &[0]).await;
    // Held were the newcomer (accepted before the data connection, so during the offer) and
    // the data connection; the metric says what each turned out to be.
    let m = crate::metrics::scrape(&app).await;
    let held = |as_: &str| crate::metrics::get(&m, &format!("fwdist_oneport_held_total{{as=\"{as_}\"}}"));
    assert!(
        held("data") >= 1.0,
        "the data connection was held and handed over"
    );
    assert_eq!(held("control"), 1.0, "the newcomer was held, then greeted");
    assert_eq!(held("gone"), 0.0);
}

#[tokio::test]
async fn a_control_client_held_behind_an_offer_nobody_takes_is_greeted_when_it_ends() {
    let app = spawn_app_one_port_with_env(&[("FWDIST_FTPS__DATA_CONNECT_TIMEOUT_SECS", "1")]).await;
    let a = device(&app, 7, 64 << 10).await;
    let b = device(&app, 8, 80 << 10).await;
    // Withdrawn: the session that made the offer leaves.
    let mut ctl = RawCtl::login(&app, &a.id, &a.secret).await;
    ctl.pasv_addr().await;
    let newcomer = TcpStream::connect(app.ftp_addr).await.unwrap();
    let (code, text) = ctl.cmd("QUIT").await;
    assert_eq!(code, 221, "{text}");
    let mut other = login_on(newcomer, &app.cert_path(), None, &b.id, &b.secret).await;
    b.download(&mut other, "after a withdrawn offer").await;
    // Expired: nobody connects within the data timeout.
    let mut ctl = RawCtl::login(&app, &a.id, &a.secret).await;
    ctl.pasv_addr().await;
    let newcomer = TcpStream::connect(app.ftp_addr).await.unwrap();
    let mut third = login_on(newcomer, &app.cert_path(), None, &b.id, &b.secret).await;
    b.download(&mut third, "after an expired offer").await;
    // The session whose offer expired is still usable.
    a.download(&mut ctl, "the session whose offer expired").await;
    assert_records_complete_on_the_control_port(&app, &a, &[0]).await;
    assert_records_complete_on_the_control_port(&app, &b, &[0]).await;
}

#[tokio::test]
async fn sessions_behind_one_address_have_offers_out_at_once_and_never_cross() {
    let app = spawn_app_one_port().await;
    let devs = [
        device(&app, 9, 200 << 10).await,
        device(&app, 10, 300 << 10).await,
        device(&app, 11, 400 << 10).await,
    ];
    let mut ctls = Vec::new();
    for d in &devs {
        ctls.push(RawCtl::login(&app, &d.id, &d.secret).await);
    }
    // Every session gets its 227 at once, though none has connected yet: offers of one
    // address do not wait for each other.
    let mut offered = Vec::new();
    for c in &mut ctls {
        offered.push(c.pasv_addr().await);
    }
    // Their data connections arrive in the reverse order, all silent until their 150s; each
    // must reach the session whose TLS session it resumes.
    let mut data = Vec::new();
    for a in offered.iter().rev() {
        data.push(TcpStream::connect(a).await.unwrap());
    }
    data.reverse();
    let paths: Vec<String> = devs.iter().map(|d| d.image_path()).collect();
    let transfers = ctls
        .iter_mut()
        .zip(data)
        .zip(&paths)
        .map(|((c, d), path)| c.retr_over(d, path));
    let got = futures_util::future::join_all(transfers).await;
    for (g, d) in got.iter().zip(&devs) {
        d.assert_image(g, &format!("{}'s own image", d.id));
    }
    for d in &devs {
        assert_records_complete_on_the_control_port(&app, d, &[0]).await;
    }
}

/// Polls the device's diagnostics until `data_connections_unbound` is `n`; panics after 10 s
/// (or at once if it went past `n`).
async fn wait_unbound(app: &TestApp, id: &str, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = app.get(&format!("/api/v1/devices/{id}")).await;
        assert_eq!(status, 200, "{body}");
        let seen = body["diagnostics"]["data_connections_unbound"]
            .as_u64()
            .unwrap_or(0);
        assert!(seen <= n, "more refusals than data connections refused: {body}");
        if seen == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "refusals never counted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn another_sessions_data_connection_at_the_same_address_cannot_take_the_offer() {
    let app = spawn_app_one_port().await;
    let a = device(&app, 12, 512 << 10).await;
    let b = device(&app, 13, 64 << 10).await;
    let mut ctl = RawCtl::login(&app, &a.id, &a.secret).await;
    let other = RawCtl::login(&app, &b.id, &b.secret).await;
    let offered = ctl.pasv_addr().await;
    // B's data connection, resuming B's TLS session, and a stranger's (resuming nothing)
    // come first: each is refused (a clean TLS close, no byte), and A's offer stays open.
    let crossed = TcpStream::connect(offered).await.unwrap();
    let crossed = other.data_tls(crossed).await.unwrap();
    let stranger = TcpStream::connect(offered).await.unwrap();
    let stranger = tls_connect(&app, stranger).await.unwrap();
    for (what, mut tls) in [("B's session", crossed), ("a stranger", stranger)] {
        let mut stolen = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut stolen)).await;
        assert!(stolen.is_empty(), "{what} got {} bytes", stolen.len());
    }
    // Both refusals are counted before A's own data connection comes.
    wait_unbound(&app, &a.id, 2).await;
    let data = TcpStream::connect(offered).await.unwrap();
    let got = ctl.retr_over(data, &a.image_path()).await;
    a.assert_image(&got, "A gets its image");
    wait_unbound(&app, &a.id, 2).await;
    assert_records_complete_on_the_control_port(&app, &a, &[0]).await;
}

/// Reads what a plain connection gets until the server closes it (bounded).
async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut got))
        .await
        .expect("the server closes the connection")
        .unwrap();
    got
}

/// Whether `got` holds any 16 bytes of `img` (a pseudo-random image: no accidental match).
fn holds_a_slice_of(got: &[u8], img: &[u8]) -> bool {
    let windows: std::collections::HashSet<&[u8]> = img.windows(16).collect();
    got.windows(16).any(|w| windows.contains(w))
}

#[tokio::test]
async fn a_data_connection_without_tls_gets_no_byte_of_the_image() {
    let app = spawn_app_one_port_with_env(&[("FWDIST_FTPS__DATA_CONNECT_TIMEOUT_SECS", "2")]).await;
    let dev = device(&app, 14, 1 << 20).await;
    let greeting = fwdist::ftps::control::GREETING;
    // silent: it never speaks; speaking: plain text at once.
    for (first, after_greeting) in [("", ""), ("NOOP\r\n", "200 OK\r\n")] {
        let mut ctl = RawCtl::login(&app, &dev.id, &dev.secret).await;
        let offered = ctl.pasv_addr().await;
        let mut plain = TcpStream::connect(offered).await.unwrap();
        plain.write_all(first.as_bytes()).await.unwrap();
        let (code, text) = ctl.cmd(&format!("RETR {}", dev.image_path())).await;
        assert_eq!(code, 150, "{text}");
        let (code, text) = ctl.reply().await;
        assert_eq!(
            text, "425 No data connection arrived on the passive port in time\r\n",
            "{code}"
        );
        // It was a control client all along: it got the greeting, and leaves.
        plain.write_all(b"QUIT\r\n").await.unwrap();
        let got = read_all(&mut plain).await;
        assert!(!holds_a_slice_of(&got, &dev.image), "image bytes in plaintext");
        let want = format!("{greeting}{after_greeting}221 Goodbye\r\n");
        assert_eq!(String::from_utf8_lossy(&got), want, "sent first: {first:?}");
        assert_eq!(ctl.cmd("NOOP").await.0, 200, "the session still answers");
    }
    let items = app
        .wait_downloads(&format!("device={}", dev.id), |i| i.len() >= 2)
        .await;
    for r in &items {
        assert_eq!(r["outcome"], "aborted", "{r}");
        assert_eq!(r["bytes"], 0, "{r}");
    }
    // PROT C: no data connection is offered at all, as with a range.
    let mut ctl = RawCtl::login(&app, &dev.id, &dev.secret).await;
    assert_eq!(ctl.cmd("PROT C").await.0, 200);
    for verb in ["PASV", "EPSV"] {
        let (code, text) = ctl.cmd(verb).await;
        assert_eq!(
            (code, text.as_str()),
            (534, "534 A TLS connection is required on the data channel\r\n"),
            "{verb}"
        );
    }
}

/// The port of a `229 Entering Extended Passive Mode (|||PORT|)` reply.
fn epsv_port(text: &str) -> u16 {
    let inner = &text[text.find("(|||").expect(text) + 4..];
    inner[..inner.find("|)").expect(text)].parse().expect(text)
}

#[tokio::test]
async fn site_ports_says_same_and_epsv_names_the_control_port() {
    let app = spawn_app_one_port().await;
    let dev = device(&app, 15, 128 << 10).await;
    let port = app.ftp_addr.port();
    let mut probe = RawCtl::login(&app, "probe", "probe").await;
    let (code, text) = probe.cmd("SITE PORTS").await;
    assert_eq!((code, text.as_str()), (200, "200 passive=same\r\n"));
    let (code, text) = probe.cmd("EPSV").await;
    assert_eq!(code, 229, "{text}");
    assert_eq!(epsv_port(&text), port, "{text}");
    let data = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let got = probe.retr_over(data, "/probe.bin").await;
    assert_eq!(got.len(), fwdist_release::probe::SIZE);
    assert_eq!(
        hex::encode(Sha256::digest(&got)),
        fwdist_release::probe::sha256_hex()
    );
    let mut ctl = RawCtl::login(&app, &dev.id, &dev.secret).await;
    let (code, text) = ctl.cmd("EPSV").await;
    assert_eq!(code, 229, "{text}");
    assert_eq!(epsv_port(&text), port, "{text}");
    let data = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let got = ctl.retr_over(data, &dev.image_path()).await;
    dev.assert_image(&got, "over EPSV");
    assert_records_complete_on_the_control_port(&app, &dev, &[0]).await;
}

/// `n` devices, numbered from `first`, each with its own model, release and image.
pub async fn fleet(app: &TestApp, first: u8, n: u8) -> Vec<Dev> {
    let mut devs = Vec::new();
    for i in first..first + n {
        devs.push(device(app, i, (96 << 10) + usize::from(i) * 4099).await);
    }
    devs
}

/// Checks what `fwdist fetch` installed for each device in `<prefix>-<n>`: its own image.
pub fn assert_each_installed_its_own(app: &TestApp, devs: &[Dev], outs: &[CliOutput], prefix: &str) {
    for (i, (d, out)) in devs.iter().zip(outs).enumerate() {
        assert_exit(out, 0, &format!("updated to {}", d.version));
        let file = format!("{prefix}-{i}/firmware.bin");
        assert_file_is(app, &file, &d.image, &d.id);
    }
}

/// Every device's image was recorded `complete` `times` times, each its own release, all on
/// the control port.
pub async fn assert_fleet_records(app: &TestApp, devs: &[Dev], times: usize) {
    for d in devs {
        let items = app
            .wait_downloads(&format!("device={}&limit=200", d.id), |items| {
                items.iter().filter(|r| r["file"] == "firmware.bin").count() >= times
            })
            .await;
        let images: Vec<&Value> = items.iter().filter(|r| r["file"] == "firmware.bin").collect();
        assert_eq!(images.len(), times, "{}: {items:?}", d.id);
        assert_records_complete_on_the_control_port(app, d, &[0]).await;
    }
}

#[tokio::test]
async fn twenty_iqs_behind_one_address_update_one_after_another_and_all_at_once() {
    let app = spawn_app_one_port_with_env(&[("FWDIST_FTPS__MAX_SESSIONS_PER_IP", "64")]).await;
    let devs = fleet(&app, 20, 20).await;
    let mut sequential = Vec::new();
    for (i, d) in devs.iter().enumerate() {
        sequential.push(fetch(&app, &d.iq(&app), &d.model, &format!("seq-{i}")).await);
    }
    assert_each_installed_its_own(&app, &devs, &sequential, "seq");
    let iqs: Vec<Iq> = devs.iter().map(|d| d.iq(&app)).collect();
    let concurrent = futures_util::future::join_all(devs.iter().zip(&iqs).enumerate().map(|(i, (d, iq))| {
        let state = format!("par-{i}");
        let (app, model) = (&app, d.model.as_str());
        async move { fetch(app, iq, model, &state).await }
    }))
    .await;
    assert_each_installed_its_own(&app, &devs, &concurrent, "par");
    assert_fleet_records(&app, &devs, 2).await;
}
