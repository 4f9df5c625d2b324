#!/usr/bin/env python3
"""The API-abuse run (issue 15): schemathesis against the served OpenAPI document, once per
role's token and once with none and with an invalid one, against a real `fwdist serve` that
logs at trace level; then the server's log is searched for panics, ERROR lines and every
secret the run used. Driven by tests/abuse/run.sh, which builds the binary; see README
("API abuse run").

Exit status: 0 when every check passed, 1 when schemathesis found a failure, the server
died, or its log has a panic, an ERROR line or a secret; 2 when the run itself could not be
set up.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The checks of issue 15. negative_data_rejection is added per run where it is sensible (see
# ROLES): with a token that may call an operation, schemathesis' invalid inputs must get a
# 4xx; without one every answer is a 401 anyway, which that check would accept for any input.
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]

# Which runs, in this order: admin last, since its run may change or delete what the others
# hit (devices, tokens it does not hold itself: see hooks.py).
ROLES = ["none", "invalid", "reporter", "viewer", "publisher", "admin"]

# Seeded objects, named as the document's examples name them (DeviceId's example is
# aa:bb:cc:dd:ee:ff, the model's iq2), so the examples phase hits real objects too.
MODEL = "iq2"
VERSION = "1.0.0"
DEVICES = ["aa:bb:cc:dd:ee:ff", "aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02", "aa:bb:cc:00:00:03"]
# Shaped like a real token, and random: the log is searched for it too, so it must be a value
# nothing else would print (a run of zeros was: the fuzzer put 65 zeros in a path).
INVALID_TOKEN = "fwd_" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def log(msg: str) -> None:
    print(f"abuse: {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_range(count: int) -> tuple[int, int]:
    """`count` consecutive ports below Linux's ephemeral range that bind right now."""
    seed = int.from_bytes(os.urandom(2), "big")
    for i in range(400):
        base = 20000 + ((seed + i * 37) % 600) * 20
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base, base + count - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SystemExit("abuse: no free passive range found")


