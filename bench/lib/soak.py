#!/usr/bin/env python3
"""bench/soak.sh's helpers (standard library, matplotlib for the plot).

  soak.py sample PID METRICS_URL CSV STOPFILE     every 10 s: RSS, VmHWM, fds, threads, gauges
  soak.py change API TOKEN WORKDIR FWDIST LOG STOPFILE INTERVAL
                                                  rollout changes through the admin API
  soak.py report WORKDIR SIM_OUT CSV PNG CHANGES  figures, checks, plot; exit 1 if a check fails
"""

import csv
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

SAMPLE_SECS = 10
# Bounds of the flatness checks, first tenth of the run against the last (medians).
RSS_GROWTH_RATIO = 1.20
RSS_GROWTH_MIB = 30.0
FD_GROWTH = 20


def log(msg):
    print(f"== {msg}", file=sys.stderr, flush=True)


# ---- sample ---------------------------------------------------------------------------------

def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


def metric(text, name, labels=None):
    """Sum of a family's samples (with these labels, if given)."""
    total = 0.0
    seen = False
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        if labels and not all(f'{k}="{v}"' in (m.group(2) or "") for k, v in labels.items()):
            continue
        total += float(m.group(3))
        seen = True
    return total if seen else ""


def sample(pid, url, path, stopfile):
    fields = ["t_s", "rss_kib", "hwm_kib", "fds", "threads", "record_queue", "ftps_sessions",
              "passive_ports_in_use", "downloads_complete", "downloads_aborted", "reports"]
    t0 = time.monotonic()
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        while not os.path.exists(stopfile):
            t = time.monotonic() - t0
            try:
                st = proc_status(pid)
                fds = len(os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                log(f"sampler: server {pid} is gone")
                return
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    text = r.read().decode()
            except (OSError, urllib.error.URLError) as e:
                log(f"sampler: metrics: {e}")
                text = ""
            row = [round(t, 1), st.get("VmRSS", ""), st.get("VmHWM", ""), fds,
                   st.get("Threads", ""), metric(text, "fwdist_record_queue_depth"),
                   metric(text, "fwdist_ftps_sessions"),
                   metric(text, "fwdist_passive_ports_in_use"),
                   metric(text, "fwdist_downloads_total", {"outcome": "complete"}),
                   metric(text, "fwdist_downloads_total", {"outcome": "aborted"}),
                   metric(text, "fwdist_reports_total")]
            w.writerow(row)
            f.flush()
            if int(t) % 60 < SAMPLE_SECS:
                log("t={:.0f} min  RSS {:.1f} MiB  fds {}  queue {}  sessions {}  downloads {} "
                    "complete / {} aborted  reports {}".format(
                        t / 60, st.get("VmRSS", 0) / 1024, fds, *row[5:7], *row[8:11]))
            # Sleep to the next 10 s mark, waking early when asked to stop.
            nxt = t0 + (int((time.monotonic() - t0) / SAMPLE_SECS) + 1) * SAMPLE_SECS
            while time.monotonic() < nxt and not os.path.exists(stopfile):
                time.sleep(0.5)


# ---- change ---------------------------------------------------------------------------------

class Api:
    def __init__(self, base, token):
        self.base = base
        self.token = token

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + "/api/v1" + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")


def publish(api, work, fwdist, seq):
    """Signs a new 3 MiB image as 1.0.<seq> (sequence seq) and uploads it; returns the version."""
    version = f"1.0.{seq}"
    d = os.path.join(work, f"build-{seq}")
    os.makedirs(d, exist_ok=True)
    img = os.path.join(d, "firmware.bin")
    with open(img, "wb") as f:
        f.write(os.urandom(int(os.environ.get("SOAK_IMAGE_BYTES", 3 << 20))))
    subprocess.run([fwdist, "sign", "--key", os.path.join(work, "release.key"), "--model", "iq2",
                    "--version", version, "--sequence", str(seq), img],
                   check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
         "Authorization: Bearer " + api.token, "-F", f"manifest=@{d}/manifest.json",
         "-F", f"signature=@{d}/manifest.json.sig", "-F", f"image=@{img}",
         api.base + "/api/v1/releases"], capture_output=True, text=True)
    if out.stdout.strip() not in ("200", "201"):
        raise RuntimeError(f"publishing {version}: HTTP {out.stdout.strip()}")
    return version


