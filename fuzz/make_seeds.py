#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/corpus/<target>/ (README "Fuzzing").

The seeds are committed; this only shows where they came from and remakes them. Needs
openssl (ed25519 signatures by the signature target's fixed key; real ClientHellos captured
from `openssl s_client`, first contact and resumption, TLS 1.2 and 1.3). Files already there
with other names (reproducers of findings) are left alone.

    python3 fuzz/make_seeds.py
"""

import base64
import hashlib
import json
import os
import socket
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(ROOT, "corpus")
EXAMPLE = os.path.join(ROOT, "..", "fwdist.example.toml")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def manifest_dict(**over):
    m = {
        "schema": 1,
        "model": "iq2",
        "version": "2.4.1",
        "sequence": 42,
        "file": "firmware.bin",
        "size": 4194304,
        "sha256": "a" * 64,
        "created_at": "2026-11-24T17:00:00Z",
    }
    m.update(over)
    return m


def manifests():
    put("manifest", "pretty", json.dumps(manifest_dict(), indent=2) + "\n")
    put("manifest", "compact", json.dumps(manifest_dict(), separators=(",", ":")))
    put("manifest", "expiry-notes", json.dumps(manifest_dict(
        expires_at="2027-11-24T00:00:00+01:00", notes="fixes \u00e9 \"quoted\"\n")))
    put("manifest", "prerelease", json.dumps(manifest_dict(
        version="1.0.0-rc.1+build.5", file="fw_1.0.0-rc.1.img", sequence=0, size=0,
        created_at="2026-01-01T00:00:00.123456789Z")))
    put("manifest", "bad-schema", json.dumps(manifest_dict(schema=2)))
    put("manifest", "bad-file", json.dumps(manifest_dict(file="../etc/passwd")))
    put("manifest", "bad-expiry", json.dumps(manifest_dict(expires_at="2020-01-01T00:00:00Z")))
    put("manifest", "unknown-field", json.dumps(manifest_dict(extra=1)))
    put("manifest", "empty-object", "{}")


def ed25519(seed):
    """(private key file, DER, and public SPKI DER) for a raw 32-byte seed, as RFC 8410 lays
    them out; the seeds are the fuzz targets' public test keys, the files temporary."""
    der = bytes.fromhex("302e020100300506032b657004220420") + seed
    with tempfile.NamedTemporaryFile("wb", suffix=".der", delete=False) as f:
        f.write(der)
        path = f.name
    spki = subprocess.run(["openssl", "pkey", "-inform", "DER", "-in", path, "-pubout", "-outform", "DER"],
                          check=True, capture_output=True).stdout
    return path, spki


def sign(key_path, data):
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
        path = f.name
    sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-keyform", "DER", "-inkey", key_path, "-rawin", "-in", path],
                         check=True, capture_output=True).stdout
    os.unlink(path)
    return base64.b64encode(sig).decode()


def signatures():
    # fwdist::fuzzing::SIGNED_MANIFEST and signature_key(): seed [7; 32].
    manifest = b'{"schema":1}\n'
    key, spki = ed25519(bytes([7] * 32))
    other, other_spki = ed25519(bytes([9] * 32))
    kid = hashlib.sha256(spki).hexdigest()
    okid = hashlib.sha256(other_spki).hexdigest()
    good = {"keyid": kid, "sig": sign(key, manifest)}
    foreign = {"keyid": okid, "sig": sign(other, manifest)}
    put("signature", "trusted", json.dumps({"signatures": [good]}, indent=2) + "\n")
    put("signature", "rotation", json.dumps({"signatures": [foreign, good]}, indent=2) + "\n")
    put("signature", "untrusted", json.dumps({"signatures": [foreign]}))
    put("signature", "bad-sig", json.dumps({"signatures": [{"keyid": kid, "sig": sign(key, b"other")}]}))
    put("signature", "not-base64", json.dumps({"signatures": [{"keyid": kid, "sig": "!!"}]}))
    put("signature", "short-sig", json.dumps({"signatures": [{"keyid": kid, "sig": "AAAA"}]}))
    put("signature", "empty", json.dumps({"signatures": []}))
    put("signature", "unknown-field", json.dumps({"signatures": [], "x": 1}))
    os.unlink(key)
    os.unlink(other)