class Server:
    def __init__(self, binary: Path, root: Path):
        self.binary = binary
        self.root = root
        self.ftp_port = free_port()
        self.api_port = free_port()
        self.passive = free_range(4)
        self.log_path = root / "server.log"
        self.proc: subprocess.Popen | None = None
        self.env = dict(os.environ)
        # The embedded default, moved to free loopback ports; everything else stays as
        # `fwdist serve` with no config file has it (paths relative to the temp dir).
        self.env.update(
            {
                "FWDIST_FTPS__LISTEN": f"127.0.0.1:{self.ftp_port}",
                "FWDIST_FTPS__PASSIVE_PORTS": f"{self.passive[0]}-{self.passive[1]}",
                "FWDIST_ADMIN__LISTEN": f"127.0.0.1:{self.api_port}",
                "FWDIST_NODE": "abuse",
                "RUST_LOG": "trace",
                "RUST_BACKTRACE": "1",
            }
        )
        for k in ("FWDIST_TOKEN", "FWDIST_SERVER", "FWDIST_DEVICE_SECRET", "FWDIST_CONFIG"):
            self.env.pop(k, None)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        (self.root / "certs/release-keys").mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve"],
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"abuse: the server exited at start ({self.proc.returncode}); see {self.log_path}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise SystemExit(f"abuse: the server did not answer /healthz within 60 s; see {self.log_path}")

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(self.base + "/healthz", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cli(self, *args: str, token: str | None = None, check: bool = True) -> str:
        env = dict(self.env)
        env["RUST_LOG"] = "warn"
        env["FWDIST_SERVER"] = self.base
        if token is not None:
            env["FWDIST_TOKEN"] = token
        res = subprocess.run(
            [str(self.binary), *args],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and res.returncode != 0:
            raise SystemExit(f"abuse: fwdist {' '.join(args[:2])} failed ({res.returncode}): {res.stderr.strip()}")
        return res.stdout

    def call(self, method: str, path: str, token: str, body: object | None = None) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw = e.read()
            status = e.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")


def seed(server: Server) -> dict:
    """Tokens of every role, a published release, devices (one of them has downloaded it over
    FTPS and reported), a rollout, a pin. Returns the secrets and ids the run uses."""
    tokens: dict[str, str] = {}
    for role in ["viewer", "publisher", "admin", "reporter"]:
        out = server.cli("token", "create", "--name", f"abuse-{role}", "--role", role)
        tokens[role] = out.split()[-1]
    admin = tokens["admin"]
    # Spare tokens for the admin run's DELETE /tokens/{id} to hit (ids after the role tokens').
    for i in range(4):
        server.cli("token", "create", "--name", f"abuse-spare-{i}", "--role", "viewer")
    status, listing = server.call("GET", "/api/v1/tokens?limit=1000", admin)
    if status != 200 or not isinstance(listing, dict):
        raise SystemExit(f"abuse: GET /tokens answered {status}: {listing}")
    token_ids = {t["name"]: t["id"] for t in listing["items"]}
    role_token_ids = [token_ids[f"abuse-{r}"] for r in tokens]

    # A signed release, published through the API by the publisher.
    rel = server.root / "release"
    rel.mkdir()
    server.cli("keygen", "--out", "release")
    shutil.copy(server.root / "release.pub", server.root / "certs/release-keys/release.pub")
    (rel / "firmware.bin").write_bytes(os.urandom(64 * 1024))
    server.cli("sign", "--key", "release.key", "--model", MODEL, "--version", VERSION, "--sequence", "1",
               str(rel / "firmware.bin"))
    server.cli("publish", str(rel), token=tokens["publisher"])

    secrets: list[str] = []
    for dev in DEVICES:
        status, created = server.call("POST", "/api/v1/devices", admin,
                                      {"id": dev, "model": MODEL, "labels": ["abuse"]})
        if status != 201 or not isinstance(created, dict):
            raise SystemExit(f"abuse: POST /devices {dev} answered {status}: {created}")
        secrets.append(created["secret"])
    status, body = server.call("POST", "/api/v1/rollouts", admin,
                               {"model": MODEL, "version": VERSION, "percent": 100})
    if status != 201:
        raise SystemExit(f"abuse: POST /rollouts answered {status}: {body}")
    status, body = server.call("PUT", f"/api/v1/devices/{DEVICES[3]}/pin", admin,
                               {"version": VERSION, "reason": "abuse run"})
    if status != 200:
        raise SystemExit(f"abuse: PUT pin answered {status}: {body}")

    # One device updates over FTPS (download records, a login with its secret in the log's
    # reach) and reports; one wrong secret, so a refused login is logged too.
    trust = server.root / "iq-trust"
    trust.mkdir()
    shutil.copy(server.root / "release.pub", trust / "release.pub")
    fetch = ["fetch", "--server", f"127.0.0.1:{server.ftp_port}", "--device", DEVICES[1], "--model", MODEL,
             "--trust", str(trust), "--state", "iq-state", "--ca", "certs/server.crt", "--attempts", "1"]
    server.cli(*fetch, f"--secret={secrets[1]}")
    wrong = "wrong-" + base64.b32encode(os.urandom(10)).decode().lower()
    server.cli(*fetch, f"--secret={wrong}", check=False)
    secrets.append(wrong)
    status, body = server.call("POST", f"/api/v1/devices/{DEVICES[1]}/reports", tokens["reporter"],
                               {"version": VERSION, "outcome": "installed", "detail": "abuse run"})
    if status != 201:
        raise SystemExit(f"abuse: POST reports answered {status}: {body}")
    return {
        "tokens": tokens,
        "token_ids": token_ids,
        "role_token_ids": role_token_ids,
        "device_secrets": secrets,
    }


def write_config(path: Path, seeded: dict) -> None:
    """schemathesis.toml: dictionaries that make path parameters and body fields name the
    seeded objects half of the time (random MACs, models and ids would only ever meet 404s)."""
    ids = sorted(set(seeded["token_ids"].values()) - set(seeded["role_token_ids"]))
    lines = [
        "[dictionaries.devices]",
        "values = " + json.dumps(DEVICES + [d.replace(":", "-").upper() for d in DEVICES[:1]]),
        "[dictionaries.models]",
        f'values = ["{MODEL}"]',
        "[dictionaries.versions]",
        f'values = ["{VERSION}"]',
        "[dictionaries.rollouts]",
        "values = [1]",
        "[dictionaries.tokens]",
        "values = " + json.dumps(ids),
        "",
        # Bodies too: a release, rollout, pin or report naming the seeded model, version and
        # devices gets past validation to the rules (with random strings nearly every one was
        # a 422 for its model or version).
        "[parameters]",
        '"body.model" = { dictionary = "models", probability = 0.5 }',
        '"body.version" = { dictionary = "versions", probability = 0.5 }',
        '"body.devices[*]" = { dictionary = "devices", probability = 0.5 }',
        "",
    ]
    for regex, bindings in [
        ("^/api/v1/devices/", {"path.id": "devices"}),
        ("^/api/v1/releases/", {"path.model": "models", "path.version": "versions"}),
        ("^/api/v1/rollouts/", {"path.id": "rollouts"}),
        ("^/api/v1/tokens/", {"path.id": "tokens"}),
    ]:
        lines.append("[[operations]]")
        lines.append(f'include-path-regex = "{regex}"')
        lines.append("[operations.parameters]")
        for key, dictionary in bindings.items():
            lines.append(f'"{key}" = {{ dictionary = "{dictionary}", probability = 0.5 }}')
        lines.append("")
    path.write_text("\n".join(lines))


def run_schemathesis(server: Server, role: str, token: str | None, args: argparse.Namespace, seeded: dict,
                     out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    config = out / "schemathesis.toml"
    write_config(config, seeded)
    checks = list(CHECKS)
    if token is not None and role != "invalid":
        # Invalid inputs must get a 4xx, and each operation that needs a token must refuse the
        # same request without it (or with a wrong one).
        checks += ["negative_data_rejection", "ignored_auth"]
    cmd = [
        "schemathesis", "--config-file", str(config), "--no-color", "run",
        f"{server.base}/api/v1/openapi.json",
        "--checks", ",".join(checks),
        "--max-examples", str(args.max_examples),
        "--phases", args.phases,
        "--seed", str(args.seed),
        "--workers", "1",
        "--request-timeout", "30",
        "--generation-database", "none",
        "--suppress-health-check", "too_slow,filter_too_much",
        "--continue-on-failure",
        "--report", "junit,ndjson,har",
        "--report-dir", str(out),
        "--output-truncate", "false",
        # The reports stay in the run's directory; unsanitized they keep the secrets the server
        # handed out, which the log is then searched for.
        "--output-sanitize", "false",
    ]
    if args.max_time:
        cmd += ["--max-time", str(args.max_time)]
    if token is not None:
        cmd += ["--header", f"Authorization: Bearer {token}"]
    env = dict(os.environ)
    env["SCHEMATHESIS_HOOKS"] = str(HERE / "hooks.py")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ of hooks.py in the work tree
    env["FWDIST_ABUSE_PROTECTED_TOKENS"] = ",".join(str(i) for i in seeded["role_token_ids"])
    started = time.monotonic()
    with open(out / "schemathesis.out", "w") as f:
        # In the report directory: schemathesis keeps a cache (.schemathesis/) where it runs.
        res = subprocess.run(cmd, env=env, cwd=out, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    took = time.monotonic() - started
    stats = summarize(out, role)
    stats["exit"] = res.returncode
    stats["seconds"] = round(took, 1)
    return stats


def summarize(out: Path, role: str) -> dict:
    """Operations, requests, statuses, failures and answer bodies from the run's NDJSON events
    (one interaction per test case, the stateful phase's steps included)."""
    statuses: collections.Counter = collections.Counter()
    requests = 0
    bodies: list[str] = []
    operations: set[str] = set()
    failures: collections.Counter = collections.Counter()
    failure_lines: set[str] = set()
    errors: list[str] = []
    for nd in out.glob("*.ndjson"):
        for line in nd.read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if "NonFatalError" in ev:
                body = ev["NonFatalError"]
                info = body.get("info") or {}
                errors.append(f"{body.get('label')}: {info.get('title', '')} {info.get('message', '')}"[:400])
                continue
            body = ev.get("ScenarioFinished")
            if not isinstance(body, dict):
                continue
            recorder = body.get("recorder") or {}
            for inter in (recorder.get("interactions") or {}).values():
                resp = inter.get("response")
                if resp is None:
                    continue
                requests += 1
                label = recorder.get("label") or ""
                if label.split(" ")[0] in ("GET", "PUT", "POST", "DELETE", "PATCH"):
                    operations.add(label)
                statuses[resp["status_code"]] += 1
                content = resp.get("content") or {}
                if "$base64" in content:
                    bodies.append(base64.b64decode(content["$base64"]).decode(errors="replace"))
                elif "string" in content:
                    bodies.append(content["string"])
            for case_checks in (recorder.get("checks") or {}).values():
                for c in case_checks:
                    if c.get("status") == "failure":
                        failures[c["name"]] += 1
                        title = ((c.get("failure_info") or {}).get("failure") or {}).get("title", "")
                        failure_lines.add(f"{c['name']}: {recorder.get('label')}: {title}")
    return {
        "role": role,
        "operations": len(operations),
        "requests": requests,
        "statuses": dict(sorted(statuses.items())),
        "server_errors": sum(n for s, n in statuses.items() if s >= 500),
        "failures": dict(failures),
        "failure_lines": sorted(failure_lines),
        "errors": errors,
        "bodies": bodies,
    }


def encodings(value: str) -> set[str]:
    """The value and the obvious ways a log line could carry it."""
    raw = value.encode()
    out = {
        value,
        urllib.parse.quote(value, safe=""),
        json.dumps(value)[1:-1],
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
        hashlib.sha256(raw).hexdigest(),
        base64.b64encode(f"Bearer {value}".encode()).decode().rstrip("="),
    }
    # Debug of a byte string (b"..." with escapes) is the value itself for ASCII secrets.
    if value.startswith("fwd_"):
        out.add(value[4:])
    return {e for e in out if len(e) >= 12}


def secrets_in(log_text: str, values: dict[str, str]) -> list[str]:
    found = []
    for what, value in values.items():
        for enc in encodings(value):
            if enc in log_text:
                found.append(f"{what} ({'as is' if enc == value else 'encoded'})")
                break
    return found


def secrets_from_answers(stats: list[dict]) -> list[str]:
    """Every `secret` the server handed out during the runs (new devices, new secrets)."""
    found: set[str] = set()

    def walk(v: object) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if k == "secret" and isinstance(x, str) and x:
                    found.add(x)
                else:
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for s in stats:
        for body in s["bodies"]:
            try:
                walk(json.loads(body))
            except ValueError:
                continue
    return sorted(found)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", required=True, type=Path, help="the fwdist binary")
    p.add_argument("--long", action="store_true", help="a bigger run (more examples per operation)")
    p.add_argument("--max-examples", type=int, help="examples per operation and phase (default 10; 100 with --long)")
    p.add_argument("--max-time", type=int, help="a time budget per role, seconds")
    p.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--roles", default=",".join(ROLES))
    p.add_argument("--out", type=Path, help="keep the server's directory, log and reports here")
    args = p.parse_args()
    if args.max_examples is None:
        args.max_examples = 100 if args.long else 10
    if shutil.which("schemathesis") is None:
        print("abuse: schemathesis is not on PATH (pip install 'schemathesis>=4.32,<5')", file=sys.stderr)
        return 2

    keep = args.out is not None
    root = args.out.resolve() if keep else Path(tempfile.mkdtemp(prefix="fwdist-abuse."))
    if keep:
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
    server = Server(args.bin.resolve(), root / "server")
    server.root.mkdir()
    started = time.monotonic()
    all_stats: list[dict] = []
    died_during = None
    try:
        server.start()
        log(f"server pid {server.proc.pid}: api {server.base}, ftps 127.0.0.1:{server.ftp_port}, "
            f"passive {server.passive[0]}-{server.passive[1]}, log {server.log_path} (trace)")
        seeded = seed(server)
    except SystemExit as e:
        server.stop()
        print(e, file=sys.stderr)
        log(f"setup failed; kept {root}")
        return 2
    try:
        log("seeded: 4 role tokens, release iq2 1.0.0, 4 devices, a rollout, a pin, a download, a report")
        tokens = dict(seeded["tokens"])
        tokens["none"] = None
        tokens["invalid"] = INVALID_TOKEN
        for role in args.roles.split(","):
            log(f"schemathesis as {role} ...")
            stats = run_schemathesis(server, role, tokens[role], args, seeded, root / "reports" / role)
            all_stats.append(stats)
            log(f"  {stats['operations']} operations, {stats['requests']} requests, "
                f"{sum(stats['failures'].values())} failures, {stats['server_errors']} 5xx, "
                f"{stats['seconds']} s (exit {stats['exit']})")
            if not server.alive():
                died_during = role
                break
    finally:
        alive = server.alive()
        code = server.stop()

    log_text = server.log_path.read_text(errors="replace")
    lines = log_text.splitlines()
    panics = [l for l in lines if "panicked" in l or "RUST_BACKTRACE" in l]
    error_lines = [l for l in lines if " ERROR " in l]
    secret_values = {f"token of {r}": t for r, t in seeded["tokens"].items()}
    secret_values["the invalid token sent"] = INVALID_TOKEN
    for i, s in enumerate(seeded["device_secrets"]):
        secret_values[f"device secret {i + 1}"] = s
    handed_out = secrets_from_answers(all_stats)
    for i, s in enumerate(handed_out):
        secret_values[f"secret handed out during the run {i + 1}"] = s
    leaked = secrets_in(log_text, secret_values)

    print()
    print(f"{'run':<10} {'operations':>10} {'requests':>9} {'5xx':>5} {'failures':>9}  by check")
    for s in all_stats:
        by = ", ".join(f"{k} {v}" for k, v in sorted(s["failures"].items())) or "-"
        print(f"{s['role']:<10} {s['operations']:>10} {s['requests']:>9} {s['server_errors']:>5} "
              f"{sum(s['failures'].values()):>9}  {by}")
    total_req = sum(s["requests"] for s in all_stats)
    total_fail = sum(sum(s["failures"].values()) for s in all_stats)
    total_5xx = sum(s["server_errors"] for s in all_stats)
    print(f"{'all':<10} {'':>10} {total_req:>9} {total_5xx:>5} {total_fail:>9}")
    print(f"server log: {len(lines)} lines at trace, {len(panics)} panic lines, {len(error_lines)} ERROR lines; "
          f"{len(secret_values)} secrets searched ({len(handed_out)} handed out during the run), "
          f"{len(leaked)} found")
    print(f"took {time.monotonic() - started:.0f} s; reports under {root / 'reports'}")
    summary = [{k: v for k, v in s.items() if k != "bodies"} for s in all_stats]
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    for s in all_stats:
        print(f"  {s['role']}: statuses {s['statuses']}")

    problems = []
    for s in all_stats:
        for f in s["failure_lines"]:
            problems.append(f"{s['role']}: {f}")
        for e in s["errors"]:
            problems.append(f"{s['role']}: schemathesis error: {e}")
        if s["exit"] != 0 and not s["failure_lines"]:
            problems.append(f"{s['role']}: schemathesis exited {s['exit']} (see {root / 'reports' / s['role'] / 'schemathesis.out'})")
        if s["server_errors"]:
            problems.append(f"{s['role']}: {s['server_errors']} answers were 5xx: {s['statuses']}")
        if s["operations"] == 0:
            problems.append(f"{s['role']}: no operation was tested")
    if died_during or not alive:
        problems.append(f"the server died (during {died_during or 'the run'}; exit {code})")
    problems += [f"panic in the log: {l[:300]}" for l in panics[:10]]
    problems += [f"ERROR in the log: {l[:300]}" for l in error_lines[:10]]
    problems += [f"secret in the log: {w}" for w in leaked]
    # The search above means something only if the log is the server's, at trace: it shows the
    # requests and the FTPS session of the seeded update.
    if not any(" TRACE " in l for l in lines) or not any(" DEBUG " in l for l in lines):
        problems.append("the server log has no TRACE or DEBUG line: was RUST_LOG=trace honoured?")
    if DEVICES[1] not in log_text:
        problems.append(f"the server log never names {DEVICES[1]}, whose FTPS update it served")
    if problems:
        print("\nFAILED:")
        for pr in problems:
            print(f"  {pr}")
    else:
        print("\nabuse run passed")
    if not keep and not problems:
        shutil.rmtree(root, ignore_errors=True)
    elif not keep:
        log(f"kept {root} for inspection")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