def new_rollout(api, version):
    st, r = api.call("POST", "/rollouts", {
        "model": "iq2", "version": version, "phases": [20, 60, 100],
        "success_threshold": 0.5, "failure_threshold": 0.5, "min_phase_secs": 30})
    if st != 201 and st != 200:
        raise RuntimeError(f"creating the rollout of {version}: {st} {r}")
    return r["id"]


def change(base, token, work, fwdist, logpath, stopfile, interval):
    """Every INTERVAL seconds one change, in a cycle: pause, resume, next phase (or a raised
    success threshold at the last), pin a few devices to the previous release, a new release and
    its rollout (the old one aborted), unpin. Every answer must be 2xx (else the line says
    FAILED and the report fails)."""
    api = Api(base, token)
    with open(os.path.join(work, "state.json")) as f:
        state = json.load(f)
    devices = [line.split(",")[0] for line in open(os.path.join(work, "creds.csv"))
               if line.strip() and not line.startswith("id,")]
    pinned = []
    step = 0
    with open(logpath, "a") as out:
        def note(what, ok):
            out.write(f"{time.strftime('%H:%M:%S')},{step},{'ok' if ok else 'FAILED'},{what}\n")
            out.flush()
        deadline = time.monotonic() + interval
        while not os.path.exists(stopfile):
            if time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            deadline += interval
            rid = state["rollout"]
            kind = step % 6
            try:
                if kind == 0:
                    st, r = api.call("PATCH", f"/rollouts/{rid}", {"state": "paused"})
                    note(f"pause rollout {rid}: {st}", st == 200)
                elif kind == 1:
                    st, r = api.call("PATCH", f"/rollouts/{rid}", {"state": "active"})
                    note(f"resume rollout {rid}: {st}", st == 200)
                elif kind == 2:
                    st, r = api.call("GET", f"/rollouts/{rid}")
                    phase, phases = (r or {}).get("phase"), (r or {}).get("phases") or []
                    if st == 200 and phase is not None and phase + 1 < len(phases):
                        st, r = api.call("PATCH", f"/rollouts/{rid}", {"phase": phase + 1})
                        note(f"rollout {rid} phase {phase} -> {phase + 1}: {st}", st == 200)
                    else:
                        st, r = api.call("PATCH", f"/rollouts/{rid}", {"success_threshold": 0.6})
                        note(f"rollout {rid} at its last phase, success_threshold 0.6: {st}",
                             st == 200)
                elif kind == 3:
                    target = state["versions"][-2] if len(state["versions"]) > 1 else state["versions"][-1]
                    pinned = devices[(step * 7) % len(devices):][:5]
                    codes = [api.call("PUT", f"/devices/{d}/pin",
                                      {"version": target, "reason": "soak"})[0] for d in pinned]
                    note(f"pin {len(pinned)} devices to {target}: {codes}",
                         all(c == 200 for c in codes))
                elif kind == 4:
                    state["seq"] += 1
                    version = publish(api, work, fwdist, state["seq"])
                    new = new_rollout(api, version)
                    st, r = api.call("PATCH", f"/rollouts/{rid}", {"state": "aborted"})
                    state["versions"].append(version)
                    state["rollout"] = new
                    note(f"release {version}, rollout {new}, rollout {rid} aborted: {st}", st == 200)
                else:
                    codes = [api.call("DELETE", f"/devices/{d}/pin")[0] for d in pinned]
                    note(f"unpin {len(pinned)} devices: {codes}", all(c == 204 for c in codes))
                    pinned = []
            except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
                note(f"step {kind}: {e}", False)
            with open(os.path.join(work, "state.json"), "w") as f:
                json.dump(state, f)
            step += 1