def ids():
    for i, s in enumerate(["aa:bb:cc:dd:ee:0f", "AA-BB-CC-DD-EE-0F", "aabbccddee0f", "aa:bb-cc:dd:ee:0f",
                           "aa:bb:cc:dd:ee:0", "iq2", "iq-2-x", "2.4.1", "1.0.0-rc.1+build.5",
                           "01.2.3", "a" * 64, "A" * 64, "probe"]):
        put("ids", f"seed-{i:02}", s)


def paths():
    for i, s in enumerate(["/", "/target/manifest.json", "target/manifest.json.sig",
                           "/releases/2.4.1/firmware.bin", "/releases/2.4.1/manifest.json",
                           "/report.json", "/../../../etc/passwd", "/releases/./../target/../report.json",
                           "//releases//2.4.1//", "/releases/1.0.0/../../../../fwdist.sqlite",
                           "/%2e%2e/etc", "..\\..\\etc\\passwd"]):
        put("device_path", f"seed-{i:02}", s)
    put("device_path", "not-utf8", b"/releases/\xff\xfe/x")


def reports():
    put("report", "installed", '{"version":"2.4.1","outcome":"installed"}')
    put("report", "failed-detail", json.dumps({"version": "2.4.1", "outcome": "failed",
                                               "detail": "flash write error \u00e9 at 0x1000"}))
    put("report", "null-detail", '{"version":"1.0.0-rc.1","outcome":"installed","detail":null}')
    put("report", "long-detail", json.dumps({"version": "1.0.0", "outcome": "failed", "detail": "x" * 1025}))
    put("report", "extra", '{"version":"1.0.0","outcome":"failed","extra":true}')
    put("report", "bad-outcome", '{"version":"1.0.0","outcome":"maybe"}')


def configs():
    with open(EXAMPLE) as f:
        example = f.read()
    put("config", "example", example)
    put("config", "empty", "")
    put("config", "oneport", '[ftps]\npassive_ports = "same"\npublic_host = "fw.example.net"\n')
    put("config", "proxy", '[ftps]\nlisten = "0.0.0.0:2121"\nproxy_protocol = true\npublic_host = "192.0.2.10"\n')
    put("config", "s3", '[store]\nurl = "s3://bucket/prefix"\nendpoint = "http://127.0.0.1:8333"\n'
        'region = "us-east-1"\naccess_key_id = "k"\nsecret_access_key = "s"\n')
    put("config", "postgres", '[db]\nurl = "postgres://fw:pw@db/fw"\n[admin]\nmax_connections = 1\n')
    put("config", "bad-range", '[ftps]\npassive_ports = "2000-1000"\n')
    put("config", "unknown-key", '[ftps]\nbogus = 1\n')


