#!/usr/bin/env python3
"""What CI can prove of the Dockerfile and deploy/ without a container engine.

No container engine runs in this project's CI, so the image is never built there. This
script checks what can be checked instead, with the debug binary the tests just built and
the tools .ci/run installs:

  dockerfile   the build stage uses CI's toolchain (rustc major.minor) on CI's Debian
               release, builds with the command README "Deploying" gives, and its
               dependency layer (the COPY lines and stub step before the first build) is a
               workspace cargo resolves offline with Cargo.lock unchanged; the build context
               (.dockerignore) lets in only what is copied, and no certificate or key; the
               runtime stage runs as a numeric non-root user, never creates a development
               certificate, and EXPOSEs the ports its ENV configures
  config       every ENV of the Dockerfile, every FWDIST_* variable of compose.yaml and
               deploy/fwdist.toml are accepted by the binary's own loader and validation
               (`fwdist network-requirements`, which reads them as `serve` does)
  serve        the image's command (`fwdist serve`) with the image's ENV, its paths moved
               under a scratch directory and its ports to free loopback ports: without a
               certificate it exits 1 saying where to put one; with one it passes the
               HEALTHCHECK script (HTTP, and HTTPS with a compose node's PROXY mode) and
               exits 0 on SIGTERM
  compose      the nodes agree on ports with each other, with haproxy.cfg and with what
               HAProxy publishes; depends_on waits for health; stop_grace_period outlasts the
               drain; images are the versions CI tests against
  haproxy      `haproxy -c` accepts haproxy.cfg (the only warnings allowed: node names that
               resolve inside compose only)
  systemd      `systemd-analyze verify` accepts fwdist.service (skipped if not installed)
  reference    docs/configuration.md lists every key of src/config.rs with its variable

Usage: deploy/check.py [--bin PATH]   (default: $CARGO_TARGET_DIR or target, /debug/fwdist)
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BUILD_COMMAND = "cargo build --release --locked --bin fwdist"
# The store keys object storage brings (SPEC §13); a build without them refuses store.url.
S3_KEYS = [f"FWDIST_STORE__{k}" for k in ("URL", "ENDPOINT", "REGION", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY")]

results = {"ok": 0, "failed": 0, "skipped": 0}


def ok(what):
    results["ok"] += 1
    print(f"ok      {what}")


def fail(what):
    results["failed"] += 1
    print(f"FAILED  {what}")


def skip(what):
    results["skipped"] += 1
    print(f"skipped {what}")


def check(cond, what, detail=""):
    if cond:
        ok(what)
    else:
        fail(f"{what}{': ' + detail if detail else ''}")
    return cond


# --- the Dockerfile ------------------------------------------------------------------------


def dockerfile_stages():
    """[(from_line, [(INSTRUCTION, args)])], comments dropped and continuations joined."""
    text = (ROOT / "Dockerfile").read_text()
    lines, cur = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        lines.append(cur + s)
        cur = ""
    stages = []
    for line in lines:
        inst, _, args = line.partition(" ")
        inst = inst.upper()
        if inst == "FROM":
            stages.append((args.strip(), []))
        else:
            stages[-1][1].append((inst, " ".join(args.split())))
    return stages


def env_of(instructions):
    env = {}
    for inst, args in instructions:
        if inst == "ENV":
            for m in re.finditer(r'(\w+)=("[^"]*"|\S+)', args):
                env[m.group(1)] = m.group(2).strip('"')
    return env


def exec_form(args):
    return json.loads(args) if args.startswith("[") else None


def check_build_stage(build):
    image, inst = build
    m = re.fullmatch(r"rust:(\d+\.\d+)-(\w+) AS build", image)
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout
    ci_rust = re.match(r"rustc (\d+\.\d+)", rustc)
    check(
        m and ci_rust and m.group(1) == ci_rust.group(1),
        "Dockerfile builds with CI's toolchain",
        f"FROM {image!r}, CI has {rustc.strip()!r}: make the tag rust:{ci_rust.group(1) if ci_rust else '?'}-<debian>",
    )
    codename = re.search(r"^VERSION_CODENAME=(\w+)", Path("/etc/os-release").read_text(), re.M)
    check(
        m and codename and m.group(2) == codename.group(1),
        "Dockerfile builds on CI's Debian release",
        f"FROM {image!r}, CI runs {codename.group(1) if codename else '?'}",
    )
    builds = [i for i, (k, a) in enumerate(inst) if k == "RUN" and "cargo build" in a]
    check(
        len(builds) == 2 and all(inst[i][1] == BUILD_COMMAND for i in builds),
        f"both cargo builds are exactly `{BUILD_COMMAND}` (dependency layer, then the real one)",
        str([inst[i][1] for i in builds]),
    )
    readme = (ROOT / "README.md").read_text()
    deploying = readme.split("## Deploying", 1)[-1].split("\n## ", 1)[0] if "## Deploying" in readme else ""
    check(BUILD_COMMAND in deploying, "README \"Deploying\" gives the Dockerfile's build command")
    if len(builds) != 2:
        return
    check(
        any(k == "RUN" and "touch" in a for k, a in inst[builds[0] + 1 : builds[1]]),
        "the real build touches the copied sources first (COPY keeps older mtimes than the stub build's)",
    )
    dependency_layer(inst[: builds[0]])


def dependency_layer(steps):
    """Replays the COPY and RUN steps before the first build in a scratch directory, then asks
    cargo to resolve the workspace offline with the lock file as it is."""
    allowed = re.compile(r"(Cargo\.toml|Cargo\.lock|crates/[^/]+/Cargo\.toml|deploy/stub-sources\.sh)")
    with tempfile.TemporaryDirectory(prefix="fwdist-deps-") as tmp:
        work = Path(tmp)
        for inst, args in steps:
            if inst == "COPY":
                *srcs, dest = args.split()
                bad = [s for s in srcs if not allowed.fullmatch(s)]
                if bad:
                    fail(f"the dependency layer copies manifests only: also copies {bad}")
                    return
                for s in srcs:
                    target = work / dest / Path(s).name if dest.endswith("/") or len(srcs) > 1 else work / dest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / s, target)
            elif inst == "RUN":
                r = subprocess.run(["sh", "-c", args], cwd=work, capture_output=True, text=True)
                if not check(r.returncode == 0, f"the dependency layer's `RUN {args}` works on its COPY lines alone", r.stderr.strip()):
                    return
        ok("the dependency layer copies manifests only (a source change keeps it cached)")
        # The host's platform only: the packages of other targets (Windows, Android) are not
        # downloaded here, and the image is built for this one.
        host = re.search(r"^host: (\S+)", subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout, re.M)
        r = subprocess.run(
            ["cargo", "metadata", "--locked", "--offline", "--format-version", "1",
             "--filter-platform", host.group(1) if host else "x86_64-unknown-linux-gnu"],
            cwd=work,
            capture_output=True,
            text=True,
        )
        unchanged = (work / "Cargo.lock").read_bytes() == (ROOT / "Cargo.lock").read_bytes()
        check(
            r.returncode == 0 and unchanged,
            "the dependency layer is a workspace cargo resolves offline with Cargo.lock unchanged",
            " ".join(l.strip() for l in r.stderr.splitlines() if l.strip()) or "Cargo.lock changed",
        )
        if r.returncode == 0:
            ours = {p["name"] for p in json.loads(r.stdout)["packages"] if p["source"] is None}
            real = subprocess.run(
                ["cargo", "metadata", "--locked", "--offline", "--no-deps", "--format-version", "1"],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            members = {p["name"] for p in json.loads(real.stdout)["packages"]}
            check(ours == members, "the dependency layer holds every workspace member", f"{ours} vs {members}")


def check_build_context(stages):
    allow = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    first = (ROOT / ".dockerignore").read_text().split("\n")
    check("*" in [l.strip() for l in first], ".dockerignore starts from nothing (`*`)")
    copied = set()
    for _, inst in stages:
        for k, a in inst:
            if k == "COPY" and "--from=" not in a:
                copied.update(a.split()[:-1])
    def allowed(path):
        parts = path.rstrip("/").split("/")
        return any("/".join(parts[:i]) in allow for i in range(1, len(parts) + 1))

    missing = sorted(s for s in copied if not allowed(s))
    check(not missing, "every file the Dockerfile copies is in the build context", f"add !{missing} to .dockerignore")
    secret = sorted(a for a in allow | copied if re.search(r"(^|/)certs\b|firmware-store|\.key$|\.crt$|\.pem$", a))
    check(not secret, "no certificate, key or store can enter the build context", str(secret))


def check_runtime_stage(runtime, fwdist):
    image, inst = runtime
    check(image == "debian:bookworm-slim AS runtime", "runtime stage is debian:bookworm-slim", image)
    installs = [a for k, a in inst if k == "RUN" and "apt-get install" in a]
    pkgs = set()
    for a in installs:
        words = a.split("apt-get install", 1)[1].split("&&")[0].split()
        pkgs.update(w for w in words if not w.startswith("-"))
    check(pkgs == {"ca-certificates"}, "runtime stage installs ca-certificates only", str(pkgs))
    users = [a for k, a in inst if k == "USER"]
    uid = users[-1].split(":")[0] if users else "root"
    check(uid.isdigit() and int(uid) != 0, "runtime stage runs as a numeric non-root user", f"USER {uid}")
    check(
        any(k == "RUN" and "useradd" in a and f"--uid {uid}" in a for k, a in inst),
        f"the image creates user {uid}",
    )
    entry = [exec_form(a) for k, a in inst if k == "ENTRYPOINT"]
    copies = {a.split()[-1] for k, a in inst if k == "COPY"}
    check(
        entry and entry[-1] and entry[-1][0] in copies and entry[-1][0].endswith("/fwdist"),
        "ENTRYPOINT is the fwdist binary copied from the build stage",
        str(entry),
    )
    health = [a for k, a in inst if k == "HEALTHCHECK"]
    hc = exec_form(health[-1].split(" CMD ", 1)[1]) if health and " CMD " in health[-1] else None
    check(
        hc and hc[0] in copies and any(k == "COPY" and a.startswith("deploy/healthcheck.sh ") for k, a in inst),
        "HEALTHCHECK runs deploy/healthcheck.sh",
        str(health),
    )
    env = env_of(inst)
    check(
        env.get("FWDIST_FTPS__SELF_SIGNED") == "false",
        "the image never creates a development certificate (FWDIST_FTPS__SELF_SIGNED=false)",
    )
    volumes = set()
    for k, a in inst:
        if k == "VOLUME":
            volumes.update(exec_form(a) or a.split())
    workdir = [a for k, a in inst if k == "WORKDIR"][-1]
    check(
        {"/var/lib/fwdist", "/etc/fwdist/certs"} <= volumes and workdir == "/var/lib/fwdist",
        "volumes for data (the working directory) and certificates",
        f"VOLUME {sorted(volumes)}, WORKDIR {workdir}",
    )
    paths = [env.get(k, "") for k in ("FWDIST_FTPS__CERT", "FWDIST_FTPS__KEY", "FWDIST_SIGNING__TRUSTED_KEYS")]
    check(all(p.startswith("/etc/fwdist/certs/") for p in paths), "certificate, key and release keys are in the certs volume", str(paths))
    check(
        "FWDIST_STORE__ROOT" not in env,
        "the image sets no store.root (a node with store.url must not carry one)",
    )
    req = network_requirements(fwdist, env)
    if not check(req.returncode == 0, "the binary accepts the image's ENV", req.stderr.strip()):
        return env
    site = json.loads(req.stdout)
    listen_port = int(env.get("FWDIST_FTPS__LISTEN", ":2121").rsplit(":", 1)[1])
    admin_port = int(env.get("FWDIST_ADMIN__LISTEN", ":8080").rsplit(":", 1)[1])
    want = {str(listen_port), f"{site['passive_ports']['first']}-{site['passive_ports']['last']}", str(admin_port)}
    exposed = set(" ".join(a for k, a in inst if k == "EXPOSE").split())
    check(exposed == want, "EXPOSE is the control port, the passive range and the admin port the ENV yields", f"{exposed} vs {want}")
    return env


def network_requirements(fwdist, env, *args):
    """Loads and validates a configuration as `serve` would, without starting anything."""
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run(
        [str(fwdist), "network-requirements", "--format", "json", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tempfile.gettempdir(),
    )


# --- the image's command, run here ---------------------------------------------------------


def free_ports(n):
    """n distinct free loopback ports (bound at once, then released)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def relocated(env, root):
    """The image's ENV with every path under / moved under root, and loopback ports."""
    out = {}
    for k, v in env.items():
        out[k] = str(root) + v if v.startswith("/etc/fwdist/") or v.startswith("/var/lib/fwdist") else v
    ftp, admin, passive = free_ports(3)
    out["FWDIST_FTPS__LISTEN"] = f"127.0.0.1:{ftp}"
    out["FWDIST_ADMIN__LISTEN"] = f"127.0.0.1:{admin}"
    # Passive ports are bound per offer only; this range is checked, never dialled.
    out["FWDIST_FTPS__PASSIVE_PORTS"] = f"{passive}-{passive}"
    return out