# ---- report ---------------------------------------------------------------------------------

def median_of(rows, key, lo, hi):
    vals = [float(r[key]) for r in rows[lo:hi] if r[key] != ""]
    return statistics.median(vals) if vals else float("nan")


def sim_figures(path):
    text = open(path).read()
    fig = {"text": text}
    m = re.search(r"^sessions: (\d+) ok, (\d+) failed in ([\d.]+) s", text, re.M)
    fig["ok"], fig["failed"], fig["elapsed"] = (int(m[1]), int(m[2]), float(m[3])) if m else (0, -1, 0.0)
    m = re.search(r"^cut downloads: (\d+)", text, re.M)
    fig["cut"] = int(m[1]) if m else 0
    m = re.search(r"^no update: (\d+)", text, re.M)
    fig["no_update"] = int(m[1]) if m else 0
    m = re.search(r"started (\d+) over 1 s late", text)
    fig["late"] = int(m[1]) if m else 0
    fig["reports"] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", (re.search(r"^reports: (.*)$", text, re.M) or [""])[0])}
    rec = re.search(r"^recovered on retry: (.*)$", text, re.M)
    fig["recovered"] = sum(int(v) for _, v in re.findall(r"(\S+?)=(\d+)", rec[1])) if rec else 0
    return fig