def proxies():
    put("proxy", "tcp4", "PROXY TCP4 192.0.2.7 10.0.0.1 51234 2121\r\n\x16\x03\x01")
    put("proxy", "tcp6", "PROXY TCP6 2001:db8::7 2001:db8::1 443 2121\r\nAUTH TLS\r\n")
    put("proxy", "unknown", "PROXY UNKNOWN\r\n")
    put("proxy", "unknown-long", "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n")
    put("proxy", "max-tcp6", "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
    put("proxy", "no-crlf", "PROXY TCP4 192.0.2.7 10.0.0.1 51234 2121")
    put("proxy", "leading-zero", "PROXY TCP4 192.0.2.7 10.0.0.1 051234 2121\r\n")
    put("proxy", "mixed-family", "PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n")
    # Version 2 (binary): fwdist reads v1 only, so this is "no header".
    put("proxy", "v2", b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x07\x0a\x00\x00\x01\xc8\x22\x08\x49")
    put("proxy", "ftp", "USER aa:bb:cc:dd:ee:ff\r\n")


def capture_hellos():
    """Real ClientHellos from openssl s_client: to a capturing listener (first contact), and
    resuming sessions a throwaway s_server issued (TLS 1.2 session id, TLS 1.3 ticket)."""
    tmp = tempfile.mkdtemp()
    key, crt = os.path.join(tmp, "k.pem"), os.path.join(tmp, "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", crt, "-subj", "/CN=fw", "-days", "1"],
                   check=True, capture_output=True)

    def capture(args):
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        port = ls.getsockname()[1]
        got = []

        def serve():
            c, _ = ls.accept()
            c.settimeout(3)
            buf = b""
            while len(buf) < 5 or len(buf) < 5 + int.from_bytes(buf[3:5], "big"):
                chunk = c.recv(65536)
                if not chunk:
                    break
                buf += chunk
            got.append(buf)
            c.close()

        t = threading.Thread(target=serve)
        t.start()
        subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "fw.example.net"]
                       + args, input=b"", capture_output=True, timeout=10)
        t.join()
        ls.close()
        return got[0]

    def session(version):
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        port = ls.getsockname()[1]
        ls.close()
        server = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-key", key, "-cert", crt,
                                   "-naccept", "1", version], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, stdin=subprocess.PIPE)
        time.sleep(0.5)
        sess = os.path.join(tmp, f"sess{version}")
        subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", version, "-sess_out", sess],
                       input=b"", capture_output=True, timeout=10)
        server.wait(timeout=10)
        return sess

    hellos = {
        "tls13": capture(["-tls1_3"]),
        "tls12": capture(["-tls1_2"]),
        "any": capture([]),
        "tls12-resume": capture(["-tls1_2", "-sess_in", session("-tls1_2")]),
        "tls13-resume": capture(["-tls1_3", "-sess_in", session("-tls1_3")]),
    }
    return hellos


def oneport_and_control(hellos):
    for name, h in hellos.items():
        for seed in (0, 7):
            put("oneport", f"{name}-{seed}", bytes([seed]) + h)
    h = hellos["tls13"]
    put("oneport", "tls13-then-more", bytes([3]) + h + b"\x17\x03\x03\x00\x10" + b"x" * 16)
    put("oneport", "control-client", b"\x05USER aa:bb:cc:dd:ee:ff\r\n")
    put("oneport", "cut-hello", b"\x01" + h[: len(h) // 2])
    put("oneport", "empty-stream", b"\x00")
    # The header of a record longer than TLS allows (the reader once read on to 64 KiB).
    put("oneport", "over-cap-claim", b"\x00\x16\x03\x01\xff\xff" + b"\x00" * 64)
    put("oneport", "max-record-claim", b"\x00\x16\x03\x01\x40\x00" + b"\x01" * 64)

    session = (b"AUTH TLS\r\nPBSZ 0\r\nPROT P\r\nUSER aa:bb:cc:dd:ee:ff\r\nPASS s3cret\r\nTYPE I\r\n"
               b"EPSV\r\nSIZE /target/manifest.json\r\nRETR /target/manifest.json\r\nREST 100\r\n"
               b"STOR /report.json\r\nQUIT\r\n")
    for seed in (0, 4, 255):
        put("control", f"session-{seed}", bytes([seed]) + session)
    put("control", "replies", b"\x10220 fwdist\r\n230-Welcome\r\n more\r\n230 ok\r\n"
        b"227 Entering Passive Mode (192,0,2,7,195,80)\r\n229 Entering Extended Passive Mode (|||50000|)\r\n"
        b"150 Opening\r\n226 Done\r\n")
    put("control", "bare-lf", b"\x02user x\npass y\nnoop\r\r\n")
    put("control", "long-line", b"\x00STOR " + b"a" * 4100 + b"\r\n")
    put("control", "utf8-path", "\x03RETR /releases/\u00e9/x\r\nCWD ..\r\n".encode())


if __name__ == "__main__":
    manifests()
    signatures()
    ids()
    paths()
    reports()
    configs()
    proxies()
    oneport_and_control(capture_hellos())
    for t in sorted(os.listdir(CORPUS)):
        print(t, len(os.listdir(os.path.join(CORPUS, t))))