def healthcheck(env):
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run([str(DEPLOY / "healthcheck.sh")], env=clean, capture_output=True, text=True, timeout=30)


class Serve:
    """`fwdist serve` in the image's working directory, stopped by its pid."""

    def __init__(self, fwdist, env, workdir):
        self.log = open(workdir / "serve.log", "w+")
        self.proc = subprocess.Popen(
            [str(fwdist), "serve"],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )

    def text(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.wait(30)
        if code is None:
            self.proc.kill()
            self.proc.wait()
        return code


def until_healthy(server, env, deadline_s=60):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return None
        r = healthcheck(env)
        if r.returncode == 0:
            return r
        time.sleep(0.3)
    return healthcheck(env)


def self_signed(certs):
    """A throwaway certificate and key (openssl, as an operator would make one)."""
    certs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "1", "-subj", "/CN=localhost", "-keyout", str(certs / "server.key"), "-out", str(certs / "server.crt")],
        check=True,
        capture_output=True,
    )


def run_image_command(fwdist, image_env, node_env):
    with tempfile.TemporaryDirectory(prefix="fwdist-image-") as tmp:
        root = Path(tmp)
        workdir = root / "var/lib/fwdist"
        workdir.mkdir(parents=True)
        (root / "etc/fwdist/certs/release-keys").mkdir(parents=True)
        env = relocated(image_env, root)

        # No certificate: the container stops at once and says where to put one.
        server = Serve(fwdist, env, workdir)
        code = server.wait(20)
        if code is None:
            server.stop()
        out = server.text().strip()
        cert = env["FWDIST_FTPS__CERT"]
        check(
            code == 1 and f"TLS certificate {cert} not found" in out and env["FWDIST_FTPS__KEY"] in out and "mount" in out,
            "without a certificate the image's command exits 1 saying where to mount one",
            f"exit {code}: {out[-400:]}",
        )
        created = sorted(p.name for p in (root / "etc/fwdist/certs").iterdir())
        check(created == ["release-keys"], "and creates no certificate", str(created))

        # With one: healthy, then a clean stop.
        self_signed(root / "etc/fwdist/certs")
        server = Serve(fwdist, env, workdir)
        r = until_healthy(server, env)
        check(r is not None and r.returncode == 0, "with a certificate the HEALTHCHECK passes (HTTP)", (r.stderr if r else "") + server.text()[-400:])
        # The image's own form of the address: every interface, which the script dials on loopback.
        port = env["FWDIST_ADMIN__LISTEN"].rsplit(":", 1)[1]
        r = healthcheck({**env, "FWDIST_ADMIN__LISTEN": f"0.0.0.0:{port}"})
        check(r.returncode == 0, "the HEALTHCHECK dials loopback for an admin API on 0.0.0.0", r.stderr.strip())
        code = server.stop()
        check(code == 0, "the image's command exits 0 on SIGTERM", f"exit {code}: {server.text()[-400:]}")
        gone = healthcheck(env)
        check(gone.returncode == 1 and "no answer" in gone.stderr, "the HEALTHCHECK fails when nothing answers", gone.stderr.strip())

        # A compose node: PROXY mode (the probe behind /healthz needs no header) and the admin
        # API over HTTPS. Its database and bucket live in compose only: here SQLite and the
        # local store (see the caller).
        env = relocated({**image_env, **node_env}, root)
        env["FWDIST_ADMIN__CERT"] = env["FWDIST_FTPS__CERT"]
        env["FWDIST_ADMIN__KEY"] = env["FWDIST_FTPS__KEY"]
        server = Serve(fwdist, env, workdir)
        r = until_healthy(server, env)
        check(
            r is not None and r.returncode == 0,
            "a compose node's configuration (PROXY mode) passes the HEALTHCHECK over HTTPS",
            (r.stderr if r else "") + server.text()[-400:],
        )
        plain = healthcheck({k: v for k, v in env.items() if k != "FWDIST_ADMIN__CERT"})
        check(plain.returncode == 1, "the HEALTHCHECK fails when it speaks HTTP to an HTTPS API", plain.stderr.strip())
        code = server.stop()
        check(code == 0, "the compose node exits 0 on SIGTERM", f"exit {code}: {server.text()[-400:]}")


