//! The FTPS dialogue, line by line: what a device session is answered, exactly (the reply
//! text is what IQ firmware and support engineers read in their logs).

use crate::ftps::device_with_release;
use crate::helpers::spawn_app;
use crate::raw_ctl::RawCtl;

#[tokio::test]
async fn a_device_session_is_answered_exactly() {
    let app = spawn_app().await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:15:00:01").await;
    let (code, text) = RawCtl::login_reply(&app, &id, "not-the-secret").await;
    assert_eq!((code, text.as_str()), (530, "530 Authentication failed\r\n"));
    let mut ctl = RawCtl::login(&app, &id, &secret).await;
    let mut got = Vec::new();
    for cmd in [
        "PWD",
        "TYPE I",
        "SIZE /target/manifest.json.sig",
        "SIZE /releases/1.0.0/firmware.bin",
        "SIZE /releases/1.0.0/nope.bin",
        "CWD /releases/1.0.0",
        "PWD",
        "CDUP",
        "CWD /nowhere",
        "CWD /releases/1.0.0/firmware.bin",
        "MKD /x",
        "DELE /releases/1.0.0/firmware.bin",
        "RNFR /releases/1.0.0/firmware.bin",
        "REST 100",
        "REST -1",
        "SITE CHMOD 777 /releases/1.0.0/firmware.bin",
        "STAT",
        "HELP",
        "NOOP",
        "QUIT",
    ] {
        let (_, reply) = ctl.cmd(cmd).await;
        got.push(format!("{cmd} -> {reply}"));
    }
    let want = [
        "PWD -> 257 \"/\"\r\n",
        "TYPE I -> 200 Always in binary mode\r\n",
        // No rollout targets the device: /target is empty.
        "SIZE /target/manifest.json.sig -> 550 File not found\r\n",
        "SIZE /releases/1.0.0/firmware.bin -> 213 65536\r\n",
        "SIZE /releases/1.0.0/nope.bin -> 550 File not found\r\n",
        "CWD /releases/1.0.0 -> 250 Successfully changed working directory\r\n",
        "PWD -> 257 \"/releases/1.0.0\"\r\n",
        "CDUP -> 250 OK\r\n",
        "CWD /nowhere -> 550 Directory not found\r\n",
        "CWD /releases/1.0.0/firmware.bin -> 550 Directory not found\r\n",
        "MKD /x -> 550 Permission denied\r\n",
        "DELE /releases/1.0.0/firmware.bin -> 550 Permission denied\r\n",
        // libunftp answers RNFR before asking the backend; the RNTO after it gets the 550.
        "RNFR /releases/1.0.0/firmware.bin -> 350 Tell me, what would you like the new name to be?\r\n",
        "REST 100 -> 350 Restarting at 100. Now send STORE or RETRIEVE.\r\n",
        "REST -1 -> 501 REST needs a byte offset from 0 to 9223372036854775807\r\n",
        "SITE CHMOD 777 /releases/1.0.0/firmware.bin -> 550 Permission denied\r\n",
        // Nothing of the implementation, its version or the caller.
        "STAT -> 211 fwdist firmware server\r\n",
        "HELP -> 214-Commands an IQ uses:\r\n AUTH PBSZ PROT USER PASS TYPE PASV EPSV SIZE MDTM REST RETR STOR\r\n LIST NLST MLSD MLST CWD CDUP PWD NOOP FEAT SITE QUIT\r\n214 End\r\n",
        "NOOP -> 200 Successfully did nothing\r\n",
        "QUIT -> 221 Goodbye\r\n",
    ];
    assert_eq!(got, want);
}

#[tokio::test]
async fn the_probe_account_sees_only_its_file() {
    let app = spawn_app().await;
    device_with_release(&app, "aa:bb:cc:15:00:02").await;
    let mut ctl = RawCtl::login(&app, "probe", "probe").await;
    let mut got = Vec::new();
    for cmd in [
        "SIZE /probe.bin",
        "SIZE /releases/1.0.0/firmware.bin",
        "CWD /releases",
        "CWD /",
        "SITE PORTS",
        "DELE /probe.bin",
    ] {
        let (_, reply) = ctl.cmd(cmd).await;
        got.push(format!("{cmd} -> {reply}"));
    }
    let ports = format!(
        "SITE PORTS -> 200 passive={}-{}\r\n",
        app.passive.0, app.passive.1
    );
    let want = [
        "SIZE /probe.bin -> 213 262144\r\n",
        "SIZE /releases/1.0.0/firmware.bin -> 550 File not found\r\n",
        "CWD /releases -> 550 Directory not found\r\n",
        "CWD / -> 250 Successfully changed working directory\r\n",
        ports.as_str(),
        "DELE /probe.bin -> 550 Permission denied\r\n",
    ];
    assert_eq!(got, want);
}