def plot(rows, png, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [float(r["t_s"]) / 60 for r in rows]
    series = [("RSS (MiB)", [float(r["rss_kib"]) / 1024 for r in rows]),
              ("open descriptors", [int(r["fds"]) for r in rows]),
              ("record queue depth", [float(r["record_queue"] or 0) for r in rows])]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for ax, (label, ys) in zip(axes, series):
        ax.plot(t, ys, linewidth=1.2)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0, top=max(max(ys) * 1.25, 1))
        ax.grid(alpha=0.3)
    axes[0].plot(t, [float(r["hwm_kib"]) / 1024 for r in rows], linewidth=0.8, linestyle="--",
                 label="VmHWM (peak)")
    axes[0].legend(loc="lower right")
    axes[-1].set_xlabel("minutes")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def report(work, sim_out, csv_path, png, changes_path):
    fails = []
    sim = sim_figures(sim_out)
    rows = list(csv.DictReader(open(csv_path)))
    changes = [l.rstrip("\n").split(",", 3) for l in open(changes_path)] if os.path.exists(changes_path) else []
    db = sqlite3.connect(f"file:{work}/store/fwdist.sqlite?mode=ro", uri=True)
    q = lambda sql: db.execute(sql).fetchone()[0]
    complete = q("SELECT count(*) FROM downloads WHERE file = 'firmware.bin' AND outcome = 'complete'")
    tails = q("SELECT count(*) FROM downloads WHERE file = 'firmware.bin' AND outcome = 'complete' AND start_offset > 0")
    aborted = q("SELECT count(*) FROM downloads WHERE file = 'firmware.bin' AND outcome = 'aborted'")
    cut_aborted = q("SELECT count(*) FROM downloads WHERE file = 'firmware.bin' AND outcome = 'aborted' AND start_offset = 0 AND bytes < size")
    short_complete = q("SELECT count(*) FROM downloads WHERE outcome = 'complete' AND start_offset + bytes != size")
    reports_db = q("SELECT count(*) FROM reports WHERE source = 'ftps'")
    n = len(rows)
    tenth = max(1, n // 10)
    rss_a = median_of(rows, "rss_kib", 0, tenth) / 1024
    rss_b = median_of(rows, "rss_kib", n - tenth, n) / 1024
    fd_a = median_of(rows, "fds", 0, tenth)
    fd_b = median_of(rows, "fds", n - tenth, n)
    q_max = max((float(r["record_queue"] or 0) for r in rows), default=float("nan"))
    hwm = max((float(r["hwm_kib"]) for r in rows), default=0) / 1024
    sim_reports = sum(sim["reports"].values())
    failed_changes = [c for c in changes if len(c) > 2 and c[2] != "ok"]

    print()
    print(f"duration:            {sim['elapsed']:.0f} s ({n} samples every {SAMPLE_SECS} s)")
    done = sim["ok"] + sim["no_update"]
    print(f"sessions done:       {done} ({done / max(sim['elapsed'], 1e-9):.2f}/s): {sim['ok']} updated, "
          f"{sim['no_update']} found no update (paused, not yet selected); {sim['late']} started late")
    print(f"failed IQs:          {sim['failed']} after retries ({sim['recovered']} recovered on a retry)")
    print(f"cut downloads:       {sim['cut']} (resumed with REST); in the database: {cut_aborted} aborted "
          f"from offset 0, {tails} complete resumed tails")
    print(f"downloads recorded:  {complete} complete, {aborted} aborted (image)")
    print(f"reports:             {sim_reports} sent {sim['reports']}, {reports_db} stored")
    print(f"rollout changes:     {len(changes)} ({len(failed_changes)} failed)")
    print(f"RSS:                 first tenth {rss_a:.1f} MiB, last tenth {rss_b:.1f} MiB "
          f"(x{rss_b / rss_a:.3f}); peak (VmHWM) {hwm:.1f} MiB")
    print(f"open descriptors:    first tenth {fd_a:.0f}, last tenth {fd_b:.0f}")
    print(f"record queue:        max {q_max:.0f}")

    if sim["failed"] != 0:
        fails.append(f"{sim['failed']} IQs failed after retries")
    if sim["ok"] == 0:
        fails.append("no session succeeded")
    if n < 3:
        fails.append(f"only {n} samples")
    if rss_b > rss_a * RSS_GROWTH_RATIO and rss_b - rss_a > RSS_GROWTH_MIB:
        fails.append(f"RSS grew from {rss_a:.1f} to {rss_b:.1f} MiB (bound: x{RSS_GROWTH_RATIO} and +{RSS_GROWTH_MIB:.0f} MiB)")
    if fd_b - fd_a > FD_GROWTH:
        fails.append(f"descriptors grew from {fd_a:.0f} to {fd_b:.0f} (bound +{FD_GROWTH})")
    # Every successful session ends with one complete image download; a session retried after
    # its download completed (the report failed) adds one more.
    if not (sim["ok"] <= complete <= sim["ok"] + sim["recovered"]):
        fails.append(f"{complete} complete image downloads recorded for {sim['ok']} sessions "
                     f"(+{sim['recovered']} retried)")
    if tails < sim["cut"]:
        fails.append(f"{sim['cut']} cut downloads resumed but only {tails} resumed tails recorded")
    if cut_aborted < sim["cut"]:
        fails.append(f"{sim['cut']} downloads cut but only {cut_aborted} recorded aborted")
    if short_complete:
        fails.append(f"{short_complete} records say complete without reaching the end of the file")
    if not (sim_reports <= reports_db <= sim_reports + sim["recovered"]):
        fails.append(f"{sim_reports} reports sent, {reports_db} stored")
    if failed_changes:
        fails.append(f"{len(failed_changes)} rollout changes failed: {failed_changes[:3]}")
    if not changes:
        fails.append("no rollout change was made")

    title = (f"fwdist soak: {sim['elapsed'] / 60:.0f} min, {sim['ok']} sessions, {sim['cut']} cut, "
             f"{len(changes)} rollout changes, {sim['failed']} failed")
    if rows:
        plot(rows, png, title)
        print(f"plot:                {png}")
    return fails


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "sample":
        sample(*sys.argv[2:6])
    elif cmd == "change":
        change(*sys.argv[2:8], float(sys.argv[8]))
    elif cmd == "report":
        fails = report(*sys.argv[2:7])
        for f in fails:
            print(f"CHECK FAILED: {f}")
        sys.exit(1 if fails else 0)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