# --- compose.yaml, haproxy.cfg -------------------------------------------------------------


def env_example():
    values = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            values[k.strip()] = v.strip()
    return values


def interpolate(value, values, missing):
    def sub(m):
        name = m.group(1)
        if name not in values:
            missing.add(name)
        return values.get(name, m.group(3) if m.group(2) == ":-" else "")

    return re.sub(r"\$\{(\w+)(?:(:\?|:-|\?|-)([^}]*))?\}", sub, str(value))


def drain_bound():
    """The longest a node may take to stop: the FTPS drain (GRACE + 2 s) and the record
    writer's 5 s, from src/app.rs."""
    m = re.search(r"const GRACE: Duration = Duration::from_secs\((\d+)\)", (ROOT / "src/app.rs").read_text())
    return int(m.group(1)) + 2 + 5 if m else 17


def seconds(text):
    m = re.fullmatch(r"(\d+)(s|min)?", str(text).strip())
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1) if m else 0


def check_compose(fwdist, image_env):
    try:
        import yaml
    except ImportError:
        fail("PyYAML is needed to check deploy/compose.yaml (python3 -m pip install pyyaml)")
        return None
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc.get("services", {})
    values = env_example()
    missing = set()
    nodes = {n: s for n, s in services.items() if s.get("image", "").startswith("fwdist")}
    check(len(nodes) == 2, "compose has two fwdist nodes", str(sorted(nodes)))
    check({"postgres", "seaweedfs", "haproxy"} <= set(services), "compose has postgres, seaweedfs and haproxy", str(sorted(services)))
    for name, svc in nodes.items():
        build = svc.get("build", {})
        check(
            (DEPLOY / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve() == ROOT / "Dockerfile",
            f"{name} is built from the repository's Dockerfile",
        )

    # What the binary accepts; the store's S3 keys only where this build has them.
    probe = network_requirements(fwdist, {"FWDIST_STORE__URL": "s3://bucket/prefix"})
    s3 = "not available yet" not in probe.stderr
    effective = {}
    for name, svc in nodes.items():
        env = {k: interpolate(v, values, missing) for k, v in svc.get("environment", {}).items()}
        cfg_env = {**image_env, **{k: v for k, v in env.items() if k.startswith("FWDIST_")}}
        if not s3:
            cfg_env = {k: v for k, v in cfg_env.items() if k not in S3_KEYS}
        req = network_requirements(fwdist, cfg_env)
        check(req.returncode == 0, f"the binary accepts {name}'s configuration", req.stderr.strip())
        effective[name] = (env, json.loads(req.stdout) if req.returncode == 0 else None)
        conds = {d: c.get("condition") for d, c in (svc.get("depends_on") or {}).items()}
        check(
            conds.get("postgres") == "service_healthy" and conds.get("seaweedfs") == "service_healthy",
            f"{name} waits for a healthy database and bucket",
            str(conds),
        )
        check(
            seconds(svc.get("stop_grace_period", "10s")) > drain_bound(),
            f"{name}'s stop_grace_period outlasts the node's drain ({drain_bound()} s)",
            str(svc.get("stop_grace_period")),
        )
        check(
            any(str(v).endswith(":/etc/fwdist/certs:ro") for v in svc.get("volumes", [])),
            f"{name} mounts its certificates read-only at /etc/fwdist/certs",
        )
    if not s3:
        skip(f"store.url and its S3 keys ({', '.join(S3_KEYS)}): this build refuses object storage; checked once it has it")
    check(not missing, "every variable compose.yaml interpolates is in env.example", str(sorted(missing)))

    sites = [site for _, site in effective.values() if site]
    envs = [env for env, _ in effective.values()]
    if len(sites) == 2:
        same = lambda f: f(sites[0]) == f(sites[1])
        check(
            same(lambda s: (s["control_port"], s["passive_ports"], s["host"])),
            "both nodes have the same control port, passive range and public host",
        )
        check(len({e.get("FWDIST_NODE") for e in envs}) == 2, "each node has its own FWDIST_NODE")
        check(
            all(e.get("FWDIST_FTPS__PROXY_PROTOCOL") == "true" for e in envs),
            "both nodes read PROXY headers (FWDIST_FTPS__PROXY_PROTOCOL=true)",
        )
        check_haproxy(services.get("haproxy", {}), sites[0], image_env, sorted(nodes))
    check_images(services)
    node_env = {k: v for k, v in envs[0].items() if k.startswith("FWDIST_")} if envs else {}
    return node_env


def check_haproxy(svc, site, image_env, node_names):
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    admin_port = int(image_env.get("FWDIST_ADMIN__LISTEN", ":8080").rsplit(":", 1)[1])
    control = str(site["control_port"])
    passive = f"{site['passive_ports']['first']}-{site['passive_ports']['last']}"
    binds = re.findall(r"^\s*bind\s+\S*:(\d+(?:-\d+)?)", cfg, re.M)
    check(sorted(binds) == sorted([control, passive, str(admin_port)]), "haproxy.cfg binds the nodes' control port, passive range and admin port", str(binds))
    servers = re.findall(r"^\s*server\s+(\S+)\s+(\S+)", cfg, re.M)
    check({s[1].split(":")[0] for s in servers} == set(node_names), "haproxy.cfg's servers are the compose nodes", str(servers))
    check(re.search(r"^\s*balance\s+source", cfg, re.M) and "send-proxy" in cfg, "haproxy.cfg balances by source and sends PROXY headers")
    check(f"check port {admin_port}" in cfg, "haproxy.cfg checks the nodes' /healthz on their admin port")
    published = {str(p).split(":")[-1] for p in svc.get("ports", [])}
    check(published == {control, passive, str(admin_port)}, "HAProxy publishes exactly those ports, unchanged", str(published))
    conds = {d: c.get("condition") for d, c in (svc.get("depends_on") or {}).items()}
    check(all(conds.get(n) == "service_healthy" for n in node_names), "HAProxy waits for healthy nodes", str(conds))

    if not shutil.which("haproxy") and not Path("/usr/sbin/haproxy").exists():
        skip("haproxy -c: haproxy is not installed")
        return
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    r = subprocess.run([exe, "-c", "-f", str(DEPLOY / "haproxy.cfg")], capture_output=True, text=True, timeout=30)
    warnings = [l for l in (r.stdout + r.stderr).splitlines() if "[WARNING]" in l or "[ALERT]" in l]
    unexpected = [w for w in warnings if "could not resolve address" not in w]
    check(r.returncode == 0 and not unexpected, "haproxy -c accepts haproxy.cfg", "\n".join(unexpected) or r.stderr)


def check_images(services):
    def tag(name):
        return services.get(name, {}).get("image", "").rsplit(":", 1)[-1]

    pg = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if pg:
        ci = pg[-1].parent.parent.name
        check(tag("postgres") == ci, f"compose's PostgreSQL is CI's ({ci})", tag("postgres"))
    else:
        skip("PostgreSQL version: no server installed here")
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if Path(exe).exists():
        v = re.search(r"version (\d+\.\d+)", subprocess.run([exe, "-v"], capture_output=True, text=True).stdout)
        check(v and tag("haproxy") == v.group(1), f"compose's HAProxy is CI's ({v.group(1) if v else '?'})", tag("haproxy"))
    else:
        skip("HAProxy version: not installed here")
    if shutil.which("weed"):
        out = subprocess.run(["weed", "version"], capture_output=True, text=True).stdout
        v = re.search(r"\b(\d+\.\d+)\b", out.split("version", 1)[-1].replace("8000GB", ""))
        check(v and tag("seaweedfs") == v.group(1), f"compose's SeaweedFS is CI's ({v.group(1) if v else '?'})", tag("seaweedfs"))
    else:
        skip("SeaweedFS version: weed is not installed here")


# --- systemd, the config reference ---------------------------------------------------------


def check_systemd(fwdist):
    unit = (DEPLOY / "fwdist.service").read_text()
    val = lambda k: (re.findall(rf"^{k}=(.*)$", unit, re.M) or [""])[-1].strip()
    check(val("User") not in ("", "root", "0"), "fwdist.service runs as its own user", val("User"))
    check(seconds(val("TimeoutStopSec")) > drain_bound(), f"TimeoutStopSec outlasts the drain ({drain_bound()} s)", val("TimeoutStopSec"))
    check(val("CapabilityBoundingSet") == "" and "CapabilityBoundingSet=" in unit, "fwdist.service keeps no capability")
    for k in ("NoNewPrivileges", "PrivateTmp"):
        check(val(k) == "yes", f"fwdist.service sets {k}=yes")
    check(val("ProtectSystem") == "strict" and "/var/lib/fwdist" in val("ReadWritePaths"), "fwdist.service writes only under /var/lib/fwdist")
    m = re.fullmatch(r"(/\S+) serve --config (\S+)", val("ExecStart"))
    if check(m and m.group(2) == "/etc/fwdist/fwdist.toml", "fwdist.service runs `fwdist serve --config /etc/fwdist/fwdist.toml`", val("ExecStart")):
        r = network_requirements(fwdist, {}, "--config", str(DEPLOY / "fwdist.toml"))
        check(r.returncode == 0, "the binary accepts deploy/fwdist.toml (the unit's /etc/fwdist/fwdist.toml)", r.stderr.strip())
        text = (DEPLOY / "fwdist.toml").read_text()
        check(re.search(r"^self_signed = false", text, re.M), "deploy/fwdist.toml never creates a development certificate")
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        skip("systemd-analyze verify: not installed")
        return
    with tempfile.TemporaryDirectory(prefix="fwdist-unit-") as tmp:
        # verify wants ExecStart's program to exist: the binary under test stands in for it.
        copy = Path(tmp) / "fwdist.service"
        copy.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={fwdist}", unit, flags=re.M))
        r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
        out = (r.stdout + r.stderr).strip()
        check(r.returncode == 0 and "fwdist.service" not in out, "systemd-analyze verify accepts fwdist.service", out)


def check_reference():
    src = (ROOT / "src/config.rs").read_text()
    doc = (ROOT / "docs/configuration.md").read_text()
    sections = {"FtpsConfig": "ftps", "AdminConfig": "admin", "StoreConfig": "store", "DbConfig": "db", "SigningConfig": "signing", "Config": None}
    missing = []
    for struct, section in sections.items():
        body = re.search(rf"pub struct {struct} \{{(.*?)\n\}}", src, re.S)
        if not body:
            missing.append(f"struct {struct}")
            continue
        for field, ty in re.findall(r"^\s*pub (\w+): ([^,]+),", body.group(1), re.M):
            if section is None and ty.endswith("Config"):
                continue
            var = f"FWDIST_{section.upper()}__{field.upper()}" if section else f"FWDIST_{field.upper()}"
            row = re.search(rf"^\| `{field}` \|[^\n]*\| `{var}` \|$", doc, re.M)
            if not row:
                missing.append(f"{section + '.' if section else ''}{field} ({var})")
    check(not missing, "docs/configuration.md lists every key of src/config.rs with its variable", ", ".join(missing))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    ap.add_argument("--bin", type=Path, default=target / "debug" / "fwdist")
    args = ap.parse_args()
    fwdist = args.bin.resolve()
    if not fwdist.exists():
        print(f"deploy/check.py: no binary at {fwdist} (cargo build --bin fwdist, or --bin PATH)", file=sys.stderr)
        return 2
    started = time.monotonic()
    stages = dockerfile_stages()
    if check(len(stages) == 2, "the Dockerfile has a build stage and a runtime stage", str([s[0] for s in stages])):
        check_build_stage(stages[0])
        check_build_context(stages)
        image_env = check_runtime_stage(stages[1], fwdist)
        node_env = check_compose(fwdist, image_env) or {}
        # The compose node's database and bucket are compose services: run it on the defaults.
        node_env = {k: v for k, v in node_env.items() if k not in S3_KEYS and k != "FWDIST_DB__URL"}
        run_image_command(fwdist, image_env, node_env)
    check_systemd(fwdist)
    check_reference()
    print(
        f"deploy/check.py: {results['ok']} checks ok, {results['failed']} failed, "
        f"{results['skipped']} skipped, in {time.monotonic() - started:.1f} s "
        "(no container engine here: the image itself is not built)"
    )
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
